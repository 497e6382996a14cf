package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// oneBlobData returns the contents oneBlobFiles stores (the same seed).
func oneBlobData(n, size int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var out [][]byte
	for i := 0; i < n; i++ {
		out = append(out, randBytes(rng, size))
	}
	return out
}

// reopen opens the repository in be as a new process would, with a cold
// index cache.
func reopen(t *testing.T, be tiers.Backend) *Repository {
	t.Helper()
	r, err := Open(context.Background(), be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// restoreAll reads every file of every snapshot of r and compares it with
// data (file fNN holds data[NN]). It returns how many files did not read
// back intact.
func restoreAll(t *testing.T, r *Repository, data [][]byte) (bad int) {
	t.Helper()
	ctx := context.Background()
	sids, err := r.ListSnapshotIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sid := range sids {
		sn, err := r.LoadSnapshot(ctx, sid)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := r.LoadTree(ctx, sn.Tree)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tr.Nodes {
			var i int
			if _, err := fmt.Sscanf(n.Name, "f%02d", &i); err != nil {
				t.Fatal(err)
			}
			var got []byte
			err := r.EachExtent(ctx, n, func(e Extent) error {
				b, err := r.LoadBlob(ctx, DataBlob, e.ID, nil)
				got = append(got, b...)
				return err
			})
			if err != nil || !bytes.Equal(got, data[i]) {
				bad++
			}
		}
	}
	return bad
}

// TestRepairDropsLostBlobsBackupStoresThemAgain: repair removes from the
// index the blobs of a lost pack, so that a new backup of the same files
// stores them again instead of deduplicating against data that cannot be
// read; that heals the older snapshot as well.
func TestRepairDropsLostBlobsBackupStoresThemAgain(t *testing.T) {
	ctx := context.Background()
	be, _, ext, p := twentyFilesInOnePack(t)
	data := oneBlobData(20, 20000)
	for i := 0; i < 3; i++ { // every data shard: no blob reads
		be.Remove(ctx, p.ShardHandle(i))
	}
	rr := reopen(t, be)
	rep, err := rr.Repair(ctx, CheckOptions{})
	if !errors.Is(err, ErrUnrepairable) {
		t.Fatalf("repair of a lost pack: %v, want ErrUnrepairable", err)
	}
	if rep.BlobsDropped != len(ext) {
		t.Errorf("repair dropped %d blobs from the index, want the %d of the lost pack", rep.BlobsDropped, len(ext))
	}
	// A new backup of the unchanged files.
	r2 := reopen(t, be)
	oneBlobFiles(t, r2, 20, 20000)
	if n := r2.SessionStats().Blobs; n < int64(len(ext)) {
		t.Errorf("the backup after repair stored %d blobs, want the %d the lost pack held", n, len(ext))
	}
	r3 := reopen(t, be)
	if bad := restoreAll(t, r3, data); bad > 0 {
		t.Errorf("%d files of the old and the new snapshot do not restore after repair and a new backup", bad)
	}
	if rep, err := r3.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Errorf("check --read-data after repair and a new backup: %v %v %+v", err, rep.Errors, rep.Damaged)
	}
	// A second repair finds nothing left to do.
	if _, err := reopen(t, be).Repair(ctx, CheckOptions{}); err != nil {
		t.Errorf("repair after the new backup: %v", err)
	}
}

// TestRepairKeepsBlobsThatRead: of a lost pack, repair drops only the
// blobs that do not read; those that still read from the data shards stay
// indexed (and restorable).
func TestRepairKeepsBlobsThatRead(t *testing.T) {
	ctx := context.Background()
	be, r, ext, p := twentyFilesInOnePack(t)
	data := oneBlobData(20, 20000)
	for _, i := range []int{2, 3, 4} {
		be.Remove(ctx, p.ShardHandle(i))
	}
	readable := map[id.ID]bool{}
	for _, e := range ext {
		l := r.Lookup(e.ID)[0]
		if r.LoadBlobs(ctx, l.Pack, []BlobEntry{l.Entry}, func(BlobEntry, []byte) error { return nil }) == nil {
			readable[e.ID] = true
		}
	}
	if len(readable) == 0 || len(readable) == len(ext) {
		t.Fatalf("%d of %d blobs read; the test needs some of each", len(readable), len(ext))
	}
	rr := reopen(t, be)
	rep, err := rr.Repair(ctx, CheckOptions{})
	if !errors.Is(err, ErrUnrepairable) {
		t.Fatalf("repair of a lost pack: %v, want ErrUnrepairable", err)
	}
	if rep.BlobsDropped != len(ext)-len(readable) {
		t.Errorf("repair dropped %d blobs, want the %d that do not read", rep.BlobsDropped, len(ext)-len(readable))
	}
	r2 := reopen(t, be)
	for _, e := range ext {
		if got := len(r2.Lookup(e.ID)); readable[e.ID] && got != 1 {
			t.Errorf("blob %s reads, but repair left it in %d packs of the index", e.ID.Short(), got)
		} else if !readable[e.ID] && got != 0 {
			t.Errorf("blob %s does not read, but repair left it in the index", e.ID.Short())
		}
	}
	oneBlobFiles(t, r2, 20, 20000)
	if n := r2.SessionStats().Blobs; n < int64(len(ext)-len(readable)) {
		t.Errorf("the backup after repair stored %d blobs, want the %d lost", n, len(ext)-len(readable))
	}
	r3 := reopen(t, be)
	if bad := restoreAll(t, r3, data); bad > 0 {
		t.Errorf("%d files do not restore after repair and a new backup", bad)
	}
	chk, _ := r3.Check(ctx, CheckOptions{ReadData: true})
	if len(chk.Errors) > 0 || chk.MissingBlobs > 0 || len(chk.Damaged) != 1 || chk.Damaged[0].BadBlobs != 0 || len(chk.Damaged[0].Files) != 0 {
		t.Errorf("check after repair and a new backup: errors %v, %d missing blobs, damage %+v; want only the pack without parity, whose blobs all read", chk.Errors, chk.MissingBlobs, chk.Damaged)
	}
}

// TestRepairKeepsIndexWhenEveryBlobReads: a lost pack whose blobs all
// still read from the data shards keeps them all: repair rewrites no
// index object.
func TestRepairKeepsIndexWhenEveryBlobReads(t *testing.T) {
	ctx := context.Background()
	be, _, _, p := twentyFilesInOnePack(t)
	be.Remove(ctx, p.ShardHandle(3))
	be.Remove(ctx, p.ShardHandle(4))
	flipAt(t, be, p, p.Length-2) // in the pack trailer: no blob lies there
	before := indexIDs(t, be)
	rep, err := reopen(t, be).Repair(ctx, CheckOptions{})
	if !errors.Is(err, ErrUnrepairable) {
		t.Fatalf("repair: %v, want ErrUnrepairable", err)
	}
	if rep.BlobsDropped != 0 {
		t.Errorf("repair dropped %d blobs that all read", rep.BlobsDropped)
	}
	after := indexIDs(t, be)
	if len(after) != len(before) {
		t.Errorf("repair changed the index objects from %v to %v", before, after)
	}
	for x := range before {
		if !after[x] {
			t.Errorf("repair removed index object %s", x[:8])
		}
	}
}

// TestRepairInterruptedAfterNewIndex: a repair that stops after storing
// the index object without the lost blobs, before removing the objects it
// supersedes, leaves every blob that reads indexed; the next repair
// finishes the job.
func TestRepairInterruptedAfterNewIndex(t *testing.T) {
	ctx := context.Background()
	mem, _, _, p := twentyFilesInOnePack(t)
	data := oneBlobData(20, 20000)
	for _, i := range []int{2, 3, 4} {
		mem.Remove(ctx, p.ShardHandle(i))
	}
	before, _ := reopen(t, mem).Check(ctx, CheckOptions{ReadData: true})
	fb := tierstest.NewFaulty(mem, 1)
	fb.Inject(tierstest.Fault{Op: tierstest.OpRemove, Type: tiers.TypeIndex})
	ixBefore := indexIDs(t, mem)
	if _, err := reopen(t, fb).Repair(ctx, CheckOptions{}); err == nil || errors.Is(err, ErrUnrepairable) {
		t.Fatalf("repair whose removal of an index object fails: %v, want that error", err)
	}
	ixAfter := indexIDs(t, mem)
	if len(ixAfter) != len(ixBefore)+1 {
		t.Fatalf("index objects %d before, %d after; want the new one beside the old", len(ixBefore), len(ixAfter))
	}
	r2 := reopen(t, mem)
	if restoreAll(t, r2, data) != before.Damaged[0].BadBlobs {
		t.Errorf("after an interrupted repair the snapshot does not restore as before")
	}
	after, _ := r2.Check(ctx, CheckOptions{ReadData: true})
	if len(after.Damaged) != 1 || after.Damaged[0].BadBlobs != before.Damaged[0].BadBlobs || len(after.Errors) > 0 {
		t.Errorf("check after an interrupted repair: damage %+v, errors %v; want as before: %+v", after.Damaged, after.Errors, before.Damaged)
	}
	// The next repair completes it.
	rep, err := reopen(t, mem).Repair(ctx, CheckOptions{})
	if !errors.Is(err, ErrUnrepairable) || rep.BlobsDropped != before.Damaged[0].BadBlobs {
		t.Fatalf("repair again: %v, dropped %d; want ErrUnrepairable, %d dropped", err, rep.BlobsDropped, before.Damaged[0].BadBlobs)
	}
	if ix := indexIDs(t, mem); len(ix) != len(ixBefore) {
		t.Errorf("%d index objects after the repair completed, want %d", len(ix), len(ixBefore))
	}
	r3 := reopen(t, mem)
	oneBlobFiles(t, r3, 20, 20000)
	r4 := reopen(t, mem)
	if bad := restoreAll(t, r4, data); bad > 0 {
		t.Errorf("%d files do not restore after repair and a new backup", bad)
	}
	if chk, _ := r4.Check(ctx, CheckOptions{ReadData: true}); len(chk.Errors) > 0 || chk.MissingBlobs > 0 || len(chk.Damaged) != 1 || chk.Damaged[0].BadBlobs != 0 {
		t.Errorf("check after repair and a new backup: errors %v, %d missing blobs, damage %+v", chk.Errors, chk.MissingBlobs, chk.Damaged)
	}
}

// TestRepairKeepsBlobsOfShardsStorageFailedToRead: a pack that looks lost
// because storage failed to read one of its shards (a time-out, not a
// missing or damaged object) keeps its blobs in the index: once storage
// answers again, everything restores.
func TestRepairKeepsBlobsOfShardsStorageFailedToRead(t *testing.T) {
	ctx := context.Background()
	mem, _, _, p := twentyFilesInOnePack(t)
	data := oneBlobData(20, 20000)
	for i := 0; i < 2; i++ { // two shards gone: one more that does not read makes it lost
		mem.Remove(ctx, p.ShardHandle(i))
	}
	fb := tierstest.NewFaulty(mem, 1)
	fb.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeData, Name: p.ShardHandle(2).Name, Err: errors.New("503 slow down")})
	rep, err := reopen(t, fb).Repair(ctx, CheckOptions{})
	if !errors.Is(err, ErrUnrepairable) {
		t.Fatalf("repair: %v, want ErrUnrepairable while the pack does not read", err)
	}
	if rep.BlobsDropped != 0 || len(rep.Held) != 1 || rep.Held[0] != p.ID {
		t.Fatalf("repair dropped %d blobs and held %v; want none dropped and pack %s held", rep.BlobsDropped, rep.Held, p.ID.Short())
	}
	// Storage answers again: the pack rebuilds from its three shards.
	if bad := restoreAll(t, reopen(t, mem), data); bad > 0 {
		t.Errorf("%d files do not restore once storage reads the shard again", bad)
	}
}

