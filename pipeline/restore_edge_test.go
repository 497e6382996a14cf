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
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/vmdisk"
)

// TestRestoreUsesOtherCopy: two writers that did not see each other's
// index store the same chunks twice (lock-free writers, invariant 3). When
// the pack holding the first copy is lost, the restore must read the other
// copy, as LoadBlob does, instead of reporting the files as lost.
func TestRestoreUsesOtherCopy(t *testing.T) {
	ctx := context.Background()
	r, be := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	rng := rand.New(rand.NewPCG(9, 9))
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a"), sample.Binary(rng, 300<<10), 0o644)
	// A second writer opened before the first backup (a concurrent backup
	// of the same data from another host) stores the same chunks again.
	r2, err := repo.Open(ctx, be, repo.Options{Password: []byte("pw"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	snaps := []*repo.Snapshot{res.Snapshot}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	r.EachBlob(func(p repo.PackInfo, e repo.BlobEntry) error {
		if e.Type == repo.DataBlob {
			plain, err := r.LoadBlob(ctx, repo.DataBlob, e.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, stored, err := r2.SaveBlob(ctx, repo.DataBlob, plain, id.ID{}); err != nil || !stored {
				t.Fatalf("second writer: stored %v, %v", stored, err)
			}
		}
		return nil
	})
	if err := r2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil { // both copies indexed now
		t.Fatal(err)
	}
	// Lose (beyond parity) the pack of the first copy of a data blob;
	// every blob keeps another copy.
	lose := map[id.ID]repo.PackInfo{}
	var dataIDs []id.ID
	r.EachBlob(func(p repo.PackInfo, e repo.BlobEntry) error {
		if e.Type == repo.DataBlob {
			dataIDs = append(dataIDs, e.ID)
		}
		return nil
	})
	if len(dataIDs) == 0 {
		t.Fatal("no data blobs")
	}
	first := r.Lookup(dataIDs[0])[0].Pack
	lose[first.ID] = first
	for _, x := range dataIDs {
		ok := false
		for _, l := range r.Lookup(x) {
			if _, gone := lose[l.Pack.ID]; !gone {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("blob %s has no copy outside the packs to lose: the two writers were to store each chunk twice", x.Short())
		}
	}
	for _, p := range lose {
		for i := 0; i < 3; i++ {
			be.Remove(ctx, p.ShardHandle(i))
		}
	}
	// LoadBlob finds the other copy...
	for _, x := range dataIDs {
		if _, err := r.LoadBlob(ctx, repo.DataBlob, x, nil); err != nil {
			t.Fatalf("LoadBlob %s: %v", x.Short(), err)
		}
	}
	// ...the restore should too.
	dst := filepath.Join(t.TempDir(), "dst")
	rr, err := Restore(ctx, r, snaps[0], RestoreOptions{Target: dst})
	if err != nil {
		t.Fatalf("restore with an intact second copy of every chunk: %v %+v", err, rr.Failed)
	}
	compare(t, src, filepath.Join(dst, src))
}

// makeQcow2 writes a qcow2 image of size bytes holding data at off.
func makeQcow2(t *testing.T, p string, size int64, data []byte, off int64) {
	t.Helper()
	buf := make([]byte, size)
	copy(buf[off:], data)
	if _, err := vmdisk.Write(context.Background(), p, vmdisk.Source{Size: size, R: bytes.NewReader(buf), Data: []vmdisk.Range{{Off: off, Len: int64(len(data))}}}, vmdisk.WriteOptions{Format: vmdisk.QCOW2}); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreFailedDiskNotCounted: a VM disk image whose data is lost is
// listed as failed and must not also be counted as restored (the README's
// summary line "N files" and --json "files").
func TestRestoreFailedDiskNotCounted(t *testing.T) {
	ctx := context.Background()
	r, be := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(7, 7))
	makeQcow2(t, filepath.Join(src, "vm.qcow2"), 8<<20, sample.Binary(rng, 1<<20), 1<<20)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	r.LoadIndex(ctx)
	r.EachBlob(func(p repo.PackInfo, e repo.BlobEntry) error {
		if e.Type == repo.DataBlob {
			for i := 0; i < 3; i++ {
				be.Remove(ctx, p.ShardHandle(i))
			}
		}
		return nil
	})
	for _, df := range []string{"", "vhdx", "raw"} {
		rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: filepath.Join(t.TempDir(), "dst"), DiskFormat: df})
		if !errors.Is(err, ErrRestoreIncomplete) || rr == nil {
			t.Fatalf("format %q: %v", df, err)
		}
		if rr.Files+int64(len(rr.Failed)) != res.Summary.Files {
			t.Errorf("--disk-format %q: restored %d files and %d failed (%v); the snapshot has %d: a failed disk counted as restored", df, rr.Files, len(rr.Failed), rr.Failed, res.Summary.Files)
		}
	}
}

// TestRestoreManySmallFilesFewDescriptors: a tree of many tiny files is
// restored on a system whose descriptor limit is the kernel default hard
// limit (4096). Files must not fail with EMFILE because thousands are kept
// open while their extents wait in a batch.
func TestRestoreManySmallFilesFewDescriptors(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	for d := range 20 {
		os.MkdirAll(filepath.Join(src, fmt.Sprintf("d%02d", d)), 0o755)
	}
	for i := range 12000 {
		os.WriteFile(filepath.Join(src, fmt.Sprintf("d%02d", i%20), fmt.Sprintf("f%05d", i)), []byte(fmt.Sprintf("file %d", i)), 0o644)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	limitOpenFiles(t, 4096)
	dst := filepath.Join(t.TempDir(), "dst")
	start := time.Now()
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	t.Logf("restore took %v", time.Since(start))
	if err != nil {
		fatalRestore(t, "restore of 12000 tiny files with RLIMIT_NOFILE 4096", rr, err)
	}
}

// TestRestoreCancelled: cancelling a restore at any moment returns
// the context's error, leaves no goroutine behind and never panics.
func TestRestoreCancelled(t *testing.T) {
	r, _ := newRepo(t)
	src := makeSource(t)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(80))*time.Millisecond)
		rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: filepath.Join(t.TempDir(), "dst")})
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("run %d: %v", i, err)
		}
		if err != nil && rr != nil {
			t.Errorf("run %d: cancelled restore returned a result claiming %d files", i, rr.Files)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := runtime.NumGoroutine(); n > base+2 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines after cancelled restores, %d before:\n%s", n, base, strings.Split(string(buf), "\n\n")[0])
	}
}

