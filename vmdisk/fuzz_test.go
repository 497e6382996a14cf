package vmdisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// sparseFile is a file image built from patches over zeros, so that a
// fuzz input of a few KiB can describe a multi-MiB VHDX.
//
// Encoding: "SPRS", u64 size, then repeated {u64 offset, u32 length,
// bytes}. Inputs without the magic are the file itself.
type sparseFile struct {
	size    int64
	patches []patch
}

type patch struct {
	off  int64
	data []byte
}

const maxSparseSize = 64 << 20

func decodeSparse(b []byte) (*sparseFile, bool) {
	if len(b) < 12 || string(b[:4]) != "SPRS" {
		return nil, false
	}
	s := &sparseFile{size: int64(binary.LittleEndian.Uint64(b[4:]) % maxSparseSize)}
	b = b[12:]
	for len(b) >= 12 {
		off := int64(binary.LittleEndian.Uint64(b) % maxSparseSize)
		n := int(binary.LittleEndian.Uint32(b[8:]))
		b = b[12:]
		n = min(n, len(b))
		s.patches = append(s.patches, patch{off, b[:n]})
		b = b[n:]
	}
	return s, true
}

func encodeSparse(img []byte) []byte {
	out := append([]byte("SPRS"), binary.LittleEndian.AppendUint64(nil, uint64(len(img)))...)
	const g = 512
	for off := 0; off < len(img); {
		if allZero(img[off:min(off+g, len(img))]) {
			off += g
			continue
		}
		end := off
		for end < len(img) && !allZero(img[end:min(end+g, len(img))]) {
			end += g
		}
		end = min(end, len(img))
		out = binary.LittleEndian.AppendUint64(out, uint64(off))
		out = binary.LittleEndian.AppendUint32(out, uint32(end-off))
		out = append(out, img[off:end]...)
		off = end
	}
	return out
}

func (s *sparseFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	n := len(p)
	var err error
	if int64(n) > s.size-off {
		n, err = int(s.size-off), io.EOF
	}
	clear(p[:n])
	for _, pt := range s.patches {
		lo, hi := max(off, pt.off), min(off+int64(n), pt.off+int64(len(pt.data)))
		if lo < hi {
			copy(p[lo-off:hi-off], pt.data[lo-pt.off:hi-pt.off])
		}
	}
	return n, err
}

// exercise opens an image from fuzz bytes and reads it, bounded.
func exercise(t *testing.T, data []byte) {
	var r io.ReaderAt = bytes.NewReader(data)
	size := int64(len(data))
	if s, ok := decodeSparse(data); ok {
		r, size = s, s.size
	}
	start := time.Now()
	l, err := OpenReaderAt(r, size, "fuzz.img", "", Limits{})
	if err != nil {
		return
	}
	runs, err := l.Runs()
	if err == nil {
		var prev int64
		for _, x := range runs {
			if x.Off < prev || x.Len <= 0 || x.End() > l.Size() {
				t.Fatalf("bad run %+v (prev end %d, size %d)", x, prev, l.Size())
			}
			prev = x.End()
		}
	}
	// A small disk is read whole and in pieces that do not line up with
	// clusters, blocks or sectors: both reads give the same bytes, and
	// what the map does not list as Data reads as zeros (the layer alone
	// has no parent to show through).
	if size := l.Size(); size > 0 && size <= 1<<20 {
		whole := make([]byte, size)
		if n, err := l.ReadAt(whole, 0); n == len(whole) && (err == nil || err == io.EOF) {
			piece := make([]byte, 1000)
			for off := int64(0); off < size; off += int64(len(piece)) {
				n, err := l.ReadAt(piece, off)
				if err != nil && err != io.EOF {
					t.Fatalf("whole disk read, but ReadAt(%d) fails: %v", off, err)
				}
				if !bytes.Equal(piece[:n], whole[off:off+int64(n)]) {
					t.Fatalf("ReadAt(%d) of %d bytes differs from the same bytes of a whole read", off, n)
				}
			}
			if runs, err := l.Runs(); err == nil {
				var prev int64
				for _, x := range append(runs, Run{Off: size, Kind: Data}) {
					gap := whole[prev:x.Off]
					if x.Kind != Data {
						gap = whole[prev:x.End()]
					}
					if !allZero(gap) {
						t.Fatalf("bytes %d..%d are not listed as data but do not read as zeros", prev, prev+int64(len(gap)))
					}
					prev = x.End()
				}
			}
		}
	}
	buf := make([]byte, 64<<10)
	for _, off := range []int64{0, l.Size() / 2, l.Size() - int64(len(buf))} {
		if off < 0 || off >= l.Size() {
			continue
		}
		n, err := l.ReadAt(buf, off)
		if err == nil && n != len(buf) {
			t.Fatalf("ReadAt(%d) = %d bytes without error", off, n)
		}
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("took %v", el)
	}
}

