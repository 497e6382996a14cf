package chunking

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/restic/chunker"
)

// testPol is an irreducible polynomial of degree 53 (restic's test polynomial).
const testPol = chunker.Pol(0x3DA3358B4DC173)

// smallConfig keeps restic's chunk bounds but uses 4 MiB segments so that
// tests cross many segment boundaries with little data.
func smallConfig() Config {
	c := DefaultConfig(testPol)
	c.SegmentSize = 4 << 20
	return c
}

func randBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func mustChunker(t testing.TB, cfg Config) *Chunker {
	t.Helper()
	ch, err := NewChunker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// countingReaderAt counts the bytes read through it.
type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// chunkAll plans a file and chunks its segments with a pool of workers, as
// the backup pipeline does. Each segment gets its own buffer so that all
// extents stay valid.
func chunkAll(t testing.TB, cfg Config, r io.ReaderAt, size int64, data []Range) []Extent {
	t.Helper()
	segs := cfg.Plan(size, data)
	results := make([][]Extent, len(segs))
	errs := make([]error, len(segs))
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range 2 {
		ch := mustChunker(t, cfg)
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(segs) {
					return
				}
				// Garbage, as in a reused pool buffer: holes must not leak it.
				buf := bytes.Repeat([]byte{0xAA}, int(segs[i].Len))
				results[i], errs[i] = ch.ChunkSegment(context.Background(), r, segs[i], buf)
			}
		})
	}
	wg.Wait()
	var out []Extent
	for i := range segs {
		if errs[i] != nil {
			t.Fatalf("segment %d: %v", i, errs[i])
		}
		out = append(out, results[i]...)
	}
	return out
}

// chunkStream runs ChunkStream, copying the data of every extent.
func chunkStream(t testing.TB, cfg Config, r io.Reader) []Extent {
	t.Helper()
	var out []Extent
	err := mustChunker(t, cfg).ChunkStream(context.Background(), r, func(e Extent) error {
		if !e.Zero {
			e.Data = bytes.Clone(e.Data)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatalf("ChunkStream: %v", err)
	}
	return out
}

// chunkedReader returns reads of irregular sizes.
type chunkedReader struct {
	r    io.Reader
	step int
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	c.step = (c.step*7 + 3) % 9973
	return c.r.Read(p[:min(len(p), 1+c.step)])
}

func naiveZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checkExtents verifies that exts are a valid chunking of content under cfg:
// exact, ordered coverage; data reproduces content; zero extents are zero,
// block aligned and merged; every all-zero aligned block is in a zero
// extent and no other; no extent crosses a segment boundary; chunk sizes
// respect MinSize/MaxSize except before a zero region, at a segment end or
// at the end of the file.
func checkExtents(t *testing.T, cfg Config, exts []Extent, content []byte) {
	t.Helper()
	size := int64(len(content))
	ss, zb := cfg.SegmentSize, int64(cfg.ZeroBlock)
	var off int64
	for i, e := range exts {
		if e.Off != off {
			t.Fatalf("extent %d: got Off %d, want %d (gap or overlap)", i, e.Off, off)
		}
		end := e.End()
		if e.Len <= 0 || end > size {
			t.Fatalf("extent %d [%d,%d): got Len %d, want 0 < Len and end <= size %d", i, e.Off, end, e.Len, size)
		}
		if e.Off/ss != (end-1)/ss {
			t.Errorf("extent %d [%d,%d) crosses a segment boundary", i, e.Off, end)
		}
		if e.Zero {
			if e.Data != nil {
				t.Errorf("zero extent %d: got %d data bytes, want nil", i, len(e.Data))
			}
			if !naiveZero(content[e.Off:end]) {
				t.Errorf("zero extent %d [%d,%d): content is not zero", i, e.Off, end)
			}
			if e.Off%zb != 0 || (end%zb != 0 && end != size) {
				t.Errorf("zero extent %d [%d,%d): not aligned to ZeroBlock %d", i, e.Off, end, zb)
			}
			if i > 0 && exts[i-1].Zero && exts[i-1].Off/ss == e.Off/ss {
				t.Errorf("zero extents %d and %d in one segment are not merged", i-1, i)
			}
		} else {
			if int64(len(e.Data)) != e.Len || !bytes.Equal(e.Data, content[e.Off:end]) {
				t.Errorf("data extent %d [%d,%d): data differs from content", i, e.Off, end)
			}
			if e.Len > int64(cfg.MaxSize) {
				t.Errorf("data extent %d: got Len %d, want <= MaxSize %d", i, e.Len, cfg.MaxSize)
			}
			nextZero := i+1 < len(exts) && exts[i+1].Zero
			if e.Len < int64(cfg.MinSize) && end != size && end%ss != 0 && !nextZero {
				t.Errorf("data extent %d [%d,%d): got Len %d, want >= MinSize %d", i, e.Off, end, e.Len, cfg.MinSize)
			}
			for b := e.Off / zb * zb; b < end; b += zb {
				if naiveZero(content[b:min(b+zb, size)]) {
					t.Errorf("data extent %d [%d,%d) contains all-zero block at %d", i, e.Off, end, b)
				}
			}
		}
		off = end
	}
	if off != size {
		t.Fatalf("extents end at %d, want file size %d", off, size)
	}
}

// sameExtents compares boundaries, kinds and bytes.
func sameExtents(t *testing.T, what string, got, want []Extent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d extents, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Off != w.Off || g.Len != w.Len || g.Zero != w.Zero || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("%s: extent %d: got {%d %d zero=%v}, want {%d %d zero=%v} (or data differs)", what, i, g.Off, g.Len, g.Zero, w.Off, w.Len, w.Zero)
		}
	}
}

// chunkIDs returns the IDs of the data extents.
func chunkIDs(h *Hasher, exts []Extent) []id.ID {
	var ids []id.ID
	for _, e := range exts {
		if !e.Zero {
			ids = append(ids, h.ID(e.Data))
		}
	}
	return ids
}

// Plan (tests only) splits a file of size bytes into segments at multiples of
// c.SegmentSize and distributes the allocated ranges data (as returned by
// DataRanges) among them. A file without holes is described by
// []Range{{0, size}}; nil or empty data means the whole file is a hole.
//
// data need not be sorted or disjoint; ranges are clipped to [0, size) and
// merged. The returned segments cover [0, size) exactly, in order; their
// Data slices share one backing array but have capped capacity. Plan
// returns nil for size <= 0. If c.SegmentSize is not positive,
// DefaultSegmentSize is used (such a Config fails Validate anyway).
func (c Config) Plan(size int64, data []Range) []Segment {
	if size <= 0 {
		return nil
	}
	ss := c.SegmentSize
	if ss <= 0 {
		ss = DefaultSegmentSize
	}
	nseg := (size-1)/ss + 1
	segs := make([]Segment, 0, nseg)
	for _, d := range c.PlanData(size, data) {
		for off := int64(len(segs)) * ss; off < d.Off; off += ss {
			segs = append(segs, Segment{Off: off, Len: min(ss, size-off)})
		}
		segs = append(segs, d)
	}
	for off := int64(len(segs)) * ss; off < size; off += ss {
		segs = append(segs, Segment{Off: off, Len: min(ss, size-off)})
	}
	return segs
}
