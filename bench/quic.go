package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/drpipe/drpipe/internal/netem"
	"github.com/drpipe/drpipe/internal/sample"
)

// quicSuite: replication to the DR site over QUIC vs an rsync daemon over
// TCP, same repository files, same run, same path.
//
// The path is a netem.Link: two network namespaces joined by TUN devices
// and a user-space bridge that adds the delay, with loss from nftables and
// no rate cap. drpipe and rsync both run end to end across it (primary in
// side A, site and rsync daemon in side B), so TCP sees the RTT and the
// losses exactly as QUIC does.
var quicSuite = Suite{
	Name:  "quic",
	Title: "DR-site replication over QUIC vs rsync daemon over TCP",
	About: "Same repository files, same run, same path. The primary (drpipe replicate, rsync client) runs in one network " +
		"namespace, the site (drpipe site serve, rsync daemon) in another; they are joined by internal/netem's Link: TUN " +
		"devices (MTU 1500) and a user-space bridge adding the one-way delay D in each direction, with random loss p on " +
		"each direction from an nftables rule. Both tools traverse it end to end: TCP sees the RTT and the losses exactly " +
		"as QUIC does. \"loopback\" runs both ends in one namespace over lo. Each cell is the median of " +
		strconv.Itoa(quicTrials) + " runs to an empty site, page cache dropped before each.",
	Run: runQuicSuite,
}

// quicTrials is the number of runs per cell (the median is reported).
const quicTrials = 3

// quicTCPAlgos are the TCP congestion controls rsync is measured with, when
// the kernel has them: CUBIC, the default of most distributions, and BBR.
var quicTCPAlgos = []string{"cubic", "bbr"}

type quicCond struct {
	name     string
	loopback bool
	delay    time.Duration
	loss     float64
	repo     string
	size     int64
}

// quicRun is one measured transfer.
type quicRun struct {
	wall time.Duration // process start to exit
	wire int64         // bytes the client put on the network (drpipe: QUIC stats; rsync: --stats)
}

