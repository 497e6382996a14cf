package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// rawSession opens a replicate session by hand so tests can send what a
// well-behaved client never would.
type rawSession struct {
	t    *testing.T
	cc   *pipeConn
	ctl  Stream
	done chan error
}

func openRaw(t *testing.T, st *site, repoID id.ID) (*rawSession, Welcome, error) {
	t.Helper()
	cc, sc, _ := pipePair("raw-client", -1)
	done := make(chan error, 1)
	go func() { done <- st.s.ServeConn(context.Background(), sc) }()
	ctl, w, err := openSession(context.Background(), cc, Hello{Purpose: PurposeReplicate, RepoID: repoID, Program: "test"}, 10*time.Second)
	rs := &rawSession{t: t, cc: cc, ctl: ctl, done: done}
	t.Cleanup(func() { cc.CloseWithError(CodeOK, ""); <-done })
	return rs, w, err
}

func (rs *rawSession) offer(ty tiers.Type, name string, size int64) ([]bool, error) {
	return exchangeOffer(context.Background(), rs.ctl, Offer{Type: ty, Entries: []OfferEntry{{name, size}}}, 10*time.Second)
}

func (rs *rawSession) put(ty tiers.Type, name string, body []byte) error {
	return sendObject(context.Background(), rs.cc, &bytesBackend{body}, job{h: tiers.Handle{Type: ty, Name: name}, size: int64(len(body))}, ReplicateOptions{Timeout: 10 * time.Second})
}

// bytesBackend serves one body for any handle (sendObject's source).
type bytesBackend struct{ b []byte }

func (b *bytesBackend) Location() string { return "memory" }
func (b *bytesBackend) Put(context.Context, tiers.Handle, io.Reader, int64) error {
	return errors.New("read-only")
}
func (b *bytesBackend) Load(_ context.Context, _ tiers.Handle, _, _ int64, fn func(io.Reader) error) error {
	return fn(bytes.NewReader(b.b))
}
func (b *bytesBackend) Stat(_ context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	return tiers.ObjectInfo{Handle: h, Size: int64(len(b.b))}, nil
}
func (b *bytesBackend) List(context.Context, tiers.Type, func(tiers.ObjectInfo) error) error {
	return nil
}
func (b *bytesBackend) Remove(context.Context, tiers.Handle) error { return nil }
func (b *bytesBackend) Close() error                               { return nil }

func code(err error) ErrorCode {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return 0
}

