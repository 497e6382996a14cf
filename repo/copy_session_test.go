package repo

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// onSnapshotList is a backend that calls hook, once armed, the first time
// snapshots are listed.
type onSnapshotList struct {
	tiers.Backend
	mu   sync.Mutex
	hook func()
}

func (b *onSnapshotList) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	if t == tiers.TypeSnapshot {
		b.mu.Lock()
		h := b.hook
		b.hook = nil
		b.mu.Unlock()
		if h != nil {
			h()
		}
	}
	return b.Backend.List(ctx, t, fn)
}

// TestCopyBeginsDuringPruneSweep: a copy that announces itself
// after a prune listed the sessions is not seen by that prune, which goes
// on to sweep condemned packs the copy may already have skipped as
// present and then names in a snapshot. Either the copy must learn of the
// prune (and stop) or the prune must not sweep.
func TestCopyBeginsDuringPruneSweep(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	be := &onSnapshotList{Backend: mem}
	pruner, clock, _ := sweepFixture(t, be)
	cp, err := Open(ctx, mem, Options{Password: []byte("pw"), CacheDir: t.TempDir(), Now: func() time.Time { return *clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	var sess *Session
	var beginErr error
	be.mu.Lock()
	// The prune has announced itself and listed the sessions; it lists
	// the snapshots next. The copy begins now.
	be.hook = func() { sess, beginErr = cp.BeginCopySession(ctx, "hv01") }
	be.mu.Unlock()
	rep, err := pruner.Prune(ctx, sweepOpts)
	if err != nil {
		t.Fatal(err)
	}
	if sess != nil {
		defer sess.End(ctx)
	}
	if beginErr == nil && rep.Removed > 0 {
		t.Errorf("a copy announced itself while the prune ran, and the prune swept %d packs the copy may name", rep.Removed)
	}
	if beginErr != nil && !errors.Is(beginErr, ErrPruneRunning) {
		t.Errorf("copy beside a running prune: %v", beginErr)
	}
}
