package pipeline

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/internal/id"
)

// TestRestoreFlattenLayers: with Flatten, an overlay restored without its
// parent is a self-contained disk with the overlay's content; without it,
// the overlay stays a layer and the restore notes the missing parent.
func TestRestoreFlattenLayers(t *testing.T) {
	needQemu(t)
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "vms")
	os.MkdirAll(src, 0o755)
	base, top := filepath.Join(src, "base.qcow2"), filepath.Join(src, "top.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", base)
	run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 2M 4M", top)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	for _, flatten := range []bool{true, false} {
		dst := filepath.Join(t.TempDir(), "dst")
		rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, Include: []string{top}, Flatten: flatten})
		if err != nil {
			t.Fatalf("flatten %v: %v", flatten, err)
		}
		got := filepath.Join(dst, top)
		info := run("qemu-img", "info", got)
		if flatten {
			if strings.Contains(info, "backing file") || len(rr.Notices) != 0 {
				t.Errorf("flattened restore: notices %v, image:\n%s\nwant a self-contained image and no notice", rr.Notices, info)
			}
			run("qemu-img", "compare", "-q", top, got)
			continue
		}
		if !strings.Contains(info, "backing file: base.qcow2") || len(rr.Notices) != 1 || !strings.Contains(rr.Notices[0].Err.Error(), "which is not there") {
			t.Errorf("layer restore: notices %v, image:\n%s\nwant the layer and one notice about base.qcow2", rr.Notices, info)
		}
	}
}

// TestBackupLayerWithoutParentIsPartial: an overlay whose parent is
// outside the backup paths and cannot be read is stored as a layer alone,
// which cannot restore to a usable disk: the backup says so and is
// partial.
func TestBackupLayerWithoutParentIsPartial(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not installed: run 'make deps' (package qemu-utils)")
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	src := filepath.Join(dir, "vms")
	os.MkdirAll(src, 0o755)
	top := filepath.Join(src, "top.qcow2")
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", base, "16M"},
		{"create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top},
	} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	// Big enough to be read as a disk image (minDiskImage).
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 4M", top).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	os.Remove(base)
	cnt := &Counter{}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}, Progress: cnt})
	if !errors.Is(err, ErrPartial) || res == nil || res.Warnings != 1 {
		t.Fatalf("backup of an overlay without its parent: %v, %+v; want partial with one warning", err, res)
	}
	if w := cnt.Warnings(); len(w) != 1 || !strings.Contains(w[0].Err.Error(), "not in the backup paths") || !strings.Contains(w[0].Err.Error(), base) {
		t.Errorf("warnings %v, want one naming the missing parent %s", w, base)
	}
}

// TestGuestWrittenHeaderOnRawDisk: a guest writes every byte of its raw
// disk, so it can put a qcow2 header there whose backing file names any
// file of the host. A disk the VM inventory gives as raw (RawDisks), or
// one named *.raw, is backed up as its bytes: the restore gives the file
// back as it was, and the host file never reaches the snapshot.
func TestGuestWrittenHeaderOnRawDisk(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not installed: run 'make deps' (package qemu-utils)")
	}
	ctx := context.Background()
	dir := t.TempDir()
	secret := filepath.Join(dir, "host-secret")
	if err := os.WriteFile(secret, bytes.Repeat([]byte("HOST SECRET "), 1<<17), 0o600); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "vms")
	os.MkdirAll(src, 0o755)
	mk := func(name string) string {
		p := filepath.Join(src, name)
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", p, "2M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v\n%s", err, out)
		}
		if err := os.Truncate(p, 2<<20); err != nil { // a raw disk's size, and big enough to be probed
			t.Fatal(err)
		}
		return p
	}
	listed, named := mk("guest.img"), mk("guest.raw")
	link := filepath.Join(dir, "vms-link") // the backup reaches the disk through a symlink
	if err := os.Symlink(src, link); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		raw  map[string]bool
		path string
	}{
		{"inventory", map[string]bool{listed: true}, listed},
		{"name", nil, named},
		{"inventory, backed up through a symlink", map[string]bool{listed: true}, filepath.Join(link, "guest.img")},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, _ := newRepo(t)
			cnt := &Counter{}
			res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{c.path}, Progress: cnt, RawDisks: c.raw})
			if err != nil {
				t.Fatal(err)
			}
			if w := cnt.Warnings(); len(w) != 1 || !strings.Contains(w[0].Err.Error(), "is a raw disk") {
				t.Errorf("notices %v, want one saying the qcow2 header of a raw disk was not followed", w)
			}
			dst := filepath.Join(t.TempDir(), "dst")
			if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(c.path)
			got, err := os.ReadFile(filepath.Join(dst, c.path))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("restored raw disk differs from the source (%d bytes, want %d; %v)", len(got), len(want), err)
			}
			if bytes.Contains(got, []byte("HOST SECRET")) {
				t.Errorf("the host file named by the guest's header is in the restored disk")
			}
		})
	}
}

