package transport

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

func TestReplicateRoundTripAndIncremental(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 60, 3<<20)
	p.backup("hv02", 30, 2<<20)
	st := newSite(t, "")

	rep, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{Streams: 6, Connections: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := objects(t, p.dir)
	got := objects(t, st.dir)
	if len(got) != len(want) {
		t.Fatalf("site holds %d objects, primary %d", len(got), len(want))
	}
	for h, n := range want {
		if got[h] != n {
			t.Errorf("%s: site has %d bytes, primary %d", h, got[h], n)
		}
	}
	if rep.SentTotal.Objects != int64(len(want)) {
		t.Errorf("report says %d objects sent, want %d", rep.SentTotal.Objects, len(want))
	}

	// The site repository is a normal repository: open, check, restore.
	sr := openSiteRepo(t, st.dir)
	if crep, err := sr.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check of the site repository: %v %+v", err, crep)
	}
	sn, err := sr.FindSnapshot(ctx, "latest", "hv01")
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if _, err := pipeline.Restore(ctx, sr, sn, pipeline.RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, filepath.Join(p.src, "hv01"), filepath.Join(target, p.src, "hv01"))

	// Nothing new: nothing sent.
	rep2, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep2.SentTotal.Objects != 0 {
		t.Errorf("second replicate sent %d objects, want 0", rep2.SentTotal.Objects)
	}

	// A new backup: exactly the new objects travel.
	before := objects(t, p.dir)
	p.backup("hv01", 20, 1<<20)
	after := objects(t, p.dir)
	var newObjs, newBytes int64
	for h, n := range after {
		if _, ok := before[h]; !ok {
			newObjs++
			newBytes += n
		}
	}
	rep3, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep3.SentTotal.Objects != newObjs || rep3.SentTotal.Bytes != newBytes {
		t.Errorf("incremental replicate sent %d objects / %d bytes, want the %d new objects / %d bytes",
			rep3.SentTotal.Objects, rep3.SentTotal.Bytes, newObjs, newBytes)
	}
	for h, n := range st.cnt.snapshot() {
		if n != 1 {
			t.Errorf("%s committed %d times", h, n)
		}
	}

	// Status: per host, the newest snapshot, as the client asserted.
	status, err := st.s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(status.Hosts) != 2 {
		t.Fatalf("status lists %d hosts, want 2: %+v", len(status.Hosts), status.Hosts)
	}
	latest, _ := p.r.FindSnapshot(ctx, "latest", "hv01")
	h := status.Hosts[0]
	if h.Host != "hv01" || h.LatestSnapshot != latest.ID().String() || !h.SnapshotTime.Equal(latest.Time) || h.AssertedBy != "client" {
		t.Errorf("status for hv01 = %+v, want snapshot %s at %s", h, latest.ID(), latest.Time)
	}
	if status.Snapshots != 3 || status.SnapshotsWithoutMeta != 0 {
		t.Errorf("status counts %d snapshots (%d without meta), want 3 (0)", status.Snapshots, status.SnapshotsWithoutMeta)
	}
}

