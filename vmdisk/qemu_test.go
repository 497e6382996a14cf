package vmdisk

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
)

func needQemu(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not installed: run 'make deps' (package qemu-utils)")
	}
}

func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ext4Raw makes a sparse raw image with an ext4 file system holding a few
// files, and returns its path.
func ext4Raw(t *testing.T, dir string, size int64) string {
	t.Helper()
	if !sample.HaveMkfs() {
		t.Fatal("mkfs.ext4 not installed: run 'make deps' (package e2fsprogs)")
	}
	content := filepath.Join(dir, "content")
	if err := os.MkdirAll(content, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	if err := os.WriteFile(filepath.Join(content, "hello.txt"), []byte("hello from inside the guest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(content, "blob.bin"), sample.Binary(rng, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "disk.raw")
	if err := sample.Ext4Image(context.Background(), p, size, content); err != nil {
		t.Fatal(err)
	}
	return p
}

// rawOf converts any image to raw with qemu-img and returns the bytes.
func rawOf(t *testing.T, img string, f Format) []byte {
	t.Helper()
	out := img + ".ref.raw"
	qf := string(f)
	if f == VHD {
		qf = "vpc" // qemu does not probe fixed VHDs (footer only)
	}
	qemuImg(t, "convert", "-f", qf, "-O", "raw", img, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(out)
	return b
}

func readAll(t *testing.T, r interface {
	ReadAt([]byte, int64) (int, error)
}, size int64) []byte {
	t.Helper()
	b := make([]byte, size)
	// Odd-sized reads cross cluster and block boundaries.
	const step = 1<<20 + 4096 + 512
	for off := int64(0); off < size; off += step {
		n := min(step, size-off)
		if _, err := r.ReadAt(b[off:off+n], off); err != nil && !(err.Error() == "EOF" && off+n == size) {
			t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
		}
	}
	return b
}

func checkCovers(t *testing.T, d *Disk, content []byte) {
	t.Helper()
	al, err := d.Allocated()
	if err != nil {
		t.Fatal(err)
	}
	var pos int64
	var alloc int64
	for _, r := range al {
		if r.Off < pos {
			t.Fatalf("allocated ranges unsorted or overlapping at %d", r.Off)
		}
		if !allZero(content[pos:r.Off]) {
			t.Fatalf("non-zero data in [%d,%d), outside the allocated ranges", pos, r.Off)
		}
		pos = r.End()
		alloc += r.Len
	}
	if !allZero(content[pos:]) {
		t.Fatalf("non-zero data after the last allocated range at %d", pos)
	}
	t.Logf("%s: allocated %d of %d bytes", d.Format(), alloc, d.Size())
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func TestReadQemuImages(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := ext4Raw(t, dir, 48<<20)
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		fmt  Format
	}{
		{"qcow2", []string{"-O", "qcow2"}, QCOW2},
		{"qcow2v2", []string{"-O", "qcow2", "-o", "compat=0.10"}, QCOW2},
		{"qcow2-compressed", []string{"-c", "-O", "qcow2"}, QCOW2},
		{"qcow2-zstd", []string{"-c", "-O", "qcow2", "-o", "compression_type=zstd"}, QCOW2},
		{"qcow2-4k", []string{"-O", "qcow2", "-o", "cluster_size=4096"}, QCOW2},
		{"vhd-dynamic", []string{"-O", "vpc"}, VHD},
		{"vhd-fixed", []string{"-O", "vpc", "-o", "subformat=fixed"}, VHD},
		{"vhd-forcesize", []string{"-O", "vpc", "-o", "force_size=on"}, VHD},
		{"vhdx", []string{"-O", "vhdx"}, VHDX},
		{"vhdx-1m", []string{"-O", "vhdx", "-o", "block_size=1048576"}, VHDX},
		{"vhdx-fixed", []string{"-O", "vhdx", "-o", "subformat=fixed"}, VHDX},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(dir, c.name+".img")
			qemuImg(t, append(append([]string{"convert"}, c.args...), src, img)...)
			d, err := Open(img, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Format() != c.fmt {
				t.Fatalf("format %s, want %s", d.Format(), c.fmt)
			}
			ref := rawOf(t, img, c.fmt)
			if d.Size() != int64(len(ref)) {
				t.Fatalf("virtual size %d, qemu-img says %d", d.Size(), len(ref))
			}
			got := readAll(t, d, d.Size())
			if !bytes.Equal(got, ref) {
				t.Fatalf("content differs from qemu-img's raw conversion")
			}
			if !bytes.Equal(got[:len(want)], want) {
				t.Fatalf("content differs from the source")
			}
			checkCovers(t, d, got)
		})
	}
}

func TestReadBackingChains(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := ext4Raw(t, dir, 32<<20)
	base := filepath.Join(dir, "base.qcow2")
	qemuImg(t, "convert", "-O", "qcow2", src, base)
	mid := filepath.Join(dir, "mid.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid)
	qemuImg(t, "rebase", "-u", "-b", "base.qcow2", "-F", "qcow2", mid)
	// Write into the overlay: new data and a zeroed range over base data.
	io := filepath.Join(dir, "io.bin")
	os.WriteFile(io, bytes.Repeat([]byte("overlay!"), 1<<16), 0o644)
	top := filepath.Join(dir, "top.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top)
	for _, img := range []string{mid, top} {
		if out, err := exec.Command("qemu-io", "-c", "write -P 0x5a 1M 192k", "-c", "write -z 0 64k", img).CombinedOutput(); err != nil {
			t.Logf("qemu-io not usable (%v: %s); using qemu-img dd-free path", err, out)
			break
		}
	}
	// A raw base under a qcow2 overlay too.
	over := filepath.Join(dir, "over-raw.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "disk.raw", "-F", "raw", over)
	for _, img := range []string{mid, top, over} {
		d, err := Open(img, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		ref := rawOf(t, img, QCOW2)
		got := readAll(t, d, d.Size())
		if !bytes.Equal(got, ref) {
			t.Fatalf("%s: content differs from qemu-img's", img)
		}
		checkCovers(t, d, got)
		if len(d.Layers) < 2 {
			t.Fatalf("%s: chain of %d layers", img, len(d.Layers))
		}
		d.Close()
	}
}

func TestDetect(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for _, c := range []struct{ qfmt, ext string }{{"qcow2", "x"}, {"vpc", "qcow2"}, {"vhdx", "vhd"}, {"raw", "vhdx"}} {
		p := filepath.Join(dir, "img."+c.ext+c.qfmt)
		qemuImg(t, "create", "-q", "-f", c.qfmt, p, "8M")
		f, _ := os.Open(p)
		st, _ := f.Stat()
		got, err := Detect(f, st.Size())
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := ParseFormat(c.qfmt)
		if got != want {
			t.Errorf("%s: detected %s, want %s", p, got, want)
		}
	}
}

// TestConcurrentReads reads images from many goroutines at once (run
// under -race: the table and cluster caches are shared).
func TestConcurrentReads(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := ext4Raw(t, dir, 16<<20)
	want, _ := os.ReadFile(src)
	for _, args := range [][]string{{"-c", "-O", "qcow2", "-o", "cluster_size=4096"}, {"-O", "vhdx", "-o", "block_size=1048576"}, {"-O", "vpc"}} {
		img := filepath.Join(dir, "c-"+args[len(args)-1])
		qemuImg(t, append(append([]string{"convert"}, args...), src, img)...)
		d, err := Open(img, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 8)
		for g := 0; g < 8; g++ {
			go func(g int) {
				buf := make([]byte, 12345)
				for off := int64(g * 4096); off < int64(len(want)); off += 200 << 10 {
					n, err := d.ReadAt(buf, off)
					if err != nil && n != len(want)-int(off) {
						errc <- err
						return
					}
					if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
						errc <- fmt.Errorf("%s: wrong bytes at %d", img, off)
						return
					}
				}
				errc <- nil
			}(g)
		}
		for g := 0; g < 8; g++ {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
		d.Close()
	}
}

// TestReadFixedVHDXPartialLastBlock: qemu makes a fixed VHDX whose
// virtual size is not a whole number of blocks only as long as the disk
// (the file ends inside the last block). That block must read, as qemu
// reads it, not be refused as truncated.
func TestReadFixedVHDXPartialLastBlock(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	content := make([]byte, 10<<20) // 8 MiB blocks: the second is partial
	copy(content[9<<20:], bytes.Repeat([]byte("last block"), 1<<16))
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "fixed.vhdx")
	qemuImg(t, "convert", "-O", "vhdx", "-o", "subformat=fixed,block_state_zero=off,block_size=8M", src, img)
	d, err := Open(img, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ref := rawOf(t, img, VHDX)
	got := readAll(t, d, d.Size())
	if !bytes.Equal(got, ref) || !bytes.Equal(got, content) {
		t.Fatalf("content differs from qemu-img's raw conversion")
	}
	checkCovers(t, d, got)
}

// TestExtendedL2 reads qcow2 images with extended L2 entries (qemu-img
// -o extended_l2=on), whose map is kept per subcluster, flat and as an
// overlay written in pieces smaller than a cluster, and writes the
// overlay back as a layer that qemu reads alike.
func TestExtendedL2(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	content := make([]byte, 8<<20)
	for i := range content {
		if i/4096%3 != 0 {
			content[i] = byte(i/4096) | 1
		}
	}
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	flat := filepath.Join(dir, "flat.qcow2")
	qemuImg(t, "convert", "-O", "qcow2", "-o", "extended_l2=on", src, flat)
	base := filepath.Join(dir, "base.qcow2")
	qemuImg(t, "convert", "-O", "qcow2", src, base)
	over := filepath.Join(dir, "over.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-b", "base.qcow2", "-F", "qcow2", over)
	// 2 KiB subclusters: data, zeros and a discard inside single clusters.
	if out, err := exec.Command("qemu-io", "-c", "write -P 0x61 4k 4k", "-c", "write -P 0x62 1M 6k",
		"-c", "write -z 2M 2k", "-c", "write -z 3M 128k", "-c", "write -c -P 0x63 5M 64k", "-c", "discard 6M 64k", over).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	for _, img := range []string{flat, over} {
		d, err := Open(img, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, d, d.Size())
		if !bytes.Equal(got, rawOf(t, img, QCOW2)) {
			t.Fatalf("%s: content differs from qemu-img's raw conversion", filepath.Base(img))
		}
		checkCovers(t, d, got)
		if img == flat {
			d.Close()
			continue
		}
		// The overlay restored as a layer: its own map, the same parent.
		l := d.Layers[0]
		runs, err := l.Runs()
		if err != nil {
			t.Fatal(err)
		}
		top := filepath.Join(dir, "top.qcow2")
		src := Source{Size: l.Size(), R: l, Backing: "base.qcow2", BackingFormat: QCOW2, Own: runs}
		if _, err := Write(context.Background(), top, src, WriteOptions{Format: QCOW2, QCOW2: l.Info.QCOW2}); err != nil {
			t.Fatal(err)
		}
		d.Close()
		qemuImg(t, "check", top)
		if out := qemuImg(t, "compare", over, top); !strings.Contains(out, "identical") {
			t.Fatalf("qemu-img compare: %s", out)
		}
	}
}
