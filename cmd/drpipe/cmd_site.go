package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/transport"
)

// siteConfigDefaults are the keys of the site and replicate sections
// (configs/site.yaml documents them), set and checked with the others when
// the config is loaded (sectionDefaults).
var siteConfigDefaults = map[string]any{
	"site.listen":            ":7443",
	"site.repo":              "",
	"site.tls_dir":           "",
	"site.name":              "",
	"site.allow":             []string{},
	"site.metrics_listen":    "127.0.0.1:9464",
	"site.max_object_size":   "2GiB",
	"site.shutdown_grace":    "10s",
	"site.scrub_interval":    "0s",
	"site.log_format":        "text",
	"site.log_level":         "info",
	"replicate.to":           "",
	"replicate.tls_dir":      "",
	"replicate.tls_name":     "",
	"replicate.streams":      0,
	"replicate.connections":  4,
	"replicate.bwlimit":      "",
	"replicate.interval":     "10s",
	"replicate.idle_timeout": "30s",
	"replicate.timeout":      "2m",
}

// flagOr returns the flag's value if it was given, else the config key.
func (a *app) flagOr(cmd *cobra.Command, flag, key string) string {
	if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
		return f.Value.String()
	}
	return a.v.GetString(key)
}

// positiveDuration parses the value s of config key, a duration the
// site or the replication needs above zero: zero or less would be
// replaced by the built-in default without a word, so it is refused.
func positiveDuration(key, s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		return 0, usagef("config key %s (DRPIPE_%s) %q: want a duration above zero such as 10s or 2m", key, strings.ToUpper(strings.ReplaceAll(key, ".", "_")), s)
	}
	return d, nil
}

// setBy names where flagOr takes its value from, for messages: the flag
// when it was given, else the config key and its environment variable.
func setBy(cmd *cobra.Command, flag, key string) string {
	if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
		return "--" + flag
	}
	return fmt.Sprintf("config key %s (DRPIPE_%s)", key, strings.ToUpper(strings.ReplaceAll(key, ".", "_")))
}

func (a *app) siteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "site init|issue|serve|status",
		Short: "Run and manage the DR site that receives replicated repositories over QUIC",
		Long: "The DR site stores a replica of the repository as ciphertext, verifying every object against its name\n" +
			"without the key. Primaries connect with mutual TLS: 'site init' creates a site CA, the site's certificate and\n" +
			"a first primary's certificate; 'site issue' adds primaries; 'site serve' runs the receiver; 'site status'\n" +
			"shows per host the newest complete snapshot at the site and its age.",
		Example: "  drpipe site init --dir /etc/drpipe/site-tls --name dr1 --primary hv01 --host dr1.example.com\n" +
			"  drpipe site serve --listen :7443 --repo /srv/drpipe/dr --tls-dir /etc/drpipe/site-tls\n" +
			"  drpipe site status --repo /srv/drpipe/dr",
	}
	cmd.AddCommand(a.siteInitCmd(), a.siteIssueCmd(), a.siteServeCmd(), a.siteStatusCmd())
	return cmd
}

func (a *app) siteInitCmd() *cobra.Command {
	var dir, name, primary string
	var hosts []string
	var days int
	cmd := &cobra.Command{
		Use:   "init --dir TLSDIR [--name SITE] [--primary NAME] [--host DNS|IP]...",
		Short: "Create the site CA, the site certificate and a first primary's certificate",
		Long: "Creates in TLSDIR: ca.crt and ca.key (the site CA; keep ca.key safe, it issues primaries), site.crt and\n" +
			"site.key (the DR site's certificate) and, with --primary, clients/NAME/ (ca.crt, client.crt, client.key): the\n" +
			"bundle to copy to that primary and pass as its --tls-dir. Primaries verify the site against the CA, so the\n" +
			"address they dial need not be in the certificate. Refuses a directory that already holds a CA.",
		Example: "  drpipe site init --dir /etc/drpipe/site-tls --name dr1 --primary hv01\n" +
			"  scp -r /etc/drpipe/site-tls/clients/hv01 hv01:/etc/drpipe/dr-tls",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("give --dir TLSDIR")
			}
			res, err := transport.InitTLS(dir, name, primary, transport.IssueOptions{Days: days, Hosts: hosts})
			if err != nil {
				return err
			}
			if a.jsonOut() {
				return a.printJSON(res)
			}
			a.printf("created site CA and site certificate in %s\n", res.Dir)
			if res.ClientBundle != "" {
				a.printf("primary %s: copy %s to that host and use it as --tls-dir\n", primary, res.ClientBundle)
			}
			a.printf("keep %s private: it issues primaries (drpipe site issue)\n", res.Dir+"/ca.key")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory for the CA and certificates")
	f.StringVar(&name, "name", "", "site name (certificate common name; default drpipe-site)")
	f.StringVar(&primary, "primary", "", "also issue a certificate for this primary")
	f.StringArrayVar(&hosts, "host", nil, "extra DNS name or IP for the site certificate (repeatable)")
	f.IntVar(&days, "days", 825, "validity of the certificates in days")
	return cmd
}

