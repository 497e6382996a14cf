package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/cobra"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/policy"
	s3tier "github.com/drpipe/drpipe/tiers/s3"
	"github.com/drpipe/drpipe/transport"
)

// tieringConfig reads the tiering section of the config file.
func (a *app) tieringConfig() (*policy.Config, error) {
	if !a.v.IsSet("tiering") {
		return nil, usagef("no tiering policy: add a tiering section to the config file (see configs/tiering.yaml) and pass --config")
	}
	// Decode strictly, so that a misspelt key (keep.dialy, storage_clas)
	// is an error rather than a tier that silently keeps everything.
	// prune_grace and currency are read by tierTargets and tierPlan.
	var sec struct {
		policy.Config `mapstructure:",squash"`
		PruneGrace    any `mapstructure:"prune_grace"`
		Currency      any `mapstructure:"currency"`
	}
	strict := func(c *mapstructure.DecoderConfig) { c.ErrorUnused = true }
	if err := a.v.UnmarshalKey("tiering", &sec, strict); err != nil {
		return nil, usagef("tiering section: %w (see configs/tiering.yaml for the keys)", err)
	}
	cfg := sec.Config
	if err := cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	return &cfg, nil
}

// sameLocation reports whether a tier's configured location names the
// backend at loc (a directory given relative, as file:// or through a
// symbolic link, or a bucket prefix with the slashes s3:// locations
// drop).
func sameLocation(configured, loc string) bool {
	if dir, ok := localDir(configured); ok {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return false
		}
		if abs == filepath.Clean(loc) {
			return true
		}
		a, aerr := os.Stat(abs)
		b, berr := os.Stat(loc)
		return aerr == nil && berr == nil && os.SameFile(a, b)
	}
	cb, cp, cerr := s3tier.ParseURL(configured)
	lb, lp, lerr := s3tier.ParseURL(loc)
	if cerr == nil && lerr == nil {
		return cb == lb && cp == lp
	}
	return strings.TrimSuffix(configured, "/") == strings.TrimSuffix(loc, "/")
}

// tierNow is the tiering clock: the wall clock or DRPIPE_TIER_NOW (RFC
// 3339) for drills.
func tierNow() (time.Time, error) {
	if s := os.Getenv("DRPIPE_TIER_NOW"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return time.Time{}, usagef("DRPIPE_TIER_NOW=%q: want an RFC 3339 time", s)
		}
		return t, nil
	}
	return time.Now(), nil
}

