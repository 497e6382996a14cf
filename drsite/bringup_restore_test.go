package drsite

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// newTestRepo creates an empty repository with a fast key derivation.
func newTestRepo(t *testing.T) *repo.Repository {
	t.Helper()
	be, err := tiers.NewLocal(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, repo.InitOptions{PackSize: 1 << 20},
		repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestRestoreNoticesBesideTheDisksDoNotStopBringup: the source host's
// image files carry extended attributes (an SELinux label on every image
// of a RHEL KVM host) that the DR site's file system may not support (an
// NFS image store), here a namespace no file system knows. The disks'
// data is all restored; the attributes, which libvirt and Hyper-V do
// not read, must not stop the bring-up with a message that says only
// "1 items failed".
func TestRestoreNoticesBesideTheDisksDoNotStopBringup(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t)
	now := time.Now().Truncate(time.Second)
	label := map[string][]byte{"nosuchns.selinux": []byte("system_u:object_r:virt_image_t:s0")}
	img := &repo.Tree{Nodes: []*repo.Node{{Name: "web.raw", Type: repo.NodeFile, Mode: 0o600, ModTime: now, Xattrs: label}}}
	imgID, err := r.SaveTree(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	root, err := r.SaveTree(ctx, &repo.Tree{Nodes: []*repo.Node{{Name: "img", Type: repo.NodeDir, Mode: fs.ModeDir | 0o755, ModTime: now, Subtree: &imgID}}})
	if err != nil {
		t.Fatal(err)
	}
	sn := saveImgSnapshot(t, r, root, now)
	p := rawWebPlan(t)
	p.VM("web").Data = &VMData{Snapshot: sn.ID().String(), SnapshotTime: now, Disks: []DiskData{{File: "/img/web.raw", Path: "/img/web.raw"}}}
	var progress []string
	res, err := Bringup(ctx, r, p, BringupOptions{Out: t.TempDir(), Progress: func(s string) { progress = append(progress, s) }})
	if err != nil {
		t.Fatalf("bring-up: %v", err)
	}
	if len(res.Restored) != 1 {
		t.Fatalf("restored %+v", res.Restored)
	}
	if st, err := os.Stat(res.Restored[0].Path); err != nil || !st.Mode().IsRegular() {
		t.Errorf("web's image is not placed: %v", err)
	}
	if !strings.Contains(strings.Join(progress, "\n"), "nosuchns.selinux") {
		t.Errorf("the attributes not restored are not reported:\n%s", strings.Join(progress, "\n"))
	}
}

// TestHyperVImageNamedForItsFormat: a disk without a format in the
// inventory takes the one its image's header gives. On a Hyper-V host
// the image stays in the VM's folder, where bringup.ps1 attaches it, and
// is named for its format: Hyper-V tells a VHD from a VHDX by the file's
// extension and refuses one named as the other.
func TestHyperVImageNamedForItsFormat(t *testing.T) {
	needTool(t, "qemu-img")
	ctx := context.Background()
	for _, c := range []struct{ qemu, format string }{{"vpc", "vhd"}, {"vhdx", "vhdx"}} {
		src := filepath.Join(t.TempDir(), "web.img")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", c.qemu, src, "1M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
		img, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		r := newTestRepo(t)
		br, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "hv01", Stdin: bytes.NewReader(img), StdinName: "web.img"})
		if err != nil {
			t.Fatal(err)
		}
		p := planFrom(t, `
hosts:
  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - {name: web, vcpus: 1, memory: 1GiB, generation: 2, disks: [{file: 'D:\vms\web.img', size: 1MiB}]}
`)
		p.VM("web").Data = &VMData{Snapshot: br.Snapshot.ID().String(), SnapshotTime: br.Snapshot.Time, Disks: []DiskData{{File: `D:\vms\web.img`, Path: "/web.img", Size: int64(len(img))}}}
		res, err := Bringup(ctx, r, p, BringupOptions{Out: t.TempDir()})
		if err != nil {
			t.Fatalf("%s: bring-up: %v", c.format, err)
		}
		want := "web." + c.format
		if len(res.Restored) != 1 || res.Restored[0].Format != c.format || filepath.Base(res.Restored[0].Path) != want {
			t.Errorf("%s: restored %+v, want %s in format %s", c.format, res.Restored, want, c.format)
		}
		ps, err := os.ReadFile(res.Hosts[0].Script)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(ps), "'web\\"+want+"')") {
			t.Errorf("%s: bringup.ps1 does not attach web\\%s:\n%s", c.format, want, ps)
		}
	}
	// The same for a disk the inventory gives as a VHD under another name.
	p := planFrom(t, "hosts:\n  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}\n",
		"vms:\n  - {name: db, vcpus: 1, memory: 1GiB, generation: 2, disks: [{file: /img/db.img, format: vhd, size: 1MiB}]}\n")
	res, err := Bringup(ctx, nil, p, BringupOptions{Out: t.TempDir(), NoRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	if ps, _ := os.ReadFile(res.Hosts[0].Script); !strings.Contains(string(ps), "'db\\db.vhd')") {
		t.Errorf("bringup.ps1 does not attach db\\db.vhd:\n%s", ps)
	}
}

// TestRestoreFailureAboveADiskStopsBringup: the directory that holds a
// disk in the snapshot does not read (its tree is in no index, as after
// a storage error), so the disk is not restored. The failure names the
// directory, not the disk; it must still stop the bring-up naming the
// VM, and an image an interrupted earlier run left in the staging
// directory must not be placed as the VM's disk.
func TestRestoreFailureAboveADiskStopsBringup(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t)
	now := time.Now().Truncate(time.Second)
	lost := id.Hash([]byte("a tree no index lists"))
	root, err := r.SaveTree(ctx, &repo.Tree{Nodes: []*repo.Node{{Name: "img", Type: repo.NodeDir, Mode: fs.ModeDir | 0o755, ModTime: now, Subtree: &lost}}})
	if err != nil {
		t.Fatal(err)
	}
	sn := saveImgSnapshot(t, r, root, now)
	p := rawWebPlan(t)
	p.VM("web").Data = &VMData{Snapshot: sn.ID().String(), SnapshotTime: now, Disks: []DiskData{{File: "/img/web.raw", Path: "/img/web.raw", Size: 1 << 20}}}
	out := t.TempDir()
	// What an earlier run killed while it restored left behind.
	stale := filepath.Join(out, "dr-kvm", "images", ".drpipe-restore-"+sn.ID().Short(), "img", "web.raw")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("half an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Bringup(ctx, r, p, BringupOptions{Out: out})
	if err == nil {
		t.Fatalf("bring-up placed %+v although web's disk was not restored", res.Restored)
	}
	if !strings.Contains(err.Error(), "web") || !strings.Contains(err.Error(), "load tree") {
		t.Errorf("bring-up: %v; want the error to name VM web and why its disk was not restored", err)
	}
}

// TestPlacedImageOfAnotherSnapshotIsRefused: an image an earlier
// bring-up placed is kept when the plan restores the same snapshot (a
// resumed bring-up), but one placed from another snapshot (last month's
// drill) or with no record of its snapshot is refused, naming it and
// what to do, instead of being booted as the recovered VM's disk.
func TestPlacedImageOfAnotherSnapshotIsRefused(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t)
	src := t.TempDir()
	img := filepath.Join(src, "web.raw")
	backupImage := func(content string) *repo.Snapshot {
		t.Helper()
		if err := os.WriteFile(img, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		res, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "hv01", Paths: []string{src}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Snapshot
	}
	drill := backupImage("the data of the drill, a month ago")
	now := backupImage("the data at the disaster")
	out := t.TempDir()
	bringup := func(sn *repo.Snapshot) (*BringupResult, error) {
		p := rawWebPlan(t)
		p.VM("web").Data = &VMData{Snapshot: sn.ID().String(), SnapshotTime: sn.Time, Disks: []DiskData{{File: "/img/web.raw", Path: img}}}
		return Bringup(ctx, r, p, BringupOptions{Out: out})
	}
	res, err := bringup(drill)
	if err != nil {
		t.Fatalf("the drill's bring-up: %v", err)
	}
	placed := res.Restored[0].Path
	if res, err := bringup(drill); err != nil || len(res.Restored) != 1 || !res.Restored[0].Kept {
		t.Fatalf("the drill resumed: %+v, %v; want its image kept", res, err)
	}
	_, err = bringup(now)
	if err == nil || !strings.Contains(err.Error(), "from snapshot "+drill.ID().Short()) || !strings.Contains(err.Error(), "move it away or remove it") {
		t.Fatalf("bring-up of the newer snapshot over the drill's image: %v; want a refusal naming the drill's snapshot", err)
	}
	if b, _ := os.ReadFile(placed); string(b) != "the data of the drill, a month ago" {
		t.Errorf("the drill's image was changed: %q", b)
	}
	if err := os.Remove(imageSourceFile(placed)); err != nil {
		t.Fatal(err)
	}
	if _, err := bringup(drill); err == nil || !strings.Contains(err.Error(), "no record of which snapshot") {
		t.Fatalf("bring-up over an image without a record: %v; want a refusal", err)
	}
	if err := os.Remove(placed); err != nil {
		t.Fatal(err)
	}
	if res, err := bringup(now); err != nil || res.Restored[0].Kept {
		t.Fatalf("bring-up once the old image is gone: %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(placed); string(b) != "the data at the disaster" {
		t.Errorf("the placed image holds %q", b)
	}
}

// TestStoppedBeforeRecordingItsSourceResumes: a bring-up that stops
// before it has recorded which snapshot an image comes from (here its
// record cannot be written; a crash does the same) leaves no image that
// the next run must refuse: run again, it restores the disk and goes on,
// instead of asking the operator to remove an image it placed itself.
func TestStoppedBeforeRecordingItsSourceResumes(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t)
	src := t.TempDir()
	img := filepath.Join(src, "web.raw")
	if err := os.WriteFile(img, []byte("the data at the disaster"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "hv01", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	sn := b.Snapshot
	out := t.TempDir()
	bringup := func() (*BringupResult, error) {
		p := rawWebPlan(t)
		p.VM("web").Data = &VMData{Snapshot: sn.ID().String(), SnapshotTime: sn.Time, Disks: []DiskData{{File: "/img/web.raw", Path: img}}}
		return Bringup(ctx, r, p, BringupOptions{Out: out})
	}
	res, err := bringup()
	if err != nil {
		t.Fatalf("bring-up: %v", err)
	}
	placed := res.Restored[0].Path
	// Start again from nothing, with the record's place taken by a
	// directory that cannot be replaced.
	if err := os.Remove(placed); err != nil {
		t.Fatal(err)
	}
	record := imageSourceFile(placed)
	if err := os.Remove(record); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(record, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := bringup(); err == nil || !strings.Contains(err.Error(), "record where disk") {
		t.Fatalf("bring-up whose record cannot be written: %v; want it to fail naming the record", err)
	}
	if err := os.RemoveAll(record); err != nil {
		t.Fatal(err)
	}
	res, err = bringup()
	if err != nil {
		t.Fatalf("bring-up run again after one stopped before recording its image's source: %v", err)
	}
	if b, _ := os.ReadFile(placed); string(b) != "the data at the disaster" || res.Restored[0].Kept {
		t.Errorf("the image after the resumed bring-up: %q (kept %v), want the snapshot's data restored again", b, res.Restored[0].Kept)
	}
}

// TestPlacedImageOfAnotherSnapshotStopsBeforeAnyGroup: the check of
// images already in place covers every boot group before the first is
// restored, so a drill's image in group 2 stops the bring-up before
// group 1 is restored, defined or started, not once group 1 runs.
func TestPlacedImageOfAnotherSnapshotStopsBeforeAnyGroup(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t)
	src := t.TempDir()
	for _, n := range []string{"db.raw", "web.raw"} {
		if err := os.WriteFile(filepath.Join(src, n), []byte("data of "+n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	res, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "hv01", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	sn := res.Snapshot
	p := planFrom(t, `
domain_type: test
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - {name: db, vcpus: 1, memory: 1GiB, boot_priority: 1, disks: [{file: /img/db.raw, format: raw, size: 1MiB}]}
  - {name: web, vcpus: 1, memory: 1GiB, depends_on: [db], disks: [{file: /img/web.raw, format: raw, size: 1MiB}]}
`)
	if p.VM("db").Group != 1 || p.VM("web").Group != 2 {
		t.Fatalf("groups: db %d, web %d", p.VM("db").Group, p.VM("web").Group)
	}
	for _, n := range []string{"db", "web"} {
		p.VM(n).Data = &VMData{Snapshot: sn.ID().String(), SnapshotTime: sn.Time, Disks: []DiskData{{File: "/img/" + n + ".raw", Path: filepath.Join(src, n+".raw")}}}
	}
	out := t.TempDir()
	web := filepath.Join(out, "dr-kvm", "images", "web", "web.raw")
	if err := os.MkdirAll(filepath.Dir(web), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(web, []byte("a drill's data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeImageSource(web, imageSource{Snapshot: strings.Repeat("ab", 32), Path: filepath.Join(src, "web.raw")}); err != nil {
		t.Fatal(err)
	}
	_, err = Bringup(ctx, r, p, BringupOptions{Out: out})
	if err == nil || !strings.Contains(err.Error(), "VM web") || !strings.Contains(err.Error(), "from snapshot abababab") {
		t.Fatalf("bring-up over a drill's image in group 2: %v; want a refusal naming web and the drill's snapshot", err)
	}
	if _, err := os.Stat(filepath.Join(out, "dr-kvm", "images", "db", "db.raw")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("group 1's disk was restored before the refusal: %v", err)
	}
}

// rawWebPlan plans one VM, web, with one raw disk /img/web.raw, onto one
// libvirt DR host.
func rawWebPlan(t *testing.T) *Plan {
	t.Helper()
	return planFrom(t, `
domain_type: test
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - {name: web, vcpus: 1, memory: 1GiB, disks: [{file: /img/web.raw, format: raw, size: 1MiB}]}
`)
}

// saveImgSnapshot stores a snapshot of /img at time now whose tree is
// root (made by hand), after making what r holds durable.
func saveImgSnapshot(t *testing.T, r *repo.Repository, root id.ID, now time.Time) *repo.Snapshot {
	t.Helper()
	ctx := context.Background()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &repo.Snapshot{Time: now, Host: "hv01", Paths: []string{"/img"}, Tree: root}
	if _, err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}