func (a *app) siteIssueCmd() *cobra.Command {
	var dir, name string
	var days int
	cmd := &cobra.Command{
		Use:   "issue --dir TLSDIR --name NAME",
		Short: "Issue a certificate for another primary",
		Long: "Issues a client certificate for primary NAME with the CA in TLSDIR and writes the bundle TLSDIR/clients/NAME/\n" +
			"(ca.crt, client.crt, client.key) to copy to that host. The name is what the site's allow-list and logs use.",
		Example: "  drpipe site issue --dir /etc/drpipe/site-tls --name hv02",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || name == "" {
				return usagef("give --dir TLSDIR and --name NAME")
			}
			b, err := transport.IssueClient(dir, name, transport.IssueOptions{Days: days})
			if err != nil {
				return err
			}
			if a.jsonOut() {
				return a.printJSON(map[string]string{"name": name, "bundle": b})
			}
			a.printf("issued a certificate for %s: copy %s to that host and use it as --tls-dir\n", name, b)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the site's TLS directory (holding ca.key)")
	cmd.Flags().StringVar(&name, "name", "", "primary name")
	cmd.Flags().IntVar(&days, "days", 825, "validity in days")
	return cmd
}

func (a *app) newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("log level %q: want debug, info, warn or error", level)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(a.stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, o)), nil
	}
	return nil, usagef("log format %q: want text or json", format)
}