// FuzzOpen feeds arbitrary files (or sparse patch sets) to format
// detection, every container parser (headers, BAT, L1/L2, region and
// metadata tables, sector bitmaps) and the reader.
func FuzzOpen(f *testing.F) {
	f.Add([]byte("QFI\xfb"))
	f.Add([]byte("vhdxfile"))
	f.Add(append(make([]byte, 512), []byte("conectix")...))
	f.Fuzz(func(t *testing.T, data []byte) { exercise(t, data) })
}

// FuzzQCOW2Header fuzzes the qcow2 header decoder alone.
func FuzzQCOW2Header(f *testing.F) {
	h := make([]byte, 112)
	copy(h, qcowMagic)
	binary.BigEndian.PutUint32(h[4:], 3)
	binary.BigEndian.PutUint32(h[20:], 16)
	binary.BigEndian.PutUint32(h[100:], 112)
	f.Add(h)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseQCOW2Header(b, "fuzz")
		if err == nil && (h.clusterBits < 9 || h.clusterBits > 21) {
			t.Fatalf("accepted cluster_bits %d", h.clusterBits)
		}
	})
}

// FuzzVHDFooter fuzzes the VHD footer decoder and size rules.
func FuzzVHDFooter(f *testing.F) {
	ft := make([]byte, 512)
	copy(ft, "conectix")
	copy(ft[28:], "qemu")
	binary.BigEndian.PutUint32(ft[64:], vhdChecksum(ft, 64))
	f.Add(ft)
	f.Fuzz(func(t *testing.T, b []byte) {
		if ft, err := parseVHDFooter(b, "fuzz"); err == nil {
			if s := vhdVirtualSize(ft); s < 0 {
				t.Fatalf("negative size %d", s)
			}
		}
	})
}

