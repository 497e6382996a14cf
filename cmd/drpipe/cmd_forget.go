package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/retention"
)

// keepFlags are the keep-rule flags shared by forget and the tier policy.
type keepFlags struct {
	last, hourly, daily, weekly, monthly, yearly int
	within, wHourly, wDaily, wWeekly, wMonthly   string
	wYearly                                      string
	tags                                         []string
}

func (k *keepFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVar(&k.last, "keep-last", 0, "keep the last N snapshots (-1: all)")
	f.IntVar(&k.hourly, "keep-hourly", 0, "keep the newest snapshot of each of the last N hours with snapshots")
	f.IntVar(&k.daily, "keep-daily", 0, "keep the newest snapshot of each of the last N days with snapshots")
	f.IntVar(&k.weekly, "keep-weekly", 0, "keep the newest snapshot of each of the last N ISO weeks with snapshots")
	f.IntVar(&k.monthly, "keep-monthly", 0, "keep the newest snapshot of each of the last N months with snapshots")
	f.IntVar(&k.yearly, "keep-yearly", 0, "keep the newest snapshot of each of the last N years with snapshots")
	f.StringVar(&k.within, "keep-within", "", "keep snapshots newer than DURATION before the newest (e.g. 14d, 1y6m)")
	f.StringVar(&k.wHourly, "keep-within-hourly", "", "keep hourly snapshots within DURATION of the newest")
	f.StringVar(&k.wDaily, "keep-within-daily", "", "keep daily snapshots within DURATION of the newest")
	f.StringVar(&k.wWeekly, "keep-within-weekly", "", "keep weekly snapshots within DURATION of the newest")
	f.StringVar(&k.wMonthly, "keep-within-monthly", "", "keep monthly snapshots within DURATION of the newest")
	f.StringVar(&k.wYearly, "keep-within-yearly", "", "keep yearly snapshots within DURATION of the newest")
	f.StringArrayVar(&k.tags, "keep-tag", nil, "keep snapshots carrying all of these comma-separated tags (repeatable)")
}

func (k *keepFlags) policy() (retention.Policy, error) {
	p := retention.Policy{Last: k.last, Hourly: k.hourly, Daily: k.daily, Weekly: k.weekly, Monthly: k.monthly, Yearly: k.yearly}
	for _, d := range []struct {
		s   string
		dst *retention.Duration
		n   string
	}{{k.within, &p.Within, "keep-within"}, {k.wHourly, &p.WithinHourly, "keep-within-hourly"}, {k.wDaily, &p.WithinDaily, "keep-within-daily"},
		{k.wWeekly, &p.WithinWeekly, "keep-within-weekly"}, {k.wMonthly, &p.WithinMonthly, "keep-within-monthly"}, {k.wYearly, &p.WithinYearly, "keep-within-yearly"}} {
		if d.s == "" {
			continue
		}
		v, err := retention.ParseDuration(d.s)
		if err != nil {
			return p, usagef("--%s: %w", d.n, err)
		}
		*d.dst = v
	}
	for _, t := range k.tags {
		p.Tags = append(p.Tags, retention.SplitTags(t))
	}
	if err := p.Validate(); err != nil {
		return p, usageError{err}
	}
	return p, nil
}

