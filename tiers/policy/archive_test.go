package policy_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/policy"
)

// S3 cannot copy an object out of GLACIER or DEEP_ARCHIVE without a
// restore (CopyObject answers InvalidObjectState), and moving a storage
// class is such a copy. A plan that moves GLACIER shards on to
// DEEP_ARCHIVE makes every tier run fail for that tier, and with it the
// primary's retention (it waits until every tier succeeded). The plan
// must leave archived shards where they are and say why.
func TestNoTransitionOutOfArchiveClass(t *testing.T) {
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

// Tree packs (directory listings, content lists) are read by every prune
// (to find what is in use), by plans (snapshots only a tier holds) and
// first by every restore. In an archive class each such read fails until
// a restore completes, so a tier run that forgets snapshots there fails
// (prune refuses) — and the primary's retention with it. Transitions
// must keep tree packs in readable classes while data packs move on.
func TestTreePacksStayReadable(t *testing.T) {
	w := newWorld(t)
	src := filepath.Join(t.TempDir(), "vm")
	os.MkdirAll(src, 0o755)
	w.day(src, rand.New(rand.NewPCG(3, 4)))
	if err := w.r.LoadIndex(w.ctx); err != nil {
		t.Fatal(err)
	}
	cat, err := policy.CatalogOf(w.ctx, w.r)
	if err != nil {
		t.Fatal(err)
	}
	cloud := &policy.TierState{Shards: map[string]policy.ShardState{}, Snaps: cat.Snaps}
	treePack := map[id.ID]bool{}
	w.r.EachBlob(func(p repo.PackInfo, e repo.BlobEntry) error {
		if e.Type == repo.TreeBlob {
			treePack[p.ID] = true
		}
		return nil
	})
	trees := map[string]bool{}
	for pid, pm := range cat.Packs {
		for _, s := range pm.Shards {
			cloud.Shards[s.Name] = policy.ShardState{Size: s.Size, Class: "STANDARD"}
			trees[s.Name] = treePack[pid]
		}
	}
	cfg := &policy.Config{Tiers: []policy.Tier{
		{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 3}},
		{Name: "cloud", Kind: policy.KindS3, Location: "s3://b/p", Keep: policy.Keep{Monthly: 12},
			Transitions: []policy.Transition{{After: "30d", Class: "STANDARD_IA"}, {After: "60d", Class: "DEEP_ARCHIVE"}}},
	}}
	pl, err := policy.MakePlan(cfg, cat, map[string]*policy.TierState{"cloud": cloud}, w.clock.AddDate(0, 0, 90))
	if err != nil {
		t.Fatal(err)
	}
	var nTree, nData int
	for _, isTree := range trees {
		if isTree {
			nTree++
		} else {
			nData++
		}
	}
	if nTree == 0 || nData == 0 {
		t.Fatalf("catalog marks %d shards as tree packs and %d as data packs; want both", nTree, nData)
	}
	got := fmt.Sprint(pl.Tiers[1].Transitions)
	want := fmt.Sprintf("[{STANDARD STANDARD_IA %d", nTree)
	if !strings.HasPrefix(got, want) || !strings.Contains(got, fmt.Sprintf("{STANDARD DEEP_ARCHIVE %d ", nData)) {
		t.Errorf("transitions %s: want the %d tree-pack shards to STANDARD_IA and the %d data shards to DEEP_ARCHIVE", got, nTree, nData)
	}
}

// sessionWatch is a tier backend that records, at the first data object
// a copy stores, how many session objects the tier holds.
type sessionWatch struct {
	tiers.Backend
	once     sync.Once
	sessions int
}

func (s *sessionWatch) Put(ctx context.Context, h tiers.Handle, r io.Reader, size int64) error {
	if h.Type == tiers.TypeData {
		s.once.Do(func() {
			s.Backend.List(ctx, tiers.TypeSession, func(tiers.ObjectInfo) error { s.sessions++; return nil })
		})
	}
	return s.Backend.Put(ctx, h, r, size)
}

// TestSendAnnouncesCopySession: a tier is told of a copy into it (a copy
// session, which blocks its sweeps), when it already holds the repository
// and when it is empty (the first copy stores the config and key slots
// first, which make the tier prunable, and data before the index naming
// it), and the session is gone once the copy is done.
func TestSendAnnouncesCopySession(t *testing.T) {
	w := newWorld(t)
	src := filepath.Join(t.TempDir(), "vm")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(5, 6))
	bt := w.targets["dr"].(*policy.BackendTarget)
	watch := &sessionWatch{Backend: bt.Backend}
	bt.Backend = watch
	for _, run := range []string{"into the empty tier", "into the tier holding the repository"} {
		watch.once, watch.sessions = sync.Once{}, 0
		w.day(src, rng)
		if _, err := policy.Run(w.ctx, w.cfg, w.r, w.targets, w.clock, nil); err != nil {
			t.Fatal(err)
		}
		if watch.sessions != 1 {
			t.Errorf("copy %s: session objects in the tier while the copy stored data: %d, want the copy's own", run, watch.sessions)
		}
		n := 0
		watch.Backend.List(w.ctx, tiers.TypeSession, func(tiers.ObjectInfo) error { n++; return nil })
		if n != 0 {
			t.Errorf("copy %s: %d session objects left in the tier after the run", run, n)
		}
		w.clock = w.clock.Add(24 * time.Hour)
	}
}
