package main

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/drpipe/drpipe/drsite"
	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/cpus"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/retention"
)

func (a *app) initCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init --repo R [--ec K+M] [--pack-size SIZE] [--chunk-sizes MIN:AVG:MAX] [--format-version N]",
		Short: "Create a new repository",
		Long: "Create a new, empty repository with a random chunker polynomial and a password-wrapped master key.\n" +
			"--ec chooses the erasure coding of every pack: K data + M parity shards; any K rebuild the pack.\n" +
			"--chunk-sizes sets the content-defined chunk sizes every backup into the repository uses, fixed for its life:\n" +
			"\"default\" (256KiB:768KiB:4MiB), \"restic\" (512KiB:1536KiB:8MiB) or MIN:AVG:MAX with AVG-MIN a power of two,\n" +
			"MIN at least 64KiB and MAX at most 8MiB. Smaller chunks dedupe small in-place changes better; larger ones\n" +
			"mean fewer index entries for very large repositories.\n" +
			"--format-version 1 or 2 creates a repository that drpipe releases knowing only that format can still use (format 1: SHA-256 shard hashes; 2: BLAKE3; the default, format 3, also binds every sealed metadata object to its kind).",
		Example: "  drpipe init --repo /srv/drpipe/repo --password-file /etc/drpipe/pw --ec 4+2\n" +
			"  drpipe init --repo /srv/drpipe/big --chunk-sizes 1MiB:3MiB:8MiB",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ec, err := erasure.ParseParams(a.flagOr(cmd, "ec", "init.ec"))
			if err != nil {
				return usagef("%s: %w", setBy(cmd, "ec", "init.ec"), err)
			}
			pss := a.flagOr(cmd, "pack-size", "init.pack_size")
			ps, err := parseSize(pss)
			if err != nil {
				return usagef("%s: %w", setBy(cmd, "pack-size", "init.pack_size"), err)
			}
			if ps < repo.MinPackSize || ps > repo.MaxPackSize {
				return usagef("%s %s: must be from 1MiB to 1GiB", setBy(cmd, "pack-size", "init.pack_size"), pss)
			}
			chunks, err := parseChunkSizes(a.flagOr(cmd, "chunk-sizes", "init.chunk_sizes"))
			if err != nil {
				return usagef("%s: %w", setBy(cmd, "chunk-sizes", "init.chunk_sizes"), err)
			}
			fv, _ := cmd.Flags().GetInt("format-version")
			if fv < 0 || fv > repo.FormatVersion {
				return usagef("--format-version %d: this drpipe creates format 1..%d", fv, repo.FormatVersion)
			}
			loc, err := a.repoLocation()
			if err != nil {
				return err
			}
			if err := initTargetEmpty(loc); err != nil {
				return err
			}
			// The settings are checked before anything is created: a
			// refused init must leave no directory that the next one
			// would find not empty.
			o, err := a.repoOptions(nil)
			if err != nil {
				return err
			}
			if o.Password, err = a.password("new repository password: ", true); err != nil {
				return err
			}
			be, err := a.openBackend(ctx, loc, true)
			if err != nil {
				return err
			}
			defer be.Close()
			r, err := repo.Init(ctx, be, repo.InitOptions{EC: ec, PackSize: int(ps), Version: fv, Chunks: chunks}, o)
			if err != nil {
				return err
			}
			defer r.Close()
			cfg := r.Config()
			if a.jsonOut() {
				return a.printJSON(map[string]any{"id": cfg.ID, "location": be.Location(), "ec": ec.String(), "pack_size": cfg.PackSize, "version": cfg.Version,
					"chunks": map[string]uint{"min": cfg.Chunks.Min, "avg": cfg.Chunks.Average(), "max": cfg.Chunks.Max}})
			}
			a.printf("created repository %s at %s\n  erasure coding %s (any %d of %d shards rebuild a pack), packs of %s, chunks %s (min:avg:max), format version %d\n",
				cfg.ID.Short(), be.Location(), ec, ec.K, ec.K+ec.M, humanBytes(int64(cfg.PackSize)), cfg.Chunks, cfg.Version)
			a.printf("keep the password safe: without it the repository cannot be read\n")
			return nil
		},
	}
	cmd.Flags().String("ec", "4+2", "erasure coding K+M (config key init.ec)")
	cmd.Flags().String("pack-size", "16MiB", "target pack size before erasure coding (config key init.pack_size)")
	cmd.Flags().String("chunk-sizes", "default", "content-defined chunk sizes MIN:AVG:MAX, or default or restic (config key init.chunk_sizes)")
	cmd.Flags().Int("format-version", 0, "repository format to create: 0 = newest (3); 1 or 2 stay readable by drpipe releases that know only that format")
	return cmd
}

