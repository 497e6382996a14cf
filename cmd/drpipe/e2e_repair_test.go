package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
)

// TestRepairUnreadableIndexColdCache: an index object that cannot be read
// is what check reports and repair replaces. Both must get that far when
// the local index cache is cold (a new host, a DR bring-up, a cleared
// cache), not fail while opening the repository.
func TestRepairUnreadableIndexColdCache(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "2+1", "--pack-size", "1MiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	rng := newRandSource(11)
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(filepath.Join(src, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	ixs, _ := filepath.Glob(filepath.Join(repoDir, "index", "*"))
	if len(ixs) != 1 {
		t.Fatalf("%d index objects, want 1", len(ixs))
	}
	flipByte(t, ixs[0], 40)
	os.RemoveAll(e.cache)

	r := e.run("check", "--repo", repoDir)
	if r.code != 1 || !strings.Contains(r.stdout, "unreadable") {
		t.Fatalf("check with an unreadable index and a cold cache: exit %d, want 1 reporting it\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "harmless") {
		t.Errorf("check calls the packs of an unreadable index harmless:\n%s", r.stdout)
	}
	// stats still shows its figures, but exits 1 saying they leave out
	// what the damaged index lists.
	if r := e.run("stats", "--repo", repoDir); r.code != 1 || !strings.Contains(r.stderr, "1 index objects are damaged") || !strings.Contains(r.stdout, "packs") {
		t.Errorf("stats with an unreadable index: exit %d, want 1 saying so\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	os.RemoveAll(e.cache)
	out := e.ok("repair", "--repo", repoDir)
	if !strings.Contains(out, "replaced 1 unreadable index") {
		t.Errorf("repair did not replace the index:\n%s", out)
	}
	os.RemoveAll(e.cache)
	e.ok("check", "--repo", repoDir, "--read-data")
	e.ok("stats", "--repo", repoDir)
	target := filepath.Join(e.dir, "out")
	e.ok("restore", "--repo", repoDir, "latest", "--target", target)
	compareTrees(t, src, restored(target, src))
}

// TestRepairLostPackBackupAgain: after repair removed the chunks of a lost
// pack from the index, a new backup of the unchanged files stores them
// again, and both the old and the new snapshot restore intact.
func TestRepairLostPackBackupAgain(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "2+1", "--pack-size", "1MiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	rng := newRandSource(12)
	for i := 0; i < 8; i++ {
		data := make([]byte, 300<<10)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := e.backup(repoDir, src)
	victim := largestPack(t, shardFiles(t, repoDir))
	for _, s := range shardFiles(t, repoDir)[victim][:2] { // both data shards
		os.Remove(s)
	}
	if r := e.run("check", "--repo", repoDir, "--read-data"); r.code != 1 || !strings.Contains(r.stdout, "LOST") {
		t.Fatalf("check with both data shards of pack %s gone: exit %d, want 1 naming it LOST:\n%s", victim[:8], r.code, r.stdout)
	}
	r := e.run("repair", "--repo", repoDir)
	if r.code != 1 || !strings.Contains(r.stdout, "LOST pack "+victim) || !strings.Contains(r.stdout, "blobs that cannot be read from the index") ||
		!strings.Contains(r.stdout, "back up the affected files again") {
		t.Fatalf("repair of a lost pack: exit %d, want 1 naming it and the blobs removed from the index:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	again := e.backup(repoDir, src)
	if again.BlobsNew == 0 {
		t.Errorf("the backup after repair stored no chunk: it deduplicated against the lost pack")
	}
	for i, sid := range []string{old.SnapshotID, again.SnapshotID} {
		target := filepath.Join(e.dir, fmt.Sprintf("out%d", i))
		e.ok("restore", "--repo", repoDir, sid, "--target", target)
		compareTrees(t, src, restored(target, src))
	}
	e.ok("check", "--repo", repoDir, "--read-data")
	e.ok("repair", "--repo", repoDir)
}

// TestRepairLostPackBackupAgainLargeFile: a file of more chunks than a
// tree node holds inline (its content is in content lists) and unchanged
// since the snapshot is read again by the backup after repair removed
// some of its chunks from the index, rather than taken from the snapshot.
func TestRepairLostPackBackupAgainLargeFile(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "2+1", "--pack-size", "4MiB", "--chunk-sizes", "64KiB:128KiB:256KiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	rng := newRandSource(13)
	data := make([]byte, 80<<20) // about 600 chunks: more than 512 are kept in content lists
	for j := range data {
		data[j] = byte(rng.Uint32())
	}
	if err := os.WriteFile(filepath.Join(src, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	old := e.backup(repoDir, src)
	victim := largestPack(t, shardFiles(t, repoDir))
	for _, s := range shardFiles(t, repoDir)[victim][:2] {
		os.Remove(s)
	}
	if r := e.run("repair", "--repo", repoDir); r.code != 1 || !strings.Contains(r.stdout, "blobs that cannot be read from the index") {
		t.Fatalf("repair of a lost pack: exit %d, want 1 removing its blobs from the index:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	again := e.backup(repoDir, src)
	if again.BlobsNew == 0 {
		t.Errorf("the backup after repair stored no chunk: it took the file from the snapshot, with the chunks repair removed from the index")
	}
	for i, sid := range []string{old.SnapshotID, again.SnapshotID} {
		target := filepath.Join(e.dir, fmt.Sprintf("out%d", i))
		e.ok("restore", "--repo", repoDir, sid, "--target", target)
		compareTrees(t, src, restored(target, src))
	}
	e.ok("check", "--repo", repoDir, "--read-data")
}

// TestCheckReadDataSubsetCLI: check --read-data-subset reads the part of
// the packs asked for and says so (text and --json); a subset it cannot
// read is a usage error.
func TestCheckReadDataSubsetCLI(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 30, Bytes: 2 << 20, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	var rep struct {
		Packs      int    `json:"packs"`
		PacksRead  int    `json:"packs_read"`
		ReadData   bool   `json:"read_data"`
		ReadSubset string `json:"read_data_subset"`
	}
	if err := json.Unmarshal([]byte(e.ok("check", "--repo", repoDir, "--read-data-subset", "1/1", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.ReadData || rep.ReadSubset != "1/1" || rep.PacksRead != rep.Packs || rep.Packs == 0 {
		t.Errorf("check --read-data-subset 1/1: %+v; want every pack read, subset 1/1", rep)
	}
	if out := e.ok("check", "--repo", repoDir, "--read-data-subset", "100%"); !strings.Contains(out, "(subset 100%;") {
		t.Errorf("check --read-data-subset 100%% does not name the subset:\n%s", out)
	}
	for _, bad := range []string{"0/2", "3/2", "150%", "half"} {
		if r := e.run("check", "--repo", repoDir, "--read-data-subset", bad); r.code != exitUsage || !strings.Contains(r.stderr, "N/T") {
			t.Errorf("check --read-data-subset %s: exit %d, want %d with what to give\n%s", bad, r.code, exitUsage, r.stderr)
		}
	}
}
