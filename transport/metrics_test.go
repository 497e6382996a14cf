package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// scrape reads the metrics over HTTP in the text exposition format:
// series (name and labels as printed) -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func sumSeries(m map[string]float64, prefix string) (s float64) {
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

// TestMetricsAfterReplicate replicates two hosts' snapshots over three
// connections and scrapes the site's handler: per type, the received
// bytes and objects are exactly what the site now holds; the last
// snapshot time per host is the snapshot's; one session, no errors. A cut
// run then counts its failed session and only its committed objects.
func TestMetricsAfterReplicate(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	s1 := p.backup("hv01", 30, 1<<20)
	s2 := p.backup("hv02", 20, 1<<20)
	st := newSite(t, "")
	srv := httptest.NewServer(st.s.m.Handler())
	defer srv.Close()

	m0 := scrape(t, srv.URL)
	if n := sumSeries(m0, "drpipe_site_received_objects_total"); n != 0 {
		t.Errorf("before replicating: %v objects received", n)
	}
	if m0["drpipe_site_sessions_total"] != 0 || m0["drpipe_site_active_sessions"] != 0 {
		t.Errorf("before replicating: sessions %v, active %v", m0["drpipe_site_sessions_total"], m0["drpipe_site_active_sessions"])
	}
	if _, ok := m0["go_goroutines"]; !ok {
		t.Error("the Go collector's metrics are missing")
	}

	rep, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{Connections: 3})
	if err != nil {
		t.Fatal(err)
	}
	m1 := scrape(t, srv.URL)
	want := map[tiers.Type][2]float64{}
	for h, n := range objects(t, st.dir) {
		v := want[h.Type]
		want[h.Type] = [2]float64{v[0] + 1, v[1] + float64(n)}
	}
	for ty, v := range want {
		if got := m1[fmt.Sprintf(`drpipe_site_received_objects_total{type="%s"}`, ty)]; got != v[0] {
			t.Errorf("%s objects: metric %v, site holds %v", ty, got, v[0])
		}
		if got := m1[fmt.Sprintf(`drpipe_site_received_bytes_total{type="%s"}`, ty)]; got != v[1] {
			t.Errorf("%s bytes: metric %v, site holds %v", ty, got, v[1])
		}
	}
	if got := sumSeries(m1, "drpipe_site_received_bytes_total"); got != float64(rep.SentTotal.Bytes) {
		t.Errorf("metrics count %v bytes received, the report %d sent", got, rep.SentTotal.Bytes)
	}
	for host, sn := range map[string]float64{"hv01": float64(s1.Time.UnixNano()) / 1e9, "hv02": float64(s2.Time.UnixNano()) / 1e9} {
		if got := m1[fmt.Sprintf(`drpipe_site_last_snapshot_timestamp_seconds{host="%s"}`, host)]; math.Abs(got-sn) > 1e-3 {
			t.Errorf("last snapshot time of %s: metric %.6f, snapshot %.6f", host, got, sn)
		}
	}
	if n := sumSeries(m1, "drpipe_site_errors_total"); n != 0 {
		t.Errorf("a clean replicate counted %v errors", n)
	}
	if m1["drpipe_site_sessions_total"] != 1 || m1["drpipe_site_active_sessions"] != 0 {
		t.Errorf("one session over %d connections: sessions_total %v (want 1), active %v (want 0)",
			rep.Connections, m1["drpipe_site_sessions_total"], m1["drpipe_site_active_sessions"])
	}

	// A newer hv01 snapshot, its run cut part-way: the failed session
	// is counted; received counts exactly the objects committed.
	before := objects(t, st.dir)
	s3 := p.backup("hv01", 40, 3<<20)
	if _, err := st.replicatePipe(ctx, p, 1<<20, ReplicateOptions{}); err == nil {
		t.Fatal("the cut run succeeded")
	}
	m2 := scrape(t, srv.URL)
	var newObjs, newBytes float64
	for h, n := range objects(t, st.dir) {
		if _, ok := before[h]; !ok {
			newObjs++
			newBytes += float64(n)
		}
	}
	if d := sumSeries(m2, "drpipe_site_received_objects_total") - sumSeries(m1, "drpipe_site_received_objects_total"); d != newObjs {
		t.Errorf("the cut run committed %v objects, the metrics grew by %v", newObjs, d)
	}
	if d := sumSeries(m2, "drpipe_site_received_bytes_total") - sumSeries(m1, "drpipe_site_received_bytes_total"); d != newBytes {
		t.Errorf("the cut run committed %v bytes, the metrics grew by %v", newBytes, d)
	}
	if m2[`drpipe_site_errors_total{reason="session"}`] != 1 {
		t.Errorf("after a cut session: errors %v, want reason=\"session\" 1", m2)
	}
	if m2["drpipe_site_active_sessions"] != 0 {
		t.Errorf("after the cut: %v sessions active", m2["drpipe_site_active_sessions"])
	}

	// The resumed run completes; hv01's time moves to the new snapshot.
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{Connections: 2}); err != nil {
		t.Fatal(err)
	}
	m3 := scrape(t, srv.URL)
	if got, w := m3[`drpipe_site_last_snapshot_timestamp_seconds{host="hv01"}`], float64(s3.Time.UnixNano())/1e9; math.Abs(got-w) > 1e-3 {
		t.Errorf("last snapshot time of hv01 after the resumed run: %.6f, want %.6f", got, w)
	}
	if got, w := m3[`drpipe_site_last_snapshot_timestamp_seconds{host="hv02"}`], m1[`drpipe_site_last_snapshot_timestamp_seconds{host="hv02"}`]; got != w {
		t.Errorf("last snapshot time of hv02 changed: %v -> %v", w, got)
	}
	if m3["drpipe_site_sessions_total"] != 3 {
		t.Errorf("three sessions (one cut): sessions_total %v", m3["drpipe_site_sessions_total"])
	}
	var total float64
	for _, n := range objects(t, st.dir) {
		total += float64(n)
	}
	if got := sumSeries(m3, "drpipe_site_received_bytes_total"); got != total {
		t.Errorf("metrics count %v bytes received in all, the site holds %v", got, total)
	}
}

