package drsite

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestDetectImageFormatVMDKNamingOtherFilesIsRaw: a restored disk whose
// header is a VMDK sparse extent naming a parent (parentFileNameHint) or
// extent files (a zero capacity and a descriptor) was a guest's raw disk,
// as the qcow2, VHD and VHDX cases: declared vmdk, the DR hypervisor would
// open the DR host files its descriptor names. It is raw; a VMDK naming
// no other file stays vmdk.
func TestDetectImageFormatVMDKNamingOtherFilesIsRaw(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	plain, over := filepath.Join(dir, "plain.img"), filepath.Join(dir, "over.img")
	for _, args := range [][]string{
		{"create", "-q", "-f", "vmdk", plain, "4M"},
		{"create", "-q", "-f", "vmdk", "-b", plain, "-F", "vmdk", over, "4M"},
	} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	if f := detectImageFormat(plain); f != "vmdk" {
		t.Errorf("a VMDK naming no other file detected as %q, want vmdk", f)
	}
	if f := detectImageFormat(over); f != "raw" {
		t.Errorf("a restored disk whose VMDK header names a parent detected as %q, want raw", f)
	}
	// A sparse extent header of capacity 0 with a descriptor: qemu opens
	// the extent files the descriptor names.
	b, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(b[12:], 0)
	copy(b[512:], "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 8192 FLAT \"/etc/hostname\" 0\n")
	extents := filepath.Join(dir, "extents.img")
	if err := os.WriteFile(extents, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if f := detectImageFormat(extents); f != "raw" {
		t.Errorf("a restored disk whose VMDK header is a descriptor naming extent files detected as %q, want raw", f)
	}
	// Cut inside its header: nothing says what it names.
	cut := filepath.Join(dir, "cut.img")
	if err := os.WriteFile(cut, b[:16], 0o644); err != nil {
		t.Fatal(err)
	}
	if f := detectImageFormat(cut); f != "raw" {
		t.Errorf("a restored disk holding a cut VMDK header detected as %q, want raw", f)
	}
}
