package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/drpipe/drpipe/internal/netem"
	"github.com/drpipe/drpipe/internal/sample"
)

// quicSuite: replication to the DR site over QUIC vs an rsync daemon over
// TCP, same repository files, same link conditions (issue: DR site).
//
// Everything runs inside a network namespace the suite creates, so that
// packet loss can come from iptables' statistic match on the loopback
// legs to the proxies (the same loss for UDP and TCP), while delay comes
// from the user-space proxies of internal/netem.
var quicSuite = Suite{
	Name:  "quic",
	Title: "DR-site replication over QUIC vs rsync daemon over TCP",
	About: "Same repository files, same run. Links: loopback direct; then through the user-space proxy (internal/netem) " +
		"with one-way delay D on each direction and random loss p on both directions of the proxy leg (iptables statistic " +
		"match inside a private network namespace, identical for UDP and TCP). Caveat: the TCP proxy terminates TCP, so " +
		"rsync's TCP does not see the added delay as RTT and recovers from loss on a sub-millisecond loop; QUIC sees the " +
		"full RTT. Ratios therefore favour rsync on the delayed, lossy links.",
	Run: runQuicSuite,
}

// proxyMain is the re-executed proxy process (runs inside the namespace):
// bench -netem-proxy udp|tcp LISTEN TARGET DELAY.
var proxyFlag = flag.String("netem-proxy", "", "internal: run an impairment proxy (udp|tcp) and block")

func maybeRunProxy() bool {
	if *proxyFlag == "" {
		return false
	}
	args := flag.Args()
	if len(args) != 3 {
		fatal(fmt.Errorf("netem-proxy: want LISTEN TARGET DELAY"))
	}
	d, err := time.ParseDuration(args[2])
	if err != nil {
		fatal(err)
	}
	imp := netem.Impairment{Delay: d}
	var addr string
	switch *proxyFlag {
	case "udp":
		p, err := netem.NewUDP(args[0], args[1], imp, 1)
		if err != nil {
			fatal(err)
		}
		addr = p.Addr()
	case "tcp":
		p, err := netem.NewTCP(args[0], args[1], imp, 1)
		if err != nil {
			fatal(err)
		}
		addr = p.Addr()
	}
	fmt.Println(addr)
	select {}
}

type nsEnv struct {
	ns   string
	self string
	env  []string
}

func (n *nsEnv) cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns, name}, args...)...)
	c.Env = append(os.Environ(), n.env...)
	return c
}

func (n *nsEnv) run(ctx context.Context, name string, args ...string) (*Measurement, error) {
	return Run(ctx, n.env, "ip", append([]string{"netns", "exec", n.ns, name}, args...)...)
}

// start runs a background process in the namespace; stop kills it.
func (n *nsEnv) start(ctx context.Context, log string, name string, args ...string) (stop func(), err error) {
	c := n.cmd(ctx, name, args...)
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		c.Process.Signal(os.Interrupt)
		time.Sleep(200 * time.Millisecond)
		c.Process.Kill()
		c.Wait()
		f.Close()
	}, nil
}

func (n *nsEnv) proxy(ctx context.Context, kind, target string, delay time.Duration) (addr string, stop func(), err error) {
	c := n.cmd(ctx, n.self, "-netem-proxy", kind, "127.0.0.1:0", target, delay.String())
	out, err := c.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := c.Start(); err != nil {
		return "", nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		c.Process.Kill()
		return "", nil, fmt.Errorf("proxy did not start: %w", err)
	}
	return strings.TrimSpace(line), func() { c.Process.Kill(); c.Wait() }, nil
}

