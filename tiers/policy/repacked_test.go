package policy_test

import (
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers/policy"
)

// A prune repacks: at the primary, a snapshot's data moves to new packs,
// while a tier that received the snapshot before holds it in the old
// ones (its own index lists them); the tier's own prune does the same the
// other way round. Packs the primary lists for the snapshot are then not
// at the tier, and not copied there; a plan that moves their shards to a
// colder class makes every run fail on objects the tier does not hold,
// and the primary's retention, which waits for every tier, with it.
func TestNoTransitionOfShardsTheTierLacks(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cfg := &policy.Config{Tiers: []policy.Tier{
		{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Monthly: 12}},
		{Name: "cloud", Kind: policy.KindS3, Location: "s3://b/p", Keep: policy.Keep{Monthly: 12},
			Transitions: []policy.Transition{{After: "30d", Class: "STANDARD_IA"}}},
	}}
	sid, oldPack, newPack := id.ID{1}, id.ID{0xa0}, id.ID{0xb0}
	s := policy.Snap{ID: sid, Time: time.Date(2026, 6, 28, 0, 0, 0, 0, time.UTC), Host: "h", Paths: []string{"/"}, Packs: []id.ID{newPack}}
	cat := &policy.Catalog{
		Snaps:     []policy.Snap{s},
		Packs:     map[id.ID]policy.PackMeta{newPack: {Shards: []policy.Shard{{Name: newPack.String() + "-0", Size: 1 << 20}}, Blobs: 1}},
		SnapBytes: map[id.ID]int64{sid: 500},
	}
	cloud := &policy.TierState{
		Snaps:   []policy.Snap{s},
		Shards:  map[string]policy.ShardState{oldPack.String() + "-0": {Size: 1 << 20, Class: "STANDARD"}},
		Packs:   map[id.ID]bool{},
		Indexed: map[id.ID]bool{oldPack: true},
	}
	pl, err := policy.MakePlan(cfg, cat, map[string]*policy.TierState{"cloud": cloud}, now)
	if err != nil {
		t.Fatal(err)
	}
	c := pl.Tiers[1]
	if c.CopyShards != 0 {
		t.Fatalf("plan copies %d shards, want none (the tier holds the snapshot's data in its own packs)", c.CopyShards)
	}
	if len(c.Transitions) != 0 {
		t.Errorf("plan moves shards the tier does not hold and the run does not copy: %+v", c.Transitions)
	}
}
