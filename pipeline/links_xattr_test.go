package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
)

func inode(t *testing.T, p string) (ino, nlink uint64) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Ino, uint64(st.Nlink)
}

// TestHardLinksRestored: names of one file in the snapshot are one file
// again after a restore (restic and tar do the same); a restore of only
// some of the names gives each its own file.
func TestHardLinksRestored(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	r, src, _ := backupFiles(t, map[string]string{"a": "small file with three names", "sub/single": "one name", "big": string(sample.Binary(rng, 3<<20))})
	for _, l := range [][2]string{{"a", "sub/b"}, {"a", "c"}, {"big", "sub/big2"}} {
		if err := os.Link(filepath.Join(src, l[0]), filepath.Join(src, l[1])); err != nil {
			t.Skipf("the test file system cannot hard-link: %v", err)
		}
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}, NoParent: true})
	if err != nil {
		t.Fatal(err)
	}
	// Each file is read once, whatever its number of names.
	if res.Summary.BytesRead >= 4<<20 || res.Summary.Files != 6 {
		t.Errorf("backup read %d bytes of %d files: the second name of big was read again", res.Summary.BytesRead, res.Summary.Files)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	var cnt Counter
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, Progress: &cnt})
	if err != nil {
		t.Fatal(err)
	}
	// Progress reaches the snapshot's totals (what the CLI's bar is
	// measured against), though linked names write nothing.
	if cnt.DoneBytes.Load() != res.Summary.BytesTotal || cnt.DoneFiles.Load() != 6 {
		t.Errorf("progress done %d files, %d bytes; want 6 files, %d bytes", cnt.DoneFiles.Load(), cnt.DoneBytes.Load(), res.Summary.BytesTotal)
	}
	root := filepath.Join(dst, src)
	compare(t, src, root)
	for _, group := range [][]string{{"a", "sub/b", "c"}, {"big", "sub/big2"}} {
		ino0, n := inode(t, filepath.Join(root, group[0]))
		if n != uint64(len(group)) {
			t.Errorf("%s has %d links, want %d", group[0], n, len(group))
		}
		for _, name := range group[1:] {
			if ino, _ := inode(t, filepath.Join(root, name)); ino != ino0 {
				t.Errorf("%s is not a hard link to %s", name, group[0])
			}
		}
	}
	if _, n := inode(t, filepath.Join(root, "sub/single")); n != 1 {
		t.Errorf("sub/single has %d links", n)
	}
	// Each name's content is written once: the 3 MiB file counts once.
	if rr.BytesWritten >= 6<<20 {
		t.Errorf("wrote %d bytes: the second name of big was written again", rr.BytesWritten)
	}
	if rr.Files != 6 {
		t.Errorf("restored %d files, want 6 (links count as files)", rr.Files)
	}
	// bytes_total counts every name, as the backup's does.
	if rr.BytesTotal != res.Summary.BytesTotal {
		t.Errorf("restore bytes_total %d, backup's %d", rr.BytesTotal, res.Summary.BytesTotal)
	}

	// Only one name of a group selected: a file of its own.
	dst2 := filepath.Join(t.TempDir(), "dst2")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst2, Include: []string{filepath.Join(src, "sub")}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sub/b", "sub/big2"} {
		p := filepath.Join(dst2, src, name)
		if _, n := inode(t, p); n != 1 {
			t.Errorf("%s has %d links in a restore of sub only", name, n)
		}
		same, err := sample.SameContent(filepath.Join(src, name), p)
		if err != nil || !same {
			t.Errorf("%s: content differs (%v)", name, err)
		}
	}
}

// TestHardLinkNeedsSameData: two names of one inode recorded with
// different content or metadata (the file changed between the two reads)
// are not linked on restore.
func TestHardLinkNeedsSameData(t *testing.T) {
	mt := time.Unix(1700000000, 0)
	base := repo.Node{Type: repo.NodeFile, Size: 3, ModTime: mt, Mode: 0o644, Inode: 7, Links: 2, Content: []repo.Extent{{ID: id.Hash([]byte("x")), Len: 3}}, Xattrs: map[string][]byte{"user.a": {1}}}
	same := base
	if !sameInodeData(&base, &same) {
		t.Fatal("identical nodes are not the same data")
	}
	changes := map[string]func(n *repo.Node){
		"content": func(n *repo.Node) { n.Content = []repo.Extent{{ID: id.Hash([]byte("y")), Len: 3}} },
		"mtime":   func(n *repo.Node) { n.ModTime = mt.Add(time.Second) },
		"mode":    func(n *repo.Node) { n.Mode = 0o600 },
		"owner":   func(n *repo.Node) { n.UID = 1 },
		"xattr":   func(n *repo.Node) { n.Xattrs = map[string][]byte{"user.a": {2}} },
		"lists":   func(n *repo.Node) { n.ContentLists = []id.ID{id.Hash([]byte("l"))} },
	}
	for name, change := range changes {
		other := base
		change(&other)
		if sameInodeData(&base, &other) {
			t.Errorf("%s differs but the nodes count as the same data", name)
		}
	}
}

