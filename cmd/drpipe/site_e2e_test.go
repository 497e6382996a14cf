package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
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

// DR-site tests: the real binary as site daemon and as primary.

type siteProc struct {
	addr string
	dir  string
	cmd  *exec.Cmd
	log  *os.File
}

func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().String()
	c.Close()
	return a
}

// startSite runs "drpipe site serve" on a free loopback port.
func (e *env) startSite(t *testing.T, tlsDir, dir string) *siteProc {
	t.Helper()
	addr := freeUDPPort(t)
	logf, _ := os.Create(filepath.Join(e.dir, "site-"+filepath.Base(dir)+".log"))
	c := exec.Command(drpipeBin, "site", "serve", "--listen", addr, "--repo", dir, "--tls-dir", tlsDir, "--metrics", "")
	c.Stderr, c.Stdout = logf, logf
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	sp := &siteProc{addr: addr, dir: dir, cmd: c, log: logf}
	t.Cleanup(func() {
		c.Process.Signal(syscall.SIGTERM)
		c.Wait()
		logf.Close()
	})
	// Wait until it answers.
	for i := 0; ; i++ {
		r := e.run("site", "status", "--to", addr, "--tls-dir", tlsDir, "--json")
		if r.code == 0 {
			break
		}
		if i > 50 {
			t.Fatalf("site did not come up: %s", r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return sp
}

type replJSON struct {
	ObjectsSent   int64   `json:"objects_sent"`
	BytesSent     int64   `json:"bytes_sent"`
	WireBytesSent int64   `json:"wire_bytes_sent"`
	Connections   int     `json:"connections"`
	SnapshotsSent int     `json:"snapshots_sent"`
	Duration      float64 `json:"duration_s"`
	Hosts         map[string]struct {
		Latest string  `json:"latest_snapshot"`
		RPO    float64 `json:"rpo_s"`
	} `json:"hosts"`
}

func (e *env) replicate(t *testing.T, repoDir, to, tlsDir string, extra ...string) replJSON {
	t.Helper()
	out := e.ok(append([]string{"replicate", "--json", "--repo", repoDir, "--to", to, "--tls-dir", tlsDir}, extra...)...)
	var r replJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("replicate --json printed %q: %v", out, err)
	}
	return r
}

// repoObjects lists the object files of a repository directory (relative
// paths -> size), ignoring temporary files and site state.
func repoObjects(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, sub := range []string{"config", "keys", "data", "index", "snapshots"} {
		filepath.Walk(filepath.Join(dir, sub), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(fi.Name(), ".") {
				rel, _ := filepath.Rel(dir, p)
				out[rel] = fi.Size()
			}
			return nil
		})
	}
	return out
}

func TestSiteReplicateVMImageSeries(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	img := makeImage(t, src, 2<<30, 96<<20, 11)
	b1 := e.backup(repoDir, src)

	tlsDir := filepath.Join(e.dir, "tls")
	e.ok("site", "init", "--dir", tlsDir, "--name", "dr-e2e", "--primary", "hv01")
	drDir := filepath.Join(e.dir, "dr")
	sp := e.startSite(t, tlsDir, drDir)
	bundle := filepath.Join(tlsDir, "clients", "hv01")

	r1 := e.replicate(t, repoDir, sp.addr, bundle)
	want := repoObjects(t, repoDir)
	if got := repoObjects(t, drDir); len(got) != len(want) || r1.ObjectsSent != int64(len(want)) {
		t.Fatalf("first replicate: %d objects at the DR site, %d sent, primary has %d", len(got), r1.ObjectsSent, len(want))
	}
	t.Logf("replicate 1: %d objects, %d bytes of objects, %d bytes on the wire (%.2f×), %.2fs",
		r1.ObjectsSent, r1.BytesSent, r1.WireBytesSent, float64(r1.WireBytesSent)/float64(r1.BytesSent), r1.Duration)

	// Restore at the DR site from its own repository, with the key.
	e.ok("check", "--repo", drDir, "--read-data")
	target := filepath.Join(e.dir, "restore1")
	e.ok("restore", "--repo", drDir, b1.SnapshotID, "--target", target)
	if same, err := sample.SameContent(img, restored(target, img)); err != nil || !same {
		t.Fatalf("image restored at the DR site differs (%v)", err)
	}

	// The next image of the series: a few regions rewritten.
	for i := range 6 {
		if err := sample.Rewrite(img, int64(i)*300<<20+1<<20, 3<<20, uint64(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	before := repoObjects(t, repoDir)
	b2 := e.backup(repoDir, src)
	var newObjs, newBytes int64
	for p, n := range repoObjects(t, repoDir) {
		if _, ok := before[p]; !ok {
			newObjs++
			newBytes += n
		}
	}
	r2 := e.replicate(t, repoDir, sp.addr, bundle)
	t.Logf("replicate 2: backup added %d bytes (%d new objects, %d bytes); replicate sent %d objects, %d bytes of objects, %d bytes on the wire",
		b2.BytesNew, newObjs, newBytes, r2.ObjectsSent, r2.BytesSent, r2.WireBytesSent)
	if r2.ObjectsSent != newObjs || r2.BytesSent != newBytes {
		t.Errorf("second replicate sent %d objects / %d bytes, want exactly the %d new objects / %d bytes", r2.ObjectsSent, r2.BytesSent, newObjs, newBytes)
	}
	if r2.WireBytesSent > newBytes+newBytes/10+256<<10 {
		t.Errorf("second replicate put %d bytes on the wire for %d new bytes", r2.WireBytesSent, newBytes)
	}
	if r2.Hosts["hv01"].Latest != b2.SnapshotID {
		t.Errorf("RPO report names %v, want the new snapshot %s", r2.Hosts, b2.SnapshotID)
	}
	target2 := filepath.Join(e.dir, "restore2")
	e.ok("restore", "--repo", drDir, "latest", "--target", target2)
	if same, err := sample.SameContent(img, restored(target2, img)); err != nil || !same {
		t.Fatalf("second image restored at the DR site differs (%v)", err)
	}
	r3 := e.replicate(t, repoDir, sp.addr, bundle)
	if r3.ObjectsSent != 0 {
		t.Errorf("third replicate with nothing new sent %d objects", r3.ObjectsSent)
	}
	// A wrong password fails the run (exit 4) even when nothing needs
	// sending (the key is unlocked in the background while data travels).
	pw := e.pw
	e.pw = "wrong"
	if r := e.run("replicate", "--json", "--repo", repoDir, "--to", sp.addr, "--tls-dir", bundle); r.code != 4 || !strings.Contains(r.stderr, "password") {
		t.Errorf("replicate with a wrong password: exit %d, want 4\n%s", r.code, r.stderr)
	}
	e.pw = pw

	// Status, remote and local.
	var st struct {
		Hosts []struct {
			Host           string `json:"host"`
			LatestSnapshot string `json:"latest_snapshot"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(e.ok("site", "status", "--to", sp.addr, "--tls-dir", bundle, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Hosts) != 1 || st.Hosts[0].LatestSnapshot != b2.SnapshotID {
		t.Errorf("site status: %+v, want hv01 at %s", st, b2.SnapshotID)
	}
	if out := e.ok("site", "status", "--repo", drDir); !strings.Contains(out, b2.SnapshotID[:8]) {
		t.Errorf("local site status lacks the snapshot:\n%s", out)
	}

	// A primary holding a certificate from another CA is refused, and the
	// site still holds exactly what it held.
	otherTLS := filepath.Join(e.dir, "other-tls")
	e.ok("site", "init", "--dir", otherTLS, "--primary", "hv01")
	r := e.run("replicate", "--repo", repoDir, "--to", sp.addr, "--tls-dir", filepath.Join(otherTLS, "clients", "hv01"))
	if r.code == 0 || !strings.Contains(r.stderr, "hint:") {
		t.Errorf("replicate with a foreign CA: exit %d\n%s", r.code, r.stderr)
	}
}

// TestSiteCutsAndImpairedLink replicates through the impairment proxy:
// cuts at random points (link cut or the client killed) over several
// backups, checking the DR repository after each, then a 50 ms RTT, 1%
// loss link.
func TestSiteCutsAndImpairedLink(t *testing.T) {
	e := newEnv(t)
	e.extra = append(e.extra, "DRPIPE_REPLICATE_IDLE_TIMEOUT=2s", "DRPIPE_REPLICATE_TIMEOUT=10s")
	repoDir := e.initRepo("--pack-size", "4MiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	img := makeImage(t, src, 1<<30, 48<<20, 21)
	e.backup(repoDir, src)
	tlsDir := filepath.Join(e.dir, "tls")
	e.ok("site", "init", "--dir", tlsDir, "--primary", "hv01")
	bundle := filepath.Join(tlsDir, "clients", "hv01")
	drDir := filepath.Join(e.dir, "dr")
	sp := e.startSite(t, tlsDir, drDir)
	proxy, err := netem.NewUDP("127.0.0.1:0", sp.addr, netem.Impairment{}, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()

	iters := 6
	if os.Getenv("DRPIPE_LONG") != "" {
		iters = 25
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for it := range iters {
		if it > 0 {
			if err := sample.Rewrite(img, rng.Int64N(900<<20), 6<<20, uint64(it)); err != nil {
				t.Fatal(err)
			}
			e.backup(repoDir, src)
		}
		// Start a rate-limited replicate and cut it at a random moment.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		c := e.cmd(ctx, "replicate", "--repo", repoDir, "--to", proxy.Addr(), "--tls-dir", bundle, "--bwlimit", "16MiB", "--json")
		out := &strings.Builder{}
		c.Stdout, c.Stderr = out, out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		how := "link cut"
		if rng.IntN(2) == 0 {
			how = "client killed"
			c.Process.Kill()
		} else {
			proxy.Cut()
		}
		err := c.Wait()
		proxy.Restore()
		cancel()
		t.Logf("iteration %d: %s: replicate exit %v", it, how, err)

		// The DR repository is consistent at every cut.
		if _, err := os.Stat(filepath.Join(drDir, "config")); err == nil {
			if _, err := os.Stat(filepath.Join(drDir, "keys")); err == nil {
				if r := e.run("check", "--repo", drDir); r.code != 0 {
					t.Fatalf("iteration %d: check of the DR repository after a cut failed:\n%s%s", it, r.stdout, r.stderr)
				}
			}
		}
		// The next run resumes: it sends exactly what the site lacks.
		prim, dr := repoObjects(t, repoDir), repoObjects(t, drDir)
		missing := 0
		for p := range prim {
			if _, ok := dr[p]; !ok {
				missing++
			}
		}
		r := e.replicate(t, repoDir, proxy.Addr(), bundle)
		if r.ObjectsSent != int64(missing) {
			t.Errorf("iteration %d: resumed replicate sent %d objects, the site lacked %d: completed objects were resent", it, r.ObjectsSent, missing)
		}
		t.Logf("iteration %d: %d of %d objects were already at the site; the resumed run sent %d", it, len(prim)-missing, len(prim), r.ObjectsSent)
	}
	e.ok("check", "--repo", drDir, "--read-data")

	// 50 ms RTT and 1% loss each way: completes and verifies.
	// (Loss-based congestion control gives one connection about
	// MSS/RTT·1.22/√p ≈ 0.3 MiB/s here, so the change is kept small.)
	if err := sample.Rewrite(img, 100<<20, 4<<20, 999); err != nil {
		t.Fatal(err)
	}
	b := e.backup(repoDir, src)
	proxy.Set(netem.Impairment{Delay: 25 * time.Millisecond, Loss: 0.01})
	start := time.Now()
	r := e.replicate(t, repoDir, proxy.Addr(), bundle)
	t.Logf("impaired link (50 ms RTT, 1%% loss): %d objects, %d bytes in %v (%.1f MiB/s), %d datagrams dropped",
		r.ObjectsSent, r.BytesSent, time.Since(start).Round(time.Millisecond), float64(r.BytesSent)/(1<<20)/time.Since(start).Seconds(), proxy.Dropped())
	if proxy.Dropped() == 0 {
		t.Error("the proxy dropped nothing: the link was not impaired")
	}
	e.ok("check", "--repo", drDir, "--read-data")
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", drDir, b.SnapshotID, "--target", target)
	if same, err := sample.SameContent(img, restored(target, img)); err != nil || !same {
		t.Fatalf("image restored at the DR site after the impaired run differs (%v)", err)
	}
}
