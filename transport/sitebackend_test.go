package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// replicatedSite backs up files files of about size bytes on a new
// primary, replicates them to a new site and opens the site's directory
// as a local tier (closed at cleanup).
func replicatedSite(t *testing.T, files int, size int64) (*primary, *site, *tiers.Local) {
	t.Helper()
	p := newPrimary(t)
	p.backup("hv01", files, size)
	st := newSite(t, "")
	if _, err := st.replicatePipe(context.Background(), p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	local, err := tiers.OpenLocal(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close() })
	return p, st, local
}

// readPipe opens a SiteBackend over an in-memory connection to st.
func (st *site) readPipe(t *testing.T, o SiteBackendOptions) *SiteBackend {
	t.Helper()
	cc, sc, _ := pipePair("hv-primary", -1)
	done := make(chan error, 1)
	go func() { done <- st.s.ServeConn(context.Background(), sc) }()
	b, err := OpenSiteBackend(context.Background(), cc, o)
	if err != nil {
		cc.CloseWithError(CodeOK, "done")
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("site read session did not end after Close")
		}
	})
	return b
}

func TestSiteBackendReadsCommittedObjects(t *testing.T) {
	ctx := context.Background()
	p, st, local := replicatedSite(t, 20, 2<<20)
	b := st.readPipe(t, SiteBackendOptions{RepoID: p.r.Config().ID})
	if b.RepoID() != p.r.Config().ID || b.SiteName() != "dr-test" {
		t.Errorf("welcome: repo %s site %q", b.RepoID().Short(), b.SiteName())
	}

	// List: exactly the site's committed objects; an object being
	// received (a hidden temporary file) is not listed.
	want := objects(t, st.dir)
	if err := os.WriteFile(filepath.Join(st.dir, "snapshots", "."+p.r.Config().ID.String()+".tmp-1"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := map[tiers.Handle]int64{}
	for _, typ := range tiers.AllTypes {
		if err := b.List(ctx, typ, func(oi tiers.ObjectInfo) error { got[oi.Handle] = oi.Size; return nil }); err != nil {
			t.Fatalf("list %s: %v", typ, err)
		}
	}
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("listed %d objects, the site holds %d", len(got), len(want))
	}
	for h, n := range want {
		if got[h] != n {
			t.Errorf("%s: listed size %d, want %d", h, got[h], n)
		}
	}
	stop := errors.New("stop")
	if err := b.List(ctx, tiers.TypeData, func(tiers.ObjectInfo) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("list callback error: got %v", err)
	}

	// Load (whole and ranges) and Stat match the site's files.
	for h, n := range want {
		whole, err := tiers.LoadAll(ctx, local, h, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		remote, err := tiers.LoadAll(ctx, b, h, 0, 0)
		if err != nil || !bytes.Equal(remote, whole) {
			t.Fatalf("load %s: %d bytes, %v", h, len(remote), err)
		}
		if n > 10 {
			part, err := tiers.LoadAll(ctx, b, h, 3, n-7)
			if err != nil || !bytes.Equal(part, whole[3:n-4]) {
				t.Fatalf("ranged load %s: %v", h, err)
			}
			tail, err := tiers.LoadAll(ctx, b, h, n-5, 0)
			if err != nil || !bytes.Equal(tail, whole[n-5:]) {
				t.Fatalf("tail load %s: %v", h, err)
			}
		}
		oi, err := b.Stat(ctx, h)
		if err != nil || oi.Size != n || oi.ModTime.IsZero() {
			t.Fatalf("stat %s: %+v %v", h, oi, err)
		}
		if _, err := tiers.LoadAll(ctx, b, h, n, 1); !errors.Is(err, tiers.ErrShortRead) {
			t.Errorf("load beyond the end of %s: %v, want ErrShortRead", h, err)
		}
	}
	// A reader that stops early does not disturb the session.
	for h := range want {
		err := b.Load(ctx, h, 0, 0, func(rd io.Reader) error { _, err := rd.Read(make([]byte, 1)); return err })
		if err != nil {
			t.Fatalf("partial read of %s: %v", h, err)
		}
	}

	missing := tiers.Handle{Type: tiers.TypeSnapshot, Name: "00" + p.r.Config().ID.String()[2:]}
	if _, err := b.Stat(ctx, missing); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("stat of a missing object: %v", err)
	}
	if _, err := tiers.LoadAll(ctx, b, missing, 0, 0); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("load of a missing object: %v", err)
	}
	if _, err := b.Stat(ctx, tiers.Handle{Type: tiers.TypeTombstone, Name: "x"}); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("stat of a tombstone: %v", err)
	}
	if err := b.Put(ctx, missing, bytes.NewReader(nil), 0); !errors.Is(err, tiers.ErrReadOnly) {
		t.Errorf("put: %v", err)
	}
	if err := b.Remove(ctx, missing); !errors.Is(err, tiers.ErrReadOnly) {
		t.Errorf("remove: %v", err)
	}
	if n := len(objects(t, st.dir)); n != len(want) {
		t.Errorf("the site holds %d objects after reads, %d before", n, len(want))
	}

	// The repository opens through the site and restores byte-identical.
	r, err := repo.Open(ctx, b, repoOpts(t))
	if err != nil {
		t.Fatalf("open the repository through the site: %v", err)
	}
	defer r.Close()
	ids := snapshotIDs(t, r)
	if len(ids) != 1 {
		t.Fatalf("snapshots through the site: %v", ids)
	}
	out := filepath.Join(t.TempDir(), "out")
	sn, err := r.FindSnapshot(ctx, ids[0], "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.Restore(ctx, r, sn, pipeline.RestoreOptions{Target: out}); err != nil {
		t.Fatalf("restore through the site: %v", err)
	}
	sameFiles(t, filepath.Join(p.src, "hv01"), filepath.Join(out, p.src, "hv01"))
}

