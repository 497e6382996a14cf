package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/drpipe/drpipe/tiers"

	"github.com/drpipe/drpipe/internal/id"
)

// liveSet marks which index records are referenced by snapshots: one bit
// per record of the memory-mapped index cache and one per pack record, so
// its memory is 1 bit per chunk (12.5 MB for 10^8 chunks), not a hash set.
type liveSet struct {
	d         *diskIndex
	condemned map[id.ID]bool        // copies in these packs are used only if no other copy exists
	shards    map[id.ID][]shardInfo // the shards in storage of each pack
	blobs     []uint64
	packs     []uint64
	packByID  map[id.ID][]uint32 // only for dead-pack bookkeeping
}

func newLiveSet(d *diskIndex) *liveSet {
	return &liveSet{d: d, blobs: make([]uint64, (d.nBlobs+63)/64), packs: make([]uint64, (d.nPacks+63)/64)}
}

func setBit(b []uint64, i uint64)      { b[i/64] |= 1 << (i % 64) }
func getBit(b []uint64, i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }

// mark records blob x of type t as used; it returns false when x is not
// indexed as type t. Only copies of type t count: a blob is read as its
// own type, and one of the other type with the same bytes (a file
// holding exactly a directory listing) is not a copy of it. When x has
// copies outside condemned packs, only those count, so a blob that a
// newer backup stored again does not keep its condemned pack alive; a
// copy in a pack with fewer than K shards in storage (lost) does not
// count as one, so the condemned copy, the one left to read, stays.
func (l *liveSet) mark(x id.ID, t BlobType) bool {
	lo, hi := l.d.lookupRange(x)
	healthy, found := false, false
	for i := lo; i < hi; i++ {
		rec := l.d.blob(i)
		if rec.entry().Type != t {
			continue
		}
		found = true
		p := l.d.pack(rec.packNo())
		if !l.condemned[p.ID] && len(l.shards[p.ID]) >= int(p.K) {
			healthy = true
			break
		}
	}
	for i := lo; i < hi; i++ {
		rec := l.d.blob(i)
		pn := rec.packNo()
		if rec.entry().Type != t || healthy && l.condemned[l.d.pack(pn).ID] {
			continue
		}
		setBit(l.blobs, i)
		setBit(l.packs, uint64(pn))
	}
	return found
}

// deadPacks returns the ids of packs none of whose records is used.
func (l *liveSet) deadPacks() []id.ID {
	dead := map[id.ID]bool{}
	for n := uint64(0); n < l.d.nPacks; n++ {
		if !getBit(l.packs, n) {
			dead[l.d.pack(uint32(n)).ID] = true
		}
	}
	// A pack listed twice (two index objects) is used if any listing is.
	for n := uint64(0); n < l.d.nPacks; n++ {
		if getBit(l.packs, n) {
			delete(dead, l.d.pack(uint32(n)).ID)
		}
	}
	out := make([]id.ID, 0, len(dead))
	for p := range dead {
		out = append(out, p)
	}
	return out
}

// packLive reports whether pack p holds a used blob.
func (l *liveSet) packLive(p id.ID) bool {
	if l.packByID == nil {
		l.packByID = map[id.ID][]uint32{}
		for n := uint64(0); n < l.d.nPacks; n++ {
			pid := l.d.pack(uint32(n)).ID
			l.packByID[pid] = append(l.packByID[pid], uint32(n))
		}
	}
	for _, n := range l.packByID[p] {
		if getBit(l.packs, uint64(n)) {
			return true
		}
	}
	return false
}

// release lets go of the index cache l reads (see diskIndex.hold).
func (l *liveSet) release() {
	if l != nil {
		l.d.release()
	}
}