// TestMetricsSnapshotKeepsNewest: a session delivering an older snapshot
// of a host later does not move its time back; a restarted server seeds
// the times from its state.
func TestMetricsSnapshotKeepsNewest(t *testing.T) {
	m := NewMetrics()
	m.snapshot("hv01", 2000)
	m.snapshot("hv01", 1000)
	m.snapshot("hv02", 1500)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	got := scrape(t, srv.URL)
	if got[`drpipe_site_last_snapshot_timestamp_seconds{host="hv01"}`] != 2000 || got[`drpipe_site_last_snapshot_timestamp_seconds{host="hv02"}`] != 1500 {
		t.Errorf("last snapshot times: %v", got)
	}
	var nilM *Metrics // records nothing, does not panic
	nilM.object("data", 1)
	nilM.Error("x")
	nilM.snapshot("h", 1)
	nilM.session(1)
	nilM.sessionStarted()

	// Restart: a new server on a replicated directory.
	ctx := context.Background()
	p := newPrimary(t)
	sn := p.backup("hv01", 10, 256<<10)
	st := newSite(t, "")
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	m2 := NewMetrics()
	s2, err := NewServer(ctx, ServerOptions{Dir: st.dir, Metrics: m2})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	srv2 := httptest.NewServer(m2.Handler())
	defer srv2.Close()
	got = scrape(t, srv2.URL)
	if v, w := got[`drpipe_site_last_snapshot_timestamp_seconds{host="hv01"}`], float64(sn.Time.UnixNano())/1e9; math.Abs(v-w) > 1e-3 {
		t.Errorf("restarted server: last snapshot time %.6f, want %.6f", v, w)
	}
	if n := sumSeries(got, "drpipe_site_received_objects_total"); n != 0 {
		t.Errorf("restarted server: %v objects received", n)
	}
}

