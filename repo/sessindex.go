package repo

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drpipe/drpipe/internal/id"
)

// foldObject is an index object this session stored whose blobs are
// still in pending: its content and its number (Repository.indexSeq).
type foldObject struct {
	f   *IndexFile
	seq uint64
}

// sessLevel is a level of the session's own index (Repository.sessIdx):
// a mapped file of index objects this session stored, the newest of
// them numbered last.
type sessLevel struct {
	*diskIndex
	last uint64
}

// foldPending moves the entries of the index objects this session wrote
// (toFold) out of pending into a mapped file of their own, a new level
// of sessIdx, then merges levels so that they stay few. A long backup's
// own index thus holds at most about Options.FoldEvery entries in
// memory, not one per new blob: the chunk index scales without holding
// every chunk in RAM, during the run as well as after it.
//
// The caller holds r.indexing. A fold only saves memory: when one
// fails (the cache directory full, say) the entries stay in pending, as
// they did before folds, and lookups stay right either way.
func (r *Repository) foldPending(ctx context.Context) {
	r.idxMu.Lock()
	if r.closed {
		// An upload that ended after Close: a level made now would
		// never be unmapped.
		r.idxMu.Unlock()
		return
	}
	if r.loading > 0 {
		// A LoadIndex listed the index objects and has not replaced
		// the cache yet: a level must not hold objects from both sides
		// of its listing (see swapDisk). The next index write folds.
		r.idxMu.Unlock()
		return
	}
	objs := r.toFold
	r.toFold = map[id.ID]foldObject{}
	r.foldBlobs = 0
	r.idxMu.Unlock()
	if len(objs) == 0 {
		return
	}
	want := make([]id.ID, 0, len(objs))
	var last uint64
	for x, o := range objs {
		want = append(want, x)
		last = max(last, o.seq)
	}
	d, err := r.buildSessionIndex(ctx, nil, nil, want, func(_ context.Context, x id.ID) (*IndexFile, error) {
		return objs[x].f, nil
	})
	if err != nil {
		return
	}
	folded := map[id.ID]bool{}
	for _, o := range objs {
		for _, p := range o.f.Packs {
			folded[p.ID] = true
		}
	}
	r.idxMu.Lock()
	// A new map: a Go map keeps the room of the entries deleted from it.
	kept := make(map[blobKey]pendingBlob, len(r.pending)/4)
	for k, pb := range r.pending {
		if pb.pack == nil || !folded[pb.pack.ID] {
			kept[k] = pb
		}
	}
	r.pending = kept
	r.sessIdx = append(r.sessIdx, sessLevel{d, last})
	r.idxMu.Unlock()
	r.mergeSessionLevels(ctx)
}

// mergeSessionLevels merges the newest two levels of sessIdx while the
// newer holds at least half the blobs of the older, so that n blobs
// take about log2(n/FoldEvery) levels and each blob is rewritten about
// as many times. The merge reads the two mapped files, not the index
// objects in storage: a late merge of a large session costs local disk
// time only. When it fails (the cache directory full) the levels stay as
// they are. The caller holds r.indexing.
func (r *Repository) mergeSessionLevels(ctx context.Context) {
	for {
		r.idxMu.RLock()
		n := len(r.sessIdx)
		var older, newer sessLevel
		if n >= 2 {
			older, newer = r.sessIdx[n-2], r.sessIdx[n-1]
		}
		r.idxMu.RUnlock()
		if older.diskIndex == nil || 2*newer.nBlobs < older.nBlobs {
			return
		}
		want := make([]id.ID, 0, len(older.indexFiles)+len(newer.indexFiles))
		for x := range older.indexFiles {
			want = append(want, x)
		}
		for x := range newer.indexFiles {
			if _, ok := older.indexFiles[x]; !ok {
				want = append(want, x)
			}
		}
		m, err := r.buildSessionIndex(ctx, older.diskIndex, newer.diskIndex, want, func(_ context.Context, x id.ID) (*IndexFile, error) {
			return nil, fmt.Errorf("index %s is in neither level merged", x.Short())
		})
		if err != nil {
			return
		}
		r.idxMu.Lock()
		r.sessIdx = append(r.sessIdx[:n-2], sessLevel{m, newer.last})
		r.idxMu.Unlock()
		older.close()
		newer.close()
	}
}

// buildSessionIndex builds a mapped index of the index objects want
// (merged with old's records when old holds some of them) in a file of
// the cache directory, maps it and removes its name: the mapping keeps
// the file until it is closed, and nothing is left behind however the
// process ends.
func (r *Repository) buildSessionIndex(ctx context.Context, old, extra *diskIndex, want []id.ID, load func(context.Context, id.ID) (*IndexFile, error)) (*diskIndex, error) {
	var rnd [8]byte
	if _, err := randRead(rnd[:]); err != nil {
		return nil, err
	}
	path := filepath.Join(r.cacheDir, ".session-"+hex.EncodeToString(rnd[:]))
	defer os.Remove(path)
	if err := buildDiskIndexWith(ctx, path, old, extra, want, load); err != nil {
		return nil, err
	}
	return openDiskIndex(path)
}
