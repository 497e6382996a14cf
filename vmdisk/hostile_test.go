package vmdisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQCOW2HeaderLongerThanFile: a qcow2 v3 header whose
// header_length runs past the end of a short file (an empty disk, so the
// L1 table checks pass) must be an error, not a panic that takes the
// whole backup down.
func TestQCOW2HeaderLongerThanFile(t *testing.T) {
	for _, c := range []struct {
		size      int
		bits      uint32
		headerLen uint32
	}{
		{104, 16, 112},         // the smallest v3 header, 8 bytes short
		{1 << 20, 21, 3 << 19}, // a 1 MiB file (backup probes it) with a 1.5 MiB header
	} {
		b := make([]byte, c.size)
		copy(b, qcowMagic)
		binary.BigEndian.PutUint32(b[4:], 3)
		binary.BigEndian.PutUint32(b[20:], c.bits)
		binary.BigEndian.PutUint32(b[100:], c.headerLen)
		var err error
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("%d-byte file, header length %d: panic: %v", c.size, c.headerLen, r)
				}
			}()
			_, err = OpenReaderAt(bytes.NewReader(b), int64(len(b)), "short.qcow2", "", Limits{})
		}()
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "header length") {
			t.Errorf("%d-byte file, header length %d: got %v, want a malformed-image error naming the header length", c.size, c.headerLen, err)
		}
	}
}

// TestVHDTruncatedLastBlock: a dynamic VHD cut inside its last
// block (the footer at the end is gone, the copy at the start still
// opens it) must not read the missing bytes as zeros: backup would store
// a silently wrong disk.
func TestVHDTruncatedLastBlock(t *testing.T) {
	dir := t.TempDir()
	size := int64(8 << 20)
	content := bytes.Repeat([]byte{0xAB}, int(size))
	p := writeImage(t, dir, "cut.vhd", VHD, size, Source{Size: size, R: bytes.NewReader(content)}, WriteOptions{})
	mutate(t, p, func(b []byte) []byte { return b[:len(b)-512-1<<20] })
	d, err := Open(p, Limits{})
	if err == nil {
		defer d.Close()
		got := make([]byte, size)
		if _, err = d.ReadAt(got, 0); err == nil {
			_, err = d.Allocated()
		}
		if err == nil {
			t.Fatalf("truncated VHD read without error (%d zero bytes in place of data)", bytes.Count(got, []byte{0}))
		}
	}
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("got %v, want a malformed-image error saying the image is truncated", err)
	}
}

// TestBackingNotRegularFile: a backing reference (written by whoever
// controls the image header) that names a FIFO must not hang Open (and
// with it the backup) in open(2), and one that names a device must not
// be read as an empty parent (a block device's stat size is 0: its data
// would silently read as zeros). Both are clear chain errors.
func TestBackingNotRegularFile(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, backing := range []string{"pipe", "/dev/null"} {
		top := filepath.Join(dir, "over-"+filepath.Base(backing)+".qcow2")
		src := Source{Size: 1 << 20, R: bytes.NewReader(make([]byte, 1<<20)), Own: []Run{{0, 65536, Zero}}, Backing: backing}
		if _, err := Write(context.Background(), top, src, WriteOptions{Format: QCOW2}); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			d, err := Open(top, Limits{})
			if err == nil {
				d.Close()
			}
			errc <- err
		}()
		select {
		case err := <-errc:
			if !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("backing %s: got %v, want a chain error saying it is not a regular file", backing, err)
			}
		case <-time.After(3 * time.Second):
			// Release the blocked open(2) before failing.
			if w, err := os.OpenFile(filepath.Join(dir, "pipe"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				defer w.Close()
			}
			t.Fatalf("backing %s: Open hangs", backing)
		}
	}
}

// TestWriteEmptyDisk: qemu-img makes VHDX files of a 0-byte
// virtual disk (71 MiB of container, so backup takes them as disks);
// their allocation map is empty (nil), and writing them back in any
// format must work, not fail with "map run [0,+0) is empty".
func TestWriteEmptyDisk(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "empty.vhdx")
	qemuImg(t, "create", "-q", "-f", "vhdx", src, "0")
	d, err := Open(src, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, f := range []Format{Raw, QCOW2, VHDX, VHD} {
		out := filepath.Join(dir, "out"+f.Ext())
		if _, err := Write(context.Background(), out, sourceOf(t, d), WriteOptions{Format: f}); err != nil {
			t.Errorf("write the empty disk as %s: %v", f, err)
			continue
		}
		// (qemu cannot open a 0-byte VHDX with a small BAT region: its
		// entry count underflows; it makes a 64 MiB BAT for one.)
		if f == QCOW2 {
			qemuImg(t, "check", "-f", string(f), out)
		}
		back, err := Open(out, Limits{})
		if err != nil {
			t.Errorf("reopen %s: %v", out, err)
			continue
		}
		if back.Size() != 0 {
			t.Errorf("%s: virtual size %d, want 0", out, back.Size())
		}
		back.Close()
	}
}

