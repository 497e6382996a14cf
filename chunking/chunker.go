package chunking

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/restic/chunker"
)

// MaxReadSize is the largest single ReadAt that ChunkSegment issues.
const MaxReadSize = 4 << 20

// ErrShortRead is wrapped by the error ChunkSegment returns when the
// reader ends before an allocated range does, typically because the file
// shrank while it was being backed up.
var ErrShortRead = errors.New("short read (file shrank during backup?)")

// Extent is one piece of a file in the output of the chunker: either a
// zero region or a CDC chunk.
type Extent struct {
	Off, Len int64 // file offset and length
	// Zero marks a zero region (holes and all-zero blocks): nothing is
	// stored or hashed, Data is nil.
	Zero bool
	// Data holds the chunk's bytes for non-zero extents. It aliases the
	// caller's segment buffer (ChunkSegment) or the Chunker's stream
	// buffer (ChunkStream). Its capacity runs on into the following bytes
	// of that buffer (capping it makes BLAKE3 copy the tail of every
	// chunk, ~3% slower hashing), so never append to it.
	Data []byte
}

// End returns Off+Len.
func (e Extent) End() int64 { return e.Off + e.Len }

// Chunker chunks segments according to a Config. It holds the CDC state
// and small scratch space, so a worker should create one and reuse it for
// every segment. A Chunker is not safe for concurrent use; use one per
// goroutine. Chunkers with equal Configs produce identical output.
type Chunker struct {
	cfg   Config
	fresh chunker.BaseChunker // pristine state, copied in to reset
	cdc   chunker.BaseChunker
	blk   []bool // per zero block of the current segment: holds loaded bytes

	stream  []byte   // ChunkStream's segment buffer, allocated on first use
	scratch []Extent // ChunkStream's extent buffer
}

// NewChunker returns a Chunker for cfg, or an error if cfg is invalid.
func NewChunker(cfg Config) (*Chunker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ch := &Chunker{
		cfg:   cfg,
		fresh: *chunker.NewBase(cfg.Pol, chunker.WithBaseBoundaries(cfg.MinSize, cfg.MaxSize), chunker.WithBaseAverageBits(cfg.AverageBits)),
		blk:   make([]bool, cfg.SegmentSize/int64(cfg.ZeroBlock)),
	}
	ch.cdc = ch.fresh
	return ch, nil
}

// Config returns the Chunker's configuration.
func (ch *Chunker) Config() Config { return ch.cfg }

// ChunkSegment reads seg's allocated ranges from r into buf, at offset
// x-seg.Off for file offset x, in reads of at most MaxReadSize, and returns
// the extents that cover [seg.Off, seg.End()) exactly, in order. Holes are
// not read. Zero regions (holes and file-offset-aligned ZeroBlock blocks
// that are entirely zero, merged) become Zero extents; the non-zero runs
// between them are split by CDC, starting from a reset chunker at the
// segment start and after every zero region.
//
// buf must have len(buf) >= seg.Len unless seg has no Data (then buf is
// not touched and may be nil). Extent.Data aliases buf, so buf must not be
// reused before the caller is done with the extents. seg must be aligned
// to SegmentSize and its Data sorted, disjoint and inside it, as PlanData
// produces. A range that r cannot supply in full is an error wrapping
// ErrShortRead; other read errors are wrapped; both name the offset.
func (ch *Chunker) ChunkSegment(ctx context.Context, r io.ReaderAt, seg Segment, buf []byte) ([]Extent, error) {
	return ch.AppendSegment(ctx, nil, r, seg, buf)
}

