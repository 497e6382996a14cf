package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestLapsedWriterIndexesSweptPacks: a backup is suspended after
// uploading packs but before indexing them. A prune takes its session for
// a crashed one and sweeps those packs as orphans. When the backup
// resumes it must not write an index object naming them: every other
// writer would deduplicate against blobs that are gone, and their
// snapshots would reference missing data.
func TestLapsedWriterIndexesSweptPacks(t *testing.T) {
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
	w.uploads.wait(ctx) // full packs are durable, not indexed yet
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

// TestSweepBesideWriterClockOff: a running backup on a host whose clock
// is off from the pruning host's by more than the tolerance, deduplicating
// against packs a prune condemns just after it started.
//
//   - Ahead (ten minutes, more than ClockSkew): its session's start time
//     reads later than the tombstone's time plus the skew, so the sweep
//     took it for a backup that knew the tombstone and removed the packs.
//     A record refreshed "in the future" shows the skew: the sweep must
//     wait and say why.
//   - Behind (by more than SessionTTL+ClockSkew): its refresh times look
//     like a crashed writer's, so prune removed its session and swept. The
//     storage's times of its session object advance with every refresh:
//     prune must take it for live.
//
// Once the writer stops refreshing (it crashed), its session ages out by
// both clocks and the sweep goes ahead.
func TestSweepBesideWriterClockOff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset time.Duration
		copy   bool // a copy into the repository, not a backup
	}{
		{"ahead", 10 * time.Minute, false},
		{"behind", -(SessionTTL + ClockSkew + 20*time.Minute), false},
		{"ahead", 10 * time.Minute, true},
	} {
		label := "backup " + tc.name
		if tc.copy {
			label = "copy " + tc.name
		}
		t.Run(label, func(t *testing.T) {
			ctx := context.Background()
			be := tierstest.NewMemory()
			pruner, clock := clockedRepo(t, be)
			rng := rand.New(rand.NewPCG(22, 22))
			var plain [][]byte
			for i := 0; i < 40; i++ {
				plain = append(plain, randBytes(rng, 30000))
			}
			s1 := snapOf(t, pruner, plain)
			snapOf(t, pruner, [][]byte{randBytes(rng, 30000)})
			if err := pruner.ForgetSnapshot(ctx, s1); err != nil {
				t.Fatal(err)
			}

			w, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), Now: func() time.Time { return clock.Add(tc.offset) }})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			begin, kind := w.BeginSession, "backup on hv02"
			if tc.copy {
				begin, kind = w.BeginCopySession, "copy into this repository from hv02"
			}
			sess, err := begin(ctx, "hv02")
			if err != nil {
				t.Fatal(err)
			}
			defer sess.End(ctx)
			if err := w.LoadIndex(ctx); err != nil {
				t.Fatal(err)
			}
			if !w.Has(DataBlob, w.BlobID(plain[0])) {
				t.Fatal("fixture: the writer does not deduplicate against the forgotten snapshot's blobs")
			}

			*clock = clock.Add(3 * time.Minute)
			if rep, err := pruner.Prune(ctx, sweepOpts); err != nil || rep.Condemned == 0 {
				t.Fatalf("mark: %+v, %v", rep, err)
			}
			*clock = clock.Add(sweepOpts.Grace + time.Minute)
			sess.rec.Refreshed = w.now().UTC() // the writer keeps its session fresh, by its clock
			if err := sess.put(ctx); err != nil {
				t.Fatal(err)
			}
			rep, err := pruner.Prune(ctx, sweepOpts)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("waiting for: %q", rep.WaitingFor)
			if rep.Removed != 0 {
				t.Fatalf("swept %d packs beside a running backup that may use them (its clock is off by %s)", rep.Removed, tc.offset)
			}
			if rep.Postponed == 0 {
				t.Fatalf("sweep neither removed nor postponed anything: %+v", rep)
			}
			if why := strings.Join(rep.WaitingFor, "; "); !strings.Contains(why, tc.name) || !strings.Contains(why, "NTP") || !strings.Contains(why, kind) {
				t.Errorf("the sweep waits without saying that the clock of the %s is %s: %s", kind, tc.name, why)
			}
			if _, err := be.Stat(ctx, sess.h); err != nil {
				t.Errorf("the running backup's session object was removed as stale: %v", err)
			}

			*clock = clock.Add(max(tc.offset, 0) + SessionTTL + ClockSkew + time.Minute)
			rep, err = pruner.Prune(ctx, sweepOpts)
			if err != nil || rep.Removed == 0 {
				t.Fatalf("sweep after the writer stopped refreshing: %+v, %v", rep, err)
			}
		})
	}
}