func (a *app) forgetCmd() *cobra.Command {
	var kf keepFlags
	var host, groupBy, grace string
	var tags []string
	var dryRun, prune bool
	cmd := &cobra.Command{
		Use:   "forget --repo R [--keep-* ...] [--host H] [--group-by host,paths] [--prune] [SNAPSHOT...]",
		Short: "Remove snapshots by keep rules (restic semantics) or by id; --prune then frees their data",
		Long: "forget removes snapshot records. With keep rules, snapshots are grouped (default by host and paths) and each\n" +
			"group keeps what any rule keeps: --keep-last N, --keep-hourly/daily/weekly/monthly/yearly N (newest of each of\n" +
			"the last N periods that have snapshots; the oldest is kept too while a count is left), --keep-within DURATION\n" +
			"(relative to the newest snapshot), --keep-within-<period> DURATION, --keep-tag TAGS. N = -1 means unlimited.\n" +
			"With snapshot ids, exactly those are removed. --prune runs prune afterwards (two-phase, safe beside backups).",
		Example: "  drpipe forget --repo /srv/drpipe/repo --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --keep-yearly 3 --prune\n" +
			"  drpipe forget --repo /srv/drpipe/repo --host hv01 --keep-within 30d --dry-run --json",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			p, err := kf.policy()
			if err != nil {
				return err
			}
			if len(args) > 0 && !p.Empty() {
				return usagef("give either snapshot ids or keep rules, not both")
			}
			if len(args) > 0 && (host != "" || len(tags) > 0) {
				return usagef("--host and --tag choose the snapshots keep rules apply to; snapshot ids are forgotten as named: give one or the other")
			}
			if len(args) == 0 && p.Empty() {
				return usagef("no keep rule and no snapshot ids: refusing to forget everything (use --keep-last 1 or more)")
			}
			g, err := retention.ParseGroupBy(groupBy)
			if err != nil {
				return usageError{err}
			}
			if tags, err = parseTags(tags); err != nil {
				return err
			}
			// Checked before anything is forgotten.
			po, err := pruneOptions(grace, dryRun)
			if err != nil {
				return err
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			var remove []id.ID
			type decisionJSON struct {
				ID      string   `json:"id"`
				Time    string   `json:"time"`
				Host    string   `json:"host"`
				Tags    []string `json:"tags"`
				Keep    bool     `json:"keep"`
				Reasons []string `json:"reasons"`
				Group   string   `json:"group"`
			}
			decisions := []decisionJSON{} // [] in --json, also when none
			if len(args) > 0 {
				named := map[id.ID]bool{}
				for _, ref := range args {
					sn, err := r.FindSnapshot(ctx, ref, "")
					if err != nil {
						// A snapshot that cannot be read is still
						// forgotten when named by id: keep rules
						// refuse to run beside it.
						x, ierr := r.FindSnapshotID(ctx, ref)
						if ierr != nil {
							return err
						}
						if named[x] {
							continue
						}
						named[x] = true
						fmt.Fprintf(a.stderr, "warning: snapshot %s cannot be read (%v); forgetting it as named\n", x.Short(), err)
						remove = append(remove, x)
						decisions = append(decisions, decisionJSON{ID: x.String(), Group: "explicit"})
						continue
					}
					if named[sn.ID()] {
						continue // named twice (an id and its prefix)
					}
					named[sn.ID()] = true
					remove = append(remove, sn.ID())
					decisions = append(decisions, decisionJSON{ID: sn.ID().String(), Time: sn.Time.Format(time.RFC3339), Host: sn.Host, Tags: sn.Tags, Group: "explicit"})
				}
			} else {
				all, lerr := r.ListSnapshots(ctx)
				if lerr != nil {
					return fmt.Errorf("some snapshots could not be read; refusing to apply keep rules to an incomplete list: %w%s", lerr, unreadableHint(ctx, r, all))
				}
				var items []retention.Item
				for _, s := range all {
					if host != "" && s.Host != host {
						continue
					}
					if len(tags) > 0 && !hasTags(s.Tags, tags) {
						continue
					}
					items = append(items, retention.Item{ID: s.ID().String(), Time: s.Time, Host: s.Host, Tags: s.Tags, Paths: s.Paths})
					if ahead := s.Time.Sub(r.Now()); ahead > time.Hour {
						// Its keep rules count it as the newest: it can
						// take the slot of a backup made after it.
						fmt.Fprintf(a.stderr, "warning: snapshot %s of host %s is dated %s, %s ahead of this host's clock: the keep rules take it as newer than later backups of that host; check its clock, and forget the snapshot by id if it is not wanted\n",
							s.ID().Short(), s.Host, s.Time.Format(time.RFC3339), ahead.Round(time.Minute))
					}
				}
				groups := retention.Group(items, g, p, r.Now())
				// Rules that keep nothing of a group (a --keep-tag that
				// none of its snapshots carries, a typo) would remove a
				// host's every backup: refused, as restic refuses them.
				if emptied := retention.KeepsNothing(groups); len(emptied) > 0 {
					return fmt.Errorf("the keep rules keep nothing of a group: refusing to forget %s; check the --keep-tag names, add a rule such as --keep-last 1, or forget those snapshots by id to remove them all", strings.Join(emptied, ", "))
				}
				for _, grp := range slices.Sorted(maps.Keys(groups)) {
					for _, d := range groups[grp] {
						decisions = append(decisions, decisionJSON{ID: d.Item.ID, Time: d.Item.Time.Format(time.RFC3339), Host: d.Item.Host, Tags: d.Item.Tags, Keep: d.Keep, Reasons: d.Reasons, Group: grp})
						if !d.Keep {
							x, err := id.Parse(d.Item.ID)
							if err != nil {
								return err
							}
							remove = append(remove, x)
						}
					}
				}
			}
			var forgotten int
			var errs []error
			failed := []string{} // [] in --json, also when none
			if !dryRun {
				for _, x := range remove {
					if err := r.ForgetSnapshot(ctx, x); err != nil {
						errs = append(errs, err)
						failed = append(failed, x.String())
						continue
					}
					forgotten++
				}
			}
			// Prune runs even when some snapshots could not be removed
			// (object lock, an immutable file): it frees only data no
			// remaining snapshot uses, so the ones still there keep
			// theirs, and one locked snapshot does not stop every prune.
			var prep *repo.PruneReport
			if prune {
				if dryRun {
					po.Forgotten = remove
				}
				var err error
				prep, err = r.Prune(ctx, po)
				if err != nil {
					errs = append(errs, err)
				}
			}
			if a.jsonOut() {
				if err := a.printJSON(map[string]any{"decisions": decisions, "forgotten": forgotten, "failed": failed, "dry_run": dryRun, "prune": prep}); err != nil {
					return err
				}
			} else {
				tw := a.table()
				fmt.Fprintln(tw, "ID\tTIME\tHOST\tDECISION\tREASONS")
				for _, d := range decisions {
					dec := "remove"
					if d.Keep {
						dec = "keep"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ID[:8], d.Time, d.Host, dec, strings.Join(d.Reasons, ", "))
				}
				tw.Flush()
				verb, n := "forgot", forgotten
				if dryRun {
					verb, n = "would forget", len(remove)
				}
				a.printf("%s %d of %d snapshots\n", verb, n, len(decisions))
				if len(failed) > 0 {
					a.printf("%d snapshots marked remove could not be removed (below); they and their data stay\n", len(failed))
				}
				if prep != nil {
					a.printPrune(prep)
				}
			}
			return errors.Join(errs...)
		},
	}
	kf.register(cmd)
	cmd.Flags().StringVar(&host, "host", "", "only consider snapshots of this host")
	cmd.Flags().StringArrayVar(&tags, "tag", nil, "only consider snapshots carrying every tag given, comma-separated or repeated (--tag a --tag b: a and b, where restic reads a or b)")
	cmd.Flags().StringVar(&groupBy, "group-by", "host,paths", "group snapshots by these fields before applying the rules (host, paths, tags)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be removed; change nothing")
	cmd.Flags().BoolVar(&prune, "prune", false, "run prune afterwards")
	cmd.Flags().StringVar(&grace, "grace", "24h", "prune grace period before condemned data is removed")
	return cmd
}

