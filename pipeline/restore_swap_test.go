package pipeline

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
)

// countFDs is how many descriptors the process has open.
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc")
	}
	return len(ents)
}

// TestRestoreDeepTreeFewDescriptors: a deep tree with many small files at
// the bottom, restored with a small RLIMIT_NOFILE. Every level of the walk
// holds a descriptor; they count against the output files' budget
// (openLimit), so the files still find descriptors.
func TestRestoreDeepTreeFewDescriptors(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	deep := src
	for i := 0; i < 80; i++ {
		deep = filepath.Join(deep, "d")
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		os.WriteFile(filepath.Join(deep, fmt.Sprintf("f%03d", i)), []byte(fmt.Sprint(i)), 0o644)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	limitOpenFiles(t, 128)
	dst := filepath.Join(t.TempDir(), "dst")
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	if err != nil {
		fatalRestore(t, "restore of an 80-deep tree with RLIMIT_NOFILE 128", rr, err)
	}
}

// TestRestoreNoDescriptorLeak: full, --path, converted-disk and cancelled
// restores leave no descriptor open.
func TestRestoreNoDescriptorLeak(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := makeSource(t)
	os.MkdirAll(filepath.Join(src, "a/b/c"), 0o755)
	os.WriteFile(filepath.Join(src, "a/b/c/f"), []byte("f"), 0o644)
	os.Link(filepath.Join(src, "a/b/c/f"), filepath.Join(src, "a/g"))
	rng := rand.New(rand.NewPCG(3, 3))
	makeQcow2(t, filepath.Join(src, "a/vm.qcow2"), 4<<20, sample.Binary(rng, 1<<20), 1<<20)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	// Warm up (lazy opens of the repository's cache, etc.).
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: filepath.Join(t.TempDir(), "w")}); err != nil {
		t.Fatal(err)
	}
	before := countFDs(t)
	for i, o := range []RestoreOptions{
		{},
		{DiskFormat: "vhdx"},
		{DiskFormat: "raw"},
		{Include: []string{filepath.Join(src, "a/b")}},
	} {
		o.Target = filepath.Join(t.TempDir(), "dst")
		if _, err := Restore(ctx, r, res.Snapshot, o); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		// Again over the existing tree (directories kept, entries replaced).
		if _, err := Restore(ctx, r, res.Snapshot, o); err != nil {
			t.Fatalf("%d again: %v", i, err)
		}
	}
	for i := range 10 {
		cctx, cancel := context.WithTimeout(ctx, time.Duration(i*7)*time.Millisecond)
		Restore(cctx, r, res.Snapshot, RestoreOptions{Target: filepath.Join(t.TempDir(), "dst")})
		cancel()
	}
	if after := countFDs(t); after > before {
		t.Errorf("%d descriptors open after the restores, %d before", after, before)
	}
}

// state records what is below dir (lstat and xattrs), to show nothing
// changed there.
func state(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		unix.Lstat(p, &st)
		var xs []string
		if names, err := xattrList(p); err == nil && len(names) > 0 {
			for _, n := range strings.Split(strings.TrimRight(string(names), "\x00"), "\x00") {
				v, _ := xattrGet(p, n)
				xs = append(xs, n+"="+string(v))
			}
		}
		sort.Strings(xs)
		b := ""
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			c, _ := os.ReadFile(p)
			b = string(c)
		}
		m[p] = fmt.Sprintf("mode %o uid %d gid %d mtime %d.%d ino %d nlink %d size %d xattrs %v data %q",
			st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Mtim.Nsec, st.Ino, st.Nlink, st.Size, xs, b)
		return nil
	})
	return m
}

