package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/hugepage"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// ErrBlobLost is wrapped when no stored copy of a blob can be read, even
// after rebuilding its pack from parity.
var ErrBlobLost = errors.New("blob cannot be read from any copy")

func (p PackInfo) header() erasure.Header {
	return erasure.Header{Version: 1, K: int(p.K), M: int(p.M), PackLen: p.Length, ShardSize: int(p.ShardSize)}
}

// Params returns the pack's erasure parameters.
func (p PackInfo) Params() erasure.Params { return erasure.Params{K: int(p.K), M: int(p.M)} }

// ShardHandle names shard i of the pack.
func (p PackInfo) ShardHandle(i int) tiers.Handle {
	return tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(p.ID, i)}
}

// LoadBlob returns the plaintext of blob x, appended to buf[:0]. Every
// read is authenticated; a copy that fails is rebuilt from parity, and
// other copies are tried before giving up with an error wrapping
// ErrBlobLost that names the pack.
func (r *Repository) LoadBlob(ctx context.Context, t BlobType, x id.ID, buf []byte) ([]byte, error) {
	locs := r.Lookup(x)
	if len(locs) == 0 {
		return nil, fmt.Errorf("%s blob %s: %w: not in any index", t, x.Short(), ErrBlobLost)
	}
	var errs []error
	for _, l := range locs {
		if l.Entry.Type != t {
			continue
		}
		out, err := r.readBlobAt(ctx, l.Pack, l.Entry, buf[:0])
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s blob %s: %w: indexed only with another type", t, x.Short(), ErrBlobLost)
	}
	return nil, fmt.Errorf("%s blob %s: %w: %w", t, x.Short(), ErrBlobLost, errors.Join(errs...))
}

