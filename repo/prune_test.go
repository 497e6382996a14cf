package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// snap stores n random chunks (after the already stored shared ones) as
// one file and a snapshot of it.
func snap(t *testing.T, r *Repository, rng *rand.Rand, n int, shared []id.ID) (id.ID, []id.ID) {
	t.Helper()
	var chunks [][]byte
	var ids []id.ID
	for i := 0; i < n; i++ {
		chunks = append(chunks, randBytes(rng, 30000))
		ids = append(ids, r.BlobID(chunks[i]))
	}
	return snapOf(t, r, chunks, shared...), ids
}

func TestPruneTwoPhase(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20}, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := rand.New(rand.NewPCG(1, 1))
	s1, ids1 := snap(t, r, rng, 60, nil)
	_, ids2 := snap(t, r, rng, 60, ids1[:5])
	r.LoadIndex(ctx)
	if err := r.ForgetSnapshot(ctx, s1); err != nil {
		t.Fatal(err)
	}
	// Phase 1: condemn, remove nothing.
	rep, err := r.Prune(ctx, PruneOptions{Grace: time.Hour, GraceSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Condemned == 0 || rep.Removed != 0 {
		t.Fatalf("phase 1: condemned %d removed %d, want >0 and 0", rep.Condemned, rep.Removed)
	}
	for _, x := range ids1 {
		if len(r.Lookup(x)) == 0 {
			t.Fatalf("blob %s unreadable right after phase 1", x.Short())
		}
	}
	// A backup now must not deduplicate against condemned packs.
	condemnedBlob := ids1[59] // its pack holds none of the shared ids1[:5]
	if r.Has(DataBlob, condemnedBlob) {
		t.Errorf("blob in a condemned pack still counts for dedupe")
	}
	// Before the grace period nothing goes.
	clock = clock.Add(30 * time.Minute)
	rep, _ = r.Prune(ctx, PruneOptions{Grace: time.Hour, GraceSet: true})
	if rep.Removed != 0 {
		t.Fatalf("removed %d packs before the grace period", rep.Removed)
	}
	// A session that started before the mark blocks the sweep.
	clock = clock.Add(2 * time.Hour)
	sess := &Session{r: r, h: tiers.Handle{Type: tiers.TypeSession, Name: "test-session"}, rec: sessionRecord{Host: "other", Started: clock.Add(-3 * time.Hour), Refreshed: clock}}
	if err := sess.put(ctx); err != nil {
		t.Fatal(err)
	}
	rep, _ = r.Prune(ctx, PruneOptions{Grace: time.Hour, GraceSet: true})
	if rep.Removed != 0 || rep.Postponed == 0 || len(rep.WaitingFor) == 0 {
		t.Fatalf("with an old session: removed %d postponed %d waiting %v", rep.Removed, rep.Postponed, rep.WaitingFor)
	}
	be.Remove(ctx, sess.h)
	rep, err = r.Prune(ctx, PruneOptions{Grace: time.Hour, GraceSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed == 0 || rep.BytesFreed == 0 {
		t.Fatalf("sweep removed %d packs", rep.Removed)
	}
	// Everything the remaining snapshot needs is still there.
	if c, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check after prune: %v %+v %+v", err, c.Errors, c.Damaged)
	}
	for _, x := range append(ids2, ids1[:5]...) {
		if _, err := r.LoadBlob(ctx, DataBlob, x, nil); err != nil {
			t.Fatalf("live blob %s lost: %v", x.Short(), err)
		}
	}
	if len(r.Lookup(condemnedBlob)) != 0 {
		t.Errorf("unreferenced blob %s survived the sweep", condemnedBlob.Short())
	}
}

// TestPruneResurrects: a backup that started before the mark deduplicated
// against a condemned pack and finished; the sweep must keep that pack.
func TestPruneResurrects(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20}, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := rand.New(rand.NewPCG(2, 2))
	s1, ids1 := snap(t, r, rng, 40, nil)
	r.LoadIndex(ctx)
	// "Old" backup: opened (no tombstone yet), then the forget+mark happen.
	old, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	r.ForgetSnapshot(ctx, s1)
	if _, err := r.Prune(ctx, PruneOptions{Grace: time.Hour, GraceSet: true}); err != nil {
		t.Fatal(err)
	}
	// The old backup still dedupes against everything and writes a snapshot.
	if !old.Has(DataBlob, ids1[0]) {
		t.Fatal("test setup: the old session should not know the tombstone")
	}
	snap(t, old, rng, 3, ids1)
	clock = clock.Add(2 * time.Hour)
	rep, err := r.Prune(ctx, PruneOptions{Grace: time.Hour, GraceSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Resurrected == 0 {
		t.Errorf("resurrected %d, want > 0", rep.Resurrected)
	}
	if c, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check: %v %+v", err, c.Errors)
	}
}

func TestPruneRefusesIncompleteKnowledge(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(3, 3))
	snap(t, r, rng, 5, nil)
	var ixs []tiers.Handle
	be.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error { ixs = append(ixs, oi.Handle); return nil })
	for _, h := range ixs {
		be.Remove(ctx, h)
	}
	before := 0
	be.List(ctx, tiers.TypeData, func(tiers.ObjectInfo) error { before++; return nil })
	_, err := r.Prune(ctx, PruneOptions{GraceSet: true})
	if !errors.Is(err, ErrPruneUnsafe) {
		t.Fatalf("prune with the index gone: %v, want ErrPruneUnsafe", err)
	}
	after := 0
	be.List(ctx, tiers.TypeData, func(tiers.ObjectInfo) error { after++; return nil })
	if after != before {
		t.Errorf("prune removed shards (%d -> %d) although it refused", before, after)
	}
}

