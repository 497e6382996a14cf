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
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
	s3tier "github.com/drpipe/drpipe/tiers/s3"
)

func (a *app) copyCmd() *cobra.Command {
	var to string
	var workers int
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "copy --repo R --to LOCATION [--workers N] [--dry-run] [--json]",
		Short: "Copy the objects another tier lacks (local directory, S3 bucket): replicate the repository",
		Long: "copy makes LOCATION a replica of the repository R by storing there every object it lacks: keys and config,\n" +
			"then the data shards, then the index, then the snapshots, so the destination never holds a snapshot whose data is\n" +
			"missing. Objects already there (same name and size) are not sent again: copy is idempotent, and an interrupted\n" +
			"copy is resumed by running it again. Every object is verified against its name (shard checksums, content hashes)\n" +
			"before it is stored; damaged ones are reported and not copied. No password is needed: objects are copied as\n" +
			"ciphertext. Given one (--password-file, DRPIPE_PASSWORD_FILE, DRPIPE_PASSWORD), copy announces itself in the\n" +
			"destination (an empty one too), so that a prune there waits for it (and it does not start while one runs);\n" +
			"without one, do not prune the destination meanwhile. Nothing is ever removed at the destination.\n" +
			"Both locations may be directories or s3://bucket/prefix (the s3.* settings apply to both). Exit code 1 when some objects could not be copied.",
		Example: "  drpipe copy --repo /srv/drpipe/repo --to s3://offsite-backups/hv01\n" +
			"  drpipe copy --repo s3://offsite-backups/hv01 --to /mnt/restore-repo --json\n" +
			"  drpipe copy --repo /srv/drpipe/repo --to s3://offsite-backups/hv01 --dry-run",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if to == "" {
				return usagef("copy needs --to LOCATION (a directory or s3://bucket/prefix)")
			}
			if !cmd.Flags().Changed("workers") && a.v.IsSet("copy.workers") {
				workers = a.v.GetInt("copy.workers")
			}
			if workers < 1 || workers > 256 {
				return usagef("%s %d: want 1 to 256", setBy(cmd, "workers", "copy.workers"), workers)
			}
			loc, err := a.repoLocation()
			if err != nil {
				return err
			}
			src, err := a.openBackend(ctx, loc, false)
			if err != nil {
				return err
			}
			defer src.Close()
			srcCfg, err := repo.ReadConfig(ctx, src)
			if err != nil {
				return err
			}
			dst, err := a.openBackend(ctx, to, !dryRun)
			if dir, ok := localDir(to); ok && dryRun && errors.Is(err, fs.ErrNotExist) {
				// The copy creates the directory: plan it as empty.
				dst, err = newAbsentDir(dir)
			}
			if err != nil {
				return err
			}
			defer dst.Close()
			o := tiers.CopyOptions{Workers: workers, DryRun: dryRun}
			announced := false
			if !dryRun {
				end, err := a.announceCopy(ctx, src, srcCfg, dst, &o)
				if err != nil {
					return err
				}
				defer end()
				announced = o.BeforeIndex != nil
			}
			pr := &copyProgress{start: time.Now()}
			if a.progressEnabled() {
				pr.draw(a.stderr)
			}
			o.Progress = pr
			st, err := tiers.Copy(ctx, src, dst, o)
			pr.stop()
			if st == nil || errors.Is(err, tiers.ErrDifferentRepository) {
				return err
			}
			if a.jsonOut() {
				out := copyJSON(src, dst, st, pr, dryRun)
				out["announced"] = announced
				if jerr := a.printJSON(out); jerr != nil {
					return jerr
				}
				return err
			}
			a.printCopy(src, dst, st, pr, dryRun)
			return err
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "destination: a directory or s3://bucket/prefix")
	cmd.Flags().IntVar(&workers, "workers", 4, "objects transferred at once (config key copy.workers)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only report what would be copied")
	return cmd
}

// absentDir is a destination directory that does not exist yet, as copy
// --dry-run sees it: empty, so that the dry run plans the copy that
// creates it. It holds nothing and stores nothing.
type absentDir struct{ dir string }

func newAbsentDir(dir string) (tiers.Backend, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("copy to %s: %w", dir, err)
	}
	return absentDir{abs}, nil
}

