package drsite

import (
	"bytes"
	"context"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/pipeline"
)

// TestDeclaredImageNamingABackingFileIsRaw: the inventory (from a
// compromised or mistaken primary) gives a disk's format, qcow2, and the
// restored file is a qcow2 header naming a DR host file as its backing
// file. Bringup restores disks flattened, so that header was written by
// a guest into a plain file: as for a disk without a format, the image
// is raw. Declared qcow2, libvirt would open the host file the header
// names, and qemu-img would copy it into the image it converts for
// Hyper-V. A run that keeps the placed image defines it raw too.
func TestDeclaredImageNamingABackingFileIsRaw(t *testing.T) {
	needTool(t, "qemu-img")
	ctx := context.Background()
	secret := filepath.Join(t.TempDir(), "dr-host-secret")
	if err := os.WriteFile(secret, bytes.Repeat([]byte("DR HOST SECRET "), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "web.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", src, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	img, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	r := newTestRepo(t)
	br, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "hv01", Stdin: bytes.NewReader(img), StdinName: "web.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	data := &VMData{Snapshot: br.Snapshot.ID().String(), SnapshotTime: br.Snapshot.Time, Disks: []DiskData{{File: "/img/web.qcow2", Path: "/web.qcow2", Size: int64(len(img))}}}
	inv := "vms:\n  - {name: web, vcpus: 1, memory: 1GiB, generation: 2, disks: [{file: /img/web.qcow2, format: qcow2, size: 1MiB}]}\n"

	// A libvirt host: the definition must not declare it qcow2, in the
	// run that places it nor in one that keeps it.
	out := t.TempDir()
	for run := 1; run <= 2; run++ {
		p := planFrom(t, "domain_type: test\nhosts:\n  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}\n", inv)
		p.VM("web").Data = data
		res, err := Bringup(ctx, r, p, BringupOptions{Out: out})
		if err != nil {
			t.Fatalf("libvirt run %d: bring-up: %v", run, err)
		}
		if len(res.Restored) != 1 || res.Restored[0].Format != "raw" {
			t.Errorf("libvirt run %d: restored %+v, want the disk placed as raw", run, res.Restored)
		}
		var d struct {
			Disks []struct {
				Driver struct {
					Type string `xml:"type,attr"`
				} `xml:"driver"`
			} `xml:"devices>disk"`
		}
		x, err := os.ReadFile(res.Hosts[0].Domains["web"])
		if err != nil {
			t.Fatal(err)
		}
		if err := xml.Unmarshal(x, &d); err != nil {
			t.Fatal(err)
		}
		if len(d.Disks) != 1 || d.Disks[0].Driver.Type != "raw" {
			t.Errorf("libvirt run %d: web's definition declares its disk %+v, want raw:\n%s", run, d.Disks, x)
		}
	}

	// The same for a QED header, which the DR host's qemu reads too; a
	// QED image naming no other file stays qed.
	for _, c := range []struct {
		args []string
		want string
	}{{[]string{"-b", secret, "-F", "raw"}, "raw"}, {nil, "qed"}} {
		qed := filepath.Join(t.TempDir(), "db.qed")
		if out, err := exec.Command("qemu-img", append(append([]string{"create", "-q", "-f", "qed"}, c.args...), qed, "1M")...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
		b, err := os.ReadFile(qed)
		if err != nil {
			t.Fatal(err)
		}
		br, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "hv01", Stdin: bytes.NewReader(b), StdinName: "db.qed"})
		if err != nil {
			t.Fatal(err)
		}
		p := planFrom(t, "domain_type: test\nhosts:\n  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}\n",
			"vms:\n  - {name: db, vcpus: 1, memory: 1GiB, disks: [{file: /img/db.qed, format: qed, size: 1MiB}]}\n")
		p.VM("db").Data = &VMData{Snapshot: br.Snapshot.ID().String(), SnapshotTime: br.Snapshot.Time, Disks: []DiskData{{File: "/img/db.qed", Path: "/db.qed", Size: int64(len(b))}}}
		res, err := Bringup(ctx, r, p, BringupOptions{Out: t.TempDir()})
		if err != nil {
			t.Fatalf("qed: bring-up: %v", err)
		}
		if len(res.Restored) != 1 || res.Restored[0].Format != c.want {
			t.Errorf("qed %v: restored %+v, want the disk placed as %s", c.args, res.Restored, c.want)
		}
	}

	// A Hyper-V host: the converted image must not hold the host file.
	p := planFrom(t, "hosts:\n  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}\n", inv)
	p.VM("web").Data = data
	res, err := Bringup(ctx, r, p, BringupOptions{Out: t.TempDir()})
	if err != nil {
		t.Fatalf("hyperv: bring-up: %v", err)
	}
	if len(res.Restored) != 1 {
		t.Fatalf("hyperv: restored %+v", res.Restored)
	}
	raw := filepath.Join(t.TempDir(), "web.raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "vhdx", "-O", "raw", res.Restored[0].Path, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v %s", err, out)
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "DR HOST SECRET") {
		t.Errorf("hyperv: the converted image holds the DR host file its header names")
	}
	if !bytes.HasPrefix(b, img[:4]) {
		t.Errorf("hyperv: the converted image does not hold the restored disk's bytes")
	}
}