// TestBackupFlattensSmallOverlay: a fresh qcow2 overlay is a few hundred
// KiB, below the size from which every file is probed for a disk image
// (with clusters under 64 KiB, a few KiB). Its parent outside the backup
// paths must still be merged into the snapshot: stored as a plain file,
// the overlay restores to a layer over the live parent (or over nothing),
// and the guest's disk is not in the backup at all.
func TestBackupFlattensSmallOverlay(t *testing.T) {
	needQemu(t)
	for _, c := range []struct{ cluster, name string }{
		{"64k", "top.qcow2"}, {"32k", "top.qcow2"}, {"4k", "top.img"}, {"512", "top.QCOW2"},
	} {
		t.Run(c.cluster, func(t *testing.T) {
			ctx := context.Background()
			r, _ := newRepo(t)
			dir := t.TempDir()
			base := filepath.Join(dir, "base.qcow2")
			src := filepath.Join(dir, "vms")
			os.MkdirAll(src, 0o755)
			top := filepath.Join(src, c.name)
			runCmds(t, [][]string{
				{"qemu-img", "create", "-q", "-f", "qcow2", base, "16M"},
				{"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", base},
				{"qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=" + c.cluster, "-b", base, "-F", "qcow2", top},
			})
			for _, write := range []bool{false, true} {
				if write {
					if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 64k", top).CombinedOutput(); err != nil {
						t.Fatalf("qemu-io: %v\n%s", err, out)
					}
				}
				st, err := os.Stat(top)
				if err != nil || st.Size() >= minDiskImage {
					t.Fatalf("overlay %v (%v): want one below %d bytes", st, err, minDiskImage)
				}
				res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
				if err != nil {
					t.Fatal(err)
				}
				dst := filepath.Join(t.TempDir(), "dst")
				if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
					t.Fatal(err)
				}
				got := filepath.Join(dst, top)
				out, err := exec.Command("qemu-img", "info", got).CombinedOutput()
				if err != nil || strings.Contains(string(out), "backing file") {
					t.Fatalf("restored overlay of %d bytes, guest wrote: %v (%v):\n%s\nwant a self-contained image", st.Size(), write, err, out)
				}
				if out, err := exec.Command("qemu-img", "compare", "-q", top, got).CombinedOutput(); err != nil {
					t.Fatalf("restored disk differs from the overlay's: %v\n%s", err, out)
				}
			}
		})
	}
}