// tierTargets wires every tier of the policy to a target. The returned
// closer releases them. Nothing is written: a local tier's directory is
// not created, by tier run either.
func (a *app) tierTargets(ctx context.Context, cfg *policy.Config, r *repo.Repository, pw []byte) (map[string]policy.Target, func(), error) {
	grace := repo.DefaultGrace
	if a.v.IsSet("tiering.prune_grace") {
		s := a.v.GetString("tiering.prune_grace")
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return nil, nil, usagef("config key tiering.prune_grace (DRPIPE_TIERING_PRUNE_GRACE) %q: want a duration such as 24h or 168h (0s removes condemned data in the run that condemns it)", s)
		}
		grace = d
	}
	prune := &repo.PruneOptions{Grace: grace, GraceSet: true}
	targets := map[string]policy.Target{}
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	open := func(be tiers.Backend) (*repo.Repository, error) {
		o, err := a.repoOptions(pw)
		if err != nil {
			return nil, err
		}
		return repo.Open(ctx, be, o)
	}
	openReplica := func(be, src tiers.Backend) (*repo.Repository, error) {
		o, err := a.repoOptions(pw)
		if err != nil {
			return nil, err
		}
		return repo.OpenReplica(ctx, be, src, o)
	}
	for _, t := range cfg.Tiers {
		switch t.Kind {
		case policy.KindPrimary:
			targets[t.Name] = &policy.PrimaryTarget{Repo: r, Prune: prune}
		case policy.KindLocal:
			// The directory is never created: where it is missing, a
			// file system is most likely not mounted, and a copy
			// would fill the one beneath.
			dir, ok := localDir(t.Location)
			if !ok {
				closeAll()
				return nil, nil, usagef("tier %s: kind local takes a directory (a path or file://PATH), not %s", t.Name, t.Location)
			}
			be, err := tiers.OpenLocal(dir)
			if errors.Is(err, fs.ErrNotExist) {
				targets[t.Name] = unreachableTier{fmt.Errorf("directory %s does not exist: mount the file system it is on, or, for a new tier, create it (mkdir -p %s)", dir, dir)}
				continue
			}
			if m, ok := unmountedTierDir(dir); ok && err == nil {
				// The directory exists: it is the mount point itself,
				// or below it on the file system beneath.
				be.Close()
				targets[t.Name] = unreachableTier{fmt.Errorf("directory %s is on %s, which /etc/fstab lists but is not mounted: mount it (mount %s)", dir, m, m)}
				continue
			}
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("tier %s: %w", t.Name, err)
			}
			closers = append(closers, func() { be.Close() })
			targets[t.Name] = &policy.BackendTarget{Backend: be, Open: open, OpenReplica: openReplica, Primary: r.Backend(), Prune: prune}
		case policy.KindS3:
			// The tier's storage_class is the class of the data it
			// receives (s3.storage_class when unset).
			raw, err := a.openS3Raw(ctx, t.Location, func(c *s3tier.Config) {
				if t.StorageClass != "" {
					c.StorageClass = t.StorageClass
				}
			})
			if errors.Is(err, s3tier.ErrUnreachable) {
				// An endpoint that does not answer (a network or
				// provider outage) is reported like a NAS not mounted:
				// the other tiers still get their copies, the primary
				// keeps the snapshots, and the run exits 1. A bucket
				// or credentials that are wrong stop the run.
				targets[t.Name] = unreachableTier{fmt.Errorf("%w (the next run copies what this one could not)", err)}
				continue
			}
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("tier %s: %w", t.Name, err)
			}
			closers = append(closers, func() { raw.Close() })
			be := tiers.WithRetry(raw, tiers.RetryPolicy{MaxAttempts: a.v.GetInt("s3.retries")})
			targets[t.Name] = &policy.BackendTarget{Backend: be, Open: open, OpenReplica: openReplica, Primary: r.Backend(), Prune: prune, Classes: raw}
		case policy.KindTape:
			// The write settings are checked before any tier runs, not
			// when this tier's turn comes after the others have run.
			if err := a.tapeWriteSettings(&tape.WriteOptions{}); err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("tier %s: %w", t.Name, err)
			}
			targets[t.Name] = &tapeTarget{a: a, tier: t, r: r}
		case policy.KindSite:
			// The site holds the key slots of the last copy into it: it
			// is read with the primary's too (a password changed since).
			tg, closer, err := a.siteTarget(ctx, t, r, func(be tiers.Backend) (*repo.Repository, error) { return openReplica(be, r.Backend()) })
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("tier %s: %w", t.Name, err)
			}
			closers = append(closers, closer)
			targets[t.Name] = tg
		}
	}
	return targets, closeAll, nil
}

// unreachableTier is a local tier that must not be written: its
// directory does not exist, or lies on a file system /etc/fstab lists but
// that is not mounted; or a bucket whose endpoint does not answer. It is
// reported unreachable (nothing is copied to it,
// and the primary keeps its snapshots) rather than created or filled, as
// rsnapshot's no_create_root does.
type unreachableTier struct{ why error }

func (u unreachableTier) State(context.Context, *policy.Catalog) (*policy.TierState, error) {
	return nil, u.why
}

func (unreachableTier) Send(context.Context, tiers.Backend, []id.ID) (int, int64, error) {
	return 0, 0, policy.ErrUnsupported
}

func (unreachableTier) Forget(context.Context, []id.ID) error { return policy.ErrUnsupported }

func (unreachableTier) Transition(context.Context, map[string]string) error {
	return policy.ErrUnsupported
}

// tapeTarget is a tape pool as a tier: it holds the snapshots of the
// pool's complete, unexpired sets; sending writes a new set.
type tapeTarget struct {
	a    *app
	tier policy.Tier
	r    *repo.Repository
}

func (t *tapeTarget) open() (*tapeEnv, error) {
	lib, err := tape.OpenVirtual(t.tier.Library)
	if err != nil {
		return nil, err
	}
	cat, err := tape.OpenCatalog(filepath.Join(t.tier.Library, "catalog"))
	if err != nil {
		lib.Close()
		return nil, err
	}
	return &tapeEnv{lib: lib, cat: cat}, nil
}

