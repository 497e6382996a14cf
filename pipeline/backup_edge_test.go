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
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
)

// A backup path below a symlinked directory (/var/lib/libvirt -> /data/libvirt)
// must restore the path's content.
func TestBackupSymlinkedAncestor(t *testing.T) {
	r, _ := newRepo(t)
	base := t.TempDir()
	real := filepath.Join(base, "real", "sub")
	os.MkdirAll(real, 0o755)
	os.WriteFile(filepath.Join(real, "f"), []byte("hello"), 0o644)
	os.Symlink("real", filepath.Join(base, "link"))
	p := filepath.Join(base, "link", "sub")
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{p}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := FindNode(context.Background(), r, res.Snapshot.Tree, filepath.Join(base, "link"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node link: type %v target %q subtree %v", n.Type, n.LinkTarget, n.Subtree != nil)
	dst := filepath.Join(t.TempDir(), "dst")
	_, rerr := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst})
	got, err := os.ReadFile(filepath.Join(dst, p, "f"))
	if rerr != nil || err != nil || string(got) != "hello" {
		t.Fatalf("restore: %v; %s/f: %q %v", rerr, p, got, err)
	}
	if n.Type == repo.NodeSymlink {
		t.Errorf("intermediate node recorded as a symlink with a subtree")
	}
}

// An empty standard input is one empty file.
func TestBackupStdinEmpty(t *testing.T) {
	r, _ := newRepo(t)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Stdin: bytes.NewReader(nil), StdinName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.Files != 1 || res.Summary.BytesTotal != 0 {
		t.Errorf("summary %+v", res.Summary)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dst, "x"))
	if err != nil || fi.Size() != 0 {
		t.Fatalf("restored: %v %v", fi, err)
	}
}

// Paths given twice or nested are backed up once.
func TestBackupNestedPaths(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "f"), []byte("abc"), 0o644)
	os.WriteFile(filepath.Join(src, "g"), []byte("de"), 0o644)
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(src)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src, "sub", src + "/", "./sub/f"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.Files != 2 || res.Summary.BytesTotal != 5 || len(res.Snapshot.Paths) != 1 {
		t.Errorf("summary %+v paths %v", res.Summary, res.Snapshot.Paths)
	}
}

// A log that grows while it is read is kept as read with a notice: only a
// file left out makes the snapshot incomplete (ErrPartial, exit code 3).
func TestBackupGrowingFileNotPartial(t *testing.T) {
	r, _ := newRepo(t)
	src, log := logSource(t, 6<<20, 9, true)
	testHookSegmentsPlanned = func(p string) {
		if p == log {
			f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte("one more line\n"))
			f.Close()
		}
	}
	t.Cleanup(func() { testHookSegmentsPlanned = nil })
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil || res.Summary.Files != 2 {
		t.Errorf("a file that grew while read (kept in the snapshot): %v, %d files; want success with both files", err, res.Summary.Files)
	}
}

// A later name of a hard-linked file that is read itself (the file changed
// after its first name was opened) and that has meanwhile been replaced by a
// FIFO: the open must not block the backup forever.
func TestBackupReplacedByFIFONoHang(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	a, b, c := filepath.Join(src, "a"), filepath.Join(src, "b"), filepath.Join(src, "c")
	big := make([]byte, 96<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	os.WriteFile(a, big, 0o644)
	os.Link(a, b)
	os.WriteFile(c, []byte("third"), 0o644)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unixMkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	testHookSegmentsPlanned = func(p string) {
		switch p {
		case a:
			os.Chmod(a, 0o600) // b's lstat sees a new change time: b is read itself
		case c:
			os.Rename(fifo, b) // b is now a FIFO, after its lstat
		}
	}
	t.Cleanup(func() { testHookSegmentsPlanned = nil })
	done := make(chan error, 1)
	go func() {
		_, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}, Workers: 1})
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("backup: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("backup hangs opening a FIFO that replaced a regular file")
	}
}

func unixMkfifo(p string) error { return unix.Mkfifo(p, 0o644) }