// loss installs random drop rules for traffic to and from port.
func (n *nsEnv) loss(ctx context.Context, proto, port string, p float64) (func(), error) {
	if p <= 0 {
		return func() {}, nil
	}
	var rules [][]string
	for _, dir := range []string{"--dport", "--sport"} {
		rules = append(rules, []string{"INPUT", "-p", proto, dir, port, "-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(p, 'f', -1, 64), "-j", "DROP"})
	}
	for _, r := range rules {
		if _, err := n.run(ctx, "iptables", append([]string{"-A"}, r...)...); err != nil {
			return nil, err
		}
	}
	return func() {
		for _, r := range rules {
			n.run(context.Background(), "iptables", append([]string{"-D"}, r...)...)
		}
	}, nil
}

func runQuicSuite(ctx context.Context, env *Env) ([]Table, error) {
	for _, c := range []string{"ip", "iptables", "rsync", "mkfs.ext4"} {
		if !Have(c) {
			return nil, fmt.Errorf("%s missing: run scripts/deps.sh", c)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ns := fmt.Sprintf("drpipe-bench-%d", os.Getpid())
	if _, err := Run(ctx, nil, "ip", "netns", "add", ns); err != nil {
		return nil, fmt.Errorf("create network namespace (needs root): %w", err)
	}
	defer Run(context.Background(), nil, "ip", "netns", "del", ns)
	n := &nsEnv{ns: ns, self: self, env: []string{"DRPIPE_PASSWORD=bench", "DRPIPE_CACHE_DIR=" + env.Path("cache")}}
	if _, err := n.run(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	d := env.Drpipe

	// Data: repositories holding a VM image series.
	mkRepo := func(name string, content int64, seed uint64) (string, int64, error) {
		repoDir := env.Path(name)
		if _, err := n.run(ctx, d, "init", "--repo", repoDir); err != nil {
			return "", 0, err
		}
		src := env.Path(name + "-src")
		os.MkdirAll(src, 0o755)
		ct := env.Path(name + "-content")
		if _, err := sample.Tree(ct, sample.TreeOptions{Files: 100, Bytes: content, Seed: seed}); err != nil {
			return "", 0, err
		}
		img := filepath.Join(src, "vm.raw")
		if err := sample.Ext4Image(ctx, img, 2<<30, ct); err != nil {
			return "", 0, err
		}
		os.RemoveAll(ct)
		if _, err := n.run(ctx, d, "backup", "--repo", repoDir, "--host", "hv01", src); err != nil {
			return "", 0, err
		}
		sample.Rewrite(img, 512<<20, 8<<20, seed+1)
		if _, err := n.run(ctx, d, "backup", "--repo", repoDir, "--host", "hv01", src); err != nil {
			return "", 0, err
		}
		sz, err := DirSize(repoDir)
		return repoDir, sz, err
	}
	big, bigSize, err := mkRepo("repo-big", 160<<20, 1)
	if err != nil {
		return nil, err
	}
	small, smallSize, err := mkRepo("repo-small", 6<<20, 2)
	if err != nil {
		return nil, err
	}
	tlsDir := env.Path("tls")
	if _, err := Run(ctx, nil, d, "site", "init", "--dir", tlsDir, "--primary", "hv01"); err != nil {
		return nil, err
	}
	bundle := filepath.Join(tlsDir, "clients", "hv01")

	// Site daemon and rsync daemon, restarted on fresh directories per run.
	var lastTransfer time.Duration
	runQUIC := func(repoDir, via string, siteAddr string) (time.Duration, int64, error) {
		m, err := n.run(ctx, d, "replicate", "--json", "--repo", repoDir, "--to", via, "--tls-dir", bundle)
		if err != nil {
			return 0, 0, err
		}
		var r struct {
			Wire int64   `json:"wire_bytes_sent"`
			Dur  float64 `json:"duration_s"`
		}
		json.Unmarshal([]byte(m.Stdout), &r)
		lastTransfer = time.Duration(r.Dur * float64(time.Second))
		return m.Wall, r.Wire, nil
	}
	rsyncStats := regexp.MustCompile(`Total bytes sent: ([0-9,]+)`)
	runRsync := func(repoDir, via string) (time.Duration, int64, error) {
		m, err := n.run(ctx, "rsync", "-a", "--stats", repoDir+"/", "rsync://"+via+"/dr/")
		if err != nil {
			return 0, 0, err
		}
		var wire int64
		if mm := rsyncStats.FindStringSubmatch(m.Stdout); mm != nil {
			wire, _ = strconv.ParseInt(strings.ReplaceAll(mm[1], ",", ""), 10, 64)
		}
		return m.Wall, wire, nil
	}

	type cond struct {
		name  string
		delay time.Duration
		loss  float64
		proxy bool
		repo  string
		size  int64
	}
	conds := []cond{
		{"loopback, direct", 0, 0, false, big, bigSize},
		{"proxy 0 ms / 0%", 0, 0, true, big, bigSize},
		{"proxy 50 ms RTT / 0.1%", 25 * time.Millisecond, 0.001, true, small, smallSize},
		{"proxy 50 ms RTT / 1%", 25 * time.Millisecond, 0.01, true, small, smallSize},
	}
	tbl := Table{
		Caption: "Replication of a repository (VM image series) to an empty DR site",
		Header:  []string{"link", "repository MiB", "drpipe QUIC s", "of which session s", "MiB/s", "wire MiB", "rsync TCP s", "MiB/s", "wire MiB", "QUIC / rsync throughput"},
	}
	for i, c := range conds {
		siteDir := env.Path(fmt.Sprintf("dr-%d", i))
		rsyncDir := env.Path(fmt.Sprintf("rsync-%d", i))
		os.MkdirAll(rsyncDir, 0o755)
		sitePort := 17443 + i
		rsyncPort := 18730 + i
		siteAddr := fmt.Sprintf("127.0.0.1:%d", sitePort)
		stopSite, err := n.start(ctx, env.Path(fmt.Sprintf("site-%d.log", i)), d, "site", "serve", "--listen", siteAddr, "--repo", siteDir, "--tls-dir", tlsDir, "--metrics", "")
		if err != nil {
			return nil, err
		}
		conf := env.Path(fmt.Sprintf("rsyncd-%d.conf", i))
		os.WriteFile(conf, []byte(fmt.Sprintf("use chroot = false\n[dr]\npath = %s\nread only = false\nuid = root\ngid = root\n", rsyncDir)), 0o644)
		stopRsync, err := n.start(ctx, env.Path(fmt.Sprintf("rsyncd-%d.log", i)), "rsync", "--daemon", "--no-detach", "--config="+conf, "--address=127.0.0.1", fmt.Sprintf("--port=%d", rsyncPort))
		if err != nil {
			stopSite()
			return nil, err
		}
		time.Sleep(500 * time.Millisecond)
		cleanup := []func(){stopRsync, stopSite}
		quicVia, rsyncVia := siteAddr, fmt.Sprintf("127.0.0.1:%d", rsyncPort)
		if c.proxy {
			ua, stopU, err := n.proxy(ctx, "udp", siteAddr, c.delay)
			if err != nil {
				return nil, err
			}
			ta, stopT, err := n.proxy(ctx, "tcp", rsyncVia, c.delay)
			if err != nil {
				stopU()
				return nil, err
			}
			cleanup = append(cleanup, stopU, stopT)
			quicVia, rsyncVia = ua, ta
			_, up, _ := net.SplitHostPort(ua)
			_, tp, _ := net.SplitHostPort(ta)
			lu, err := n.loss(ctx, "udp", up, c.loss)
			if err != nil {
				return nil, err
			}
			lt, err := n.loss(ctx, "tcp", tp, c.loss)
			if err != nil {
				lu()
				return nil, err
			}
			cleanup = append(cleanup, lu, lt)
		}
		DropCaches()
		qt, qw, qerr := runQUIC(c.repo, quicVia, siteAddr)
		DropCaches()
		rt, rw, rerr := runRsync(c.repo, rsyncVia)
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
		if qerr != nil {
			return []Table{tbl}, fmt.Errorf("%s: drpipe replicate: %w", c.name, qerr)
		}
		if rerr != nil {
			return []Table{tbl}, fmt.Errorf("%s: rsync: %w", c.name, rerr)
		}
		qr := float64(c.size) / qt.Seconds()
		rr := float64(c.size) / rt.Seconds()
		tbl.Rows = append(tbl.Rows, []string{c.name, MiB(c.size), Secs(qt), Secs(lastTransfer), Rate(c.size, qt), MiB(qw), Secs(rt), Rate(c.size, rt), MiB(rw), Ratio(qr, rr)})
		fmt.Fprintf(os.Stderr, "quic: %s: drpipe %.2fs, rsync %.2fs\n", c.name, qt.Seconds(), rt.Seconds())
	}
	tbl.Notes = append(tbl.Notes, "\"of which session\" is drpipe's own duration_s: connection, negotiation, transfer and seals, without start-up. "+
		"Times include process start, TLS/QUIC handshake (drpipe) and the key unlock (Argon2id) of the primary repository. "+
		"drpipe verifies every object at the site before committing (shard table and payload hashes); rsync only copies.")

	rpo, err := rpoUnderLoad(ctx, n, env, d, tlsDir, bundle)
	if err != nil {
		return []Table{tbl}, err
	}
	return []Table{tbl, rpo}, nil
}

// rpoUnderLoad runs "replicate --watch" while backups arrive every few
// seconds and reports the recovery point reached.
func rpoUnderLoad(ctx context.Context, n *nsEnv, env *Env, d, tlsDir, bundle string) (Table, error) {
	t := Table{Caption: "RPO in --watch mode under steady backup load (loopback, poll every 1 s, a backup every 5 s)",
		Header: []string{"backups", "median RPO when replicated s", "max RPO when replicated s", "max RPO sampled s", "mean RPO sampled s"}}
	repoDir := env.Path("repo-watch")
	if _, err := n.run(ctx, d, "init", "--repo", repoDir); err != nil {
		return t, err
	}
	src := env.Path("watch-src")
	os.MkdirAll(src, 0o755)
	ct := env.Path("watch-content")
	sample.Tree(ct, sample.TreeOptions{Files: 50, Bytes: 32 << 20, Seed: 9})
	img := filepath.Join(src, "vm.raw")
	if err := sample.Ext4Image(ctx, img, 1<<30, ct); err != nil {
		return t, err
	}
	if _, err := n.run(ctx, d, "backup", "--repo", repoDir, "--host", "hv01", src); err != nil {
		return t, err
	}
	siteAddr := "127.0.0.1:17499"
	stopSite, err := n.start(ctx, env.Path("site-watch.log"), d, "site", "serve", "--listen", siteAddr, "--repo", env.Path("dr-watch"), "--tls-dir", tlsDir, "--metrics", "")
	if err != nil {
		return t, err
	}
	defer stopSite()
	time.Sleep(500 * time.Millisecond)
	wlog := env.Path("watch.ndjson")
	stopWatch, err := n.start(ctx, wlog, d, "replicate", "--watch", "--interval", "1s", "--json", "--repo", repoDir, "--to", siteAddr, "--tls-dir", bundle)
	if err != nil {
		return t, err
	}
	snapTimes := map[string]time.Time{}
	const backups = 8
	for i := range backups {
		time.Sleep(5 * time.Second)
		sample.Rewrite(img, int64(i)*100<<20+4<<20, 4<<20, uint64(50+i))
		m, err := n.run(ctx, d, "backup", "--json", "--repo", repoDir, "--host", "hv01", src)
		if err != nil {
			stopWatch()
			return t, err
		}
		var b struct {
			ID   string `json:"snapshot_id"`
			Time string `json:"time"`
		}
		json.Unmarshal([]byte(m.Stdout), &b)
		tm, _ := time.Parse(time.RFC3339Nano, b.Time)
		snapTimes[b.ID] = tm
	}
	time.Sleep(4 * time.Second)
	stopWatch()
	raw, _ := os.ReadFile(wlog)
	var sampled []float64
	var atRepl []float64
	seen := map[string]bool{}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	for {
		var ev struct {
			Event string `json:"event"`
			Time  string `json:"time"`
			Hosts map[string]struct {
				Latest string  `json:"latest_snapshot"`
				RPO    float64 `json:"rpo_s"`
			} `json:"hosts"`
		}
		if dec.Decode(&ev) != nil {
			break
		}
		h, ok := ev.Hosts["hv01"]
		if !ok {
			continue
		}
		sampled = append(sampled, h.RPO)
		if ev.Event == "replicated" {
			if st, ok := snapTimes[h.Latest]; ok && !seen[h.Latest] {
				seen[h.Latest] = true
				et, _ := time.Parse(time.RFC3339Nano, ev.Time)
				atRepl = append(atRepl, et.Sub(st).Seconds())
			}
		}
	}
	if len(atRepl) == 0 || len(sampled) == 0 {
		return t, fmt.Errorf("watch produced no usable events (see %s)", wlog)
	}
	t.Rows = append(t.Rows, []string{strconv.Itoa(backups), fmt.Sprintf("%.1f", median(atRepl)), fmt.Sprintf("%.1f", maxf(atRepl)),
		fmt.Sprintf("%.1f", maxf(sampled)), fmt.Sprintf("%.1f", mean(sampled))})
	t.Notes = append(t.Notes, fmt.Sprintf("%d of %d snapshots were seen as the newest at the site in a replicated event; RPO when replicated = event time − snapshot time (includes the backup's own duration, since a snapshot's time is its start).", len(atRepl), backups))
	return t, nil
}

func median(x []float64) float64 {
	s := append([]float64(nil), x...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func maxf(x []float64) float64 {
	m := x[0]
	for _, v := range x {
		m = max(m, v)
	}
	return m
}

func mean(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}
