package drsite

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// virtInstallPhase is one definition as virt-install --print-xml prints
// it for an install from media: the install phase boots the ISO, the
// final phase (the VM as installed) boots its disk with the media ejected.
func virtInstallPhase(name, boot, cdrom string) string {
	return `<domain type="kvm">
  <name>` + name + `</name>
  <memory>2097152</memory>
  <currentMemory>2097152</currentMemory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
` + boot + `  </os>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/var/lib/libvirt/images/` + name + `.qcow2"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"/>
` + cdrom + `      <target dev="sda" bus="sata"/>
      <readonly/>
    </disk>
    <interface type="network">
      <source network="default"/>
      <mac address="52:54:00:77:00:02"/>
      <model type="virtio"/>
    </interface>
  </devices>
  <on_reboot>destroy</on_reboot>
</domain>
`
}

// TestImportVirtInstallPhases: of the definitions virt-install
// --print-xml prints for an install from media, the installed VM (the
// last) is imported, not the install phase that boots the installer ISO
// first; a file holding two different domains is refused.
func TestImportVirtInstallPhases(t *testing.T) {
	iso := `      <source file="/var/lib/libvirt/boot/debian-12.iso"/>
`
	doc := virtInstallPhase("inst01", "    <boot dev=\"cdrom\"/>\n    <boot dev=\"hd\"/>\n", iso) +
		virtInstallPhase("inst01", "    <boot dev=\"hd\"/>\n", "")
	inv, err := Import("inst01.xml", []byte(doc), ImportOptions{Host: "kvm01"})
	if err != nil {
		t.Fatal(err)
	}
	v := inv.VMs[0]
	if len(v.Disks) != 1 || v.Disks[0].File != "/var/lib/libvirt/images/inst01.qcow2" || v.Disks[0].BootOrder != 1 {
		t.Errorf("disks %+v, want only the qcow2 disk, booting first", v.Disks)
	}
	found := false
	for _, w := range inv.Warnings {
		found = found || strings.Contains(w.Message, "install phases")
	}
	if !found {
		t.Errorf("no warning about the install phases: %v", inv.Warnings)
	}

	two := virtInstallPhase("web01", "", "") + virtInstallPhase("web02", "", "")
	if _, err := Import("all.xml", []byte(two), ImportOptions{Host: "kvm01"}); err == nil || !strings.Contains(err.Error(), "all.xml") || !strings.Contains(err.Error(), "web01") {
		t.Errorf("two domains in one file: error %v, want one naming the file and both domains", err)
	}
}

// TestLibvirtBootAndMetadataLinear: a domain with many disks, legacy
// <boot dev> entries and metadata sizes for targets it lacks is read in
// time proportional to its size, not disks × entries.
func TestLibvirtBootAndMetadataLinear(t *testing.T) {
	const n = 40000
	var disks, boots, meta strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&disks, `<disk type="file" device="disk"><driver name="qemu" type="raw"/><source file="/var/lib/libvirt/images/d%d.img"/><target dev="vd%d" bus="virtio"/></disk>`, i, i)
		boots.WriteString(`<boot dev="cdrom"/>`)
		meta.WriteString(`<drpipe:disk target="sdz" virtual_size="1GiB"/>`)
	}
	doc := `<domain type="kvm"><name>big01</name><memory unit="KiB">1048576</memory><vcpu>1</vcpu><os><type>hvm</type>` + boots.String() +
		`</os><metadata><drpipe:vm xmlns:drpipe="urn:drpipe:inventory:1">` + meta.String() + `</drpipe:vm></metadata><devices>` + disks.String() + `</devices></domain>`
	t0 := time.Now()
	if _, err := Import("big01.xml", []byte(doc), ImportOptions{Host: "kvm01"}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 4*time.Second {
		t.Errorf("import took %v", d)
	}
}