func runQuicSuite(ctx context.Context, env *Env) ([]Table, error) {
	for _, c := range []string{"ip", "nft", "tc", "rsync", "mkfs.ext4"} {
		if !Have(c) {
			return nil, fmt.Errorf("%s missing: run scripts/deps.sh", c)
		}
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the quic suite needs root (network namespaces, TUN devices, nftables): %w", netem.ErrNeedRoot)
	}
	d := env.Drpipe
	penv := []string{"DRPIPE_PASSWORD=bench", "DRPIPE_CACHE_DIR=" + env.Path("cache")}

	// Data: repositories holding a VM image series.
	mkRepo := func(name string, content int64, seed uint64) (string, int64, error) {
		repoDir := env.Path(name)
		if _, err := Run(ctx, penv, d, "init", "--repo", repoDir); err != nil {
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
		if _, err := Run(ctx, penv, d, "backup", "--repo", repoDir, "--host", "hv01", src); err != nil {
			return "", 0, err
		}
		sample.Rewrite(img, 512<<20, 8<<20, seed+1)
		if _, err := Run(ctx, penv, d, "backup", "--repo", repoDir, "--host", "hv01", src); err != nil {
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

	link, err := netem.NewLink(netem.LinkOptions{})
	if err != nil {
		return nil, err
	}
	defer link.Close()
	algos, restoreTCP, ccNote, err := quicSetupTCP(ctx, link)
	if err != nil {
		return nil, err
	}
	defer restoreTCP()

	q := &quicBench{ctx: ctx, env: env, link: link, d: d, penv: penv, tlsDir: tlsDir, bundle: bundle}
	conds := []quicCond{
		{name: "loopback (lo, one namespace)", loopback: true, repo: big, size: bigSize},
		{name: "link 0 ms / 0%", repo: big, size: bigSize},
		{name: "link 50 ms RTT / 0.1%", delay: 25 * time.Millisecond, loss: 0.001, repo: small, size: smallSize},
		{name: "link 50 ms RTT / 1%", delay: 25 * time.Millisecond, loss: 0.01, repo: small, size: smallSize},
	}
	header := []string{"path", "repository MiB", "drpipe s (4 conns)", "MiB/s", "wire MiB", "drpipe s (1 conn)", "MiB/s"}
	for _, a := range algos {
		header = append(header, "rsync s (TCP "+a+")", "MiB/s")
	}
	for _, a := range algos {
		header = append(header, "drpipe ÷ rsync "+a)
	}
	if slices.Contains(algos, "cubic") {
		header = append(header, "drpipe 1 conn ÷ rsync cubic")
	}
	tbl := Table{Caption: "Replication of a repository (VM image series) to an empty DR site: throughput, median of " + strconv.Itoa(quicTrials) + " runs", Header: header}
	var raw []string
	fsyncNote := ""
	for _, c := range conds {
		if err := link.Set(netem.LinkOptions{Delay: c.delay, Loss: c.loss}); err != nil {
			return []Table{tbl}, err
		}
		row := []string{c.name, MiB(c.size)}
		var cells []string
		med := func(what string, f func(trial int) (quicRun, error)) (quicRun, error) {
			var runs []quicRun
			for t := range quicTrials {
				r, err := f(t)
				if err != nil {
					return quicRun{}, fmt.Errorf("%s: %s: %w", c.name, what, err)
				}
				runs = append(runs, r)
			}
			slices.SortFunc(runs, func(a, b quicRun) int { return int(a.wall - b.wall) })
			var ws []string
			for _, r := range runs {
				ws = append(ws, Secs(r.wall))
			}
			raw = append(raw, fmt.Sprintf("%s, %s: %s s", c.name, what, strings.Join(ws, ", ")))
			fmt.Fprintf(os.Stderr, "quic: %s: %s: %s s\n", c.name, what, strings.Join(ws, ", "))
			return runs[len(runs)/2], nil
		}
		d4, err := med("drpipe 4 connections", func(t int) (quicRun, error) { return q.drpipe(c, 4, t) })
		if err != nil {
			return []Table{tbl}, err
		}
		d1, err := med("drpipe 1 connection", func(t int) (quicRun, error) { return q.drpipe(c, 1, t) })
		if err != nil {
			return []Table{tbl}, err
		}
		row = append(row, Secs(d4.wall), rate1(c.size, d4.wall), MiB(d4.wire), Secs(d1.wall), rate1(c.size, d1.wall))
		rs := map[string]quicRun{}
		for _, a := range algos {
			if err := quicSetCC(ctx, link, a); err != nil {
				return []Table{tbl}, err
			}
			r, err := med("rsync TCP "+a, func(t int) (quicRun, error) { return q.rsync(c, t) })
			if err != nil {
				return []Table{tbl}, err
			}
			rs[a] = r
			row = append(row, Secs(r.wall), rate1(c.size, r.wall))
		}
		if c.loopback {
			// Durable writes cost rsync too: the same copy with --fsync.
			r, err := med("rsync --fsync", func(t int) (quicRun, error) { return q.rsync(c, t, "--fsync") })
			if err != nil {
				return []Table{tbl}, err
			}
			fsyncNote = fmt.Sprintf("On loopback, rsync --fsync (durable like drpipe's site) took %s s (%s MiB/s): drpipe ÷ rsync --fsync %s.",
				Secs(r.wall), rate1(c.size, r.wall), Ratio(r.wall.Seconds(), d4.wall.Seconds()))
		}
		for _, a := range algos {
			cells = append(cells, Ratio(rs[a].wall.Seconds(), d4.wall.Seconds()))
		}
		if r, ok := rs["cubic"]; ok {
			cells = append(cells, Ratio(r.wall.Seconds(), d1.wall.Seconds()))
		}
		tbl.Rows = append(tbl.Rows, append(row, cells...))
	}
	tbl.Notes = append(tbl.Notes,
		"Ratios are throughput ratios (rsync time ÷ drpipe time): above 1× drpipe is faster. Times are wall clock from process start "+
			"to exit: for drpipe they include the TLS/QUIC handshakes, the negotiation and the site's verification of every object "+
			"(shard tables and payload hashes) and its fsync of every object before acknowledging; rsync only copies (no fsync). "+
			"drpipe unlocks the repository key (Argon2id) while the data travels.",
		"drpipe \"4 conns\" is the default (replicate.connections = 4): the objects are spread over four QUIC connections, each with "+
			"its own UDP socket and congestion controller (quic-go: CUBIC/NewReno, loss-based). rsync uses one TCP connection.",
		ccNote,
		fsyncNote,
		"All runs: "+strings.Join(raw, "; ")+".")

	rpo, err := q.rpoUnderLoad()
	if err != nil {
		return []Table{tbl}, err
	}
	return []Table{tbl, rpo}, nil
}

func rate1(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(n)/(1<<20)/d.Seconds())
}

type quicBench struct {
	ctx    context.Context
	env    *Env
	link   *netem.Link
	d      string
	penv   []string
	tlsDir string
	bundle string
	seq    int
}

// ends returns the sides the primary and the site run in and the site's
// address.
func (q *quicBench) ends(c quicCond) (prim, site netem.Side, host string) {
	if c.loopback {
		return netem.A, netem.A, "127.0.0.1"
	}
	return netem.A, netem.B, q.link.Addr(netem.B).String()
}

// daemon starts a background process in side s, logging to log; stop
// ends it.
func (q *quicBench) daemon(s netem.Side, log string, env []string, name string, args ...string) (stop func(), err error) {
	c := q.link.Command(q.ctx, s, name, args...)
	c.Env = toolEnv(env)
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
		c.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Process.Kill()
			<-done
		}
		f.Close()
	}, nil
}

