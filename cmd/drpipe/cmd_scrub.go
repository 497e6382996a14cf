package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// errScrubDamage is returned by scrub when damage remains.
var errScrubDamage = errors.New("scrub: damage remains (listed above)")

func (a *app) scrubCmd() *cobra.Command {
	var workers int
	var dryRun, removeDamaged bool
	var minAge time.Duration
	cmd := &cobra.Command{
		Use:   "scrub --repo LOCATION [--workers N] [--dry-run] [--remove-damaged] [--min-age 1h] [--json]",
		Short: "Verify every stored object without the key, and rebuild lost shards from parity",
		Long: "scrub reads every object of a repository copy (the primary, a DR site's directory, a bucket) and verifies it\n" +
			"against its name without the key: every shard of every pack, and the index, snapshot, key and tombstone objects.\n" +
			"A pack with at least K intact shards has its missing and damaged shards rewritten from them, byte-identical to\n" +
			"what was stored. No password is needed: run it at the DR site, where the key is not. Packs with fewer than K\n" +
			"intact shards and damaged objects are listed; with --remove-damaged their damaged objects are removed, so that\n" +
			"the next replicate, copy or tier run, which send the objects a copy lacks, sends them again from the primary.\n" +
			"Shards storage fails to deliver (a time-out, an I/O error) are reported as unread and left alone. A pack missing\n" +
			"shards, none damaged, all younger than --min-age is taken for one being written and skipped.\n" +
			"Safe beside backups, replication and prune. Exit code 1 when damage remains.",
		Example: "  drpipe scrub --repo /srv/drpipe/dr --remove-damaged\n" +
			"  drpipe scrub --repo s3://offsite-backups/hv01 --json\n" +
			"  drpipe scrub --repo /srv/drpipe/repo --dry-run",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if workers < 1 || workers > 64 {
				return usagef("--workers %d: want 1 to 64", workers)
			}
			if minAge < 0 {
				return usagef("--min-age %s: want a duration of 0 or more", minAge)
			}
			loc, err := a.repoLocation()
			if err != nil {
				return err
			}
			be, err := a.openBackend(ctx, loc, false)
			if err != nil {
				return err
			}
			defer be.Close()
			// Not a repository (a wrong path): say so rather than
			// report nothing found.
			if _, err := repo.ReadConfig(ctx, be); err != nil {
				return err
			}
			o := tiers.ScrubOptions{Workers: workers, DryRun: dryRun, RemoveDamaged: removeDamaged, MinAge: minAge}
			var bar *progressBar
			if a.progressEnabled() {
				c := &pipeline.Counter{Start: time.Now()}
				o.Planned = func(n int, b int64) { c.TotalFiles.Store(int64(n)); c.TotalBytes.Store(b) }
				o.Progress = func(n int, b int64) { c.DoneFiles.Add(int64(n)); c.DoneBytes.Add(b) }
				bar = startProgress(a.stderr, c, "scrub")
			}
			rep, err := tiers.Scrub(ctx, be, o)
			bar.Stop()
			if rep == nil {
				return err
			}
			if err == nil && !rep.Clean() {
				err = errScrubDamage
			}
			if a.jsonOut() {
				if jerr := a.printJSON(rep); jerr != nil {
					return jerr
				}
				return err
			}
			a.printScrub(rep)
			return err
		},
	}
	cmd.Flags().IntVar(&workers, "workers", 2, "packs verified at once (each holds one pack's shards in memory)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only report: rewrite and remove nothing")
	cmd.Flags().BoolVar(&removeDamaged, "remove-damaged", false, "remove damaged objects that cannot be rebuilt here, so that copying from an intact copy sends them again")
	cmd.Flags().DurationVar(&minAge, "min-age", time.Hour, "packs missing shards, none damaged, all younger than this are being written: skip them (0: one hour)")
	return cmd
}

// printScrub prints a scrub report for people.
func (a *app) printScrub(rep *tiers.ScrubReport) {
	a.printf("scrub %s: %d packs (%d shards) and %d other objects, %s verified in %s\n",
		rep.Location, rep.Packs, rep.Shards, rep.Objects, humanBytes(rep.Bytes), time.Duration(rep.Duration*float64(time.Second)).Round(time.Millisecond))
	verb := "rebuilt"
	if rep.DryRun {
		verb = "would rebuild"
	}
	if rep.PacksRebuilt > 0 {
		a.printf("%s %d shards of %d packs from parity:\n", verb, rep.ShardsRebuilt, rep.PacksRebuilt)
		for _, p := range rep.Rebuilt {
			a.printf("  pack %s: shards %s\n", p.Pack, shardList(p.Rebuilt))
			if len(p.NotStored) > 0 {
				a.printf("    NOT STORED: %s\n", p.Error)
			}
		}
		more(a, rep.PacksRebuilt, len(rep.Rebuilt))
	}
	if rep.PacksLost > 0 {
		a.printf("LOST here: %d packs have fewer than K intact shards:\n", rep.PacksLost)
		for _, p := range rep.Lost {
			a.printf("  pack %s: missing %s, damaged %s", p.Pack, shardList(p.Missing), shardList(p.Corrupt))
			if len(p.Removed) > 0 {
				a.printf(", removed %s", shardList(p.Removed))
			}
			a.printf("\n")
		}
		more(a, rep.PacksLost, len(rep.Lost))
	}
	if rep.PacksUnread > 0 {
		a.printf("UNREAD: storage failed to deliver shards of %d packs (run scrub again once it answers):\n", rep.PacksUnread)
		for _, p := range rep.Unread {
			a.printf("  pack %s: %s\n", p.Pack, p.Error)
		}
		more(a, rep.PacksUnread, len(rep.Unread))
	}
	if rep.Damaged+rep.ObjectsUnread > 0 {
		a.printf("%d damaged and %d unreadable objects:\n", rep.Damaged, rep.ObjectsUnread)
		for _, o := range rep.DamagedObjects {
			removed := ""
			if o.Removed {
				removed = " (removed)"
			}
			a.printf("  %s: %s%s\n", o.Object, o.Error, removed)
		}
		more(a, rep.Damaged+rep.ObjectsUnread, len(rep.DamagedObjects))
	}
	if rep.Young > 0 {
		a.printf("%d packs still being written were skipped\n", rep.Young)
	}
	if rep.Vanished > 0 {
		a.printf("%d packs were removed (by a prune) while the scrub ran\n", rep.Vanished)
	}
	if rep.Removed > 0 {
		a.printf("removed %d damaged objects: the next replicate, copy or tier run from an intact copy sends them again\n", rep.Removed)
	}
	if rep.Clean() {
		a.printf("no damage remains\n")
	}
}

// shardList renders shard indexes as "1,5", or "none".
func shardList(xs []int) string {
	if len(xs) == 0 {
		return "none"
	}
	return intsString(xs)
}

// more prints how many entries a capped list left out.
func more(a *app, total, shown int) {
	if total > shown {
		a.printf("  and %d more\n", total-shown)
	}
}

// scrubHint says how to go on after scrub found damage it could not fix.
func scrubHint(err error) string {
	if !errors.Is(err, errScrubDamage) {
		return ""
	}
	return fmt.Sprint("at a copy (DR site, bucket): run scrub with --remove-damaged, then replicate, copy or tier run from the primary sends what was removed again; ",
		"at the primary: 'drpipe check --read-data' names the files a lost pack touches, and 'drpipe repair' removes its unreadable chunks from the index so that the next backup stores them again")
}
