package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
)

// drpipe's timed restore is the only drpipe command between the cache drop
// and the restore: no untimed lookup (snapshots) that would load the
// binary, the keys and the index into the page cache first, a start the
// peers, each timed from its own cold start, do not get.
func TestDrpipeRestoreRunsOnlyTheRestore(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	fake := filepath.Join(dir, "drpipe")
	script := "#!/bin/sh\necho \"$@\" >> " + log + "\n" +
		"case \"$1\" in\n" +
		"backup) echo '{\"snapshot_id\": \"5e1d\"}' ;;\n" +
		"snapshots) echo '[{\"id\": \"5e1d\", \"tags\": [\"day2\"]}]' ;;\n" +
		"esac\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d := drpipeTool(&Env{Work: dir, Drpipe: fake})
	ctx := context.Background()
	if _, err := d.backup(ctx, "day2", dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(log); err != nil {
		t.Fatal(err)
	}
	if _, err := d.restore(ctx, "day2", filepath.Join(dir, "target")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	calls := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(calls) != 1 || !strings.HasPrefix(calls[0], "restore ") || !strings.Contains(calls[0], " 5e1d ") {
		t.Fatalf("drpipe commands for one restore: %q, want only the restore of snapshot 5e1d", calls)
	}
}

// Every restore is compared with its source, the file tree's as well as
// the image's: a file missing, changed or added fails the check.
func TestRestoreCheckComparesEveryFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "tree-src")
	target := filepath.Join(dir, "restore")
	restored := filepath.Join(target, strings.TrimPrefix(src, "/"))
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, root := range []string{src, restored} {
		write(filepath.Join(root, "tree", "a"), "alpha")
		write(filepath.Join(root, "tree", "d", "b"), "beta")
	}
	if err := checkRestore(src, target); err != nil {
		t.Fatalf("identical restore: %v", err)
	}
	write(filepath.Join(restored, "tree", "d", "b"), "betA")
	if err := checkRestore(src, target); err == nil {
		t.Error("a restore with a changed file passed")
	}
	write(filepath.Join(restored, "tree", "d", "b"), "beta")
	write(filepath.Join(restored, "tree", "extra"), "x")
	if err := checkRestore(src, target); err == nil {
		t.Error("a restore with a file the source lacks passed")
	}
	os.Remove(filepath.Join(restored, "tree", "extra"))
	os.Remove(filepath.Join(restored, "tree", "a"))
	if err := checkRestore(src, target); err == nil {
		t.Error("a restore missing a file passed")
	}
}

// borg's repositories, the core suite's and the vmdisk suite's alike, are
// made with repokey (HMAC-SHA256 chunk ids), not repokey-blake2: borg
// hashes every chunk with its key, and on CPUs with SHA instructions, as
// the benchmark machines have, BLAKE2b costs borg about a third more CPU.
func TestBorgRepositoryIsRepokey(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	if err := os.WriteFile(filepath.Join(dir, "borg"), []byte("#!/bin/sh\necho \"$@\" >> "+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	b := borgTool(&Env{Work: dir})
	if err := b.init(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if args := strings.Fields(string(got)); !slices.Equal(args, []string{"init", "-e", "repokey", b.repo}) {
		t.Fatalf("borg %q, want borg init -e repokey %s", args, b.repo)
	}
}

// Day 1's files go into the image or the run stops: debugfs exits 0 when
// its writes fail (here a file system too small for them), and the day 1
// step would back up an image without the files the report says it adds.
func TestAddFilesDebugfsReportsFailedWrites(t *testing.T) {
	for _, c := range []string{"mkfs.ext4", "debugfs"} {
		if !Have(c) {
			t.Skipf("%s not installed: run scripts/deps.sh", c)
		}
	}
	ctx := context.Background()
	env := &Env{Work: t.TempDir()}
	for _, c := range []struct {
		fs, add int64
		fits    bool
	}{{64 << 20, 4 << 20, true}, {32 << 20, 48 << 20, false}} {
		img := env.Path(fmt.Sprintf("vm-%d.raw", c.fs>>20))
		if err := sample.Ext4Image(ctx, img, c.fs, ""); err != nil {
			t.Fatal(err)
		}
		err := addFilesDebugfs(ctx, env, img, c.add)
		switch {
		case c.fits && err != nil:
			t.Errorf("%d MiB into a %d MiB file system: %v", c.add>>20, c.fs>>20, err)
		case !c.fits && err == nil:
			t.Errorf("%d MiB into a %d MiB file system reported success", c.add>>20, c.fs>>20)
		case !c.fits && !strings.Contains(err.Error(), "allocate"):
			t.Errorf("%d MiB into a %d MiB file system: %v, want debugfs's own message", c.add>>20, c.fs>>20, err)
		}
	}
}

// The parity share of drpipe's stored bytes comes from drpipe stats, and a
// stats run that fails or prints no parity_bytes is an error: taken as
// 0 MiB of parity, it turned the "without parity" stored-bytes target into
// the with-parity one and reported that as the result.
func TestDrpipeParityFromStats(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "drpipe")
	d := drpipeTool(&Env{Work: dir, Drpipe: fake})
	for _, c := range []struct {
		script string
		want   int64
		ok     bool
	}{
		{"echo '{\"stored_bytes\": 3000, \"parity_bytes\": 1000}'", 1000, true},
		{"echo 'repository is locked' >&2; exit 1", 0, false},
		{"echo '{\"stored_bytes\": 3000}'", 0, false},
		{"echo 'not json'", 0, false},
	} {
		if err := os.WriteFile(fake, []byte("#!/bin/sh\n"+c.script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := drpipeParity(context.Background(), &Env{Work: dir, Drpipe: fake}, d)
		if c.ok && (err != nil || got != c.want) {
			t.Errorf("stats %q: %d, %v; want %d", c.script, got, err, c.want)
		}
		if !c.ok && err == nil {
			t.Errorf("stats %q: %d parity bytes, want an error", c.script, got)
		}
	}
}