// TestReindexLeavesOutBlobsThatDoNotDecode: a pack that no index lists
// (an earlier repair dropped it for its blobs that do not read) is indexed
// again with only the blobs that decode, so backups do not deduplicate
// against the others again.
func TestReindexLeavesOutBlobsThatDoNotDecode(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	r := testRepo(t, mem, InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(5, 6))
	good, bad := randBytes(rng, 20000), randBytes(rng, 20000)
	var buf []byte
	var entries []BlobEntry
	for _, plain := range [][]byte{good, bad} {
		sealed, _ := r.key.encodeBlob(kindBlob, nil, nil, plain, r.comp)
		entries = append(entries, BlobEntry{Type: DataBlob, ID: r.BlobID(plain), Offset: uint32(len(buf)), Length: uint32(len(sealed)), RawLength: uint32(len(plain))})
		buf = append(buf, sealed...)
	}
	buf[entries[1].Offset+entries[1].Length/2] ^= 0xff // damaged before the parity was made
	if err := r.startPack(ctx, buf, entries); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mem.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error { return mem.Remove(ctx, oi.Handle) })
	rr := reopen(t, mem)
	rep, err := rr.Repair(ctx, CheckOptions{})
	if err != nil || rep.PacksReindexed != 1 {
		t.Fatalf("repair: %v, %d packs indexed again, want 1", err, rep.PacksReindexed)
	}
	after := reopen(t, mem)
	if !after.Has(DataBlob, entries[0].ID) || after.Has(DataBlob, entries[1].ID) {
		t.Errorf("indexed again: the blob that decodes %v, the one that does not %v; want only the first", after.Has(DataBlob, entries[0].ID), after.Has(DataBlob, entries[1].ID))
	}
}

