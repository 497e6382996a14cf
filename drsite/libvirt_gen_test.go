package drsite

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDisksWithoutAddressGetTheirOwnSlots: virt-install --print-xml and
// hand-written XML give disks a target but no <address>, and a YAML
// inventory may leave out units; each disk must still get a drive slot
// of its own, or libvirt refuses the definition ("Found duplicate drive
// address").
func TestDisksWithoutAddressGetTheirOwnSlots(t *testing.T) {
	needTool(t, "virsh")
	src := `<domain type="kvm">
  <name>slots01</name>
  <memory>1048576</memory>
  <vcpu>1</vcpu>
  <os><type arch="x86_64" machine="pc">hvm</type></os>
  <devices>
    <disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/img/a.qcow2"/><target dev="sda" bus="scsi"/></disk>
    <disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/img/b.qcow2"/><target dev="sdb" bus="scsi"/></disk>
    <disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/img/c.qcow2"/><target dev="sdc" bus="sata"/></disk>
    <disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/img/d.qcow2"/><target dev="sdd" bus="sata"/></disk>
    <disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/img/e.qcow2"/><target dev="hda" bus="ide"/></disk>
    <disk type="file" device="cdrom"><driver name="qemu" type="raw"/><source file="/img/f.iso"/><target dev="hdc" bus="ide"/></disk>
  </devices>
</domain>`
	inv, err := Import("slots01.xml", []byte(src), ImportOptions{Host: "kvm01"})
	if err != nil {
		t.Fatal(err)
	}
	yinv, err := Import("inv.yaml", []byte(`vms:
  - name: slots02
    vcpus: 1
    memory: 1GiB
    disks:
      - {file: /img/g.qcow2, format: qcow2, controller: scsi}
      - {file: /img/h.qcow2, format: qcow2, controller: scsi}
      - {file: /img/i.qcow2, format: qcow2, controller: scsi}
`), ImportOptions{Host: "kvm01"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := StartVirsh(t.Context(), "test:///default")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, vm := range []*VM{&inv.VMs[0], &yinv.VMs[0]} {
		x, err := DomainXML(vm, DomainOptions{Type: "test"})
		if err != nil {
			t.Fatalf("%s: %v", vm.Name, err)
		}
		f := filepath.Join(t.TempDir(), vm.Name+".xml")
		if err := os.WriteFile(f, x, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Run(t.Context(), "define", f); err != nil {
			t.Errorf("%s: %v\n%s", vm.Name, err, x)
		}
		if vm.Name == "slots01" && !strings.Contains(string(x), `<target dev="hdc" bus="ide"></target>
      <readonly></readonly>
      <address type="drive" controller="0" bus="1" target="0" unit="0">`) {
			t.Errorf("hdc is not on the secondary IDE channel, where libvirt puts it:\n%s", x)
		}
	}
}
