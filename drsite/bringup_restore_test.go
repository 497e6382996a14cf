package drsite

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// TestRestoreNoticesBesideTheDisksDoNotStopBringup: the source host's
// image files carry extended attributes (an SELinux label on every image
// of a RHEL KVM host) that the DR site's file system may not support (an
// NFS image store), here a namespace no file system knows. The disks'
// data is all restored; the attributes, which libvirt and Hyper-V do
// not read, must not stop the bring-up with a message that says only
// "1 items failed".
func TestRestoreNoticesBesideTheDisksDoNotStopBringup(t *testing.T) {
	ctx := context.Background()
	be, err := tiers.NewLocal(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(ctx, be, repo.InitOptions{PackSize: 1 << 20},
		repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
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
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &repo.Snapshot{Time: now, Host: "hv01", Paths: []string{"/img"}, Tree: root}
	if _, err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	p := planFrom(t, `
domain_type: test
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - {name: web, vcpus: 1, memory: 1GiB, disks: [{file: /img/web.raw, format: raw, size: 1MiB}]}
`)
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