// aclXattr encodes a POSIX ACL (system.posix_acl_*) with the usual entries
// plus one named user entry.
func aclXattr(uid uint32, perm uint16) []byte {
	var b []byte
	le32 := func(v uint32) { b = append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24)) }
	le16 := func(v uint16) { b = append(b, byte(v), byte(v>>8)) }
	le32(2)
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{1, 7, ^uint32(0)}, {2, perm, uid}, {4, 5, ^uint32(0)}, {0x10, 7, ^uint32(0)}, {0x20, 5, ^uint32(0)}} {
		le16(e.tag)
		le16(e.perm)
		le32(e.id)
	}
	return b
}

// TestRestoreTargetDefaultACLNotInherited: a target directory with a default
// ACL (a shared /restore that grants a helpdesk account access) must not
// add ACL entries to restored files and directories that had none: the
// restored /etc/shadow (0640 root:shadow) would be readable by that user.
func TestRestoreTargetDefaultACLNotInherited(t *testing.T) {
	ctx := context.Background()
	r, src, _ := backupFiles(t, map[string]string{"etc/shadow": "root:$6$secret", "srv/shared": "with an ACL"})
	os.Chmod(filepath.Join(src, "etc/shadow"), 0o640)
	// Recorded ACLs still come back as they were.
	if err := syscall.Setxattr(filepath.Join(src, "srv/shared"), "system.posix_acl_access", aclXattr(1000, 6), 0); err != nil {
		t.Skipf("no POSIX ACLs here: %v", err)
	}
	syscall.Setxattr(filepath.Join(src, "srv"), "system.posix_acl_default", aclXattr(1001, 5), 0)
	want := map[string]map[string][]byte{}
	for _, p := range []string{"srv", "srv/shared"} {
		want[p], _ = readXattrs(filepath.Join(src, p))
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "restore")
	os.Mkdir(dst, 0o755)
	if err := syscall.Setxattr(dst, "system.posix_acl_default", aclXattr(4242, 7), 0); err != nil {
		t.Skipf("no POSIX ACLs here: %v", err)
	}
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dst, src, "etc"), filepath.Join(dst, src, "etc", "shadow")} {
		x, _ := readXattrs(p)
		if len(x) != 0 {
			t.Errorf("%s restored with attributes it did not have: %v", p, names(x))
		}
	}
	for p, w := range want {
		x, _ := readXattrs(filepath.Join(dst, src, p))
		if len(x) != len(w) {
			t.Errorf("%s: attributes %v, want %v", p, names(x), names(w))
		}
		for k, v := range w {
			if !bytes.Equal(x[k], v) {
				t.Errorf("%s: %s = %x, want %x", p, k, x[k], v)
			}
		}
	}
}

