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
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFL, unix.O_WRONLY|unix.O_DIRECT); err != nil {
		t.Skipf("file system of %s has no O_DIRECT: %v", p, err)
	}
	unix.FcntlInt(f.Fd(), unix.F_SETFL, unix.O_WRONLY)
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
