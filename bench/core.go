package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/drpipe/drpipe/internal/sample"
)

// coreSuite: the repository-core benchmark. A sparse VM image series (day 0;
// day 1 with files added inside the guest file system; day 2 with small
// in-place rewrites) and a file tree are backed up by drpipe, restic and
// borg from the same data in the same run; then each restores the latest
// image snapshot and the file tree.
var coreSuite = Suite{
	Name:  "core",
	Title: "Backup and restore vs restic and borg",
	About: "Sparse raw VM image with ext4 inside (series: day 0, day 1 with files added via debugfs, day 2 with small in-place rewrites) " +
		"and a file tree, backed up by each tool into its own repository on the same disk, page cache dropped before every step. " +
		"Defaults for every tool: drpipe (zstd auto, erasure coding 4+2), restic (repository v2, compression auto), borg (lz4). " +
		"Throughput = logical bytes / wall time. CPU = user + system time of the process (2 cores: at most twice the wall time). Stored = bytes of the repository directory after the step. " +
		"Every restore, of the image and of the tree, is compared file by file with its source. " +
		"With those defaults drpipe skips the image's holes in the backup and keeps them in the restore; restic and borg read them as zeros " +
		"and restore the image fully allocated (restic 0.14 has no sparse restore; borg extract --sparse is not the default).",
	Run: runCore,
}

// Sizes; DRPIPE_BENCH_SCALE=small shrinks them for a quick run.
type coreSizes struct {
	imageVirtual int64
	imageContent int64
	imageFiles   int
	day1Add      int64
	day2Rewrites int
	treeFiles    int
	treeBytes    int64
}

func sizes() coreSizes {
	if os.Getenv("DRPIPE_BENCH_SCALE") == "small" {
		return coreSizes{imageVirtual: 2 << 30, imageContent: 200 << 20, imageFiles: 400, day1Add: 40 << 20, day2Rewrites: 16, treeFiles: 2000, treeBytes: 100 << 20}
	}
	return coreSizes{imageVirtual: 8 << 30, imageContent: 1200 << 20, imageFiles: 2000, day1Add: 200 << 20, day2Rewrites: 64, treeFiles: 10000, treeBytes: 600 << 20}
}

// tool is one backup program under test.
type tool struct {
	name    string
	env     []string
	init    func(ctx context.Context) error
	backup  func(ctx context.Context, label, path string) (*Measurement, error)
	restore func(ctx context.Context, label, target string) (*Measurement, error)
	// verify reads back and checks everything the repository stores
	// (restic check --read-data, borg check --verify-data).
	verify func(ctx context.Context) (*Measurement, error)
	repo   string
}

