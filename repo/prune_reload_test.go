package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestIndexReloadBesideSweep: a writer that began after a mark reloads
// its index while that mark is swept. Whatever the order, a blob of a
// swept pack must not count as stored: the writer would deduplicate
// against it and write a snapshot naming data that is gone.
func TestIndexReloadBesideSweep(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	pruner, clock, _ := sweepFixture(t, be)
	hook := &listHook{Backend: be}
	w, err := Open(ctx, hook, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, Now: func() time.Time { return *clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var doomed BlobEntry
	errFound := errors.New("found")
	w.EachBlob(func(p PackInfo, e BlobEntry) error {
		if w.condemned[p.ID] {
			doomed = e
			return errFound
		}
		return nil
	})
	if doomed.ID.IsNull() {
		t.Fatal("fixture: no blob in a condemned pack")
	}
	sess, err := w.BeginSession(ctx, "hv02")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.End(ctx)
	// The sweep runs while the writer reads the index objects and the
	// tombstones again.
	swept := false
	hook.before = func(typ tiers.Type) {
		if typ != tiers.TypeTombstone || swept {
			return
		}
		swept = true
		rep, err := pruner.Prune(ctx, sweepOpts)
		if err != nil || rep.Removed == 0 {
			t.Fatalf("sweep: %+v, %v", rep, err)
		}
	}
	if err := w.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if !swept {
		t.Fatal("fixture: the sweep did not run")
	}
	if len(pruner.Lookup(doomed.ID)) != 0 {
		t.Fatal("fixture: the sweep kept the condemned blob")
	}
	if w.Has(DataBlob, doomed.ID) {
		t.Errorf("blob %s of a swept pack counts as stored: a backup would deduplicate against data that is gone", doomed.ID.Short())
	}
}

// TestLoadIndexFailsWhenObjectsKeepVanishing: an index object that is
// listed but cannot be found on every attempt leaves the index
// incomplete; LoadIndex must say so, not return as if it had loaded it.
func TestLoadIndexFailsWhenObjectsKeepVanishing(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	sweepFixture(t, be)
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeIndex, Err: fmt.Errorf("load: %w", tiers.ErrNotFound)})
	w, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err == nil {
		w.Close()
		t.Fatal("opened with an index whose objects are listed but never found")
	}
	t.Log(err)
}

// TestPruneBesideLoadIndex: a prune computes liveness from the index
// cache while another goroutine of the process reloads the index (a
// backup starting, a check). The reload replaced and unmapped the cache
// under the prune, which read freed memory: a panic, or a fault that
// kills the process.
func TestPruneBesideLoadIndex(t *testing.T) {
	ctx := context.Background()
	r, _ := clockedRepo(t, tierstest.NewMemory())
	rng := rand.New(rand.NewPCG(2, 2))
	for range 5 {
		snap(t, r, rng, 30, nil)
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			if err := r.LoadIndex(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 30 {
		if _, err := r.Prune(ctx, PruneOptions{DryRun: true}); err != nil {
			t.Error(err)
		}
	}
	stop.Store(true)
	<-done
}
