package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
)

// TestTrailingZerosRestored: files that end in zero bytes come back at
// their full length. The chunker may cut inside the trailing zeros; the
// last chunk is then all zeros, stored as data and skipped on restore,
// and the file was left short (a tar archive lost its end blocks).
func TestTrailingZerosRestored(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.Mkdir(src, 0o755)
	rng := rand.New(rand.NewPCG(3, 4))
	for i, tail := range []int{64, 100, 1000, 9024, 70000, 300 << 10} {
		b := append(sample.Binary(rng, 1<<20+i*4097), make([]byte, tail)...)
		if err := os.WriteFile(filepath.Join(src, "f"+string(rune('a'+i))), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A tar archive: its end is two zero records and padding to 10 KiB.
	tarLike := append(sample.Binary(rng, 400000), make([]byte, 409600-400000)...)
	os.WriteFile(filepath.Join(src, "archive.tar"), tarLike, 0o644)
	backupRestore(t, r, src)
}

// TestRestoreOverExistingTarget: what is already in the target never
// redirects the restore: a symlink where a file or directory belongs is
// replaced, not followed; a FIFO is replaced, not opened (which blocked
// for good); a hard link is replaced, so its other name keeps its content;
// a file where a directory belongs is replaced by the directory.
func TestRestoreOverExistingTarget(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	for _, d := range []string{"d1/d2", "viafile", "fifo"} {
		os.MkdirAll(filepath.Join(src, d), 0o755)
	}
	for _, f := range []string{"cfg", "d1/d2/x", "fifo/data", "hard", "viafile/y"} {
		os.WriteFile(filepath.Join(src, f), []byte("snapshot "+f), 0o644)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}

	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	os.WriteFile(secret, []byte("outside"), 0o600)
	os.Mkdir(filepath.Join(outside, "dir"), 0o755)
	dst := filepath.Join(t.TempDir(), "dst")
	root := filepath.Join(dst, src)
	os.MkdirAll(filepath.Join(root, "fifo"), 0o755)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(secret, filepath.Join(root, "cfg")))                            // file position: symlink out
	must(os.Symlink(filepath.Join(outside, "dir"), filepath.Join(root, "d1")))      // directory position: symlink out
	must(unix.Mkfifo(filepath.Join(root, "fifo", "data"), 0o644))                   // file position: FIFO
	must(os.Link(secret, filepath.Join(root, "hard")))                              // file position: hard link to outside
	must(os.WriteFile(filepath.Join(root, "viafile"), []byte("in the way"), 0o644)) // directory position: file

	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	compare(t, src, root)
	if b, _ := os.ReadFile(secret); string(b) != "outside" {
		t.Errorf("file outside the target now holds %q", b)
	}
	if ents, _ := os.ReadDir(filepath.Join(outside, "dir")); len(ents) != 0 {
		t.Errorf("restore wrote %d entries through a symlinked directory", len(ents))
	}
	for _, p := range []string{"cfg", "d1", "fifo/data", "hard", "viafile"} {
		if fi, err := os.Lstat(filepath.Join(root, p)); err != nil || fi.Mode()&os.ModeSymlink != 0 || fi.Mode()&os.ModeNamedPipe != 0 {
			t.Errorf("%s after restore: %v %v", p, fi.Mode(), err)
		}
	}

	// A directory with entries where a file belongs is that item's error;
	// everything else is still restored.
	dst2 := filepath.Join(t.TempDir(), "dst2")
	root2 := filepath.Join(dst2, src)
	os.MkdirAll(filepath.Join(root2, "cfg", "keep"), 0o755)
	_, err = Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst2})
	if !errors.Is(err, ErrRestoreIncomplete) {
		t.Fatalf("restore with a directory in the way: %v, want ErrRestoreIncomplete", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root2, "d1", "d2", "x")); !bytes.Equal(b, []byte("snapshot d1/d2/x")) {
		t.Errorf("the rest was not restored: d1/d2/x = %q", b)
	}
}