// TestSiteReadRefusesPathTricks sends raw Get frames with names a client
// backend would never send: the site refuses them by name.
func TestSiteReadRefusesPathTricks(t *testing.T) {
	ctx := context.Background()
	st := newSite(t, "")
	b := st.readPipe(t, SiteBackendOptions{})
	for _, m := range []Get{
		{Type: tiers.TypeKey, Name: "../../etc/passwd"},
		{Type: tiers.TypeData, Name: ".drpipe-site"},
		{Type: tiers.TypeConfig, Name: "../config"},
		{Type: tiers.TypeSnapshot, Name: ".x.tmp-1"},
		{Type: tiers.TypeIndex, Name: "a/b"},
	} {
		_, _, _, err := b.get(ctx, m)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != CodeBadName {
			t.Errorf("get %s/%s: %v, want a bad-name refusal", m.Type, m.Name, err)
		}
	}
	// A stream that starts with another frame is refused.
	s, stop, err := b.request(ctx, FrameSeal, Seal{Type: tiers.TypeData}.encode())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var re *RemoteError
	if _, err := readReply(s, FrameGetReply); !errors.As(err, &re) || re.Code != CodeBadFrame {
		t.Errorf("Seal on a read stream: %v", err)
	}
	// The session survives refused requests.
	if err := b.List(ctx, tiers.TypeData, func(tiers.ObjectInfo) error { return nil }); err != nil {
		t.Errorf("list after refusals: %v", err)
	}
}

// TestSiteReadOlderSite: a site that predates the read purpose refuses
// Hello; the client says the site is too old.
func TestSiteReadOlderSite(t *testing.T) {
	cc, sc, _ := pipePair("hv-primary", -1)
	defer cc.CloseWithError(CodeOK, "done")
	go func() {
		s, err := sc.AcceptStream(context.Background())
		if err != nil {
			return
		}
		ReadFrame(s)
		WriteFrame(s, FrameError, encodeError(CodeBadFrame, "drpipe site protocol error: Hello payload offset 3: unknown purpose 4"))
		s.CloseWrite()
	}()
	_, err := OpenSiteBackend(context.Background(), cc, SiteBackendOptions{Timeout: 5 * time.Second})
	if !errors.Is(err, ErrSiteReadUnsupported) {
		t.Fatalf("older site: %v", err)
	}
}