// TestXattrsRoundTrip: extended attributes of files and directories,
// binary values, long lists (more than the first read's buffer) and, as
// root, the trusted namespace come back on restore.
func TestXattrsRoundTrip(t *testing.T) {
	r, src, _ := backupFiles(t, map[string]string{"f": "data", "d/g": "more", "plain": "none"})
	set := func(p, name string, v []byte) {
		t.Helper()
		if err := unix.Lsetxattr(p, name, v, 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) {
				t.Skipf("the test file system keeps no %s attributes: %v", strings.SplitN(name, ".", 2)[0], err)
			}
			t.Fatal(err)
		}
	}
	f, d, g := filepath.Join(src, "f"), filepath.Join(src, "d"), filepath.Join(src, "d/g")
	set(f, "user.text", []byte("hello"))
	set(f, "user.bin", []byte{0, 1, 2, 255})
	set(f, "user.empty", nil)
	set(d, "user.dir", []byte("on a directory"))
	for i := range 40 { // 40 names of 40+ bytes: a list longer than 1 KiB
		set(g, fmt.Sprintf("user.%s%02d", strings.Repeat("n", 36), i), []byte{byte(i)})
	}
	if os.Geteuid() == 0 {
		set(f, "trusted.admin", []byte("root only"))
	}
	want := map[string]map[string][]byte{}
	for _, p := range []string{f, d, g, filepath.Join(src, "plain")} {
		x, err := readXattrs(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(src, p)
		want[rel] = x
	}
	if len(want["d/g"]) != 40 || len(want["f"]) < 3 || want["plain"] != nil {
		t.Fatalf("read back from the source: %d, %d, %v", len(want["d/g"]), len(want["f"]), want["plain"])
	}
	// A second backup, whose parent (from backupFiles) has the same
	// content for f and d/g: their attributes are read all the same.
	_, dst := backupRestore(t, r, src)
	for rel, x := range want {
		got, err := readXattrs(filepath.Join(dst, src, rel))
		if err != nil {
			t.Fatal(err)
		}
		if !maps.EqualFunc(got, x, bytes.Equal) {
			t.Errorf("%s: restored xattrs %v, want %v", rel, names(got), names(x))
		}
	}
}

func names(x map[string][]byte) []string { return slices.Sorted(maps.Keys(x)) }