// TestRepairKeepsBlobsThatFailedToReadOnlyDuringCheck: a shard that storage
// failed to read while repair's check read the pack, but that reads again
// by the time repair removes blobs, does not make repair remove the blobs
// check could not read: the pack rebuilds from the shards there are, and
// every file restores.
func TestRepairKeepsBlobsThatFailedToReadOnlyDuringCheck(t *testing.T) {
	ctx := context.Background()
	mem, _, _, p := twentyFilesInOnePack(t)
	data := oneBlobData(20, 20000)
	for i := 0; i < 2; i++ { // two shards gone: the pack still rebuilds from the other three
		mem.Remove(ctx, p.ShardHandle(i))
	}
	fault := tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeData, Name: p.ShardHandle(2).Name, Err: errors.New("503 slow down")}
	// How often check reads the shard while it fails.
	count := tierstest.NewFaulty(mem, 1)
	count.Inject(fault)
	if _, err := reopen(t, count).Check(ctx, CheckOptions{ReadData: true}); !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("check while shard 2 does not read: %v, want ErrCheckFailed", err)
	}
	// Storage fails that many times, during repair's check, then answers.
	fault.Times = count.Fired()
	fb := tierstest.NewFaulty(mem, 1)
	fb.Inject(fault)
	rep, err := reopen(t, fb).Repair(ctx, CheckOptions{})
	if fb.Fired() != fault.Times {
		t.Fatalf("the fault fired %d times, want %d", fb.Fired(), fault.Times)
	}
	if rep == nil {
		t.Fatalf("repair: %v", err)
	}
	if rep.BlobsDropped != 0 {
		t.Errorf("repair dropped %d blobs of a pack whose shards read again (repair: %v)", rep.BlobsDropped, err)
	}
	if bad := restoreAll(t, reopen(t, mem), data); bad > 0 {
		t.Errorf("%d files do not restore after repair", bad)
	}
}