// TestRestoreSwapEveryKind: a kept directory swapped for a symlink to a
// directory outside the target that holds entries of the same names,
// while entries of every kind (file with xattrs, symlink, FIFO, device,
// VM disk in original and converted formats, hard link, nested dir) are
// restored into it, for a full restore and a --path restore. Nothing
// outside may change.
func TestRestoreSwapEveryKind(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod, chown)")
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	sub := filepath.Join(src, "home/sub")
	os.MkdirAll(filepath.Join(sub, "deeper"), 0o755)
	os.MkdirAll(filepath.Join(src, "home/other"), 0o755)
	os.WriteFile(filepath.Join(sub, "file"), []byte("snapshot file"), 0o644)
	if err := unix.Setxattr(filepath.Join(sub, "file"), "user.k", []byte("snap"), 0); err != nil {
		t.Skipf("no user xattrs: %v", err)
	}
	os.WriteFile(filepath.Join(sub, "deeper/x"), []byte("snapshot x"), 0o4755)
	os.Chmod(filepath.Join(sub, "deeper/x"), 0o755|fs.ModeSetuid)
	os.Symlink("file", filepath.Join(sub, "ln"))
	unix.Lsetxattr(filepath.Join(sub, "ln"), "trusted.k", []byte("snap"), 0)
	unix.Mkfifo(filepath.Join(sub, "fifo"), 0o640)
	unix.Mknod(filepath.Join(sub, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
	unix.Lsetxattr(filepath.Join(sub, "null"), "trusted.k", []byte("snap"), 0)
	rng := rand.New(rand.NewPCG(9, 9))
	makeQcow2(t, filepath.Join(sub, "vm.qcow2"), 4<<20, sample.Binary(rng, 1<<20), 1<<20)
	os.WriteFile(filepath.Join(src, "home/other/h1"), []byte("linked"), 0o644)
	os.Link(filepath.Join(src, "home/other/h1"), filepath.Join(sub, "h2"))
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		o    RestoreOptions
		swap string // directory whose walk triggers the swap (relative to root)
	}{
		{"full", RestoreOptions{}, "home/sub"},
		{"vhdx", RestoreOptions{DiskFormat: "vhdx"}, "home/sub"},
		{"raw", RestoreOptions{DiskFormat: "raw"}, "home/sub"},
		{"path", RestoreOptions{Include: []string{sub}}, "home/sub"},
		{"grandparent", RestoreOptions{}, "home/sub/deeper"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outside := filepath.Join(t.TempDir(), "outside")
			os.MkdirAll(filepath.Join(outside, "deeper"), 0o711)
			for _, n := range []string{"file", "h2", "vm.qcow2", "vm.vhdx", "vm.raw", "deeper/x", "fifo", "null", "ln"} {
				os.WriteFile(filepath.Join(outside, n), []byte("outside "+n), 0o600)
			}
			before := state(t, outside)
			dst := filepath.Join(t.TempDir(), "dst")
			root := filepath.Join(dst, src)
			os.MkdirAll(filepath.Join(root, "home/sub/deeper"), 0o755)
			swapped := false
			trigger := filepath.Join(root, tc.swap)
			testHookWalk = func(dir string) {
				if dir != trigger || swapped {
					return
				}
				swapped = true
				victim := filepath.Join(root, "home/sub")
				if err := os.Rename(victim, victim+".moved"); err != nil {
					t.Error(err)
				}
				if err := os.Symlink(outside, victim); err != nil {
					t.Error(err)
				}
			}
			defer func() { testHookWalk = nil }()
			o := tc.o
			o.Target = dst
			rr, err := Restore(ctx, r, res.Snapshot, o)
			if !swapped {
				t.Fatal("no swap")
			}
			t.Logf("restore: %v", err)
			if rr != nil {
				for _, f := range rr.Failed {
					t.Logf("failed %s: %v", f.Path, f.Err)
				}
			}
			after := state(t, outside)
			for p, b := range before {
				if after[p] != b {
					t.Errorf("outside %s changed:\n  before %s\n  after  %s", p, b, after[p])
				}
			}
			for p, a := range after {
				if _, ok := before[p]; !ok {
					t.Errorf("outside %s created: %s", p, a)
				}
			}
		})
	}
}

