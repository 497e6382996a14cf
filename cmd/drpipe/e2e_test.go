package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/sample"
)

// These tests drive the real drpipe binary the way an operator does.

var drpipeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "drpipe-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	drpipeBin = filepath.Join(dir, "drpipe")
	// The same build tags as `make build` (Go's own user and DNS lookups).
	out, err := exec.Command("go", "build", "-tags", "osusergo,netgo", "-o", drpipeBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build drpipe: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's world: a password, a cache dir and the binary.
type env struct {
	t     *testing.T
	dir   string
	cache string
	pw    string
	extra []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	d := t.TempDir()
	return &env{t: t, dir: d, cache: filepath.Join(d, "cache"), pw: "correct horse battery staple"}
}

type result struct {
	stdout, stderr string
	code           int
}

func (e *env) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, drpipeBin, append([]string{"--cache-dir", e.cache}, args...)...)
	c.Env = append(os.Environ(), "DRPIPE_PASSWORD="+e.pw)
	c.Env = append(c.Env, e.extra...)
	return c
}

func (e *env) run(args ...string) result {
	return e.runIn(nil, args...)
}

func (e *env) runIn(stdin []byte, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run drpipe %v: %v", args, err)
	}
	return result{so.String(), se.String(), code}
}

func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("drpipe %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

type backupJSON struct {
	SnapshotID string  `json:"snapshot_id"`
	BytesRead  int64   `json:"bytes_read"`
	BytesNew   int64   `json:"bytes_new"`
	BlobsNew   int64   `json:"blobs_new"`
	BytesTotal int64   `json:"bytes_total"`
	Duration   float64 `json:"duration_s"`
}

func (e *env) backup(repoDir string, args ...string) backupJSON {
	e.t.Helper()
	out := e.ok(append([]string{"backup", "--json", "--repo", repoDir, "--host", "hv01"}, args...)...)
	var b backupJSON
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		e.t.Fatalf("backup --json printed %q: %v", out, err)
	}
	if b.SnapshotID == "" {
		e.t.Fatalf("backup --json has no snapshot_id: %s", out)
	}
	return b
}

func (e *env) initRepo(args ...string) string {
	e.t.Helper()
	r := filepath.Join(e.dir, "repo")
	e.ok(append([]string{"init", "--repo", r}, args...)...)
	return r
}