// AppendSegment is ChunkSegment appending the extents to dst, so that a
// caller can reuse extent slices. On error it returns dst unchanged.
func (ch *Chunker) AppendSegment(ctx context.Context, dst []Extent, r io.ReaderAt, seg Segment, buf []byte) ([]Extent, error) {
	if err := ch.checkSegment(seg, buf); err != nil {
		return dst, err
	}
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	if seg.Len == 0 {
		return dst, nil
	}
	if len(seg.Data) == 0 {
		return append(dst, Extent{Off: seg.Off, Len: seg.Len, Zero: true}), nil
	}
	buf = buf[:seg.Len]
	zb := int64(ch.cfg.ZeroBlock)
	blk := ch.blocks(seg.Len)
	clear(blk)

	// Read the allocated ranges and note which blocks they touch.
	for _, d := range seg.Data {
		for off := d.Off; off < d.End(); {
			if err := ctx.Err(); err != nil {
				return dst, err
			}
			n := min(d.End()-off, MaxReadSize)
			if err := readFull(r, buf[off-seg.Off:off-seg.Off+n], off); err != nil {
				return dst, err
			}
			off += n
		}
		for b := (d.Off - seg.Off) / zb; b <= (d.End()-1-seg.Off)/zb; b++ {
			blk[b] = true
		}
	}

	// Holes sharing a block with data read as zeros. Blocks entirely in a
	// hole are left as they are: they are known to be zero.
	fill := func(g0, g1 int64) { // segment-relative gap
		if g0 >= g1 {
			return
		}
		if hb := g0 / zb; blk[hb] {
			clear(buf[g0:min(g1, (hb+1)*zb)])
		}
		if tb := (g1 - 1) / zb; tb != g0/zb && blk[tb] {
			clear(buf[tb*zb : g1])
		}
	}
	prev := int64(0)
	for _, d := range seg.Data {
		fill(prev, d.Off-seg.Off)
		prev = d.End() - seg.Off
	}
	fill(prev, seg.Len)

	out, err := ch.split(ctx, dst, seg.Off, buf, blk)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// ChunkStream chunks a non-seekable input such as stdin. It reads r in
// SegmentSize pieces, each of which is a segment starting at the next
// multiple of SegmentSize, and applies the same zero-region and CDC rules
// as ChunkSegment, so the same bytes give the same extents whether they
// come from a file or a stream. Zero extents are not merged across
// segments, exactly as with ChunkSegment.
//
// fn is called for each extent in order; Extent.Data aliases a buffer of
// the Chunker and is only valid until fn returns. An error from fn stops
// chunking and is returned as is. The end of r ends the input; any other
// read error is wrapped with the offset. Cancelling ctx does not interrupt
// a blocked Read.
func (ch *Chunker) ChunkStream(ctx context.Context, r io.Reader, fn func(Extent) error) error {
	if ch.stream == nil {
		ch.stream = make([]byte, ch.cfg.SegmentSize)
	}
	for off := int64(0); ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Not io.ReadFull: it reports an end of input after some bytes
		// as io.ErrUnexpectedEOF, which is also how a reader tells of
		// input cut short (compress/gzip of a truncated file).
		n, eof := 0, false
		for n < len(ch.stream) {
			m, err := r.Read(ch.stream[n:])
			n += m
			if err == io.EOF {
				eof = true
				break
			}
			if err != nil {
				return fmt.Errorf("chunking: reading stream at offset %d: %w", off+int64(n), err)
			}
		}
		if n > 0 {
			blk := ch.blocks(int64(n))
			for i := range blk {
				blk[i] = true
			}
			exts, err := ch.split(ctx, ch.scratch[:0], off, ch.stream[:n], blk)
			ch.scratch = exts
			if err != nil {
				return err
			}
			for _, e := range exts {
				if err := fn(e); err != nil {
					return err
				}
			}
			clear(ch.scratch) // drop references to the buffer
			off += int64(n)
		}
		if eof {
			return nil
		}
	}
}

// blocks returns the per-block scratch for a segment of n bytes.
func (ch *Chunker) blocks(n int64) []bool {
	nb := int((n + int64(ch.cfg.ZeroBlock) - 1) / int64(ch.cfg.ZeroBlock))
	if cap(ch.blk) < nb {
		ch.blk = make([]bool, nb)
	}
	return ch.blk[:nb]
}