// TestRestoreRelativeTarget: relative targets ("dst", ".") with hard links
// whose first name is closed by the time the second comes (openBeneath
// from a relative top path).
func TestRestoreRelativeTarget(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "a/b"), 0o755)
	os.MkdirAll(filepath.Join(src, "z"), 0o755)
	for i := range 100 {
		p := filepath.Join(src, "a/b", fmt.Sprintf("f%03d", i))
		os.WriteFile(p, []byte(fmt.Sprint(i)), 0o644)
		os.Link(p, filepath.Join(src, "z", fmt.Sprintf("l%03d", i)))
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	limitOpenFiles(t, 64) // the first names are closed before z is walked
	for _, tgt := range []string{"dst", ".", "./x/../dst2/"} {
		wd := t.TempDir()
		t.Chdir(wd)
		rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: tgt})
		if err != nil {
			t.Fatalf("target %q: %v %v", tgt, err, rr)
		}
		root := filepath.Join(wd, tgt, src)
		for i := range 100 {
			a, _ := os.Stat(filepath.Join(root, "a/b", fmt.Sprintf("f%03d", i)))
			b, _ := os.Stat(filepath.Join(root, "z", fmt.Sprintf("l%03d", i)))
			if a == nil || b == nil || !os.SameFile(a, b) {
				t.Fatalf("target %q: f%03d and l%03d are not one file", tgt, i, i)
			}
		}
	}
}

// TestRestoreCancelAfterSwapLeavesNoImpostor: files created in a
// directory that is then moved away and replaced by a symlink, with the
// restore cancelled before their data is written: Ctrl-C's clean-up finds
// them where they are now (whereNow) and removes them, as "Ctrl-C removes
// the files not yet complete" says, instead of leaving them empty under
// their real names.
func TestRestoreCancelAfterSwapLeavesNoImpostor(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "a/sub"), 0o755)
	os.MkdirAll(filepath.Join(src, "b"), 0o755)
	os.WriteFile(filepath.Join(src, "a/sub/file"), []byte("snapshot content"), 0o644)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	root := filepath.Join(dst, src)
	outside := t.TempDir()
	testHookWalk = func(dir string) {
		if dir == filepath.Join(root, "b") { // a/sub/file created, its data still in the batch
			os.Rename(filepath.Join(root, "a/sub"), filepath.Join(root, "a/sub.moved"))
			os.Symlink(outside, filepath.Join(root, "a/sub"))
			cancel()
		}
	}
	defer func() { testHookWalk = nil }()
	_, err = Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	t.Logf("restore: %v", err)
	if b, err := os.ReadFile(filepath.Join(root, "a/sub.moved/file")); err == nil {
		t.Errorf("after Ctrl-C a/sub.moved/file is left with %q (want removed or complete)", b)
	}
}

// TestRestoreXattrsNonRegular: extended attributes of symlinks, FIFOs,
// devices and disk images come back through /proc/self/fd/N/name, into
// a fresh and into an existing target.
func TestRestoreXattrsNonRegular(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	os.Symlink("nowhere", filepath.Join(src, "d/ln"))
	unix.Mkfifo(filepath.Join(src, "d/fifo"), 0o640)
	unix.Mknod(filepath.Join(src, "d/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
	rng := rand.New(rand.NewPCG(2, 2))
	makeQcow2(t, filepath.Join(src, "d/vm.qcow2"), 4<<20, sample.Binary(rng, 1<<20), 1<<20)
	for _, n := range []string{"ln", "fifo", "null", "vm.qcow2"} {
		if err := unix.Lsetxattr(filepath.Join(src, "d", n), "trusted.k", []byte("v-"+n), 0); err != nil {
			t.Skipf("no trusted xattrs: %v", err)
		}
	}
	unix.Setxattr(filepath.Join(src, "d/vm.qcow2"), "user.k", []byte("u"), 0)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	for _, df := range []string{"", "", "vhdx"} { // second: over the first
		rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, DiskFormat: df})
		if err != nil {
			t.Fatalf("%q: %v %+v", df, err, rr.Failed)
		}
		disk := "vm.qcow2"
		if df == "vhdx" {
			disk = "vm.vhdx"
		}
		for _, n := range []string{"ln", "fifo", "null", disk} {
			want := "v-" + n
			if n == disk {
				want = "v-vm.qcow2"
			}
			v, err := xattrGet(filepath.Join(dst, src, "d", n), "trusted.k")
			if string(v) != want {
				t.Errorf("%q: %s trusted.k = %q, %v", df, n, v, err)
			}
		}
	}
}