// liveSet walks every snapshot and marks the blobs it references. Any
// unreadable snapshot or tree, or a referenced blob missing from the index,
// makes it fail with ErrPruneUnsafe: without full knowledge nothing may be
// removed. shards are the shards in storage of each pack, listed after the
// index was loaded (orphanPacks). The set reads the index cache that was
// loaded, whatever LoadIndex does meanwhile, until it is released.
func (r *Repository) liveSet(ctx context.Context, rep *PruneReport, condemned map[id.ID]bool, shards map[id.ID][]shardInfo, sids []id.ID) (_ *liveSet, err error) {
	r.idxMu.RLock()
	d := r.disk
	d.hold()
	r.idxMu.RUnlock()
	if d == nil {
		return nil, fmt.Errorf("%w: index not loaded", ErrPruneUnsafe)
	}
	l := newLiveSet(d)
	defer func() {
		if err != nil {
			l.release()
		}
	}()
	l.condemned, l.shards = condemned, shards
	rep.Packs = int(d.nPacks)
	seen := map[id.ID]bool{}
	var walk func(x id.ID) error
	need := func(x id.ID, t BlobType, what string) error {
		if !l.mark(x, t) {
			return fmt.Errorf("%w: %s %s is referenced but not in any index as a %s blob (run drpipe check; a new backup of the files check names stores their chunks again)", ErrPruneUnsafe, what, x.Short(), t)
		}
		return nil
	}
	walk = func(x id.ID) error {
		if seen[x] {
			return nil
		}
		seen[x] = true
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := need(x, TreeBlob, "tree"); err != nil {
			return err
		}
		t, err := r.LoadTree(ctx, x)
		if err != nil {
			return fmt.Errorf("%w: tree %s: %v", ErrPruneUnsafe, x.Short(), err)
		}
		for _, px := range t.Parts {
			if err := need(px, TreeBlob, "tree part"); err != nil {
				return err
			}
		}
		for _, n := range t.Nodes {
			for _, x := range n.Refs {
				if err := need(x, TreeBlob, "disk layer map"); err != nil {
					return err
				}
			}
			switch {
			case n.Type == NodeDir && n.Subtree != nil:
				if err := walk(*n.Subtree); err != nil {
					return err
				}
			case n.Type == NodeFile:
				for _, cl := range n.ContentLists {
					if err := need(cl, TreeBlob, "content list"); err != nil {
						return err
					}
				}
				err := r.EachExtent(ctx, n, func(e Extent) error {
					if e.Zero {
						return nil
					}
					return need(e.ID, DataBlob, "chunk")
				})
				if err != nil {
					return fmt.Errorf("%w: file %s: %v", ErrPruneUnsafe, n.Name, err)
				}
			}
		}
		return nil
	}
	for _, sid := range sids {
		sn, err := r.LoadSnapshot(ctx, sid)
		if errors.Is(err, tiers.ErrNotFound) {
			continue // forgotten meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrPruneUnsafe, err)
		}
		rep.Snapshots++
		if err := walk(sn.Tree); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// sparsePacks returns packs (not condemned) whose used bytes are below
// frac of their blob bytes but above zero, with their used entries: the
// candidates for repacking. A pack with fewer than K shards in storage is
// left out: it cannot be read to repack, and check and repair deal with it;
// so is one with fewer than K outside an archive storage class (GLACIER),
// which would be read only after a restore nobody asked for.
func (l *liveSet) sparsePacks(frac float64) map[id.ID][]BlobEntry {
	used := make([]int64, l.d.nPacks)
	total := make([]int64, l.d.nPacks)
	for i := uint64(0); i < l.d.nBlobs; i++ {
		rec := l.d.blob(i)
		pn := rec.packNo()
		n := int64(rec.entry().Length)
		total[pn] += n
		if getBit(l.blobs, i) {
			used[pn] += n
		}
	}
	out := map[id.ID][]BlobEntry{}
	for pn := uint64(0); pn < l.d.nPacks; pn++ {
		p := l.d.pack(uint32(pn))
		if used[pn] == 0 || l.condemned[p.ID] || readableShards(l.shards[p.ID]) < int(p.K) || float64(used[pn]) >= frac*float64(total[pn]) {
			continue
		}
		if _, ok := out[p.ID]; !ok {
			out[p.ID] = nil
		}
	}
	if len(out) == 0 {
		return out
	}
	for i := uint64(0); i < l.d.nBlobs; i++ {
		if !getBit(l.blobs, i) {
			continue
		}
		rec := l.d.blob(i)
		p := l.d.pack(rec.packNo())
		if es, ok := out[p.ID]; ok {
			out[p.ID] = append(es, rec.entry())
		}
	}
	return out
}

// PackWalker finds the packs a snapshot needs (trees, content lists and
// chunks, first readable copy of each blob). Results are memoised per tree,
// so walking many snapshots that share subtrees visits each tree once. Not
// safe for concurrent use.
type PackWalker struct {
	r     *Repository
	trees map[id.ID]map[id.ID]PackInfo // tree → packs below it
}

// NewPackWalker returns a walker over r.
func (r *Repository) NewPackWalker() *PackWalker {
	return &PackWalker{r: r, trees: map[id.ID]map[id.ID]PackInfo{}}
}

// SnapshotPacks returns the packs snapshot s needs, sorted by id. A blob in
// no index is an error: the snapshot cannot be copied whole.
func (w *PackWalker) SnapshotPacks(ctx context.Context, s *Snapshot) ([]PackInfo, error) {
	packs, err := w.tree(ctx, s.Tree)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", s.ID().Short(), err)
	}
	out := make([]PackInfo, 0, len(packs))
	for _, p := range packs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID.Less(out[j].ID) })
	return out, nil
}