// TestFlattenOpensParentsWithTheOwnersRights: a user's overlay whose
// backing file is a file the user may not read (root's, in a directory
// closed to others) is not flattened with the backup's root rights, which
// would hand that file's bytes to the user in the restored image: it is
// backed up as a layer alone, with a warning. So is root's overlay that
// a group may rewrite. A parent all the image's writers may read is
// flattened as before.
func TestFlattenOpensParentsWithTheOwnersRights(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the overlay belongs to another user than the backup's")
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatalf("qemu-img not installed: run 'make deps' (package qemu-utils)")
	}
	const nobody = 65534
	ctx := context.Background()
	r, _ := newRepo(t)
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // the test's own directories are open to nobody
	}
	secretDir := filepath.Join(dir, "root-only")
	os.Mkdir(secretDir, 0o700)
	secret := filepath.Join(secretDir, "secret.raw")
	marker := []byte("ROOT-ONLY-SECRET-MARKER")
	blob := make([]byte, 1<<20)
	copy(blob[4096:], marker)
	if err := os.WriteFile(secret, blob, 0o644); err != nil { // readable, but its directory is closed
		t.Fatal(err)
	}
	public := filepath.Join(dir, "public.raw")
	pub := make([]byte, 1<<20)
	copy(pub[8192:], "PUBLIC-PARENT-MARKER")
	if err := os.WriteFile(public, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "home")
	os.MkdirAll(src, 0o755)
	evil, good := filepath.Join(src, "evil.qcow2"), filepath.Join(src, "good.qcow2")
	groupEvil, rootOwn := filepath.Join(src, "group-evil.qcow2"), filepath.Join(src, "root.qcow2")
	for _, c := range []struct {
		img, parent string
		uid, gid    int
		mode        os.FileMode
	}{
		{evil, secret, nobody, nobody, 0o644},
		{good, public, nobody, nobody, 0o644},
		{groupEvil, secret, 0, nobody, 0o660}, // root's, but its group may rewrite the header
		{rootOwn, secret, 0, 0, 0o600},        // root's alone: flattened as before
	} {
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", c.parent, "-F", "raw", c.img, "1M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create %s: %v\n%s", c.img, err, out)
		}
		if err := os.Chown(c.img, c.uid, c.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(c.img, c.mode); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if !errors.Is(err, ErrPartial) || res == nil || res.Warnings != 2 {
		t.Fatalf("backup: %v (result %+v), want a warning for each overlay over a parent that one who may rewrite it may not read", err, res)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{evil, groupEvil} {
		got, err := os.ReadFile(filepath.Join(dst, img))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(got, marker) {
			t.Errorf("the restored %s holds the root-only parent's bytes", filepath.Base(img))
		}
		out, err := exec.Command("qemu-img", "info", filepath.Join(dst, img)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "backing file") {
			t.Errorf("%s, over a parent not all its writers may read, was not kept as a layer (%v):\n%s", filepath.Base(img), err, out)
		}
	}
	for _, img := range []string{good, rootOwn} {
		out, err := exec.Command("qemu-img", "info", filepath.Join(dst, img)).CombinedOutput()
		if err != nil || strings.Contains(string(out), "backing file") {
			t.Errorf("%s, over a parent its writers may read, was not flattened (%v):\n%s", filepath.Base(img), err, out)
		}
		if out, err := exec.Command("qemu-img", "compare", "-q", img, filepath.Join(dst, img)).CombinedOutput(); err != nil {
			t.Errorf("restored %s differs from the overlay's disk: %v\n%s", filepath.Base(img), err, out)
		}
	}
}

// TestSnapshotDiskFollowsASymlinkedParent: an overlay whose backing file
// is a symlink in the snapshot (base.qcow2 -> images/base-v1.qcow2, as
// qemu follows it) reads its parent's data through the link, in the
// mount's raw view and in a restore to raw, instead of zeros wherever the
// overlay holds none. A parent that is not an image file in the snapshot
// (a link to outside it) is an error, not zeros.
func TestSnapshotDiskFollowsASymlinkedParent(t *testing.T) {
	needQemu(t)
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "vms")
	if err := os.MkdirAll(filepath.Join(src, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	top, want := filepath.Join(src, "top.qcow2"), filepath.Join(t.TempDir(), "want.raw")
	runCmds(t, [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(src, "images", "base-v1.qcow2"), "16M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 5M", filepath.Join(src, "images", "base-v1.qcow2")},
		{"ln", "-s", "images/base-v1.qcow2", filepath.Join(src, "base.qcow2")},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 3M 4M", top},
		{"qemu-img", "convert", "-O", "raw", top, want},
	})
	wantb, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	read := func(root id.ID) ([]byte, error) {
		n, err := FindNode(ctx, r, root, top)
		if err != nil {
			t.Fatal(err)
		}
		sd, err := OpenSnapshotDisk(ctx, r, root, top, n, nil)
		if err != nil {
			return nil, err
		}
		got := make([]byte, sd.Size())
		if _, err := sd.ReadAtContext(ctx, got, 0); err != nil && err != io.EOF {
			return nil, err
		}
		return got, nil
	}
	if got, err := read(res.Snapshot.Tree); err != nil || !bytes.Equal(got, wantb) {
		t.Errorf("raw view of an overlay over a symlinked parent: %v; equal to qemu-img's: %v", err, err == nil && bytes.Equal(got, wantb))
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, DiskFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dst, src, "top.raw")); err != nil || !bytes.Equal(got, wantb) {
		t.Errorf("overlay over a symlinked parent restored as raw: %v; equal to qemu-img's: %v", err, err == nil && bytes.Equal(got, wantb))
	}

	// The link now leads out of the snapshot.
	if err := os.Remove(filepath.Join(src, "base.qcow2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/base.qcow2", filepath.Join(src, "base.qcow2")); err != nil {
		t.Fatal(err)
	}
	res, err = Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil && !errors.Is(err, ErrPartial) {
		t.Fatal(err)
	}
	if got, err := read(res.Snapshot.Tree); err == nil {
		zeros := bytes.Count(got, []byte{0}) == len(got)-4<<20
		t.Errorf("raw view of an overlay whose parent links out of the snapshot: no error (reads zeros for the parent's data: %v), want an error", zeros)
	}
}

// TestSnapshotDiskRefusesAParentHeldAsAPlainFile: a parent image backup
// could not read (a qcow2 image with an external data file) is in the
// snapshot as its container file. An overlay over it, stored as a layer,
// cannot be flattened from the snapshot: the raw view and a restore to
// raw fail for it instead of serving the parent's headers and tables as
// the guest's data.
func TestSnapshotDiskRefusesAParentHeldAsAPlainFile(t *testing.T) {
	needQemu(t)
	for _, backingFormat := range []string{"qcow2", ""} {
		t.Run("backing format "+backingFormat, func(t *testing.T) {
			ctx := context.Background()
			r, _ := newRepo(t)
			src := filepath.Join(t.TempDir(), "vms")
			if err := os.MkdirAll(src, 0o755); err != nil {
				t.Fatal(err)
			}
			base, top := filepath.Join(src, "base.qcow2"), filepath.Join(src, "top.qcow2")
			runCmds(t, [][]string{
				{"qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=base.data,data_file_raw=on", base, "16M"},
				{"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 5M", base},
				{"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top},
				{"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 3M 4M", top},
			})
			if backingFormat == "" {
				// An older image that does not name its parent's format
				// (qemu-img now requires one): its backing format
				// extension becomes one nobody knows.
				b, err := os.ReadFile(top)
				if err != nil {
					t.Fatal(err)
				}
				i := bytes.Index(b[:4096], []byte{0xe2, 0x79, 0x2a, 0xca})
				if i < 0 {
					t.Fatal("no backing format extension in the overlay's header")
				}
				copy(b[i:], []byte{0x0d, 0x0e, 0x0a, 0x0d})
				if err := os.WriteFile(top, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
			if err != nil && !errors.Is(err, ErrPartial) {
				t.Fatal(err)
			}
			n, err := FindNode(ctx, r, res.Snapshot.Tree, top)
			if err != nil {
				t.Fatal(err)
			}
			if m, err := ParseDiskMeta(n); err != nil || m == nil || !m.Layer || string(m.BackingFormat) != backingFormat {
				t.Fatalf("overlay recorded as %+v, %v; want a layer over a parent of format %q", m, err, backingFormat)
			}
			if _, err := OpenSnapshotDisk(ctx, r, res.Snapshot.Tree, top, n, nil); err == nil {
				t.Errorf("raw view of an overlay over a parent held as a plain file: no error, want one")
			}
			dst := filepath.Join(t.TempDir(), "dst")
			rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, DiskFormat: "raw"})
			if err != nil && !errors.Is(err, ErrRestoreIncomplete) {
				t.Fatal(err)
			}
			if _, serr := os.Stat(filepath.Join(dst, src, "top.raw")); serr == nil || rr == nil || len(rr.Failed) == 0 {
				t.Errorf("overlay over a parent held as a plain file restored as raw: %v, want it listed as failed", err)
			}
		})
	}
}

// TestSnapshotDiskRefusesAParentOfAnotherFormat: an overlay that reads
// its parent as raw (-F raw), over a file that holds a qcow2 header (a
// guest wrote it, or the file was replaced), sees the file's bytes, as
// qemu does; the snapshot recorded the parent as a qcow2 image, whose
// virtual disk is other data. The raw view and a restore to raw fail for
// the overlay instead of serving that data as its parent's.
func TestSnapshotDiskRefusesAParentOfAnotherFormat(t *testing.T) {
	needQemu(t)
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "vms")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	base, top := filepath.Join(src, "base.img"), filepath.Join(src, "top.qcow2")
	runCmds(t, [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", base, "8M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 2M", base},
		{"truncate", "-s", "8M", base},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.img", "-F", "raw", top, "8M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 3M 2M", top},
	})
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil && !errors.Is(err, ErrPartial) {
		t.Fatal(err)
	}
	n, err := FindNode(ctx, r, res.Snapshot.Tree, top)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ParseDiskMeta(n); err != nil || m == nil || !m.Layer {
		t.Fatalf("overlay recorded as %+v, %v; want a layer", m, err)
	}
	if _, err := OpenSnapshotDisk(ctx, r, res.Snapshot.Tree, top, n, nil); err == nil {
		t.Errorf("raw view of an overlay over a raw parent the snapshot holds as qcow2: no error, want one")
	}
	dst := filepath.Join(t.TempDir(), "dst")
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, DiskFormat: "raw"})
	if err != nil && !errors.Is(err, ErrRestoreIncomplete) {
		t.Fatal(err)
	}
	if _, serr := os.Stat(filepath.Join(dst, src, "top.raw")); serr == nil || rr == nil || len(rr.Failed) == 0 {
		t.Errorf("overlay over a raw parent the snapshot holds as qcow2, restored as raw: %v, want it listed as failed", err)
	}
}