// waitLog waits until the log file contains s.
func waitLog(log, s string) error {
	for range 100 {
		if b, _ := os.ReadFile(log); strings.Contains(string(b), s) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(log)
	return fmt.Errorf("%q did not appear in %s:\n%s", s, log, tail(string(b), 2000))
}

func (q *quicBench) drpipe(c quicCond, conns, trial int) (quicRun, error) {
	q.seq++
	prim, siteSide, host := q.ends(c)
	dir := q.env.Path(fmt.Sprintf("dr-%d", q.seq))
	defer os.RemoveAll(dir)
	log := q.env.Path(fmt.Sprintf("site-%d.log", q.seq))
	addr := host + ":7443"
	stop, err := q.daemon(siteSide, log, nil, q.d, "site", "serve", "--listen", addr, "--repo", dir, "--tls-dir", q.tlsDir, "--metrics", "")
	if err != nil {
		return quicRun{}, err
	}
	defer stop()
	if err := waitLog(log, "DR site listening"); err != nil {
		return quicRun{}, err
	}
	DropCaches()
	args := []string{"netns", "exec", q.link.Namespace(prim), q.d, "replicate", "--json", "--repo", c.repo, "--to", addr, "--tls-dir", q.bundle,
		"--connections", strconv.Itoa(conns)}
	m, err := Run(q.ctx, q.penv, "ip", args...)
	if err != nil {
		return quicRun{}, err
	}
	var r struct {
		Wire int64   `json:"wire_bytes_sent"`
		Dur  float64 `json:"duration_s"`
		Objs int64   `json:"objects_sent"`
	}
	if err := json.Unmarshal([]byte(m.Stdout), &r); err != nil || r.Objs == 0 {
		return quicRun{}, fmt.Errorf("replicate printed %q (%v)", tail(m.Stdout, 300), err)
	}
	return quicRun{wall: m.Wall, wire: r.Wire}, nil
}

var rsyncSent = regexp.MustCompile(`Total bytes sent: ([0-9,]+)`)

func (q *quicBench) rsync(c quicCond, trial int, opts ...string) (quicRun, error) {
	q.seq++
	prim, siteSide, host := q.ends(c)
	dir := q.env.Path(fmt.Sprintf("rsync-%d", q.seq))
	os.MkdirAll(dir, 0o755)
	defer os.RemoveAll(dir)
	conf := dir + ".conf"
	os.WriteFile(conf, []byte(fmt.Sprintf("use chroot = false\n[dr]\npath = %s\nread only = false\nuid = root\ngid = root\n", dir)), 0o644)
	log := q.env.Path(fmt.Sprintf("rsyncd-%d.log", q.seq))
	stop, err := q.daemon(siteSide, log, nil, "rsync", "--daemon", "--no-detach", "--config="+conf, "--address="+host, "--port=8730", "--log-file="+log)
	if err != nil {
		return quicRun{}, err
	}
	defer stop()
	if err := waitLog(log, "rsyncd version"); err != nil {
		return quicRun{}, err
	}
	DropCaches()
	args := append([]string{"netns", "exec", q.link.Namespace(prim), "rsync", "-a", "--stats"}, opts...)
	m, err := Run(q.ctx, nil, "ip", append(args, c.repo+"/", "rsync://"+host+":8730/dr/")...)
	if err != nil {
		return quicRun{}, err
	}
	var wire int64
	if mm := rsyncSent.FindStringSubmatch(m.Stdout); mm != nil {
		wire, _ = strconv.ParseInt(strings.ReplaceAll(mm[1], ",", ""), 10, 64)
	}
	return quicRun{wall: m.Wall, wire: wire}, nil
}

// quicSetupTCP finds which of quicTCPAlgos the kernel offers and makes
// them selectable inside the link's namespaces: a namespace other than
// the initial one may only pick algorithms listed in the host's
// net.ipv4.tcp_allowed_congestion_control, so missing ones are added for
// the run (and the list restored afterwards).
func quicSetupTCP(ctx context.Context, l *netem.Link) (algos []string, restore func(), note string, err error) {
	const (
		avail   = "/proc/sys/net/ipv4/tcp_available_congestion_control"
		allowed = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"
		def     = "/proc/sys/net/ipv4/tcp_congestion_control"
	)
	read := func(p string) []string {
		b, _ := os.ReadFile(p)
		return strings.Fields(string(b))
	}
	for _, a := range quicTCPAlgos {
		if slices.Contains(read(avail), a) {
			algos = append(algos, a)
		}
	}
	if len(algos) == 0 {
		return nil, nil, "", fmt.Errorf("the kernel offers none of the TCP congestion controls %v", quicTCPAlgos)
	}
	host := strings.Join(read(def), "")
	orig := read(allowed)
	want := slices.Clone(orig)
	for _, a := range algos {
		if !slices.Contains(want, a) {
			want = append(want, a)
		}
	}
	restore = func() {}
	note = fmt.Sprintf("TCP congestion control: rsync is measured with %s, set per run inside the two namespaces; this host's default is %s.", strings.Join(algos, " and "), host)
	if len(want) != len(orig) {
		if err := os.WriteFile(allowed, []byte(strings.Join(want, " ")), 0); err != nil {
			return nil, nil, "", fmt.Errorf("allow %v in the benchmark's namespaces: %w", want, err)
		}
		fmt.Fprintf(os.Stderr, "quic: net.ipv4.tcp_allowed_congestion_control temporarily %q (was %q)\n", strings.Join(want, " "), strings.Join(orig, " "))
		restore = func() { os.WriteFile(allowed, []byte(strings.Join(orig, " ")), 0) }
		note += fmt.Sprintf(" (net.ipv4.tcp_allowed_congestion_control was extended from %q for the run and restored after it.)", strings.Join(orig, " "))
	}
	return algos, restore, note, nil
}

// quicSetCC selects TCP congestion control algo in both namespaces.
func quicSetCC(ctx context.Context, l *netem.Link, algo string) error {
	for _, s := range []netem.Side{netem.A, netem.B} {
		if _, err := Run(ctx, nil, "ip", "netns", "exec", l.Namespace(s), "sysctl", "-qw", "net.ipv4.tcp_congestion_control="+algo); err != nil {
			return err
		}
	}
	return nil
}

// rpoUnderLoad runs "replicate --watch" across the link (50 ms RTT,
// 0.1% loss) while backups arrive every few seconds, and reports the
// recovery point reached.
func (q *quicBench) rpoUnderLoad() (Table, error) {
	ctx, env, d := q.ctx, q.env, q.d
	t := Table{Caption: "RPO in --watch mode under steady backup load (link 50 ms RTT / 0.1% loss, poll every 1 s, a backup every 5 s)",
		Header: []string{"backups", "median RPO when replicated s", "max RPO when replicated s", "max RPO sampled s", "mean RPO sampled s"}}
	if err := q.link.Set(netem.LinkOptions{Delay: 25 * time.Millisecond, Loss: 0.001}); err != nil {
		return t, err
	}
	repoDir := env.Path("repo-watch")
	if _, err := Run(ctx, q.penv, d, "init", "--repo", repoDir); err != nil {
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
	if _, err := Run(ctx, q.penv, d, "backup", "--repo", repoDir, "--host", "hv01", src); err != nil {
		return t, err
	}
	addr := q.link.Addr(netem.B).String() + ":7443"
	slog := env.Path("site-watch.log")
	stopSite, err := q.daemon(netem.B, slog, nil, d, "site", "serve", "--listen", addr, "--repo", env.Path("dr-watch"), "--tls-dir", q.tlsDir, "--metrics", "")
	if err != nil {
		return t, err
	}
	defer stopSite()
	if err := waitLog(slog, "DR site listening"); err != nil {
		return t, err
	}
	wlog := env.Path("watch.ndjson")
	stopWatch, err := q.daemon(netem.A, wlog, q.penv, d, "replicate", "--watch", "--interval", "1s", "--json", "--repo", repoDir, "--to", addr, "--tls-dir", q.bundle)
	if err != nil {
		return t, err
	}
	snapTimes := map[string]time.Time{}
	const backups = 8
	for i := range backups {
		time.Sleep(5 * time.Second)
		sample.Rewrite(img, int64(i)*100<<20+4<<20, 4<<20, uint64(50+i))
		m, err := Run(ctx, q.penv, d, "backup", "--json", "--repo", repoDir, "--host", "hv01", src)
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
	time.Sleep(5 * time.Second)
	stopWatch()
	raw, _ := os.ReadFile(wlog)
	var sampled, atRepl []float64
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
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

func maxf(x []float64) float64 { return slices.Max(x) }

func mean(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}