func (t *tapeTarget) State(ctx context.Context, cat *policy.Catalog) (*policy.TierState, error) {
	te, err := t.open()
	if err != nil {
		return nil, err
	}
	defer te.close()
	now, err := tierNow()
	if err != nil {
		return nil, err
	}
	sets, err := te.cat.Sets()
	if err != nil {
		return nil, err
	}
	known := map[id.ID]policy.Snap{}
	for _, s := range cat.Snaps {
		known[s.ID] = s
	}
	st := &policy.TierState{Shards: map[string]policy.ShardState{}, Packs: map[id.ID]bool{}}
	seen := map[id.ID]bool{}
	for _, s := range sets {
		if s.Pool != t.tier.Pool || !s.Complete || s.Expired(now) {
			continue
		}
		for _, sn := range s.Snaps {
			if seen[sn.ID] {
				continue
			}
			seen[sn.ID] = true
			ps, ok := known[sn.ID]
			if !ok {
				ps = policy.Snap{ID: sn.ID, Time: sn.Time}
			}
			st.Snaps = append(st.Snaps, ps)
			for _, p := range ps.Packs {
				st.Packs[p] = true
			}
		}
	}
	return st, nil
}

func (t *tapeTarget) Send(ctx context.Context, _ tiers.Backend, snaps []id.ID) (int, int64, error) {
	te, err := t.open()
	if err != nil {
		return 0, 0, err
	}
	defer te.close()
	var sel []*repo.Snapshot
	for _, x := range snaps {
		s, err := t.r.LoadSnapshot(ctx, x)
		if err != nil {
			return 0, 0, err
		}
		sel = append(sel, s)
	}
	p, err := t.a.pool(t.tier.Pool)
	if err != nil {
		return 0, 0, err
	}
	wo := tape.WriteOptions{Pool: p}
	if err := t.a.tapeWriteSettings(&wo); err != nil {
		return 0, 0, err
	}
	now, err := tierNow()
	if err != nil {
		return 0, 0, err
	}
	sets, err := te.cat.Sets()
	if err != nil {
		return 0, 0, err
	}
	hist := tape.PoolHistory(sets, p.Name)
	level, err := p.LevelFor(now, hist)
	if err != nil {
		return 0, 0, err
	}
	plan, err := tape.BuildPlan(ctx, t.r, sel)
	if err != nil {
		return 0, 0, err
	}
	wo.Level, wo.Now = level, func() time.Time { return now }
	res, err := tape.WriteSet(ctx, te.lib, te.cat, t.r.Backend(), plan, wo)
	if res == nil {
		return 0, 0, err
	}
	n := 0
	for _, tp := range res.Set.Tapes {
		n += tp.Objects
	}
	return n, res.ObjectBytes, err
}

func (t *tapeTarget) Forget(context.Context, []id.ID) error { return policy.ErrUnsupported }

func (t *tapeTarget) Transition(context.Context, map[string]string) error {
	return policy.ErrUnsupported
}

func (a *app) tierCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tier plan|run --repo R --config FILE",
		Short: "Tiering: which snapshots each tier (hot disk, DR site, cloud, tape) holds; plan and carry it out",
		Long: "The tiering section of the config file lists the tiers: the primary repository (kind primary), other\n" +
			"directories (local), S3 buckets with storage-class transitions by age (s3), the DR site (site) and tape\n" +
			"pools (tape), each with keep rules (restic semantics, per host and paths). 'tier plan' shows, per tier, the\n" +
			"snapshots to copy, forget and transition and the estimated monthly storage cost; 'tier run' does it:\n" +
			"secondaries receive what they lack first (data before metadata), then forget and prune, then the primary.\n" +
			"A second run does nothing. See configs/tiering.yaml.",
	}
	var jsonOut bool
	plan := &cobra.Command{
		Use:     "plan --repo R --config FILE [--json]",
		Short:   "Show what a tier run would copy, forget and transition, and what storage will cost",
		Example: "  drpipe tier plan --repo /srv/drpipe/repo --config /etc/drpipe/drpipe.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runTier(cmd.Context(), false)
		},
	}
	run := &cobra.Command{
		Use:     "run --repo R --config FILE [--json]",
		Short:   "Carry out the tiering plan (resumable and idempotent)",
		Example: "  drpipe tier run --repo /srv/drpipe/repo --config /etc/drpipe/drpipe.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runTier(cmd.Context(), true)
		},
	}
	_ = jsonOut
	cmd.AddCommand(plan, run)
	return cmd
}