func (d absentDir) Location() string { return d.dir }

func (d absentDir) Put(context.Context, tiers.Handle, io.Reader, int64) error {
	return fmt.Errorf("%s does not exist: a dry run creates nothing", d.dir)
}

func (absentDir) Load(context.Context, tiers.Handle, int64, int64, func(io.Reader) error) error {
	return tiers.ErrNotFound
}

func (absentDir) Stat(context.Context, tiers.Handle) (tiers.ObjectInfo, error) {
	return tiers.ObjectInfo{}, tiers.ErrNotFound
}

func (absentDir) List(context.Context, tiers.Type, func(tiers.ObjectInfo) error) error { return nil }

func (absentDir) Remove(context.Context, tiers.Handle) error { return tiers.ErrNotFound }

func (absentDir) Close() error { return nil }

// announceCopy announces the copy in dst (repo.BeginCopySession), so
// that a prune of the destination running meanwhile waits for it: a copy
// skips the packs dst holds, condemned ones too, and then writes
// snapshots naming them; and it stores data before the index that names
// it, so that until then a prune takes what it copied for orphans. An
// empty dst is announced to as well: the copy makes it a repository (the
// config and key slots come first) long before it is complete.
// Announcing needs the repository key, so it is done when a password is
// given without asking (--password-file, DRPIPE_PASSWORD_FILE,
// DRPIPE_PASSWORD); without one the copy goes ahead unannounced and says
// so. The key is unlocked from src's key slots when dst's do not open (an
// interrupted copy left dst without them, or one was added at src since
// the last copy). o.BeforeIndex is set when announced. end ends the
// announcement.
func (a *app) announceCopy(ctx context.Context, src tiers.Backend, srcCfg *repo.Config, dst tiers.Backend, o *tiers.CopyOptions) (end func(), err error) {
	end = func() {}
	dstCfg, err := repo.ReadConfig(ctx, dst)
	empty := errors.Is(err, repo.ErrNotRepository)
	if empty {
		err = nil
	}
	if err == nil && !empty && dstCfg.ID != srcCfg.ID {
		return end, nil // another repository: the copy refuses it
	}
	pw, given, perr := a.givenPassword()
	if perr != nil {
		return end, fmt.Errorf("%w (copy uses the password only to announce itself in %s; give a readable file, or no password setting to copy unannounced)", perr, dst.Location())
	}
	if !given {
		if err == nil {
			fmt.Fprintf(a.stderr, "note: this copy is not announced in %s (no password given): a prune of the destination must not run until it ends. "+
				"Give the password (DRPIPE_PASSWORD_FILE, --password-file) and prunes there wait for the copy\n", dst.Location())
		}
		return end, nil
	}
	if err != nil {
		return end, fmt.Errorf("read the configuration of %s to announce the copy there: %w", dst.Location(), err)
	}
	ro, err := a.repoOptions(pw)
	if err != nil {
		return end, err
	}
	r, err := repo.OpenReplica(ctx, dst, src, ro)
	if errors.Is(err, repo.ErrWrongPassword) {
		// copy itself needs no password: say that this one came from
		// the settings, and how to go on without it.
		return end, fmt.Errorf("announce the copy in %s: %w. The password given (--password-file, DRPIPE_PASSWORD, "+
			"DRPIPE_PASSWORD_FILE or the password_file setting) is used only to announce the copy there, so that a prune of the destination waits for it: "+
			"give this repository's password, or none to copy unannounced (then do not prune %s until the copy ends)",
			dst.Location(), err, dst.Location())
	}
	if err != nil {
		return end, fmt.Errorf("open the repository in %s to announce the copy there: %w", dst.Location(), err)
	}
	host, _ := os.Hostname()
	sess, err := r.BeginCopySession(ctx, host)
	if err != nil {
		r.Close()
		return end, err
	}
	o.BeforeIndex = sess.Check
	return func() {
		if err := sess.End(context.WithoutCancel(ctx)); err != nil {
			// An S3 bucket with object lock keeps it: until it goes stale
			// a prune there waits for a copy that has ended.
			fmt.Fprintf(a.stderr, "warning: the copy's announcement could not be removed from %s (%v): a prune there waits for it as for a running copy until it goes stale, %s from now\n",
				dst.Location(), err, repo.SessionTTL+repo.ClockSkew)
		}
		r.Close()
	}, nil
}