func (a *app) siteServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve --listen ADDR --repo DIR --tls-dir TLSDIR [--metrics ADDR] [--allow NAME]...",
		Short: "Run the DR-site receiver",
		Long: "Listens for primaries on UDP (QUIC, ALPN drpipe-site/2, mutual TLS) and stores what they replicate in the\n" +
			"repository directory DIR. Every object is verified against its name before it is committed (temp file,\n" +
			"fsync, rename); snapshots are committed only after the client sealed their data and index complete, so the\n" +
			"site never exposes a snapshot with missing data. No repository key is needed. Logs go to stderr (log/slog);\n" +
			"Prometheus metrics are served at http://ADDR/metrics. SIGTERM or SIGINT stops accepting and lets running\n" +
			"sessions finish for the shutdown grace period. With --scrub-interval D the site scrubs its repository every D\n" +
			"(as 'drpipe scrub --remove-damaged' does: shards lost to bit rot are rebuilt from parity, what cannot be\n" +
			"rebuilt is removed, and the next replication sends it again).",
		Example: "  drpipe site serve --listen :7443 --repo /srv/drpipe/dr --tls-dir /etc/drpipe/site-tls\n" +
			"  drpipe site serve --config /etc/drpipe/site.yaml",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			dir := a.flagOr(cmd, "repo", "site.repo")
			if dir == "" {
				dir = a.v.GetString("repo")
			}
			tlsDir := a.flagOr(cmd, "tls-dir", "site.tls_dir")
			listen := a.flagOr(cmd, "listen", "site.listen")
			if dir == "" || tlsDir == "" {
				return usagef("give --repo DIR (site.repo) and --tls-dir TLSDIR (site.tls_dir)")
			}
			log, err := a.newLogger(a.v.GetString("site.log_format"), a.v.GetString("site.log_level"))
			if err != nil {
				return err
			}
			maxObj, err := parseSize(a.v.GetString("site.max_object_size"))
			if err != nil || maxObj <= 0 {
				return usagef("config key site.max_object_size (DRPIPE_SITE_MAX_OBJECT_SIZE) %q: want a size such as 2GiB", a.v.GetString("site.max_object_size"))
			}
			grace, err := positiveDuration("site.shutdown_grace", a.v.GetString("site.shutdown_grace"))
			if err != nil {
				return err
			}
			scrubEvery, err := time.ParseDuration(a.flagOr(cmd, "scrub-interval", "site.scrub_interval"))
			if err != nil || scrubEvery < 0 {
				return usagef("--scrub-interval (site.scrub_interval) %q: want a duration such as 168h, or 0 for none", a.flagOr(cmd, "scrub-interval", "site.scrub_interval"))
			}
			allow, _ := cmd.Flags().GetStringArray("allow")
			if !cmd.Flags().Changed("allow") {
				// The environment gives a list as one string: DRPIPE_SITE_ALLOW=hv01,hv02
				// names two primaries (as the other list keys read it), not one.
				for _, v := range a.v.GetStringSlice("site.allow") {
					allow = append(allow, strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })...)
				}
			}
			metrics := transport.NewMetrics()
			tc, err := transport.ServerTLS(tlsDir, transport.ServerTLSOptions{Allow: allow, OnRefuse: func(reason string) {
				log.Warn("client refused in the TLS handshake", "reason", reason)
				metrics.Error("tls")
			}})
			if err != nil {
				return err
			}
			name := a.flagOr(cmd, "name", "site.name")
			if name == "" && len(tc.Certificates) > 0 && tc.Certificates[0].Leaf != nil {
				name = tc.Certificates[0].Leaf.Subject.CommonName
			}
			srv, err := transport.NewServer(ctx, transport.ServerOptions{Dir: dir, SiteName: name,
				Logger: log, Metrics: metrics, MaxObjectSize: maxObj, ShutdownGrace: grace, ScrubInterval: scrubEvery})
			if err != nil {
				return err
			}
			defer srv.Close()
			l, err := transport.ListenQUIC(listen, tc, transport.QUICOptions{Warn: func(msg string) { log.Warn(msg) }})
			if err != nil {
				return err
			}
			defer l.Close()
			var hs *http.Server
			if m := a.flagOr(cmd, "metrics", "site.metrics_listen"); m != "" {
				ml, err := net.Listen("tcp", m)
				if err != nil {
					return fmt.Errorf("metrics endpoint: listen on %s: %w", m, err)
				}
				mux := http.NewServeMux()
				mux.Handle("/metrics", metrics.Handler())
				hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
				go hs.Serve(ml)
				log.Info("metrics", "url", "http://"+ml.Addr().String()+"/metrics")
			}
			log.Info("DR site listening", "addr", l.Addr().String(), "repo", dir, "allow", strings.Join(allow, ","))
			err = srv.Serve(ctx, l)
			if hs != nil {
				sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				hs.Shutdown(sctx)
				cancel()
			}
			log.Info("DR site stopped")
			return err
		},
	}
	f := cmd.Flags()
	f.String("listen", ":7443", "UDP address to listen on (config key site.listen)")
	f.String("tls-dir", "", "TLS directory from 'site init' (site.tls_dir)")
	f.String("metrics", "127.0.0.1:9464", "address of the Prometheus /metrics endpoint, empty to disable (site.metrics_listen)")
	f.StringArray("allow", nil, "only accept these primaries (certificate names; repeatable; site.allow)")
	f.String("name", "", "site name announced to primaries (site.name)")
	f.String("scrub-interval", "0s", "scrub the repository this often, e.g. 168h; 0 for never (site.scrub_interval)")
	return cmd
}