// split appends the extents of the segment at file offset base whose bytes
// are buf. loaded[i] reports whether block i holds read bytes; blocks that
// do not are zero without looking at buf.
func (ch *Chunker) split(ctx context.Context, dst []Extent, base int64, buf []byte, loaded []bool) ([]Extent, error) {
	zb := ch.cfg.ZeroBlock
	n := len(buf)
	runStart, runZero := 0, false
	for i := range loaded {
		lo := i * zb
		z := !loaded[i] || isZero(buf[lo:min(lo+zb, n)])
		if i == 0 {
			runZero = z
			continue
		}
		if z != runZero {
			var err error
			if dst, err = ch.emit(ctx, dst, base, buf, runStart, lo, runZero); err != nil {
				return dst, err
			}
			runStart, runZero = lo, z
		}
	}
	return ch.emit(ctx, dst, base, buf, runStart, n, runZero)
}

// emit appends the extents of the run buf[a:b]: one zero extent, or the CDC
// chunks of a non-zero run.
func (ch *Chunker) emit(ctx context.Context, dst []Extent, base int64, buf []byte, a, b int, zero bool) ([]Extent, error) {
	if zero {
		return append(dst, Extent{Off: base + int64(a), Len: int64(b - a), Zero: true}), nil
	}
	ch.cdc = ch.fresh
	for pos := a; pos < b; {
		if err := ctx.Err(); err != nil {
			return dst, err
		}
		end := b
		if p := ch.cdc.NextSplitPoint(buf[pos:b]); p > 0 && pos+p < b {
			end = pos + p
		}
		dst = append(dst, Extent{Off: base + int64(pos), Len: int64(end - pos), Data: buf[pos:end]})
		pos = end
	}
	return dst, nil
}

// checkSegment rejects segments ChunkSegment cannot process.
func (ch *Chunker) checkSegment(seg Segment, buf []byte) error {
	ss := ch.cfg.SegmentSize
	if seg.Off < 0 || seg.Len < 0 || seg.Off%ss != 0 || seg.Len > ss || seg.Off > math.MaxInt64-seg.Len {
		return fmt.Errorf("chunking: segment [%d,+%d) is not a SegmentSize (%d) aligned piece of a file", seg.Off, seg.Len, ss)
	}
	prev := seg.Off
	for _, d := range seg.Data {
		if d.Len <= 0 || d.Off < prev || d.Len > seg.End()-d.Off {
			return fmt.Errorf("chunking: segment [%d,+%d): data range [%d,+%d) is empty, unsorted, overlapping or outside the segment", seg.Off, seg.Len, d.Off, d.Len)
		}
		prev = d.End()
	}
	if len(seg.Data) > 0 && int64(len(buf)) < seg.Len {
		return fmt.Errorf("chunking: segment [%d,+%d): buffer of %d bytes is too small", seg.Off, seg.Len, len(buf))
	}
	return nil
}

// readFull fills p from r at file offset off.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := r.ReadAt(p[done:], off+int64(done))
		if n < 0 || n > len(p)-done {
			return fmt.Errorf("chunking: reading %d bytes at offset %d: reader returned invalid count %d", len(p)-done, off+int64(done), n)
		}
		done += n
		switch {
		case done == len(p):
			return nil // a final io.EOF with a full read is fine
		case err == io.EOF:
			return fmt.Errorf("chunking: read at offset %d hit end of file %d bytes before the end of the data range: %w", off+int64(done), len(p)-done, ErrShortRead)
		case err != nil:
			return fmt.Errorf("chunking: reading %d bytes at offset %d: %w", len(p)-done, off+int64(done), err)
		case n == 0:
			return fmt.Errorf("chunking: reading %d bytes at offset %d: %w", len(p)-done, off+int64(done), io.ErrNoProgress)
		}
	}
	return nil
}
