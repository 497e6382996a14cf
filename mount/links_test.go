package mount

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/pipeline"
)

// TestHardLinksShareAnInode: the names of a file that were hard links
// of one another in the snapshot show one inode, with the snapshot's
// link count, as ls -li, find -samefile, du and rsync -H / cp -a
// copying out of the mount expect; a file of the same content that was
// not linked, and the same file in another snapshot, are other inodes.
func TestHardLinksShareAnInode(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	r := testRepo(t)
	src := t.TempDir()
	for _, d := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	first := filepath.Join(src, "a", "f")
	if err := os.WriteFile(first, []byte("linked"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a/g", "b/h"} {
		if err := os.Link(first, filepath.Join(src, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "a", "copy"), []byte("linked"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "h", Paths: []string{src}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // snapshots a second apart
	}
	mnt := mountForTest(t, r)
	snaps, err := os.ReadDir(filepath.Join(mnt, "h"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, s := range snaps {
		if s.Name() != "latest" {
			dirs = append(dirs, filepath.Join(mnt, "h", s.Name(), src))
		}
	}
	if len(dirs) != 2 {
		t.Fatalf("snapshots in the mount: %v, want 2", snaps)
	}
	stat := func(p string) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	seen := map[uint64]string{}
	for _, d := range dirs {
		f := stat(filepath.Join(d, "a", "f"))
		for _, n := range []string{"a/g", "b/h"} {
			st := stat(filepath.Join(d, n))
			if st.Ino != f.Ino {
				t.Errorf("%s: inode %d, a/f's is %d: hard links of one file show as separate files", n, st.Ino, f.Ino)
			}
			if st.Nlink != 3 {
				t.Errorf("%s: %d links, want 3", n, st.Nlink)
			}
			if b, err := os.ReadFile(filepath.Join(d, n)); err != nil || string(b) != "linked" {
				t.Errorf("%s reads %q, %v; want linked", n, b, err)
			}
		}
		if f.Nlink != 3 {
			t.Errorf("a/f: %d links, want 3", f.Nlink)
		}
		if c := stat(filepath.Join(d, "a", "copy")); c.Ino == f.Ino || c.Nlink != 1 {
			t.Errorf("a/copy: inode %d with %d links, a/f's inode is %d: want another inode with 1 link", c.Ino, c.Nlink, f.Ino)
		}
		if other, ok := seen[f.Ino]; ok {
			t.Errorf("a/f has inode %d in %s and in %s: want one inode per snapshot", f.Ino, other, d)
		}
		seen[f.Ino] = d
	}
}

// TestInodeNumberStaysAfterTheEntryTimeout: a file or directory looked up
// again once the kernel's entry timeout has passed keeps its inode
// number, as a program walking the snapshot (find, tar, rsync) expects of
// a file that did not change, and keeps the listing or reader it loaded.
func TestInodeNumberStaysAfterTheEntryTimeout(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	r := testRepo(t)
	src := t.TempDir()
	if err := os.Mkdir(filepath.Join(src, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "d", "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "h", Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	mnt := mountForTest(t, r)
	names := []string{filepath.Join(mnt, "h", "latest", src, "d"), filepath.Join(mnt, "h", "latest", src, "d", "f")}
	first := map[string]uint64{}
	for _, p := range names {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		first[p] = st.Ino
	}
	time.Sleep(1500 * time.Millisecond) // past the entry timeout
	for _, p := range names {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Ino != first[p] {
			t.Errorf("%s: inode %d, %d a moment before", p, st.Ino, first[p])
		}
	}
}