// dialSite connects to the site named by --to with --tls-dir.
func (a *app) dialSite(ctx context.Context, cmd *cobra.Command) (transport.Conn, error) {
	idle, err := positiveDuration("replicate.idle_timeout", a.v.GetString("replicate.idle_timeout"))
	if err != nil {
		return nil, err
	}
	to := a.flagOr(cmd, "to", "replicate.to")
	tlsDir := a.flagOr(cmd, "tls-dir", "replicate.tls_dir")
	if to == "" || tlsDir == "" {
		return nil, usagef("give --to HOST:PORT (replicate.to) and --tls-dir DIR (replicate.tls_dir)")
	}
	if _, _, err := net.SplitHostPort(to); err != nil {
		return nil, usagef("--to %q: want HOST:PORT: %v", to, err)
	}
	tc, _, err := transport.ClientTLS(tlsDir, a.flagOr(cmd, "tls-name", "replicate.tls_name"))
	if err != nil {
		return nil, usageError{err}
	}
	return transport.DialQUIC(ctx, to, tc, transport.QUICOptions{IdleTimeout: idle, HandshakeTimeout: min(idle, 10*time.Second),
		Warn: func(msg string) { fmt.Fprintf(a.stderr, "drpipe: warning: %s\n", msg) }})
}

func (a *app) siteStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status (--to HOST:PORT --tls-dir DIR | --repo DIR) [--json]",
		Short: "Show per host the newest complete snapshot at the DR site, its lag and bytes",
		Long: "Asks a running site over QUIC (--to, --tls-dir) or reads the site's repository directory directly (--repo).\n" +
			"Per host: the newest snapshot the site holds completely, its time and lag (the recovery point if the primary\n" +
			"were lost now), when it arrived and how many bytes its session carried. Host and time are asserted by the\n" +
			"primary that sent the snapshot (the site cannot decrypt snapshots).",
		Example: "  drpipe site status --to dr1.example.com:7443 --tls-dir /etc/drpipe/dr-tls\n  drpipe site status --repo /srv/drpipe/dr --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var st *transport.Status
			var err error
			if a.flagOr(cmd, "to", "replicate.to") != "" {
				c, derr := a.dialSite(ctx, cmd)
				if derr != nil {
					return derr
				}
				st, err = transport.SiteStatus(ctx, c, time.Minute)
				c.CloseWithError(transport.CodeOK, "")
			} else {
				// As site serve finds it: a config file for both sides
				// names the primary's repository in repo.
				dir := a.flagOr(cmd, "repo", "site.repo")
				if dir == "" {
					dir = a.v.GetString("repo")
				}
				if dir == "" {
					return usagef("give --to HOST:PORT --tls-dir DIR, or --repo DIR of the site")
				}
				st, err = transport.ReadStatus(ctx, dir, time.Now())
			}
			if err != nil {
				return err
			}
			if a.jsonOut() {
				return a.printJSON(st)
			}
			// Every name here is the site's or a primary's word, from
			// the network: quoted, as ls quotes names, when it holds
			// what would reach the terminal as control sequences.
			a.printf("site %s (%s): repository %s, %d objects, %s, %d snapshots (%d without host/time)\n",
				printablePath(orDash(st.Site)), printablePath(st.Location), printablePath(short(st.RepoID)), st.Objects, humanBytes(st.StoredBytes), st.Snapshots, st.SnapshotsWithoutMeta)
			tw := a.table()
			fmt.Fprintln(tw, "HOST\tLATEST\tSNAPSHOT TIME\tLAG\tREPLICATED AT\tSESSION BYTES\tSNAPSHOTS")
			for _, h := range st.Hosts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", printablePath(h.Host), printablePath(short(h.LatestSnapshot)), h.SnapshotTime.Local().Format(time.DateTime),
					time.Duration(h.LagSeconds*float64(time.Second)).Round(time.Second), h.ReplicatedAt.Local().Format(time.DateTime),
					humanBytes(h.SessionBytes), h.Snapshots)
			}
			tw.Flush()
			if len(st.Clients) > 0 {
				tw = a.table()
				fmt.Fprintln(tw, "PRIMARY\tSESSIONS\tLAST SESSION\tLAST BYTES\tTOTAL BYTES\tOBJECTS")
				for _, c := range st.Clients {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\n", printablePath(c.Name), c.Sessions, c.LastSession.Local().Format(time.DateTime),
						humanBytes(c.LastSessionBytes), humanBytes(c.BytesReceived), c.ObjectsReceived)
				}
				tw.Flush()
			}
			a.printf("host and time are asserted by the primaries\n")
			return nil
		},
	}
	f := cmd.Flags()
	f.String("to", "", "site address HOST:PORT (replicate.to)")
	f.String("tls-dir", "", "this primary's TLS bundle (replicate.tls_dir)")
	f.String("tls-name", "", "primary name when --tls-dir holds several bundles (replicate.tls_name)")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return orDash(s)
}