// FuzzVHDXTables fuzzes the VHDX header, region table and parent locator
// decoders.
func FuzzVHDXTables(f *testing.F) {
	f.Add([]byte("head"))
	f.Add([]byte("regi"))
	f.Add(buildParentLocator([][2]string{{"parent_linkage", "{00000000-0000-0000-0000-000000000000}"}, {"relative_path", ".\\base.vhdx"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseVHDXHeader(b)
		parseVHDXRegions(b)
		parseParentLocator(b)
	})
}

// TestWriteFuzzSeeds regenerates the seed corpora from real images
// (DRPIPE_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./vmdisk).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("DRPIPE_WRITE_SEEDS") == "" {
		t.Skip("set DRPIPE_WRITE_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	needQemu(t)
	dir := t.TempDir()
	content := make([]byte, 256<<10)
	for _, sec := range []int{0, 9, 100, 300, 511} {
		for i := 0; i < 512; i++ {
			content[sec*512+i] = byte(sec + i*7)
		}
	}
	raw := filepath.Join(dir, "small.raw")
	os.WriteFile(raw, content, 0o644)
	seeds := map[string][]byte{}
	add := func(name, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		seeds[name] = encodeSparse(b)
	}
	for name, args := range map[string][]string{
		"qemu-qcow2-512":   {"-O", "qcow2", "-o", "cluster_size=512"},
		"qemu-qcow2-v2":    {"-O", "qcow2", "-o", "compat=0.10,cluster_size=4096"},
		"qemu-qcow2-zlib":  {"-c", "-O", "qcow2", "-o", "cluster_size=4096"},
		"qemu-qcow2-zstd":  {"-c", "-O", "qcow2", "-o", "cluster_size=4096,compression_type=zstd"},
		"qemu-qcow2-extl2": {"-O", "qcow2", "-o", "cluster_size=16384,extended_l2=on"},
		"qemu-vhd-dynamic": {"-O", "vpc"},
		"qemu-vhd-fixed":   {"-O", "vpc", "-o", "subformat=fixed"},
		"qemu-vhdx":        {"-O", "vhdx", "-o", "block_size=1048576"},
	} {
		p := filepath.Join(dir, name)
		qemuImg(t, append(append([]string{"convert", "-f", "raw"}, args...), raw, p)...)
		add(name, p)
	}
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", "small.raw", "-F", "raw", filepath.Join(dir, "overlay"))
	add("qemu-qcow2-overlay", filepath.Join(dir, "overlay"))
	// Differencing VHD and VHDX from our writer (qemu writes neither).
	for _, f := range []Format{VHD, VHDX} {
		p := filepath.Join(dir, "diff"+f.Ext())
		o := WriteOptions{Format: f, VHD: &VHDParams{BlockSize: 4096}, VHDX: &VHDXParams{BlockSize: 1 << 20}}
		src := Source{Size: int64(len(content)), R: bytes.NewReader(content), Backing: "base" + f.Ext(), BackingFormat: f,
			Own: []Run{{0, 4096, Data}, {8192, 512, Zero}, {65536, 1024, Data}, {200 << 10, 512, Data}}}
		if _, err := Write(context.Background(), p, src, o); err != nil {
			t.Fatal(err)
		}
		add("drpipe-diff-"+string(f), p)
	}
	names := make([]string, 0, len(seeds))
	for n := range seeds {
		names = append(names, n)
	}
	sort.Strings(names)
	out := filepath.Join("testdata", "fuzz", "FuzzOpen")
	os.MkdirAll(out, 0o755)
	for _, n := range names {
		s := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seeds[n])
		if err := os.WriteFile(filepath.Join(out, n), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		exercise(t, seeds[n])
		t.Logf("%s: %d bytes", n, len(seeds[n]))
	}
	// Header-level seeds from the same images.
	for target, names := range map[string][]string{"FuzzQCOW2Header": {"qemu-qcow2-512", "qemu-qcow2-v2", "qemu-qcow2-zstd"}} {
		d := filepath.Join("testdata", "fuzz", target)
		os.MkdirAll(d, 0o755)
		for _, n := range names {
			b, _ := os.ReadFile(filepath.Join(dir, n))
			os.WriteFile(filepath.Join(d, n), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b[:512])), 0o644)
		}
	}
	for _, n := range []string{"qemu-vhd-dynamic", "qemu-vhd-fixed"} {
		d := filepath.Join("testdata", "fuzz", "FuzzVHDFooter")
		os.MkdirAll(d, 0o755)
		b, _ := os.ReadFile(filepath.Join(dir, n))
		os.WriteFile(filepath.Join(d, n), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b[len(b)-512:])), 0o644)
	}
	{
		d := filepath.Join("testdata", "fuzz", "FuzzVHDXTables")
		os.MkdirAll(d, 0o755)
		b, _ := os.ReadFile(filepath.Join(dir, "qemu-vhdx"))
		for name, off := range map[string]int{"header1": vhdxHeader1, "region1": vhdxRegion1} {
			n := vhdxHeaderLen
			if name == "region1" {
				n = vhdxRegionLen
			}
			os.WriteFile(filepath.Join(d, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b[off:off+n])), 0o644)
		}
	}
	_ = exec.Command
}