// TestLibvirtUnknownDiskBus: a disk on a bus no KVM DR host offers (a Xen
// guest's xen bus) is imported on a bus the DR definition can use, with
// a warning, not carried into a definition libvirt refuses.
func TestLibvirtUnknownDiskBus(t *testing.T) {
	doc := `<domain type="xen"><name>xen01</name><memory unit="KiB">1048576</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>
<disk type="file" device="disk"><driver name="qemu" type="raw"/><source file="/var/lib/xen/images/xen01.img"/><target dev="xvda" bus="xen"/></disk>
<disk type="file" device="disk"><driver name="qemu" type="raw"/><source file="/var/lib/xen/images/xen01-data.img"/><target dev="sdb" bus="virdio"/></disk>
</devices></domain>`
	inv, err := Import("xen01.xml", []byte(doc), ImportOptions{Host: "kvm01"})
	if err != nil {
		t.Fatal(err)
	}
	d := inv.VMs[0].Disks
	if d[0].Controller != "virtio" || d[1].Controller != "scsi" {
		t.Errorf("buses %q and %q, want virtio and scsi", d[0].Controller, d[1].Controller)
	}
	n := 0
	for _, w := range inv.Warnings {
		if strings.HasSuffix(w.Field, "/target/@bus") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d warnings about the buses, want 2: %v", n, inv.Warnings)
	}
	x, err := DomainXML(&inv.VMs[0], DomainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(x), `bus="xen"`) || strings.Contains(string(x), `bus="virdio"`) {
		t.Errorf("generated definition keeps the unknown bus:\n%s", x)
	}
}