// A backup path that is a symlink to a directory is stored as the link,
// with a notice saying so; it does not make the snapshot incomplete.
func TestBackupPathSymlinkToDirNotice(t *testing.T) {
	r, _ := newRepo(t)
	base := t.TempDir()
	os.MkdirAll(filepath.Join(base, "real"), 0o755)
	os.WriteFile(filepath.Join(base, "real", "f"), []byte("abc"), 0o644)
	link := filepath.Join(base, "link")
	if err := os.Symlink("real", link); err != nil {
		t.Fatal(err)
	}
	var cnt Counter
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{link}, Progress: &cnt})
	if err != nil || res.Warnings != 0 {
		t.Fatalf("backup of a symlink path: %v, %d warnings", err, res.Warnings)
	}
	ws := cnt.Warnings()
	if len(ws) != 1 || ws[0].Path != link || !strings.Contains(ws[0].Err.Error(), "symlink to a directory") {
		t.Errorf("notices %v, want one about %s", ws, link)
	}
}

// A regular file replaced by a symlink after the walk saw it: the link is
// not followed, so the snapshot never records the content of the file it
// leads to (outside the backup, perhaps not readable by the owner of the
// name) under that name and that owner.
func TestBackupReplacedBySymlinkNotFollowed(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	a, b, c := filepath.Join(src, "a"), filepath.Join(src, "b"), filepath.Join(src, "c")
	os.WriteFile(a, sample.Binary(rand.New(rand.NewPCG(8, 8)), 40<<20), 0o644)
	os.Link(a, b)
	os.WriteFile(c, []byte("third"), 0o644)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("not for the owner of b"), 0o600)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	testHookSegmentsPlanned = func(p string) {
		switch p {
		case a:
			os.Chmod(a, 0o640) // b's lstat sees a new change time: b is read itself
		case c:
			os.Rename(link, b) // b is now a symlink, after its lstat
		}
	}
	t.Cleanup(func() { testHookSegmentsPlanned = nil })
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}, Workers: 1})
	if !errors.Is(err, ErrPartial) || res == nil || res.Warnings != 1 {
		t.Errorf("backup of a file replaced by a symlink: %v, %+v; want it left out with a warning", err, res)
	}
	if res == nil {
		return
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dst, b)); err == nil && string(got) == "not for the owner of b" {
		t.Errorf("b was restored with the content of the file its replacing symlink leads to")
	}
}

// A regular file renamed over a name after the walk saw it is recorded
// with its own owner, mode and times, not with those of the file it
// replaced: its content is not restored with a laxer mode.
func TestBackupReplacedFileOwnMetadata(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	a, b, c := filepath.Join(src, "a"), filepath.Join(src, "b"), filepath.Join(src, "c")
	os.WriteFile(a, sample.Binary(rand.New(rand.NewPCG(9, 9)), 40<<20), 0o644)
	os.Link(a, b)
	os.WriteFile(c, []byte("third"), 0o644)
	private := filepath.Join(src, ".private")
	os.WriteFile(private, []byte("private"), 0o600)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(private, mtime, mtime)
	testHookSegmentsPlanned = func(p string) {
		switch p {
		case a:
			os.Chmod(a, 0o664) // b's lstat sees a new change time: b is read itself
		case c:
			os.Rename(private, b) // b is now another file, after its lstat
		}
	}
	t.Cleanup(func() { testHookSegmentsPlanned = nil })
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dst, b))
	if err != nil || string(got) != "private" {
		t.Fatalf("b restored as %q, %v; want the file renamed over it", got, err)
	}
	fi, err := os.Stat(filepath.Join(dst, b))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || !fi.ModTime().Equal(mtime) {
		t.Errorf("b restored with mode %v, mtime %v; want those of the file read, %v and %v", fi.Mode().Perm(), fi.ModTime(), fs.FileMode(0o600), mtime)
	}
}

// A large sparse file costs memory and work for its data, not for its
// size: the segments of its holes are not planned, queued or kept one by
// one (an 8 TiB hole was a quarter of a million of each).
func TestBackupHugeHoleBoundedMemory(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	p := filepath.Join(src, "thin.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	data := sample.Binary(rand.New(rand.NewPCG(10, 10)), 1<<20)
	const size = 8 << 40
	if _, err := f.WriteAt(data, size/2); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Skipf("no %d-byte sparse file here: %v", int64(size), err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}, Workers: 2})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.BytesTotal != size || res.Summary.BytesRead != int64(len(data)) {
		t.Errorf("summary %+v; want %d bytes in all, %d read", res.Summary, int64(size), len(data))
	}
	// Two workers' buffers and the repository's own, but nothing per
	// segment of the file.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("backup of an %d-byte sparse file holding 1 MiB allocated %d MiB", int64(size), alloc>>20)
	}
}