// TestBackupFlattensOverlayOverALinkToAParentOutside: an overlay names its
// parent through a symlink inside the backup paths that leads out of
// them. The link alone is backed up, not the parent it leads to, so the
// overlay is flattened, as one naming the outside parent directly is,
// instead of stored as a layer over a parent the snapshot lacks.
func TestBackupFlattensOverlayOverALinkToAParentOutside(t *testing.T) {
	needQemu(t)
	ctx := context.Background()
	r, _ := newRepo(t)
	dir := t.TempDir()
	outside := filepath.Join(dir, "golden")
	src := filepath.Join(dir, "vms")
	os.MkdirAll(outside, 0o755)
	os.MkdirAll(src, 0o755)
	base := filepath.Join(outside, "base-v1.qcow2")
	top := filepath.Join(src, "top.qcow2")
	runCmds(t, [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", base, "16M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", base},
	})
	if err := os.Symlink("../golden/base-v1.qcow2", filepath.Join(src, "base.qcow2")); err != nil {
		t.Fatal(err)
	}
	runCmds(t, [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 64k", top},
	})
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	got := filepath.Join(dst, top)
	out, err := exec.Command("qemu-img", "info", got).CombinedOutput()
	if err != nil || strings.Contains(string(out), "backing file") {
		t.Fatalf("restored overlay (%v):\n%s\nwant a self-contained image: its parent is outside the backup", err, out)
	}
	if out, err := exec.Command("qemu-img", "compare", "-q", top, got).CombinedOutput(); err != nil {
		t.Fatalf("restored disk differs from the overlay's: %v\n%s", err, out)
	}
}