// TestCopySessionBlocksSweep: a copy into this repository skips the
// packs it already holds, condemned ones too, and then writes snapshots
// naming them, so its session blocks the sweep even when it began after
// the packs were condemned (a backup's does not: a backup that began
// then does not deduplicate against them).
func TestCopySessionBlocksSweep(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	pruner, clock := clockedRepo(t, be)
	rng := rand.New(rand.NewPCG(23, 23))
	s1 := snapOf(t, pruner, [][]byte{randBytes(rng, 30000), randBytes(rng, 30000)})
	snapOf(t, pruner, [][]byte{randBytes(rng, 30000)})
	if err := pruner.ForgetSnapshot(ctx, s1); err != nil {
		t.Fatal(err)
	}
	if rep, err := pruner.Prune(ctx, sweepOpts); err != nil || rep.Condemned == 0 {
		t.Fatalf("mark: %+v, %v", rep, err)
	}
	*clock = clock.Add(sweepOpts.Grace + time.Minute)
	cp, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), Now: func() time.Time { return *clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	sess, err := cp.BeginCopySession(ctx, "hv01")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := pruner.Prune(ctx, sweepOpts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 0 || rep.Postponed == 0 || !strings.Contains(strings.Join(rep.WaitingFor, "; "), "copy into this repository") {
		t.Errorf("sweep beside a copy that began after the mark: removed %d, postponed %d, waiting for %q", rep.Removed, rep.Postponed, rep.WaitingFor)
	}
	if err := sess.End(ctx); err != nil {
		t.Fatal(err)
	}
	if rep, err := pruner.Prune(ctx, sweepOpts); err != nil || rep.Removed == 0 {
		t.Errorf("sweep once the copy ended: %+v, %v", rep, err)
	}
}

// loadHook runs after each Load.
type loadHook struct {
	tiers.Backend
	after func(h tiers.Handle)
}

func (b *loadHook) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	err := b.Backend.Load(ctx, h, offset, length, fn)
	if f := b.after; f != nil {
		f(h)
	}
	return err
}

// TestPruneLapseDuringIndexRewrite: a prune is suspended while it rewrites
// the index, after reading an index object and before storing its
// replacement. Another prune takes it for a crashed one, condemns and
// sweeps packs that object lists and rewrites it. The first prune must
// stop when it resumes: its replacement, made from what it read before,
// would name packs whose shards are gone, and every backup would then
// deduplicate against them.
func TestPruneLapseDuringIndexRewrite(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	hook := &loadHook{Backend: mem}
	a, clock := clockedRepo(t, hook)
	mem.SetClock(func() time.Time { return *clock })
	rng := rand.New(rand.NewPCG(41, 41))
	var trees []id.ID
	for _, n := range []int{35, 35, 5} { // three files' packs in one index object
		node := &Node{Name: "f", Type: NodeFile}
		var ext []Extent
		for i := 0; i < n; i++ {
			b := randBytes(rng, 30000)
			x, _, err := a.SaveBlob(ctx, DataBlob, b, id.ID{})
			if err != nil {
				t.Fatal(err)
			}
			ext = append(ext, Extent{ID: x, Len: int64(len(b))})
			node.Size += int64(len(b))
		}
		if err := a.SetContent(ctx, node, ext); err != nil {
			t.Fatal(err)
		}
		tr, err := a.SaveTree(ctx, &Tree{Nodes: []*Node{node}})
		if err != nil {
			t.Fatal(err)
		}
		trees = append(trees, tr)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var sids []id.ID
	for _, tr := range trees {
		s, err := a.SaveSnapshot(ctx, &Snapshot{Tree: tr, Host: "h", Time: *clock})
		if err != nil {
			t.Fatal(err)
		}
		sids = append(sids, s)
	}
	if err := a.ForgetSnapshot(ctx, sids[0]); err != nil {
		t.Fatal(err)
	}
	if rep, err := a.Prune(ctx, sweepOpts); err != nil || rep.Condemned == 0 {
		t.Fatalf("mark: %+v %v", rep, err)
	}
	*clock = clock.Add(2 * time.Hour)
	if err := a.ForgetSnapshot(ctx, sids[1]); err != nil {
		t.Fatal(err)
	}
	b, err := Open(ctx, mem, Options{Password: []byte("pw"), CacheDir: t.TempDir(), Now: func() time.Time { return *clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	var errB error
	ranB := false
	armed := false
	hook.after = func(h tiers.Handle) {
		switch {
		case h.Type == tiers.TypeTombstone:
			armed = true // A's sweep follows; it reads the index objects to rewrite them
		case h.Type == tiers.TypeIndex && armed && !ranB:
			ranB = true
			*clock = clock.Add(SessionTTL + ClockSkew + time.Minute) // A is suspended
			var rep *PruneReport
			rep, errB = b.Prune(ctx, PruneOptions{GraceSet: true, RepackBelow: -1, RepackBelowSet: true})
			if errB == nil && rep.Removed == 0 {
				errB = fmt.Errorf("removed nothing: %+v", rep)
			}
		}
	}
	_, errA := a.Prune(ctx, sweepOpts)
	hook.after = nil
	if !ranB {
		t.Fatal("fixture: prune A did not rewrite the index")
	}
	if errB != nil {
		t.Fatalf("fixture: prune B beside the suspended prune: %v", errB)
	}
	t.Logf("prune A after its suspension: %v", errA)

	shards := map[id.ID]bool{}
	mem.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		if pid, _, err := erasure.ParseShardName(oi.Handle.Name); err == nil {
			shards[pid] = true
		}
		return nil
	})
	var ixs []id.ID
	mem.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error {
		x, _ := id.Parse(oi.Handle.Name)
		ixs = append(ixs, x)
		return nil
	})
	for _, x := range ixs {
		f, err := b.LoadIndexFile(ctx, x)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Packs {
			if !shards[p.ID] {
				t.Errorf("index object %s names pack %s, whose shards a prune removed: backups deduplicate against its blobs", x.Short(), p.ID.Short())
			}
		}
	}
	if !errors.Is(errA, ErrPruneUnsafe) || !strings.Contains(errA.Error(), "lapsed") {
		t.Errorf("prune resumed after its session lapsed: %v, want it to stop", errA)
	}
}
