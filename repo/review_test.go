package repo

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestReviewLapsedWriterIndexesSweptPacks: a backup is suspended after
// uploading packs but before indexing them. A prune takes its session for
// a crashed one and sweeps those packs as orphans. When the backup
// resumes it must not write an index object naming them: every other
// writer would deduplicate against blobs that are gone, and their
// snapshots would reference missing data.
func TestReviewLapsedWriterIndexesSweptPacks(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	pruner, clock := clockedRepo(t, be)
	rng := rand.New(rand.NewPCG(21, 21))
	snapOf(t, pruner, [][]byte{randBytes(rng, 30000)})

	w, sess := openWriter(t, be, clock)
	for i := 0; i < 80; i++ {
		if _, _, err := w.SaveBlob(ctx, DataBlob, randBytes(rng, 30000), id.ID{}); err != nil {
			t.Fatal(err)
		}
	}
	w.uploadWG.Wait() // full packs are durable, not indexed yet
	if err := w.firstUploadErr(); err != nil {
		t.Fatal(err)
	}
	if len(w.unindexed) == 0 {
		t.Fatal("fixture: no durable unindexed pack")
	}

	// The writer is suspended; a prune sees its session go stale and
	// sweeps its packs (grace 0).
	*clock = clock.Add(SessionTTL + ClockSkew + time.Minute)
	rep, err := pruner.Prune(ctx, PruneOptions{GraceSet: true, RepackBelow: -1, RepackBelowSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed == 0 {
		t.Fatalf("fixture: prune removed nothing: %+v", rep)
	}

	// The writer resumes and finishes.
	ferr := w.Flush(ctx)
	t.Logf("flush after the lapse: %v", ferr)
	if sess.Check() == nil {
		t.Fatal("fixture: session did not lapse")
	}
	shards := map[id.ID]bool{}
	be.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		if pid, _, err := erasure.ParseShardName(oi.Handle.Name); err == nil {
			shards[pid] = true
		}
		return nil
	})
	var ixs []id.ID
	be.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error {
		x, _ := id.Parse(oi.Handle.Name)
		ixs = append(ixs, x)
		return nil
	})
	for _, x := range ixs {
		f, err := pruner.LoadIndexFile(ctx, x)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Packs {
			if !shards[p.ID] {
				t.Errorf("index object %s names pack %s, whose shards a prune removed: other backups deduplicate against its blobs", x.Short(), p.ID.Short())
			}
		}
	}
	if ferr == nil {
		t.Error("Flush after a lapsed session succeeded")
	}
}