// TestSnapshotDiskParentThroughSymlinkedDir: an overlay whose backing
// file's name goes through a symlinked directory in the snapshot
// (images -> store, backing file images/base.qcow2, as libvirt names a
// moved image directory) reads its parent through the link, as qemu does,
// in the mount's raw view and in a restore to raw, instead of failing as
// if the chain were not backed up.
func TestSnapshotDiskParentThroughSymlinkedDir(t *testing.T) {
	needQemu(t)
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "vms")
	if err := os.MkdirAll(filepath.Join(src, "store"), 0o755); err != nil {
		t.Fatal(err)
	}
	top, want := filepath.Join(src, "top.qcow2"), filepath.Join(t.TempDir(), "want.raw")
	runCmds(t, [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(src, "store", "base.qcow2"), "16M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 5M", filepath.Join(src, "store", "base.qcow2")},
		{"ln", "-s", "store", filepath.Join(src, "images")},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", "images/base.qcow2", "-F", "qcow2", top},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 3M 4M", top},
		{"qemu-img", "convert", "-O", "raw", top, want},
	})
	wantb, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := FindNode(ctx, r, res.Snapshot.Tree, top)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := OpenSnapshotDisk(ctx, r, res.Snapshot.Tree, top, n, nil)
	if err != nil {
		t.Fatalf("raw view of an overlay whose parent is named through a symlinked directory: %v", err)
	}
	got := make([]byte, sd.Size())
	if _, err := sd.ReadAtContext(ctx, got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantb) {
		t.Error("raw view of an overlay whose parent is named through a symlinked directory differs from qemu-img's")
	}
}

