package main

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/sample"
)

// Crash safety of the writers other than backup (TestCrashSafetySIGKILL):
// copy into a directory, the DR site receiving a replicate, tier run into
// a local tier, prune and repair are killed with SIGKILL at random points.
// After every kill the repository they wrote checks clean, or with data in
// no index at worst, and the next run of the same command completes.

// crashRounds is the number of kills of each writer test: more with
// DRPIPE_LONG (make test-long).
func crashRounds() int {
	if !testing.Short() && os.Getenv("DRPIPE_LONG") != "" {
		return 40
	}
	return 8
}

// committedFiles counts the committed files under dir (none when it does
// not exist; temporary files start with a dot and are skipped).
func committedFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			n++
		}
		return nil
	})
	return n
}

// killTally counts the runs of a kill test that were killed mid-run and
// those that ran to the end, and keeps the delay estimate of a run (the
// time of the last one that ran to the end after a timed kill).
type killTally struct {
	killed, completed int
	est               time.Duration
}

// add counts one run; it reports whether the run ran to the end.
func (k *killTally) add(p killPoint, ran bool, took time.Duration) bool {
	if !ran {
		k.killed++
		return false
	}
	k.completed++
	if p.watch == "" {
		k.est = took
	}
	return true
}

// check requires most of the rounds to have been killed mid-run.
func (k *killTally) check(t *testing.T, rounds int, runs string) {
	t.Helper()
	t.Logf("%d rounds: %d %s killed mid-run, %d ran to the end", rounds, k.killed, runs, k.completed)
	if k.killed < rounds/2 {
		t.Errorf("only %d of %d %s were killed mid-run; the test must interrupt most of them", k.killed, rounds, runs)
	}
}

// killPoint is where a killed run is stopped: after a delay, or as soon
// as the directory watch holds more committed files than when the run
// started.
type killPoint struct {
	delay time.Duration
	watch string
}

func (k killPoint) String() string {
	if k.watch != "" {
		return "kill on the first new object in " + filepath.Base(k.watch)
	}
	return fmt.Sprintf("kill after %v", k.delay)
}

// drawKill picks the kill point of round i: every other round a random
// delay within 5–95% of est (the duration of a run that ended by itself),
// else the first new object in one of the directories, in turn, so that
// the windows between data, index and snapshots are exercised whatever
// the machine's speed.
func drawKill(rng *rand.Rand, i int, est time.Duration, watch ...string) killPoint {
	if i%2 == 0 || len(watch) == 0 {
		return killPoint{delay: est/20 + time.Duration(rng.Int64N(int64(est)*9/10+1))}
	}
	return killPoint{watch: watch[(i/2)%len(watch)]}
}

// fire returns the channel on which k fires.
func (k killPoint) fire(ctx context.Context) <-chan time.Time {
	if k.watch != "" {
		return whenFilesExceed(ctx, k.watch, committedFiles(k.watch))
	}
	return time.After(k.delay)
}

// killRun runs drpipe with args and sends it SIGKILL at k unless it ends
// first; it reports whether it ran to the end, and fails the test when it
// ended by itself with an error.
func (e *env) killRun(t *testing.T, k killPoint, args ...string) (completed bool, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := e.cmd(ctx, args...)
	var out strings.Builder
	c.Stdout, c.Stderr = &out, &out
	start := time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-k.fire(ctx):
		c.Process.Signal(syscall.SIGKILL)
		return <-done == nil, time.Since(start)
	case err := <-done:
		if err != nil {
			t.Fatalf("drpipe %s failed without a kill: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return true, time.Since(start)
	}
}

// checkAfterKill runs drpipe check on the repository in dir that a killed
// writer left, once it holds a config and key slots (a copy killed before
// them left none to open), and fails the test unless it passes: at worst
// data in no index may be left behind, never a snapshot whose data is
// missing.
func (e *env) checkAfterKill(t *testing.T, dir, what string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
		return
	}
	if committedFiles(filepath.Join(dir, "keys")) == 0 {
		return
	}
	if r := e.run("check", "--repo", dir); r.code != 0 {
		t.Fatalf("%s: check of %s failed: exit %d\n%s\n%s", what, dir, r.code, r.stdout, r.stderr)
	}
}