func TestSiteReadRepoMismatch(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 2, 64<<10)
	st := newSite(t, "")
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	other := newPrimary(t)
	cc, sc, _ := pipePair("hv-primary", -1)
	defer cc.CloseWithError(CodeOK, "done")
	go st.s.ServeConn(ctx, sc)
	_, err := OpenSiteBackend(ctx, cc, SiteBackendOptions{RepoID: other.r.Config().ID, Timeout: 5 * time.Second})
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeRepoMismatch {
		t.Fatalf("read of another repository: %v", err)
	}
}

func TestSiteBackendOverQUIC(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 5, 256<<10)
	dir := filepath.Join(t.TempDir(), "tls")
	if _, err := InitTLS(dir, "dr-test", "hv01", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	otherDir := filepath.Join(t.TempDir(), "other")
	if _, err := InitTLS(otherDir, "evil", "hv01", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	st := newSite(t, "")
	addr, _ := quicSite(t, st, dir, []string{"hv01"})
	tc, _, err := ClientTLS(dir, "hv01")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replicateQUIC(ctx, addr, tc, p); err != nil {
		t.Fatal(err)
	}
	c, err := DialQUIC(ctx, addr, tc, QUICOptions{HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenSiteBackend(ctx, c, SiteBackendOptions{Location: "site://" + addr, Timeout: 10 * time.Second})
	if err != nil {
		c.CloseWithError(CodeOK, "done")
		t.Fatal(err)
	}
	defer b.Close()
	want := objects(t, st.dir)
	n := 0
	for h, size := range want {
		got, err := tiers.LoadAll(ctx, b, h, 0, 0)
		if err != nil || int64(len(got)) != size {
			t.Fatalf("load %s over QUIC: %d bytes, %v", h, len(got), err)
		}
		n++
	}
	var listed int
	for _, typ := range tiers.CopyTypes {
		if err := b.List(ctx, typ, func(tiers.ObjectInfo) error { listed++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if listed != n {
		t.Errorf("listed %d objects over QUIC, loaded %d", listed, n)
	}
	// A read stream the client resets part-way through its request is
	// counted as aborted, not as a failed stream.
	rst, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rst.Write([]byte{ProtocolVersion, byte(FrameGet)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the site is reading the request
	rst.Abort()
	srv := httptest.NewServer(st.s.m.Handler())
	defer srv.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := scrape(t, srv.URL)
		if got[`drpipe_site_errors_total{reason="aborted"}`] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a read stream the client reset: errors %v, want one aborted", errorSeries(got))
		}
	}
	// A client certificate of another CA is refused at the handshake.
	otc, _, err := ClientTLS(otherDir, "hv01")
	if err != nil {
		t.Fatal(err)
	}
	otc.RootCAs = tc.RootCAs
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if c2, err := DialQUIC(dctx, addr, otc, QUICOptions{HandshakeTimeout: 5 * time.Second}); err == nil {
		_, err = OpenSiteBackend(dctx, c2, SiteBackendOptions{Timeout: 5 * time.Second})
		c2.CloseWithError(CodeOK, "done")
		if err == nil {
			t.Fatal("a foreign client certificate opened a read session")
		}
	}
}

// TestSiteBackendReadOnlyConformance runs the read-only conformance suite
// over a site read session: the site's committed objects, read through
// the protocol, refusing writes.
func TestSiteBackendReadOnlyConformance(t *testing.T) {
	ctx := context.Background()
	p, st, local := replicatedSite(t, 10, 1<<20)
	want := map[tiers.Handle][]byte{}
	for h := range objects(t, st.dir) {
		b, err := tiers.LoadAll(ctx, local, h, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		want[h] = b
	}
	tierstest.RunReadOnly(t, func(t *testing.T) tiers.Backend {
		return st.readPipe(t, SiteBackendOptions{RepoID: p.r.Config().ID})
	}, want)
}

// stallingLoad is a site store whose Load delivers the first bytes of an
// object and then no more until release is closed, as a site whose disk
// hangs part-way through a read.
type stallingLoad struct {
	tiers.Backend
	release chan struct{}
}

func (s *stallingLoad) Load(ctx context.Context, h tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	return s.Backend.Load(ctx, h, off, n, func(rd io.Reader) error {
		return fn(io.MultiReader(io.LimitReader(rd, 64<<10), readerFunc(func([]byte) (int, error) {
			<-s.release
			return 0, errors.New("stalled store released")
		})))
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestSiteBackendLoadFailsWhenSiteStopsSending: a site that stops
// sending an object's bytes part-way (its storage hangs) while its
// connection stays alive fails the Load after the backend's Timeout,
// over real QUIC, rather than holding a restore for ever.
func TestSiteBackendLoadFailsWhenSiteStopsSending(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "tls")
	if _, err := InitTLS(dir, "dr-test", "hv01", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	stall := &stallingLoad{release: make(chan struct{})}
	st := newSiteOn(t, func(be tiers.Backend) tiers.Backend { stall.Backend = be; return stall })
	body := bytes.Repeat([]byte("stalled key "), 8<<20/12)
	h := tiers.Handle{Type: tiers.TypeKey, Name: id.Hash(body).String()}
	if err := stall.Backend.Put(ctx, h, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	addr, _ := quicSite(t, st, dir, nil)
	t.Cleanup(func() { close(stall.release) }) // before the site's cleanup waits for its sessions
	tc, _, err := ClientTLS(dir, "hv01")
	if err != nil {
		t.Fatal(err)
	}
	c, err := DialQUIC(ctx, addr, tc, QUICOptions{HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenSiteBackend(ctx, c, SiteBackendOptions{Timeout: time.Second})
	if err != nil {
		c.CloseWithError(CodeOK, "done")
		t.Fatal(err)
	}
	defer b.Close()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := tiers.LoadAll(ctx, b, h, 0, 0)
		done <- err
	}()
	awaitTimeout(t, c, done, start, "load from a site that stopped sending")
}

// activeLoads counts the store's Loads under way.
type activeLoads struct {
	tiers.Backend
	n atomic.Int64
}

func (a *activeLoads) Load(ctx context.Context, h tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	a.n.Add(1)
	defer a.n.Add(-1)
	return a.Backend.Load(ctx, h, off, n, fn)
}

// TestSiteStopsServingAReaderThatTakesNothing: a reader that asks for an
// object and then takes none of its bytes (a restore hung on its own
// disk, a client gone quiet with its connection alive) has the stream
// reset after the site's BodyIdleTimeout, which frees the object's file
// and the goroutine serving it, instead of holding them until the
// connection ends.
func TestSiteStopsServingAReaderThatTakesNothing(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "tls")
	if _, err := InitTLS(dir, "dr-test", "hv01", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	loads := &activeLoads{}
	st := newSiteOn(t, func(be tiers.Backend) tiers.Backend { loads.Backend = be; return loads })
	st.s.o.BodyIdleTimeout = time.Second
	body := bytes.Repeat([]byte("unread key "), 16<<20/11)
	h := tiers.Handle{Type: tiers.TypeKey, Name: id.Hash(body).String()}
	if err := loads.Backend.Put(ctx, h, bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	addr, _ := quicSite(t, st, dir, nil)
	tc, _, err := ClientTLS(dir, "hv01")
	if err != nil {
		t.Fatal(err)
	}
	c, err := DialQUIC(ctx, addr, tc, QUICOptions{HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(CodeOK, "test over")
	b, err := OpenSiteBackend(ctx, c, SiteBackendOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	release := make(chan struct{})
	defer close(release)
	go b.Load(ctx, h, 0, 0, func(io.Reader) error { <-release; return nil })
	deadline := time.Now().Add(20 * time.Second)
	for loads.n.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if loads.n.Load() == 0 {
		t.Fatal("the site never started serving the object")
	}
	start := time.Now()
	for loads.n.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := loads.n.Load(); n != 0 {
		t.Fatalf("the site still serves an object nobody reads %v after it started, its BodyIdleTimeout is 1s", time.Since(start).Round(time.Second))
	}
}