// TestRestoreUnknownPath: --path naming nothing in the snapshot is an
// error that names it, not an empty success.
func TestRestoreUnknownPath(t *testing.T) {
	ctx := context.Background()
	r, src, res := backupFiles(t, map[string]string{"a": "a"})
	dst := filepath.Join(t.TempDir(), "dst")
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, Include: []string{filepath.Join(src, "a"), "/does/not/exist"}})
	if !errors.Is(err, ErrRestoreIncomplete) || rr == nil || len(rr.Failed) != 1 || rr.Failed[0].Path != "/does/not/exist" || !strings.Contains(rr.Failed[0].Err.Error(), "no such path") {
		t.Fatalf("restore --path /does/not/exist: %v %+v, want one failure naming it", err, rr)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, src, "a")); string(b) != "a" {
		t.Errorf("the path that exists was not restored: %q", b)
	}
}

// TestNonUTF8Names: Linux names are bytes. Two names that differ only in
// bytes that are not UTF-8 stay two files, and link targets keep their
// bytes (JSON strings would have turned both into U+FFFD).
func TestNonUTF8Names(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	one, two := filepath.Join(src, "a\xff"), filepath.Join(src, "a\xfe")
	if err := os.WriteFile(one, []byte("one"), 0o644); err != nil {
		t.Skipf("file system refuses non-UTF-8 names: %v", err)
	}
	os.WriteFile(two, []byte("two"), 0o644)
	os.Mkdir(filepath.Join(src, "dir\xc3"), 0o755)
	os.WriteFile(filepath.Join(src, "dir\xc3", "in"), []byte("in"), 0o644)
	os.Symlink("/x\xfftarget", filepath.Join(src, "lnk"))
	sn, dst := backupRestore(t, r, src)
	if got, _ := os.Readlink(filepath.Join(dst, src, "lnk")); got != "/x\xfftarget" {
		t.Errorf("link target %q, want %q", got, "/x\xfftarget")
	}
	if ents, _ := os.ReadDir(filepath.Join(dst, src)); len(ents) != 4 {
		t.Errorf("restored %d entries, want 4 (a\\xff, a\\xfe, dir\\xc3, lnk)", len(ents))
	}
	// --path with the raw bytes finds the file.
	dst2 := filepath.Join(t.TempDir(), "dst2")
	if _, err := Restore(ctx, r, sn, RestoreOptions{Target: dst2, Include: []string{two}}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst2, two)); string(b) != "two" {
		t.Errorf("--path %q restored %q", two, b)
	}
}

// TestOverlappingIncludes: --path /d and --path /d/a both match, in
// either order (the first used to take the credit and the second was
// reported as missing).
func TestOverlappingIncludes(t *testing.T) {
	ctx := context.Background()
	r, src, res := backupFiles(t, map[string]string{"d/a": "a"})
	d, a := filepath.Join(src, "d"), filepath.Join(src, "d", "a")
	for _, inc := range [][]string{{d, a}, {a, d}, {"/", a}} {
		dst := filepath.Join(t.TempDir(), "dst")
		if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, Include: inc}); err != nil {
			t.Errorf("--path %v: %v", inc, err)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, a)); string(b) != "a" {
			t.Errorf("--path %v: d/a = %q", inc, b)
		}
	}
}

// TestDuplicateNamesInTree: a tree naming an entry twice (older trees
// collapsed names that were not UTF-8) restores the first and reports the
// second; a symlink second can no longer replace a directory whose
// metadata is then applied through it, outside the target.
func TestDuplicateNamesInTree(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	outside := t.TempDir()
	os.Chmod(outside, 0o700)
	now := time.Now()
	tr := &repo.Tree{Nodes: []*repo.Node{
		{Name: "x", Type: repo.NodeDir, Mode: fs.ModeDir | 0o777, ModTime: now},
		{Name: "x", Type: repo.NodeSymlink, Mode: fs.ModeSymlink | 0o777, ModTime: now, LinkTarget: outside},
	}}
	sn := snapshotOf(t, r, tr, "/x")
	dst := filepath.Join(t.TempDir(), "dst")
	os.MkdirAll(dst, 0o755) // the target exists: entries are cleared before use
	rr, err := Restore(ctx, r, sn, RestoreOptions{Target: dst})
	if !errors.Is(err, ErrRestoreIncomplete) || rr == nil || len(rr.Failed) != 1 || !strings.Contains(rr.Failed[0].Err.Error(), "twice") {
		t.Fatalf("restore of a tree with a duplicate name: %v %+v, want one failure naming it", err, rr)
	}
	if fi, err := os.Lstat(filepath.Join(dst, "x")); err != nil || !fi.IsDir() {
		t.Errorf("x: %v %v, want the directory (the first entry)", fi, err)
	}
	if fi, _ := os.Stat(outside); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory outside the target changed to %v", fi.Mode().Perm())
	}
}