// TestWriteVHDBeyondItsLimit: a dynamic VHD addresses blocks in 32-bit
// sectors, so a disk over VHD's 2040 GiB would be written with block
// offsets that wrap. The writer refuses it, naming the formats that fit.
func TestWriteVHDBeyondItsLimit(t *testing.T) {
	out := filepath.Join(t.TempDir(), "big.vhd")
	src := Source{Size: 2041 << 30, R: bytes.NewReader(nil), Data: []Range{}}
	_, err := Write(context.Background(), out, src, WriteOptions{Format: VHD})
	if err == nil || !strings.Contains(err.Error(), "2040 GiB") || !strings.Contains(err.Error(), "VHDX") {
		t.Errorf("writing a 2041 GiB disk as VHD: %v; want a refusal naming the limit and the other formats", err)
	}
	if _, serr := os.Stat(out); serr == nil {
		t.Errorf("a refused VHD was left at %s", out)
	}
}

// TestOverlappingBlocks: a block table that points blocks into one
// another (each a sector or a MiB after the last, reading the others'
// data as their sector bitmaps) lets a file of a few MiB describe a
// layer map of millions of runs, which backup holds in memory. Blocks
// that overlap are a damaged image: its map is refused.
func TestOverlappingBlocks(t *testing.T) {
	dir := t.TempDir()
	runsOf := func(t *testing.T, p string) ([]Run, error) {
		t.Helper()
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		l, err := OpenLayer(f, p, "", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		runs, err := l.Runs()
		if err == nil {
			t.Fatalf("map of %d runs from a %d-byte file", len(runs), l.Info.FileSize)
		}
		return runs, err
	}
	t.Run("vhd", func(t *testing.T) {
		const block, n = 2 << 20, 1024
		data := bytes.Repeat([]byte{0x55}, block) // read as bitmaps: every other sector
		src := Source{Size: n * block, R: bytes.NewReader(data), Own: []Run{{0, block, Data}}, Backing: "base.vhd", BackingFormat: VHD}
		p := writeImage(t, dir, "overlap.vhd", VHD, src.Size, src, WriteOptions{})
		mutate(t, p, func(b []byte) []byte {
			const bat = 1536
			first := binary.BigEndian.Uint32(b[bat:])
			for k := uint32(1); k < n; k++ { // block k starts k sectors after block 0
				binary.BigEndian.PutUint32(b[bat+4*k:], first+k)
			}
			footer := append([]byte(nil), b[len(b)-512:]...)
			return append(append(b[:len(b)-512], make([]byte, 512*n)...), footer...)
		})
		_, err := runsOf(t, p)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "overlap") {
			t.Errorf("got %v, want a malformed-image error saying the blocks overlap", err)
		}
	})
	t.Run("vhdx", func(t *testing.T) {
		const block, n, ratio = 32 << 20, 32, 128 // 512-byte sectors: 128 blocks a chunk
		src := Source{Size: n * block, R: bytes.NewReader(make([]byte, 512)), Own: []Run{{0, 512, Data}}, Backing: "base.vhdx", BackingFormat: VHDX}
		p := writeImage(t, dir, "overlap.vhdx", VHDX, src.Size, src, WriteOptions{VHDX: &VHDXParams{BlockSize: block}})
		mutate(t, p, func(b []byte) []byte {
			const bat = 3 << 20
			first := binary.LittleEndian.Uint64(b[bat:]) >> 20
			for k := uint64(1); k < n; k++ { // block k starts k MiB after block 0
				binary.LittleEndian.PutUint64(b[bat+8*k:], (first+k)<<20|vhdxPartPresent)
			}
			bm := binary.LittleEndian.Uint64(b[bat+8*ratio:]) >> 20 << 20
			for i := range n * block / 512 / 8 {
				b[int(bm)+i] = 0x55
			}
			return b
		})
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, st.Size()+n<<20); err != nil { // room for the last block
			t.Fatal(err)
		}
		_, err = runsOf(t, p)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "overlap") {
			t.Errorf("got %v, want a malformed-image error saying the blocks overlap", err)
		}
	})
}