// progressSink adapts transport.Progress to the progress bar's counter.
type progressSink struct{ c *pipeline.Counter }

func (p progressSink) Want(objects int, bytes int64) {
	p.c.TotalBytes.Add(bytes)
	p.c.TotalFiles.Add(int64(objects))
}
func (p progressSink) Sent(bytes int64) { p.c.DoneBytes.Add(bytes) }

// snapshotCache reads and remembers snapshot host and time (snapshots
// are immutable).
type snapshotCache struct {
	mu   sync.Mutex
	repo func(ctx context.Context) (*repo.Repository, error) // the unlocked repository, once ready
	m    map[string]*transport.SnapshotMeta
}

func (s *snapshotCache) get(ctx context.Context, name string) (*transport.SnapshotMeta, error) {
	s.mu.Lock()
	if m, ok := s.m[name]; ok {
		s.mu.Unlock()
		return m, nil
	}
	s.mu.Unlock()
	x, err := id.Parse(name)
	if err != nil {
		return nil, err
	}
	r, err := s.repo(ctx)
	if err != nil {
		return nil, err
	}
	sn, err := r.LoadSnapshot(ctx, x)
	if err != nil {
		return nil, err
	}
	m := &transport.SnapshotMeta{Host: sn.Host, Time: sn.Time}
	s.mu.Lock()
	s.m[name] = m
	s.mu.Unlock()
	return m, nil
}

// asyncRepo is a repository being unlocked in the background.
type asyncRepo struct {
	done chan struct{}
	r    *repo.Repository
	e    error
}