// TestLibvirtOSNotCarried: what <os> holds besides the firmware and boot
// order and the DR definition does not carry — the UEFI variable store
// with the guest's boot entries, a kernel booted directly from the host —
// is warned about, not dropped without a word.
func TestLibvirtOSNotCarried(t *testing.T) {
	doc := `<domain type="kvm"><name>deb01</name><memory unit="KiB">2097152</memory><vcpu>2</vcpu>
  <os firmware="efi">
    <type arch="x86_64" machine="pc-q35-8.2">hvm</type>
    <loader readonly="yes" type="pflash">/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template="/usr/share/OVMF/OVMF_VARS_4M.fd">/var/lib/libvirt/qemu/nvram/deb01_VARS.fd</nvram>
    <kernel>/var/lib/libvirt/boot/vmlinuz-6.1.0-28-amd64</kernel>
    <initrd>/var/lib/libvirt/boot/initrd.img-6.1.0-28-amd64</initrd>
    <cmdline>root=/dev/vda2 console=ttyS0</cmdline>
    <bootmenu enable="yes"/>
    <boot dev="hd"/>
  </os>
  <devices>
    <disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/var/lib/libvirt/images/deb01.qcow2"/><target dev="vda" bus="virtio"/></disk>
  </devices></domain>`
	inv, err := Import("deb01.xml", []byte(doc), ImportOptions{Host: "kvm01"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, w := range inv.Warnings {
		got[w.Field] = true
	}
	for _, f := range []string{"os/nvram", "os/kernel", "os/initrd", "os/cmdline"} {
		if !got[f] {
			t.Errorf("no warning for %s: %v", f, inv.Warnings)
		}
	}
	if got["os/bootmenu"] {
		t.Errorf("a warning for the boot menu, which changes nothing the guest needs: %v", inv.Warnings)
	}
}

// TestLibvirtNetworkDHCPNotCarried: the fixed addresses a libvirt
// network's DHCP server hands to its guests by MAC, and the ranges after
// the first, are warned about, not dropped without a word: a guest that
// took its address from a reservation gets another at the DR site.
func TestLibvirtNetworkDHCPNotCarried(t *testing.T) {
	doc := `<network>
  <name>default</name>
  <forward mode="nat"/>
  <bridge name="virbr0" stp="on" delay="0"/>
  <ip address="192.168.122.1" netmask="255.255.255.0">
    <dhcp>
      <range start="192.168.122.100" end="192.168.122.149"/>
      <range start="192.168.122.200" end="192.168.122.249"/>
      <host mac="52:54:00:aa:bb:01" name="db01" ip="192.168.122.5"/>
      <host mac="52:54:00:aa:bb:02" name="web01" ip="192.168.122.6"/>
    </dhcp>
  </ip>
</network>`
	inv, err := Import("net-default.xml", []byte(doc), ImportOptions{Host: "kvm01"})
	if err != nil {
		t.Fatal(err)
	}
	var hosts, ranges bool
	for _, w := range inv.Warnings {
		if w.Field == "ip[1]/dhcp/host" && strings.Contains(w.Message, "2 ") {
			hosts = true
		}
		if w.Field == "ip[1]/dhcp/range" && strings.Contains(w.Message, "192.168.122.200") {
			ranges = true
		}
	}
	if !hosts || !ranges {
		t.Errorf("warnings %v, want the 2 DHCP reservations and the second range named", inv.Warnings)
	}
}

// TestLibvirtDiskSettingsNotCarried: a disk's settings the guest depends
// on and the DR definition does not carry — LUKS encryption, the serial
// number a guest may mount it by, a 4 KiB logical sector size its
// partition table is written in — are warned about, not dropped without
// a word; what live XML adds (alias, backing chain, I/O limits) is not.
func TestLibvirtDiskSettingsNotCarried(t *testing.T) {
	doc := `<domain type="kvm"><name>db01</name><memory unit="KiB">2097152</memory><vcpu>2</vcpu><os><type>hvm</type></os>
  <devices>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/var/lib/libvirt/images/db01.qcow2" index="2"/>
      <backingStore type="file" index="3"><format type="qcow2"/><source file="/var/lib/libvirt/images/base.qcow2"/><backingStore/></backingStore>
      <target dev="vda" bus="virtio"/>
      <iotune><total_iops_sec>2000</total_iops_sec></iotune>
      <alias name="virtio-disk0"/>
    </disk>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/var/lib/libvirt/images/db01-data.qcow2">
        <encryption format="luks"><secret type="passphrase" uuid="0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f"/></encryption>
      </source>
      <target dev="vdb" bus="virtio"/>
      <serial>DB01-DATA</serial>
      <blockio logical_block_size="4096" physical_block_size="4096"/>
    </disk>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/var/lib/libvirt/images/db01-logs.qcow2"/>
      <target dev="vdc" bus="virtio"/>
      <encryption format="luks"><secret type="passphrase" uuid="1b81f5b2-8403-7b23-c8d6-21ccc2f80d6f"/></encryption>
    </disk>
  </devices></domain>`
	inv, err := Import("db01.xml", []byte(doc), ImportOptions{Host: "kvm01"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, w := range inv.Warnings {
		got[w.Field] = true
	}
	for _, f := range []string{"devices/disk[2]/source/encryption", "devices/disk[2]/serial", "devices/disk[2]/blockio", "devices/disk[3]/encryption"} {
		if !got[f] {
			t.Errorf("no warning for %s: %v", f, inv.Warnings)
		}
	}
	for f := range got {
		if strings.HasPrefix(f, "devices/disk[1]") {
			t.Errorf("warning for %s, which the DR definition needs not carry: %v", f, inv.Warnings)
		}
	}
}

// TestLibvirtInterfaceSettingsNotCarried: an interface's settings the
// DR definition does not carry — its MTU, a link set down, the traffic
// filter and port isolation that keep a guest from spoofing or reaching
// its neighbours, bandwidth limits — are warned about, not dropped
// without a word; what live XML adds (target, alias, address) is not.
func TestLibvirtInterfaceSettingsNotCarried(t *testing.T) {
	doc := `<domain type="kvm"><name>web01</name><memory unit="KiB">2097152</memory><vcpu>2</vcpu><os><type>hvm</type></os>
  <devices>
    <disk type="file" device="disk"><driver name="qemu" type="qcow2"/><source file="/var/lib/libvirt/images/web01.qcow2"/><target dev="vda" bus="virtio"/></disk>
    <interface type="network">
      <mac address="52:54:00:0b:00:01"/>
      <source network="lan" portid="0d9a1f4c-5b8e-4e57-9c1b-2f0e7d6a3b21" bridge="virbr1"/>
      <target dev="vnet3"/>
      <model type="virtio"/>
      <link state="up"/>
      <port isolated="no"/>
      <alias name="net0"/>
      <address type="pci" domain="0x0000" bus="0x01" slot="0x00" function="0x0"/>
    </interface>
    <interface type="bridge">
      <mac address="52:54:00:0b:00:02"/>
      <source bridge="br-storage"/>
      <model type="virtio"/>
      <mtu size="9000"/>
      <link state="down"/>
      <filterref filter="clean-traffic"><parameter name="IP" value="10.0.0.5"/></filterref>
      <port isolated="yes"/>
      <bandwidth><inbound average="1000"/></bandwidth>
    </interface>
  </devices></domain>`
	inv, err := Import("web01.xml", []byte(doc), ImportOptions{Host: "kvm01"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, w := range inv.Warnings {
		got[w.Field] = true
	}
	for _, e := range []string{"mtu", "link", "filterref", "port", "bandwidth"} {
		if f := "devices/interface[2]/" + e; !got[f] {
			t.Errorf("no warning for %s: %v", f, inv.Warnings)
		}
	}
	for f := range got {
		if strings.HasPrefix(f, "devices/interface[1]") {
			t.Errorf("warning for %s, which the DR definition needs not carry: %v", f, inv.Warnings)
		}
	}
}
