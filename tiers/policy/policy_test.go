package policy_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/policy"
)

var update = flag.Bool("update", false, "rewrite golden files")

var fastKDF = &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

type world struct {
	t       *testing.T
	ctx     context.Context
	clock   time.Time
	r       *repo.Repository
	cfg     *policy.Config
	targets map[string]policy.Target
	dirs    map[string]string
}

func (w *world) open(be tiers.Backend) (*repo.Repository, error) {
	return repo.Open(w.ctx, be, w.options())
}

func (w *world) openReplica(be, src tiers.Backend) (*repo.Repository, error) {
	return repo.OpenReplica(w.ctx, be, src, w.options())
}

func (w *world) options() repo.Options {
	return repo.Options{Password: []byte("pw"), CacheDir: w.t.TempDir(), Now: func() time.Time { return w.clock }}
}

func newWorld(t *testing.T) *world {
	ctx := context.Background()
	w := &world{t: t, ctx: ctx, clock: time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC), dirs: map[string]string{}}
	base := t.TempDir()
	be, err := tiers.NewLocal(filepath.Join(base, "hot"))
	if err != nil {
		t.Fatal(err)
	}
	w.r, err = repo.Init(ctx, be, repo.InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: fastKDF, Now: func() time.Time { return w.clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.r.Close() })
	w.cfg = &policy.Config{Tiers: []policy.Tier{
		{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 7}},
		{Name: "dr", Kind: policy.KindLocal, Location: "dr", Keep: policy.Keep{Daily: 14, Weekly: 6}},
		{Name: "archive", Kind: policy.KindLocal, Location: "archive", Keep: policy.Keep{Weekly: 3, Monthly: 12}},
	}}
	w.targets = map[string]policy.Target{"hot": &policy.PrimaryTarget{Repo: w.r, Prune: &repo.PruneOptions{GraceSet: true, ClockSkewSet: true}}}
	for _, n := range []string{"dr", "archive"} {
		tb, err := tiers.NewLocal(filepath.Join(base, n))
		if err != nil {
			t.Fatal(err)
		}
		w.dirs[n] = filepath.Join(base, n)
		w.targets[n] = &policy.BackendTarget{Backend: tb, Open: w.open, OpenReplica: w.openReplica, Primary: be, Prune: &repo.PruneOptions{GraceSet: true, ClockSkewSet: true}}
	}
	return w
}

// day changes the source and backs it up at the simulated time.
func (w *world) day(src string, rng *rand.Rand) *repo.Snapshot {
	w.t.Helper()
	name := filepath.Join(src, fmt.Sprintf("f%d.bin", rng.IntN(6)))
	os.WriteFile(name, sample.Binary(rng, 300<<10), 0o644)
	res, err := pipeline.Backup(w.ctx, w.r, pipeline.BackupOptions{Host: "hv01", Paths: []string{src}, Time: w.clock, Workers: 1})
	if err != nil {
		w.t.Fatal(err)
	}
	return res.Snapshot
}

func planText(t *testing.T, pl *policy.Plan) string {
	var b bytes.Buffer
	pl.WriteText(&b, "USD")
	return b.String()
}