func copyJSON(src, dst tiers.Backend, st *tiers.CopyStats, pr *copyProgress, dryRun bool) map[string]any {
	failures := []map[string]string{}
	for _, f := range st.Failures {
		failures = append(failures, map[string]string{"object": f.Handle.String(), "error": f.Err.Error()})
	}
	byType := map[string]*tiers.CopyTypeStats{}
	for t, ts := range st.ByType {
		byType[string(t)] = ts
	}
	return map[string]any{
		"source": src.Location(), "destination": dst.Location(), "dry_run": dryRun,
		"objects": st.Total.Source, "bytes": st.Total.SourceBytes,
		"present": st.Total.Present, "to_copy": pr.plannedN.Load(), "to_copy_bytes": pr.plannedB.Load(),
		"copied": st.Total.Copied, "bytes_copied": st.Total.CopiedBytes,
		"vanished": st.Total.Vanished, "failed": st.Total.Failed, "failures": failures,
		"by_type": byType, "duration_s": st.Duration.Seconds(),
	}
}

func (a *app) printCopy(src, dst tiers.Backend, st *tiers.CopyStats, pr *copyProgress, dryRun bool) {
	verb := "copied"
	if dryRun {
		verb = "would copy"
		a.printf("dry run: nothing was copied\n")
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "type\tsource\tpresent\t"+verb+"\tbytes\tfailed\t")
	for _, t := range tiers.AllTypes {
		ts := st.ByType[t]
		if ts == nil {
			continue
		}
		n, b := ts.Copied, ts.CopiedBytes
		if dryRun {
			n, b = pr.plannedOf(t)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t\n", t, ts.Source, ts.Present, n, humanBytes(b), ts.Failed)
	}
	tw.Flush()
	if dryRun {
		a.printf("would copy %d of %d objects (%s) from %s to %s; %d are already there\n",
			pr.plannedN.Load(), st.Total.Source, humanBytes(pr.plannedB.Load()), src.Location(), dst.Location(), st.Total.Present)
		return
	}
	rate := float64(st.Total.CopiedBytes) / max(st.Duration.Seconds(), 0.001)
	a.printf("copied %d of %d objects (%s) from %s to %s in %.1fs (%s/s); %d were already there\n",
		st.Total.Copied, st.Total.Source, humanBytes(st.Total.CopiedBytes), src.Location(), dst.Location(),
		st.Duration.Seconds(), humanBytes(int64(rate)), st.Total.Present)
	if st.Total.Vanished > 0 {
		a.printf("%d objects disappeared from the source during the copy (removed by prune)\n", st.Total.Vanished)
	}
	for _, f := range st.Failures {
		fmt.Fprintf(a.stderr, "FAILED %s: %v\n", f.Handle, f.Err)
	}
}

// copyProgress implements tiers.CopyProgress and draws a status line.
type copyProgress struct {
	start       time.Time
	plannedN    atomic.Int64
	plannedB    atomic.Int64
	doneN       atomic.Int64
	doneB       atomic.Int64
	mu          sync.Mutex
	perType     map[tiers.Type][2]int64
	quit        chan struct{}
	wg          sync.WaitGroup
	currentType atomic.Value
}

func (p *copyProgress) Planned(t tiers.Type, n int, b int64) {
	p.plannedN.Add(int64(n))
	p.plannedB.Add(b)
	p.currentType.Store(string(t))
	p.mu.Lock()
	if p.perType == nil {
		p.perType = map[tiers.Type][2]int64{}
	}
	p.perType[t] = [2]int64{int64(n), b}
	p.mu.Unlock()
}

func (p *copyProgress) Transferred(_ tiers.Handle, b int64) {
	p.doneN.Add(1)
	p.doneB.Add(b)
}

func (p *copyProgress) plannedOf(t tiers.Type) (int, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.perType[t]
	return int(v[0]), v[1]
}

func (p *copyProgress) draw(w io.Writer) {
	p.quit = make(chan struct{})
	p.wg.Add(1)
	line := func() {
		el := time.Since(p.start)
		cur, _ := p.currentType.Load().(string)
		fmt.Fprintf(w, "\r\033[Kcopy %s: %d/%d objects, %s/%s, %s/s  %s", cur, p.doneN.Load(), p.plannedN.Load(),
			humanBytes(p.doneB.Load()), humanBytes(p.plannedB.Load()), humanBytes(int64(float64(p.doneB.Load())/max(el.Seconds(), 0.001))),
			el.Truncate(time.Second))
	}
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				line()
				fmt.Fprintln(w)
				return
			case <-t.C:
				line()
			}
		}
	}()
}