func (a *app) runTier(ctx context.Context, execute bool) error {
	cfg, err := a.tieringConfig()
	if err != nil {
		return err
	}
	now, err := tierNow()
	if err != nil {
		return err
	}
	r, err := a.openRepo(ctx)
	if err != nil {
		return err
	}
	defer closeRepo(r)
	pw, err := a.password("repository password: ", false)
	if err != nil {
		return err
	}
	for i, t := range cfg.Tiers {
		if t.Kind != policy.KindPrimary {
			continue
		}
		if t.Location != "" && !sameLocation(t.Location, r.Backend().Location()) {
			return usagef("tiering.tiers[%d] (%s): location %s, but the repository tier commands act on is %s (--repo, DRPIPE_REPO or repo:): "+
				"make them the same, or leave the primary tier's location out", i, t.Name, t.Location, r.Backend().Location())
		}
		cfg.Tiers[i].Location = r.Backend().Location()
	}
	// Each directory or bucket tier forgets and prunes by its own keep
	// rules: one in the repository's place, or in another tier's, would
	// remove what the other's rules keep.
	for i, t := range cfg.Tiers {
		if t.Kind != policy.KindLocal && t.Kind != policy.KindS3 {
			continue
		}
		if sameLocation(t.Location, r.Backend().Location()) {
			return usagef("tiering.tiers[%d] (%s): location %s is the repository tier commands act on (--repo, DRPIPE_REPO or repo:): "+
				"a tier run would forget its snapshots by this tier's keep rules; give the tier a location of its own", i, t.Name, t.Location)
		}
		for j, u := range cfg.Tiers[:i] {
			if u.Kind != policy.KindLocal && u.Kind != policy.KindS3 {
				continue
			}
			loc := u.Location
			if dir, ok := localDir(loc); ok {
				if abs, err := filepath.Abs(dir); err == nil {
					loc = abs
				}
			}
			if sameLocation(t.Location, loc) {
				return usagef("tiering.tiers[%d] (%s): location %s is that of tiering.tiers[%d] (%s): each tier forgets by its own keep rules, "+
					"so one would remove what the other keeps; give each tier a location of its own", i, t.Name, t.Location, j, u.Name)
			}
		}
	}
	targets, closeAll, err := a.tierTargets(ctx, cfg, r, pw)
	if err != nil {
		return err
	}
	defer closeAll()
	currency := a.v.GetString("tiering.currency")
	if currency == "" {
		currency = "USD"
	}
	if !execute {
		pl, err := policy.PlanFor(ctx, cfg, r, targets, now)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(pl)
		}
		pl.WriteText(a.stdout, currency)
		return nil
	}
	var progress policy.RunProgress
	if !a.jsonOut() {
		progress = func(tier, step string) { fmt.Fprintf(a.stderr, "%s: %s\n", tier, step) }
	}
	rep, err := policy.Run(ctx, cfg, r, targets, now, progress)
	if rep == nil {
		return err
	}
	if a.jsonOut() {
		if jerr := a.printJSON(rep); jerr != nil {
			return jerr
		}
		return err
	}
	for _, t := range rep.Tiers {
		switch {
		case t.Error != "":
			a.printf("%s: FAILED: %s\n", t.Name, t.Error)
		case t.Skipped != "":
			a.printf("%s: skipped: %s\n", t.Name, t.Skipped)
		default:
			a.printf("%s: copied %d snapshots (%d objects, %s), forgot %d, transitioned %d shards\n",
				t.Name, t.Copied, t.Objects, humanBytes(t.Bytes), t.Forgotten, t.Transitions)
		}
	}
	a.printf("tier run finished in %.1fs\n", rep.Took)
	if errors.Is(err, context.Canceled) {
		return err
	}
	return err
}

// siteTarget is the DR site as a tier: sending is replication over QUIC.
type siteTarget struct {
	a       *app
	tier    policy.Tier
	primary *repo.Repository // whose snapshots' host and time are sent
	open    func(tiers.Backend) (*repo.Repository, error)
}

