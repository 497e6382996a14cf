package policy_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/policy"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestRunPrunesATierThatKeepsItsCopySession: in a tier that keeps the
// session objects (object lock), the copy's announcement outlives the
// copy. The prune that follows in the same tier run must not wait for
// that copy, which has ended: it did, and since a copy session blocks
// every sweep, a tier receiving a copy on every run was never swept and
// kept the packs of every snapshot it forgot.
func TestRunPrunesATierThatKeepsItsCopySession(t *testing.T) {
	count := func(retain bool) int {
		w := newWorld(t)
		w.cfg = &policy.Config{Tiers: []policy.Tier{
			{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 3}},
			{Name: "dr", Kind: policy.KindLocal, Location: "dr", Keep: policy.Keep{Daily: 1}},
		}}
		mem := tierstest.NewMemory()
		mem.SetClock(func() time.Time { return w.clock })
		bt := w.targets["dr"].(*policy.BackendTarget)
		bt.Backend = mem
		if retain {
			bt.Backend = tierstest.RetainedSessions{Backend: mem}
		}
		src := filepath.Join(t.TempDir(), "vm")
		os.MkdirAll(src, 0o755)
		rng := rand.New(rand.NewPCG(21, 22))
		for d := 0; d < 4; d++ {
			w.day(src, rng)
			if _, err := policy.Run(w.ctx, w.cfg, w.r, w.targets, w.clock, nil); err != nil {
				t.Fatal(err)
			}
			w.clock = w.clock.Add(24 * time.Hour)
		}
		n := 0
		mem.List(w.ctx, tiers.TypeData, func(tiers.ObjectInfo) error { n++; return nil })
		if retain {
			s := 0
			mem.List(w.ctx, tiers.TypeSession, func(tiers.ObjectInfo) error { s++; return nil })
			if s == 0 {
				t.Fatal("fixture: no session object was kept")
			}
		}
		return n
	}
	removed, kept := count(false), count(true)
	if kept != removed {
		t.Errorf("tier keeping its session objects holds %d data objects, one that removes them %d: its prunes waited for copies that had ended", kept, removed)
	}
}