// backupRestore backs up src into r, restores the snapshot into a new
// target, checks the restored tree against src (compare) and returns the
// snapshot and the target.
func backupRestore(t *testing.T, r *repo.Repository, src string) (*repo.Snapshot, string) {
	t.Helper()
	ctx := context.Background()
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	if err != nil {
		t.Fatal(err)
	}
	compare(t, src, filepath.Join(dst, src))
	if rr.Dirs != res.Summary.Dirs {
		t.Errorf("backup counted %d directories, restore %d", res.Summary.Dirs, rr.Dirs)
	}
	return res.Snapshot, dst
}

// snapshotOf stores tree tr (made by hand) as the root of a new snapshot
// of paths.
func snapshotOf(t *testing.T, r *repo.Repository, tr *repo.Tree, paths ...string) *repo.Snapshot {
	t.Helper()
	ctx := context.Background()
	tid, err := r.SaveTree(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &repo.Snapshot{Time: time.Now(), Host: "h", Paths: paths, Tree: tid}
	if _, err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

// backupFiles backs up a new source directory holding files (relative
// path -> content) into a new repository.
func backupFiles(t *testing.T, files map[string]string) (*repo.Repository, string, *BackupResult) {
	t.Helper()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	for rel, content := range files {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	return r, src, res
}

// TestRestoreBatchRamp checks that the first batches handed to the
// readers are small (so reading starts while the walker still creates
// files) and that they grow to the full size and stay there.
func TestRestoreBatchRamp(t *testing.T) {
	var rs restorer
	prevB, prevN := int64(0), 0
	for i := 0; i < 12; i++ {
		b, n := rs.batchLimits()
		if i == 0 && (b > 8<<20 || n > 256) {
			t.Fatalf("first batch flushes at %d bytes / %d extents; want at most 8 MiB / 256", b, n)
		}
		if b < prevB || n < prevN || b > batchBytes || n > batchTargets {
			t.Fatalf("batch %d: limits %d / %d after %d / %d (cap %d / %d)", i, b, n, prevB, prevN, batchBytes, batchTargets)
		}
		prevB, prevN = b, n
		rs.batchN++ // as flushBatch does
	}
	if prevB != batchBytes || prevN != batchTargets {
		t.Fatalf("limits settle at %d / %d, want %d / %d", prevB, prevN, batchBytes, batchTargets)
	}
}

// TestRestoreDirSwappedForSymlink: a directory already in the target that
// someone replaces by a symlink while the restore runs (a user's home
// directory in a restore to /) cannot send the restore out of the target.
// What belongs below it goes into the directory the restore opened, which
// also gets the directory's metadata (through its descriptor); nothing
// outside is created, replaced, removed or changed.
func TestRestoreDirSwappedForSymlink(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	for _, d := range []string{"home/sub/deeper", "home/other"} {
		os.MkdirAll(filepath.Join(src, d), 0o755)
	}
	files := map[string]string{"home/sub/file": "snapshot file", "home/sub/deeper/x": "snapshot x", "home/sub/h1": "linked"}
	for f, c := range files {
		os.WriteFile(filepath.Join(src, f), []byte(c), 0o644)
	}
	os.Symlink("file", filepath.Join(src, "home/sub/ln"))
	if err := os.Link(filepath.Join(src, "home/sub/h1"), filepath.Join(src, "home/other/h2")); err != nil {
		t.Skipf("no hard links here: %v", err)
	}
	stamp := time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)
	os.Chmod(filepath.Join(src, "home/sub"), 0o750)
	os.Chtimes(filepath.Join(src, "home/sub"), stamp, stamp)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}

	outside := t.TempDir()
	os.Chmod(outside, 0o711)
	os.WriteFile(filepath.Join(outside, "file"), []byte("outside"), 0o600)
	os.WriteFile(filepath.Join(outside, "h1"), []byte("outside h1"), 0o600)
	dst := filepath.Join(t.TempDir(), "dst")
	root := filepath.Join(dst, src)
	sub := filepath.Join(root, "home/sub")
	os.MkdirAll(sub, 0o755) // already there: the restore keeps it
	swapped := false
	testHookWalk = func(dir string) {
		if dir != sub || swapped {
			return
		}
		swapped = true
		if err := os.Rename(sub, sub+".moved"); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(outside, sub); err != nil {
			t.Error(err)
		}
	}
	defer func() { testHookWalk = nil }()

	rres, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	if !swapped {
		t.Fatal("the walk never entered the directory to swap")
	}
	if err != nil {
		t.Fatalf("restore: %v (failed %v)", err, rres.Failed)
	}
	if fi, err := os.Stat(sub + ".moved"); err != nil || fi.Mode().Perm() != 0o750 || !fi.ModTime().Equal(stamp) {
		t.Errorf("the directory the restore opened (now sub.moved): %v, want mode 0750 and time %v (%v)", fi.Mode(), stamp, err)
	}
	ents, _ := os.ReadDir(outside)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"file", "h1"}) {
		t.Errorf("outside the target now holds %v, want [file h1]", names)
	}
	for f, want := range map[string]string{"file": "outside", "h1": "outside h1"} {
		if b, _ := os.ReadFile(filepath.Join(outside, f)); string(b) != want {
			t.Errorf("%s outside the target now holds %q", f, b)
		}
	}
	if fi, _ := os.Stat(outside); fi.Mode().Perm() != 0o711 {
		t.Errorf("outside directory's mode is now %v", fi.Mode().Perm())
	}
	for f, want := range map[string]string{"home/sub.moved/file": "snapshot file", "home/sub.moved/deeper/x": "snapshot x", "home/sub.moved/h1": "linked", "home/other/h2": "linked"} {
		if b, err := os.ReadFile(filepath.Join(root, f)); string(b) != want {
			t.Errorf("%s = %q, %v; want %q", f, b, err, want)
		}
	}
	if l, err := os.Readlink(filepath.Join(root, "home/sub.moved/ln")); l != "file" {
		t.Errorf("symlink ln = %q, %v", l, err)
	}
}

