//go:build linux

package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/netem"
	"github.com/drpipe/drpipe/internal/sample"
)

// TestSiteOverPacketLink replicates across a packet-level impaired path
// (netem.Link: 50 ms RTT, 1% loss each way, the primary and the site in
// separate network namespaces) over four QUIC connections, cuts the path
// mid-transfer, checks the DR repository, and resumes: the resumed run
// sends exactly what the site lacks, and the result verifies and
// restores byte-identical.
func TestSiteOverPacketLink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("%v (this test runs the primary and the DR site in two network namespaces)", netem.ErrNeedRoot)
	}
	e := newEnv(t)
	e.extra = append(e.extra, "DRPIPE_REPLICATE_IDLE_TIMEOUT=2s", "DRPIPE_REPLICATE_TIMEOUT=10s")
	repoDir := e.initRepo("--pack-size", "2MiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	img := makeImage(t, src, 512<<20, 6<<20, 31)
	b := e.backup(repoDir, src)
	tlsDir := filepath.Join(e.dir, "tls")
	e.ok("site", "init", "--dir", tlsDir, "--primary", "hv01")
	bundle := filepath.Join(tlsDir, "clients", "hv01")

	link, err := netem.NewLink(netem.LinkOptions{Delay: 25 * time.Millisecond, Loss: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	inSide := func(ctx context.Context, s netem.Side, args ...string) *exec.Cmd {
		c := link.Command(ctx, s, drpipeBin, append([]string{"--cache-dir", e.cache}, args...)...)
		c.Env = append(os.Environ(), "DRPIPE_PASSWORD="+e.pw)
		c.Env = append(c.Env, e.extra...)
		return c
	}

	drDir := filepath.Join(e.dir, "dr")
	addr := link.Addr(netem.B).String() + ":7443"
	logPath := filepath.Join(e.dir, "site.log")
	logf, _ := os.Create(logPath)
	site := inSide(context.Background(), netem.B, "site", "serve", "--listen", addr, "--repo", drDir, "--tls-dir", tlsDir, "--metrics", "")
	site.Stdout, site.Stderr = logf, logf
	if err := site.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		site.Process.Signal(syscall.SIGTERM)
		site.Wait()
		logf.Close()
	}()
	for i := 0; ; i++ {
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "DR site listening") {
			break
		}
		if i > 100 {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("site did not start:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	replicate := func(ctx context.Context) (replJSON, string, error) {
		c := inSide(ctx, netem.A, "replicate", "--json", "--repo", repoDir, "--to", addr, "--tls-dir", bundle, "--connections", "4")
		var so, se strings.Builder
		c.Stdout, c.Stderr = &so, &se
		err := c.Run()
		var r replJSON
		if err == nil {
			if jerr := json.Unmarshal([]byte(so.String()), &r); jerr != nil {
				t.Fatalf("replicate --json printed %q: %v", so.String(), jerr)
			}
		}
		return r, se.String(), err
	}

	// A run cut a moment into the transfer: the link drops everything,
	// the primary gives up after its idle timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, stderr, err := replicate(ctx)
		if err != nil {
			err = &cutError{err, stderr}
		}
		done <- err
	}()
	time.Sleep(1500 * time.Millisecond)
	link.Cut()
	err = <-done
	link.Restore()
	t.Logf("replicate cut after 1.5 s: %v", err)
	prim, dr := repoObjects(t, repoDir), repoObjects(t, drDir)
	if _, cerr := os.Stat(filepath.Join(drDir, "config")); cerr == nil {
		if r := e.run("check", "--repo", drDir); r.code != 0 {
			t.Fatalf("check of the DR repository after the cut:\n%s%s", r.stdout, r.stderr)
		}
	}
	missing := 0
	for p := range prim {
		if _, ok := dr[p]; !ok {
			missing++
		}
	}
	if err == nil || missing == 0 {
		t.Logf("the cut came too late to interrupt anything (err %v, %d missing)", err, missing)
	}

	// Resume across the same lossy link: exactly the missing objects.
	start := time.Now()
	r, stderr, err := replicate(ctx)
	if err != nil {
		t.Fatalf("resumed replicate: %v\n%s", err, stderr)
	}
	el := time.Since(start)
	t.Logf("resumed run over 50 ms RTT / 1%% loss: %d objects, %d bytes (%d on the wire, %d resent after loss) over %d connections in %v; %d of %d objects were already at the site",
		r.ObjectsSent, r.BytesSent, r.WireBytesSent, r.WireBytesLost, r.Connections, el.Round(time.Millisecond), len(prim)-missing, len(prim))
	// 4 MiB is about 3000 packets: at 1% loss, none lost is not chance.
	if r.BytesSent > 4<<20 && r.WireBytesLost == 0 {
		t.Errorf("%d bytes crossed a link dropping 1%% of packets and the report counts no loss", r.BytesSent)
	}
	if r.ObjectsSent != int64(missing) {
		t.Errorf("resumed replicate sent %d objects, the site lacked %d: completed objects were resent", r.ObjectsSent, missing)
	}
	if r.Connections != 4 {
		t.Errorf("report says %d connections, want 4", r.Connections)
	}
	if el < 150*time.Millisecond {
		t.Errorf("a session across a 50 ms RTT link took %v: the link added no delay", el)
	}
	if got := repoObjects(t, drDir); len(got) != len(prim) {
		t.Fatalf("DR site holds %d objects, the primary %d", len(got), len(prim))
	}
	e.ok("check", "--repo", drDir, "--read-data")
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", drDir, b.SnapshotID, "--target", target)
	if same, err := sample.SameContent(img, restored(target, img)); err != nil || !same {
		t.Fatalf("image restored at the DR site differs (%v)", err)
	}
}

type cutError struct {
	err    error
	stderr string
}

func (c *cutError) Error() string { return c.err.Error() + ": " + strings.TrimSpace(c.stderr) }