// indexPutHook runs hook before the first index object is stored through
// it.
type indexPutHook struct {
	tiers.Backend
	hook func()
}

func (b *indexPutHook) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if h.Type == tiers.TypeIndex && b.hook != nil {
		hook := b.hook
		b.hook = nil
		hook()
	}
	return b.Backend.Put(ctx, h, rd, size)
}

// TestRepairDoesNotRewriteTheIndexBesidePrune: a repair that removes the
// blobs of a lost pack from the index while a prune rewrites the same
// index object must not put back, in the object it writes, a pack the
// prune removes: the index would list blobs that are gone, and backups
// would deduplicate against them.
func TestRepairDoesNotRewriteTheIndexBesidePrune(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	r := testRepo(t, mem, InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(7, 8))
	var orphans []id.ID // in no snapshot: prune removes their packs
	for i := 0; i < 6; i++ {
		x, _, err := r.SaveBlob(ctx, DataBlob, randBytes(rng, 400000), id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, x)
	}
	ext := oneBlobFiles(t, r, 6, 400000) // flushes: one index object lists every pack
	lost := r.Lookup(ext[len(ext)-1].ID)[0].Pack
	for i := 0; i < 3; i++ {
		mem.Remove(ctx, lost.ShardHandle(i))
	}
	var repErr error
	hb := &indexPutHook{Backend: mem, hook: func() {
		_, repErr = reopen(t, mem).Repair(ctx, CheckOptions{})
	}}
	if _, err := reopen(t, hb).Prune(ctx, PruneOptions{GraceSet: true, RepackBelow: -1, RepackBelowSet: true}); err != nil {
		t.Fatalf("prune: %v", err)
	}
	if hb.hook != nil {
		t.Fatal("prune rewrote no index object")
	}
	if repErr == nil || !strings.Contains(repErr.Error(), "prune") {
		t.Errorf("repair beside a prune: %v, want an error naming the prune", repErr)
	}
	after := reopen(t, mem)
	for _, x := range orphans {
		for _, l := range after.Lookup(x) {
			if _, err := mem.Stat(ctx, l.Pack.ShardHandle(0)); errors.Is(err, tiers.ErrNotFound) {
				t.Errorf("blob %s is indexed in pack %s, whose shards prune removed", x.Short(), l.Pack.ID.Short())
			}
		}
	}
}