// TestCutsNeverExposeIncompleteSnapshots cuts the connection at random
// byte offsets, several times per site, and checks after every cut that
// the site repository is consistent (check passes; an index or snapshot
// is only there with everything it needs), and that the final complete
// run sends no object that had already been committed.
func TestCutsNeverExposeIncompleteSnapshots(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 40, 2<<20)
	p.backup("hv02", 20, 1<<20)
	// A copy of the repository as it was before the last backup seeds
	// half of the sites, so cuts also hit incremental runs.
	old := filepath.Join(t.TempDir(), "old")
	if out, err := exec.Command("cp", "-a", p.dir, old).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	oldBE, err := tiers.OpenLocal(old)
	if err != nil {
		t.Fatal(err)
	}
	defer oldBE.Close()
	p.backup("hv01", 10, 1<<20)
	iters := 12
	if os.Getenv("DRPIPE_LONG") != "" {
		iters = 60
	}
	rng := rand.New(rand.NewPCG(42, uint64(iters)))
	cuts := 0
	partial := map[int]int{} // snapshots present after a cut -> count
	for it := range iters {
		st := newSite(t, "")
		if it%2 == 1 {
			seed := &primary{t: t, dir: old, be: oldBE, r: p.r}
			if _, err := st.replicatePipe(ctx, seed, -1, ReplicateOptions{}); err != nil {
				t.Fatal(err)
			}
			if n := assertConsistent(t, st.dir); n != 2 {
				t.Fatalf("seeded site holds %d snapshots, want 2", n)
			}
			st.cnt.mu.Lock()
			clear(st.cnt.commits)
			st.cnt.mu.Unlock()
		}
		for range 1 + rng.IntN(4) {
			// Cut somewhere in what the site still lacks (plus a
			// margin for framing, so some runs complete).
			var need int64
			have := objects(t, st.dir)
			for h, n := range objects(t, p.dir) {
				if _, ok := have[h]; !ok {
					need += n
				}
			}
			budget := rng.Int64N(need + need/20 + 1)
			conns := 1 + rng.IntN(4)
			_, err := st.replicatePipe(ctx, p, budget, ReplicateOptions{Streams: conns + rng.IntN(6), Connections: conns})
			if err != nil {
				cuts++
				if !errors.Is(err, errCut) && !isConnLoss(err) {
					t.Logf("iteration %d: replicate cut after %d bytes: %v", it, budget, err)
				}
			}
			if k := assertConsistent(t, st.dir); k > 0 {
				partial[k]++
			}
		}
		rep, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{Streams: 3, Connections: 1 + it%3})
		if err != nil {
			t.Fatalf("iteration %d: replicate after cuts: %v", it, err)
		}
		for h, n := range st.cnt.snapshot() {
			if n != 1 {
				t.Errorf("iteration %d: %s committed %d times: a completed object was resent", it, h, n)
			}
		}
		if got, want := len(objects(t, st.dir)), len(objects(t, p.dir)); got != want {
			t.Fatalf("iteration %d: site holds %d objects after the final run, primary %d (report %+v)", it, got, want, rep.SentTotal)
		}
		if n := assertConsistent(t, st.dir); n != 3 {
			t.Fatalf("iteration %d: %d snapshots at the site after the final run, want 3", it, n)
		}
	}
	if cuts < iters {
		t.Errorf("only %d of the runs were cut; the test is not testing cuts", cuts)
	}
	t.Logf("%d cut runs over %d sites; every state checked; states with N snapshots visible after a cut: %v", cuts, iters, partial)
}

func isConnLoss(err error) bool {
	var re *RemoteError
	return errors.As(err, &re)
}

// assertConsistent: if the site holds an index or a snapshot, the
// repository opens with the key and check passes; otherwise there is
// nothing a reader could trip on.
// It returns the number of snapshots present.
func assertConsistent(t *testing.T, dir string) int {
	t.Helper()
	objs := objects(t, dir)
	var idx, snaps, keys int
	cfg := false
	for h := range objs {
		switch h.Type {
		case tiers.TypeIndex:
			idx++
		case tiers.TypeSnapshot:
			snaps++
		case tiers.TypeKey:
			keys++
		case tiers.TypeConfig:
			cfg = true
		}
	}
	if idx == 0 && snaps == 0 {
		return 0
	}
	if !cfg || keys == 0 {
		t.Fatalf("site has %d index and %d snapshot objects but config=%v keys=%d", idx, snaps, cfg, keys)
	}
	r := openSiteRepo(t, dir)
	rep, err := r.Check(context.Background(), repo.CheckOptions{})
	if err != nil {
		t.Fatalf("site repository after a cut: check: %v\n%+v", err, rep)
	}
	if rep.Snapshots != snaps {
		t.Fatalf("check saw %d snapshots, the site holds %d", rep.Snapshots, snaps)
	}
	return snaps
}