func (a *app) siteTarget(_ context.Context, t policy.Tier, primary *repo.Repository, open func(tiers.Backend) (*repo.Repository, error)) (policy.Target, func(), error) {
	if t.TLSDir == "" {
		return nil, nil, usagef("tiering tier %s: a site tier needs tls_dir", t.Name)
	}
	return &siteTarget{a: a, tier: t, primary: primary, open: open}, func() {}, nil
}

func (s *siteTarget) dial(ctx context.Context) (transport.Conn, error) {
	return dialSite(ctx, s.tier)
}

// dialSite opens a mutually authenticated QUIC connection to a site tier
// with the client certificate in its tls_dir.
func dialSite(ctx context.Context, t policy.Tier) (transport.Conn, error) {
	if t.TLSDir == "" {
		return nil, usagef("tiering tier %s: a site tier needs tls_dir", t.Name)
	}
	tc, _, err := transport.ClientTLS(t.TLSDir, "")
	if err != nil {
		return nil, usageError{err}
	}
	idle := 2 * time.Minute
	return transport.DialQUIC(ctx, t.Location, tc, transport.QUICOptions{IdleTimeout: idle, HandshakeTimeout: 10 * time.Second})
}

// openSiteBackend opens a read session with a site tier: a read-only
// tiers.Backend over the site's committed objects.
func openSiteBackend(ctx context.Context, t policy.Tier, program string) (*transport.SiteBackend, error) {
	c, err := dialSite(ctx, t)
	if err != nil {
		return nil, err
	}
	b, err := transport.OpenSiteBackend(ctx, c, transport.SiteBackendOptions{
		Location: "site://" + t.Location, Program: program, Timeout: time.Minute})
	if err != nil {
		c.CloseWithError(transport.CodeOK, "done")
		return nil, err
	}
	return b, nil
}

// State lists what the site holds over a read session (snapshots and
// shards by name; the index and any snapshot the primary no longer has
// are read with the repository key, as for any other tier).
func (s *siteTarget) State(ctx context.Context, cat *policy.Catalog) (*policy.TierState, error) {
	b, err := openSiteBackend(ctx, s.tier, "drpipe "+version+" tier plan")
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return policy.BackendState(ctx, b, cat, s.open)
}

