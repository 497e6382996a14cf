package vmdisk

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func sourceOf(t *testing.T, d *Disk) Source {
	t.Helper()
	al, err := d.Allocated()
	if err != nil {
		t.Fatal(err)
	}
	return Source{Size: d.Size(), R: d, Data: al}
}

// TestWriteFormats writes every format from qemu-made images and checks
// the result with qemu-img check and compare and with our own reader.
func TestWriteFormats(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := ext4Raw(t, dir, 40<<20)
	srcQ := filepath.Join(dir, "src.qcow2")
	qemuImg(t, "convert", "-O", "qcow2", src, srcQ)
	srcVHD := filepath.Join(dir, "src.vhd")
	qemuImg(t, "convert", "-O", "vpc", src, srcVHD)
	srcVHDF := filepath.Join(dir, "srcf.vhd")
	qemuImg(t, "convert", "-O", "vpc", "-o", "subformat=fixed", src, srcVHDF)
	srcX := filepath.Join(dir, "src.vhdx")
	qemuImg(t, "convert", "-O", "vhdx", src, srcX)
	for _, in := range []string{src, srcQ, srcVHD, srcVHDF, srcX} {
		d, err := Open(in, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		inFmt := string(d.Format())
		if inFmt == "vhd" {
			inFmt = "vpc"
		}
		for _, f := range []Format{Raw, QCOW2, VHDX, VHD} {
			out := filepath.Join(dir, filepath.Base(in)+".out"+f.Ext())
			o := WriteOptions{Format: f}
			if f == d.Format() {
				o.QCOW2, o.VHD, o.VHDX = d.Layers[0].Info.QCOW2, d.Layers[0].Info.VHD, d.Layers[0].Info.VHDX
			}
			res, err := Write(context.Background(), out, sourceOf(t, d), o)
			if err != nil {
				t.Fatalf("%s -> %s: %v", in, f, err)
			}
			qf := string(f)
			if f == VHD {
				qf = "vpc"
			}
			if f == QCOW2 || f == VHDX {
				if outp, err := exec.Command("qemu-img", "check", "-f", qf, out).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img check %s: %v\n%s", out, err, outp)
				}
			}
			args := []string{"compare", "-f", inFmt, "-F", qf, in, out}
			if outp, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil || !strings.Contains(string(outp), "identical") {
				t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, outp)
			}
			back, err := Open(out, Limits{})
			if err != nil {
				t.Fatalf("reopen %s: %v", out, err)
			}
			if back.Size() != d.Size() {
				t.Errorf("%s: virtual size %d, want %d", out, back.Size(), d.Size())
			}
			if !bytes.Equal(readAll(t, back, back.Size()), readAll(t, d, d.Size())) {
				t.Errorf("%s: content differs", out)
			}
			back.Close()
			st, _ := os.Stat(out)
			t.Logf("%s -> %s: %d data bytes, file %d bytes", filepath.Base(in), f, res.DataBytes, st.Size())
		}
		d.Close()
	}
}

// TestWriteLayers writes differencing layers in every format that has
// them and reads the chain back.
func TestWriteLayers(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := ext4Raw(t, dir, 32<<20)
	for _, f := range []Format{QCOW2, VHD, VHDX} {
		base := filepath.Join(dir, "base"+f.Ext())
		bd, err := Open(src, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Write(context.Background(), base, sourceOf(t, bd), WriteOptions{Format: f}); err != nil {
			t.Fatal(err)
		}
		bd.Close()
		baseDisk, err := Open(base, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		want := readAll(t, baseDisk, baseDisk.Size())
		// The layer: 2 MiB of new data at 4 MiB, and 2 MiB of zeros at 0.
		layer := make([]byte, len(want))
		copy(layer[4<<20:6<<20], bytes.Repeat([]byte{0xA5}, 2<<20))
		own := []Run{{0, 2 << 20, Zero}, {4 << 20, 2 << 20, Data}}
		copy(want[4<<20:6<<20], layer[4<<20:6<<20])
		clear(want[:2<<20])
		o := WriteOptions{Format: f}
		if f == VHDX {
			o.VHDX = &VHDXParams{ParentLinkage: baseDisk.Layers[0].Info.VHDX.DataWriteGUID}
		}
		if f == VHD {
			o.VHD = &VHDParams{ParentUUID: baseDisk.Layers[0].Info.VHD.UUID}
		}
		baseDisk.Close()
		top := filepath.Join(dir, "top"+f.Ext())
		_, err = Write(context.Background(), top, Source{Size: int64(len(layer)), R: bytes.NewReader(layer), Backing: filepath.Base(base), BackingFormat: f, Own: own}, o)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Open(top, Limits{})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(d.Layers) != 2 || d.Layers[0].Info.Backing != filepath.Base(base) {
			t.Fatalf("%s: chain %d layers, backing %q", f, len(d.Layers), d.Layers[0].Info.Backing)
		}
		if !bytes.Equal(readAll(t, d, d.Size()), want) {
			t.Fatalf("%s: layered content differs", f)
		}
		runs, _ := d.Layers[0].Runs()
		if len(runs) != 2 || runs[0] != own[0] && f == QCOW2 || runs[1].Off != 4<<20 {
			t.Errorf("%s: own runs %v, want %v", f, runs, own)
		}
		if f == QCOW2 {
			qemuImg(t, "check", top)
			ref := rawOf(t, top, QCOW2)
			if !bytes.Equal(ref, want) {
				t.Fatalf("qemu reads the written overlay differently")
			}
		}
		d.Close()
	}
}