// wait returns the unlocked repository once ready.
func (u *asyncRepo) wait(ctx context.Context) (*repo.Repository, error) {
	select {
	case <-u.done:
		return u.r, u.e
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// err returns the unlock error if the unlock has finished and failed.
func (u *asyncRepo) err() error {
	select {
	case <-u.done:
		return u.e
	default:
		return nil
	}
}

// close waits for the unlock and releases the repository (not its
// backend).
func (u *asyncRepo) close() {
	<-u.done
	if u.r != nil {
		u.r.Close()
	}
}

// openRepoAsync opens the backend named by --repo, checks it holds a
// repository, reads the password, and unlocks the key in the background.
// An unlock failure (such as a wrong password) cancels fail.
func (a *app) openRepoAsync(ctx context.Context, fail context.CancelCauseFunc) (tiers.Backend, *asyncRepo, error) {
	loc, err := a.repoLocation()
	if err != nil {
		return nil, nil, err
	}
	be, err := a.openBackend(ctx, loc, false)
	if err != nil {
		return nil, nil, err
	}
	if _, err := repo.ReadConfig(ctx, be); err != nil {
		be.Close()
		return nil, nil, err
	}
	pw, err := a.password("repository password: ", false)
	if err != nil {
		be.Close()
		return nil, nil, err
	}
	o, err := a.repoOptions(pw)
	if err != nil {
		be.Close()
		return nil, nil, err
	}
	u := &asyncRepo{done: make(chan struct{})}
	go func() {
		defer close(u.done)
		u.r, u.e = repo.Open(ctx, be, o)
		if u.e != nil {
			fail(u.e)
		}
	}()
	return be, u, nil
}

// hostRPO is one host's recovery point at the site.
type hostRPO struct {
	Latest       string    `json:"latest_snapshot"`
	SnapshotTime time.Time `json:"snapshot_time"`
	RPOSeconds   float64   `json:"rpo_s"`
}

// rpo computes, per host, the newest of the given snapshots (complete at
// the site) and its age at now.
func (s *snapshotCache) rpo(ctx context.Context, names []string, now time.Time) map[string]hostRPO {
	out := map[string]hostRPO{}
	for _, n := range names {
		m, err := s.get(ctx, n)
		if err != nil {
			continue
		}
		if cur, ok := out[m.Host]; !ok || m.Time.After(cur.SnapshotTime) {
			out[m.Host] = hostRPO{Latest: n, SnapshotTime: m.Time}
		}
	}
	for h, v := range out {
		v.RPOSeconds = now.Sub(v.SnapshotTime).Seconds()
		out[h] = v
	}
	return out
}

func (a *app) replicateCmd() *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "replicate --repo R --to HOST:PORT --tls-dir DIR [--watch] [--bwlimit RATE] [--json]",
		Short: "Copy the repository's new objects to the DR site over QUIC",
		Long: "Negotiates with the site which objects it lacks (names and sizes, in batches) and sends only those, over\n" +
			"parallel QUIC streams: config and key slots, then data shards, then index objects, then snapshots, each class\n" +
			"sealed complete at the site before the next may commit, so the site never exposes a snapshot whose data has\n" +
			"not fully arrived. A run that is cut resumes where it stopped: objects already committed are not resent.\n" +
			"The objects are spread over --connections QUIC connections (default 4) that share one session at the site;\n" +
			"on long lossy links, where loss caps each connection's rate, more connections carry more (the cut and\n" +
			"completeness guarantees hold across all of them). The repository key is unlocked while the data travels.\n" +
			"--bwlimit caps the rate (e.g. 20MiB = 20 MiB/s). --watch keeps running: it polls the repository for new\n" +
			"snapshots, replicates them and reports the recovery point (RPO) per host: the age of the newest snapshot\n" +
			"that is complete at the site. With --json, one JSON object per run (NDJSON with --watch).",
		Example: "  drpipe replicate --repo /srv/drpipe/repo --to dr1.example.com:7443 --tls-dir /etc/drpipe/dr-tls\n" +
			"  drpipe replicate --repo /srv/drpipe/repo --to dr1:7443 --tls-dir /etc/drpipe/dr-tls --watch --bwlimit 50MiB\n" +
			"  drpipe replicate --repo /srv/drpipe/repo --to dr-far:7443 --tls-dir /etc/drpipe/dr-tls --connections 8 --json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			streams := a.v.GetInt("replicate.streams")
			if cmd.Flags().Changed("streams") {
				streams, _ = cmd.Flags().GetInt("streams")
			}
			var lim *transport.Limiter
			if bw := a.flagOr(cmd, "bwlimit", "replicate.bwlimit"); bw != "" {
				n, err := parseSize(bw)
				if err != nil || n <= 0 {
					return usagef("%s %q: want a rate such as 20MiB (per second)", setBy(cmd, "bwlimit", "replicate.bwlimit"), bw)
				}
				lim = transport.NewLimiter(n)
			}
			intervalS := a.flagOr(cmd, "interval", "replicate.interval")
			interval, err := time.ParseDuration(intervalS)
			if err != nil || interval <= 0 {
				return usagef("%s %q: want a duration such as 10s", setBy(cmd, "interval", "replicate.interval"), intervalS)
			}
			timeout, err := positiveDuration("replicate.timeout", a.v.GetString("replicate.timeout"))
			if err != nil {
				return err
			}
			conns := a.v.GetInt("replicate.connections")
			if cmd.Flags().Changed("connections") {
				conns, _ = cmd.Flags().GetInt("connections")
			}
			if conns < 1 || conns > 64 {
				return usagef("--connections %d: want 1 to 64 (replicate.connections)", conns)
			}
			if streams < 0 {
				return usagef("--streams %d: want 0 (one per connection) or more (replicate.streams)", streams)
			}
			// Validate the connection settings before asking for a password.
			if a.flagOr(cmd, "to", "replicate.to") == "" || a.flagOr(cmd, "tls-dir", "replicate.tls_dir") == "" {
				return usagef("give --to HOST:PORT (replicate.to) and --tls-dir DIR (replicate.tls_dir)")
			}
			// The key is needed only for the snapshots' host and time, sent
			// last: unlock it (Argon2id) while the data travels.
			ctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			be, unlock, err := a.openRepoAsync(ctx, cancel)
			if err != nil {
				return err
			}
			defer be.Close()
			defer unlock.close()
			cache := &snapshotCache{repo: unlock.wait, m: map[string]*transport.SnapshotMeta{}}
			once := func() (*transport.Report, error) {
				c, err := a.dialSite(ctx, cmd)
				if err != nil {
					return nil, err
				}
				defer c.CloseWithError(transport.CodeOK, "done")
				o := transport.ReplicateOptions{Streams: streams, Connections: conns, Limiter: lim, SnapshotMeta: cache.get,
					Program: "drpipe " + version, Timeout: timeout,
					Dial: func(ctx context.Context) (transport.Conn, error) { return a.dialSite(ctx, cmd) }}
				var bar *progressBar
				if a.progressEnabled() && !watch {
					cnt := &pipeline.Counter{Start: time.Now()}
					o.Progress = progressSink{cnt}
					bar = startProgress(a.stderr, cnt, "replicate")
				}
				rep, err := transport.Replicate(ctx, c, be, o)
				bar.Stop()
				return rep, err
			}
			if !watch {
				rep, err := once()
				if uerr := unlock.err(); uerr != nil {
					return uerr // e.g. a wrong password: it cancelled the run
				}
				if err != nil {
					return err
				}
				// A run with no snapshot to send did not need the key:
				// the report (RPO per host) does.
				if _, err := unlock.wait(ctx); err != nil {
					return err
				}
				return a.printReplication(rep, cache.rpo(ctx, rep.SiteSnapshots, time.Now()), "replicated")
			}
			r, err := unlock.wait(ctx)
			if err != nil {
				return err
			}
			a.jsonLines = true
			return a.watchLoop(ctx, r, cache, once, interval)
		},
	}
	f := cmd.Flags()
	f.String("to", "", "site address HOST:PORT (config key replicate.to)")
	f.String("tls-dir", "", "this primary's TLS bundle from 'site init'/'site issue' (replicate.tls_dir)")
	f.String("tls-name", "", "primary name when --tls-dir holds several bundles (replicate.tls_name)")
	f.Int("streams", 0, "objects written in parallel over all connections; 0: one per connection (replicate.streams)")
	f.Int("connections", 4, "QUIC connections (separate flows) the objects are spread over (replicate.connections)")
	f.String("bwlimit", "", "rate cap per second, e.g. 20MiB (replicate.bwlimit)")
	f.BoolVar(&watch, "watch", false, "keep running: replicate new snapshots as they appear and report the RPO")
	f.String("interval", "10s", "with --watch: how often to look for new snapshots (replicate.interval)")
	return cmd
}