// blob adds to into the pack that holds blob x as type t (a copy of the
// other type with the same bytes is not read for it).
func (w *PackWalker) blob(x id.ID, t BlobType, what string, into map[id.ID]PackInfo) error {
	for _, l := range w.r.Lookup(x) {
		if l.Entry.Type == t {
			into[l.Pack.ID] = l.Pack
			return nil
		}
	}
	return fmt.Errorf("%s %s is referenced but in no index as a %s blob: run 'drpipe check'", what, x.Short(), t)
}

func (w *PackWalker) tree(ctx context.Context, x id.ID) (map[id.ID]PackInfo, error) {
	if p, ok := w.trees[x]; ok {
		return p, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[id.ID]PackInfo{}
	if err := w.blob(x, TreeBlob, "tree", out); err != nil {
		return nil, err
	}
	t, err := w.r.LoadTree(ctx, x)
	if err != nil {
		return nil, err
	}
	for _, px := range t.Parts {
		if err := w.blob(px, TreeBlob, "tree part", out); err != nil {
			return nil, err
		}
	}
	for _, n := range t.Nodes {
		for _, x := range n.Refs {
			if err := w.blob(x, TreeBlob, "disk layer map", out); err != nil {
				return nil, err
			}
		}
		switch n.Type {
		case NodeDir:
			if n.Subtree == nil {
				continue
			}
			sub, err := w.tree(ctx, *n.Subtree)
			if err != nil {
				return nil, err
			}
			for k, v := range sub {
				out[k] = v
			}
		case NodeFile:
			for _, cl := range n.ContentLists {
				if err := w.blob(cl, TreeBlob, "content list", out); err != nil {
					return nil, err
				}
			}
			err := w.r.EachExtent(ctx, n, func(e Extent) error {
				if e.Zero {
					return nil
				}
				return w.blob(e.ID, DataBlob, "chunk", out)
			})
			if err != nil {
				return nil, fmt.Errorf("file %s: %w", n.Name, err)
			}
		}
	}
	w.trees[x] = out
	return out, nil
}

// IndexPacks returns the full index records (all blobs) of the given packs,
// read from the repository's index objects.
func (r *Repository) IndexPacks(ctx context.Context, packs map[id.ID]PackInfo) (map[id.ID]IndexPack, error) {
	out := map[id.ID]IndexPack{}
	var ids []id.ID
	err := r.be.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error {
		if x, err := id.Parse(oi.Handle.Name); err == nil {
			ids = append(ids, x)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, x := range ids {
		f, err := r.LoadIndexFile(ctx, x)
		if errors.Is(err, tiers.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, p := range f.Packs {
			if _, want := packs[p.ID]; want {
				out[p.ID] = p
			}
		}
	}
	for p := range packs {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("pack %s is in the index cache but in no index object (run drpipe repair)", p.Short())
		}
	}
	return out, nil
}