// unreadableHint names the snapshots of r that are not among the readable
// ones and still cannot be read (one a backup wrote since is not named),
// and tells how to get past them, or returns "" when it cannot list them.
func unreadableHint(ctx context.Context, r *repo.Repository, readable []*repo.Snapshot) string {
	ids, err := r.ListSnapshotIDs(ctx)
	if err != nil {
		return ""
	}
	ok := map[id.ID]bool{}
	for _, s := range readable {
		ok[s.ID()] = true
	}
	var bad []string
	for _, x := range ids {
		if ok[x] {
			continue
		}
		if _, err := r.LoadSnapshot(ctx, x); err != nil {
			bad = append(bad, x.Short())
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf("; once 'drpipe check' confirms they are damaged, forget them by id (drpipe forget %s) and run again", strings.Join(bad, " "))
}

func hasTags(have, want []string) bool {
	for _, w := range want {
		ok := false
		for _, h := range have {
			ok = ok || h == w
		}
		if !ok {
			return false
		}
	}
	return true
}

func pruneOptions(grace string, dryRun bool) (repo.PruneOptions, error) {
	d, err := time.ParseDuration(grace)
	if err != nil || d < 0 {
		return repo.PruneOptions{}, usagef("--grace %q: want a duration like 24h or 0s", grace)
	}
	return repo.PruneOptions{Grace: d, GraceSet: true, DryRun: dryRun}, nil
}

func (a *app) pruneCmd() *cobra.Command {
	var grace, skew string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "prune --repo R [--grace 24h] [--dry-run]",
		Short: "Free data no snapshot references, in two phases, safely beside running backups",
		Long: "prune takes no lock. Phase one condemns packs that no snapshot references (and packs in no index) by writing a\n" +
			"tombstone; new backups stop deduplicating against them. Phase two, on a run after the grace period, removes\n" +
			"condemned packs that are still unreferenced, once no backup that started before the condemnation is running\n" +
			"(backups announce themselves with session objects). Index objects are rewritten before shards are removed.\n" +
			"Objects under retention (S3 object lock) are kept and reported. --grace 0s condemns and removes in one run.",
		Example: "  drpipe prune --repo /srv/drpipe/repo\n  drpipe prune --repo /srv/drpipe/repo --dry-run --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			o, err := pruneOptions(grace, dryRun)
			if err != nil {
				return err
			}
			if skew != "" {
				d, err := time.ParseDuration(skew)
				if err != nil || d < 0 {
					return usagef("--clock-skew %q: want a duration like 5m", skew)
				}
				o.ClockSkew, o.ClockSkewSet = d, true
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			rep, err := r.Prune(ctx, o)
			if rep != nil {
				if a.jsonOut() {
					if jerr := a.printJSON(rep); jerr != nil {
						return jerr
					}
				} else {
					a.printPrune(rep)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&grace, "grace", "24h", "how long condemned data stays before removal")
	cmd.Flags().StringVar(&skew, "clock-skew", "", "tolerated clock difference between hosts (default 5m)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "compute, change nothing")
	return cmd
}

func (a *app) printPrune(rep *repo.PruneReport) {
	verb := ""
	if rep.DryRun {
		verb = " (dry run)"
	}
	a.printf("prune%s: %d snapshots, %d packs, %d unused; condemned %d now; removed %d packs (%s freed); %d resurrected; %d postponed\n",
		verb, rep.Snapshots, rep.Packs, rep.UnusedPacks, rep.Condemned, rep.Removed, humanBytes(rep.BytesFreed), rep.Resurrected, rep.Postponed)
	for _, w := range rep.WaitingFor {
		a.printf("  waiting for %s\n", w)
	}
	for _, l := range rep.Locked {
		a.printf("  kept (retention): %s\n", l)
	}
	if rep.TempRemoved > 0 {
		a.printf("  removed %d temporary files (%s) that interrupted writes left behind\n", rep.TempRemoved, humanBytes(rep.TempBytes))
	}
}