// TestRepairRefusesBesideAPruneBeforeAnyWrite: a repair that finds a
// prune running changes nothing, re-indexing included: a pack in no index
// is what a prune removes as an orphan, and an index object naming it
// written beside the prune would outlive the pack.
func TestRepairRefusesBesideAPruneBeforeAnyWrite(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	r := testRepo(t, mem, InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20})
	oneBlobFiles(t, r, 4, 20000)
	// The packs' index objects are gone: repair would index them again.
	mem.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error { return mem.Remove(ctx, oi.Handle) })
	prune, err := r.beginSession(ctx, "other-host", sessionPrune)
	if err != nil {
		t.Fatal(err)
	}
	defer prune.End(ctx)
	countIndexes := func() int {
		n := 0
		mem.List(ctx, tiers.TypeIndex, func(tiers.ObjectInfo) error { n++; return nil })
		return n
	}
	rep, err := reopen(t, mem).Repair(ctx, CheckOptions{})
	if err == nil || !strings.Contains(err.Error(), "a prune (or another repair) is running") {
		t.Fatalf("repair beside a prune: %v (report %+v), want it refused", err, rep)
	}
	if n := countIndexes(); n != 0 {
		t.Errorf("repair refused beside a prune still wrote %d index objects", n)
	}
}

// twentyFilesInOnePack stores 20 files of 20000 random bytes (file fNN
// holds oneBlobData(20, 20000)[NN]) in a 3+2 repository held in memory,
// and returns it with the files' extents and the pack of the first.
func twentyFilesInOnePack(t *testing.T) (*tierstest.Memory, *Repository, []Extent, PackInfo) {
	t.Helper()
	mem := tierstest.NewMemory()
	r := testRepo(t, mem, InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20})
	ext := oneBlobFiles(t, r, 20, 20000)
	return mem, r, ext, r.Lookup(ext[0].ID)[0].Pack
}