// compareTrees asserts that every item under src exists under dst with the
// same type, mode, mtime, symlink target and content.
func compareTrees(t *testing.T, src, dst string) (files int) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		a, err := os.Lstat(p)
		if err != nil {
			return err
		}
		b, err := os.Lstat(q)
		if err != nil {
			return fmt.Errorf("missing in restore: %s", rel)
		}
		if a.Mode() != b.Mode() {
			return fmt.Errorf("%s: mode %v, restored %v", rel, a.Mode(), b.Mode())
		}
		if !a.IsDir() && !a.ModTime().Equal(b.ModTime()) {
			return fmt.Errorf("%s: mtime %v, restored %v", rel, a.ModTime(), b.ModTime())
		}
		switch {
		case a.Mode()&fs.ModeSymlink != 0:
			ta, _ := os.Readlink(p)
			tb, _ := os.Readlink(q)
			if ta != tb {
				return fmt.Errorf("%s: symlink %q, restored %q", rel, ta, tb)
			}
		case a.Mode().IsRegular():
			same, err := sample.SameContent(p, q)
			if err != nil {
				return err
			}
			if !same {
				return fmt.Errorf("%s: content differs", rel)
			}
			files++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func restored(target, src string) string { return filepath.Join(target, strings.TrimPrefix(src, "/")) }

func requireMkfs(t *testing.T) {
	t.Helper()
	if !sample.HaveMkfs() {
		t.Fatal("mkfs.ext4 missing: run 'make deps' (installs e2fsprogs)")
	}
}

// makeImage builds a sparse raw image of size with an ext4 file system
// holding about contentBytes of generated files.
func makeImage(t *testing.T, dir string, size, contentBytes int64, seed uint64) string {
	t.Helper()
	requireMkfs(t)
	content := filepath.Join(dir, fmt.Sprintf("content-%d", seed))
	if _, err := sample.Tree(content, sample.TreeOptions{Files: 200, Bytes: contentBytes, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, fmt.Sprintf("vm%d.raw", seed))
	if err := sample.Ext4Image(context.Background(), img, size, content); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(content)
	return img
}

func TestRoundTripImageTreeAndStdin(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	imgDir := filepath.Join(src, "images")
	treeDir := filepath.Join(src, "tree")
	os.MkdirAll(imgDir, 0o755)
	img := makeImage(t, imgDir, 3<<30, 160<<20, 1)
	if _, err := sample.Tree(treeDir, sample.TreeOptions{Files: 3000, Bytes: 40 << 20, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	b := e.backup(repoDir, src)
	st, _ := os.Stat(img)
	alloc, _ := sample.AllocatedBytes(img)
	t.Logf("image: %d bytes virtual, %d allocated; backup read %d bytes, total %d, stored %d, %.2fs", st.Size(), alloc, b.BytesRead, b.BytesTotal, b.BytesNew, b.Duration)
	if b.BytesRead > alloc+(64<<20) {
		t.Errorf("backup read %d bytes, more than the %d allocated (+64 MiB of tree): holes were read", b.BytesRead, alloc)
	}
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", repoDir, b.SnapshotID[:10], "--target", target)
	n := compareTrees(t, src, restored(target, src))
	if n < 3000 {
		t.Errorf("compared %d files, want >= 3000", n)
	}
	ralloc, _ := sample.AllocatedBytes(filepath.Join(restored(target, src), "images", filepath.Base(img)))
	t.Logf("restored image allocates %d bytes (source %d)", ralloc, alloc)
	if ralloc > alloc+alloc/20 {
		t.Errorf("restored image allocates %d bytes, source %d: not sparse", ralloc, alloc)
	}

	// --delta over that restore, after 1 MiB of the image was rewritten
	// and a file of the tree removed: only those are written again, every
	// other file (the image too) is kept in place, and the image stays
	// sparse.
	rimg := filepath.Join(restored(target, src), "images", filepath.Base(img))
	f, err := os.OpenFile(rimg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Over data of the image (a MiB that is not all zeros in the source),
	// and into a hole.
	sf, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	dataAt, blk := int64(-1), make([]byte, 1<<20)
	for off := int64(16 << 20); off < st.Size() && dataAt < 0; off += 1 << 20 {
		if d, err := unix.Seek(int(sf.Fd()), off, unix.SEEK_DATA); err != nil {
			break
		} else if off = d &^ (1<<20 - 1); true {
			if n, _ := sf.ReadAt(blk, off); n == len(blk) && !bytes.Equal(blk, make([]byte, len(blk))) {
				dataAt = off
			}
		}
	}
	sf.Close()
	if dataAt < 0 {
		t.Fatal("no MiB of data in the image past 16 MiB")
	}
	f.WriteAt(sample.Binary(newRand(77), 1<<20), dataAt)
	f.WriteAt(sample.Binary(newRand(78), 64<<10), st.Size()-(1<<20))
	f.Close()
	matches, _ := filepath.Glob(filepath.Join(restored(target, treeDir), "dir001", "file*.log"))
	if len(matches) == 0 {
		t.Fatal("no file in dir001 of the restored tree")
	}
	os.Remove(matches[0])
	var d struct {
		BytesWritten int64 `json:"bytes_written"`
		BytesKept    int64 `json:"bytes_kept"`
		FilesKept    int64 `json:"files_kept"`
	}
	if err := json.Unmarshal([]byte(e.ok("restore", "--json", "--delta", "--repo", repoDir, b.SnapshotID[:10], "--target", target)), &d); err != nil {
		t.Fatal(err)
	}
	t.Logf("delta restore: %d bytes written, %d kept in %d files", d.BytesWritten, d.BytesKept, d.FilesKept)
	compareTrees(t, src, restored(target, src))
	if d.BytesWritten == 0 || d.BytesWritten > 16<<20 || d.FilesKept < 3000 || d.BytesKept < st.Size()/2 {
		t.Errorf("delta restore wrote %d bytes and kept %d bytes in %d files; want the chunks under the rewritten MiB (some data, the rest punched back to holes) and one file written, the rest (3000 files) kept", d.BytesWritten, d.BytesKept, d.FilesKept)
	}
	if a, _ := sample.AllocatedBytes(rimg); a > alloc+alloc/20 {
		t.Errorf("image allocates %d bytes after the delta restore, source %d: not sparse", a, alloc)
	}

	// --path restores just one item.
	one := filepath.Join(e.dir, "one")
	e.ok("restore", "--repo", repoDir, "latest", "--target", one, "--path", filepath.Join(treeDir, "dir001"))
	compareTrees(t, filepath.Join(treeDir, "dir001"), restored(one, filepath.Join(treeDir, "dir001")))
	if _, err := os.Stat(restored(one, imgDir)); err == nil {
		t.Errorf("--path restored %s too", imgDir)
	}

	// A stdin stream.
	var stream bytes.Buffer
	for i := 0; i < 20; i++ {
		stream.Write(sample.Text(newRand(uint64(i)), 1<<20))
		stream.Write(make([]byte, 3<<20)) // zero runs inside a stream
	}
	r := e.runIn(stream.Bytes(), "backup", "--json", "--repo", repoDir, "--host", "db01", "--stdin", "--stdin-name", "db.dump")
	if r.code != 0 {
		t.Fatalf("stdin backup: exit %d: %s", r.code, r.stderr)
	}
	st2 := filepath.Join(e.dir, "stdin-restore")
	e.ok("restore", "--repo", repoDir, "latest", "--host", "db01", "--target", st2)
	got, err := os.ReadFile(filepath.Join(st2, "db.dump"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, stream.Bytes()) {
		t.Errorf("stdin stream restored with %d bytes, want %d identical bytes", len(got), stream.Len())
	}

	// snapshots --json has the documented fields.
	var snaps []map[string]any
	if err := json.Unmarshal([]byte(e.ok("snapshots", "--repo", repoDir, "--json")), &snaps); err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2 {
		t.Fatalf("snapshots --json lists %d snapshots, want 2", len(snaps))
	}
	for _, k := range []string{"id", "time", "host", "tags", "paths"} {
		if _, ok := snaps[0][k]; !ok {
			t.Errorf("snapshots --json lacks %q: %v", k, snaps[0])
		}
	}
	if _, err := time.Parse(time.RFC3339, snaps[0]["time"].(string)); err != nil {
		t.Errorf("time %v is not RFC 3339", snaps[0]["time"])
	}
	var stats map[string]any
	if err := json.Unmarshal([]byte(e.ok("stats", "--repo", repoDir, "--json")), &stats); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"stored_bytes", "logical_bytes", "chunks", "packs"} {
		if v, ok := stats[k].(float64); !ok || v <= 0 {
			t.Errorf("stats --json %q = %v, want > 0", k, stats[k])
		}
	}
	e.ok("check", "--repo", repoDir, "--read-data")
}

func TestDedupe(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	img := makeImage(t, src, 2<<30, 120<<20, 3)
	if _, err := sample.Tree(filepath.Join(src, "etc"), sample.TreeOptions{Files: 500, Bytes: 10 << 20, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	b0 := e.backup(repoDir, src)
	// Unchanged data: touch the image so it is read again, not skipped.
	now := time.Now()
	os.Chtimes(img, now, now)
	b1 := e.backup(repoDir, src)
	pct := 100 * float64(b1.BytesNew) / float64(b0.BytesNew)
	t.Logf("first backup stored %d bytes; unchanged second backup read %d and stored %d (%.3f%% of the first)", b0.BytesNew, b1.BytesRead, b1.BytesNew, pct)
	if b1.BytesRead < 100<<20 {
		t.Errorf("second backup read only %d bytes: the image was not re-read, so this does not test dedupe", b1.BytesRead)
	}
	if pct >= 1 {
		t.Errorf("unchanged backup stored %.3f%% new bytes, want < 1%%", pct)
	}
	// Rewrite 6 MiB in place, in three places.
	const change = 6 << 20
	for i, off := range []int64{300 << 20, 700 << 20, 1500 << 20} {
		if err := sample.Rewrite(img, off, change/3, uint64(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	b2 := e.backup(repoDir, src)
	ratio := float64(b2.BytesNew) / change
	cfgEC := 1.5 // default 4+2 stores 1.5 bytes per packed byte
	t.Logf("rewrote %d bytes in place: backup stored %d bytes, %.2f× the change (%.2f× before erasure-coding overhead)", change, b2.BytesNew, ratio, ratio/cfgEC)
	if ratio > 4*cfgEC || b2.BytesNew < change {
		t.Errorf("stored %d new bytes for a %d-byte change (ratio %.2f), want proportional (1..%.0f×)", b2.BytesNew, change, ratio, 4*cfgEC)
	}
}

func newRand(seed uint64) *randSource { return newRandSource(seed) }

// shardFiles lists the shard files of the repository grouped by pack.
func shardFiles(t *testing.T, repoDir string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir(filepath.Join(repoDir, "data"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		pack, _, ok := strings.Cut(d.Name(), "-")
		if !ok {
			return fmt.Errorf("odd shard name %s", d.Name())
		}
		out[pack] = append(out[pack], p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k := range out {
		sortByShard(out[k])
	}
	return out
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	if err := corruptAt(path, off); err != nil {
		t.Fatal(err)
	}
}

func TestErasureCodingDamageAndRepair(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "4+2", "--pack-size", "4MiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	makeImage(t, src, 1<<30, 60<<20, 5)
	if _, err := sample.Tree(filepath.Join(src, "etc"), sample.TreeOptions{Files: 300, Bytes: 8 << 20, Seed: 6}); err != nil {
		t.Fatal(err)
	}
	b := e.backup(repoDir, src)
	packs := shardFiles(t, repoDir)
	if len(packs) < 3 {
		t.Fatalf("only %d packs; the test needs several", len(packs))
	}
	// Up to m = 2 damaged shards in every pack: delete one, corrupt another
	// (which one varies per pack).
	i := 0
	wantDamage := map[string]string{}
	for pack, shards := range packs {
		if len(shards) != 6 {
			t.Fatalf("pack has %d shards, want 6", len(shards))
		}
		del, bad := i%6, (i+3)%6
		wantDamage[pack] = fmt.Sprintf("damaged pack %s (4+2): missing shards [%d], corrupt shards [%d]: repairable", pack, del, bad)
		os.Remove(shards[del])
		// Alternate between the payload (the middle of the shard) and the
		// header's hash table (offset 200 of a 216-byte 4+2 header).
		off := int64(200)
		if i%2 == 0 {
			fi, err := os.Stat(shards[bad])
			if err != nil {
				t.Fatal(err)
			}
			off = fi.Size() / 2
		}
		flipByte(t, shards[bad], off)
		i++
	}
	target := filepath.Join(e.dir, "r1")
	e.ok("restore", "--repo", repoDir, b.SnapshotID, "--target", target)
	compareTrees(t, src, restored(target, src))

	r := e.run("check", "--repo", repoDir, "--read-data")
	if r.code == 0 {
		t.Fatalf("check --read-data passed on a damaged repository:\n%s", r.stdout)
	}
	for pack, want := range wantDamage {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check output does not name the damage of pack %s: want the line %q", pack[:8], want)
		}
	}
	if !strings.Contains(r.stdout, "repairable") || !strings.Contains(r.stdout, "affects files") {
		t.Errorf("check output lacks repairable/affected files:\n%s", r.stdout)
	}

	// repair brings back full redundancy.
	e.ok("repair", "--repo", repoDir)
	e.ok("check", "--repo", repoDir, "--read-data")
	for pack, shards := range shardFiles(t, repoDir) {
		if len(shards) != 6 {
			t.Errorf("after repair pack %s has %d shards, want 6", pack[:8], len(shards))
		}
	}

	// m+1 = 3 lost shards of one pack: restore and check fail, naming the
	// pack and the files.
	// The pack with the largest shards holds file data (tree packs are
	// small), so the damage shows up as failed files, not an unreadable tree.
	victim := largestPack(t, packs)
	for _, s := range shardFiles(t, repoDir)[victim][:3] {
		os.Remove(s)
	}
	r = e.run("check", "--repo", repoDir)
	if r.code == 0 || !strings.Contains(r.stdout, victim) || !strings.Contains(r.stdout, "LOST") || !strings.Contains(r.stdout, "affects files") {
		t.Errorf("check with 3 of 6 shards gone: exit %d, want non-zero naming pack %s as LOST with files:\n%s", r.code, victim[:8], r.stdout)
	}
	// Without --read-data check names every file with data in the pack;
	// with it, only the files whose blobs do not read (checked below).
	plainNamed := affectedFiles(r.stdout, victim)
	r = e.run("check", "--repo", repoDir, "--read-data")
	if r.code == 0 || !strings.Contains(r.stdout, victim) || !strings.Contains(r.stdout, "LOST") {
		t.Errorf("check --read-data with 3 of 6 shards gone: exit %d, want non-zero naming pack %s as LOST:\n%s", r.code, victim[:8], r.stdout)
	}
	checkOut := r.stdout
	target2 := filepath.Join(e.dir, "r2")
	r = e.run("restore", "--repo", repoDir, "latest", "--target", target2)
	if r.code == 0 {
		t.Fatalf("restore with a lost pack exited 0")
	}
	if !strings.Contains(r.stderr, victim[:8]) || !strings.Contains(r.stderr, "FAILED") {
		t.Errorf("restore error does not name the pack %s and the failed files:\n%s", victim[:8], r.stderr)
	}
	// The files the lost pack really affects are those the restore could
	// not bring back intact. check must name exactly these (as paths in
	// the snapshot) and restore must report each as FAILED, and no other.
	lostFiles := damagedFiles(t, src, restored(target2, src))
	if len(lostFiles) == 0 {
		t.Fatalf("every file restored intact although pack %s lost 3 of 6 shards", victim[:8])
	}
	var wantPaths []string
	for _, rel := range lostFiles {
		wantPaths = append(wantPaths, filepath.Join(src, rel))
	}
	if got := affectedFiles(checkOut, victim); !slices.Equal(got, wantPaths) {
		unnamed, wrong := setDiff(wantPaths, got), setDiff(got, wantPaths)
		t.Errorf("check names %d files as affected by lost pack %s, the restore could not bring back %d: not named %q, named but intact %q",
			len(got), victim[:8], len(wantPaths), firstN(unnamed, 5), firstN(wrong, 5))
	}
	if missed := setDiff(wantPaths, plainNamed); len(missed) > 0 {
		t.Errorf("check without --read-data does not name %q, which the restore lost", firstN(missed, 5))
	}
	if !strings.Contains(checkOut, "in snapshots: "+b.SnapshotID[:8]) {
		t.Errorf("check does not name snapshot %s as affected:\n%s", b.SnapshotID[:8], checkOut)
	}
	failed := failedPaths(r.stderr)
	var wantFailed []string
	for _, rel := range lostFiles {
		wantFailed = append(wantFailed, filepath.Join(restored(target2, src), rel))
	}
	if !slices.Equal(failed, wantFailed) {
		t.Errorf("restore reports %d files FAILED, %d are not restored intact: not reported %q, reported but intact %q",
			len(failed), len(wantFailed), firstN(setDiff(wantFailed, failed), 5), firstN(setDiff(failed, wantFailed), 5))
	}
	r = e.run("repair", "--repo", repoDir)
	if r.code == 0 || !strings.Contains(r.stdout, "LOST pack "+victim) {
		t.Errorf("repair with a lost pack: exit %d, want non-zero naming it:\n%s", r.code, r.stdout)
	}
}

func TestCrashSafetySIGKILL(t *testing.T) {
	iterations := 16
	if !testing.Short() && os.Getenv("DRPIPE_LONG") != "" {
		iterations = 60
	}
	e := newEnv(t)
	repoDir := e.initRepo("--pack-size", "2MiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	makeImage(t, src, 1<<30, 80<<20, 8)
	if _, err := sample.Tree(filepath.Join(src, "etc"), sample.TreeOptions{Files: 400, Bytes: 10 << 20, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(src, "vm8.raw")
	// Reference: what a complete backup of this data stores and how long
	// it takes, in a scratch repository.
	scratch := filepath.Join(e.dir, "scratch-repo")
	e.ok("init", "--repo", scratch)
	ref := e.backup(scratch, src)
	os.RemoveAll(scratch)
	if ref.BytesNew == 0 || ref.Duration <= 0 {
		t.Fatalf("reference backup: %+v", ref)
	}
	// A first complete backup: what every later round can dedupe against.
	t0 := time.Now()
	e.backup(repoDir, src)
	rng := newRandSource(42)
	// est is the wall time (process start to exit) of the most recent
	// backup that ran to the end; kills are drawn from 5–95% of it so that
	// they land inside a run: while unlocking the key, scanning, writing
	// packs, writing the index or the snapshot.
	est := time.Since(t0)
	killed, completed, killedWithData, sinceComplete, lastUnindexed := 0, 0, 0, 0, 0
	for i := 0; i < iterations; i++ {
		// Change 6 MiB at a new place each round: enough new data for
		// several packs, so kills land between pack and index writes too.
		if err := sample.Rewrite(img, int64(i)*(8<<20)+(1<<20), 6<<20, uint64(i)); err != nil {
			t.Fatal(err)
		}
		sinceComplete++
		// Even rounds kill at a random point of the run; odd rounds kill
		// as soon as a new pack shard appears, so the window between the
		// data and the index that names it is always exercised (a random
		// delay alone may miss it on a machine of another speed).
		delay := est/20 + time.Duration(rng.Int64N(int64(est)*9/10+1))
		onPack := i%2 == 1
		before := countShards(t, repoDir)
		ctx, cancel := context.WithCancel(context.Background())
		c := e.cmd(ctx, "backup", "--repo", repoDir, "--host", "hv01", src)
		started := time.Now()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		trigger := time.After(delay)
		if onPack {
			trigger = whenShardsExceed(ctx, repoDir, before)
		}
		ran := false
		select {
		case <-trigger:
			c.Process.Signal(syscall.SIGKILL)
			ran = <-done == nil
		case err := <-done:
			if err != nil {
				t.Fatalf("iteration %d: backup failed without a kill: %v", i, err)
			}
			ran = true
		}
		cancel()
		if ran {
			completed++
			sinceComplete = 0
			if !onPack {
				est = time.Since(started)
			}
		} else {
			killed++
		}
		r := e.run("check", "--repo", repoDir)
		if r.code != 0 {
			how := fmt.Sprintf("kill after %v", delay)
			if onPack {
				how = "kill on the first new pack"
			}
			t.Fatalf("iteration %d (%s): check failed: exit %d\n%s\n%s", i, how, r.code, r.stdout, r.stderr)
		}
		// Packs in no index stay until prune: count the kills that left
		// more of them.
		var unindexed int
		if i := strings.Index(r.stdout, " packs are in no index"); i >= 0 {
			f := strings.Fields(r.stdout[:i])
			unindexed, _ = strconv.Atoi(f[len(f)-1])
		}
		if !ran && unindexed > lastUnindexed {
			killedWithData++
		}
		lastUnindexed = unindexed
	}
	t.Logf("%d iterations: %d killed mid-run (%d left packs in no index), %d ran to the end", iterations, killed, killedWithData, completed)
	if killed < iterations/2 {
		t.Errorf("only %d of %d backups were killed mid-run; the test must interrupt most of them", killed, iterations)
	}
	if killedWithData == 0 {
		t.Errorf("no kill landed after packs were written: the data-before-metadata window was never exercised")
	}
	// The next backup completes and reuses what survived: each 6 MiB
	// rewrite since the last complete backup makes at most about fourteen
	// new chunks (768 KiB on average, plus the two it straddles at its
	// ends); everything else must dedupe (a full backup of this data adds
	// ref.BlobsNew blobs).
	full := e.backup(repoDir, src)
	limit := int64(14*sinceComplete + 16)
	t.Logf("final backup: %d new blobs, %d new bytes (%d rounds since the last complete backup; a full backup adds %d blobs, %d bytes)",
		full.BlobsNew, full.BytesNew, sinceComplete, ref.BlobsNew, ref.BytesNew)
	if full.BlobsNew > limit || full.BlobsNew*2 > ref.BlobsNew {
		t.Errorf("final backup added %d blobs, want at most %d (a full backup adds %d): it did not dedupe against what survived", full.BlobsNew, limit, ref.BlobsNew)
	}
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", repoDir, "latest", "--target", target)
	compareTrees(t, src, restored(target, src))
	e.ok("check", "--repo", repoDir, "--read-data")
}

// TestCrashNextBackupReusesSurvivors kills a backup right after it wrote
// its first index object mid-run (IndexEvery = 16 packs): the packs that
// index names survived the kill, and the next backup must deduplicate
// against them, storing only what an uninterrupted backup from the state
// before the killed run stores minus what survived. (In
// TestCrashSafetySIGKILL each round writes fewer than 16 packs, so killed
// runs rarely leave indexed data behind.)
func TestCrashNextBackupReusesSurvivors(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--pack-size", "1MiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	write := func(name string, n int, seed uint64) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(src, name), sample.Binary(newRand(seed), n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("base.bin", 4<<20, 1)
	e.backup(repoDir, src)
	var before string
	var survived int64
	for try := 0; ; try++ {
		if try == 3 {
			t.Fatal("three backups ran to the end before they could be killed after their first index write")
		}
		// 64 MiB of incompressible data: 64 packs, so an index object
		// is written after the 16th while more packs follow.
		write(fmt.Sprintf("new%d.bin", try), 64<<20, uint64(10+try))
		before = filepath.Join(e.dir, fmt.Sprintf("before%d", try))
		copyDir(t, repoDir, before)
		blobs0 := indexedBlobs(e, repoDir)
		snaps0 := countFiles(t, filepath.Join(repoDir, "snapshots"))
		ctx, cancel := context.WithCancel(context.Background())
		c := e.cmd(ctx, "backup", "--repo", repoDir, "--host", "hv01", src)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case <-whenFilesExceed(ctx, filepath.Join(repoDir, "index"), countFiles(t, filepath.Join(repoDir, "index"))):
			c.Process.Signal(syscall.SIGKILL)
			<-done
		case err := <-done:
			if err != nil {
				t.Fatalf("backup failed without a kill: %v", err)
			}
		}
		cancel()
		if countFiles(t, filepath.Join(repoDir, "snapshots")) > snaps0 {
			t.Logf("try %d: the backup wrote its snapshot before the kill; again with new data", try)
			os.RemoveAll(before)
			continue
		}
		e.ok("check", "--repo", repoDir)
		survived = indexedBlobs(e, repoDir) - blobs0
		break
	}
	if survived < 8 {
		t.Fatalf("the killed backup left %d indexed blobs, want the 16 packs of its first index object", survived)
	}
	// Reference: the same backup, uninterrupted, from the repository as
	// it was before the killed run (its own cache: the copy has the same
	// repository id).
	ref := *e
	ref.cache = filepath.Join(e.dir, "cache-ref")
	want := ref.backup(before, src).BlobsNew
	os.RemoveAll(before)
	got := e.backup(repoDir, src).BlobsNew
	t.Logf("killed backup left %d indexed blobs; the next backup added %d, an uninterrupted one adds %d", survived, got, want)
	// A few tree blobs may differ; the data blobs that survived must not
	// be stored again.
	if got+survived > want+4 {
		t.Errorf("next backup added %d blobs; with %d surviving from the killed run it should add at most %d (an uninterrupted backup adds %d): it did not dedupe against what survived",
			got, survived, want-survived+4, want)
	}
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", repoDir, "latest", "--target", target)
	compareTrees(t, src, restored(target, src))
	e.ok("check", "--repo", repoDir, "--read-data")
}

// indexedBlobs counts the unique blobs (data and tree) the repository's
// index objects list.
func indexedBlobs(e *env, repoDir string) int64 {
	e.t.Helper()
	var st struct {
		Chunks    int64 `json:"chunks"`
		TreeBlobs int64 `json:"tree_blobs"`
	}
	if err := json.Unmarshal([]byte(e.ok("stats", "--repo", repoDir, "--json")), &st); err != nil {
		e.t.Fatal(err)
	}
	return st.Chunks + st.TreeBlobs
}

// countFiles counts the committed files under dir (temporary files start
// with a dot and are skipped).
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// whenFilesExceed polls dir and fires once it holds more than n
// committed files, or never if ctx ends first.
func whenFilesExceed(ctx context.Context, dir string, n int) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				count := 0
				filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
					if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
						count++
					}
					return nil
				})
				if count > n {
					ch <- now
					return
				}
			}
		}
	}()
	return ch
}

// countShards counts the committed shard files under repoDir/data
// (temporary files start with a dot and are skipped).
func countShards(t *testing.T, repoDir string) int {
	t.Helper()
	n := 0
	for _, shards := range shardFiles(t, repoDir) {
		n += len(shards)
	}
	return n
}

// whenShardsExceed fires once repoDir/data holds more than n committed
// shard files, or never if ctx ends first.
func whenShardsExceed(ctx context.Context, repoDir string, n int) <-chan time.Time {
	return whenFilesExceed(ctx, filepath.Join(repoDir, "data"), n)
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 200, Bytes: 8 << 20, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	good := e.backup(repoDir, src)
	stillRestores := func(step string) {
		t.Helper()
		target := filepath.Join(e.dir, "still-"+step)
		saved := e.pw
		e.pw = "correct horse battery staple"
		e.ok("restore", "--repo", repoDir, good.SnapshotID, "--target", target)
		e.pw = saved
		compareTrees(t, src, restored(target, src))
	}
	expect := func(step string, r result, code int, want ...string) {
		t.Helper()
		if r.code != code {
			t.Errorf("%s: exit %d, want %d\nstderr: %s", step, r.code, code, r.stderr)
		}
		for _, w := range want {
			if !strings.Contains(r.stderr+r.stdout, w) {
				t.Errorf("%s: output lacks %q:\n%s%s", step, w, r.stdout, r.stderr)
			}
		}
	}

	// Wrong password.
	e.pw = "wrong"
	expect("wrong password", e.run("snapshots", "--repo", repoDir), 4, "wrong password")
	e.pw = "correct horse battery staple"
	stillRestores("wrong-password")

	// A second key slot works, and the first still does.
	keyFile := filepath.Join(e.dir, "keyfile")
	os.WriteFile(keyFile, []byte("a-long-random-key-file-content-0123456789"), 0o600)
	e.ok("key", "add", "--repo", repoDir, "--new-password-file", keyFile, "--label", "keyfile")
	e.ok("snapshots", "--repo", repoDir, "--password-file", keyFile)

	// Tampered pack: every shard of one pack gets a flipped byte in its
	// payload -> the blobs there fail authentication and cannot be rebuilt.
	packs := shardFiles(t, repoDir)
	victim := largestPack(t, packs)
	backupCopy := filepath.Join(e.dir, "pristine")
	copyDir(t, repoDir, backupCopy)
	for _, s := range packs[victim] {
		fi, _ := os.Stat(s)
		flipByte(t, s, fi.Size()-10)
	}
	r := e.run("check", "--repo", repoDir, "--read-data")
	expect("tampered pack", r, 1, victim)
	named := affectedFiles(r.stdout, victim)
	// Restoring from the tampered repository fails loudly, naming the
	// pack and each file it could not bring back: exactly the files check
	// named (it reads the blobs of a pack that does not rebuild one by
	// one, as the restore does, so files whose blobs the tampering missed
	// are not named); check removed nothing.
	tampered := filepath.Join(e.dir, "tampered-restore")
	r = e.run("restore", "--repo", repoDir, good.SnapshotID, "--target", tampered)
	if r.code == 0 || !strings.Contains(r.stderr, victim[:8]) {
		t.Errorf("restore with a tampered pack: exit %d, want non-zero naming pack %s:\n%s", r.code, victim[:8], r.stderr)
	}
	lost := damagedFiles(t, src, restored(tampered, src))
	all := compareCount(t, src)
	if len(lost) == 0 || len(lost) >= all {
		t.Errorf("restore with one tampered pack: %d of %d files not restored intact, want some but not all", len(lost), all)
	}
	var lostPaths []string
	for _, rel := range lost {
		lostPaths = append(lostPaths, filepath.Join(src, rel))
	}
	if unnamed, intact := setDiff(lostPaths, named), setDiff(named, lostPaths); len(unnamed)+len(intact) > 0 {
		t.Errorf("check names %d files as affected by tampered pack %s, the restore lost %d: not named %q, named but restored intact %q",
			len(named), victim[:8], len(lostPaths), firstN(unnamed, 5), firstN(intact, 5))
	}
	var wantFailed []string
	for _, rel := range lost {
		wantFailed = append(wantFailed, filepath.Join(restored(tampered, src), rel))
	}
	if failed := failedPaths(r.stderr); !slices.Equal(failed, wantFailed) {
		t.Errorf("restore reports %d files FAILED, %d are not restored intact: not reported %q, reported but intact %q",
			len(failed), len(wantFailed), firstN(setDiff(wantFailed, failed), 5), firstN(setDiff(failed, wantFailed), 5))
	}
	if n := len(shardFiles(t, repoDir)[victim]); n != 6 {
		t.Errorf("the tampered pack has %d shards after check, want all 6 left in place", n)
	}
	os.RemoveAll(repoDir)
	copyDir(t, backupCopy, repoDir)

	// Truncated index object.
	idx, _ := filepath.Glob(filepath.Join(repoDir, "index", "*"))
	if len(idx) == 0 {
		t.Fatal("no index objects")
	}
	os.Chmod(idx[0], 0o600)
	os.Truncate(idx[0], 40)
	expect("truncated index", e.run("check", "--repo", repoDir), 1, "index "+filepath.Base(idx[0])[:8])
	// repair re-indexes the packs and removes the bad index; data is intact.
	e.ok("repair", "--repo", repoDir)
	e.ok("check", "--repo", repoDir, "--read-data")
	stillRestores("truncated-index")

	// Unknown repository version.
	cfgPath := filepath.Join(repoDir, "config")
	orig, _ := os.ReadFile(cfgPath)
	os.Chmod(cfgPath, 0o600)
	bumped := regexp.MustCompile(`"version": [0-9]+`).ReplaceAll(orig, []byte(`"version": 99`))
	if bytes.Equal(bumped, orig) {
		t.Fatalf("test setup: no version field in the config: %s", orig)
	}
	os.WriteFile(cfgPath, bumped, 0o600)
	expect("unknown version", e.run("snapshots", "--repo", repoDir), 1, "version 99", "newer drpipe")
	os.WriteFile(cfgPath, orig, 0o400)

	// Not a repository; missing flags.
	expect("not a repository", e.run("snapshots", "--repo", filepath.Join(e.dir, "src")), 1, "no repository")
	expect("no repo flag", e.run("snapshots"), 2, "no repository")
	expect("bad ec", e.run("init", "--repo", filepath.Join(e.dir, "x"), "--ec", "0+9"), 2, "K=0")
	expect("bad config key", e.run("--config", writeFile(t, e.dir, "bad.yaml", "repo: /x\nbogus_key: 1\n"), "snapshots"), 2, "bogus_key")
	// Misspelt keys of the sections other commands own are errors too,
	// not settings silently ignored.
	expect("bad tape key", e.run("--config", writeFile(t, e.dir, "badtape.yaml", "repo: /x\ntape:\n  recordsize: 1MiB\n"), "snapshots"), 2, `"tape.recordsize"`)
	expect("bad tape pool key", e.run("--config", writeFile(t, e.dir, "badpool.yaml", "repo: /x\ntape:\n  pools:\n    daily:\n      dayly: 3\n"), "snapshots"), 2, "tape pool daily", `"dayly"`, "weekly_on")
	expect("scalar tape pool", e.run("--config", writeFile(t, e.dir, "scalarpool.yaml", "repo: /x\ntape:\n  pools:\n    daily: 3\n"), "snapshots"), 2, "tape.pools.daily must be a section")
	expect("empty tape pools", e.run("--config", writeFile(t, e.dir, "emptypool.yaml", "tape:\n  pools:\n    # vault:\n    #   yearly: 7\n"), "snapshots", "--repo", repoDir), 0)
	expect("bad s3 key, local repository", e.run("--config", writeFile(t, e.dir, "bads3.yaml", "s3:\n  regoin: eu-west-1\n"), "snapshots", "--repo", repoDir), 2, `"s3.regoin"`, "configs/s3.yaml")
	expect("bad copy key", e.run("--config", writeFile(t, e.dir, "badcopy.yaml", "copy:\n  wokers: 8\n"), "copy", "--repo", repoDir, "--to", filepath.Join(e.dir, "copydst")), 2, `"copy.wokers"`)
	expect("bad site key", e.run("--config", writeFile(t, e.dir, "badsite.yaml", "replicate:\n  conections: 8\n"), "snapshots", "--repo", repoDir), 2, `"replicate.conections"`, "configs/site.yaml")
	expect("good tape keys", e.run("--config", writeFile(t, e.dir, "goodtape.yaml", "tape:\n  record_size: 1MiB\n  pools:\n    daily:\n      daily: 3\n      offsite: [weekly]\n"), "snapshots", "--repo", repoDir), 0)
	// The shipped examples load: every key they document is known. They
	// name repositories that do not exist here, so the commands fail
	// later, opening the repository (exit 1), not on the config (exit 2).
	for _, c := range [][]string{{"drpipe.yaml", "snapshots"}, {"tiering.yaml", "tier", "plan"}, {"site.yaml", "snapshots"}, {"s3.yaml", "snapshots"}, {"drsite.yaml", "snapshots"}} {
		res := e.run(append([]string{"--config", filepath.Join("..", "..", "configs", c[0]), "--repo", filepath.Join(e.dir, "none")}, c[1:]...)...)
		expect("configs/"+c[0]+" loads", res, 1, "directory does not exist")
	}
	expect("no repository there", e.run("snapshots", "--repo", filepath.Join(e.dir, "none")), 1, "no repository at", "drpipe init --repo")
	expect("bad tiering key", e.run("--config", writeFile(t, e.dir, "badtier.yaml", "tiering:\n  tiers:\n    - name: hot\n      kind: primary\n      keep: {dialy: 7}\n"), "tier", "plan", "--repo", repoDir), 2, "tiering section", "dialy")
	// An empty --keep-tag (an unset shell variable) must not become a rule
	// that keeps nothing: forget would remove every snapshot.
	expect("empty keep-tag", e.run("forget", "--repo", repoDir, "--keep-tag", "", "--dry-run"), 2, "empty tag name")
	expect("init over repo", e.run("init", "--repo", repoDir), 1, "already holds")
	// A directory with other files (a mistyped path) does not get a
	// repository mixed into it.
	busy := filepath.Join(e.dir, "busy")
	os.MkdirAll(busy, 0o755)
	os.WriteFile(filepath.Join(busy, "notes.txt"), []byte("x"), 0o644)
	expect("init into a non-empty directory", e.run("init", "--repo", busy), 1, "is not empty", "notes.txt")
	if ents, _ := os.ReadDir(busy); len(ents) != 1 {
		t.Errorf("a refused init wrote into the directory: %d entries", len(ents))
	}
	expect("bad format version", e.run("init", "--repo", filepath.Join(e.dir, "x"), "--format-version", "9"), 2, "--format-version 9")
	// Chunk sizes: presets and explicit sizes are recorded; impossible ones
	// are usage errors that say what would work.
	expect("chunk sizes not a power of two", e.run("init", "--repo", filepath.Join(e.dir, "x"), "--chunk-sizes", "256KiB:1MiB:4MiB"), 2, "--chunk-sizes", "not a power of two", "256KiB:768KiB:4MiB")
	expect("chunk sizes too large", e.run("init", "--repo", filepath.Join(e.dir, "x"), "--chunk-sizes", "1MiB:2MiB:16MiB"), 2, "above 8MiB")
	expect("chunk sizes garbage", e.run("init", "--repo", filepath.Join(e.dir, "x"), "--chunk-sizes", "big"), 2, "MIN:AVG:MAX")
	expect("pack size too small", e.run("init", "--repo", filepath.Join(e.dir, "x"), "--pack-size", "100k"), 2, "--pack-size 100k", "1MiB to 1GiB")
	if _, err := os.Stat(filepath.Join(e.dir, "x")); err == nil {
		t.Error("a refused init created the repository directory")
	}
	expect("restic chunk sizes", e.run("init", "--repo", filepath.Join(e.dir, "cr"), "--chunk-sizes", "restic", "--json"), 0, `"min": 524288`, `"avg": 1572864`, `"max": 8388608`)
	expect("explicit chunk sizes", e.run("init", "--repo", filepath.Join(e.dir, "cx"), "--chunk-sizes", "1MiB:3MiB:8MiB"), 0, "chunks 1MiB:3MiB:8MiB")
	// A format 1 repository (for older drpipe releases) is created on request.
	v1 := e.run("init", "--repo", filepath.Join(e.dir, "v1"), "--format-version", "1", "--json")
	expect("format 1 init", v1, 0, `"version": 1`)

	// Unreadable source file: the snapshot is written without it, the exit
	// code is 3 and the file is named. (A separate source, because running
	// as another user needs its modes relaxed.)
	src2 := filepath.Join(e.dir, "src2")
	if _, err := sample.Tree(src2, sample.TreeOptions{Files: 20, Bytes: 1 << 20, Seed: 12}); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(src2, "unreadable.bin")
	os.WriteFile(secret, []byte("secret"), 0o000)
	var r2 result
	if os.Geteuid() == 0 {
		// root reads everything: run the backup as nobody instead.
		r2 = e.runAsNobody(t, repoDir, src2)
	} else {
		r2 = e.run("backup", "--repo", repoDir, "--host", "hv01", src2)
	}
	expect("unreadable source", r2, 3, "unreadable.bin", "permission denied")
	if strings.Contains(r2.stderr, "\r") {
		t.Errorf("warnings carry a progress-line carriage return although no progress is drawn: %q", r2.stderr)
	}
	// The summary counts the files the snapshot holds, not the one left out.
	entries := 0
	filepath.WalkDir(src2, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			entries++
		}
		return nil
	})
	snaps := e.snapshotsJSON(repoDir)
	if sum, _ := snaps[len(snaps)-1]["summary"].(map[string]any); sum == nil || sum["files"] != float64(entries-1) {
		t.Errorf("summary of the backup with an unreadable file: %v, want %d files", sum, entries-1)
	}
	// The snapshot was written and holds every other file.
	partial := filepath.Join(e.dir, "partial")
	e.ok("restore", "--repo", repoDir, "latest", "--target", partial)
	if got := damagedFiles(t, src2, restored(partial, src2)); !slices.Equal(got, []string{"unreadable.bin"}) {
		t.Errorf("snapshot with an unreadable source file: files not restored intact %q, want just unreadable.bin", got)
	}
	stillRestores("end")
}

func writeFile(t *testing.T, dir, name, content string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	out, err := exec.Command("cp", "-a", from, to).CombinedOutput()
	if err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
}

var _ = runtime.GOOS

// TestDemo runs 'drpipe demo' (what 'make demo' runs) end to end.
func TestDemo(t *testing.T) {
	e := newEnv(t)
	out := e.ok("demo", "--dir", filepath.Join(e.dir, "demo"), "--image-size", "1GiB")
	for _, want := range []string{"byte for byte", "rebuilt from parity", "rewrote", "restored at the DR site", "scrub rebuilt the damaged shard", "restored from the tapes alone", "tier plan at", "demo finished"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}

// largestPack returns the pack whose first shard is largest.
func largestPack(t *testing.T, packs map[string][]string) string {
	t.Helper()
	var best string
	var size int64
	for p, shards := range packs {
		fi, err := os.Stat(shards[0])
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > size || (fi.Size() == size && p < best) {
			best, size = p, fi.Size()
		}
	}
	return best
}

// damagedFiles returns, sorted, the regular files under src (relative
// paths) that are missing under dst or whose content differs.
func damagedFiles(t *testing.T, src, dst string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		same, err := sample.SameContent(p, filepath.Join(dst, rel))
		if errors.Is(err, fs.ErrNotExist) {
			same, err = false, nil
		}
		if err != nil {
			return err
		}
		if !same {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// affectedFiles returns, sorted, the files that check's human output
// lists under "affects files:" for the damaged pack.
func affectedFiles(out, pack string) []string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "damaged pack "+pack+" ") {
			continue
		}
		for _, m := range lines[i+1:] {
			if !strings.HasPrefix(m, "  ") {
				break
			}
			if list, ok := strings.CutPrefix(m, "  affects files: "); ok {
				files := strings.Split(list, ", ")
				sort.Strings(files)
				return files
			}
		}
	}
	return nil
}

// setDiff returns the elements of a that are not in b.
func setDiff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func firstN(xs []string, n int) []string { return xs[:min(n, len(xs))] }

// compareCount counts the regular files under dir.
func compareCount(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// failedPaths returns, sorted, the paths restore reports as FAILED.
func failedPaths(stderr string) []string {
	var out []string
	for _, line := range strings.Split(stderr, "\n") {
		if p, ok := strings.CutPrefix(line, "FAILED "); ok {
			p, _, _ = strings.Cut(p, ": ")
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}