func TestPruneRepacksSparsePacks(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(4, 4))
	s1, ids1 := snap(t, r, rng, 30, nil) // one pack of ~0.9 MiB
	snap(t, r, rng, 1, ids1[:3])         // keeps 3 of its 30 chunks alive
	r.LoadIndex(ctx)
	r.ForgetSnapshot(ctx, s1)
	rep, err := r.Prune(ctx, PruneOptions{GraceSet: true, ClockSkewSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Repacked == 0 || rep.Removed == 0 {
		t.Fatalf("repacked %d removed %d, want both > 0", rep.Repacked, rep.Removed)
	}
	if c, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check: %v %+v", err, c.Errors)
	}
	for _, x := range ids1[:3] {
		if _, err := r.LoadBlob(ctx, DataBlob, x, nil); err != nil {
			t.Fatalf("repacked blob %s lost: %v", x.Short(), err)
		}
	}
	for _, x := range ids1[3:] {
		if len(r.Lookup(x)) != 0 {
			t.Fatalf("dead blob %s survived repack", x.Short())
		}
	}
}

// TestPruneDryRunCountsFreedBytes: a dry run that would sweep says how
// much the sweep would free, the bytes the real sweep then frees.
func TestPruneDryRunCountsFreedBytes(t *testing.T) {
	ctx := context.Background()
	r, _, _ := sweepFixture(t, tierstest.NewMemory())
	o := sweepOpts
	o.DryRun = true
	dry, err := r.Prune(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Prune(ctx, sweepOpts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed == 0 || rep.BytesFreed == 0 {
		t.Fatalf("fixture: sweep removed %d packs, freed %d bytes", rep.Removed, rep.BytesFreed)
	}
	if dry.Removed != rep.Removed || dry.BytesFreed != rep.BytesFreed {
		t.Errorf("dry run: would remove %d packs freeing %d bytes; the sweep removed %d freeing %d", dry.Removed, dry.BytesFreed, rep.Removed, rep.BytesFreed)
	}
}

// TestSweepKeepsPackWhoseOtherCopyIsLost: a repack copies a sparse pack's
// used blobs into a new pack and condemns the old one. Should the new pack
// be lost before the sweep (its shards gone), the condemned pack holds the
// only copies left that can be read: the sweep must keep it.
func TestSweepKeepsPackWhoseOtherCopyIsLost(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r, clock := clockedRepo(t, be)
	rng := rand.New(rand.NewPCG(14, 14))
	s1, ids1 := snap(t, r, rng, 30, nil) // one pack of ~0.9 MiB
	snap(t, r, rng, 1, ids1[:3])         // keeps 3 of its 30 chunks alive
	if err := r.ForgetSnapshot(ctx, s1); err != nil {
		t.Fatal(err)
	}
	old := r.Lookup(ids1[0])[0].Pack.ID
	o := PruneOptions{Grace: time.Hour, GraceSet: true}
	rep, err := r.Prune(ctx, o)
	if err != nil || rep.Repacked == 0 || rep.Removed != 0 {
		t.Fatalf("mark: %+v, %v; want a repack and nothing removed", rep, err)
	}
	locs := r.Lookup(ids1[0])
	if len(locs) != 2 || locs[0].Pack.ID == old || locs[1].Pack.ID != old {
		t.Fatalf("after the repack blob %s is at %+v, want the new copy first and then pack %s", ids1[0].Short(), locs, old.Short())
	}
	fresh := locs[0].Pack
	for i := 0; i < int(fresh.K+fresh.M); i++ {
		if err := be.Remove(ctx, tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(fresh.ID, i)}); err != nil {
			t.Fatal(err)
		}
	}
	*clock = clock.Add(2 * time.Hour)
	if _, err := r.Prune(ctx, o); err != nil {
		t.Fatal(err)
	}
	for _, x := range ids1[:3] {
		if _, err := r.LoadBlob(ctx, DataBlob, x, nil); err != nil {
			t.Errorf("blob %s, whose repacked copy was lost, is gone after the sweep: %v", x.Short(), err)
		}
	}
}

// TestPruneDryRunGraceZeroCountsFreshPacks: with no grace period a prune
// condemns and removes unused packs in one run; its dry run says so.
func TestPruneDryRunGraceZeroCountsFreshPacks(t *testing.T) {
	ctx := context.Background()
	r, _ := clockedRepo(t, tierstest.NewMemory())
	rng := rand.New(rand.NewPCG(15, 15))
	s1, _ := snap(t, r, rng, 40, nil)
	snap(t, r, rng, 5, nil)
	if err := r.ForgetSnapshot(ctx, s1); err != nil {
		t.Fatal(err)
	}
	o := PruneOptions{GraceSet: true, RepackBelow: -1, RepackBelowSet: true}
	o.DryRun = true
	dry, err := r.Prune(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	o.DryRun = false
	rep, err := r.Prune(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed == 0 || rep.BytesFreed == 0 {
		t.Fatalf("fixture: prune --grace 0 removed %d packs, freed %d bytes", rep.Removed, rep.BytesFreed)
	}
	if dry.Removed != rep.Removed || dry.BytesFreed != rep.BytesFreed {
		t.Errorf("dry run: would remove %d packs freeing %d bytes; the prune removed %d freeing %d", dry.Removed, dry.BytesFreed, rep.Removed, rep.BytesFreed)
	}
}

// TestPruneBesideLostSparsePack: a sparse pack that lost more shards than
// its parity covers cannot be repacked; prune leaves it (check and repair
// report and handle it) and still frees the packs no snapshot uses.
func TestPruneBesideLostSparsePack(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r, _ := clockedRepo(t, be)
	rng := rand.New(rand.NewPCG(16, 16))
	s0, ids0 := snap(t, r, rng, 30, nil)
	s1, ids1 := snap(t, r, rng, 30, nil)
	snap(t, r, rng, 1, ids1[:3]) // keeps 3 of s1's 30 chunks alive
	for _, s := range []id.ID{s0, s1} {
		if err := r.ForgetSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	lost := r.Lookup(ids1[0])[0].Pack
	for i := 0; i < int(lost.M)+1; i++ {
		if err := be.Remove(ctx, tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(lost.ID, i)}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := r.Prune(ctx, PruneOptions{GraceSet: true})
	if err != nil {
		t.Fatalf("prune beside a lost sparse pack: %v", err)
	}
	if rep.Removed == 0 || len(r.Lookup(ids0[0])) != 0 {
		t.Errorf("prune removed %d packs, blob %s of the forgotten snapshot is at %+v; want its pack removed", rep.Removed, ids0[0].Short(), r.Lookup(ids0[0]))
	}
	if len(r.Lookup(ids1[0])) == 0 {
		t.Errorf("the lost pack %s left the index", lost.ID.Short())
	}
}

// TestPruneDryRunSkipsPacksAlreadyGone: a due tombstone can list a pack
// whose shards are gone already (an earlier sweep removed them, and its
// tombstone stayed under retention); a dry run counts it as the sweep
// does, as nothing to remove.
func TestPruneDryRunSkipsPacksAlreadyGone(t *testing.T) {
	ctx := context.Background()
	r, clock := clockedRepo(t, tierstest.NewMemory())
	rng := rand.New(rand.NewPCG(17, 17))
	snap(t, r, rng, 5, nil)
	if _, err := r.saveTombstones(ctx, []id.ID{id.Hash([]byte("a pack swept before"))}); err != nil {
		t.Fatal(err)
	}
	*clock = clock.Add(2 * time.Hour)
	o := sweepOpts
	o.DryRun = true
	dry, err := r.Prune(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Prune(ctx, sweepOpts)
	if err != nil {
		t.Fatal(err)
	}
	if dry.Removed != rep.Removed {
		t.Errorf("dry run: would remove %d packs; the sweep removed %d", dry.Removed, rep.Removed)
	}
}

// archivedPacks lists the shards of the given packs in an archive storage
// class and refuses to read them, as S3 does for GLACIER objects.
type archivedPacks struct {
	tiers.Backend
	packs map[id.ID]bool
}

func (b *archivedPacks) archived(h tiers.Handle) bool {
	p, _, err := erasure.ParseShardName(h.Name)
	return h.Type == tiers.TypeData && err == nil && b.packs[p]
}

func (b *archivedPacks) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	return b.Backend.List(ctx, t, func(oi tiers.ObjectInfo) error {
		if b.archived(oi.Handle) {
			oi.StorageClass = "GLACIER"
		}
		return fn(oi)
	})
}

func (b *archivedPacks) Load(ctx context.Context, h tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	if b.archived(h) {
		return fmt.Errorf("load %s: %w", h, tiers.ErrNotReady)
	}
	return b.Backend.Load(ctx, h, off, n, fn)
}

// TestPruneBesideArchivedSparsePack: a sparse pack whose shards were moved
// to an archive storage class cannot be read to repack without a restore;
// prune leaves it as it is and still frees the packs no snapshot uses.
func TestPruneBesideArchivedSparsePack(t *testing.T) {
	ctx := context.Background()
	be := &archivedPacks{Backend: tierstest.NewMemory(), packs: map[id.ID]bool{}}
	r, _ := clockedRepo(t, be)
	rng := rand.New(rand.NewPCG(17, 17))
	s0, ids0 := snap(t, r, rng, 30, nil)
	s1, ids1 := snap(t, r, rng, 30, nil)
	snap(t, r, rng, 1, ids1[:3]) // keeps 3 of s1's 30 chunks alive
	for _, s := range []id.ID{s0, s1} {
		if err := r.ForgetSnapshot(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	cold := r.Lookup(ids1[0])[0].Pack
	be.packs[cold.ID] = true
	rep, err := r.Prune(ctx, PruneOptions{GraceSet: true})
	if err != nil {
		t.Fatalf("prune beside an archived sparse pack: %v", err)
	}
	if rep.Removed == 0 || len(r.Lookup(ids0[0])) != 0 {
		t.Errorf("prune removed %d packs, blob %s of the forgotten snapshot is at %+v; want its pack removed", rep.Removed, ids0[0].Short(), r.Lookup(ids0[0]))
	}
	if locs := r.Lookup(ids1[0]); len(locs) == 0 || locs[0].Pack.ID != cold.ID {
		t.Errorf("blob %s of the archived pack %s is at %+v; want it left there", ids1[0].Short(), cold.ID.Short(), locs)
	}
}
