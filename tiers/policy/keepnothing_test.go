package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers/policy"
)

// TestKeepRulesThatKeepNothingOfAGroupAreRefused: a tier whose rules are
// a keep.tags that none of a host's snapshots carries (a typo, a tag that
// host's backups never got) would forget every snapshot of that host it
// holds, the primary's included. The plan is refused and names the group,
// as drpipe forget refuses such rules; a group the tier holds nothing of
// is no reason to refuse.
func TestKeepRulesThatKeepNothingOfAGroupAreRefused(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cat := &policy.Catalog{Packs: map[id.ID]policy.PackMeta{}, SnapBytes: map[id.ID]int64{}}
	for i := 0; i < 4; i++ {
		s := policy.Snap{ID: id.ID{byte(i + 1)}, Time: now.Add(-time.Duration(i+1) * time.Hour), Host: "hv01", Paths: []string{"/vm"}}
		if i >= 2 {
			s.Host = "hv02" // never tagged monthly
		} else {
			s.Tags = []string{"monthly"}
		}
		cat.Snaps = append(cat.Snaps, s)
	}
	tagged := policy.Keep{Tags: []string{"monthly"}}
	for _, tc := range []struct {
		name  string
		tiers []policy.Tier
		state *policy.TierState
		group string // "" when the plan must go ahead
	}{
		{"primary", []policy.Tier{
			{Name: "hot", Kind: policy.KindPrimary, Keep: tagged},
		}, nil, "host=hv02 paths=/vm"},
		{"local tier holding the group", []policy.Tier{
			{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Last: 10}},
			{Name: "nas", Kind: policy.KindLocal, Location: "/nas", Keep: tagged},
		}, &policy.TierState{Snaps: cat.Snaps[2:]}, "host=hv02 paths=/vm"},
		{"local tier holding none of the group", []policy.Tier{
			{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Last: 10}},
			{Name: "nas", Kind: policy.KindLocal, Location: "/nas", Keep: tagged},
		}, &policy.TierState{Snaps: cat.Snaps[:1]}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &policy.Config{Tiers: tc.tiers}
			states := map[string]*policy.TierState{}
			if tc.state != nil {
				states["nas"] = tc.state
			}
			pl, err := policy.MakePlan(cfg, cat, states, now)
			if tc.group == "" {
				if err != nil {
					t.Fatalf("plan refused: %v", err)
				}
				return
			}
			if err == nil {
				for _, tp := range pl.Tiers {
					if len(tp.Forget) > 0 {
						t.Errorf("tier %s forgets %d snapshots, every one it holds of group %q, and keeps %d", tp.Name, len(tp.Forget), tc.group, len(tp.Keep))
					}
				}
				t.Fatal("plan not refused")
			}
			for _, s := range []string{"keep nothing", tc.group, "all 2 snapshots", "keep.tags"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}
