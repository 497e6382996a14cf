package policy_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/policy"
)

// configFlake is a tier backend whose first load of the config fails
// (a storage hiccup), and which records, at the first data object a copy
// stores, how many session objects the tier holds.
type configFlake struct {
	sessionWatch
	failed bool
}

func (c *configFlake) Load(ctx context.Context, h tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	if h.Type == tiers.TypeConfig && !c.failed {
		c.failed = true
		return errors.New("connection reset by peer")
	}
	return c.Backend.Load(ctx, h, off, n, fn)
}

// TestSendConfigErrorNotEmptyTier: a tier whose config cannot be
// read for another reason than its absence does hold the repository: the
// copy must not go ahead unannounced (a prune of the tier would not see
// it), as it did when any config error was taken for an empty tier.
func TestSendConfigErrorNotEmptyTier(t *testing.T) {
	w := newWorld(t)
	src := filepath.Join(t.TempDir(), "vm")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(7, 8))
	w.day(src, rng)
	if _, err := policy.Run(w.ctx, w.cfg, w.r, w.targets, w.clock, nil); err != nil {
		t.Fatal(err)
	}
	bt := w.targets["dr"].(*policy.BackendTarget)
	flaky := &configFlake{sessionWatch: sessionWatch{Backend: bt.Backend}}
	bt.Backend = flaky
	w.clock = w.clock.Add(24 * time.Hour)
	w.day(src, rng)
	_, _, err := bt.Send(w.ctx, w.r.Backend(), nil)
	if !flaky.failed {
		t.Fatal("fixture: the config was not read")
	}
	if err == nil && flaky.sessions == 0 {
		t.Error("the tier's config could not be read and the copy went ahead without announcing itself")
	}
}