func (a *app) printReplication(rep *transport.Report, rpo map[string]hostRPO, event string) error {
	if a.jsonOut() {
		return a.printJSON(map[string]any{
			"event": event, "time": time.Now().UTC().Format(time.RFC3339Nano), "site": rep.Site,
			"offered": rep.Offered, "sent": rep.Sent, "objects_sent": rep.SentTotal.Objects, "bytes_sent": rep.SentTotal.Bytes,
			"wire_bytes_sent": rep.WireBytesSent, "wire_bytes_received": rep.WireBytesReceived, "wire_bytes_lost": rep.WireBytesLost,
			"snapshots_sent": len(rep.Snapshots), "duration_s": rep.DurationSec, "hosts": rpo, "connections": rep.Connections,
		})
	}
	var offered int64
	for _, s := range rep.Offered {
		offered += s.Objects
	}
	wire := humanBytes(int64(rep.WireBytesSent)) + " on the wire"
	if rep.WireBytesLost > 0 {
		wire += ", " + humanBytes(int64(rep.WireBytesLost)) + " of it resent after loss"
	}
	a.printf("%s to %s: %d of %d objects sent (%s of object data, %s), %d snapshots, %.1fs (%s/s) over %d connections\n",
		event, orDash(rep.Site), rep.SentTotal.Objects, offered, humanBytes(rep.SentTotal.Bytes), wire,
		len(rep.Snapshots), rep.DurationSec, humanBytes(int64(float64(rep.SentTotal.Bytes)/max(rep.DurationSec, 0.001))), rep.Connections)
	hosts := make([]string, 0, len(rpo))
	for h := range rpo {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		v := rpo[h]
		a.printf("  %s: newest complete snapshot at the site %s from %s, RPO %s\n", h, short(v.Latest),
			v.SnapshotTime.Local().Format(time.DateTime), time.Duration(v.RPOSeconds*float64(time.Second)).Round(time.Second))
	}
	return nil
}

