package pipeline

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/repo"
)

// nodeOfExtents stores a file node of the given extents: data extents
// get blobs of their own (each a counter and then its index repeated),
// and with content set, the content as it reads back is returned beside
// the node.
func nodeOfExtents(t *testing.T, r *repo.Repository, lens []int64, zero func(int) bool, content bool) (*repo.Node, []byte) {
	t.Helper()
	ctx := context.Background()
	var ext []repo.Extent
	var want []byte
	var size int64
	for i, n := range lens {
		if zero(i) {
			ext = append(ext, repo.Extent{Zero: true, Len: n})
			if content {
				want = append(want, make([]byte, n)...)
			}
		} else {
			b := bytes.Repeat(binary.LittleEndian.AppendUint32(nil, uint32(i)), int(n+3)/4)[:n]
			x, _, err := r.SaveBlob(ctx, repo.DataBlob, b, [32]byte{})
			if err != nil {
				t.Fatal(err)
			}
			ext = append(ext, repo.Extent{ID: x, Len: n})
			if content {
				want = append(want, b...)
			}
		}
		size += n
	}
	n := &repo.Node{Name: "big.img", Type: repo.NodeFile, Size: size}
	if err := r.SetContent(ctx, n, ext); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return n, want
}

// TestNodeReaderAcrossContentLists: reads at any offset, spanning the
// edges between content lists, between the lists a reader keeps loaded
// and those it loads again, return the file's bytes; Data gives the
// stored ranges.
func TestNodeReaderAcrossContentLists(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	rng := rand.New(rand.NewPCG(4, 4))
	lens := make([]int64, 12*repo.ContentListExtents+77)
	for i := range lens {
		lens[i] = 1 + rng.Int64N(40)
	}
	n, want := nodeOfExtents(t, r, lens, func(i int) bool { return i%7 != 3 }, true)
	if len(n.ContentLists) != 13 {
		t.Fatalf("node has %d content lists, want 13", len(n.ContentLists))
	}
	nr, err := NewNodeReader(ctx, r, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k := range 1000 {
		off := rng.Int64N(int64(len(want)))
		p := make([]byte, 1+rng.IntN(4000))
		if k%10 == 0 { // across a list edge
			edge := int64(0)
			for _, l := range lens[:(1+rng.IntN(12))*repo.ContentListExtents] {
				edge += l
			}
			off = max(0, edge-int64(rng.IntN(100)))
		}
		got, err := nr.ReadAtContext(ctx, p, off)
		end := min(off+int64(len(p)), int64(len(want)))
		if err != nil && end != int64(len(want)) {
			t.Fatalf("read %d at %d: %v", len(p), off, err)
		}
		if !bytes.Equal(p[:got], want[off:end]) {
			t.Fatalf("read %d at %d: other bytes", len(p), off)
		}
	}
	var data int64
	for _, d := range nr.Data() {
		data += d.Len
	}
	var stored int64
	for i, l := range lens {
		if i%7 == 3 {
			stored += l
		}
	}
	if data != stored {
		t.Errorf("Data covers %d bytes, the data extents %d", data, stored)
	}
}

// TestNodeReaderMemoryFlat: a reader over a file of 200 000 extents holds
// the content lists it read last, not 56 bytes an extent of the file
// (the extents are read again from their content lists).
func TestNodeReaderMemoryFlat(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	lens := make([]int64, 200000)
	for i := range lens {
		lens[i] = 4096
	}
	n, _ := nodeOfExtents(t, r, lens, func(int) bool { return true }, false)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	nr, err := NewNodeReader(ctx, r, n, NewBlobCache(r, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1<<16)
	for _, off := range []int64{0, n.Size / 2, n.Size - 1} { // loads 3 of its 25 content lists
		if _, err := nr.ReadAtContext(ctx, p, off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	held := int64(ms.HeapAlloc) - int64(before)
	runtime.KeepAlive(nr)
	t.Logf("a reader of %d extents holds %d KiB", len(lens), held>>10)
	if held > 4<<20 {
		t.Errorf("a reader of %d extents holds %d bytes (%d an extent)", len(lens), held, held/int64(len(lens)))
	}
}

// TestNodeReaderRefusesOverflowingExtents: extents whose lengths add up
// past the largest offset, and wrap around to the file's size, do not
// cover the file: the reader refuses them, as any extent beyond the
// size. The sum wrapped in the check, and the reader served a file whose
// bytes at an offset depended on where a read began.
func TestNodeReaderRefusesOverflowingExtents(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	n := &repo.Node{Name: "wrapped.img", Type: repo.NodeFile, Size: 10, Content: []repo.Extent{
		{Zero: true, Len: 5}, {Zero: true, Len: math.MaxInt64}, {Zero: true, Len: math.MaxInt64}, {Zero: true, Len: 7}}}
	if _, err := NewNodeReader(ctx, r, n, nil); err == nil || !strings.Contains(err.Error(), "outside the file size") {
		t.Fatalf("extents wrapping around to the size: opened (err %v), want refused as outside the file size", err)
	}
}
