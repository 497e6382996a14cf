package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// TestSnapshotHostNotUTF8 sends a snapshot whose client-asserted
// host name is not valid UTF-8 (a hostile client, or a long multibyte
// name clipped to MaxHostName on the wire). The site used it as a
// Prometheus label value, which panics on invalid UTF-8 and took the whole
// site daemon down; it must commit the snapshot and report a valid name.
func TestSnapshotHostNotUTF8(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 3, 64<<10)
	for _, host := range []string{"hv\xff01", strings.Repeat("é", 200)} {
		st := newSite(t, "")
		meta := func(ctx context.Context, name string) (*SnapshotMeta, error) {
			m, err := p.meta(ctx, name)
			if err != nil {
				return nil, err
			}
			m.Host = host
			return m, nil
		}
		if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{SnapshotMeta: meta}); err != nil {
			t.Fatalf("replicate with host %q: %v", host, err)
		}
		status, err := st.s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(status.Hosts) != 1 || !utf8.ValidString(status.Hosts[0].Host) {
			t.Errorf("host %q: status hosts %+v, want one with a valid UTF-8 name", host, status.Hosts)
		}
	}
	// A client that writes the frame by hand is refused at decoding.
	var e encoder
	putType(&e, tiers.TypeSnapshot)
	e.str(id.Hash(nil).String(), 255)
	e.u64(10)
	e.u8(1)
	e.u16(3)
	e.bytes([]byte("a\xffb"))
	e.u64(0)
	if _, err := decodePut(e.b); !errors.Is(err, ErrProtocol) {
		t.Errorf("Put with a host that is not UTF-8 decoded: %v", err)
	}
}

// pipeListener hands in-memory connections to Server.Serve.
type pipeListener struct {
	conns chan Conn
	done  chan struct{}
}