// readBlobAt reads one blob from one pack: ranged reads of the data
// shards first, a full rebuild from parity if that fails.
func (r *Repository) readBlobAt(ctx context.Context, p PackInfo, e BlobEntry, dst []byte) ([]byte, error) {
	sealed, _, err := r.readPackRange(ctx, p, int64(e.Offset), int64(e.Length), nil)
	if err == nil {
		out, derr := r.decodeBlobInPlace(dst, sealed, int(e.RawLength), e.ID)
		if derr == nil {
			return out, nil
		}
		err = derr
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	pack, rerr := r.rebuiltPack(ctx, p)
	if rerr != nil {
		return nil, fmt.Errorf("pack %s: direct read failed (%v); rebuild failed: %w", p.ID.Short(), err, rerr)
	}
	end := int64(e.Offset) + int64(e.Length)
	if end > int64(len(pack)) {
		return nil, fmt.Errorf("pack %s: blob %s lies beyond the pack end", p.ID.Short(), e.ID.Short())
	}
	out, derr := r.decodeBlob(dst, pack[e.Offset:end], int(e.RawLength), e.ID)
	if derr != nil {
		return nil, fmt.Errorf("pack %s: blob %s unreadable even after rebuild: %w", p.ID.Short(), e.ID.Short(), derr)
	}
	return out, nil
}

// readPackRange reads [off, off+n) of the logical pack from its data
// shards, without verification (callers authenticate the content). It
// reads into buf's storage when its capacity allows (n + tiers.ReadAlign),
// else into a new buffer, and returns that whole storage as backing for
// the caller to pass again. The range is placed in it so that its longest
// span, usually most of it, reads from a local directory without a copy
// (tiers.Placed).
func (r *Repository) readPackRange(ctx context.Context, p PackInfo, off, n int64, buf []byte) (data, backing []byte, err error) {
	spans, err := p.header().Locate(off, n)
	if err != nil {
		return nil, buf, err
	}
	if int64(cap(buf)) < n+tiers.ReadAlign {
		buf = hugepage.Make(int(n + tiers.ReadAlign))
	}
	backing = buf[:cap(buf)]
	var at, longestAt, longest int64
	var objOff int64
	for _, s := range spans {
		if s.Len > longest {
			longest, longestAt, objOff = s.Len, at, s.ObjOffset
		}
		at += s.Len
	}
	data = tiers.Placed(backing, n, longestAt, objOff)
	pos := int64(0)
	for _, s := range spans {
		if _, err := tiers.LoadInto(ctx, r.be, p.ShardHandle(s.Shard), s.ObjOffset, s.Len, data[pos:pos+s.Len]); err != nil {
			return nil, backing, err
		}
		pos += s.Len
	}
	return data, backing, nil
}

// BlobRef names one blob to read in LoadBlobs.
type BlobRef struct {
	Entry BlobEntry
}

// LoadBlobs reads the given blobs, all from pack p, calling fn for each
// with its plaintext (valid only during the call). Nearby blobs are read
// with one ranged request; when it fails, the blobs of each shard it spans
// are read on their own, so a missing shard costs only its own blobs.
// Blobs that still fail are retried through a parity rebuild of the pack;
// the error names the first that fails even then and counts the others,
// after the rest were delivered. fn is called at most once per entry; the
// order follows the pack, except that blobs delivered through the rebuild
// come last. The first error from fn stops the call.
func (r *Repository) LoadBlobs(ctx context.Context, p PackInfo, entries []BlobEntry, fn func(BlobEntry, []byte) error) error {
	return r.LoadBlobsBuf(ctx, p, entries, nil, fn)
}

// ReadBuffers hold LoadBlobsBuf's read and decode buffers between calls.
// A reader that loads many packs one after another passes the same value
// each time: fresh multi-MiB buffers per pack cost zeroing and a page
// fault per 4 KiB, about a tenth of a small-file restore's CPU. Not safe
// for concurrent use.
type ReadBuffers struct {
	raw, plain []byte
}

// LoadBlobsBuf is LoadBlobs with reusable buffers (nil: fresh ones).
func (r *Repository) LoadBlobsBuf(ctx context.Context, p PackInfo, entries []BlobEntry, bufs *ReadBuffers, fn func(BlobEntry, []byte) error) error {
	if bufs == nil {
		bufs = &ReadBuffers{}
	}
	rawBuf, buf := bufs.raw, bufs.plain
	defer func() { bufs.raw, bufs.plain = rawBuf, buf }()
	es := append([]BlobEntry(nil), entries...)
	sort.Slice(es, func(i, j int) bool { return es[i].Offset < es[j].Offset })
	const maxGap = 1 << 20
	const maxSpan = 8 << 20
	var failed []BlobEntry
	// readSpan reads es (sorted, one ranged request) and hands each blob
	// to fn. When the request fails and the blobs lie in more than one
	// shard (a missing or unreadable shard fails the whole request), each
	// run of blobs in the same shards is read alone, so that the blobs the
	// damage spared are still read directly.
	var readSpan func(es []BlobEntry, split bool) error
	readSpan = func(es []BlobEntry, split bool) error {
		start := int64(es[0].Offset)
		end := start
		for _, e := range es {
			end = max(end, int64(e.Offset)+int64(e.Length))
		}
		raw, backing, err := r.readPackRange(ctx, p, start, end-start, rawBuf)
		rawBuf = backing
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if groups := shardGroups(p, es); split && len(groups) > 1 {
				for _, g := range groups {
					if err := readSpan(g, false); err != nil {
						return err
					}
				}
				return nil
			}
			failed = append(failed, es...)
			return nil
		}
		for _, e := range es {
			o := int64(e.Offset) - start
			out, derr := r.decodeBlobInPlace(buf[:0], raw[o:o+int64(e.Length)], int(e.RawLength), e.ID)
			if derr != nil {
				failed = append(failed, e)
				continue
			}
			buf = out
			if err := fn(e, out); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < len(es); {
		j := i + 1
		start := int64(es[i].Offset)
		end := start + int64(es[i].Length)
		for j < len(es) {
			s := int64(es[j].Offset)
			if s-end > maxGap || s+int64(es[j].Length)-start > maxSpan {
				break
			}
			end = max(end, s+int64(es[j].Length))
			j++
		}
		if err := readSpan(es[i:j], true); err != nil {
			return err
		}
		i = j
	}
	if len(failed) == 0 {
		return nil
	}
	pack, err := r.rebuiltPack(ctx, p)
	if err != nil {
		return fmt.Errorf("pack %s: %d blobs unreadable directly and rebuild failed: %w", p.ID.Short(), len(failed), err)
	}
	// A blob that does not decode from the rebuilt pack either does not
	// keep the others from being delivered. The error names the first and
	// counts the others: a restore gives it to every file that lost one.
	var first error
	lost := 0
	for _, e := range failed {
		end := int64(e.Offset) + int64(e.Length)
		if end > int64(len(pack)) {
			if lost++; first == nil {
				first = fmt.Errorf("pack %s: blob %s lies beyond the pack end", p.ID.Short(), e.ID.Short())
			}
			continue
		}
		out, derr := r.decodeBlob(buf[:0], pack[e.Offset:end], int(e.RawLength), e.ID)
		if derr != nil {
			if lost++; first == nil {
				first = fmt.Errorf("pack %s: blob %s: %w: %w", p.ID.Short(), e.ID.Short(), ErrBlobLost, derr)
			}
			continue
		}
		buf = out
		if err := fn(e, out); err != nil {
			return err
		}
	}
	if lost > 1 {
		return fmt.Errorf("%w (and %d more blobs of the pack that do not read from it either)", first, lost-1)
	}
	return first
}

// shardGroups cuts es (sorted by offset) into runs of blobs that lie in
// the same shards of p.
func shardGroups(p PackInfo, es []BlobEntry) [][]BlobEntry {
	ss := int64(p.ShardSize)
	if ss <= 0 {
		return [][]BlobEntry{es}
	}
	shards := func(e BlobEntry) (int64, int64) {
		first := int64(e.Offset) / ss
		last := first
		if e.Length > 0 {
			last = (int64(e.Offset) + int64(e.Length) - 1) / ss
		}
		return first, last
	}
	var out [][]BlobEntry
	i := 0
	for i < len(es) {
		f, l := shards(es[i])
		j := i + 1
		for j < len(es) {
			if f2, l2 := shards(es[j]); f2 != f || l2 != l {
				break
			}
			j++
		}
		out = append(out, es[i:j])
		i = j
	}
	return out
}

type reconstructed struct {
	id   id.ID
	pack []byte
	err  error
}

// rebuiltPack loads all shards of p and reconstructs the pack, caching the
// last few results so a burst of failed blob reads rebuilds once.
func (r *Repository) rebuiltPack(ctx context.Context, p PackInfo) ([]byte, error) {
	r.rcMu.Lock()
	for {
		for _, c := range r.rcCache {
			if c.id == p.ID {
				r.rcMu.Unlock()
				return c.pack, c.err
			}
		}
		wg, busy := r.rcWait[p.ID]
		if !busy {
			break
		}
		r.rcMu.Unlock()
		wg.Wait()
		r.rcMu.Lock()
	}
	wg := &sync.WaitGroup{}
	wg.Add(1)
	r.rcWait[p.ID] = wg
	r.rcMu.Unlock()

	res, err := r.ReconstructPack(ctx, p)
	var pack []byte
	if res != nil {
		pack = res.Pack
	}
	r.rcMu.Lock()
	delete(r.rcWait, p.ID)
	if ctx.Err() == nil {
		r.rcCache = append(r.rcCache, &reconstructed{id: p.ID, pack: pack, err: err})
		if len(r.rcCache) > 2 {
			r.rcCache = r.rcCache[1:]
		}
	}
	r.rcMu.Unlock()
	wg.Done()
	return pack, err
}

// errShardUnreadable marks the damage of a shard that storage failed to
// read (not missing, not a checksum mismatch): it may read another time.
var errShardUnreadable = errors.New("storage failed to read the shard")

// ReconstructPack loads every shard of p (missing ones tolerated) and
// rebuilds the pack with erasure.Reconstruct. The result reports missing
// and corrupt shards and carries rebuilt shard objects for repair. A shard
// that cannot be read (a storage error other than "not found") counts as
// corrupt, with the error as its damage (wrapping errShardUnreadable).
// At most one byte more than the index says a shard has is read: a
// longer object is corrupt, and costs no more memory than an intact one;
// when the bytes before its excess verify, they count among the K
// survivors and are its rebuilt object.
func (r *Repository) ReconstructPack(ctx context.Context, p PackInfo) (*erasure.Result, error) {
	n := int(p.K) + int(p.M)
	want := int64(erasure.HeaderSize(p.Params())) + int64(p.ShardSize)
	shards := make([][]byte, n)
	loadErrs := make([]error, n)
	long := make([]bool, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b []byte
			err := r.be.Load(ctx, p.ShardHandle(i), 0, 0, func(rd io.Reader) error {
				b = make([]byte, want+1)
				m, err := io.ReadFull(rd, b)
				if err == io.ErrUnexpectedEOF || err == io.EOF {
					err = nil
				}
				b = b[:m]
				return err
			})
			switch {
			case errors.Is(err, tiers.ErrNotFound):
			case err != nil:
				// Non-nil and empty: Reconstruct counts it as corrupt.
				shards[i], loadErrs[i] = []byte{}, err
			default:
				// A longer object is corrupt, but its first bytes may
				// still be the intact shard: they count among the
				// survivors, and the object is rewritten with them.
				long[i] = int64(len(b)) > want
				shards[i] = b[:min(int64(len(b)), want)]
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res, err := erasure.Reconstruct(p.ID, shards)
	if res != nil {
		for i := range shards {
			if _, ok := res.Damage[i]; long[i] && !ok {
				res.Corrupt = append(res.Corrupt, i)
				res.Damage[i] = erasure.ErrCorrupt // said below
				if res.Rebuilt != nil {
					res.Rebuilt[i] = shards[i]
				}
			}
		}
		sort.Ints(res.Corrupt)
		for i := range shards {
			if _, ok := res.Damage[i]; !ok {
				continue
			}
			switch {
			case loadErrs[i] != nil:
				res.Damage[i] = fmt.Errorf("%w: %w: shard %d of pack %s cannot be read: %w", erasure.ErrCorrupt, errShardUnreadable, i, p.ID.Short(), loadErrs[i])
			case long[i]:
				size := fmt.Sprintf("longer than %d bytes", want)
				if oi, serr := r.be.Stat(ctx, p.ShardHandle(i)); serr == nil {
					size = fmt.Sprintf("%d bytes", oi.Size)
				}
				res.Damage[i] = fmt.Errorf("%w: shard %d of pack %s: object is %s, want %d (%d-byte header + %d-byte payload)", erasure.ErrCorrupt, i, p.ID.Short(), size, want, want-int64(p.ShardSize), p.ShardSize)
			}
		}
	}
	if err != nil {
		return res, fmt.Errorf("pack %s: %w", p.ID.Short(), err)
	}
	return res, nil
}