func TestRefusesBadNamesAndOrder(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 10, 256<<10)
	cfg := p.r.Config()
	parent := t.TempDir()
	st := newSite(t, filepath.Join(parent, "site"))

	tricks := []struct {
		ty   tiers.Type
		name string
	}{
		{tiers.TypeData, "../../../etc/passwd"},
		{tiers.TypeIndex, "../" + strings.Repeat("a", 61)},
		{tiers.TypeSnapshot, "/etc/shadow"},
		{tiers.TypeKey, "..\\..\\x"},
		{tiers.TypeData, "a/b"},
		{tiers.TypeIndex, ".hidden"},
		{tiers.TypeIndex, strings.Repeat("A", 64)}, // not canonical
		{tiers.TypeData, strings.Repeat("a", 64) + "-01"},
		{tiers.TypeData, strings.Repeat("a", 64) + "-255"},
		{tiers.TypeConfig, "config2"},
		{tiers.TypeSnapshot, "x\x00y"},
		{tiers.TypeIndex, ""},
	}
	for _, tr := range tricks {
		rs, _, err := openRaw(t, st, cfg.ID)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rs.offer(tr.ty, tr.name, 10)
		if code(err) != CodeBadName {
			t.Errorf("offer %s/%q: got %v, want a bad-name refusal", tr.ty, tr.name, err)
		}
		// A Put of the same name (never offered) is refused as well.
		rs2, _, err := openRaw(t, st, cfg.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := rs2.put(tr.ty, tr.name, []byte("0123456789")); code(err) != CodeBadName {
			t.Errorf("put %s/%q: got %v, want a bad-name refusal", tr.ty, tr.name, err)
		}
	}
	// Nothing was written anywhere under the parent but the site's own
	// (empty) structure.
	filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("file %s written by refused requests", p)
		}
		return nil
	})

	// Verification: bytes that do not match the name are refused and
	// leave nothing behind.
	objs := objects(t, p.dir)
	var shard, index, snap tiers.Handle
	for h := range objs {
		switch h.Type {
		case tiers.TypeData:
			shard = h
		case tiers.TypeIndex:
			index = h
		case tiers.TypeSnapshot:
			snap = h
		}
	}
	good, err := tiers.LoadAll(ctx, p.be, shard, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	rs, _, err := openRaw(t, st, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if w, err := rs.offer(shard.Type, shard.Name, int64(len(bad))); err != nil || !w[0] {
		t.Fatalf("offer %s: %v %v", shard, w, err)
	}
	if err := rs.put(shard.Type, shard.Name, bad); code(err) != CodeVerify {
		t.Errorf("corrupt shard: got %v, want a verification refusal", err)
	}
	if _, err := st.s.store.Stat(ctx, shard); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("corrupt shard stored: %v", err)
	}

	// Order: index before data is sealed, snapshot before index is sealed.
	rs, _, err = openRaw(t, st, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	ib, _ := tiers.LoadAll(ctx, p.be, index, 0, 0)
	sb, _ := tiers.LoadAll(ctx, p.be, snap, 0, 0)
	rs.offer(index.Type, index.Name, int64(len(ib)))
	if err := rs.put(index.Type, index.Name, ib); code(err) != CodeOrder {
		t.Errorf("index before data sealed: got %v, want an order refusal", err)
	}
	rs.offer(snap.Type, snap.Name, int64(len(sb)))
	if err := rs.put(snap.Type, snap.Name, sb); code(err) != CodeOrder {
		t.Errorf("snapshot before index sealed: got %v, want an order refusal", err)
	}
	// Unsolicited: a put never offered.
	if err := rs.put(shard.Type, shard.Name, good); code(err) != CodeUnsolicited {
		t.Errorf("unsolicited put: got %v, want an unsolicited refusal", err)
	}
	// Sealing with outstanding objects fails.
	for _, ty := range []tiers.Type{tiers.TypeConfig, tiers.TypeKey, tiers.TypeData} {
		err := exchangeSeal(ctx, rs.ctl, ty, 10*time.Second)
		if ty != tiers.TypeData && err != nil {
			t.Fatalf("seal %s: %v", ty, err)
		}
		if ty == tiers.TypeData {
			// Data had nothing outstanding in this session: it seals.
			if err != nil {
				t.Fatalf("seal data: %v", err)
			}
		}
	}
	if err := exchangeSeal(ctx, rs.ctl, tiers.TypeIndex, 10*time.Second); code(err) != CodeIncomplete {
		t.Errorf("seal index with the index object outstanding: got %v, want incomplete", err)
	}
	if len(objects(t, st.dir)) != 0 {
		t.Errorf("refused objects were stored: %v", objects(t, st.dir))
	}

	// A config that does not parse is refused.
	rs, _, err = openRaw(t, st, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	junk := []byte(`{"format":"something-else"}`)
	rs.offer(tiers.TypeConfig, "config", int64(len(junk)))
	if err := rs.put(tiers.TypeConfig, "config", junk); code(err) != CodeVerify {
		t.Errorf("junk config: got %v, want a verification refusal", err)
	}

	// After a real replication, another repository is refused at Hello.
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	other := id.Hash([]byte("another repository"))
	if _, _, err := openRaw(t, st, other); code(err) != CodeRepoMismatch {
		t.Errorf("other repository: got %v, want a repository-mismatch refusal", err)
	}
	// And the site's config is never replaced, even by a valid one.
	p2 := newPrimary(t)
	raw2, _ := tiers.LoadAll(ctx, p2.be, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0)
	rs, _, err = openRaw(t, st, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := rs.offer(tiers.TypeConfig, "config", int64(len(raw2))); len(w) == 1 && w[0] {
		if err := rs.put(tiers.TypeConfig, "config", raw2); code(err) != CodeVerify {
			t.Errorf("replacing config: got %v, want a refusal", err)
		}
	}
	if c, err := repo.ReadConfig(ctx, st.s.store); err != nil || c.ID != cfg.ID {
		t.Errorf("site config now %v (%v), want %s", c, err, cfg.ID)
	}
}

func TestShardVerifierAgreesWithErasure(t *testing.T) {
	pack := make([]byte, 100_003)
	for i := range pack {
		pack[i] = byte(i * 31)
	}
	pid, shards, err := erasure.Encode(erasure.Params{K: 3, M: 2}, pack)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, idx int, obj []byte, chunk int) error {
		h := tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, idx)}
		v, err := newVerifier(h, int64(len(obj)), nil)
		if err != nil {
			return err
		}
		for off := 0; off < len(obj); off += chunk {
			if _, err := v.Write(obj[off:min(off+chunk, len(obj))]); err != nil {
				return err
			}
		}
		return v.finish()
	}
	for i, s := range shards {
		for _, chunk := range []int{1, 7, 20, 200, 1 << 20} {
			if err := check("good", i, s, chunk); err != nil {
				t.Fatalf("intact shard %d (chunks of %d): %v", i, chunk, err)
			}
		}
		if err := check("wrong index", (i+1)%len(shards), s, 4096); err == nil {
			t.Errorf("shard %d accepted under index %d", i, (i+1)%len(shards))
		}
		for _, off := range []int{0, 5, 8, 16, 20, 40, erasure.HeaderSize(erasure.Params{K: 3, M: 2}) - 1, len(s) / 2, len(s) - 1} {
			c := bytes.Clone(s)
			c[off] ^= 0x40
			_, eerr := erasure.VerifyShard(pid, i, c)
			verr := check("flip", i, c, 333)
			if (eerr == nil) != (verr == nil) {
				t.Errorf("shard %d flip at %d: erasure says %v, stream verifier says %v", i, off, eerr, verr)
			}
		}
		for _, cut := range []int{0, 10, 100, len(s) - 1} {
			if err := check("short", i, s[:cut], 64); err == nil {
				t.Errorf("shard %d truncated to %d accepted", i, cut)
			}
		}
	}
}

