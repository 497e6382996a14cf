package transport

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

var testPassword = []byte("transport test password")

var fastKDF = &repo.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1}

func repoOpts(t testing.TB) repo.Options {
	return repo.Options{Password: testPassword, CacheDir: t.TempDir(), KDF: fastKDF}
}

// primary is a real repository on disk with helpers to add snapshots.
type primary struct {
	t   testing.TB
	dir string
	be  *tiers.Local
	r   *repo.Repository
	src string
	n   int
}

func newPrimary(t testing.TB) *primary {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "primary")
	be, err := tiers.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, repo.InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20}, repoOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	p := &primary{t: t, dir: dir, be: be, r: r, src: filepath.Join(t.TempDir(), "src")}
	t.Cleanup(func() { r.Close(); be.Close() })
	return p
}

// backup writes (or grows) the source tree and backs it up as host.
func (p *primary) backup(host string, files int, bytes int64) *repo.Snapshot {
	p.t.Helper()
	p.n++
	d := filepath.Join(p.src, host, "gen"+string(rune('a'+p.n)))
	if _, err := sample.Tree(d, sample.TreeOptions{Files: files, Bytes: bytes, Seed: uint64(p.n)}); err != nil {
		p.t.Fatal(err)
	}
	res, err := pipeline.Backup(context.Background(), p.r, pipeline.BackupOptions{Host: host, Paths: []string{filepath.Join(p.src, host)}})
	if err != nil {
		p.t.Fatal(err)
	}
	return res.Snapshot
}

// meta is a ReplicateOptions.SnapshotMeta reading the primary's snapshots.
func (p *primary) meta(ctx context.Context, name string) (*SnapshotMeta, error) {
	sn, err := p.r.FindSnapshot(ctx, name, "")
	if err != nil {
		return nil, err
	}
	return &SnapshotMeta{Host: sn.Host, Time: sn.Time}, nil
}

// objects lists every replicated object of a directory's repository.
func objects(t testing.TB, dir string) map[tiers.Handle]int64 {
	t.Helper()
	be, err := tiers.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	out := map[tiers.Handle]int64{}
	for _, ty := range phaseTypes {
		err := be.List(context.Background(), ty, func(oi tiers.ObjectInfo) error {
			out[oi.Handle] = oi.Size
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// site is a Server on a directory, its store counting committed puts.
type site struct {
	t   testing.TB
	dir string
	s   *Server
	cnt *putCounter
}

func newSite(t testing.TB, dir string) *site {
	t.Helper()
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "site")
	}
	be, err := tiers.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	cnt := &putCounter{Backend: be, commits: map[tiers.Handle]int{}}
	s, err := NewServer(context.Background(), ServerOptions{Dir: dir, Store: cnt, SiteName: "dr-test", Metrics: NewMetrics()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); be.Close() })
	return &site{t: t, dir: dir, s: s, cnt: cnt}
}

// newSiteOn is a Server on a fresh directory whose store is wrap of the
// directory's local backend.
func newSiteOn(t testing.TB, wrap func(tiers.Backend) tiers.Backend) *site {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "site")
	be, err := tiers.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(context.Background(), ServerOptions{Dir: dir, Store: wrap(be), SiteName: "dr-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); be.Close() })
	return &site{t: t, dir: dir, s: s}
}

// putCounter counts successful Puts per handle.
type putCounter struct {
	tiers.Backend
	mu      sync.Mutex
	commits map[tiers.Handle]int
}

func (c *putCounter) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	err := c.Backend.Put(ctx, h, rd, size)
	if err == nil {
		c.mu.Lock()
		c.commits[h]++
		c.mu.Unlock()
	}
	return err
}

func (c *putCounter) snapshot() map[tiers.Handle]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[tiers.Handle]int, len(c.commits))
	for h, n := range c.commits {
		out[h] = n
	}
	return out
}

// replicatePipe runs one replication over in-memory connections (as many
// as o.Connections) that share a budget of cutAfter bytes (<0: never
// cut): the connection that exhausts it is cut, the others at their next
// write.
func (st *site) replicatePipe(ctx context.Context, p *primary, cutAfter int64, o ReplicateOptions) (*Report, error) {
	budget := &atomic.Int64{}
	budget.Store(cutAfter)
	var served sync.WaitGroup
	var mu sync.Mutex
	var dialed []*pipeConn
	dial := func(context.Context) (Conn, error) {
		cc, sc, _ := pipePairShared("hv-primary", budget)
		served.Go(func() { st.s.ServeConn(ctx, sc) })
		mu.Lock()
		dialed = append(dialed, cc)
		mu.Unlock()
		return cc, nil
	}
	if o.Connections > 1 {
		o.Dial = dial
	}
	if o.SnapshotMeta == nil {
		o.SnapshotMeta = p.meta
	}
	cc, _ := dial(ctx)
	rep, err := Replicate(ctx, cc, p.be, o)
	cc.CloseWithError(CodeOK, "done")
	done := make(chan struct{})
	go func() { served.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		st.t.Fatal("site connections did not end 30s after the client closed")
	}
	mu.Lock()
	n := len(dialed)
	mu.Unlock()
	if err == nil && rep.Connections != n {
		st.t.Errorf("report says %d connections, %d were dialed", rep.Connections, n)
	}
	return rep, err
}

// openSiteRepo opens the site's repository with the key, as a DR restore
// would.
func openSiteRepo(t testing.TB, dir string) *repo.Repository {
	t.Helper()
	be, err := tiers.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), be, repoOpts(t))
	if err != nil {
		be.Close()
		t.Fatalf("open the site repository with the key: %v", err)
	}
	t.Cleanup(func() { r.Close(); be.Close() })
	return r
}

func snapshotIDs(t testing.TB, r *repo.Repository) []string {
	ids, err := r.ListSnapshotIDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ids))
	for i, x := range ids {
		out[i] = x.String()
	}
	sort.Strings(out)
	return out
}

func sameFiles(t testing.TB, a, b string) {
	t.Helper()
	err := filepath.Walk(a, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		same, err := sample.SameContent(p, filepath.Join(b, rel))
		if err != nil {
			return err
		}
		if !same {
			t.Errorf("%s differs after restore", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