// TestRestoreDirectoryTimes: every directory gets its recorded mode and
// times, set as the walk leaves it, after all it holds was created (files,
// subdirectories, symlinks, hard links), and not disturbed by the data
// written into its files afterwards; a read-only directory too. Into a
// fresh target and over an existing copy.
func TestRestoreDirectoryTimes(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	dirs := []string{"a", "a/b", "a/b/c", "ro", "links"}
	for _, d := range dirs {
		os.MkdirAll(filepath.Join(src, d), 0o755)
	}
	for i := range 400 { // more than the first batches: data lands after the walk left
		os.WriteFile(filepath.Join(src, "a/b", fmt.Sprintf("f%03d", i)), bytes.Repeat([]byte{byte(i)}, 1000+i), 0o644)
	}
	os.WriteFile(filepath.Join(src, "a/b/c/deep"), []byte("deep"), 0o600)
	os.WriteFile(filepath.Join(src, "ro/file"), []byte("read-only dir"), 0o444)
	os.Symlink("../a", filepath.Join(src, "links/sym"))
	os.Link(filepath.Join(src, "a/b/f000"), filepath.Join(src, "links/hard"))
	os.Chmod(filepath.Join(src, "ro"), 0o555)
	os.Chmod(filepath.Join(src, "a/b/c"), 0o710)
	want := map[string]time.Time{}
	for i, d := range append(dirs, ".") {
		at := time.Date(2020, 1, 1+i, 3, 4, 5, 600+i, time.UTC)
		os.Chtimes(filepath.Join(src, d), at, at)
		want[d] = at
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	for round := range 2 { // fresh, then over the first restore
		if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
			t.Fatal(err)
		}
		for d, at := range want {
			a, _ := os.Lstat(filepath.Join(src, d))
			b, err := os.Lstat(filepath.Join(dst, src, d))
			if err != nil || b.Mode() != a.Mode() || !b.ModTime().Equal(at) {
				t.Errorf("round %d: directory %s restored as %v %v (%v), want %v %v", round, d, b.Mode(), b.ModTime(), err, a.Mode(), at)
			}
		}
		compare(t, src, filepath.Join(dst, src))
	}
}
