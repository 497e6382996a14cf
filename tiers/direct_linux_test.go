package tiers

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cachedPages counts the pages of the file at p in the page cache.
func cachedPages(t *testing.T, p string) int {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func TestCopyToFileSizes(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, directMin - 1, directMin, directMin + 1, directChunk, directChunk + directAlign - 1, 2*directChunk + 17} {
		want := make([]byte, size)
		for i := range want {
			want[i] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, "obj")
		os.Remove(p)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		n, err := copyToFile(f, bytes.NewReader(want), int64(size))
		if err != nil || n != int64(size) {
			t.Fatalf("size %d: copied %d, %v", size, n, err)
		}
		// The descriptor is back to ordinary I/O: an unaligned write works.
		if fl, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); fl&unix.O_DIRECT != 0 {
			t.Fatalf("size %d: O_DIRECT still set after the copy", size)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: read back %d bytes (equal %v), %v", size, len(got), bytes.Equal(got, want), err)
		}
	}
}

func TestCopyToFileBypassesPageCache(t *testing.T) {
	p := filepath.Join(t.TempDir(), "obj")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if !directOK(t, f) {
		t.Skipf("file system of %s has no O_DIRECT", p)
	}
	size := 3*directChunk + 5
	if _, err := copyToFile(f, bytes.NewReader(bytes.Repeat([]byte{7}, size)), int64(size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// A buffered write would leave all of the object's pages cached.
	if n := cachedPages(t, p); n > 4 {
		t.Errorf("%d of %d pages in the page cache after a direct write", n, (size+4095)/4096)
	}
}

func TestCopyToFileShortSource(t *testing.T) {
	p := filepath.Join(t.TempDir(), "obj")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	have := directChunk + 100
	n, err := copyToFile(f, bytes.NewReader(make([]byte, have)), int64(2*directChunk))
	if !errors.Is(err, io.EOF) || n != int64(have) {
		t.Fatalf("short source: copied %d, %v; want %d, EOF", n, err, have)
	}
	if fi, _ := f.Stat(); fi.Size() != int64(have) {
		t.Errorf("file is %d bytes after a short copy, want the %d bytes read", fi.Size(), have)
	}
}

// rangeFile writes size random bytes to a new file and returns it opened
// for reading, with its content.
func rangeFile(t *testing.T, size int) (*os.File, []byte) {
	t.Helper()
	want := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	p := filepath.Join(t.TempDir(), "obj")
	// Written through the page cache and not synced: direct reads must
	// still see it (the kernel writes dirty pages back first).
	if err := os.WriteFile(p, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, want
}

// directOK reports whether f's file system accepts O_DIRECT, leaving f's
// flags as they were.
func directOK(t *testing.T, f *os.File) bool {
	t.Helper()
	fd, fl, ok := setDirect(f)
	if ok {
		if err := setFlags(fd, fl); err != nil {
			t.Fatal(err)
		}
	}
	return ok
}

// oddReads reads r to the end in calls of varying sizes.
func oddReads(r io.Reader) ([]byte, error) {
	var out []byte
	sizes := []int{1, 777, directAlign, 3 << 20, 100_000}
	for i := 0; ; i++ {
		b := make([]byte, sizes[i%len(sizes)])
		n, err := r.Read(b)
		out = append(out, b[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func TestRangeReaderRanges(t *testing.T) {
	size := 3*directChunk + 1234
	f, want := rangeFile(t, size)
	s := int64(size)
	cases := []struct{ off, n int64 }{
		{0, s}, {1, s - 1}, {0, directMin}, {0, directMin - 1}, {4095, directMin + 1},
		{directAlign, 2 * directChunk}, {directChunk - 1, directChunk + 2}, {s - directMin, directMin},
		{s - directMin - 17, directMin + 17}, {12345, s - 12345 - 999}, {s - 10, 10},
	}
	direct := directOK(t, f)
	for _, c := range cases {
		rd, done := rangeReader(f, c.off, c.n)
		if _, isDirect := rd.(*directReader); isDirect != (direct && c.n >= directMin) {
			t.Errorf("range (%d, %d): direct reader %v, want %v", c.off, c.n, isDirect, direct && c.n >= directMin)
		}
		got, err := oddReads(rd)
		done()
		if fl, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); fl&unix.O_DIRECT != 0 {
			t.Errorf("range (%d, %d): O_DIRECT still set after done", c.off, c.n)
		}
		if err != nil || !bytes.Equal(got, want[c.off:c.off+c.n]) {
			t.Errorf("range (%d, %d): %d bytes (equal %v), %v", c.off, c.n, len(got), bytes.Equal(got, want[c.off:c.off+c.n]), err)
		}
	}
}

func TestRangeReaderPastEnd(t *testing.T) {
	size := 2*directChunk + 100
	f, _ := rangeFile(t, size)
	// The file ends 100 bytes into the range's last block.
	rd, done := rangeReader(f, directChunk, directChunk+4096)
	defer done()
	b := make([]byte, directChunk+4096)
	n, err := io.ReadFull(rd, b)
	if !errors.Is(err, io.ErrUnexpectedEOF) || n != directChunk+100 {
		t.Fatalf("range past the end: read %d, %v; want %d, unexpected EOF", n, err, directChunk+100)
	}
}

func TestRangeReaderBypassesPageCache(t *testing.T) {
	size := 3 * directChunk
	f, want := rangeFile(t, size)
	if !directOK(t, f) {
		t.Skipf("file system of %s has no O_DIRECT", f.Name())
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Sync wrote the pages back; drop them so only the read could bring
	// them back.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if n := cachedPages(t, f.Name()); n > 4 {
		t.Skipf("%d pages still cached after FADV_DONTNEED: cannot tell direct reads here", n)
	}
	rd, done := rangeReader(f, 10, int64(size-10))
	got, err := io.ReadAll(rd)
	done()
	if err != nil || !bytes.Equal(got, want[10:]) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if _, ok := rd.(*directReader); !ok {
		t.Fatalf("O_DIRECT works on %s but the range was read through the page cache", f.Name())
	}
	if n := cachedPages(t, f.Name()); n > 4 {
		t.Errorf("%d of %d pages in the page cache after a direct read", n, size/4096)
	}
}

func TestRangeReaderFallsBack(t *testing.T) {
	size := 2*directChunk + 5
	f, want := rangeFile(t, size)
	rd, done := rangeReader(f, 3, int64(size-3))
	defer done()
	d, ok := rd.(*directReader)
	if !ok {
		t.Skipf("file system of %s has no O_DIRECT", f.Name())
	}
	head := make([]byte, 5000)
	if _, err := io.ReadFull(d, head); err != nil {
		t.Fatal(err)
	}
	// What the reader does when a read is refused with EINVAL: clear the
	// flag and go on through the page cache from the same position.
	if err := setFlags(d.fd, d.fl); err != nil {
		t.Fatal(err)
	}
	d.buffered = true
	rest, err := oddReads(d)
	if err != nil || !bytes.Equal(append(head, rest...), want[3:]) {
		t.Fatalf("after the fallback: %d bytes, %v", len(head)+len(rest), err)
	}
}

// TestRangeReaderStraightIntoPlaced checks that a range read into a buffer
// laid out by Placed goes straight into it for all but its first and last
// partial blocks, and that the bytes are right whether or not the buffer
// is placed, for ranges that start and end on and off block boundaries and
// one that runs past the end of the file.
func TestRangeReaderStraightIntoPlaced(t *testing.T) {
	size := 3*directChunk + 1234
	f, want := rangeFile(t, size)
	s := int64(size)
	direct := directOK(t, f)
	cases := []struct{ off, n int64 }{
		{0, s}, {1, s - 1}, {4095, directMin + 1}, {directAlign, 2 * directChunk},
		{12345, s - 12345 - 999}, {s - directMin - 17, directMin + 17}, {directChunk - 1, directChunk + 2},
	}
	for _, c := range cases {
		for _, placed := range []bool{true, false} {
			backing := make([]byte, c.n+ReadAlign)
			buf := Placed(backing, c.n, 0, c.off)
			if !placed {
				buf = Placed(backing, c.n, 0, c.off+1)
			}
			rd, done := rangeReader(f, c.off, c.n)
			_, err := io.ReadFull(rd, buf)
			done()
			if err != nil || !bytes.Equal(buf, want[c.off:c.off+c.n]) {
				t.Fatalf("range (%d, %d) placed %v: equal %v, %v", c.off, c.n, placed, bytes.Equal(buf, want[c.off:c.off+c.n]), err)
			}
			d, ok := rd.(*directReader)
			if !ok {
				if direct {
					t.Fatalf("range (%d, %d): not read directly", c.off, c.n)
				}
				continue
			}
			head := (directAlign - c.off%directAlign) % directAlign
			tail := (c.off + c.n) % directAlign
			switch {
			case placed && d.direct != c.n-head-tail:
				t.Errorf("range (%d, %d): %d bytes straight into the placed buffer, want %d", c.off, c.n, d.direct, c.n-head-tail)
			case !placed && d.direct != 0:
				t.Errorf("range (%d, %d): %d bytes straight into a misaligned buffer", c.off, c.n, d.direct)
			}
		}
	}
	// Past the end of the file, straight reads stop where the file does.
	rd, done := rangeReader(f, directChunk, s-directChunk+5000)
	defer done()
	buf := Placed(make([]byte, s+ReadAlign), s-directChunk+5000, 0, directChunk)
	n, err := io.ReadFull(rd, buf)
	if !errors.Is(err, io.ErrUnexpectedEOF) || int64(n) != s-directChunk || !bytes.Equal(buf[:n], want[directChunk:]) {
		t.Fatalf("range past the end: read %d, %v; want %d, unexpected EOF", n, err, s-directChunk)
	}
}

// TestPlaced checks Placed's layout: the requested length and capacity,
// inside the storage given, with byte at on the address the object offset
// asks for.
func TestPlaced(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		n := rng.Int64N(3 * ReadAlign)
		slack := rng.Int64N(200)
		skip := rng.Int64N(64)
		backing := make([]byte, skip, skip+n+ReadAlign-1+slack)[skip:] // starts anywhere
		if cap(backing) < int(n+ReadAlign-1) {
			continue
		}
		at := rng.Int64N(n + 1)
		obj := rng.Int64N(1 << 40)
		b := Placed(backing, n, at, obj)
		if int64(len(b)) != n || cap(b) != len(b) {
			t.Fatalf("len %d cap %d, want %d", len(b), cap(b), n)
		}
		base := uintptr(unsafe.Pointer(unsafe.SliceData(backing[:1])))
		start := uintptr(unsafe.Pointer(unsafe.SliceData(b[:cap(b)])))
		if n > 0 && (start < base || start+uintptr(n) > base+uintptr(cap(backing))) {
			t.Fatal("result outside the storage given")
		}
		if n > at {
			if got := int64((start + uintptr(at)) % ReadAlign); got != obj%ReadAlign {
				t.Fatalf("byte %d at address %d mod %d, want %d", at, got, ReadAlign, obj%ReadAlign)
			}
		}
	}
}

// plainWriter hides bytes.Buffer's ReadFrom, as a network stream does, so
// io.Copy reads through its own 32 KiB buffer.
type plainWriter struct{ b bytes.Buffer }

func (w *plainWriter) Write(p []byte) (int, error) { return w.b.Write(p) }

// directCounter counts the Reads of a directReader that went straight
// into the caller's memory (d.direct grew): one device request each.
type directCounter struct {
	d      *directReader
	direct int
}

func (c *directCounter) Read(p []byte) (int, error) {
	before := c.d.direct
	n, err := c.d.Read(p)
	if c.d.direct > before {
		c.direct++
	}
	return n, err
}

// TestStreamedRangeReadsInChunks: a ranged Load streamed with io.Copy (as
// the DR site's server sends one) reads the device in 1 MiB chunks, not one
// request per 32 KiB copy buffer, although those buffers are page-aligned
// and could be read into directly.
func TestStreamedRangeReadsInChunks(t *testing.T) {
	size := 8 * directChunk
	f, want := rangeFile(t, size)
	if !directOK(t, f) {
		t.Skip("no O_DIRECT here")
	}
	off, n := int64(directAlign), int64(size-2*directAlign)
	rd, done := rangeReader(f, off, n)
	defer done()
	c := &directCounter{d: rd.(*directReader)}
	var w plainWriter
	if _, err := io.Copy(&w, c); err != nil || !bytes.Equal(w.b.Bytes(), want[off:off+n]) {
		t.Fatalf("copy: %v", err)
	}
	if limit := int(n/directChunk) + 2; c.direct > limit {
		t.Errorf("%d direct reads of %d bytes for a %d-byte range (1 MiB chunks: at most %d)", c.direct, c.d.direct/int64(c.direct), n, limit)
	}
}