func (s *siteTarget) Send(ctx context.Context, view tiers.Backend, _ []id.ID) (int, int64, error) {
	c, err := s.dial(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer c.CloseWithError(transport.CodeOK, "done")
	// Snapshots go with their host and time, as replicate sends them,
	// for the site's status.
	cache := &snapshotCache{repo: func(context.Context) (*repo.Repository, error) { return s.primary, nil }, m: map[string]*transport.SnapshotMeta{}}
	rep, err := transport.Replicate(ctx, c, view, transport.ReplicateOptions{Program: "drpipe " + version + " tier run", SnapshotMeta: cache.get})
	if rep == nil {
		return 0, 0, err
	}
	var n int
	var b int64
	for _, ts := range rep.Sent {
		n += int(ts.Objects)
		b += ts.Bytes
	}
	return n, b, err
}

func (s *siteTarget) Forget(context.Context, []id.ID) error { return policy.ErrUnsupported }

func (s *siteTarget) Transition(context.Context, map[string]string) error {
	return policy.ErrUnsupported
}

// openTiered opens the repository through every tier of the tiering
// policy, fastest first (the primary, other directories, the DR site,
// buckets, tape pools), so each object comes from the first tier that
// holds it intact.
// openMaybeTiered opens the repository from the tiering policy's tiers
// (see openTiered) when fromTiers is set, else from --repo alone (and the
// Fallback is nil).
func (a *app) openMaybeTiered(ctx context.Context, fromTiers bool) (*repo.Repository, *tiers.Fallback, error) {
	if fromTiers {
		return a.openTiered(ctx)
	}
	r, err := a.openRepo(ctx)
	return r, nil, err
}

// printTierUsage writes, for a repository opened from tiers, which tier
// served how many objects; nothing for a nil Fallback.
func (a *app) printTierUsage(w io.Writer, fb *tiers.Fallback) {
	if fb == nil {
		return
	}
	for _, u := range fb.Usage() {
		fmt.Fprintf(w, "  tier %s served %d objects (%s), missed %d\n", u.Tier, u.Objects, humanBytes(u.Bytes), u.Misses)
	}
}

func (a *app) openTiered(ctx context.Context) (*repo.Repository, *tiers.Fallback, error) {
	cfg, err := a.tieringConfig()
	if err != nil {
		return nil, nil, err
	}
	var bes []tiers.Backend
	var names []string
	closeAll := func() {
		for _, b := range bes {
			b.Close()
		}
	}
	order := []policy.Kind{policy.KindPrimary, policy.KindLocal, policy.KindSite, policy.KindS3, policy.KindTape}
	for _, k := range order {
		for _, t := range cfg.Tiers {
			if t.Kind != k {
				continue
			}
			// Each tier's own error: one that failed before must not
			// count against the next (a tape tier sets none).
			var be tiers.Backend
			var err error
			switch k {
			case policy.KindPrimary:
				loc, err := a.repoLocation()
				if err != nil {
					closeAll()
					return nil, nil, err
				}
				be, err = a.openBackend(ctx, loc, false)
				if err != nil {
					// A lost primary is the reason to restore from tiers.
					fmt.Fprintf(a.stderr, "tier %s unavailable: %v\n", t.Name, err)
					continue
				}
			case policy.KindLocal:
				dir, ok := localDir(t.Location)
				if !ok {
					closeAll()
					return nil, nil, usagef("tier %s: kind local takes a directory (a path or file://PATH), not %s", t.Name, t.Location)
				}
				be, err = tiers.OpenLocal(dir)
			case policy.KindS3:
				be, err = a.openBackend(ctx, t.Location, false)
			case policy.KindSite:
				be, err = a.siteBackend(ctx, t)
			case policy.KindTape:
				be = a.tapeTier(t)
			}
			if err != nil {
				fmt.Fprintf(a.stderr, "tier %s unavailable: %v\n", t.Name, err)
				continue
			}
			bes = append(bes, be)
			names = append(names, t.Name)
		}
	}
	if len(bes) == 0 {
		return nil, nil, errors.New("no tier of the tiering policy is reachable")
	}
	fb, err := tiers.NewFallback(bes, names)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	fb.Verify = true
	pw, err := a.password("repository password: ", false)
	if err != nil {
		fb.Close()
		return nil, nil, err
	}
	o, err := a.repoOptions(pw)
	if err != nil {
		fb.Close()
		return nil, nil, err
	}
	r, err := repo.Open(ctx, fb, o)
	if err != nil {
		fb.Close()
		return nil, nil, err
	}
	return r, fb, nil
}

// siteBackend reads the DR site's repository over QUIC: a read session
// of the site protocol (mutual TLS with the tier's tls_dir, read-only,
// committed objects only), so a restore falls through hot → site → cloud
// → tape.
func (a *app) siteBackend(ctx context.Context, t policy.Tier) (tiers.Backend, error) {
	return openSiteBackend(ctx, t, "drpipe "+version+" restore")
}

// tapeTier reads a tape pool as the last tier: objects are read off the
// cartridges that hold them (mounted through the library's changer) and
// verified. The library is opened, and locked, only when the restore first
// needs it; which tape served what goes to stderr.
func (a *app) tapeTier(t policy.Tier) *tape.Tier {
	return tape.NewTier(tape.TierOptions{
		Name: t.Name,
		Pool: t.Pool,
		// Listing and stat read the catalog only; the library is opened
		// (and locked) when an object must come off tape.
		Catalog: func(ctx context.Context) (*tape.Catalog, error) {
			return tape.OpenCatalog(filepath.Join(t.Library, "catalog"))
		},
		Open: func(ctx context.Context) (tape.Changer, *tape.Catalog, func() error, error) {
			lib, err := tape.OpenVirtual(t.Library)
			if err != nil {
				return nil, nil, nil, err
			}
			cat, err := tape.OpenCatalog(filepath.Join(t.Library, "catalog"))
			if err == nil {
				err = tape.Reconcile(ctx, lib, cat)
			}
			if err != nil {
				lib.Close()
				return nil, nil, nil, err
			}
			return lib, cat, lib.Close, nil
		},
		Report: func(line string) { fmt.Fprintf(a.stderr, "tier %s: %s\n", t.Name, line) },
	})
}
