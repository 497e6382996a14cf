package policy_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/policy"
)

// TestRunCopiesIntoATierWhoseKeySlotsDoNotOpenYet: a tier that holds
// the repository's config but no key slot the password opens (a first
// copy interrupted after the config, or a slot added at the primary since
// the last copy) is inspected with the primary's key slots, as the copy
// into it is announced: were it taken for unreachable, no tier run would
// ever copy the slots that make it open, and the primary would keep every
// snapshot the tier wants, for good.
func TestRunCopiesIntoATierWhoseKeySlotsDoNotOpenYet(t *testing.T) {
	w := newWorld(t)
	src := filepath.Join(t.TempDir(), "vm")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(11, 12))
	w.day(src, rng)
	// The tier holds the config only, as a copy killed right after it
	// leaves it.
	bt := w.targets["dr"].(*policy.BackendTarget)
	cfg, err := tiers.LoadAll(w.ctx, w.r.Backend(), tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tiers.PutBytes(w.ctx, bt.Backend, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, cfg); err != nil {
		t.Fatal(err)
	}
	if r, err := repo.Open(w.ctx, bt.Backend, w.options()); err == nil {
		r.Close()
		t.Fatal("fixture: the tier opens with its own key slots")
	}
	rep, err := policy.Run(w.ctx, w.cfg, w.r, w.targets, w.clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Tiers {
		if tr.Name == "dr" && (tr.Skipped != "" || tr.Copied == 0) {
			t.Fatalf("tier dr: skipped %q, %d snapshots copied; want the snapshot copied", tr.Skipped, tr.Copied)
		}
	}
	r, err := repo.Open(w.ctx, bt.Backend, w.options())
	if err != nil {
		t.Fatalf("the tier does not open after the run: %v", err)
	}
	defer r.Close()
	sns, err := r.ListSnapshots(w.ctx)
	if err != nil || len(sns) != 1 {
		t.Errorf("tier dr holds %d snapshots (%v), want 1", len(sns), err)
	}
}
