package drsite

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDetectImageFormatUnreadableImage: an image whose header this
// package cannot read further (a VHDX whose log is not empty, as copied
// from a running Hyper-V VM; an encrypted qcow2) is still an image of the
// format its header gives, not a raw disk. Declared raw, Hyper-V gets the
// VHDX container converted as if it were the guest's disk, and libvirt
// boots the container's bytes.
func TestDetectImageFormatUnreadableImage(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	dirty := filepath.Join(dir, "dirty.img")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vhdx", dirty, "8M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	b, err := os.ReadFile(dirty)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{64 << 10, 128 << 10} { // both VHDX headers
		h := b[off : off+4096]
		copy(h[48:64], "0123456789abcdef") // LogGuid: the log is not empty
		clear(h[4:8])
		binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
	}
	if err := os.WriteFile(dirty, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if f := detectImageFormat(dirty); f != "vhdx" {
		t.Errorf("a VHDX with a non-empty log detected as %q, want vhdx", f)
	}
	// An encrypted qcow2 (vmdisk refuses it): a plain one with the
	// header's crypt_method set to LUKS, as qemu-img's LUKS encryption
	// times its key derivation and fails on a loaded machine.
	encrypted := func(name string, args ...string) string {
		p := filepath.Join(dir, name)
		args = append(append([]string{"create", "-q", "-f", "qcow2"}, args...), p, "8M")
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte{0, 0, 0, 2}, 32); err != nil { // crypt_method: LUKS
			t.Fatal(err)
		}
		return p
	}
	enc := encrypted("enc.img")
	if f := detectImageFormat(enc); f != "qcow2" {
		t.Errorf("an encrypted qcow2 detected as %q, want qcow2", f)
	}
	// Unreadable or not, a header naming a backing file is a raw disk's.
	over := encrypted("over.img", "-b", "/etc/hostname", "-F", "raw")
	if f := detectImageFormat(over); f != "raw" {
		t.Errorf("an encrypted qcow2 naming a backing file detected as %q, want raw", f)
	}
}

