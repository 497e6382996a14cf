package policy_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/tiers/policy"
)

// TestUnreadableSnapshotStopsThePlanNamingIt: a damaged snapshot object on
// the primary stops the planning (the rest would count its data as
// unneeded), and the error names that snapshot and says how to get past
// it, as drpipe forget's does.
func TestUnreadableSnapshotStopsThePlanNamingIt(t *testing.T) {
	w := newWorld(t)
	src := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	w.day(src, rng)
	bad := w.day(src, rng)
	p := filepath.Join(w.r.Backend().Location(), "snapshots", bad.ID().String())
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := policy.CatalogOf(w.ctx, w.r)
	if err == nil {
		t.Fatal("planning went ahead without the damaged snapshot")
	}
	for _, s := range []string{bad.ID().String(), "drpipe forget --repo R ID", "drpipe check"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}
