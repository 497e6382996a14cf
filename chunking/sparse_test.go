package chunking

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

type write struct {
	off  int64
	data []byte
}

// sparseFile creates a file of size bytes containing only the given writes
// (everything else a hole) and returns it open, with its logical content.
func sparseFile(t *testing.T, size int64, ws []write) (*os.File, []byte) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	content := make([]byte, size)
	for _, w := range ws {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			t.Fatal(err)
		}
		copy(content[w.off:], w.data)
	}
	return f, content
}

// holesSupported reports whether the test directory's file system reports
// holes through SEEK_HOLE.
func holesSupported(t *testing.T) bool {
	f, _ := sparseFile(t, 1<<20, []write{{0, []byte{1}}})
	rs, err := DataRanges(f, 1<<20)
	return err == nil && len(rs) == 1 && rs[0].Len < 1<<20
}

const pageSize = 4096

// writtenPages returns the page-granular ranges covered by ws, clipped to size.
func writtenPages(ws []write, size int64) []Range {
	var rs []Range
	for _, w := range ws {
		if len(w.data) == 0 {
			continue
		}
		lo := w.off / pageSize * pageSize
		hi := min(size, (w.off+int64(len(w.data))+pageSize-1)/pageSize*pageSize)
		rs = append(rs, Range{lo, hi - lo})
	}
	return normalize(size, rs)
}

func total(rs []Range) int64 {
	var n int64
	for _, r := range rs {
		n += r.Len
	}
	return n
}

func covers(rs []Range, r Range) bool {
	for _, x := range rs {
		if x.Off <= r.Off && r.End() <= x.End() {
			return true
		}
	}
	return false
}

func TestDataRanges(t *testing.T) {
	const K, M = 1 << 10, 1 << 20
	holes := holesSupported(t)
	if !holes {
		t.Log("file system does not report holes; checking fallback behaviour only")
	}
	tests := []struct {
		name   string
		size   int64
		ws     []write
		want   []Range // exact result when holes are supported
		asked  int64   // size passed to DataRanges if not size
		errIs  error
		noHole bool // result is independent of hole support
	}{
		{name: "empty file", size: 0, want: nil, noHole: true},
		{name: "all hole", size: 10 * M, want: nil},
		{name: "fully allocated", size: 3*M + 5, ws: []write{{0, randBytes(20, 3*M+5)}}, want: []Range{{0, 3*M + 5}}, noHole: true},
		{name: "sparse", size: 10 * M, ws: []write{
			{1*M + 4*K, randBytes(21, 4*K)},
			{5 * M, randBytes(22, 100*K)},
			{10*M - 4*K, randBytes(23, 4*K)},
		}, want: []Range{{1*M + 4*K, 4 * K}, {5 * M, 100 * K}, {10*M - 4*K, 4 * K}}},
		{name: "unaligned tail", size: 2*M + 100, ws: []write{{2 * M, randBytes(24, 100)}}, want: []Range{{2 * M, 100}}},
		{name: "asked less than file", size: 4 * M, ws: []write{{0, randBytes(25, 4*K)}, {3 * M, randBytes(26, 4*K)}}, asked: 2 * M, want: []Range{{0, 4 * K}}},
		{name: "file shrank", size: 1 * M, ws: []write{{0, randBytes(27, 4*K)}}, asked: 2 * M, errIs: ErrShortRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !holes && !tt.noHole {
				t.Skip("needs hole support")
			}
			f, _ := sparseFile(t, tt.size, tt.ws)
			asked := tt.size
			if tt.asked != 0 {
				asked = tt.asked
			}
			if _, err := f.Seek(12345, 0); err != nil {
				t.Fatal(err)
			}
			got, err := DataRanges(f, asked)
			if tt.errIs != nil {
				if !errors.Is(err, tt.errIs) {
					t.Fatalf("got %v, %v; want error wrapping %v", got, err, tt.errIs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if pos, _ := f.Seek(0, 1); pos != 12345 {
				t.Errorf("got file offset %d after DataRanges, want 12345 restored", pos)
			}
		})
	}
}

// TestSparseFile chunks sparse files: holes must not be read, the extents
// must reproduce the file, and they must equal the extents of the same
// bytes read as a stream (classification is independent of allocation).
func TestSparseFile(t *testing.T) {
	const K, M = 1 << 10, 1 << 20
	holes := holesSupported(t)
	cfg := smallConfig()
	tests := []struct {
		name string
		size int64
		ws   []write
	}{
		{"all hole", 9 * M, nil},
		{"scattered", 13*M + 777, []write{
			{1*M + 4*K, randBytes(30, 4*K)},
			{4*M - 8*K, randBytes(31, 16*K)}, // across a segment boundary
			{5 * M, randBytes(32, 1500*K)},
			{13 * M, randBytes(33, 777)}, // unaligned tail
		}},
		{"allocated zeros", 6 * M, []write{
			{1 * M, randBytes(34, 600*K)},
			{2 * M, make([]byte, 256*K)}, // allocated but zero: zero extent, still read
			{2*M + 256*K, randBytes(35, 600*K)},
		}},
		{"hole inside a block with data", 2 * M, []write{
			{68 * K, randBytes(36, 4*K)}, // block [64K,128K) mixes data and hole
			{200 * K, randBytes(37, 8*K)},
			{1 * M, randBytes(38, 700*K)},
		}},
		{"dense", 9*M + 5, []write{{0, randBytes(39, 9*M+5)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, content := sparseFile(t, tt.size, tt.ws)
			data, err := DataRanges(f, tt.size)
			if err != nil {
				t.Fatal(err)
			}
			// Every written byte must be reported as data.
			for _, w := range tt.ws {
				if len(w.data) > 0 && !covers(data, Range{w.off, int64(len(w.data))}) {
					t.Fatalf("written range [%d,+%d) not inside data ranges %v", w.off, len(w.data), data)
				}
			}
			if holes {
				if got, max := total(data), total(writtenPages(tt.ws, tt.size)); got > max {
					t.Errorf("got %d allocated bytes, want at most %d (written pages)", got, max)
				}
			}

			r := &countingReaderAt{r: f}
			got := chunkAll(t, cfg, r, tt.size, data)
			checkExtents(t, cfg, got, content)
			if r.n.Load() != total(data) {
				t.Errorf("got %d bytes read, want %d (allocated bytes only)", r.n.Load(), total(data))
			}

			stream := chunkStream(t, cfg, bytes.NewReader(content))
			sameExtents(t, "sparse file vs stream", got, stream)
		})
	}
}

// TestShrunkFile: a file that is shorter than planned is an error, not zeros.
func TestShrunkFile(t *testing.T) {
	cfg := smallConfig()
	f, _ := sparseFile(t, 6<<20, []write{{0, randBytes(40, 6<<20)}})
	segs := cfg.Plan(8<<20, []Range{{0, 8 << 20}})
	ch := mustChunker(t, cfg)
	if _, err := ch.ChunkSegment(t.Context(), f, segs[0], make([]byte, cfg.SegmentSize)); err != nil {
		t.Fatalf("first segment: %v", err)
	}
	_, err := ch.ChunkSegment(t.Context(), f, segs[1], make([]byte, cfg.SegmentSize))
	if !errors.Is(err, ErrShortRead) || !bytes.Contains([]byte(err.Error()), []byte("offset 6291456")) {
		t.Fatalf("got %v, want ErrShortRead at offset 6291456", err)
	}
}