func runCore(ctx context.Context, env *Env) ([]Table, error) {
	for _, c := range []string{"restic", "borg", "mkfs.ext4", "debugfs"} {
		if !Have(c) {
			return nil, fmt.Errorf("%s not installed: run make deps", c)
		}
	}
	sz := sizes()
	src := env.Path("src")
	imgDir := filepath.Join(src, "images")
	treeDir := env.Path("tree-src", "tree")
	for _, d := range []string{imgDir, treeDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	fmt.Fprintln(os.Stderr, "core: generating data")
	content := env.Path("guest")
	if _, err := sample.Tree(content, sample.TreeOptions{Files: sz.imageFiles, Bytes: sz.imageContent, BinaryFraction: 0.5, Seed: 1}); err != nil {
		return nil, err
	}
	img := filepath.Join(imgDir, "vm01.raw")
	if err := sample.Ext4Image(ctx, img, sz.imageVirtual, content); err != nil {
		return nil, err
	}
	os.RemoveAll(content)
	if _, err := sample.Tree(treeDir, sample.TreeOptions{Files: sz.treeFiles, Bytes: sz.treeBytes, BinaryFraction: 0.3, Seed: 2}); err != nil {
		return nil, err
	}

	tools := []*tool{drpipeTool(env), resticTool(env), borgTool(env)}
	for _, t := range tools {
		if err := t.init(ctx); err != nil {
			return nil, fmt.Errorf("%s init: %w", t.name, err)
		}
	}

	type stepResult struct {
		m      *Measurement
		stored int64
	}
	steps := []string{"image day 0", "image day 1 (+files)", "image day 2 (rewrites)", "file tree", "file tree again (unchanged)"}
	results := map[string]map[string]stepResult{}
	logical := map[string]int64{}
	imgSize := func() int64 { fi, _ := os.Stat(img); return fi.Size() }
	treeSize, _ := DirSize(treeDir)

	runStep := func(step, label, path string, logicalBytes int64) error {
		logical[step] = logicalBytes
		results[step] = map[string]stepResult{}
		for _, t := range tools {
			DropCaches()
			fmt.Fprintf(os.Stderr, "core: %s: %s\n", step, t.name)
			m, err := t.backup(ctx, label, path)
			if err != nil {
				return fmt.Errorf("%s backup %s: %w", t.name, step, err)
			}
			st, _ := DirSize(t.repo)
			results[step][t.name] = stepResult{m, st}
		}
		return nil
	}
	if err := runStep(steps[0], "day0", src, imgSize()); err != nil {
		return nil, err
	}
	if err := addFilesDebugfs(ctx, env, img, sz.day1Add); err != nil {
		return nil, err
	}
	if err := runStep(steps[1], "day1", src, imgSize()); err != nil {
		return nil, err
	}
	changed, err := rewriteAllocated(img, sz.day2Rewrites, 256<<10)
	if err != nil {
		return nil, err
	}
	if err := runStep(steps[2], "day2", src, imgSize()); err != nil {
		return nil, err
	}
	if err := runStep(steps[3], "tree1", env.Path("tree-src"), treeSize); err != nil {
		return nil, err
	}
	if err := runStep(steps[4], "tree2", env.Path("tree-src"), treeSize); err != nil {
		return nil, err
	}

	// Restores: the latest image snapshot and the file tree, each from a
	// cold page cache. Restores leave the repositories unchanged, so they
	// run restoreRounds times, tools interleaved round by round so a slow
	// spell of the machine hits every tool alike; the median run counts.
	type restoreResult struct{ img, tree *Measurement }
	runs := map[string]map[string][]*Measurement{}
	restoreSrc := map[string]string{"day2": src, "tree2": env.Path("tree-src")}
	for round := 0; round < restoreRounds; round++ {
		for _, t := range tools {
			if runs[t.name] == nil {
				runs[t.name] = map[string][]*Measurement{}
			}
			for _, which := range []string{"day2", "tree2"} {
				target := env.Path("restore-" + t.name + "-" + which)
				DropCaches()
				fmt.Fprintf(os.Stderr, "core: restore %s (round %d of %d): %s\n", which, round+1, restoreRounds, t.name)
				m, err := t.restore(ctx, which, target)
				if err != nil {
					return nil, fmt.Errorf("%s restore %s: %w", t.name, which, err)
				}
				if err := checkRestore(restoreSrc[which], target); err != nil {
					return nil, fmt.Errorf("%s restore %s: %w", t.name, which, err)
				}
				runs[t.name][which] = append(runs[t.name][which], m)
				os.RemoveAll(target)
			}
		}
	}
	restores := map[string]restoreResult{}
	for _, t := range tools {
		restores[t.name] = restoreResult{img: MedianWall(runs[t.name]["day2"]), tree: MedianWall(runs[t.name]["tree2"])}
	}

	// Verification of everything stored, once per tool from a cold page
	// cache, after all the steps; and drpipe's key-less scrub, which
	// checks every shard object as a DR site or bucket would.
	verifies := map[string]*Measurement{}
	for _, t := range tools {
		DropCaches()
		fmt.Fprintf(os.Stderr, "core: verify: %s\n", t.name)
		m, err := t.verify(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s verify: %w", t.name, err)
		}
		verifies[t.name] = m
	}
	DropCaches()
	fmt.Fprintln(os.Stderr, "core: verify: drpipe scrub")
	scrub, err := Run(ctx, nil, env.Drpipe, "scrub", "--repo", tools[0].repo)
	if err != nil {
		return nil, fmt.Errorf("drpipe scrub: %w", err)
	}

	// Tables.
	alloc, _ := sample.AllocatedBytes(img)
	bt := Table{
		Caption: fmt.Sprintf("Backup: image %s virtual (%s allocated), tree %d files %s; day 2 rewrote %s in place",
			human(imgSize()), human(alloc), sz.treeFiles, human(treeSize), human(changed)),
		Header: []string{"step", "tool", "wall s", "CPU s", "MiB/s", "stored MiB", "peak RSS MiB", "drpipe speed-up"},
	}
	var checks []string
	for _, step := range steps {
		faster := time.Duration(0)
		for _, t := range tools[1:] {
			w := results[step][t.name].m.Wall
			if faster == 0 || w < faster {
				faster = w
			}
		}
		for _, t := range tools {
			r := results[step][t.name]
			up := ""
			if t.name == "drpipe" {
				up = Ratio(faster.Seconds(), r.m.Wall.Seconds()) + " vs faster peer"
			}
			bt.Rows = append(bt.Rows, []string{step, t.name, Secs(r.m.Wall), Secs(r.m.UserCPU + r.m.SysCPU), Rate(logical[step], r.m.Wall), MiB(r.stored), MiB(r.m.MaxRSS), up})
		}
		d := results[step]["drpipe"]
		checks = append(checks, fmt.Sprintf("%s: %s faster than the faster peer (target ≥ 2×): %s", step, Ratio(faster.Seconds(), d.m.Wall.Seconds()), passFail(faster.Seconds() >= 2*d.m.Wall.Seconds())))
	}
	last := steps[len(steps)-1]
	minPeer := min(results[last]["restic"].stored, results[last]["borg"].stored)
	dStored := results[last]["drpipe"].stored
	parity, statsErr := drpipeParity(ctx, env, tools[0])
	if statsErr != nil {
		checks = append(checks, fmt.Sprintf("stored after all steps: drpipe %s MiB; smaller peer %s MiB: with parity %s, without parity unknown (%v)",
			MiB(dStored), MiB(minPeer), passFail(dStored <= minPeer), statsErr))
	} else {
		checks = append(checks, fmt.Sprintf("stored after all steps: drpipe %s MiB (of which %s MiB Reed-Solomon parity, 4+2), without parity %s MiB; smaller peer %s MiB: with parity %s, without parity %s",
			MiB(dStored), MiB(parity), MiB(dStored-parity), MiB(minPeer), passFail(dStored <= minPeer), passFail(dStored-parity <= minPeer)))
	}
	var maxRSS int64
	for _, step := range steps {
		maxRSS = max(maxRSS, results[step]["drpipe"].m.MaxRSS)
	}
	checks = append(checks, fmt.Sprintf("drpipe peak RSS %s MiB (bound 512 MiB): %s", MiB(maxRSS), passFail(maxRSS <= 512<<20)))

	rt := Table{Caption: fmt.Sprintf("Restore (latest image snapshot, then the file tree), median of %d runs", restoreRounds), Header: []string{"tool", "image wall s", "image CPU s", "image MiB/s", "tree wall s", "tree CPU s", "tree MiB/s", "peak RSS MiB", "drpipe speed-up vs restic"}}
	for _, t := range tools {
		r := restores[t.name]
		up := ""
		if t.name == "drpipe" {
			up = fmt.Sprintf("image %s, tree %s", Ratio(restores["restic"].img.Wall.Seconds(), r.img.Wall.Seconds()), Ratio(restores["restic"].tree.Wall.Seconds(), r.tree.Wall.Seconds()))
		}
		rt.Rows = append(rt.Rows, []string{t.name, Secs(r.img.Wall), Secs(r.img.UserCPU + r.img.SysCPU), Rate(imgSize(), r.img.Wall), Secs(r.tree.Wall), Secs(r.tree.UserCPU + r.tree.SysCPU), Rate(treeSize, r.tree.Wall), MiB(max(r.img.MaxRSS, r.tree.MaxRSS)), up})
	}
	for _, t := range tools {
		rt.Notes = append(rt.Notes, fmt.Sprintf("%s wall s of the %d runs: image %s; tree %s", t.name, restoreRounds, walls(runs[t.name]["day2"]), walls(runs[t.name]["tree2"])))
	}
	d, rs := restores["drpipe"], restores["restic"]
	checks = append(checks, fmt.Sprintf("restore image %s, tree %s faster than restic (target ≥ 2×): %s",
		Ratio(rs.img.Wall.Seconds(), d.img.Wall.Seconds()), Ratio(rs.tree.Wall.Seconds(), d.tree.Wall.Seconds()),
		passFail(rs.img.Wall.Seconds() >= 2*d.img.Wall.Seconds() && rs.tree.Wall.Seconds() >= 2*d.tree.Wall.Seconds())))
	vt := Table{Caption: "Verify: read back and check everything stored, after all steps (drpipe check --read-data, restic check --read-data, borg check --verify-data), once each from a cold page cache",
		Header: []string{"tool", "wall s", "CPU s", "stored MiB", "MiB/s of stored", "peak RSS MiB", "drpipe speed-up vs faster peer"}}
	fasterVerify := min(verifies["restic"].Wall, verifies["borg"].Wall)
	for _, t := range tools {
		m, st := verifies[t.name], results[last][t.name].stored
		up := ""
		if t.name == "drpipe" {
			up = Ratio(fasterVerify.Seconds(), m.Wall.Seconds())
		}
		vt.Rows = append(vt.Rows, []string{t.name, Secs(m.Wall), Secs(m.UserCPU + m.SysCPU), MiB(st), Rate(st, m.Wall), MiB(m.MaxRSS), up})
	}
	vt.Notes = append(vt.Notes, fmt.Sprintf("drpipe scrub (no key: every shard's header and checksums, parity included, and the other objects' hashes): %s s wall, %s CPU s, %s MiB/s of stored, peak RSS %s MiB",
		Secs(scrub.Wall), Secs(scrub.UserCPU+scrub.SysCPU), Rate(dStored, scrub.Wall), MiB(scrub.MaxRSS)))
	ct := Table{Caption: "Targets", Header: []string{"check"}}
	for _, c := range checks {
		ct.Rows = append(ct.Rows, []string{c})
	}
	return []Table{bt, rt, vt, ct}, statsErr
}

// drpipeParity returns the Reed-Solomon parity bytes d's repository holds,
// as drpipe stats --json reports them.
func drpipeParity(ctx context.Context, env *Env, d *tool) (int64, error) {
	m, err := Run(ctx, d.env, env.Drpipe, "stats", "--json", "--repo", d.repo, "--cache-dir", env.Path("drpipe-cache"))
	if err != nil {
		return 0, fmt.Errorf("drpipe stats, for the parity in the stored bytes: %w", err)
	}
	var st struct {
		Parity *int64 `json:"parity_bytes"`
	}
	if err := json.Unmarshal([]byte(m.Stdout), &st); err != nil || st.Parity == nil {
		return 0, fmt.Errorf("drpipe stats --json printed no parity_bytes (%v): %s", err, tail(m.Stdout, 2000))
	}
	return *st.Parity, nil
}

// checkRestore compares what a restore into target made of src (each tool
// restores it below target at its absolute path) with src.
func checkRestore(src, target string) error {
	return SameTree(src, filepath.Join(target, strings.TrimPrefix(src, "/")))
}

// restoreRounds is how many times each restore runs (the median counts).
const restoreRounds = 3

// walls lists the wall times of ms in run order.
func walls(ms []*Measurement) string {
	var s []string
	for _, m := range ms {
		s = append(s, Secs(m.Wall))
	}
	return strings.Join(s, " / ")
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "**FAIL**"
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

func drpipeTool(env *Env) *tool {
	t := &tool{name: "drpipe", repo: env.Path("repo-drpipe")}
	t.env = []string{"DRPIPE_PASSWORD=bench"}
	cache := env.Path("drpipe-cache")
	// snapshots maps each backup's label to the id it printed, so a
	// restore names its snapshot itself: restic and borg select theirs
	// (latest --tag, the archive name) within the restore they are timed
	// for, and a drpipe lookup run after the cache drop but before the
	// timed restore would read the binary, keys and index into the page
	// cache for it.
	snapshots := map[string]string{}
	t.init = func(ctx context.Context) error {
		_, err := Run(ctx, t.env, env.Drpipe, "init", "--repo", t.repo, "--cache-dir", cache)
		return err
	}
	t.backup = func(ctx context.Context, label, path string) (*Measurement, error) {
		m, err := Run(ctx, t.env, env.Drpipe, "backup", "--json", "--repo", t.repo, "--cache-dir", cache, "--host", "bench", "--tag", label, path)
		if err != nil {
			return m, err
		}
		var out struct {
			ID string `json:"snapshot_id"`
		}
		if err := json.Unmarshal([]byte(m.Stdout), &out); err != nil || out.ID == "" {
			return m, fmt.Errorf("drpipe backup --json printed no snapshot id (%v): %s", err, tail(m.Stdout, 2000))
		}
		snapshots[label] = out.ID
		return m, nil
	}
	t.restore = func(ctx context.Context, label, target string) (*Measurement, error) {
		id, ok := snapshots[label]
		if !ok {
			return nil, fmt.Errorf("no drpipe snapshot %s was backed up", label)
		}
		return Run(ctx, t.env, env.Drpipe, "restore", "--repo", t.repo, "--cache-dir", cache, id, "--target", target)
	}
	t.verify = func(ctx context.Context) (*Measurement, error) {
		return Run(ctx, t.env, env.Drpipe, "check", "--read-data", "--repo", t.repo, "--cache-dir", cache)
	}
	return t
}

func resticTool(env *Env) *tool {
	t := &tool{name: "restic", repo: env.Path("repo-restic")}
	t.env = []string{"RESTIC_PASSWORD=bench", "RESTIC_REPOSITORY=" + t.repo, "RESTIC_CACHE_DIR=" + env.Path("restic-cache")}
	t.init = func(ctx context.Context) error {
		_, err := Run(ctx, t.env, "restic", "init")
		return err
	}
	t.backup = func(ctx context.Context, label, path string) (*Measurement, error) {
		return Run(ctx, t.env, "restic", "backup", "-q", "--host", "bench", "--tag", label, path)
	}
	t.restore = func(ctx context.Context, label, target string) (*Measurement, error) {
		return Run(ctx, t.env, "restic", "restore", "-q", "latest", "--tag", label, "--target", target)
	}
	t.verify = func(ctx context.Context) (*Measurement, error) {
		return Run(ctx, t.env, "restic", "check", "-q", "--read-data")
	}
	return t
}

func borgTool(env *Env) *tool {
	t := &tool{name: "borg", repo: env.Path("repo-borg")}
	t.env = []string{"BORG_PASSPHRASE=bench", "BORG_BASE_DIR=" + env.Path("borg-base"), "BORG_RELOCATED_REPO_ACCESS_IS_OK=yes"}
	t.init = func(ctx context.Context) error {
		_, err := Run(ctx, t.env, "borg", "init", "-e", "repokey", t.repo)
		return err
	}
	t.backup = func(ctx context.Context, label, path string) (*Measurement, error) {
		return Run(ctx, t.env, "borg", "create", t.repo+"::"+label, path)
	}
	t.restore = func(ctx context.Context, label, target string) (*Measurement, error) {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return nil, err
		}
		return run(ctx, t.env, nil, target, "borg", "extract", t.repo+"::"+label)
	}
	t.verify = func(ctx context.Context) (*Measurement, error) {
		return Run(ctx, t.env, "borg", "check", "--verify-data", t.repo)
	}
	return t
}

// addFilesDebugfs writes about n bytes of new files into the ext4 file
// system inside img without mounting it (debugfs -w), like a guest adding
// files.
func addFilesDebugfs(ctx context.Context, env *Env, img string, n int64) error {
	dir := env.Path("day1-files")
	if _, err := sample.Tree(dir, sample.TreeOptions{Files: 50, Bytes: n, BinaryFraction: 0.5, Seed: 3}); err != nil {
		return err
	}
	var cmds strings.Builder
	cmds.WriteString("mkdir /day1\n")
	i := 0
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		fmt.Fprintf(&cmds, "write %s /day1/f%04d\n", p, i)
		i++
		return nil
	})
	if err != nil {
		return err
	}
	cf := env.Path("day1.debugfs")
	if err := os.WriteFile(cf, []byte(cmds.String()), 0o644); err != nil {
		return err
	}
	var stderr strings.Builder
	c := exec.CommandContext(ctx, "debugfs", "-w", "-f", cf, img)
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("debugfs: %w: %s", err, stderr.String())
	}
	// debugfs exits 0 when one of its commands fails (a full file system,
	// a name already taken) and says so on stderr, below its banner.
	var failed []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			failed = append(failed, l)
		}
	}
	if len(failed) > 0 {
		more := ""
		if len(failed) > 5 {
			more = fmt.Sprintf(" (and %d more)", len(failed)-5)
			failed = failed[:5]
		}
		return fmt.Errorf("debugfs could not add day 1's %s of files to %s: %s%s", human(n), img, strings.Join(failed, "; "), more)
	}
	return os.RemoveAll(dir)
}

// rewriteAllocated overwrites count blocks of size bytes at random
// positions inside the image's allocated ranges (in place).
func rewriteAllocated(img string, count, size int) (int64, error) {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, _ := f.Stat()
	rng := rand.New(rand.NewPCG(9, 9))
	var done int64
	for i := 0; i < count; i++ {
		for tries := 0; tries < 1000; tries++ {
			off := rng.Int64N(fi.Size()-int64(size)) &^ 4095
			data, err := dataAt(f, off)
			if err != nil || !data {
				continue
			}
			buf := sample.Binary(rng, size)
			if _, err := f.WriteAt(buf, off); err != nil {
				return done, err
			}
			done += int64(size)
			break
		}
	}
	return done, f.Sync()
}
