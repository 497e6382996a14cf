package hugepage

import (
	"runtime"
	"testing"
	"unsafe"
)

// TestPoolKeepsBuffersAcrossCollections: a kept buffer survives garbage
// collections (a sync.Pool drops its items within two), and the pool
// keeps no more than it was told, nor a buffer too small.
func TestPoolKeepsBuffersAcrossCollections(t *testing.T) {
	p := NewPool(1<<20, 2)
	a, b, c := p.Get(), p.Get(), p.Get()
	if len(a) != 1<<20 {
		t.Fatalf("Get returned %d bytes, want %d", len(a), 1<<20)
	}
	p.Put(a[:10])
	p.Put(b)
	p.Put(c) // beyond the two kept
	p.Put(make([]byte, 100))
	runtime.GC()
	runtime.GC()
	runtime.GC()
	same := func(x, y []byte) bool { return unsafe.SliceData(x) == unsafe.SliceData(y) }
	x, y := p.Get(), p.Get()
	if !(same(x, a) && same(y, b)) {
		t.Fatal("the kept buffers were not handed out again after garbage collections")
	}
	if len(x) != 1<<20 {
		t.Fatalf("a kept buffer put back shortened came out with %d bytes, want %d", len(x), 1<<20)
	}
	if z := p.Get(); same(z, c) {
		t.Fatal("a third buffer was kept beyond the two asked for")
	}
}