// TestMetricsPeerEndedStreams: a primary that aborts an object stream
// (Ctrl-C), a restore that stops reading an object part-way, and a
// connection that ends mid-object are counted under their own reasons and
// logged below the level of protocol violations, not as malformed input
// ("bad frame", "stream").
func TestMetricsPeerEndedStreams(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 4, 8<<20)
	var logs syncBuffer
	dir := filepath.Join(t.TempDir(), "site")
	s, err := NewServer(ctx, ServerOptions{Dir: dir, Metrics: NewMetrics(),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	st := &site{t: t, dir: dir, s: s}
	if _, err := st.replicatePipe(ctx, p, -1, ReplicateOptions{}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.m.Handler())
	defer srv.Close()
	// await waits until the site has counted want errors of reason.
	await := func(reason string, want float64) {
		t.Helper()
		series := fmt.Sprintf(`drpipe_site_errors_total{reason=%q}`, reason)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			got := scrape(t, srv.URL)
			if got[series] >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is %v, want %v; errors: %v", series, got[series], want, errorSeries(got))
			}
		}
	}
	var shard tiers.Handle
	var size int64
	for h, n := range objects(t, dir) {
		if h.Type == tiers.TypeData && n > size {
			shard, size = h, n
		}
	}
	if size <= 256<<10 {
		t.Fatalf("largest shard has %d bytes, want more than a stream's buffer", size)
	}

	// A restore that stops reading an object after its first bytes.
	b := st.readPipe(t, SiteBackendOptions{})
	stop := errors.New("enough")
	if err := b.Load(ctx, shard, 0, 0, func(rd io.Reader) error {
		_, err := io.ReadFull(rd, make([]byte, 10))
		return errors.Join(err, stop)
	}); !errors.Is(err, stop) {
		t.Fatalf("load: %v", err)
	}
	await("aborted", 1)

	// A primary that aborts an object stream part-way (Ctrl-C), and one
	// that aborts a stream before its Put.
	rs, _, err := openRaw(t, st, p.r.Config().ID)
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte("k"), 4096)
	kh := tiers.Handle{Type: tiers.TypeKey, Name: id.Hash(key).String()}
	if w, err := rs.offer(kh.Type, kh.Name, int64(len(key))); err != nil || !w[0] {
		t.Fatalf("offer: %v %v", w, err)
	}
	obj, err := rs.cc.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(obj, FramePut, Put{Type: kh.Type, Name: kh.Name, Size: int64(len(key))}.encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := obj.Write(key[:100]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the site is reading the body
	obj.Abort()
	await("aborted", 2)
	if obj, err = rs.cc.OpenStream(ctx); err != nil {
		t.Fatal(err)
	}
	obj.Abort()
	await("aborted", 3)

	// The connection ends while an object's body is on its way.
	if obj, err = rs.cc.OpenStream(ctx); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(obj, FramePut, Put{Type: kh.Type, Name: kh.Name, Size: int64(len(key))}.encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := obj.Write(key[:100]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	rs.cc.CloseWithError(CodeOK, "")
	await("disconnected", 1)

	got := errorSeries(scrape(t, srv.URL))
	for _, r := range []string{"bad frame", "stream"} {
		if n := got[fmt.Sprintf(`drpipe_site_errors_total{reason=%q}`, r)]; n != 0 {
			t.Errorf("%v streams ended by the primary counted as %q: %v", n, r, got)
		}
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") && !strings.Contains(line, `msg="session ended"`) {
			t.Errorf("a stream the primary ended is logged as a warning: %s", line)
		}
	}
}

func errorSeries(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, "drpipe_site_errors_total") {
			out[k] = v
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (a log).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
