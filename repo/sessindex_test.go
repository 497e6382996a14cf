package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestSessionIndexBoundsPending: a session that stores many new blobs
// keeps only about FoldEvery of them in memory; the rest move to mapped
// files of the cache directory, in few levels. Every blob stays known
// (dedupe, Has, Lookup, reads, EachPack) during the session, after a
// LoadIndex in the middle of it, and to a later session.
func TestSessionIndexBoundsPending(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	const foldEvery = 300
	cache := t.TempDir()
	r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: cache, KDF: testKDF, IndexEvery: 1, FoldEvery: foldEvery})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := rand.New(rand.NewPCG(5, 9))
	want := map[id.ID][]byte{}
	const n = 24000
	maxPending := 0
	for i := range n {
		b := randBytes(rng, 400+rng.IntN(400))
		x, isNew, err := r.SaveBlob(ctx, DataBlob, b, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		if !isNew {
			t.Fatalf("blob %d: random bytes deduplicated", i)
		}
		want[x] = b
		if i%1000 == 999 {
			if err := r.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			r.idxMu.RLock()
			maxPending = max(maxPending, len(r.pending))
			r.idxMu.RUnlock()
		}
		if i == n/2 {
			if err := r.LoadIndex(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// What a flush leaves in memory: the blobs of index objects not
	// folded yet (fewer than foldEvery, plus the last flush's 1000).
	if maxPending > foldEvery+1000 {
		t.Errorf("up to %d of the session's %d blobs held in memory, want at most %d", maxPending, n, foldEvery+1000)
	}
	r.idxMu.RLock()
	levels := len(r.sessIdx)
	r.idxMu.RUnlock()
	if limit := bits.Len(uint(n/foldEvery)) + 1; levels == 0 || levels > limit {
		t.Errorf("%d session index levels for %d blobs folded %d at a time, want 1..%d", levels, n, foldEvery, limit)
	}
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".session-") || strings.HasPrefix(e.Name(), ".index-") {
			t.Errorf("cache directory keeps %s", e.Name())
		}
	}
	check := func(r *Repository, during bool) {
		t.Helper()
		for x, b := range want {
			if !r.Has(DataBlob, x) || len(r.Lookup(x)) == 0 {
				t.Fatalf("blob %s unknown", x.Short())
			}
			got, err := r.LoadBlob(ctx, DataBlob, x, nil)
			if err != nil {
				t.Fatalf("load %s: %v", x.Short(), err)
			}
			if !bytes.Equal(got, b) {
				t.Fatalf("blob %s reads other bytes", x.Short())
			}
			if during {
				if _, isNew, err := r.SaveBlob(ctx, DataBlob, b, x); err != nil || isNew {
					t.Fatalf("blob %s stored again (err %v)", x.Short(), err)
				}
			}
		}
		packs := 0
		if err := r.EachPack(func(PackInfo) error { packs++; return nil }); err != nil {
			t.Fatal(err)
		}
		if stored := r.SessionStats().Packs; during && int64(packs) != stored {
			t.Errorf("EachPack lists %d packs, the session stored %d", packs, stored)
		}
	}
	check(r, true)
	r2, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	check(r2, false)
}

// TestSessionIndexHeapFlat: the heap a session keeps for its own new
// blobs stops growing once they are folded: storing three times as many
// blobs leaves about the same live heap, where it grew by some 200
// bytes per blob when every one stayed in memory until the next run.
func TestSessionIndexHeapFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 300 000 blobs (-short)")
	}
	ctx := context.Background()
	be, err := tiers.NewLocal(t.TempDir()) // on disk: a memory store's objects would count
	if err != nil {
		t.Fatal(err)
	}
	r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, IndexEvery: 1, FoldEvery: 20000})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var buf [16]byte
	save := func(from, to int) uint64 {
		for i := from; i < to; i++ {
			binary.LittleEndian.PutUint64(buf[:], uint64(i))
			binary.LittleEndian.PutUint64(buf[8:], uint64(i)*0x9e3779b97f4a7c15)
			if _, _, err := r.SaveBlob(ctx, DataBlob, buf[:], id.ID{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	const first, more = 100000, 200000
	h1 := save(0, first)
	h2 := save(first, first+more)
	grew := int64(h2) - int64(h1)
	t.Logf("live heap %d MiB after %d blobs, %d MiB after %d (%d bytes per blob more)", h1>>20, first, h2>>20, first+more, grew/more)
	if grew > more*60 { // what a flush leaves unfolded differs: up to FoldEvery and a pack of entries
		t.Errorf("live heap grew %d bytes for %d more blobs (%d each): the session's own index is held in memory", grew, more, grew/more)
	}
}

// TestSessionIndexConcurrentFolds: writers that save and look up blobs
// while index objects are written and folded (every 100 blobs here) find
// every blob they saved; run under the race detector too.
func TestSessionIndexConcurrentFolds(t *testing.T) {
	ctx := context.Background()
	r, err := Init(ctx, tierstest.NewMemory(), InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, IndexEvery: 1, FoldEvery: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			var mine []id.ID
			for i := range 3000 {
				x, _, err := r.SaveBlob(ctx, DataBlob, randBytes(rng, 300+rng.IntN(300)), id.ID{})
				if err != nil {
					t.Error(err)
					return
				}
				mine = append(mine, x)
				if y := mine[rng.IntN(len(mine))]; !r.Has(DataBlob, y) {
					t.Errorf("writer %d: blob %s it saved is unknown", w, y.Short())
					return
				}
				if i%500 == 499 {
					if err := r.Flush(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	r.idxMu.RLock()
	levels := len(r.sessIdx)
	r.idxMu.RUnlock()
	if levels == 0 {
		t.Error("no fold happened: the test exercises nothing")
	}
}

// TestSessionIndexForgetsSweptPacks: a pack this process stored, and
// folded into its own index, that a later prune in the same process
// sweeps is no longer known: a blob only it held is neither found nor
// deduplicated against, it is stored again.
func TestSessionIndexForgetsSweptPacks(t *testing.T) {
	ctx := context.Background()
	r, err := Init(ctx, tierstest.NewMemory(), InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, IndexEvery: 1, FoldEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := rand.New(rand.NewPCG(3, 7))
	var chunks [][]byte
	for range 40 {
		chunks = append(chunks, randBytes(rng, 30000))
	}
	s1 := snapOf(t, r, chunks)
	snap(t, r, rng, 5, nil)
	r.idxMu.RLock()
	levels := len(r.sessIdx)
	r.idxMu.RUnlock()
	if levels == 0 {
		t.Fatal("no fold happened: the test exercises nothing")
	}
	if err := r.ForgetSnapshot(ctx, s1); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Prune(ctx, PruneOptions{Grace: 0, GraceSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed == 0 {
		t.Fatalf("prune removed no pack: %+v", rep)
	}
	gone := chunks[len(chunks)-1]
	x := r.BlobID(gone)
	if r.Has(DataBlob, x) {
		t.Errorf("blob %s of a swept pack still counts for dedupe", x.Short())
	}
	if locs := r.Lookup(x); len(locs) != 0 {
		t.Errorf("blob %s of a swept pack still found in pack %s", x.Short(), locs[0].Pack.ID.Short())
	}
	if _, isNew, err := r.SaveBlob(ctx, DataBlob, gone, x); err != nil || !isNew {
		t.Errorf("blob %s of a swept pack not stored again (new %v, err %v)", x.Short(), isNew, err)
	}
}

// afterIndexList runs after once after the next listing of index objects.
type afterIndexList struct {
	tiers.Backend
	after func()
}

func (b *afterIndexList) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	err := b.Backend.List(ctx, t, fn)
	if f := b.after; f != nil && t == tiers.TypeIndex {
		b.after = nil
		f()
	}
	return err
}

// TestLoadIndexKeepsBlobsIndexedAfterListing: a blob this session stored
// and indexed while a LoadIndex was under way, after it listed the index
// objects, stays known when that LoadIndex ends. Its pending entry was
// dropped as indexed, though the new cache lacks the index object, so
// Has, Lookup, LoadBlob and EachPack missed it until the next LoadIndex.
func TestLoadIndexKeepsBlobsIndexedAfterListing(t *testing.T) {
	ctx := context.Background()
	be := &afterIndexList{Backend: tierstest.NewMemory()}
	r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b := randBytes(rand.New(rand.NewPCG(8, 8)), 5000)
	x := r.BlobID(b)
	be.after = func() {
		if _, _, err := r.SaveBlob(ctx, DataBlob, b, x); err != nil {
			t.Error(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Error(err)
		}
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if be.after != nil {
		t.Fatal("the blob was not stored during LoadIndex: the test exercises nothing")
	}
	if !r.Has(DataBlob, x) {
		t.Errorf("blob %s stored during LoadIndex is unknown to Has", x.Short())
	}
	locs := r.Lookup(x)
	if len(locs) == 0 {
		t.Fatalf("blob %s stored during LoadIndex is unknown to Lookup", x.Short())
	}
	if got, err := r.LoadBlob(ctx, DataBlob, x, nil); err != nil || !bytes.Equal(got, b) {
		t.Errorf("blob %s stored during LoadIndex does not read back: %v", x.Short(), err)
	}
	found := false
	_ = r.EachPack(func(p PackInfo) error { found = found || p.ID == locs[0].Pack.ID; return nil })
	if !found {
		t.Errorf("EachPack misses pack %s, stored during LoadIndex", locs[0].Pack.ID.Short())
	}
}

// TestLoadIndexNeverDedupesAgainstSweptPacks: while a LoadIndex reads
// the index objects a sweep rewrote, the blobs of the packs that sweep
// removed do not count for dedupe: the tombstone that condemned them is
// gone, but the cache in use still lists them until the new one replaces
// it. The tombstones read were applied before the new cache was built.
func TestLoadIndexNeverDedupesAgainstSweptPacks(t *testing.T) {
	ctx := context.Background()
	be := &loadHook{Backend: tierstest.NewMemory()}
	r, clock, _, ids := condemnedFixture(t, be)
	w, _ := openWriter(t, be, clock) // after the mark: it does not hold up the sweep
	swept := ids[len(ids)-1]
	if w.Has(DataBlob, swept) {
		t.Fatal("fixture: a blob of a condemned pack counts for dedupe")
	}
	if rep, err := r.Prune(ctx, sweepOpts); err != nil || rep.Removed == 0 {
		t.Fatalf("sweep: %+v, %v", rep, err)
	}
	reads := 0
	be.after = func(h tiers.Handle) {
		if h.Type != tiers.TypeIndex {
			return
		}
		reads++
		if w.Has(DataBlob, swept) {
			t.Errorf("while LoadIndex reads %s, blob %s of a swept pack counts for dedupe", h, swept.Short())
		}
	}
	if err := w.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	be.after = nil
	if reads == 0 {
		t.Fatal("LoadIndex read no index object: the test exercises nothing")
	}
	if w.Has(DataBlob, swept) {
		t.Errorf("blob %s of a swept pack counts for dedupe", swept.Short())
	}
}

// TestSessionIndexFoldDuringLoadIndex: a fold while a LoadIndex is under
// way, after it listed the index objects, does not keep the blobs of an
// index object of this session that a sweep removed before the listing.
// The fold put them in one level with an object stored after the
// listing, which the LoadIndex had to keep: a blob of the swept pack
// counted for dedupe.
func TestSessionIndexFoldDuringLoadIndex(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	be := &afterIndexList{Backend: mem}
	rng := rand.New(rand.NewPCG(6, 6))
	var early [][]byte
	for range 10 {
		early = append(early, randBytes(rng, 3000))
	}
	w, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, FoldEvery: len(early) + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, b := range early {
		if _, _, err := w.SaveBlob(ctx, DataBlob, b, id.ID{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil { // indexed, not folded yet
		t.Fatal(err)
	}
	// Another process forgets nothing but prunes at once: no snapshot
	// holds the blobs, no session holds up the sweep.
	pruner, err := Open(ctx, mem, Options{Password: []byte("pw"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer pruner.Close()
	if rep, err := pruner.Prune(ctx, PruneOptions{Grace: 0, GraceSet: true}); err != nil || rep.Removed == 0 {
		t.Fatalf("sweep: %+v, %v", rep, err)
	}
	late := randBytes(rng, 3000)
	be.after = func() {
		if _, _, err := w.SaveBlob(ctx, DataBlob, late, id.ID{}); err != nil {
			t.Error(err)
		}
		if err := w.Flush(ctx); err != nil { // due to fold, with the swept object
			t.Error(err)
		}
	}
	if err := w.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if be.after != nil {
		t.Fatal("nothing stored during LoadIndex: the test exercises nothing")
	}
	for _, b := range early {
		if x := w.BlobID(b); w.Has(DataBlob, x) || len(w.Lookup(x)) > 0 {
			t.Fatalf("blob %s of a swept pack still known", x.Short())
		}
	}
	if x := w.BlobID(late); !w.Has(DataBlob, x) || len(w.Lookup(x)) == 0 {
		t.Errorf("blob %s stored during LoadIndex unknown", x.Short())
	}
}

// TestNoFoldAfterClose: an upload that ends after Close (Close does not
// flush) and writes the index object that makes a fold due leaves no
// level behind, which nothing would unmap.
func TestNoFoldAfterClose(t *testing.T) {
	ctx := context.Background()
	be := &stuckPuts{Backend: tierstest.NewMemory(), release: make(chan struct{})}
	r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, IndexEvery: 1, FoldEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 8))
	for range 40 { // more than a pack: its upload starts, and waits
		if _, _, err := r.SaveBlob(ctx, DataBlob, randBytes(rng, 30000), id.ID{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	close(be.release)
	if err := r.uploads.wait(ctx); err != nil {
		t.Fatal(err)
	}
	r.idxMu.RLock()
	levels := len(r.sessIdx)
	r.idxMu.RUnlock()
	if levels != 0 {
		t.Errorf("%d session index levels made after Close", levels)
	}
}

// countIndexLoads counts the reads of index objects.
type countIndexLoads struct {
	tiers.Backend
	n atomic.Int64
}

func (b *countIndexLoads) Load(ctx context.Context, h tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	if h.Type == tiers.TypeIndex {
		b.n.Add(1)
	}
	return b.Backend.Load(ctx, h, off, n, fn)
}

// TestSessionLevelsMergeWithoutStorageReads: levels merge from their
// mapped files, not by reading the session's index objects back from
// storage (a late merge of a large session read gigabytes while every
// upload waited for it).
func TestSessionLevelsMergeWithoutStorageReads(t *testing.T) {
	ctx := context.Background()
	be := &countIndexLoads{Backend: tierstest.NewMemory()}
	r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, IndexEvery: 1, FoldEvery: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before := be.n.Load()
	rng := rand.New(rand.NewPCG(9, 9))
	var saved []id.ID
	for i := range 6000 {
		x, _, err := r.SaveBlob(ctx, DataBlob, randBytes(rng, 300), id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		saved = append(saved, x)
		if i%250 == 249 {
			if err := r.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := be.n.Load() - before; n != 0 {
		t.Errorf("the session read %d index objects back from storage", n)
	}
	r.idxMu.RLock()
	levels := len(r.sessIdx)
	r.idxMu.RUnlock()
	if levels == 0 || levels > 7 {
		t.Errorf("%d levels for 6000 blobs folded about 250 at a time", levels)
	}
	for _, x := range saved {
		if !r.Has(DataBlob, x) {
			t.Fatalf("blob %s unknown after the merges", x.Short())
		}
	}
}