// parseChunkSizes parses init's --chunk-sizes: "default", "restic" or
// MIN:AVG:MAX (sizes as parseSize reads them; AVG-MIN a power of two).
func parseChunkSizes(s string) (*repo.ChunkSizes, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "default":
		return repo.DefaultChunkSizes(), nil
	case "restic":
		return repo.ResticChunkSizes(), nil
	}
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%q: want default, restic or MIN:AVG:MAX (e.g. 256KiB:768KiB:4MiB)", s)
	}
	var v [3]int64
	for i, p := range parts {
		n, err := parseSize(p)
		if err != nil {
			return nil, err
		}
		v[i] = n
	}
	min, avg, max := v[0], v[1], v[2]
	if min <= 0 || avg <= min || max > 1<<40 {
		return nil, fmt.Errorf("%q: want MIN < AVG < MAX", s)
	}
	gap := avg - min
	c := &repo.ChunkSizes{Min: uint(min), Max: uint(max), AverageBits: bits.Len64(uint64(gap)) - 1}
	if gap&(gap-1) != 0 {
		return nil, fmt.Errorf("%q: AVG-MIN is %d bytes, not a power of two (the chunker cuts with probability 1/(AVG-MIN) per byte past MIN); the nearest below is %s", s, gap, c)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseSize parses a size as every size key and flag takes it: plain
// bytes, or a number with a binary (KiB, MiB, GiB, TiB; also K, M, G, T)
// or decimal (kB, MB, GB, TB) unit, as drsite.ParseSize reads it. The
// whole text must be a size: "18TB" is 18 TB, and "10x" is an error, not
// 10 bytes.
func parseSize(s string) (int64, error) {
	return drsite.ParseSize(s)
}

func (a *app) backupCmd() *cobra.Command {
	var tags, inventories []string
	var stdin bool
	var stdinName, host string
	cmd := &cobra.Command{
		Use:   "backup --repo R --host NAME [--tag T] [--inventory FILE]... PATH... | --stdin --stdin-name NAME",
		Short: "Back up files, directories and disk images (or standard input) into a new snapshot",
		Long: "Back up PATHs into the repository. Large files (VM disk images) are chunked in parallel segments;\n" +
			"holes and all-zero regions are recorded, not stored. Unchanged files (same size, mtime, ctime, inode as\n" +
			"in the previous snapshot of the same host and paths) are not read again; files changed shortly before the\n" +
			"backup began (within the granularity of their time stamps) are read again by the next backup.\n" +
			"Exit code 3 means the snapshot was written but some files could not be read.",
		Example: "  drpipe backup --repo /srv/drpipe/repo --host hv01 --tag nightly /var/lib/libvirt/images\n" +
			"  pg_dumpall | drpipe backup --repo /srv/drpipe/repo --stdin --stdin-name pg.sql",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if stdin && len(args) > 0 {
				return usagef("--stdin and PATH arguments are exclusive")
			}
			if !stdin && len(args) == 0 {
				return usagef("give one or more PATHs to back up, or --stdin --stdin-name NAME")
			}
			switch {
			case !stdin && stdinName != "":
				return usagef("--stdin-name is only used with --stdin")
			case stdin && stdinName == "":
				return usagef("--stdin needs --stdin-name NAME (the file name in the snapshot)")
			case stdin && (strings.ContainsAny(stdinName, "/\x00") || stdinName == "." || stdinName == ".."):
				return usagef("--stdin-name %q must be a plain file name, without /", stdinName)
			case stdin && len(stdinName) > pipeline.MaxNameLen:
				return usagef("--stdin-name is %d bytes long: give a file name of at most %d bytes, which a restore can create", len(stdinName), pipeline.MaxNameLen)
			}
			if in, ok := a.stdin.(*os.File); stdin && ok && term.IsTerminal(int(in.Fd())) {
				return usagef("--stdin: standard input is a terminal, not the data to back up: pipe the data in (pg_dumpall | drpipe backup ... --stdin) or redirect it from a file")
			}
			for _, p := range args {
				if p == "" {
					return usagef("an empty PATH argument (an unset shell variable?): give the paths to back up")
				}
			}
			if host == "" {
				host = a.v.GetString("host")
			}
			tags, err := parseTags(append(tags, a.v.GetStringSlice("backup.tags")...))
			if err != nil {
				return err
			}
			inv, invModel, err := a.loadInventories(inventories, host)
			if err != nil {
				return err
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			cnt := &pipeline.Counter{Start: time.Now()}
			var bar *progressBar
			if a.progressEnabled() {
				bar = startProgress(a.stderr, cnt, "backup")
			}
			cnt.OnWarn = func(w pipeline.Warning) {
				clear := "" // a warning line clears the progress line it interrupts
				if bar != nil {
					clear = "\r\033[K"
				}
				fmt.Fprintf(a.stderr, "%swarning: %s: %v\n", clear, w.Path, w.Err)
			}
			o := pipeline.BackupOptions{Host: host, Tags: tags, Paths: args, Progress: cnt, Scan: bar != nil,
				Workers: a.v.GetInt("workers"), Inventory: inv, Program: "drpipe " + version}
			o.Flatten, o.NoDiskImages = a.diskBackupFlags(cmd)
			o.RawDisks = rawDisks(invModel)
			if stdin {
				o.Stdin, o.StdinName = a.stdin, stdinName
			}
			res, err := pipeline.Backup(ctx, r, o)
			bar.Stop()
			if res == nil {
				return err
			}
			s := res.Summary
			if a.jsonOut() {
				if jerr := a.printJSON(map[string]any{
					"snapshot_id": res.Snapshot.ID(), "host": res.Snapshot.Host, "time": res.Snapshot.Time.Format(time.RFC3339Nano),
					"bytes_read": s.BytesRead, "bytes_total": s.BytesTotal, "bytes_new": s.BytesNew, "blobs_new": s.BlobsNew,
					"files": s.Files, "dirs": s.Dirs, "duration_s": s.DurationSec, "warnings": res.Warnings,
					"inventory": inventorySummary(invModel),
				}); jerr != nil {
					return jerr
				}
			} else {
				a.printf("snapshot %s saved (host %s)\n", res.Snapshot.ID().Short(), res.Snapshot.Host)
				if invModel != nil {
					a.printf("  inventory: %d VMs, %d warnings\n", len(invModel.VMs), len(invModel.Warnings))
				}
				a.printf("  %d files, %d dirs, %s in total, %s read, %s added to the repository, %.1fs (%s/s)\n",
					s.Files, s.Dirs, humanBytes(s.BytesTotal), humanBytes(s.BytesRead), humanBytes(s.BytesNew), s.DurationSec,
					humanBytes(int64(float64(s.BytesTotal)/max(s.DurationSec, 0.001))))
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "", "host name recorded in the snapshot (config key host; default: this machine's hostname)")
	f.StringArrayVar(&tags, "tag", nil, "tags for the snapshot, separated by commas (repeatable; added to those of config key backup.tags)")
	f.StringArrayVar(&inventories, "inventory", nil, "VM inventory file to store with the snapshot (repeatable)")
	f.BoolVar(&stdin, "stdin", false, "back up standard input as one file")
	f.StringVar(&stdinName, "stdin-name", "", "file name for --stdin in the snapshot")
	addDiskBackupFlags(cmd)
	return cmd
}

// initTargetEmpty refuses to create a repository in an existing local
// directory that holds other files (a mistyped path such as /etc would
// otherwise get a repository's folders mixed into it). A directory that
// already holds a repository gets repo.Init's own refusal.
func initTargetEmpty(loc string) error {
	dir, ok := localDir(loc)
	if !ok {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return nil // new, empty, or not a directory (opening it says why)
	}
	if _, err := os.Lstat(filepath.Join(dir, "config")); err == nil {
		return nil
	}
	return fmt.Errorf("%s is not empty (%d entries, e.g. %q) and holds no drpipe repository: give a new or empty directory, so the repository's files do not mix with others", dir, len(ents), ents[0].Name())
}

// parseTags turns --tag values (backup's, or backup.tags; forget's filter)
// into tag names: each value is a comma-separated list, as forget
// --keep-tag reads it, so "nightly,monthly" is the two tags nightly and
// monthly rather than one tag that no keep rule could ever match. An empty
// name (an unset shell variable) is refused, as --keep-tag refuses it.
func parseTags(in []string) ([]string, error) {
	var out []string
	for _, v := range in {
		for _, t := range retention.SplitTags(v) {
			if t == "" {
				return nil, usagef("--tag %q: empty tag name (give tag names, several separated by commas, e.g. --tag nightly,prod)", v)
			}
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out, nil
}

func (a *app) snapshotsCmd() *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:     "snapshots --repo R [--host H] [--json]",
		Short:   "List snapshots",
		Example: "  drpipe snapshots --repo /srv/drpipe/repo\n  drpipe snapshots --repo /srv/drpipe/repo --json | jq '.[].id'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			all, lerr := r.ListSnapshots(ctx)
			var out []*repo.Snapshot
			for _, s := range all {
				if host == "" || s.Host == host {
					out = append(out, s)
				}
			}
			if a.jsonOut() {
				type js struct {
					ID      id.ID         `json:"id"`
					ShortID string        `json:"short_id"`
					Time    string        `json:"time"`
					Host    string        `json:"host"`
					Tags    []string      `json:"tags"`
					Paths   []string      `json:"paths"`
					Tree    id.ID         `json:"tree"`
					Parent  *id.ID        `json:"parent,omitempty"`
					Summary *repo.Summary `json:"summary,omitempty"`
				}
				list := make([]js, 0, len(out))
				for _, s := range out {
					list = append(list, js{ID: s.ID(), ShortID: s.ID().Short(), Time: s.Time.Format(time.RFC3339Nano), Host: s.Host, Tags: s.Tags, Paths: s.Paths, Tree: s.Tree, Parent: s.Parent, Summary: s.Summary})
				}
				if err := a.printJSON(list); err != nil {
					return err
				}
				return lerr
			}
			tw := a.table()
			fmt.Fprintln(tw, "ID\tTIME\tHOST\tTAGS\tSIZE\tPATHS")
			for _, s := range out {
				size := ""
				if s.Summary != nil {
					size = humanBytes(s.Summary.BytesTotal)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID().Short(), s.Time.Local().Format("2006-01-02 15:04:05"), s.Host, strings.Join(s.Tags, ","), size, strings.Join(s.Paths, " "))
			}
			tw.Flush()
			a.printf("%d snapshots\n", len(out))
			return lerr
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only snapshots of this host")
	return cmd
}

func (a *app) restoreCmd() *cobra.Command {
	var target, host string
	var paths []string
	var fromTiers bool
	cmd := &cobra.Command{
		Use:   "restore --repo R SNAPSHOT|latest --target DIR [--path P]...",
		Short: "Restore a snapshot (or some paths of it) into a directory",
		Long: "Restore files with their modes, owners (as root), times, symlinks and holes. SNAPSHOT is a full id, a unique\n" +
			"prefix, or latest (with --host: the newest of that host). Damaged packs are rebuilt from parity on the fly.\n" +
			"Exit code 3 means some files could not be restored; they are listed.",
		Example: "  drpipe restore --repo /srv/drpipe/repo latest --target /restore\n" +
			"  drpipe restore --repo /srv/drpipe/repo 3fa2c1d9 --target /restore --path /var/lib/libvirt/images/dc01.qcow2\n" +
			"  drpipe restore --repo /srv/drpipe/repo latest --target /restore --delta   # resume: write only what differs",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cpus.Oversubscribe()
			if target == "" {
				return usagef("restore needs --target DIR")
			}
			for _, p := range paths {
				if strings.TrimSpace(p) == "" {
					return usagef("--path %q is empty (an unset shell variable?): give a path as it was backed up, or leave --path out to restore the whole snapshot", p)
				}
			}
			df, err := a.diskFormatFlag(cmd) // a usage error before anything is opened
			if err != nil {
				return err
			}
			delta := a.v.GetBool("restore.delta")
			if cmd.Flags().Changed("delta") {
				delta, _ = cmd.Flags().GetBool("delta")
			}
			r, fb, err := a.openMaybeTiered(ctx, fromTiers)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			sn, err := r.FindSnapshot(ctx, args[0], host)
			if err != nil {
				return err
			}
			cnt := &pipeline.Counter{Start: time.Now()}
			var bar *progressBar
			if a.progressEnabled() {
				bar = startProgress(a.stderr, cnt, "restore")
			}
			if sn.Summary != nil {
				cnt.AddTotal(sn.Summary.Files, sn.Summary.BytesTotal)
			}
			start := time.Now()
			res, err := pipeline.Restore(ctx, r, sn, pipeline.RestoreOptions{Target: target, Include: paths, Progress: cnt, Workers: a.restoreWorkers(fromTiers), DiskFormat: df, Delta: delta})
			bar.Stop()
			if res == nil {
				return err
			}
			el := time.Since(start).Seconds()
			if a.jsonOut() {
				failed, notices := restoreIssuesJSON(res)
				out := map[string]any{"snapshot_id": sn.ID(), "target": target, "files": res.Files, "dirs": res.Dirs,
					"bytes_total": res.BytesTotal, "bytes_written": res.BytesWritten, "duration_s": el, "failed": failed, "notices": notices}
				if delta {
					out["bytes_kept"], out["files_kept"] = res.BytesKept, res.FilesKept
				}
				if fb != nil {
					out["served_by"] = fb.Usage()
				}
				if jerr := a.printJSON(out); jerr != nil {
					return jerr
				}
			} else {
				a.printf("restored snapshot %s to %s: %d files, %d dirs, %s (%s written, holes kept), %.1fs\n",
					sn.ID().Short(), target, res.Files, res.Dirs, humanBytes(res.BytesTotal), humanBytes(res.BytesWritten), el)
				if delta {
					a.printf("  delta: %d files written in place, %s already there and not written\n", res.FilesKept, humanBytes(res.BytesKept))
				}
				a.printRestoreIssues(res)
				a.printTierUsage(a.stdout, fb)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "directory to restore into")
	cmd.Flags().StringArrayVar(&paths, "path", nil, "restore only this snapshot path and what is below it (repeatable)")
	cmd.Flags().StringVar(&host, "host", "", "the snapshot's host: with latest, the newest of this host; with an id, refused unless the snapshot is this host's")
	addDiskFormatFlag(cmd)
	cmd.Flags().Bool("delta", false, "keep files already in the target and write only the chunks that differ from the snapshot (compared locally), to resume an interrupted restore or refresh a copy; files others could write to are replaced (config key restore.delta)")
	cmd.Flags().BoolVar(&fromTiers, "tiers", false, "read each object from the first tier of the tiering policy (--config) that has it intact: hot, other directories, the DR site (read over QUIC), cloud, tape pools; report which tiers served")
	return cmd
}

// remoteRestoreWorkers is the least number of pack readers of a restore
// from a remote repository (a bucket, or tiers that may include the DR
// site): there each reader mostly waits on its connection, and the
// connections, not the CPUs, set the pace. Over an emulated WAN (10 ms,
// 12 MiB/s per connection) 8 readers on 2 CPUs restored 504 MiB in 6.5 s
// against 11.1 s with 4 (bench -suites s3).
const remoteRestoreWorkers = 8

// restoreWorkers is the number of pack readers for a restore: the
// restore.workers key when set, else 2 per CPU (pipeline's default), at
// least remoteRestoreWorkers when the repository is not a local
// directory or the restore reads through the tiers.
func (a *app) restoreWorkers(fromTiers bool) int {
	if n := a.v.GetInt("restore.workers"); n > 0 {
		return n
	}
	loc, _ := a.repoLocation()
	if _, local := localDir(loc); local && !fromTiers {
		return 0
	}
	return max(2*cpus.N(), remoteRestoreWorkers)
}

// restoreIssuesJSON gives a restore's failed entries and notices as the
// "failed" and "notices" arrays of --json output.
func restoreIssuesJSON(res *pipeline.RestoreResult) (failed, notices []map[string]string) {
	failed, notices = []map[string]string{}, []map[string]string{}
	for _, f := range res.Failed {
		failed = append(failed, map[string]string{"path": f.Path, "error": f.Err.Error()})
	}
	for _, f := range res.Notices {
		notices = append(notices, map[string]string{"path": f.Path, "notice": f.Err.Error()})
	}
	return failed, notices
}

// printRestoreIssues prints a restore's failed entries and notices on
// stderr, one line each.
func (a *app) printRestoreIssues(res *pipeline.RestoreResult) {
	for _, f := range res.Failed {
		fmt.Fprintf(a.stderr, "FAILED %s: %v\n", f.Path, f.Err)
	}
	for _, f := range res.Notices {
		fmt.Fprintf(a.stderr, "NOTICE %s: %v\n", f.Path, f.Err)
	}
}

func (a *app) checkCmd() *cobra.Command {
	var readData bool
	var subset string
	cmd := &cobra.Command{
		Use:   "check --repo R [--read-data | --read-data-subset N/T|P%]",
		Short: "Verify the repository; with --read-data verify every shard and blob",
		Long: "check verifies index objects, snapshots and trees, that every referenced blob is indexed, and that every\n" +
			"pack has all its shards. --read-data also reads every shard, checks it against its hash and decrypts every\n" +
			"blob. --read-data-subset N/T reads only the N-th of T parts of the packs (by pack id: T runs, N = 1..T, read\n" +
			"them all), P% a random P percent of them. Damage is reported with the packs, shards, files and snapshots it\n" +
			"touches; exit code 1 when any is found.",
		Example: "  drpipe check --repo /srv/drpipe/repo --read-data\n  drpipe check --repo /srv/drpipe/repo --read-data-subset $(( $(date +%u) ))/7   # a seventh each night",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var sub *repo.Subset
			if cmd.Flags().Changed("read-data-subset") {
				var err error
				if sub, err = repo.ParseSubset(subset); err != nil {
					return usageError{err}
				}
				readData = true
			}
			a.skipBadIndex = true // check reports them
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			o := repo.CheckOptions{ReadData: readData, Subset: sub}
			if a.progressEnabled() {
				o.Progress = func(done, total int) { fmt.Fprintf(a.stderr, "\r\033[Kread %d/%d packs", done, total) }
			}
			rep, err := r.Check(ctx, o)
			if o.Progress != nil {
				fmt.Fprintln(a.stderr)
			}
			if rep == nil {
				return err
			}
			if a.jsonOut() {
				if jerr := a.printJSON(rep); jerr != nil {
					return jerr
				}
			} else {
				a.printCheck(rep)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&readData, "read-data", false, "read and verify all data")
	cmd.Flags().StringVar(&subset, "read-data-subset", "", "read and verify part of the data: N/T (the N-th of T parts by pack id) or P% (a random P percent of the packs)")
	return cmd
}

func (a *app) printCheck(rep *repo.CheckReport) {
	a.printf("checked %d snapshots, %d trees, %d index objects, %d packs (%d shards), %d blobs", rep.Snapshots, rep.Trees, rep.IndexFiles, rep.Packs, rep.Shards, rep.Blobs)
	if rep.ReadData {
		a.printf(", read %s", humanBytes(rep.BytesRead))
		if rep.ReadSubset != "" {
			a.printf(" of %d packs (subset %s; the other packs were checked without reading them)", rep.PacksRead, rep.ReadSubset)
		}
	}
	a.printf("\n")
	for _, e := range rep.Errors {
		a.printf("error: %s\n", e)
	}
	for _, d := range rep.Damaged {
		state := "repairable (run drpipe repair)"
		switch {
		case d.Repairable:
		case d.K+d.M-len(d.Missing)-len(d.Corrupt) < d.K && d.BlobsRead && d.BadBlobs == 0:
			state = "LOST: fewer than K intact shards, but every blob still reads from the data shards"
		case d.K+d.M-len(d.Missing)-len(d.Corrupt) < d.K && d.BlobsRead:
			state = fmt.Sprintf("LOST: fewer than K intact shards; %d blobs cannot be read (the files below), the others still can", d.BadBlobs)
		case d.K+d.M-len(d.Missing)-len(d.Corrupt) < d.K:
			state = "LOST: fewer than K intact shards"
		case d.BlobsRead && d.BadBlobs == 0:
			state = "NOT REPAIRABLE: its shards do not give a usable pack, but every blob still reads from the data shards"
		case d.BlobsRead:
			state = fmt.Sprintf("NOT REPAIRABLE: its shards do not give a usable pack; %d blobs cannot be read (the files below), the others still can", d.BadBlobs)
		case d.BadBlobs > 0:
			state = fmt.Sprintf("LOST: %d blobs do not decrypt although the pack was rebuilt", d.BadBlobs)
		default:
			state = "NOT REPAIRABLE: its shards do not give a usable pack (see below)"
		}
		a.printf("damaged pack %s (%d+%d): missing shards %v, corrupt shards %v: %s\n", d.Pack, d.K, d.M, d.Missing, d.Corrupt, state)
		for _, det := range d.Details {
			a.printf("  %s\n", det)
		}
		if len(d.Files) > 0 {
			a.printf("  affects files: %s\n", listed(d.Files, d.MoreFiles))
			a.printf("  in snapshots: %s\n", listed(d.Snapshots, d.MoreSnapshots))
		}
	}
	if rep.MissingBlobs > 0 {
		a.printf("%d referenced blobs are in no index\n", rep.MissingBlobs)
	}
	if n := len(rep.Unreferenced); n > 0 && rep.UnreadableIndexes > 0 {
		a.printf("%d packs are in no readable index: they may hold data that the unreadable index objects above list; run drpipe repair before prune, which would remove them\n", n)
	} else if n > 0 {
		a.printf("%d packs are in no index (left by interrupted backups, or lost packs repair took out of the index; harmless, removed by prune)\n", n)
	}
	if rep.OK() {
		a.printf("no errors found\n")
	}
}

// listed joins the names of a damage report's list, saying when the
// report left more out.
func listed(xs []string, more bool) string {
	s := strings.Join(xs, ", ")
	if more {
		s += fmt.Sprintf(" and more (only %d are listed)", len(xs))
	}
	return s
}

func (a *app) repairCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair --repo R",
		Short: "Rebuild missing or corrupt shards from parity and re-index orphaned packs",
		Long: "repair reads every pack, rewrites missing or corrupt shards from the surviving ones (full redundancy again),\n" +
			"indexes packs that no readable index lists and removes unreadable index objects. Packs with fewer than K\n" +
			"intact shards cannot be repaired here: repair removes their chunks that cannot be read from the index (so that\n" +
			"a new backup of the files stores them again, which also makes older snapshots whole), lists the files and\n" +
			"snapshots they affect and exits 1.",
		Example: "  drpipe repair --repo /srv/drpipe/repo",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			a.skipBadIndex = true // repair replaces them
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			o := repo.CheckOptions{}
			if a.progressEnabled() {
				o.Progress = func(done, total int) { fmt.Fprintf(a.stderr, "\r\033[Kread %d/%d packs", done, total) }
			}
			rep, err := r.Repair(ctx, o)
			if o.Progress != nil {
				fmt.Fprintln(a.stderr)
			}
			if rep == nil {
				return err
			}
			if a.jsonOut() {
				if jerr := a.printJSON(rep); jerr != nil {
					return jerr
				}
				return err
			}
			a.printf("rewrote %d shards of %d packs, re-indexed %d packs, replaced %d unreadable index objects\n",
				rep.ShardsRewritten, len(rep.PacksRepaired), rep.PacksReindexed, rep.IndexesReplaced)
			for _, x := range rep.Held {
				a.printf("pack %s: storage failed to read some of its shards (not missing or damaged): its blobs stay in the index; run drpipe repair again once the storage answers\n", x.Short())
			}
			if rep.BlobsDropped > 0 {
				a.printf("removed %d blobs that cannot be read from the index\n", rep.BlobsDropped)
			}
			for _, d := range rep.Lost {
				if intact := d.K + d.M - len(d.Missing) - len(d.Corrupt); intact < d.K {
					a.printf("LOST pack %s: only %d of %d shards intact (needs %d); affects: %s\n", d.Pack, intact, d.K+d.M, d.K, listed(d.Files, d.MoreFiles))
				} else {
					a.printf("LOST pack %s: cannot be rebuilt from its %d intact shards (%s); affects: %s\n", d.Pack, intact, strings.Join(d.Details, "; "), listed(d.Files, d.MoreFiles))
				}
			}
			for _, n := range rep.NotStored {
				a.printf("NOT STORED data/%s: rebuilt, but it still reads damaged once stored (the storage kept the damaged object)\n", n)
			}
			if errors.Is(err, repo.ErrUnrepairable) && len(rep.Lost) > 0 {
				a.printf("back up the affected files again (a new backup stores the chunks removed from the index anew, which makes the older snapshots that refer to them whole again too), or restore them from another tier (DR site, bucket, tape)\n")
			}
			return err
		},
	}
	return cmd
}

func (a *app) statsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "stats --repo R [--json]",
		Short:   "Show repository size, deduplication and redundancy",
		Example: "  drpipe stats --repo /srv/drpipe/repo --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			st, err := r.Stats(ctx)
			if st == nil {
				return err
			}
			if err != nil {
				// Snapshots that do not load: the sizes are still
				// shown, without them.
				err = fmt.Errorf("some snapshots could not be read and are not counted in snapshots and the logical size (run 'drpipe check'): %w", err)
			}
			if d := r.DamagedIndexes(); len(d) > 0 {
				// The figures are still shown, but they leave out the
				// packs and chunks only those objects list.
				err = errors.Join(err, fmt.Errorf("%d index objects are damaged and left out: the chunk and pack counts and sizes above leave out what only they list (run 'drpipe check', then 'drpipe repair', which replaces them)", len(d)))
			}
			if a.jsonOut() {
				if jerr := a.printJSON(st); jerr != nil {
					return jerr
				}
				return err
			}
			tw := a.table()
			fmt.Fprintf(tw, "snapshots\t%d\n", st.Snapshots)
			fmt.Fprintf(tw, "logical size (all snapshots)\t%s\n", humanBytes(st.LogicalBytes))
			fmt.Fprintf(tw, "unique chunks\t%d (%s plaintext)\n", st.Chunks, humanBytes(st.UniqueBytes))
			fmt.Fprintf(tw, "packs\t%d (%s, erasure coding %s)\n", st.Packs, humanBytes(st.PackBytes), st.EC)
			fmt.Fprintf(tw, "stored\t%s (data shards %s, parity %s, metadata %s)\n", humanBytes(st.StoredBytes), humanBytes(st.DataShardBytes), humanBytes(st.ParityBytes), humanBytes(st.MetadataBytes))
			if st.StoredBytes > 0 {
				fmt.Fprintf(tw, "reduction\t%.2f× (logical / stored)\n", float64(st.LogicalBytes)/float64(st.StoredBytes))
			}
			if ferr := tw.Flush(); ferr != nil {
				return ferr
			}
			return err
		},
	}
	return cmd
}

