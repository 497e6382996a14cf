package policy_test

import (
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers/policy"
)

// TestTapeOnlySnapshotsGroupedAsRecorded: a tape pool lists its sets'
// snapshots by id and UTC time only. One the primary has forgotten since
// belongs to the group, and the periods, its host recorded (which a bucket
// holding it knows): it is the group's oldest, so the primary's oldest
// snapshot, neither the newest of its month nor the group's oldest, is
// not written to a new tape set.
func TestTapeOnlySnapshotsGroupedAsRecorded(t *testing.T) {
	zone := time.FixedZone("CEST", 2*3600)
	now := time.Date(2026, 2, 3, 12, 0, 0, 0, zone)
	cfg := &policy.Config{Tiers: []policy.Tier{
		{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Last: 2}},
		{Name: "cloud", Kind: policy.KindS3, Location: "s3://b/p", Keep: policy.Keep{Monthly: 24}},
		{Name: "vault", Kind: policy.KindTape, Library: "/lib", Pool: "monthly", Keep: policy.Keep{Monthly: 12}},
	}}
	snap := func(b byte, t time.Time) policy.Snap {
		return policy.Snap{ID: id.ID{b}, Time: t, Host: "hv01", Paths: []string{"/vm"}}
	}
	jan := snap(1, time.Date(2026, 1, 31, 1, 0, 0, 0, zone)) // forgotten at the primary
	feb1 := snap(2, time.Date(2026, 2, 1, 1, 0, 0, 0, zone))
	feb2 := snap(3, time.Date(2026, 2, 2, 1, 0, 0, 0, zone))
	cat := &policy.Catalog{Snaps: []policy.Snap{feb1, feb2}, Packs: map[id.ID]policy.PackMeta{}, SnapBytes: map[id.ID]int64{}}
	states := map[string]*policy.TierState{
		// A bucket reads the snapshots only it holds with the key.
		"cloud": {Snaps: []policy.Snap{jan, feb2}, Indexed: map[id.ID]bool{}},
		// A tape pool knows what the primary no longer holds by id and
		// UTC time only.
		"vault": {Snaps: []policy.Snap{{ID: jan.ID, Time: jan.Time.UTC()}, feb2}, Packs: map[id.ID]bool{}},
	}
	pl, err := policy.MakePlan(cfg, cat, states, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range pl.Tiers {
		if tp.Name != "vault" {
			continue
		}
		if len(tp.Copy) != 0 {
			t.Errorf("tape pool copies %v, want nothing: it holds January's and February's newest", tp.Copy)
		}
		if len(tp.Keep) != 2 {
			t.Errorf("tape pool keeps %v, want January's and February's newest", tp.Keep)
		}
	}
}