// TestRestoreConvertedDiskNameCollision: --disk-format raw renames dc01.vhdx
// to dc01.raw, or dc01.vhdx.raw when dc01.raw is taken; that fallback
// name must not be one the snapshot also holds (the other file then
// replaced the restored disk, or failed with "file exists").
func TestRestoreConvertedDiskNameCollision(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(8, 8))
	disk := sample.Binary(rng, 1<<20)
	buf := make([]byte, 4<<20)
	copy(buf[1<<20:], disk)
	if _, err := vmdisk.Write(ctx, filepath.Join(src, "dc01.vhdx"), vmdisk.Source{Size: 4 << 20, R: bytes.NewReader(buf), Data: []vmdisk.Range{{Off: 1 << 20, Len: 1 << 20}}}, vmdisk.WriteOptions{Format: vmdisk.VHDX}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "dc01.raw"), []byte("an older raw copy"), 0o644)
	os.WriteFile(filepath.Join(src, "dc01.vhdx.raw"), []byte("notes"), 0o644)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	for _, existing := range []bool{false, true} {
		dst := filepath.Join(t.TempDir(), "dst")
		if existing { // restoring again over an earlier restore
			if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
				t.Fatal(err)
			}
		}
		rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, DiskFormat: "raw"})
		if err != nil {
			t.Errorf("existing target %v: %v %+v", existing, err, rr.Failed)
		}
		root := filepath.Join(dst, src)
		ents, _ := os.ReadDir(root)
		found := false
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(root, e.Name()))
			if len(b) == 4<<20 && bytes.Equal(b, buf) {
				found = true
			}
		}
		for _, f := range []string{"dc01.raw", "dc01.vhdx.raw"} {
			b, _ := os.ReadFile(filepath.Join(root, f))
			if want, _ := os.ReadFile(filepath.Join(src, f)); !bytes.Equal(b, want) {
				t.Errorf("existing target %v: %s holds %d bytes, not its snapshot content", existing, f, len(b))
			}
		}
		if !found {
			t.Errorf("existing target %v: the converted disk is nowhere in %s (%d entries)", existing, root, len(ents))
		}
	}
}

// TestRestoreUnreadableTreeOnPath: --path /d/x where the tree of /d cannot
// be read reports /d as unreadable; it must not also tell the admin that
// /d/x does not exist in the snapshot (and to retype the path).
func TestRestoreUnreadableTreeOnPath(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	lost := id.Hash([]byte("a tree blob in no index"))
	tr := &repo.Tree{Nodes: []*repo.Node{
		{Name: "d", Type: repo.NodeDir, Mode: 0o755 | os.ModeDir, ModTime: time.Now(), Subtree: &lost},
	}}
	sn := snapshotOf(t, r, tr, "/d")
	rr, err := Restore(ctx, r, sn, RestoreOptions{Target: filepath.Join(t.TempDir(), "dst"), Include: []string{"/d/x"}})
	if !errors.Is(err, ErrRestoreIncomplete) || rr == nil {
		t.Fatalf("%v", err)
	}
	for _, f := range rr.Failed {
		t.Logf("FAILED %s: %v", f.Path, f.Err)
		if strings.Contains(f.Err.Error(), "no such path") {
			t.Errorf("%s reported as missing from the snapshot, though its directory's tree is what cannot be read", f.Path)
		}
	}
}

// TestRestoreHardLinkFirstNameInTheWay: the first name of a hard-linked file
// cannot be restored (a directory with entries is in its place); the other
// names are restored, as one file, and counted once each.
func TestRestoreHardLinkFirstNameInTheWay(t *testing.T) {
	ctx := context.Background()
	r, src, _ := backupFiles(t, map[string]string{"a": "three names"})
	os.Link(filepath.Join(src, "a"), filepath.Join(src, "b"))
	os.Link(filepath.Join(src, "a"), filepath.Join(src, "c"))
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}, NoParent: true})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	root := filepath.Join(dst, src)
	os.MkdirAll(filepath.Join(root, "a", "keep"), 0o755)
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	if !errors.Is(err, ErrRestoreIncomplete) || rr == nil || len(rr.Failed) != 1 {
		t.Fatalf("%v %+v", err, rr)
	}
	if rr.Files != 2 {
		t.Errorf("restored %d files, want 2", rr.Files)
	}
	ib, nb := inode(t, filepath.Join(root, "b"))
	ic, _ := inode(t, filepath.Join(root, "c"))
	if ib != ic || nb != 2 {
		t.Errorf("b and c: inodes %d %d, %d links; want one file with 2 names", ib, ic, nb)
	}
	for _, n := range []string{"b", "c"} {
		if got, _ := os.ReadFile(filepath.Join(root, n)); string(got) != "three names" {
			t.Errorf("%s = %q", n, got)
		}
	}
}