// orderWatch records the order in which the site commits objects, the
// config taking its time.
type orderWatch struct {
	tiers.Backend
	mu    sync.Mutex
	order []tiers.Type
}

func (w *orderWatch) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if h.Type == tiers.TypeConfig {
		time.Sleep(100 * time.Millisecond)
	}
	err := w.Backend.Put(ctx, h, rd, size)
	if err == nil {
		w.mu.Lock()
		w.order = append(w.order, h.Type)
		w.mu.Unlock()
	}
	return err
}

// TestConfigCommittedBeforeKeys: an empty site holds the config, which
// claims it for the repository, before any key slot of that repository
// lands there.
func TestConfigCommittedBeforeKeys(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 5, 1<<20)
	var w *orderWatch
	st := newSiteOn(t, func(be tiers.Backend) tiers.Backend { w = &orderWatch{Backend: be}; return w })
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{Streams: 6}); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.order) == 0 || w.order[0] != tiers.TypeConfig {
		t.Errorf("the site committed %v, the config not first", w.order)
	}
}

// TestStatusLagOfASnapshotFromTheFuture: a snapshot dated a day ahead of
// the site's clock (the primary's clock is wrong) reports its lag from
// when it reached the site, not a negative one that hides its age.
func TestStatusLagOfASnapshotFromTheFuture(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 3, 64<<10)
	st := newSite(t, "")
	ahead := func(ctx context.Context, name string) (*SnapshotMeta, error) {
		m, err := p.meta(ctx, name)
		if m != nil {
			m.Time = m.Time.Add(24 * time.Hour)
		}
		return m, err
	}
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{SnapshotMeta: ahead}); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * time.Hour)
	status, err := ReadStatus(ctx, st.dir, later)
	if err != nil {
		t.Fatal(err)
	}
	if len(status.Hosts) != 1 || status.Hosts[0].LagSeconds < 7000 || status.Hosts[0].LagSeconds > 7300 {
		t.Errorf("site status two hours after the replication of a snapshot dated a day ahead: %+v, want a lag of about 7200 s", status.Hosts)
	}
}

// commitThenFail commits the first snapshot object it is given and then
// fails the Put, as a site killed right after the commit, or a local
// store whose directory sync failed after the rename, leaves it: the
// object is stored, its record not written.
type commitThenFail struct {
	tiers.Backend
	once sync.Once
}

func (c *commitThenFail) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	err := c.Backend.Put(ctx, h, rd, size)
	failed := false
	if err == nil && h.Type == tiers.TypeSnapshot {
		c.once.Do(func() { failed = true })
	}
	if failed {
		return errors.New("object written but directory sync failed")
	}
	return err
}

// TestSnapshotCommittedWithoutRecordGetsOne: a snapshot the site
// committed without recording its host and time (the site stopped in
// between) gets them from the next replicate, so that site status names
// it as its host's newest snapshot rather than an older one for good.
func TestSnapshotCommittedWithoutRecordGetsOne(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 3, 64<<10)
	st := newSiteOn(t, func(be tiers.Backend) tiers.Backend { return &commitThenFail{Backend: be} })
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err == nil {
		t.Fatal("replicate succeeded although the site failed to store the snapshot")
	}
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	latest, err := p.r.FindSnapshot(ctx, "latest", "hv01")
	if err != nil {
		t.Fatal(err)
	}
	s, err := st.s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Snapshots != 1 || s.SnapshotsWithoutMeta != 0 || len(s.Hosts) != 1 || s.Hosts[0].LatestSnapshot != latest.ID().String() {
		t.Errorf("status: %d snapshots, %d without host and time, hosts %+v; want hv01's snapshot %s with its record",
			s.Snapshots, s.SnapshotsWithoutMeta, s.Hosts, latest.ID().Short())
	}
}