// TestBackupFlattensOverlayOverAParentNamedOutsideTheGivenPath: a backup
// path given through a symlinked directory above it (link/images, with
// link -> real) holds an overlay naming its parent by the path the link
// leads to (real/images/base.qcow2). The snapshot holds that parent as
// link/images/base.qcow2 only, so the overlay is flattened, as one over a
// parent outside the backup is, instead of stored as a layer whose parent
// the mount's raw view and a restore to raw cannot find.
func TestBackupFlattensOverlayOverAParentNamedOutsideTheGivenPath(t *testing.T) {
	needQemu(t)
	ctx := context.Background()
	r, _ := newRepo(t)
	dir := t.TempDir()
	real := filepath.Join(dir, "real", "images")
	os.MkdirAll(real, 0o755)
	if err := os.Symlink("real", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	base, want := filepath.Join(real, "base.qcow2"), filepath.Join(t.TempDir(), "want.raw")
	runCmds(t, [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", base, "16M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", base},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", filepath.Join(real, "top.qcow2")},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 64k", filepath.Join(real, "top.qcow2")},
		{"qemu-img", "convert", "-O", "raw", filepath.Join(real, "top.qcow2"), want},
	})
	wantb, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	given := filepath.Join(dir, "link", "images")
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{given}})
	if err != nil {
		t.Fatal(err)
	}
	top := filepath.Join(given, "top.qcow2")
	n, err := FindNode(ctx, r, res.Snapshot.Tree, top)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := OpenSnapshotDisk(ctx, r, res.Snapshot.Tree, top, n, nil)
	if err != nil {
		t.Fatalf("raw view of the overlay: %v", err)
	}
	got := make([]byte, sd.Size())
	if _, err := sd.ReadAtContext(ctx, got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantb) {
		t.Error("raw view of the overlay differs from qemu-img's")
	}
}

// TestBackupFlattensOverlayOverAnAbsoluteLinkOutOfTheGivenPath: the
// overlay's parent is a symlink below the given path whose absolute target
// is the same file by the name a symlinked directory above the given path
// leads to (link/images/base.qcow2 -> /…/real/images/base-v1.qcow2). The
// snapshot holds the link, and the file only as link/images/base-v1.qcow2,
// so it cannot follow the link's target: the overlay is flattened, and its
// raw view reads as qemu reads it.
func TestBackupFlattensOverlayOverAnAbsoluteLinkOutOfTheGivenPath(t *testing.T) {
	needQemu(t)
	ctx := context.Background()
	r, _ := newRepo(t)
	dir := t.TempDir()
	real := filepath.Join(dir, "real", "images")
	os.MkdirAll(real, 0o755)
	if err := os.Symlink("real", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(real, "base-v1.qcow2")
	if err := os.Symlink(base, filepath.Join(real, "base.qcow2")); err != nil { // absolute
		t.Fatal(err)
	}
	top, want := filepath.Join(real, "top.qcow2"), filepath.Join(t.TempDir(), "want.raw")
	runCmds(t, [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", base, "16M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", base},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 64k", top},
		{"qemu-img", "convert", "-O", "raw", top, want},
	})
	wantb, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	given := filepath.Join(dir, "link", "images")
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{given}})
	if err != nil {
		t.Fatal(err)
	}
	gtop := filepath.Join(given, "top.qcow2")
	n, err := FindNode(ctx, r, res.Snapshot.Tree, gtop)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := OpenSnapshotDisk(ctx, r, res.Snapshot.Tree, gtop, n, nil)
	if err != nil {
		t.Fatalf("raw view of the overlay: %v", err)
	}
	got := make([]byte, sd.Size())
	if _, err := sd.ReadAtContext(ctx, got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantb) {
		t.Error("raw view of the overlay differs from qemu-img's")
	}
}

// needQemu fails the test where qemu-img or qemu-io is missing: make deps
// installs them.
func needQemu(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: run 'make deps' (package qemu-utils)", tool)
		}
	}
}

// runCmds runs each command, failing the test with its output at the
// first that fails.
func runCmds(t *testing.T, cmds [][]string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
}