// TestXattrsUnsupportedReportedOnce: attributes the target refuses as
// unsupported (here a namespace Linux does not know, as a file system
// without extended attributes refuses them all) are reported once for the
// restore, which is then incomplete; everything else is restored.
func TestXattrsUnsupportedReportedOnce(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	now := time.Now().Truncate(time.Second)
	bogus := map[string][]byte{"nosuchns.a": []byte("1"), "nosuchns.b": []byte("2")}
	sub := &repo.Tree{Nodes: []*repo.Node{
		{Name: "empty", Type: repo.NodeFile, Mode: 0o640, ModTime: now, Xattrs: bogus},
		{Name: "fifo", Type: repo.NodeFIFO, Mode: fs.ModeNamedPipe | 0o600, ModTime: now, Xattrs: bogus},
	}}
	sid, err := r.SaveTree(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	sn := snapshotOf(t, r, &repo.Tree{Nodes: []*repo.Node{{Name: "d", Type: repo.NodeDir, Mode: fs.ModeDir | 0o750, ModTime: now, Subtree: &sid, Xattrs: bogus}}}, "/d")
	dst := filepath.Join(t.TempDir(), "dst")
	rr, err := Restore(ctx, r, sn, RestoreOptions{Target: dst})
	if !errors.Is(err, ErrRestoreIncomplete) || rr == nil || len(rr.Failed) != 1 {
		t.Fatalf("restore: %v %+v, want one failure for all six attributes", err, rr)
	}
	if msg := rr.Failed[0].Err.Error(); !strings.Contains(msg, "6 extended attributes") || !strings.Contains(msg, "nosuchns.a") {
		t.Errorf("failure %q does not count the attributes or name the first", msg)
	}
	for name, perm := range map[string]fs.FileMode{"d": 0o750, "d/empty": 0o640, "d/fifo": 0o600} {
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil || fi.Mode().Perm() != perm || !fi.ModTime().Equal(now) {
			t.Errorf("%s: %v %v, want mode %v and the recorded time", name, fi, err, perm)
		}
	}
}

// TestXattrNameNotUTF8: an attribute name a tree cannot hold is left out
// with a warning (the backup is partial); the file's other attributes
// are kept.
func TestXattrNameNotUTF8(t *testing.T) {
	ctx := context.Background()
	r, src, _ := backupFiles(t, map[string]string{"f": "data"})
	f := filepath.Join(src, "f")
	for _, name := range []string{"user.ok", "user.bad\xff"} {
		if err := unix.Lsetxattr(f, name, []byte("v"), 0); err != nil {
			t.Skipf("cannot set %q here: %v", name, err)
		}
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if !errors.Is(err, ErrPartial) || res == nil || res.Warnings != 1 {
		t.Fatalf("backup: %v (%+v), want a partial backup with one warning", err, res)
	}
	// The snapshot does not claim every attribute, so the next backup
	// reads them again and warns again instead of taking over the set.
	if res.Snapshot.Has(repo.FeatureXattrs) {
		t.Error("a snapshot missing an attribute claims them all")
	}
	if again, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}}); !errors.Is(err, ErrPartial) || again.Warnings != 1 {
		t.Errorf("second backup: %v, want the warning again", err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	got, err := readXattrs(filepath.Join(dst, f))
	if err != nil || len(got) != 1 || string(got["user.ok"]) != "v" {
		t.Errorf("restored %v (%v), want user.ok only", names(got), err)
	}
}

// TestLargeXattrDirectory: a directory whose entries carry large
// attributes (any user can set 64 KiB values on tmpfs) makes a listing
// larger than a blob may be; it is split into parts, and the backup and
// restore complete. Before, the whole backup failed ("exceeds the
// 67108864-byte blob limit") and no snapshot was written.
func TestLargeXattrDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and restores 900 files with 64 KiB attributes")
	}
	base, err := os.MkdirTemp("/dev/shm", "drpipe-xattr-")
	if err != nil {
		t.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	defer os.RemoveAll(base)
	src := filepath.Join(base, "src")
	os.Mkdir(src, 0o755)
	rng := rand.New(rand.NewPCG(8, 9))
	val := sample.Binary(rng, 64<<10)
	for i := range 900 {
		p := filepath.Join(src, fmt.Sprintf("f%04d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.big", val, 0); err != nil {
			t.Skipf("tmpfs here keeps no 64 KiB user attributes: %v", err)
		}
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(base, "dst")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 449, 899} {
		got, err := readXattrs(filepath.Join(dst, src, fmt.Sprintf("f%04d", i)))
		if err != nil || !bytes.Equal(got["user.big"], val) {
			t.Fatalf("f%04d: attribute of %d bytes restored (%v), want %d", i, len(got["user.big"]), err, len(val))
		}
	}
}

// TestXattrsFromParent: an entry whose inode is unchanged takes its
// attributes from the parent snapshot, but only when that snapshot
// recorded them; a changed attribute (which changes the inode's change
// time) is read again.
func TestXattrsFromParent(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	f := filepath.Join(src, "d", "f")
	os.WriteFile(f, []byte("data"), 0o644)
	if err := unix.Lsetxattr(f, "user.v", []byte("1"), 0); err != nil {
		t.Skipf("the test file system keeps no user attributes: %v", err)
	}
	unix.Lsetxattr(filepath.Join(src, "d"), "user.dir", []byte("x"), 0)
	restored := func(sn *repo.Snapshot) (file, dir map[string][]byte) {
		t.Helper()
		dst := filepath.Join(t.TempDir(), "dst")
		if _, err := Restore(ctx, r, sn, RestoreOptions{Target: dst}); err != nil {
			t.Fatal(err)
		}
		file, _ = readXattrs(filepath.Join(dst, f))
		dir, _ = readXattrs(filepath.Join(dst, src, "d"))
		return file, dir
	}
	backup := func() *repo.Snapshot {
		t.Helper()
		res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Snapshot
	}
	// A parent from a build that did not record attributes: nothing is
	// taken from it though the inodes are unchanged.
	recordXattrs = false
	old := backup()
	recordXattrs = true
	if old.Has(repo.FeatureXattrs) {
		t.Fatal("a snapshot without attributes claims them")
	}
	sn := backup()
	if !sn.Has(repo.FeatureXattrs) {
		t.Fatal("the snapshot does not say it records attributes")
	}
	if file, dir := restored(sn); string(file["user.v"]) != "1" || string(dir["user.dir"]) != "x" {
		t.Fatalf("after a parent without attributes: %v %v", names(file), names(dir))
	}
	// Unchanged: taken over from the parent.
	if file, dir := restored(backup()); string(file["user.v"]) != "1" || string(dir["user.dir"]) != "x" {
		t.Fatalf("unchanged: %v %v", names(file), names(dir))
	}
	// Changed value and a removed attribute: read again.
	unix.Lsetxattr(f, "user.v", []byte("2"), 0)
	unix.Lremovexattr(filepath.Join(src, "d"), "user.dir")
	if file, dir := restored(backup()); string(file["user.v"]) != "2" || len(dir) != 0 {
		t.Fatalf("changed: file %q, dir %v", file["user.v"], names(dir))
	}
}

// TestXattrsNotFromAnotherUser: attributes are taken over only from a
// parent snapshot made by the same user; another user may not have seen
// them all (trusted.* are root's alone).
func TestXattrsNotFromAnotherUser(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	f := filepath.Join(src, "f")
	os.WriteFile(f, []byte("data"), 0o644)
	if err := unix.Lsetxattr(f, "user.v", []byte("1"), 0); err != nil {
		t.Skipf("the test file system keeps no user attributes: %v", err)
	}
	settle()
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	// A parent whose node of f records no attributes, same inode and
	// change time: as made by a user who could not see them.
	tree, err := rewriteTree(ctx, r, res.Snapshot.Tree, func(n *repo.Node) {
		if n.Type == repo.NodeFile {
			n.Xattrs = nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user string
		want string
	}{{res.Snapshot.Username, ""}, {"someone-else", "1"}} {
		parent := *res.Snapshot
		parent.Tree, parent.Username = tree, tc.user
		again, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}, Parent: &parent})
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "dst")
		if _, err := Restore(ctx, r, again.Snapshot, RestoreOptions{Target: dst}); err != nil {
			t.Fatal(err)
		}
		got, _ := readXattrs(filepath.Join(dst, f))
		if string(got["user.v"]) != tc.want {
			t.Errorf("parent made by %q: user.v restored as %q, want %q", tc.user, got["user.v"], tc.want)
		}
	}
}