// dropSessions removes the session objects in the repository in dir:
// those of killed writers, which would otherwise hold a prune (or the
// prune of a tier run) back until they go stale, 15 minutes later, as
// the operator is told to when sure none runs.
func dropSessions(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "sessions"))
	if err != nil {
		return
	}
	for _, d := range ents {
		if err := os.Remove(filepath.Join(dir, "sessions", d.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotIDs lists the snapshot objects of the repository in dir.
func snapshotIDs(t *testing.T, dir string) []string {
	t.Helper()
	var ids []string
	for p := range repoObjects(t, dir) {
		if strings.HasPrefix(p, "snapshots/") {
			ids = append(ids, filepath.Base(p))
		}
	}
	slices.Sort(ids)
	return ids
}

// crashSource writes files of incompressible data under dir/src, enough
// for several packs of 1 MiB, and returns the directory and the files.
func crashSource(t *testing.T, e *env, mib int) (string, []string) {
	t.Helper()
	src := filepath.Join(e.dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	var files []string
	for i := range 4 {
		p := filepath.Join(src, fmt.Sprintf("disk%d.raw", i))
		if err := os.WriteFile(p, sample.Binary(newRandSource(uint64(100+i)), mib<<20/4), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	if _, err := sample.Tree(filepath.Join(src, "etc"), sample.TreeOptions{Files: 60, Bytes: 2 << 20, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	return src, files
}

// change rewrites 2 MiB at a random place of one of the files.
func change(t *testing.T, rng *rand.Rand, files []string, seed uint64) {
	t.Helper()
	f := files[rng.IntN(len(files))]
	fi, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := sample.Rewrite(f, rng.Int64N(fi.Size()-(2<<20)), 2<<20, seed); err != nil {
		t.Fatal(err)
	}
}

func TestCrashSafetySIGKILLCopy(t *testing.T) {
	rounds := crashRounds()
	e := newEnv(t)
	repoDir := e.initRepo("--pack-size", "1MiB")
	src, files := crashSource(t, e, 32)
	rng := newRandSource(7)
	for i := range 3 {
		change(t, rng, files, uint64(i))
		e.backup(repoDir, src)
	}
	dst := filepath.Join(e.dir, "copy")
	t0 := time.Now()
	e.ok("copy", "--repo", repoDir, "--to", filepath.Join(e.dir, "scratch"))
	est := time.Since(t0)
	os.RemoveAll(filepath.Join(e.dir, "scratch"))
	tally := killTally{est: est}
	for i := range rounds {
		k := drawKill(rng, i, tally.est, filepath.Join(dst, "data"), filepath.Join(dst, "index"), filepath.Join(dst, "snapshots"), filepath.Join(dst, "keys"))
		ran, took := e.killRun(t, k, "copy", "--repo", repoDir, "--to", dst)
		what := fmt.Sprintf("round %d (%s)", i, k)
		e.checkAfterKill(t, dst, what)
		for _, s := range snapshotIDs(t, dst) {
			if !slices.Contains(snapshotIDs(t, repoDir), s) {
				t.Fatalf("%s: the copy holds snapshot %s the source never had", what, s)
			}
		}
		dropSessions(t, dst)
		if tally.add(k, ran, took) {
			// Start again into an empty directory, with one more
			// snapshot at the source.
			os.RemoveAll(dst)
			change(t, rng, files, uint64(10+i))
			e.backup(repoDir, src)
		}
	}
	tally.check(t, rounds, "copies")
	e.ok("copy", "--repo", repoDir, "--to", dst)
	if got, want := snapshotIDs(t, dst), snapshotIDs(t, repoDir); !slices.Equal(got, want) {
		t.Errorf("after the last copy the destination holds snapshots %v, the source %v", got, want)
	}
	if out := e.ok("check", "--repo", dst, "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check of the copy:\n%s", out)
	}
}

func TestCrashSafetySIGKILLSite(t *testing.T) {
	rounds := crashRounds()
	e := newEnv(t)
	e.extra = append(e.extra, "DRPIPE_REPLICATE_IDLE_TIMEOUT=2s", "DRPIPE_REPLICATE_TIMEOUT=10s")
	repoDir := e.initRepo("--pack-size", "1MiB")
	src, files := crashSource(t, e, 32)
	rng := newRandSource(8)
	last := e.backup(repoDir, src).SnapshotID
	tlsDir := filepath.Join(e.dir, "tls")
	e.ok("site", "init", "--dir", tlsDir, "--primary", "hv01")
	bundle := filepath.Join(tlsDir, "clients", "hv01")
	drDir := filepath.Join(e.dir, "dr")
	// Reference: a replicate into a scratch site.
	scratch := e.startSite(t, tlsDir, filepath.Join(e.dir, "scratch"))
	t0 := time.Now()
	e.replicate(t, repoDir, scratch.addr, bundle)
	est := time.Since(t0)
	scratch.cmd.Process.Signal(syscall.SIGTERM)
	tally := killTally{est: est}
	for i := range rounds {
		sp := e.startSite(t, tlsDir, drDir)
		k := drawKill(rng, i, tally.est, filepath.Join(drDir, "data"), filepath.Join(drDir, "index"), filepath.Join(drDir, "snapshots"))
		what := fmt.Sprintf("round %d (%s)", i, k)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		c := e.cmd(ctx, "replicate", "--repo", repoDir, "--to", sp.addr, "--tls-dir", bundle)
		var out strings.Builder
		c.Stdout, c.Stderr = &out, &out
		start := time.Now()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		ran := false
		select {
		case <-k.fire(ctx):
			sp.cmd.Process.Signal(syscall.SIGKILL)
			sp.cmd.Wait()
			ran = <-done == nil
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: replicate failed without a kill: %v\n%s", what, err, out.String())
			}
			ran = true
			sp.cmd.Process.Signal(syscall.SIGKILL)
			sp.cmd.Wait()
		}
		took := time.Since(start)
		cancel()
		e.checkAfterKill(t, drDir, what)
		for _, s := range snapshotIDs(t, drDir) {
			if !slices.Contains(snapshotIDs(t, repoDir), s) {
				t.Fatalf("%s: the site holds snapshot %s the primary never had", what, s)
			}
		}
		if _, err := os.Stat(filepath.Join(drDir, "config")); err == nil {
			st := e.siteStatus(t, "--repo", drDir)
			if n := len(snapshotIDs(t, drDir)); st.Snapshots != n {
				t.Fatalf("%s: site status counts %d snapshots, the site directory holds %d", what, st.Snapshots, n)
			}
		}
		if tally.add(k, ran, took) {
			change(t, rng, files, uint64(10+i))
			last = e.backup(repoDir, src).SnapshotID
		}
	}
	tally.check(t, rounds, "sites serving a replicate")
	sp := e.startSite(t, tlsDir, drDir)
	e.replicate(t, repoDir, sp.addr, bundle)
	if got, want := snapshotIDs(t, drDir), snapshotIDs(t, repoDir); !slices.Equal(got, want) {
		t.Errorf("after the last replicate the site holds snapshots %v, the primary %v", got, want)
	}
	if out := e.ok("check", "--repo", drDir, "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check of the site:\n%s", out)
	}
	st := e.siteStatus(t, "--repo", drDir)
	if st.Snapshots != len(snapshotIDs(t, repoDir)) {
		t.Errorf("site status counts %d snapshots, the primary holds %d", st.Snapshots, len(snapshotIDs(t, repoDir)))
	}
	if len(st.Hosts) != 1 || st.Hosts[0].Latest != last {
		t.Errorf("site status names %+v as the newest snapshots, want hv01's %s", st.Hosts, last)
	}
}

func TestCrashSafetySIGKILLTierRun(t *testing.T) {
	rounds := crashRounds()
	e := newEnv(t)
	repoDir := e.initRepo("--pack-size", "1MiB")
	src, files := crashSource(t, e, 16)
	rng := newRandSource(9)
	nas := filepath.Join(e.dir, "nas")
	if err := os.MkdirAll(nas, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  prune_grace: 0s
  tiers:
    - name: hot
      kind: primary
      keep: {last: 2}
    - name: nas
      kind: local
      location: %s
      keep: {last: 3}
`, repoDir, nas))
	e.backup(repoDir, src)
	t0 := time.Now()
	e.ok("--config", cfg, "tier", "run")
	est := time.Since(t0)
	tally := killTally{est: est}
	for i := range rounds {
		// New data, and a snapshot more for the tier to copy and
		// both to forget and prune.
		change(t, rng, files, uint64(i))
		e.backup(repoDir, src)
		k := drawKill(rng, i, tally.est, filepath.Join(nas, "data"), filepath.Join(nas, "snapshots"), filepath.Join(nas, "tombstones"), filepath.Join(repoDir, "tombstones"))
		what := fmt.Sprintf("round %d (%s)", i, k)
		ran, took := e.killRun(t, k, "--config", cfg, "tier", "run")
		e.checkAfterKill(t, repoDir, what+", primary")
		e.checkAfterKill(t, nas, what+", tier nas")
		dropSessions(t, repoDir)
		dropSessions(t, nas)
		tally.add(k, ran, took)
	}
	tally.check(t, rounds, "tier runs")
	e.ok("--config", cfg, "tier", "run")
	if out := e.ok("--config", cfg, "tier", "plan"); strings.Contains(out, "copy ") || strings.Contains(out, "forget ") {
		t.Errorf("tier plan after the last run still has work:\n%s", out)
	}
	if n := len(snapshotIDs(t, repoDir)); n != 2 {
		t.Errorf("the primary holds %d snapshots, want 2", n)
	}
	if n := len(snapshotIDs(t, nas)); n != 3 {
		t.Errorf("tier nas holds %d snapshots, want 3", n)
	}
	for _, dir := range []string{repoDir, nas} {
		if out := e.ok("check", "--repo", dir, "--read-data"); !strings.Contains(out, "no errors found") {
			t.Errorf("check of %s:\n%s", dir, out)
		}
	}
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", nas, "latest", "--target", target)
	compareTrees(t, src, restored(target, src))
}

func TestCrashSafetySIGKILLPrune(t *testing.T) {
	rounds := crashRounds()
	e := newEnv(t)
	repoDir := e.initRepo("--pack-size", "1MiB")
	src, files := crashSource(t, e, 16)
	rng := newRandSource(10)
	e.backup(repoDir, src)
	t0 := time.Now()
	e.ok("prune", "--repo", repoDir, "--grace", "0s")
	est := time.Since(t0)
	tally := killTally{est: est}
	for i := range rounds {
		// Rewritten data leaves packs unused or partly used (repacked)
		// once the older snapshots are forgotten.
		for j := range 2 {
			change(t, rng, files, uint64(10*i+j))
			e.backup(repoDir, src)
		}
		e.ok("forget", "--repo", repoDir, "--keep-last", "1")
		k := drawKill(rng, i, tally.est, filepath.Join(repoDir, "tombstones"), filepath.Join(repoDir, "index"), filepath.Join(repoDir, "data"))
		what := fmt.Sprintf("round %d (%s)", i, k)
		ran, took := e.killRun(t, k, "prune", "--repo", repoDir, "--grace", "0s")
		e.checkAfterKill(t, repoDir, what)
		dropSessions(t, repoDir)
		tally.add(k, ran, took)
	}
	tally.check(t, rounds, "prunes")
	e.ok("prune", "--repo", repoDir, "--grace", "0s")
	out := e.ok("check", "--repo", repoDir, "--read-data")
	if !strings.Contains(out, "no errors found") || strings.Contains(out, "in no index") {
		t.Errorf("check after the last prune:\n%s", out)
	}
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", repoDir, "latest", "--target", target)
	compareTrees(t, src, restored(target, src))
}

func TestCrashSafetySIGKILLRepair(t *testing.T) {
	rounds := crashRounds()
	e := newEnv(t)
	repoDir := e.initRepo("--pack-size", "1MiB")
	src, files := crashSource(t, e, 16)
	rng := newRandSource(11)
	e.backup(repoDir, src)
	est := time.Duration(0)
	tally := killTally{est: est}
	for i := range rounds {
		change(t, rng, files, uint64(i))
		e.backup(repoDir, src)
		// Repairable damage: one shard gone from a few packs, one
		// shard of another damaged, an index object gone (its packs
		// are re-indexed from storage).
		packs := shardFiles(t, repoDir)
		names := make([]string, 0, len(packs))
		for p := range packs {
			names = append(names, p)
		}
		slices.Sort(names)
		rng.Shuffle(len(names), func(a, b int) { names[a], names[b] = names[b], names[a] })
		for _, p := range names[:3] {
			sh := packs[p]
			if err := os.Remove(sh[rng.IntN(len(sh))]); err != nil {
				t.Fatal(err)
			}
		}
		sh := packs[names[3]]
		flipByte(t, sh[rng.IntN(len(sh))], 100)
		var idx []string
		for p := range repoObjects(t, repoDir) {
			if strings.HasPrefix(p, "index/") {
				idx = append(idx, p)
			}
		}
		slices.Sort(idx)
		if err := os.Remove(filepath.Join(repoDir, idx[rng.IntN(len(idx))])); err != nil {
			t.Fatal(err)
		}
		if est == 0 {
			// Reference: a repair of the same damage in a copy (its
			// own cache: the copy has the same repository id).
			refDir := filepath.Join(e.dir, "ref")
			copyDir(t, repoDir, refDir)
			ref := *e
			ref.cache = filepath.Join(e.dir, "cache-ref")
			t0 := time.Now()
			ref.ok("repair", "--repo", refDir)
			est = time.Since(t0)
			os.RemoveAll(refDir)
		}
		k := drawKill(rng, i, tally.est, filepath.Join(repoDir, "index"), filepath.Join(repoDir, "data"))
		what := fmt.Sprintf("round %d (%s)", i, k)
		ran, took := e.killRun(t, k, "repair", "--repo", repoDir)
		dropSessions(t, repoDir)
		// The next repair completes and leaves the repository whole.
		if r := e.run("repair", "--repo", repoDir); r.code != 0 {
			t.Fatalf("%s: the repair after the kill failed: exit %d\n%s\n%s", what, r.code, r.stdout, r.stderr)
		}
		if r := e.run("check", "--repo", repoDir, "--read-data"); r.code != 0 || !strings.Contains(r.stdout, "no errors found") {
			t.Fatalf("%s: check after the next repair: exit %d\n%s\n%s", what, r.code, r.stdout, r.stderr)
		}
		tally.add(k, ran, took)
	}
	tally.check(t, rounds, "repairs")
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", repoDir, "latest", "--target", target)
	compareTrees(t, src, restored(target, src))
}