// TestRestoreNoProcPathInMessages: xattr failures on symlinks and FIFOs
// (set through /proc/self/fd/N/name) name the entry, not /proc.
func TestRestoreNoProcPathInMessages(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	now := time.Now().Truncate(time.Second)
	user := map[string][]byte{"user.note": []byte("1"), "user.b": []byte("2")}
	sub := &repo.Tree{Nodes: []*repo.Node{
		{Name: "fifo", Type: repo.NodeFIFO, Mode: fs.ModeNamedPipe | 0o600, ModTime: now, Xattrs: user},
		{Name: "link", Type: repo.NodeSymlink, Mode: fs.ModeSymlink | 0o777, ModTime: now, LinkTarget: "x", Xattrs: user},
	}}
	sid, err := r.SaveTree(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	sn := snapshotOf(t, r, &repo.Tree{Nodes: []*repo.Node{{Name: "d", Type: repo.NodeDir, Mode: fs.ModeDir | 0o750, ModTime: now, Subtree: &sid}}}, "/d")
	var warned []string
	rr, _ := Restore(ctx, r, sn, RestoreOptions{Target: filepath.Join(t.TempDir(), "dst"), Progress: warnRec{&warned}})
	for _, f := range rr.Failed {
		t.Logf("%s: %v", f.Path, f.Err)
		if strings.Contains(f.Path+f.Err.Error(), "/proc/") {
			t.Errorf("message shows /proc: %s: %v", f.Path, f.Err)
		}
	}
}

type warnRec struct{ w *[]string }

func (warnRec) AddTotal(int64, int64)         {}
func (warnRec) AddDone(int64, int64)          {}
func (p warnRec) Warn(path string, err error) { *p.w = append(*p.w, path+": "+err.Error()) }

// TestRestoreNoProcXattrsFailClosed: without /proc (procFD false: a
// chroot or rescue system) the extended attributes of a symlink, FIFO,
// device or disk image are not set by path, which would follow a
// directory swapped for a symlink to the entry of that name outside the
// target; the restore reports them as not set.
func TestRestoreNoProcXattrsFailClosed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (trusted.*)")
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	sub := filepath.Join(src, "home/sub")
	os.MkdirAll(sub, 0o755)
	unix.Mkfifo(filepath.Join(sub, "fifo"), 0o640)
	if err := unix.Lsetxattr(filepath.Join(sub, "fifo"), "trusted.k", []byte("from snapshot"), 0); err != nil {
		t.Skipf("the file system refuses trusted.* extended attributes: %v", err)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "fifo"), []byte("outside"), 0o600)
	dst := filepath.Join(t.TempDir(), "dst")
	dsub := filepath.Join(dst, sub)
	os.MkdirAll(dsub, 0o755)
	testHookWalk = func(dir string) {
		if dir == dsub {
			os.Rename(dsub, dsub+".moved")
			os.Symlink(outside, dsub)
		}
	}
	old := procFD
	procFD = false
	defer func() { testHookWalk, procFD = nil, old }()
	rr, _ := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	if v, err := xattrGet(filepath.Join(outside, "fifo"), "trusted.k"); err == nil {
		t.Errorf("outside/fifo got trusted.k = %q through the swapped directory", v)
	}
	reported := false
	for _, f := range rr.Failed {
		reported = reported || f.Path == filepath.Join(dsub, "fifo") && strings.Contains(f.Err.Error(), "/proc is not mounted")
	}
	if !reported {
		t.Errorf("failures %v: want the FIFO's attributes reported as not set for want of /proc", rr.Failed)
	}
}