// TestScriptedMonth backs up daily for a month, running the tiering each
// day; the plan of the last day is compared with a golden file, and a
// second run right after the last one must do nothing.
func TestScriptedMonth(t *testing.T) {
	w := newWorld(t)
	src := filepath.Join(t.TempDir(), "vm")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 6; i++ {
		os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d.bin", i)), sample.Binary(rng, 300<<10), 0o644)
	}
	var lastPlan *policy.Plan
	for d := 0; d < 31; d++ {
		w.day(src, rng)
		if d == 30 {
			pl, err := policy.PlanFor(w.ctx, w.cfg, w.r, w.targets, w.clock)
			if err != nil {
				t.Fatal(err)
			}
			lastPlan = pl
		}
		if _, err := policy.Run(w.ctx, w.cfg, w.r, w.targets, w.clock, nil); err != nil {
			t.Fatalf("day %d: %v", d+1, err)
		}
		w.clock = w.clock.Add(24 * time.Hour)
	}
	got := planText(t, lastPlan)
	golden := filepath.Join("testdata", "month.golden")
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("plan for the last day differs from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
	}

	// Idempotent: the same instant again plans and sends nothing.
	w.clock = w.clock.Add(-24 * time.Hour)
	pl, err := policy.PlanFor(w.ctx, w.cfg, w.r, w.targets, w.clock)
	if err != nil {
		t.Fatal(err)
	}
	if !pl.Empty() {
		t.Errorf("plan right after a run is not empty:\n%s", planText(t, pl))
	}
	rep, err := policy.Run(w.ctx, w.cfg, w.r, w.targets, w.clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Tiers {
		if tr.Objects != 0 || tr.Forgotten != 0 || tr.Copied != 0 {
			t.Errorf("second run changed tier %s: %+v", tr.Name, tr)
		}
	}
	// Every tier's copy is a consistent repository holding what the
	// policy keeps.
	for _, n := range []string{"dr", "archive"} {
		be, _ := tiers.OpenLocal(w.dirs[n])
		r, err := w.open(be)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := r.Check(w.ctx, repo.CheckOptions{ReadData: true}); err != nil {
			t.Errorf("tier %s: check: %v %v", n, err, c.Errors)
		}
		sns, _ := r.ListSnapshots(w.ctx)
		var kept int
		for _, tp := range pl.Tiers {
			if tp.Name == n {
				kept = len(tp.Keep)
			}
		}
		if len(sns) != kept {
			t.Errorf("tier %s holds %d snapshots, policy keeps %d", n, len(sns), kept)
		}
		r.Close()
	}
}

// TestTransitionsAndCost plans an S3 tier with storage-class transitions
// from a synthetic state.
func TestTransitionsAndCost(t *testing.T) {
	now := time.Date(2026, 6, 30, 12, 0, 0, 0, time.UTC)
	cfg := &policy.Config{Tiers: []policy.Tier{
		{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 3}},
		{Name: "cloud", Kind: policy.KindS3, Location: "s3://b/p", Keep: policy.Keep{Monthly: 12},
			Transitions: []policy.Transition{{After: "30d", Class: "STANDARD_IA"}, {After: "90d", Class: "DEEP_ARCHIVE"}}},
	}}
	cat := &policy.Catalog{Packs: map[id.ID]policy.PackMeta{}, SnapBytes: map[id.ID]int64{}}
	cloud := &policy.TierState{Shards: map[string]policy.ShardState{}}
	for m := 0; m < 6; m++ {
		sid := id.ID{byte(m + 1)}
		pid := id.ID{0xaa, byte(m)}
		shard := pid.String() + "-0"
		cat.Packs[pid] = policy.PackMeta{Shards: []policy.Shard{{Name: shard, Size: 1 << 30}}, Blobs: 10}
		s := policy.Snap{ID: sid, Time: time.Date(2026, time.Month(1+m), 28, 0, 0, 0, 0, time.UTC), Host: "h", Paths: []string{"/"}, Packs: []id.ID{pid}}
		cat.Snaps = append(cat.Snaps, s)
		cat.SnapBytes[sid] = 500
		if m < 5 {
			cloud.Snaps = append(cloud.Snaps, s)
			cloud.Shards[shard] = policy.ShardState{Size: 1 << 30, Class: "STANDARD"}
		}
	}
	pl, err := policy.MakePlan(cfg, cat, map[string]*policy.TierState{"cloud": cloud}, now)
	if err != nil {
		t.Fatal(err)
	}
	c := pl.Tiers[1]
	if len(c.Copy) != 1 || c.CopyShards != 1 {
		t.Errorf("copy %d snapshots %d shards, want the June one", len(c.Copy), c.CopyShards)
	}
	// Jan..Mar (>90 days) → DEEP_ARCHIVE; Apr, May (>30 days) → STANDARD_IA; June stays.
	got := fmt.Sprint(c.Transitions)
	want := "[{STANDARD STANDARD_IA 2 2147483648} {STANDARD DEEP_ARCHIVE 3 3221225472}]"
	if got != want {
		t.Errorf("transitions %s, want %s", got, want)
	}
	wantCost := 1*0.023 + 2*0.0125 + 3*0.00099
	if d := c.MonthlyCost - wantCost; d > 1e-9 || d < -1e-9 {
		t.Errorf("monthly cost %.5f, want %.5f", c.MonthlyCost, wantCost)
	}
	var b bytes.Buffer
	pl.WriteText(&b, "USD")
	for _, s := range []string{"transition 3 shards", "DEEP_ARCHIVE", "estimated 0.05 USD per month"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("plan text lacks %q:\n%s", s, b.String())
		}
	}
}