// TestSessionJoin: only the primary that owns a running session may add
// connections to it, objects sent on joined connections count for the
// owner's seals, and a session's joined connections end with it.
func TestSessionJoin(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 10, 256<<10)
	cfg := p.r.Config()
	st := newSite(t, "")

	// dialAs connects as peer; the channel yields how the site's side of
	// the connection ended.
	dialAs := func(peer string) (*pipeConn, chan error) {
		cc, sc, _ := pipePair(peer, -1)
		done := make(chan error, 1)
		var served sync.WaitGroup
		served.Go(func() { done <- st.s.ServeConn(ctx, sc) })
		t.Cleanup(func() { cc.CloseWithError(CodeOK, ""); served.Wait() })
		return cc, done
	}
	join := func(peer string, repoID id.ID, sess SessionID) (*pipeConn, Stream, error) {
		cc, _ := dialAs(peer)
		ctl, w, err := openSession(ctx, cc, Hello{Purpose: PurposeJoin, RepoID: repoID, Session: sess, Program: "test"}, 10*time.Second)
		if err == nil && w.Session != sess {
			t.Errorf("joined session %x, asked for %x", w.Session, sess)
		}
		return cc, ctl, err
	}

	owner, ownerDone := dialAs("raw-client")
	ctl, w, err := openSession(ctx, owner, Hello{Purpose: PurposeReplicate, RepoID: cfg.ID, Program: "test"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if w.Session.IsZero() {
		t.Fatal("Welcome of a replicate session names no session")
	}
	// Unknown session, another primary's session, another repository.
	var bogus SessionID
	bogus[0] = 1
	if _, _, err := join("raw-client", cfg.ID, bogus); code(err) != CodeNoSession {
		t.Errorf("join of an unknown session: got %v, want no-session", err)
	}
	if _, _, err := join("hv-other", cfg.ID, w.Session); code(err) != CodeNoSession {
		t.Errorf("join by another primary: got %v, want no-session", err)
	}
	if _, _, err := join("raw-client", id.Hash([]byte("other repo")), w.Session); code(err) != CodeRepoMismatch {
		t.Errorf("join naming another repository: got %v, want repository mismatch", err)
	}
	// A good join: the object offered on the owner's control stream and
	// sent on the joined connection lets the owner seal.
	jc, jctl, err := join("raw-client", cfg.ID, w.Session)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := tiers.LoadAll(ctx, p.be, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want, err := exchangeOffer(ctx, ctl, Offer{Type: tiers.TypeConfig, Entries: []OfferEntry{{"config", int64(len(raw))}}}, 10*time.Second); err != nil || !want[0] {
		t.Fatalf("offer config: %v %v", want, err)
	}
	if err := exchangeSeal(ctx, ctl, tiers.TypeConfig, 10*time.Second); code(err) != CodeIncomplete {
		t.Fatalf("seal before the config arrived: got %v, want incomplete", err)
	}
	// That refusal ended the session: its joined connection is closed
	// and refuses further objects.
	if err := <-ownerDone; code(err) != CodeIncomplete {
		t.Errorf("owner connection ended with %v", err)
	}
	if err := sendObject(ctx, jc, &bytesBackend{raw}, job{h: tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, size: int64(len(raw))}, ReplicateOptions{Timeout: 5 * time.Second}); err == nil {
		t.Error("object accepted on a connection whose session has ended")
	}
	if _, _, err := join("raw-client", cfg.ID, w.Session); code(err) != CodeNoSession {
		t.Errorf("join of an ended session: got %v, want no-session", err)
	}
	_ = jctl

	// Again, properly: the config goes over the joined connection.
	owner, _ = dialAs("raw-client")
	ctl, w, err = openSession(ctx, owner, Hello{Purpose: PurposeReplicate, RepoID: cfg.ID, Program: "test"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	jc, jctl, err = join("raw-client", cfg.ID, w.Session)
	if err != nil {
		t.Fatal(err)
	}
	if want, err := exchangeOffer(ctx, ctl, Offer{Type: tiers.TypeConfig, Entries: []OfferEntry{{"config", int64(len(raw))}}}, 10*time.Second); err != nil || !want[0] {
		t.Fatalf("offer config: %v %v", want, err)
	}
	if err := sendObject(ctx, jc, &bytesBackend{raw}, job{h: tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, size: int64(len(raw))}, ReplicateOptions{Timeout: 5 * time.Second}); err != nil {
		t.Fatalf("config over the joined connection: %v", err)
	}
	if err := exchangeSeal(ctx, ctl, tiers.TypeConfig, 10*time.Second); err != nil {
		t.Fatalf("seal after the config arrived on a joined connection: %v", err)
	}
	// A joined connection carries objects only: control frames are refused.
	if _, err := exchangeOffer(ctx, jctl, Offer{Type: tiers.TypeKey, Entries: nil}, 5*time.Second); code(err) != CodeBadFrame {
		t.Errorf("offer on a joined connection: got %v, want bad frame", err)
	}
	if c, err := repo.ReadConfig(ctx, st.s.store); err != nil || c.ID != cfg.ID {
		t.Errorf("site config %v (%v), want %s", c, err, cfg.ID)
	}
}

// TestSnapshotRecordOnlyForVerifiedSnapshots: the host and time a
// primary asserts for a snapshot are recorded only for a snapshot object
// the site verified and committed, and never replace those of a snapshot
// the site already holds: neither a Put that fails verification nor one
// that repairs a damaged copy changes what site status and the metrics
// show for that snapshot.
func TestSnapshotRecordOnlyForVerifiedSnapshots(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 5, 64<<10)
	cfg := p.r.Config()
	st := newSite(t, "")
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	var snap tiers.Handle
	for h := range objects(t, p.dir) {
		if h.Type == tiers.TypeSnapshot {
			snap = h
		}
	}
	good, err := tiers.LoadAll(ctx, p.be, snap, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		s, err := st.s.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Hosts) != 1 || s.Hosts[0].Host != "hv01" || s.Hosts[0].LatestSnapshot != snap.Name || s.SnapshotsWithoutMeta != 0 {
			t.Errorf("%s: status hosts %+v (%d snapshots without meta), want hv01's snapshot %s", when, s.Hosts, s.SnapshotsWithoutMeta, snap.Name[:8])
		}
		// The running site's metrics, and those a restarted site seeds
		// from its records.
		m := NewMetrics()
		s2, err := NewServer(ctx, ServerOptions{Dir: st.dir, Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		for _, m := range []*Metrics{st.s.m, m} {
			srv := httptest.NewServer(m.Handler())
			got := scrape(t, srv.URL)
			srv.Close()
			if v, ok := got[`drpipe_site_last_snapshot_timestamp_seconds{host="forged"}`]; ok {
				t.Errorf("%s: the metrics show the forged host at %v", when, v)
			}
		}
	}
	check("after replication")
	forged := func(context.Context, string) (*SnapshotMeta, error) {
		return &SnapshotMeta{Host: "forged", Time: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)}, nil
	}
	sealAll := func(rs *rawSession) {
		t.Helper()
		for _, ty := range []tiers.Type{tiers.TypeConfig, tiers.TypeKey, tiers.TypeData, tiers.TypeIndex} {
			if err := exchangeSeal(ctx, rs.ctl, ty, 10*time.Second); err != nil {
				t.Fatalf("seal %s: %v", ty, err)
			}
		}
	}

	// The held snapshot's name offered with another size, then bytes that
	// are not that snapshot.
	rs, _, err := openRaw(t, st, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	sealAll(rs)
	junk := bytes.Repeat([]byte{7}, len(good)+1)
	if w, err := rs.offer(snap.Type, snap.Name, int64(len(junk))); err != nil || !w[0] {
		t.Fatalf("offer %s with another size: %v %v", snap, w, err)
	}
	err = sendObject(ctx, rs.cc, &bytesBackend{junk}, job{h: snap, size: int64(len(junk))}, ReplicateOptions{Timeout: 10 * time.Second, SnapshotMeta: forged})
	if code(err) != CodeVerify {
		t.Fatalf("put of bytes that are not the snapshot: got %v, want a verification refusal", err)
	}
	check("after a refused put")

	// The site's copy damaged (cut short), then repaired by a primary
	// asserting another host and time: the object is replaced, its
	// record is not.
	if err := os.Truncate(filepath.Join(st.dir, "snapshots", snap.Name), int64(len(good)-1)); err != nil {
		t.Fatal(err)
	}
	rs, _, err = openRaw(t, st, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	sealAll(rs)
	if w, err := rs.offer(snap.Type, snap.Name, int64(len(good))); err != nil || !w[0] {
		t.Fatalf("offer %s over its damaged copy: %v %v", snap, w, err)
	}
	if err := sendObject(ctx, rs.cc, &bytesBackend{good}, job{h: snap, size: int64(len(good))}, ReplicateOptions{Timeout: 10 * time.Second, SnapshotMeta: forged}); err != nil {
		t.Fatalf("repair the damaged snapshot: %v", err)
	}
	check("after a repair")
}

// TestSnapshotWithoutRecordIsWantedAgain: a snapshot the site holds but
// has no record of (it stopped between the commit and the record's
// write) is wanted at the next replication, which brings its host and
// time; one with a record is not sent again.
func TestSnapshotWithoutRecordIsWantedAgain(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 5, 64<<10)
	st := newSite(t, "")
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	recs, _ := filepath.Glob(filepath.Join(st.dir, StateDirName, "snapshots", "*.json"))
	if len(recs) != 1 {
		t.Fatalf("%d snapshot records at the site, want 1", len(recs))
	}
	if err := os.Remove(recs[0]); err != nil {
		t.Fatal(err)
	}
	if s, err := st.s.Status(ctx); err != nil || s.SnapshotsWithoutMeta != 1 {
		t.Fatalf("status with the record gone: %+v, %v", s, err)
	}
	rep, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.SentTotal.Objects != 1 {
		t.Errorf("replicate sent %d objects, want the snapshot without a record", rep.SentTotal.Objects)
	}
	s, err := st.s.Status(ctx)
	if err != nil || s.SnapshotsWithoutMeta != 0 || len(s.Hosts) != 1 || s.Hosts[0].Host != "hv01" {
		t.Errorf("status after the snapshot came again: %+v, %v", s, err)
	}
	if rep, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil || rep.SentTotal.Objects != 0 {
		t.Errorf("replicate with nothing new: %d objects sent, %v", rep.SentTotal.Objects, err)
	}
}