// TestRestoreCancelledLeavesNoImpostors: after a cancelled restore
// the target must not hold files under their real names with only part of
// their content: an admin cannot tell them from restored files, and
// nothing lists them (the restore returns no result).
func TestRestoreCancelledLeavesNoImpostors(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range 40 {
		os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), sample.Binary(rng, 2<<20), 0o644)
	}
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{30, 60, 120, 240} {
		ctx, cancel := context.WithTimeout(context.Background(), d*time.Millisecond)
		dst := filepath.Join(t.TempDir(), "dst")
		_, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, Workers: 1})
		cancel()
		if err == nil {
			continue
		}
		bad, present := 0, 0
		for i := range 40 {
			name := fmt.Sprintf("f%02d", i)
			got, err := os.ReadFile(filepath.Join(dst, src, name))
			if err != nil {
				continue // not there: fine
			}
			present++
			want, _ := os.ReadFile(filepath.Join(src, name))
			if !bytes.Equal(got, want) {
				bad++
			}
		}
		t.Logf("cancelled after %v: %v; %d files present, %d with other content", d*time.Millisecond, err, present, bad)
		if bad > 0 {
			t.Errorf("cancelled after %v: %d files are left under their names without their content", d*time.Millisecond, bad)
		}
	}
}

// TestRestoreMetaFailureNotCounted: an entry whose metadata cannot be set
// is listed as failed and, like a regular file in that case, not counted
// as restored. Linux refuses user.* attributes on symlinks and FIFOs.
func TestRestoreMetaFailureNotCounted(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	now := time.Now().Truncate(time.Second)
	user := map[string][]byte{"user.note": []byte("1")}
	sub := &repo.Tree{Nodes: []*repo.Node{
		{Name: "empty", Type: repo.NodeFile, Mode: 0o640, ModTime: now},
		{Name: "fifo", Type: repo.NodeFIFO, Mode: fs.ModeNamedPipe | 0o600, ModTime: now, Xattrs: user},
		{Name: "link", Type: repo.NodeSymlink, Mode: fs.ModeSymlink | 0o777, ModTime: now, LinkTarget: "empty", Xattrs: user},
	}}
	sid, err := r.SaveTree(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	sn := snapshotOf(t, r, &repo.Tree{Nodes: []*repo.Node{{Name: "d", Type: repo.NodeDir, Mode: fs.ModeDir | 0o750, ModTime: now, Subtree: &sid}}}, "/d")
	dst := filepath.Join(t.TempDir(), "dst")
	rr, err := Restore(ctx, r, sn, RestoreOptions{Target: dst})
	if !errors.Is(err, ErrRestoreIncomplete) || rr == nil {
		t.Fatalf("restore: %v, want incomplete", err)
	}
	var failed []string
	for _, f := range rr.Failed {
		failed = append(failed, filepath.Base(f.Path))
	}
	slices.Sort(failed)
	if !slices.Equal(failed, []string{"fifo", "link"}) {
		t.Fatalf("failed %v (%v), want fifo and link", failed, rr.Failed)
	}
	if rr.Files != 1 {
		t.Errorf("%d files counted as restored, want 1 (only the regular file)", rr.Files)
	}
}

// TestRestoreProgressCountsEveryFile: the progress display's done count
// reaches the snapshot's file count, which includes symlinks and FIFOs.
func TestRestoreProgressCountsEveryFile(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644)
	os.Symlink("f", filepath.Join(src, "link"))
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	cnt := &Counter{}
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: filepath.Join(t.TempDir(), "dst"), Progress: cnt})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Files != 3 || cnt.DoneFiles.Load() != res.Summary.Files || res.Summary.Files != 3 {
		t.Errorf("restored %d files, progress done %d, snapshot counts %d; want 3 each", rr.Files, cnt.DoneFiles.Load(), res.Summary.Files)
	}
}