// TestPriceKeysAnyCase: a config file's map keys arrive lowercased
// ("deep_archive"); the prices set there must still be the ones used.
func TestPriceKeysAnyCase(t *testing.T) {
	now := time.Date(2026, 6, 30, 12, 0, 0, 0, time.UTC)
	cfg := &policy.Config{
		Prices: map[string]float64{"standard": 1, "Deep_Archive": 0.5, "SITE": 0.25},
		Tiers: []policy.Tier{
			{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 3}},
			{Name: "cloud", Kind: policy.KindS3, Location: "s3://b/p", Keep: policy.Keep{Monthly: 12},
				Transitions: []policy.Transition{{After: "90d", Class: "DEEP_ARCHIVE"}}},
			{Name: "dr", Kind: policy.KindSite, Location: "dr:7443", Keep: policy.Keep{Monthly: 12}},
		},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cat := &policy.Catalog{Packs: map[id.ID]policy.PackMeta{}, SnapBytes: map[id.ID]int64{}}
	cloud := &policy.TierState{Shards: map[string]policy.ShardState{}}
	dr := &policy.TierState{Shards: map[string]policy.ShardState{}}
	for m, month := range []time.Month{time.January, time.June} {
		sid, pid := id.ID{byte(m + 1)}, id.ID{0xbb, byte(m)}
		shard := pid.String() + "-0"
		cat.Packs[pid] = policy.PackMeta{Shards: []policy.Shard{{Name: shard, Size: 1 << 30}}, Blobs: 1}
		s := policy.Snap{ID: sid, Time: time.Date(2026, month, 28, 0, 0, 0, 0, time.UTC), Host: "h", Paths: []string{"/"}, Packs: []id.ID{pid}}
		cat.Snaps = append(cat.Snaps, s)
		cat.SnapBytes[sid] = 1
		for _, st := range []*policy.TierState{cloud, dr} {
			st.Snaps = append(st.Snaps, s)
			st.Shards[shard] = policy.ShardState{Size: 1 << 30, Class: "STANDARD"}
		}
	}
	pl, err := policy.MakePlan(cfg, cat, map[string]*policy.TierState{"cloud": cloud, "dr": dr}, now)
	if err != nil {
		t.Fatal(err)
	}
	// January's GiB is past 90 days (DEEP_ARCHIVE at 0.5), June's stays
	// STANDARD (1); the site holds both GiB at 0.25.
	for i, want := range map[int]float64{1: 1.5, 2: 0.5} {
		if got := pl.Tiers[i].MonthlyCost; got < want-1e-9 || got > want+1e-9 {
			t.Errorf("tier %s: monthly cost %.4f, want %.4f (configured prices, whatever their case)", pl.Tiers[i].Name, got, want)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  policy.Config
		want string
	}{
		{"no primary", policy.Config{Tiers: []policy.Tier{{Name: "a", Kind: policy.KindLocal, Location: "/x", Keep: policy.Keep{Daily: 1}}}}, "exactly one tier of kind primary"},
		{"no rule", policy.Config{Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary}}}, "no keep rule"},
		{"bad kind", policy.Config{Tiers: []policy.Tier{{Name: "h", Kind: "floppy", Keep: policy.Keep{Daily: 1}}}}, "unknown kind"},
		{"transition order", policy.Config{Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 1}},
			{Name: "c", Kind: policy.KindS3, Location: "s3://b", Keep: policy.Keep{Daily: 1}, Transitions: []policy.Transition{{After: "90d", Class: "GLACIER"}, {After: "30d", Class: "DEEP_ARCHIVE"}}}}}, "not later"},
		{"first transition at 0", policy.Config{Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 1}},
			{Name: "c", Kind: policy.KindS3, Location: "s3://b", Keep: policy.Keep{Daily: 1}, Transitions: []policy.Transition{{After: "0d", Class: "GLACIER"}}}}}, "comes after some time"},
		{"colder", policy.Config{Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 1}},
			{Name: "c", Kind: policy.KindS3, Location: "s3://b", Keep: policy.Keep{Daily: 1}, Transitions: []policy.Transition{{After: "30d", Class: "STANDARD"}}}}}, "not colder"},
		{"archive class for new data", policy.Config{Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 1}},
			{Name: "c", Kind: policy.KindS3, Location: "s3://b", Keep: policy.Keep{Daily: 1}, StorageClass: "DEEP_ARCHIVE"}}}, "transitions: [{after: 1d, class: DEEP_ARCHIVE}]"},
		{"storage class of a directory", policy.Config{Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 1}},
			{Name: "nas", Kind: policy.KindLocal, Location: "/x", Keep: policy.Keep{Daily: 1}, StorageClass: "STANDARD_IA"}}}, "storage_class is only for s3 tiers"},
		{"tape needs pool", policy.Config{Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 1}}, {Name: "t", Kind: policy.KindTape, Keep: policy.Keep{Daily: 1}}}}, "library and pool"},
		{"unknown price key", policy.Config{Prices: map[string]float64{"glacier_deep": 0.001}, Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 1}}}}, `unknown key "glacier_deep"`},
		{"negative price", policy.Config{Prices: map[string]float64{"site": -1}, Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 1}}}}, "negative price"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// What the archive-class refusal suggests is valid.
	ok := policy.Config{Tiers: []policy.Tier{{Name: "h", Kind: policy.KindPrimary, Keep: policy.Keep{Daily: 1}},
		{Name: "c", Kind: policy.KindS3, Location: "s3://b", Keep: policy.Keep{Daily: 1}, StorageClass: "STANDARD", Transitions: []policy.Transition{{After: "1d", Class: "DEEP_ARCHIVE"}}}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("the suggested transition: %v", err)
	}
}