func (p *copyProgress) stop() {
	if p.quit != nil {
		close(p.quit)
		p.wg.Wait()
	}
}

func (a *app) warmupCmd() *cobra.Command {
	var wait bool
	var poll time.Duration
	cmd := &cobra.Command{
		Use:   "warmup --repo s3://bucket/prefix [--wait] [--json]",
		Short: "Request the restore of archived data (S3 GLACIER, DEEP_ARCHIVE) and report when it is readable",
		Long: "Data shards stored in an archive storage class (s3.storage_class GLACIER or DEEP_ARCHIVE) must be restored\n" +
			"before restore, check --read-data or copy can read them. warmup requests a restore (RestoreObject, s3.restore_tier,\n" +
			"kept for s3.restore_days) of every archived data object that is not restored or being restored, and reports how\n" +
			"many are still pending and when they should be ready. Run it again to poll (nothing is requested twice), or use\n" +
			"--wait to poll until everything is readable. Pending objects are a state, not a failure: the exit code is 0.",
		Example: "  drpipe warmup --repo s3://offsite-backups/hv01\n  drpipe warmup --repo s3://offsite-backups/hv01 --wait --poll 15m",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			loc, err := a.repoLocation()
			if err != nil {
				return err
			}
			if !strings.HasPrefix(loc, "s3://") {
				return usagef("warmup applies to s3:// repositories; %s has no archive storage classes", loc)
			}
			be, err := a.openS3Raw(ctx, loc)
			if err != nil {
				return err
			}
			defer be.Close()
			for {
				res, err := warmupOnce(ctx, be)
				if err != nil {
					return err
				}
				if a.jsonOut() && (!wait || res["pending"] == 0) {
					return a.printJSON(res)
				}
				if !a.jsonOut() {
					a.printWarmup(res)
				}
				if !wait || res["pending"] == 0 {
					return nil
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(poll):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "poll until every object is readable")
	cmd.Flags().DurationVar(&poll, "poll", 10*time.Minute, "with --wait, time between polls")
	return cmd
}

func warmupOnce(ctx context.Context, be *s3tier.Backend) (map[string]any, error) {
	var cold []tiers.Handle
	total := 0
	err := be.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		total++
		if s3tier.IsArchiveClass(oi.StorageClass) {
			cold = append(cold, oi.Handle)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res := map[string]any{"location": be.Location(), "objects": total, "archived": len(cold), "pending": 0}
	if len(cold) == 0 {
		return res, nil
	}
	ready, pending, err := be.Warmup(ctx, cold)
	if err != nil {
		return nil, err
	}
	res["pending"] = len(pending)
	if len(pending) > 0 {
		res["ready_at"] = ready.UTC().Format(time.RFC3339)
		res["ready_in_s"] = int64(time.Until(ready).Seconds())
	}
	return res, nil
}

func (a *app) printWarmup(res map[string]any) {
	switch {
	case res["archived"] == 0:
		a.printf("%s: all %d data objects are in instant-access storage classes; nothing to restore\n", res["location"], res["objects"])
	case res["pending"] == 0:
		a.printf("%s: all %d archived data objects are restored and readable\n", res["location"], res["archived"])
	default:
		sec, _ := res["ready_in_s"].(int64)
		a.printf("%s: restore requested for %d of %d archived data objects; ready in %s (around %s); run drpipe warmup again to check\n",
			res["location"], res["pending"], res["archived"], humanETA(time.Duration(sec)*time.Second), res["ready_at"])
	}
}