// rewriteTree saves a copy of tree x and everything below it with fn
// applied to every node.
func rewriteTree(ctx context.Context, r *repo.Repository, x id.ID, fn func(*repo.Node)) (id.ID, error) {
	t, err := r.LoadTree(ctx, x)
	if err != nil {
		return id.ID{}, err
	}
	for _, n := range t.Nodes {
		if n.Subtree != nil {
			sub, err := rewriteTree(ctx, r, *n.Subtree, fn)
			if err != nil {
				return id.ID{}, err
			}
			n.Subtree = &sub
		}
		fn(n)
	}
	nx, err := r.SaveTree(ctx, t)
	if err != nil {
		return id.ID{}, err
	}
	return nx, r.Flush(ctx)
}

// TestBackupCancelledWithLinks: cancelling a backup at any moment, while
// hard-linked files change under it (so later names read themselves),
// returns an error and never panics. A directory used to finish at its
// first failed child while others still queued segments, and the backup
// then closed the queues under them ("send on closed channel").
func TestBackupCancelledWithLinks(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	for d := range 10 {
		os.MkdirAll(filepath.Join(src, fmt.Sprintf("d%d", d)), 0o755)
	}
	var names []string
	for i := range 600 {
		p := filepath.Join(src, fmt.Sprintf("d%d", i%10), fmt.Sprintf("f%03d", i))
		os.WriteFile(p, []byte(strings.Repeat("x", 100+i)), 0o644)
		for k := range 2 {
			os.Link(p, filepath.Join(src, fmt.Sprintf("d%d", (i+k+1)%10), fmt.Sprintf("l%d-%03d", k, i)))
		}
		names = append(names, p)
	}
	stop := make(chan struct{})
	go func() { // changes the files' change times all along
		for m := 0; ; m++ {
			select {
			case <-stop:
				return
			default:
			}
			os.Chmod(names[m%len(names)], fs.FileMode(0o600+m%2*0o44))
		}
	}()
	defer close(stop)
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range 25 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(60))*time.Millisecond)
		_, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}, NoParent: true})
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrPartial) {
			t.Fatalf("run %d: %v", i, err)
		}
	}
}