// TestRunHealsPacksATierLost: a shard that a tier lost after the copy of
// its snapshot is copied again by the next run while the primary still
// has it, so the primary's retention never leaves the tier's snapshot
// without its data.
func TestRunHealsPacksATierLost(t *testing.T) {
	w := newWorld(t)
	src := filepath.Join(t.TempDir(), "vm")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(3, 4))
	w.day(src, rng)
	if _, err := policy.Run(w.ctx, w.cfg, w.r, w.targets, w.clock, nil); err != nil {
		t.Fatal(err)
	}
	// The dr tier loses one data shard.
	var lost string
	filepath.WalkDir(filepath.Join(w.dirs["dr"], "data"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && lost == "" {
			lost = p
		}
		return nil
	})
	if lost == "" {
		t.Fatal("the dr tier holds no data shard")
	}
	if err := os.Remove(lost); err != nil {
		t.Fatal(err)
	}
	pl, err := policy.PlanFor(w.ctx, w.cfg, w.r, w.targets, w.clock)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range pl.Tiers {
		if tp.Name == "dr" && tp.CopyShards != 1 {
			t.Errorf("plan for dr copies %d shards, want the one it lost:\n%s", tp.CopyShards, planText(t, pl))
		}
	}
	if _, err := policy.Run(w.ctx, w.cfg, w.r, w.targets, w.clock, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lost); err != nil {
		t.Errorf("the shard the dr tier lost was not copied again: %v", err)
	}
	be, _ := tiers.OpenLocal(w.dirs["dr"])
	r, err := w.open(be)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if c, err := r.Check(w.ctx, repo.CheckOptions{ReadData: true}); err != nil || len(c.Damaged) > 0 {
		t.Errorf("dr tier after the run: %v %+v", err, c.Damaged)
	}
}

// TestPlanSaysThePrimaryKeepsWhileATierIsUnreachable: tier run applies
// the primary's retention only once every tier got its copies, so while
// one cannot be inspected the dry run must not present the primary's
// forgets as what the run will do.
func TestPlanSaysThePrimaryKeepsWhileATierIsUnreachable(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cfg := &policy.Config{Tiers: []policy.Tier{
		{Name: "hot", Kind: policy.KindPrimary, Keep: policy.Keep{Last: 1}},
		{Name: "nas", Kind: policy.KindLocal, Location: "/nas", Keep: policy.Keep{Last: 5}},
	}}
	cat := &policy.Catalog{Packs: map[id.ID]policy.PackMeta{}, SnapBytes: map[id.ID]int64{}}
	for i := 0; i < 2; i++ {
		cat.Snaps = append(cat.Snaps, policy.Snap{ID: id.ID{byte(i + 1)}, Time: now.Add(-time.Duration(i+1) * time.Hour), Host: "h", Paths: []string{"/"}})
	}
	pl, err := policy.MakePlan(cfg, cat, map[string]*policy.TierState{"nas": {Unreachable: "directory does not exist"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	hot := pl.Tiers[0]
	if len(hot.Forget) != 1 {
		t.Fatalf("primary forgets %d snapshots, want the one its rules drop", len(hot.Forget))
	}
	if !strings.Contains(strings.Join(hot.Notes, "\n"), "nas") {
		t.Errorf("plan of the primary does not say that tier run keeps its snapshots while tier nas is unreachable: notes %q", hot.Notes)
	}
}
