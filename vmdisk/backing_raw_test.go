package vmdisk

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBackingFormatRawIsRead: an overlay that records its backing
// file's format as raw (qemu-img create -b base.img -F raw, libvirt
// external snapshots of raw disks) names a raw disk, whatever header its
// guest wrote at its start: qemu reads it as raw, and so must the
// backup. Probing it instead follows the guest's header (its backing
// file names any host file, CVE-2008-2004) or fails the chain.
func TestBackingFormatRawIsRead(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not installed: run 'make deps' (package qemu-utils)")
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "host-secret")
	os.WriteFile(secret, bytes.Repeat([]byte("HOST SECRET "), 1<<17), 0o600)
	base, over := filepath.Join(dir, "base.img"), filepath.Join(dir, "over.qcow2")
	// The guest of the raw base disk wrote a qcow2 header naming a host file.
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", base, "1M"},
		{"create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", over, "1M"},
	} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v %s", args, err, out)
		}
	}
	if err := os.Truncate(base, 1<<20); err != nil {
		t.Fatal(err)
	}
	d, err := Open(over, Limits{})
	if err != nil {
		t.Fatalf("overlay of a raw disk with a guest-written header: %v", err)
	}
	defer d.Close()
	if len(d.Layers) != 2 || d.Layers[1].Info.Format != Raw {
		for _, l := range d.Layers {
			t.Logf("layer %s: %s", l.Info.Path, l.Info.Format)
		}
		t.Fatalf("chain of %d layers; want the overlay and its raw base", len(d.Layers))
	}
	want, _ := os.ReadFile(base)
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Errorf("virtual disk differs from the raw base's bytes (%v)", err)
	}
}
