package policy_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/policy"
)

// cancelAfterSnapshot cancels once the first snapshot object is read.
type cancelAfterSnapshot struct {
	tiers.Backend
	cancel context.CancelFunc
}

func (c cancelAfterSnapshot) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(io.Reader) error) error {
	err := c.Backend.Load(ctx, h, offset, length, fn)
	if h.Type == tiers.TypeSnapshot {
		c.cancel()
	}
	return err
}

// TestInterruptedListIsNoUnreadableSnapshot: a plan interrupted while the
// primary's snapshots are read says so, and does not take the snapshots
// it had no time to read for unreadable ones to check and forget.
func TestInterruptedListIsNoUnreadableSnapshot(t *testing.T) {
	w := newWorld(t)
	src := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	w.day(src, rng)
	w.day(src, rng)
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	r, err := repo.Open(ctx, cancelAfterSnapshot{w.r.Backend(), cancel}, repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: fastKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = policy.CatalogOf(ctx, r)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted plan: %v, want context.Canceled", err)
	}
	if strings.Contains(err.Error(), "forget") || strings.Contains(err.Error(), "could not be read") {
		t.Errorf("interrupted plan: %q, which sends the operator to forget snapshots that are fine", err)
	}
}
