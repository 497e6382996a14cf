package chunking

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// shortReaderAt returns at most a few dozen bytes per ReadAt; ChunkSegment
// must read on until its range is full.
type shortReaderAt struct{ b []byte }

func (s shortReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.b)) {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 1+int(off%37))], s.b[off:])
	return n, nil
}

// TestChunkProperties chunks random inputs with tiny sizes, so that they
// cross many segment and zero-block boundaries: sizes that are exact
// multiples of SegmentSize, one byte off them, tiny and arbitrary; zero
// runs at any alignment; random holes; a reader that returns a few bytes
// at a time; and the same bytes as a stream read in irregular pieces. The
// extents must be a valid chunking (checkExtents) and the same each way.
func TestChunkProperties(t *testing.T) {
	cfg := DefaultConfig(testPol)
	cfg.MinSize, cfg.MaxSize, cfg.AverageBits = 64, 1500, 12
	cfg.ZeroBlock, cfg.SegmentSize = 512, 8192
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 600 {
		var size int
		switch iter % 4 {
		case 0:
			size = int(cfg.SegmentSize) * rng.IntN(5)
		case 1:
			size = rng.IntN(100)
		case 2:
			size = int(cfg.SegmentSize)*rng.IntN(4) + rng.IntN(3) - 1
		default:
			size = rng.IntN(50000)
		}
		if size < 0 {
			size = 0
		}
		content := randBytes(uint64(iter), size)
		// Zero runs at any offset and alignment.
		for range rng.IntN(8) {
			if size == 0 {
				break
			}
			a := rng.IntN(size)
			b := min(size, a+rng.IntN(3000))
			clear(content[a:b])
		}
		// Alternate data ranges and holes (whose bytes are zero).
		var data []Range
		for off := 0; off < size; {
			l := 1 + rng.IntN(4000)
			if rng.IntN(2) == 0 {
				data = append(data, Range{int64(off), int64(l)})
			} else {
				clear(content[off:min(size, off+l)])
			}
			off += l
		}
		exts := chunkAll(t, cfg, bytes.NewReader(content), int64(size), data)
		checkExtents(t, cfg, exts, content)
		full := chunkAll(t, cfg, shortReaderAt{content}, int64(size), []Range{{0, int64(size)}})
		sameExtents(t, "full vs sparse", full, exts)
		st := chunkStream(t, cfg, &chunkedReader{r: bytes.NewReader(content)})
		sameExtents(t, "stream vs file", st, exts)
		if t.Failed() {
			t.Fatalf("iteration %d size %d", iter, size)
		}
	}
}