// A directory replaced by a symlink after the walk saw it is left out
// with a warning: neither listed through the link nor recorded with the
// entries, and the files, of the directory the link leads to.
func TestBackupDirReplacedBySymlinkNotListed(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	d := filepath.Join(src, "d")
	os.MkdirAll(d, 0o755)
	os.WriteFile(filepath.Join(d, "own"), []byte("own"), 0o644)
	other := filepath.Join(t.TempDir(), "other")
	os.MkdirAll(other, 0o700)
	os.WriteFile(filepath.Join(other, "secret"), []byte("not for the owner of d"), 0o600)
	testHookBeforeList = func(p string) {
		if p == d {
			os.Rename(d, d+".old")
			os.Symlink(other, d)
		}
	}
	t.Cleanup(func() { testHookBeforeList = nil })
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}, Workers: 1})
	if !errors.Is(err, ErrPartial) || res == nil || res.Warnings != 1 {
		t.Errorf("backup of a directory replaced by a symlink: %v, %+v; want it left out with a warning", err, res)
	}
	if res == nil {
		return
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dst, d, "secret")); err == nil {
		t.Errorf("d was recorded with the entries of the directory its replacing symlink leads to")
	}
}

// A directory's descriptor is closed once it is listed, before the walk
// goes below it: a deep tree listed inline (every lister busy) holds no
// descriptor per level (EMFILE, and directories recorded empty with only
// a warning).
func TestBackupDirDescriptorsNotHeldBelow(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	for i := 1; i < walkers; i++ { // they keep the other listers busy
		os.MkdirAll(filepath.Join(src, fmt.Sprintf("hold%d", i)), 0o755)
	}
	deep := filepath.Join(src, "z")
	for i := 0; i < 40; i++ {
		deep = filepath.Join(deep, "d")
	}
	os.MkdirAll(deep, 0o755)
	os.WriteFile(filepath.Join(deep, "f"), []byte("f"), 0o644)
	held := -1
	release := make(chan struct{})
	testHookBeforeList = func(p string) {
		if strings.HasPrefix(filepath.Base(p), "hold") {
			<-release
			return
		}
		if p != deep {
			return
		}
		defer close(release)
		held = 0
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, e := range fds {
			if t, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(t, src) {
				held++
			}
		}
	}
	t.Cleanup(func() { testHookBeforeList = nil })
	if _, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	if held != 0 {
		t.Errorf("%d descriptors of directories above %s still open when it is listed, want 0", held, deep)
	}
}

// A backup path that is a symlink to a directory, given with a path
// through it (/var/lib/libvirt -> /srv/libvirt and
// /var/lib/libvirt/images): the path through it is backed up, the link
// being the directory above it, instead of being dropped as covered by
// the link, which the snapshot stores without what it leads to.
func TestBackupSymlinkPathWithPathThrough(t *testing.T) {
	r, _ := newRepo(t)
	base := t.TempDir()
	os.MkdirAll(filepath.Join(base, "real", "images"), 0o755)
	os.WriteFile(filepath.Join(base, "real", "images", "f"), []byte("disk"), 0o644)
	link := filepath.Join(base, "link")
	if err := os.Symlink("real", link); err != nil {
		t.Fatal(err)
	}
	through := filepath.Join(link, "images")
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{link, through}})
	if err != nil || res.Warnings != 0 {
		t.Fatalf("backup: %v, %d warnings", err, res.Warnings)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dst, through, "f")); err != nil || string(got) != "disk" {
		t.Errorf("%s/f restored as %q, %v; want \"disk\" (snapshot paths %v, %d files)", through, got, err, res.Snapshot.Paths, res.Summary.Files)
	}
}