func (a *app) keyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Manage key slots (passwords and key files)"}
	var newPwFile string
	var label string
	add := &cobra.Command{
		Use:     "add --repo R --new-password-file F [--label L]",
		Short:   "Add a key slot that opens the repository with another password or a key file",
		Example: "  drpipe key add --repo /srv/drpipe/repo --new-password-file /root/dr-keyfile --label offsite-keyfile",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if newPwFile == "" {
				return usagef("key add needs --new-password-file FILE (a password or key file)")
			}
			np, err := readSecretFile(newPwFile)
			if err != nil {
				return err
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			kid, err := r.AddKey(ctx, np, label)
			if err != nil {
				return err
			}
			if a.jsonOut() {
				return a.printJSON(map[string]any{"id": kid, "label": label})
			}
			a.printf("added key slot %s (%s)\n", kid.Short(), label)
			return nil
		},
	}
	add.Flags().StringVar(&newPwFile, "new-password-file", "", "file with the new password or key file contents")
	add.Flags().StringVar(&label, "label", "password", "label for the slot")
	list := &cobra.Command{
		Use:   "list --repo R",
		Short: "List key slots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			keys, err := r.ListKeys(ctx)
			if err != nil {
				return err
			}
			if a.jsonOut() {
				return a.printJSON(keys)
			}
			tw := a.table()
			fmt.Fprintln(tw, " \tID\tLABEL\tCREATED\tHOST\tUSER")
			for _, k := range keys {
				cur := " "
				if k.Current {
					cur = "*"
				}
				label := k.Label
				if k.Damaged != "" {
					label = "DAMAGED: " + k.Damaged
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cur, k.ID.Short(), label, k.Created.Local().Format("2006-01-02 15:04"), k.Host, k.User)
			}
			return tw.Flush()
		},
	}
	remove := &cobra.Command{
		Use:   "remove --repo R KEYID",
		Short: "Remove a key slot (not the one in use)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			keys, err := r.ListKeys(ctx)
			if err != nil {
				return err
			}
			var match []repo.KeyInfo
			for _, k := range keys {
				if strings.HasPrefix(k.ID.String(), strings.ToLower(args[0])) {
					match = append(match, k)
				}
			}
			if len(match) != 1 {
				return usagef("key id %q matches %d slots", args[0], len(match))
			}
			if err := r.RemoveKey(ctx, match[0].ID); err != nil {
				return err
			}
			if a.jsonOut() {
				return a.printJSON(map[string]any{"removed": match[0].ID})
			}
			a.printf("removed key slot %s\n", match[0].ID.Short())
			// The slot lives on in every copy, and the master key does
			// not change: say so where it matters, on the terminal.
			fmt.Fprintf(a.stderr, "note: copies of this repository (DR site, buckets, other directories, tapes) still hold key slot %s, "+
				"so its password still opens them: run drpipe key remove there too (tapes keep it until they are overwritten). "+
				"The master key is unchanged: whoever kept a copy of the slot and knows its password can still decrypt\n", match[0].ID.Short())
			return nil
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}