// TestDetectedDiskNameCollision: a disk without a format in the
// inventory is placed under the name for the format its header gives
// (disk.img holding a VHDX becomes disk.qcow2 on a libvirt host). A
// second disk of the VM named disk.qcow2 must not share that image: on a
// re-run, the first disk was found as the second disk's image, and on
// the first run the conversion and the second disk's placement wrote the
// same file.
func TestDetectedDiskNameCollision(t *testing.T) {
	p := planFrom(t, `
domain_type: test
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - name: app
    vcpus: 1
    memory: 1GiB
    disks:
      - {file: /img/disk.img, size: 1MiB}
      - {file: /data/disk.qcow2, format: qcow2, size: 1MiB}
`)
	if b := p.BlockingIssues(); len(b) > 0 {
		t.Fatalf("blocking: %v", b)
	}
	out := t.TempDir()
	// Dry run for the names, then place images as an earlier run would
	// have: the second run keeps them without reading the repository.
	res, err := Bringup(context.Background(), nil, p, BringupOptions{Out: out, NoRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	sources := func(res *BringupResult) []string { return domainDiskFiles(t, res.Hosts[0].Domains["app"]) }
	first := sources(res)
	if len(first) != 2 {
		t.Fatalf("disks %q", first)
	}
	imgDir := filepath.Dir(first[0])
	os.MkdirAll(imgDir, 0o755)
	// The first disk was a VHDX: an earlier run converted it to qcow2.
	for i, f := range []string{first[0], first[1]} {
		if err := os.WriteFile(f, make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := writeImageSource(f, imageSource{Snapshot: "0123abcd", Path: []string{"/img/disk.img", "/data/disk.qcow2"}[i]}); err != nil {
			t.Fatal(err)
		}
	}
	p.VM("app").Data = &VMData{Snapshot: "0123abcd", Disks: []DiskData{
		{File: "/img/disk.img", Path: "/img/disk.img", Size: 4096},
		{File: "/data/disk.qcow2", Path: "/data/disk.qcow2", Size: 4096},
	}}
	res, err = Bringup(context.Background(), nil, p, BringupOptions{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	second := sources(res)
	if len(second) != 2 || second[0] == second[1] {
		t.Errorf("the two disks of app share one DR image: %q (first run names %q)", second, first)
	}
	// Once converted (a VHDX header), the first disk's image must not be
	// the second disk's name.
	if c := first[0][:len(first[0])-len(filepath.Ext(first[0]))] + ".qcow2"; c == first[1] {
		t.Errorf("disk 1 (%s) becomes %s once converted, which is disk 2's image", first[0], c)
	}
}

// TestReIPWholeSubnetTakesDRPrefix: a rule moving a source /24 (the
// address's own subnet) to a DR /16 makes the DR /16 the address's
// subnet: the rule's gateway lies anywhere in it. Kept as a /24 the
// address has no on-link route to that gateway (ip route replace default
// fails) and the plan warns that the operator's own gateway is outside
// the DR subnet.
func TestReIPWholeSubnetTakesDRPrefix(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr1, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}
networks:
  - {name: dr-lan, type: external, bridge: br0, subnets: [10.50.0.0/16]}
network_map:
  - from: {switch: lan}
    to: {network: dr-lan}
reip:
  - {from: 192.168.1.0/24, to: 10.50.0.0/16, gateway: 10.50.255.254}
`, `vms:
  - name: web
    vcpus: 1
    memory: 1GiB
    disks: [{file: /img/web.qcow2, format: qcow2, size: 1GiB}]
    nics: [{mac: '52:54:00:00:00:0c', switch: lan, ipv4: [192.168.1.70/24], gateway4: 192.168.1.1}]
`)
	n := p.VM("web").NICs[0]
	if strings.Join(n.To, ",") != "10.50.1.70/16" && strings.Join(n.To, ",") != "10.50.0.70/16" {
		t.Errorf("re-IP of 192.168.1.70/24 by 192.168.1.0/24 → 10.50.0.0/16: %v, want the DR subnet's /16", n.To)
	}
	if n.Gateway4 != "10.50.255.254" {
		t.Errorf("gateway %q", n.Gateway4)
	}
	for _, i := range p.Issues {
		t.Errorf("issue: %v", i)
	}
}

// TestReIPOntoTheDRHostAddress: an address re-IP'd onto the address the
// DR host takes on the network (drsite.networks[].address, libvirt's
// bridge address) would answer for two machines.
func TestReIPOntoTheDRHostAddress(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr1, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}
networks:
  - {name: dr-nat, type: internal, address: 10.50.0.1/24, subnets: [10.50.0.0/24]}
network_map:
  - from: {switch: lan}
    to: {network: dr-nat}
reip:
  - {from: 10.0.0.0/24, to: 10.50.0.0/24}
`, `vms:
  - name: rtr
    vcpus: 1
    memory: 1GiB
    disks: [{file: /img/rtr.qcow2, format: qcow2, size: 1GiB}]
    nics: [{mac: '52:54:00:00:00:0c', switch: lan, ipv4: [10.0.0.1/24]}]
  - name: web
    vcpus: 1
    memory: 1GiB
    disks: [{file: /img/web.qcow2, format: qcow2, size: 1GiB}]
    nics: [{mac: '52:54:00:00:00:0d', switch: lan, ipv4: [10.0.0.80/24], gateway4: 10.0.0.1}]
`)
	if !p.VM("rtr").Blocked || len(issuesOf(p, IssueReIP)) == 0 {
		t.Errorf("rtr re-IP'd to 10.50.0.1, the DR host's address on dr-nat: blocked %v, issues %v", p.VM("rtr").Blocked, p.Issues)
	}
	if p.VM("web").Blocked {
		t.Errorf("web blocked: %v", p.Issues)
	}
}
