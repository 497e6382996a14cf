package transport

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// quicSite runs a Server over real QUIC on loopback.
func quicSite(t *testing.T, st *site, tlsDir string, allow []string) (addr string, refused *atomic.Int64) {
	t.Helper()
	refused = &atomic.Int64{}
	tc, err := ServerTLS(tlsDir, ServerTLSOptions{Allow: allow, OnRefuse: func(string) { refused.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ListenQUIC("127.0.0.1:0", tc, QUICOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { st.s.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); l.Close(); <-done })
	return l.Addr().String(), refused
}

func replicateQUIC(ctx context.Context, addr string, tc *tls.Config, p *primary) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := DialQUIC(ctx, addr, tc, QUICOptions{HandshakeTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	defer c.CloseWithError(CodeOK, "done")
	return Replicate(ctx, c, p.be, ReplicateOptions{SnapshotMeta: p.meta, Timeout: 10 * time.Second})
}

func TestMutualTLSOverQUIC(t *testing.T) {
	ctx := context.Background()
	p := newPrimary(t)
	p.backup("hv01", 10, 512<<10)
	dir := filepath.Join(t.TempDir(), "tls")
	if _, err := InitTLS(dir, "dr-test", "hv01", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := InitTLS(dir, "again", "", IssueOptions{}); err == nil {
		t.Error("InitTLS over an existing CA succeeded")
	}
	otherDir := filepath.Join(t.TempDir(), "other")
	if _, err := InitTLS(otherDir, "evil", "hv01", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := IssueClient(dir, "expired", IssueOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := IssueClient(dir, "hv02", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	sitePool, err := loadPool(filepath.Join(dir, caCertFile))
	if err != nil {
		t.Fatal(err)
	}
	client := func(d, name string) *tls.Config {
		tc, _, err := ClientTLS(d, name)
		if err != nil {
			t.Fatal(err)
		}
		return tc
	}
	if _, _, err := ClientTLS(dir, ""); err == nil {
		t.Error("ClientTLS picked one of several bundles without a name")
	}

	st := newSite(t, "")
	addr, refused := quicSite(t, st, dir, nil)

	otherCA := client(otherDir, "hv01")
	otherCA.RootCAs = sitePool // trusts the site, presents a foreign certificate
	noCert := client(dir, "hv01")
	noCert.Certificates = nil
	siteAsClient := client(dir, "hv01")
	siteCert, err := tls.LoadX509KeyPair(filepath.Join(dir, siteCertFile), filepath.Join(dir, siteKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	siteAsClient.Certificates = []tls.Certificate{siteCert}
	bad := []struct {
		name string
		tc   *tls.Config
	}{
		{"certificate from another CA", otherCA},
		{"expired certificate", client(dir, "expired")},
		{"no certificate", noCert},
		{"server certificate used as client", siteAsClient},
	}
	for _, b := range bad {
		before := refused.Load()
		_, err := replicateQUIC(ctx, addr, b.tc, p)
		if err == nil {
			t.Errorf("%s: replication succeeded", b.name)
			continue
		}
		t.Logf("%s: refused: %v", b.name, err)
		if n := len(st.cnt.snapshot()); n != 0 {
			t.Fatalf("%s: the site committed %d objects", b.name, n)
		}
		if b.name != "no certificate" && refused.Load() == before {
			t.Errorf("%s: the site did not report the refusal", b.name)
		}
	}
	if n := len(objects(t, st.dir)); n != 0 {
		t.Fatalf("site holds %d objects after refused clients", n)
	}

	// The client refuses a site whose certificate is from another CA.
	evil := newSite(t, "")
	evilAddr, _ := quicSite(t, evil, otherDir, nil)
	if _, err := replicateQUIC(ctx, evilAddr, client(dir, "hv01"), p); err == nil {
		t.Error("client replicated to a site with a foreign certificate")
	} else {
		t.Logf("foreign site refused by the client: %v", err)
	}
	if n := len(objects(t, evil.dir)); n != 0 {
		t.Errorf("foreign site received %d objects", n)
	}

	// The real primary replicates.
	rep, err := replicateQUIC(ctx, addr, client(dir, "hv01"), p)
	if err != nil {
		t.Fatal(err)
	}
	if rep.SentTotal.Objects == 0 || rep.WireBytesSent < uint64(rep.SentTotal.Bytes) {
		t.Errorf("report %+v: nothing sent or wire bytes below object bytes", rep)
	}
	assertConsistent(t, st.dir)

	// Allow-list: a valid certificate with an unlisted name is refused.
	st2 := newSite(t, "")
	addr2, refused2 := quicSite(t, st2, dir, []string{"hv01"})
	if _, err := replicateQUIC(ctx, addr2, client(dir, "hv02"), p); err == nil {
		t.Error("client outside the allow-list replicated")
	}
	if refused2.Load() == 0 || len(objects(t, st2.dir)) != 0 {
		t.Errorf("allow-list: refusals %d, objects %d", refused2.Load(), len(objects(t, st2.dir)))
	}
	if _, err := replicateQUIC(ctx, addr2, client(dir, "hv01"), p); err != nil {
		t.Errorf("listed client: %v", err)
	}

	// Status over QUIC.
	c, err := DialQUIC(ctx, addr, client(dir, "hv01"), QUICOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status, err := SiteStatus(ctx, c, 10*time.Second)
	c.CloseWithError(CodeOK, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(status.Hosts) != 1 || status.Hosts[0].Host != "hv01" || status.Site != "dr-test" {
		t.Errorf("status over QUIC: %+v", status)
	}
}