func (l *pipeListener) Accept(ctx context.Context) (Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errors.New("pipe listener closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (l *pipeListener) Addr() net.Addr { return pipeAddr("pipe-listener") }
func (l *pipeListener) Close() error   { return nil }

// TestServeShutdownClosesIdleSessions: Serve promises that once its
// context ends, running sessions get ShutdownGrace and are then closed.
// A session whose client is idle on its control stream (a primary
// holding a read session open for a restore, a status session) blocked
// in reading that stream, which does not watch the context: Serve, and
// with it 'drpipe site serve' on SIGTERM, never returned.
func TestServeShutdownClosesIdleSessions(t *testing.T) {
	for _, purpose := range []uint8{PurposeStatus, PurposeRead} {
		dir := t.TempDir()
		s, err := NewServer(context.Background(), ServerOptions{Dir: dir, ShutdownGrace: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		l := &pipeListener{conns: make(chan Conn, 1), done: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx, l) }()
		cc, sc, _ := pipePair("hv01", -1)
		l.conns <- sc
		if _, _, err := openSession(context.Background(), cc, Hello{Purpose: purpose, Program: "idle"}, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			cc.CloseWithError(CodeOK, "test over")
			<-served
			t.Errorf("purpose %d: Serve did not return 5s after its context ended (grace 100ms): an idle session kept it running", purpose)
		}
		cc.CloseWithError(CodeOK, "")
	}
}

// TestClientTLSBundleByName: README's replicate line offers
// --tls-name NAME, and step 4 copies the primary's bundle to the primary
// as its --tls-dir. Naming the primary then failed with "no certificate
// for primary" and advice to issue one in the bundle directory (which
// has no CA key), although the bundle is that primary's certificate.
func TestClientTLSBundleByName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	res, err := InitTLS(dir, "dr-test", "hv01", IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, cn, err := ClientTLS(res.ClientBundle, "hv01"); err != nil || cn != "hv01" {
		t.Errorf("ClientTLS(bundle of hv01, \"hv01\") = %q, %v; want hv01's certificate", cn, err)
	}
	// Another name is still refused: the bundle is not that primary's.
	if _, _, err := ClientTLS(res.ClientBundle, "hv02"); err == nil {
		t.Error("ClientTLS(bundle of hv01, \"hv02\") succeeded")
	}
}

// TestReplicateCancelWhileSiteStalls: Ctrl-C ends a replication whose
// site stopped answering on the control stream (while opening the
// session, or with offers in flight) at once, not after
// ReplicateOptions.Timeout.
func TestReplicateCancelWhileSiteStalls(t *testing.T) {
	p := newPrimary(t)
	p.backup("h", 3, 1<<16)
	for _, stallAt := range []string{"welcome", "want"} {
		t.Run(stallAt, func(t *testing.T) {
			client, server, link := pipePair("primary", -1)
			defer link.close(nil)
			go func() {
				st, err := server.AcceptStream(context.Background())
				if err != nil {
					return
				}
				if _, err := ReadFrame(st); err != nil { // Hello
					return
				}
				if stallAt == "want" {
					WriteFrame(st, FrameWelcome, Welcome{SiteName: "dr", MaxObjectSize: 1 << 31, Session: SessionID{1: 1}}.encode())
				}
				io.Copy(io.Discard, st) // reads on, never answers
			}()
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			start := time.Now()
			_, err := Replicate(ctx, client, p.be, ReplicateOptions{Timeout: time.Minute})
			if d := time.Since(start); d > 10*time.Second || !errors.Is(err, context.Canceled) {
				t.Errorf("replicate cancelled while the site stalls: %v after %v; want context.Canceled at once", err, d.Round(time.Millisecond))
			}
		})
	}
}

// TestSiteClaimHeldWhileAnySessionStoresItsConfig: two sessions of one
// repository store its config into an empty site at once. The first
// one's failing must not free the site while the second still stores:
// a config of another repository arriving then would claim it too, and
// the two repositories' objects would mix.
func TestSiteClaimHeldWhileAnySessionStoresItsConfig(t *testing.T) {
	st := newSite(t, filepath.Join(t.TempDir(), "site"))
	a, b := newPrimary(t).r.Config().ID, newPrimary(t).r.Config().ID
	releaseFirst, err := st.s.takeSite(a, tiers.TypeConfig)
	if err != nil {
		t.Fatal(err)
	}
	releaseSecond, err := st.s.takeSite(a, tiers.TypeConfig)
	if err != nil {
		t.Fatal(err)
	}
	releaseFirst() // its store failed
	releaseFirst() // releasing twice counts once
	if _, err := st.s.takeSite(b, tiers.TypeConfig); code(err) != CodeRepoMismatch {
		t.Errorf("another repository's config while the second session still stores: %v, want a repository-mismatch refusal", err)
	}
	releaseSecond() // its store failed too: the site is free again
	release, err := st.s.takeSite(b, tiers.TypeConfig)
	if err != nil {
		t.Errorf("another repository's config once no store is left: %v", err)
	} else {
		release()
	}
}

// TestSecondRepositoryRefusedAfterFirstClaimsEmptySite: two primaries
// of different repositories may both find an empty site at Hello. Once
// the first one's config is stored, the site belongs to that repository:
// the other session's objects are refused, not mixed into it (and its
// config cannot replace the first).
func TestSecondRepositoryRefusedAfterFirstClaimsEmptySite(t *testing.T) {
	ctx := context.Background()
	a, b := newPrimary(t), newPrimary(t)
	st := newSite(t, filepath.Join(t.TempDir(), "site"))
	rsA, _, err := openRaw(t, st, a.r.Config().ID)
	if err != nil {
		t.Fatal(err)
	}
	rsB, _, err := openRaw(t, st, b.r.Config().ID)
	if err != nil {
		t.Fatal(err)
	}
	object := func(p *primary, ty tiers.Type) (string, []byte) {
		var name string
		p.be.List(ctx, ty, func(oi tiers.ObjectInfo) error { name = oi.Handle.Name; return nil })
		data, err := tiers.LoadAll(ctx, p.be, tiers.Handle{Type: ty, Name: name}, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return name, data
	}
	send := func(rs *rawSession, ty tiers.Type, name string, body []byte) error {
		if _, err := rs.offer(ty, name, int64(len(body))); err != nil {
			return err
		}
		return rs.put(ty, name, body)
	}
	cfgA, bodyA := object(a, tiers.TypeConfig)
	if err := send(rsA, tiers.TypeConfig, cfgA, bodyA); err != nil {
		t.Fatalf("first primary's config: %v", err)
	}
	keyB, bodyKeyB := object(b, tiers.TypeKey)
	if err := send(rsB, tiers.TypeKey, keyB, bodyKeyB); code(err) != CodeRepoMismatch {
		t.Errorf("the second repository's key object after the first's config: %v, want a repository-mismatch refusal", err)
	}
	if _, err := st.s.store.Stat(ctx, tiers.Handle{Type: tiers.TypeKey, Name: keyB}); err == nil {
		t.Errorf("the second repository's key object was stored in the first's site repository")
	}
	cfgB, bodyB := object(b, tiers.TypeConfig)
	if err := send(rsB, tiers.TypeConfig, cfgB, bodyB); err == nil {
		t.Errorf("the second repository's config replaced the first's")
	}
}

// TestConfigOfAnotherRepositoryThanDeclaredRefused: a session declares
// repository A at Hello and then sends repository B's config into an
// empty site. The site was claimed for A; storing B's config would make
// it B's, behind the claim's back.
func TestConfigOfAnotherRepositoryThanDeclaredRefused(t *testing.T) {
	ctx := context.Background()
	a, b := newPrimary(t), newPrimary(t)
	st := newSite(t, filepath.Join(t.TempDir(), "site"))
	rs, _, err := openRaw(t, st, a.r.Config().ID)
	if err != nil {
		t.Fatal(err)
	}
	body, err := tiers.LoadAll(ctx, b.be, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.offer(tiers.TypeConfig, "config", int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if err := rs.put(tiers.TypeConfig, "config", body); err == nil || !strings.Contains(err.Error(), "declared") {
		t.Errorf("another repository's config than the session declared: %v, want it refused", err)
	}
	if _, err := st.s.store.Stat(ctx, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}); err == nil {
		t.Error("the site stored the config of a repository the session did not declare")
	}
}

// windowWatch is a site store that follows, for data objects, how many
// the site has been offered (one Stat each) but not received yet.
type windowWatch struct {
	tiers.Backend
	mu                sync.Mutex
	offered, received int
	peak              int
}

func (w *windowWatch) Stat(ctx context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	if h.Type == tiers.TypeData {
		w.mu.Lock()
		w.offered++
		w.peak = max(w.peak, w.offered-w.received)
		w.mu.Unlock()
	}
	return w.Backend.Stat(ctx, h)
}

func (w *windowWatch) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	err := w.Backend.Put(ctx, h, rd, size)
	if h.Type == tiers.TypeData && err == nil {
		w.mu.Lock()
		w.received++
		w.mu.Unlock()
	}
	return err
}

// TestReplicateOffersDataInWindows: the data of a repository is listed,
// offered and sent a window at a time, so the site never holds the names
// of more wanted data objects than a window (nor the client more listed
// ones), however large the repository; and the replica is complete.
func TestReplicateOffersDataInWindows(t *testing.T) {
	p := newPrimary(t)
	p.backup("hv01", 12, 6<<20)
	var w *windowWatch
	st := newSiteOn(t, func(be tiers.Backend) tiers.Backend { w = &windowWatch{Backend: be}; return w })
	dir := st.dir
	const window = 2
	rep, err := st.replicatePipe(context.Background(), p, -1, ReplicateOptions{Window: window, Streams: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Sent[tiers.TypeData].Objects; n <= 3*window {
		t.Fatalf("fixture: %d data objects sent, want several windows' worth", n)
	}
	if w.peak > window {
		t.Errorf("the site held up to %d offered data objects not yet received, want at most the window of %d", w.peak, window)
	}
	assertConsistent(t, dir)
	sameFiles(t, filepath.Join(p.dir, "data"), filepath.Join(dir, "data"))
}

// TestSiteBoundsOutstandingOffers: a primary that offers more objects
// than it sends (a hostile one, or one offering everything at once) is
// refused once the site would hold more wanted names than its bound.
func TestSiteBoundsOutstandingOffers(t *testing.T) {
	p := newPrimary(t)
	dir := filepath.Join(t.TempDir(), "site")
	s, err := NewServer(context.Background(), ServerOptions{Dir: dir, SiteName: "dr-test", MaxOutstanding: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rs, _, err := openRaw(t, &site{t: t, dir: dir, s: s}, p.r.Config().ID)
	if err != nil {
		t.Fatal(err)
	}
	entries := func(n, from int) []OfferEntry {
		var e []OfferEntry
		for i := range n {
			e = append(e, OfferEntry{Name: fmt.Sprintf("%064x-0", from+i), Size: 100})
		}
		return e
	}
	if _, err := exchangeOffer(context.Background(), rs.ctl, Offer{Type: tiers.TypeData, Entries: entries(80, 0)}, 10*time.Second); err != nil {
		t.Fatalf("an offer within the bound: %v", err)
	}
	_, err = exchangeOffer(context.Background(), rs.ctl, Offer{Type: tiers.TypeData, Entries: entries(30, 80)}, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "holds at most 100") {
		t.Errorf("an offer beyond the bound: %v, want a refusal naming it", err)
	}
}

// TestConfigOfAnotherRepositoryIsAMismatchNotDamage: the config of
// another repository than the session declared is refused as a
// repository mismatch, not as an object that fails verification (which
// the site counts, and the operator reads, as damage), with a message
// that says what to do; and the refusal leaves the site free for the
// declared repository.
func TestConfigOfAnotherRepositoryIsAMismatchNotDamage(t *testing.T) {
	ctx := context.Background()
	a, b := newPrimary(t), newPrimary(t)
	st := newSite(t, filepath.Join(t.TempDir(), "site"))
	configOf := func(p *primary) []byte {
		body, err := tiers.LoadAll(ctx, p.be, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	rs, _, err := openRaw(t, st, a.r.Config().ID)
	if err != nil {
		t.Fatal(err)
	}
	body := configOf(b)
	if _, err := rs.offer(tiers.TypeConfig, "config", int64(len(body))); err != nil {
		t.Fatal(err)
	}
	err = rs.put(tiers.TypeConfig, "config", body)
	if code(err) != CodeRepoMismatch {
		t.Errorf("another repository's config than declared: code %v (%v), want %v", code(err), err, CodeRepoMismatch)
	}
	if err == nil || strings.Contains(err.Error(), "does not match its name") || !strings.Contains(err.Error(), "again") {
		t.Errorf("another repository's config than declared: %v, want it to say what happened and to run again, not that the object is damaged", err)
	}
	rs2, _, err := openRaw(t, st, a.r.Config().ID)
	if err != nil {
		t.Fatal(err)
	}
	body = configOf(a)
	if _, err := rs2.offer(tiers.TypeConfig, "config", int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if err := rs2.put(tiers.TypeConfig, "config", body); err != nil {
		t.Errorf("the declared repository's config after the refusal: %v", err)
	}
}

// closeRecorder records what the site closes a connection with.
type closeRecorder struct {
	Conn
	mu   sync.Mutex
	code ErrorCode
	msg  string
}

func (c *closeRecorder) CloseWithError(code ErrorCode, msg string) error {
	c.mu.Lock()
	c.code, c.msg = code, msg
	c.mu.Unlock()
	return c.Conn.CloseWithError(code, msg)
}

// TestRefusalClosesConnectionWithItsMessage: over QUIC the connection
// close often overtakes the Error frame, and the client then reports the
// close's code and message as the site's refusal. The message must be
// the refusal's own text: the client adds "site refused (code): " to it,
// which was then shown twice.
func TestRefusalClosesConnectionWithItsMessage(t *testing.T) {
	ctx := context.Background()
	a, b := newPrimary(t), newPrimary(t)
	a.backup("hv01", 2, 64<<10)
	st := newSite(t, "")
	if _, err := st.replicatePipe(ctx, a, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	cc, sc, _ := pipePair("hv-primary", -1)
	defer cc.CloseWithError(CodeOK, "done")
	rec := &closeRecorder{Conn: sc}
	done := make(chan error, 1)
	go func() { done <- st.s.ServeConn(ctx, rec) }()
	_, err := Replicate(ctx, cc, b.be, ReplicateOptions{Timeout: 10 * time.Second})
	if code(err) != CodeRepoMismatch {
		t.Fatalf("replicate another repository: %v, want a repository-mismatch refusal", err)
	}
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.code != CodeRepoMismatch {
		t.Errorf("connection closed with code %s, want %s", rec.code, CodeRepoMismatch)
	}
	if strings.HasPrefix(rec.msg, "site refused") || !strings.Contains(rec.msg, "use another site directory") {
		t.Errorf("connection closed with message %q, want the refusal's own text", rec.msg)
	}
	if msg := (&RemoteError{rec.code, rec.msg}).Error(); strings.Count(msg, "site refused") != 1 {
		t.Errorf("the client reports the close as %q", msg)
	}
}

// TestRestartedSiteRemovesTempFilesOfCutObjects: a site killed while it
// received objects leaves their hidden temporary files (up to an object's
// size each) in its repository directory. The site has no key to prune
// with, so nothing else ever removes them: a restart does, while it
// keeps every stored object.
func TestRestartedSiteRemovesTempFilesOfCutObjects(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 3, 256<<10)
	dir := filepath.Join(t.TempDir(), "site")
	st := newSite(t, dir)
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := objects(t, dir)
	var shard tiers.Handle
	for h := range before {
		if h.Type == tiers.TypeData {
			shard = h
		}
	}
	temps := []string{
		filepath.Join(dir, "data", shard.Name[:2], "."+shard.Name+".tmp-1ut4p2up6ln06"),
		filepath.Join(dir, "snapshots", "."+strings.Repeat("a", 64)+".tmp-2steawn390p2u"),
	}
	old := time.Now().Add(-time.Minute)
	for _, f := range temps {
		if err := os.WriteFile(f, make([]byte, 1000), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
	st.s.Close()
	s, err := NewServer(ctx, ServerOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range temps {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left by a cut object is still there after a restart (%v)", f, err)
		}
	}
	if after := objects(t, dir); len(after) != len(before) {
		t.Errorf("%d objects after the restart, %d before", len(after), len(before))
	}
}

// TestSameConfigFromTwoSessionsOfOneRepository: two sessions of the same
// repository (replicate and a tier run, say) both find an empty site and
// are both asked for the config. The second to send it sends the very
// bytes the first stored: that is no replacement and no damage, and was
// refused as an object that does not match its name.
func TestSameConfigFromTwoSessionsOfOneRepository(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	st := newSite(t, "")
	body, err := tiers.LoadAll(ctx, p.be, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Other bytes of the same size and repository: still never taken.
	other := bytes.Replace(body, []byte("\n"), []byte(" "), 1)
	var sessions []*rawSession
	for range 3 {
		rs, _, err := openRaw(t, st, p.r.Config().ID)
		if err != nil {
			t.Fatal(err)
		}
		if want, err := rs.offer(tiers.TypeConfig, "config", int64(len(body))); err != nil || !want[0] {
			t.Fatalf("offer the config to an empty site: want %v, %v", want, err)
		}
		sessions = append(sessions, rs)
	}
	if err := sessions[0].put(tiers.TypeConfig, "config", body); err != nil {
		t.Fatalf("the first session sends the config: %v", err)
	}
	if err := sessions[1].put(tiers.TypeConfig, "config", other); err == nil {
		t.Errorf("a config of other bytes replaced the site's")
	}
	if err := sessions[2].put(tiers.TypeConfig, "config", body); err != nil {
		t.Errorf("another session sends the same config: %v", err)
	}
	if got, err := tiers.LoadAll(ctx, st.s.store, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0); err != nil || !bytes.Equal(got, body) {
		t.Errorf("the site's config changed: %v", err)
	}
}

// slowBody serves one body: its first bytes at once, the rest after a
// pause, as a primary whose source hangs for a while.
type slowBody struct {
	bytesBackend
	pause time.Duration
}

func (b *slowBody) Load(_ context.Context, _ tiers.Handle, _, _ int64, fn func(io.Reader) error) error {
	return fn(io.MultiReader(bytes.NewReader(b.b[:100]), &pausedReader{r: bytes.NewReader(b.b[100:]), pause: b.pause}))
}

type pausedReader struct {
	r      io.Reader
	pause  time.Duration
	paused bool
}

func (p *pausedReader) Read(b []byte) (int, error) {
	if !p.paused {
		p.paused = true
		time.Sleep(p.pause)
	}
	return p.r.Read(b)
}

// TestSiteResetsAnObjectWhoseBodyStalls: a primary that stops sending an
// object's body for longer than the site's BodyIdleTimeout has the
// object's stream reset, rather than holding it at the site for as long
// as the connection lives; with a pause shorter than that the object is
// stored.
func TestSiteResetsAnObjectWhoseBodyStalls(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 3, 256<<10)
	dir := filepath.Join(t.TempDir(), "site")
	s, err := NewServer(ctx, ServerOptions{Dir: dir, BodyIdleTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	st := &site{t: t, dir: dir, s: s}
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	have := objects(t, dir)
	p.backup("hv01", 3, 256<<10)
	var shards []tiers.Handle
	for h := range objects(t, p.dir) {
		if _, ok := have[h]; !ok && h.Type == tiers.TypeData {
			shards = append(shards, h)
		}
	}
	if len(shards) < 2 {
		t.Fatalf("%d new shards, want two", len(shards))
	}
	body := func(h tiers.Handle) []byte {
		b, err := tiers.LoadAll(ctx, p.be, h, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rs, _, err := openRaw(t, st, p.r.Config().ID)
	if err != nil {
		t.Fatal(err)
	}
	send := func(h tiers.Handle, pause time.Duration) error {
		b := body(h)
		if _, err := rs.offer(h.Type, h.Name, int64(len(b))); err != nil {
			t.Fatal(err)
		}
		return sendObject(ctx, rs.cc, &slowBody{bytesBackend{b}, pause}, job{h: h, size: int64(len(b))}, ReplicateOptions{Timeout: 10 * time.Second})
	}
	if err := send(shards[0], 2*time.Second); err == nil {
		t.Errorf("an object whose body paused 2 s was stored by a site that waits 300 ms")
	}
	if err := send(shards[1], 50*time.Millisecond); err != nil {
		t.Errorf("an object whose body paused 50 ms: %v", err)
	}
}

// failingBody serves the first 100 bytes of one body, then fails, as a
// primary whose disk returns an I/O error part-way through an object.
type failingBody struct{ bytesBackend }

var errSourceRead = errors.New("source read: input/output error")

func (b *failingBody) Load(_ context.Context, _ tiers.Handle, _, _ int64, fn func(io.Reader) error) error {
	return fn(io.MultiReader(bytes.NewReader(b.b[:100]), iotest.ErrReader(errSourceRead)))
}

// TestSourceErrorMidObjectFailsAtOnce: an object whose source read fails
// after some of its bytes were sent fails with the source's error at
// once, not after the wait for a verdict the site cannot give (it still
// waits for the rest of the body).
func TestSourceErrorMidObjectFailsAtOnce(t *testing.T) {
	ctx := context.Background()
	st := newSite(t, "")
	body := []byte(strings.Repeat("k", 4096))
	h := tiers.Handle{Type: tiers.TypeKey, Name: id.Hash(body).String()}
	rs, _, err := openRaw(t, st, id.Hash([]byte("repo")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.offer(h.Type, h.Name, int64(len(body))); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = sendObject(ctx, rs.cc, &failingBody{bytesBackend{body}}, job{h: h, size: int64(len(body))}, ReplicateOptions{Timeout: 5 * time.Second})
	if !errors.Is(err, errSourceRead) {
		t.Errorf("send with a failing source: %v, want the source's error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("send with a failing source took %v to fail", d.Round(time.Millisecond))
	}
}

// TestSiteStatusCancelWhileSiteStalls: Ctrl-C ends a status request
// whose site opened the session but never answers the request at once,
// not after the status timeout.
func TestSiteStatusCancelWhileSiteStalls(t *testing.T) {
	client, server, link := pipePair("primary", -1)
	defer link.close(nil)
	go func() {
		st, err := server.AcceptStream(context.Background())
		if err != nil {
			return
		}
		if _, err := ReadFrame(st); err != nil { // Hello
			return
		}
		WriteFrame(st, FrameWelcome, Welcome{SiteName: "dr", MaxObjectSize: 1 << 31}.encode())
		io.Copy(io.Discard, st) // reads on, never answers
	}()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := SiteStatus(ctx, client, time.Minute)
	if d := time.Since(start); d > 10*time.Second || !errors.Is(err, context.Canceled) {
		t.Errorf("status cancelled while the site stalls: %v after %v; want context.Canceled at once", err, d.Round(time.Millisecond))
	}
}

// stallAfterBye is a site connection that, once the site has answered a
// Bye, neither ends its side of the control stream nor closes: a site
// that hangs while a session ends.
type stallAfterBye struct {
	*pipeConn
	onBye    func()
	accepted atomic.Bool
}

func (c *stallAfterBye) AcceptStream(ctx context.Context) (Stream, error) {
	st, err := c.pipeConn.AcceptStream(ctx)
	if err == nil && !c.accepted.Swap(true) {
		return &byeStall{Stream: st, onBye: c.onBye}, nil
	}
	return st, err
}

func (c *stallAfterBye) CloseWithError(ErrorCode, string) error { return nil }

type byeStall struct {
	Stream
	onBye func()
}

func (s *byeStall) CloseWrite() error { s.onBye(); return nil }

// TestReplicateCancelWhileSiteStallsAfterBye: Ctrl-C ends a replication
// whose site hangs after everything was sealed, while the client waits
// for the site to end the session, at once, not after
// ReplicateOptions.Timeout.
func TestReplicateCancelWhileSiteStallsAfterBye(t *testing.T) {
	p := newPrimary(t)
	p.backup("h", 3, 1<<16)
	st := newSite(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client, server, link := pipePair("primary", -1)
	defer link.close(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.s.ServeConn(context.Background(), &stallAfterBye{pipeConn: server, onBye: func() { time.AfterFunc(200*time.Millisecond, cancel) }})
	}()
	start := time.Now()
	_, err := Replicate(ctx, client, p.be, ReplicateOptions{Timeout: time.Minute, SnapshotMeta: p.meta})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("replicate cancelled while the site stalls after Bye: %v after %v; want it to end at once", err, d.Round(time.Millisecond))
	}
	link.close(nil)
	<-done
}

// TestExtraConnectionCancelledAsSessionOpens: a connection dialed for a
// session that opens just as the replication is cancelled gives up
// without reading the session id the opening connection is setting
// (under -race this is a data race), and is closed.
func TestExtraConnectionCancelledAsSessionOpens(t *testing.T) {
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var dialed *pipeConn
		o := ReplicateOptions{Connections: 2, Timeout: time.Second, Dial: func(context.Context) (Conn, error) {
			dialed, _, _ = pipePair("primary", -1)
			return dialed, nil
		}}
		x := &extraConns{cancel: func() {}, n: 1, results: make(chan joinResult, 1), ready: make(chan struct{})}
		var wg sync.WaitGroup
		wg.Go(func() { x.setSession(SessionID{1: 1}) })
		res := x.dialAndJoin(ctx, 1, id.Hash([]byte("repo")), o)
		wg.Wait()
		if res.err == nil {
			t.Fatal("a connection joined a cancelled session")
		}
		select {
		case <-dialed.l.done:
		default:
			t.Fatal("the dialed connection of a cancelled session is left open")
		}
	}
}

// stallingPut is a site store whose Put reads the first bytes of an
// object and then takes no more until release is closed, as a site whose
// disk hangs.
type stallingPut struct {
	tiers.Backend
	release chan struct{}
}

func (s *stallingPut) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if _, err := io.CopyN(io.Discard, rd, 64<<10); err != nil {
		return err
	}
	<-s.release
	return errors.New("stalled store released")
}

// TestReplicateFailsWhenSiteStopsReadingABody: a site that stops taking
// an object's bytes part-way (its storage hangs) while its connection
// stays alive fails the object after ReplicateOptions.Timeout, over real
// QUIC, rather than holding the replication for ever.
func TestReplicateFailsWhenSiteStopsReadingABody(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "tls")
	if _, err := InitTLS(dir, "dr-test", "hv01", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	stall := &stallingPut{release: make(chan struct{})}
	st := newSiteOn(t, func(be tiers.Backend) tiers.Backend { stall.Backend = be; return stall })
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
	defer c.CloseWithError(CodeOK, "done")
	ctl, _, err := openSession(ctx, c, Hello{Purpose: PurposeReplicate, RepoID: id.Hash([]byte("repo")), Program: "test"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Abort()
	// Larger than every flow-control window, so the writes must wait
	// for the site.
	body := bytes.Repeat([]byte("stalled key "), 48<<20/12)
	h := tiers.Handle{Type: tiers.TypeKey, Name: id.Hash(body).String()}
	if _, err := exchangeOffer(ctx, ctl, Offer{Type: h.Type, Entries: []OfferEntry{{h.Name, int64(len(body))}}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- sendObject(ctx, c, &bytesBackend{body}, job{h: h, size: int64(len(body))}, ReplicateOptions{Timeout: time.Second})
	}()
	awaitTimeout(t, c, done, start, "send to a site that stopped reading")
}

// awaitTimeout checks the result on done of an operation begun at start
// against a peer that stopped moving bytes, with a timeout of 1s: it must
// fail with a deadline error well before 10s. After 20s the connection
// is closed to end it, and the test fails.
func awaitTimeout(t *testing.T, c Conn, done <-chan error, start time.Time, what string) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: %v, want a timeout", what, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s failed after %v, its timeout is 1s", what, d.Round(time.Millisecond))
		}
	case <-time.After(20 * time.Second):
		c.CloseWithError(CodeOK, "test over")
		<-done
		t.Errorf("%s still waits after 20s, its timeout is 1s", what)
	}
}

// configCommitThenFail commits the first config stored and then fails,
// as a store whose directory sync fails after the rename.
type configCommitThenFail struct {
	tiers.Backend
	once sync.Once
}

func (c *configCommitThenFail) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	err := c.Backend.Put(ctx, h, rd, size)
	failed := false
	if err == nil && h.Type == tiers.TypeConfig {
		c.once.Do(func() { failed = true })
	}
	if failed {
		return errors.New("object written but directory sync failed")
	}
	return err
}

// TestConfigCommittedDespiteStoreErrorClaimsSite: a config the store
// committed although its Put failed makes the site that repository's:
// another repository's primary is refused, not told the site holds its
// config (same name, same size) and mixed into the first repository.
func TestConfigCommittedDespiteStoreErrorClaimsSite(t *testing.T) {
	ctx := context.Background()
	a, b := newPrimary(t), newPrimary(t)
	a.backup("hv01", 2, 32<<10)
	b.backup("hv02", 2, 32<<10)
	st := newSiteOn(t, func(be tiers.Backend) tiers.Backend { return &configCommitThenFail{Backend: be} })
	if _, err := st.replicatePipe(ctx, a, -1, ReplicateOptions{}); err == nil {
		t.Fatal("replicate succeeded although the site failed to store the config")
	}
	c, err := repo.ReadConfig(ctx, st.s.store)
	if err != nil || c.ID != a.r.Config().ID {
		t.Fatalf("the site's config after the failed store: %v, want repository %s's", err, a.r.Config().ID.Short())
	}
	_, err = st.replicatePipe(ctx, b, -1, ReplicateOptions{})
	if code(err) != CodeRepoMismatch {
		t.Errorf("another repository's replicate to the site holding the first's config: %v, want a repository-mismatch refusal", err)
	}
	for h := range objects(t, st.dir) {
		if _, err := b.be.Stat(ctx, h); err == nil && h.Type != tiers.TypeConfig {
			t.Errorf("%s of the second repository was stored in the first's site repository", h)
		}
	}
}