// A path below another given path that leads out of it through a symlink
// on the way (/srv and /srv/vm/images with /srv/vm -> /data/vm) is
// refused, naming where it leads: the backup of /srv stores the link, so
// the snapshot would hold neither the path nor what it leads to.
func TestBackupPathThroughSymlinkBelowPath(t *testing.T) {
	r, _ := newRepo(t)
	base := t.TempDir()
	top := filepath.Join(base, "top")
	os.MkdirAll(top, 0o755)
	os.MkdirAll(filepath.Join(base, "data", "images"), 0o755)
	os.WriteFile(filepath.Join(base, "data", "images", "f"), []byte("disk"), 0o644)
	if err := os.Symlink(filepath.Join(base, "data"), filepath.Join(top, "vm")); err != nil {
		t.Fatal(err)
	}
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{top, filepath.Join(top, "vm", "images")}})
	if err == nil {
		t.Fatalf("backup succeeded with paths %v and %d files; want it refused", res.Snapshot.Paths, res.Summary.Files)
	}
	if want, _ := filepath.EvalSymlinks(filepath.Join(base, "data", "images")); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s, where the path leads", err, want)
	}
	// Within the other path, its walk reaches the content: no refusal.
	os.MkdirAll(filepath.Join(top, "own", "x"), 0o755)
	os.Symlink("own", filepath.Join(top, "inside"))
	if _, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{top, filepath.Join(top, "inside", "x")}}); err != nil {
		t.Errorf("path through a symlink within the other path: %v", err)
	}
}

// Files of /proc and /sys show a size that is not their content's (0, or
// a page): they are backed up with the content a read of them gives,
// instead of as empty files or left out as files that shrank.
func TestBackupProcSysFiles(t *testing.T) {
	var paths []string
	want := map[string][]byte{}
	for _, p := range []string{"/proc/version", "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/osrelease", "/sys/class/net/lo/address"} {
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
			paths = append(paths, p)
			want[p] = b
		}
	}
	if len(paths) < 2 {
		t.Skip("no /proc and /sys files to read here")
	}
	r, _ := newRepo(t)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: paths})
	if err != nil {
		t.Fatalf("backup of %v: %v", paths, err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, p := range paths {
		got, err := os.ReadFile(filepath.Join(dst, p))
		if err != nil || !bytes.Equal(got, want[p]) {
			t.Errorf("%s restored as %q, %v; want %q", p, got, err, want[p])
		}
		total += int64(len(want[p]))
	}
	if res.Summary.BytesTotal != total || res.Summary.BytesRead != total {
		t.Errorf("summary %+v: want %d bytes in total and read", res.Summary, total)
	}
}

// A --stdin-name longer than a file name may be (255 bytes) is refused:
// the snapshot would hold a file that no restore can create.
func TestBackupStdinNameTooLong(t *testing.T) {
	r, _ := newRepo(t)
	name := strings.Repeat("n", 256)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Stdin: strings.NewReader("dump"), StdinName: name})
	if err == nil {
		_, rerr := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: t.TempDir()})
		t.Fatalf("backup with a %d-byte --stdin-name succeeded (restore: %v)", len(name), rerr)
	}
	if !strings.Contains(err.Error(), "255") {
		t.Errorf("error %q does not say how long a name may be", err)
	}
	if _, err := Backup(context.Background(), r, BackupOptions{Host: "h", Stdin: strings.NewReader("dump"), StdinName: name[:255]}); err != nil {
		t.Errorf("a 255-byte --stdin-name: %v", err)
	}
}

// A symlink given below another given path, leading out of it (/srv and
// /srv/current -> /data/v2, or a dangling link): a given symlink is
// stored as the link, which the backup of /srv stores too, so the path is
// covered and dropped, not refused as leading out of /srv.
func TestBackupSymlinkPathBelowPath(t *testing.T) {
	r, _ := newRepo(t)
	base := t.TempDir()
	top := filepath.Join(base, "top")
	os.MkdirAll(filepath.Join(base, "data"), 0o755)
	os.MkdirAll(top, 0o755)
	out, dangling := filepath.Join(top, "current"), filepath.Join(top, "dangling")
	if err := os.Symlink(filepath.Join(base, "data"), out); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "gone"), dangling); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{out, dangling} {
		res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{top, p}})
		if err != nil {
			t.Errorf("backup of %s and the symlink %s below it: %v", top, p, err)
			continue
		}
		if len(res.Snapshot.Paths) != 1 || res.Snapshot.Paths[0] != top {
			t.Errorf("snapshot paths %v, want [%s]", res.Snapshot.Paths, top)
		}
	}
}