// watchLoop replicates whenever the repository has snapshots the site
// does not, retrying after failures, and reports the RPO at every poll.
func (a *app) watchLoop(ctx context.Context, r *repo.Repository, cache *snapshotCache, once func() (*transport.Report, error), interval time.Duration) error {
	var atSite []string
	replicated := map[string]bool{}
	need := true
	backoff := time.Second
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if need {
			rep, err := once()
			switch {
			case err != nil && ctx.Err() != nil:
				return nil
			case err != nil:
				a.watchEvent("error", map[string]any{"error": err.Error(), "retry_in_s": backoff.Seconds()}, cache.rpo(ctx, atSite, time.Now()))
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, max(interval, time.Second))
				continue
			}
			backoff = time.Second
			need = false
			atSite = rep.SiteSnapshots
			for _, n := range atSite {
				replicated[n] = true
			}
			if err := a.printReplication(rep, cache.rpo(ctx, atSite, time.Now()), "replicated"); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		ids, err := r.ListSnapshotIDs(ctx)
		if err != nil {
			a.watchEvent("error", map[string]any{"error": err.Error()}, cache.rpo(ctx, atSite, time.Now()))
			continue
		}
		for _, x := range ids {
			if !replicated[x.String()] {
				need = true
			}
		}
		if !need {
			a.watchEvent("rpo", nil, cache.rpo(ctx, atSite, time.Now()))
		}
	}
}

func (a *app) watchEvent(event string, extra map[string]any, rpo map[string]hostRPO) {
	if a.jsonOut() {
		m := map[string]any{"event": event, "time": time.Now().UTC().Format(time.RFC3339Nano), "hosts": rpo}
		for k, v := range extra {
			m[k] = v
		}
		a.printJSON(m)
		return
	}
	parts := []string{}
	for h, v := range rpo {
		parts = append(parts, fmt.Sprintf("%s RPO %s", h, time.Duration(v.RPOSeconds*float64(time.Second)).Round(time.Second)))
	}
	sort.Strings(parts)
	msg := ""
	if e, ok := extra["error"]; ok {
		msg = fmt.Sprintf(" error: %v (retrying)", e)
	}
	fmt.Fprintf(a.stderr, "%s %s:%s %s\n", time.Now().Format(time.TimeOnly), event, msg, strings.Join(parts, ", "))
}

// siteHint adds operator hints for replication errors.
func siteHint(err error) string {
	var re *transport.RemoteError
	if errors.As(err, &re) {
		switch re.Code {
		case transport.CodeRepoMismatch:
			return "each site directory holds one repository: serve another directory (and port) for this repository"
		case transport.CodeShutdown:
			return "the site is restarting; run replicate again (completed objects are not resent)"
		}
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "certificate required"), strings.Contains(s, "bad certificate"), strings.Contains(s, "unknown authority"),
		strings.Contains(s, "certificate has expired"), strings.Contains(s, "expired certificate"):
		return "check --tls-dir: the site accepts only certificates its CA issued ('drpipe site issue'), unexpired and allowed"
	case strings.Contains(s, "no application protocol"):
		return "the site and this primary speak different protocol versions (" + transport.ALPN + " here): run the same drpipe release on both"
	case strings.Contains(s, "timeout: no recent network activity"), strings.Contains(s, "handshake did not complete"):
		return "the site did not answer: check the address, that 'drpipe site serve' runs, and that UDP reaches it; run again to resume"
	}
	return ""
}
