package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers/policy"
)

// S3 cannot copy an object out of GLACIER or DEEP_ARCHIVE without a
// restore (CopyObject answers InvalidObjectState), and moving a storage
// class is such a copy. A plan that moves GLACIER shards on to
// DEEP_ARCHIVE makes every tier run fail for that tier, and with it the
// primary's retention (it waits until every tier succeeded). The plan
// must leave archived shards where they are and say why.
func TestReviewNoTransitionOutOfArchiveClass(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cfg := &policy.Config{Tiers: []policy.Tier{
		{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 3}},
		{Name: "cloud", Kind: policy.KindS3, Location: "s3://b/p", Keep: policy.Keep{Monthly: 12},
			Transitions: []policy.Transition{{After: "30d", Class: "GLACIER"}, {After: "180d", Class: "DEEP_ARCHIVE"}}},
	}}
	cat := &policy.Catalog{Packs: map[id.ID]policy.PackMeta{}, SnapBytes: map[id.ID]int64{}}
	cloud := &policy.TierState{Shards: map[string]policy.ShardState{}}
	sid, pid := id.ID{1}, id.ID{0xcc}
	shard := pid.String() + "-0"
	cat.Packs[pid] = policy.PackMeta{Shards: []policy.Shard{{Name: shard, Size: 1 << 30}}, Blobs: 1}
	s := policy.Snap{ID: sid, Time: time.Date(2026, 1, 28, 0, 0, 0, 0, time.UTC), Host: "h", Paths: []string{"/"}, Packs: []id.ID{pid}}
	cat.Snaps = append(cat.Snaps, s)
	cloud.Snaps = append(cloud.Snaps, s)
	cloud.Shards[shard] = policy.ShardState{Size: 1 << 30, Class: "GLACIER"}
	pl, err := policy.MakePlan(cfg, cat, map[string]*policy.TierState{"cloud": cloud}, now)
	if err != nil {
		t.Fatal(err)
	}
	c := pl.Tiers[1]
	if len(c.Transitions) != 0 {
		t.Errorf("plan moves archived shards by copy, which S3 refuses: %+v", c.Transitions)
	}
	if c.After["GLACIER"] != 1<<30 {
		t.Errorf("stored afterwards %v, want the GiB to stay in GLACIER", c.After)
	}
	if !strings.Contains(strings.Join(c.Notes, "\n"), "lifecycle") {
		t.Errorf("plan notes %q do not say how to move archived data", c.Notes)
	}
}
