package drsite

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustImport(t *testing.T, name string, host string) *Inventory {
	t.Helper()
	inv, err := Import(name, readFixture(t, name), ImportOptions{Host: host})
	if err != nil {
		t.Fatalf("import %s: %v", name, err)
	}
	return inv
}

func hasWarning(inv *Inventory, field, substr string) bool {
	for _, w := range inv.Warnings {
		if strings.Contains(w.Field, field) && strings.Contains(w.Message, substr) {
			return true
		}
	}
	return false
}

const GiB = int64(1) << 30

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		file string
		want Format
	}{
		{"libvirt/dc01.xml", FormatLibvirtDomain},
		{"libvirt/test-default.xml", FormatLibvirtDomain},
		{"libvirt/web01-virtinst.xml", FormatLibvirtDomain},
		{"libvirt/net-lan.xml", FormatLibvirtNetwork},
		{"hyperv/hv01-inventory.json", FormatHyperV},
		{"ovf/app01.ovf", FormatOVF},
		{"yaml/hv02.yaml", FormatYAML},
	} {
		got, err := Detect(readFixture(t, tc.file))
		if err != nil || got != tc.want {
			t.Errorf("Detect(%s) = %q, %v; want %q", tc.file, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "   ", "<html><body/></html>", "[1,2]", `{"x":1}`} {
		if _, err := Detect([]byte(bad)); !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("Detect(%q) error %v, want ErrUnknownFormat", bad, err)
		}
	}
}

// TestImportLibvirt checks the fields read from XML that libvirt itself
// wrote (virsh dumpxml after define, virt-install --print-xml, the test
// driver's own domain).
func TestImportLibvirt(t *testing.T) {
	dc := mustImport(t, "libvirt/dc01.xml", "kvm01").VMs[0]
	want := VM{Name: "dc01", ID: "9f1c2a3b-4d5e-4f60-8a7b-1c2d3e4f5a60", Host: "kvm01", Source: "libvirt", Firmware: FirmwareUEFI, SecureBoot: true,
		Arch: "x86_64", Machine: "q35", VCPUs: 4, CPU: CPU{Mode: "host-passthrough", Sockets: 1, Cores: 2, Threads: 2},
		Memory:       Memory{StartupBytes: 4 * GiB, Dynamic: true, MaxBytes: 8 * GiB},
		Disks:        []Disk{{File: "/var/lib/libvirt/images/dc01.qcow2", Format: "qcow2", Device: "disk", VirtualSize: 64 * GiB, Controller: "virtio", Target: "vda", BootOrder: 1}},
		NICs:         []NIC{{MAC: "52:54:00:0a:10:0a", Switch: "lan", Kind: "network", Model: "virtio", VirtualPort: "openvswitch", VLAN: &VLAN{Mode: VLANAccess, ID: 10}, IPv4: []string{"10.0.10.10/24"}, IPv6: []string{"2001:db8:10::10/64"}, Gateway4: "10.0.10.1", DNS: []string{"10.0.10.10", "10.0.10.11"}}},
		BootPriority: 1, AntiAffinity: "dc", Verify: []string{"tcp:10.0.10.10:389"}, Notes: "Primary AD domain controller and DNS for corp.example."}
	if !reflect.DeepEqual(dc, want) {
		gj, _ := json.MarshalIndent(dc, "", " ")
		wj, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("dc01:\ngot  %s\nwant %s", gj, wj)
	}
	inv := mustImport(t, "libvirt/dc01.xml", "kvm01")
	for _, w := range [][2]string{{"clock/@offset", "localtime"}, {"features/hyperv", "not carried"}, {"devices/tpm", "TPM"}, {"devices/disk[2]", "cdrom drive without media"}} {
		if !hasWarning(inv, w[0], w[1]) {
			t.Errorf("dc01: no warning %q ~ %q in %v", w[0], w[1], inv.Warnings)
		}
	}

	fs := mustImport(t, "libvirt/fs01.xml", "kvm01")
	v := fs.VMs[0]
	if v.Firmware != FirmwareBIOS || v.Machine != "pc" || v.VCPUs != 8 || v.Memory != (Memory{StartupBytes: 16 * GiB}) || v.CPU != (CPU{Mode: "custom", Model: "Skylake-Server-IBRS", Sockets: 2, Cores: 4, Threads: 1}) {
		t.Errorf("fs01 basics: %+v", v)
	}
	wantDisks := []Disk{
		{File: "/var/lib/libvirt/images/fs01-system.raw", Format: "raw", Device: "disk", Controller: "scsi", Target: "sda", BootOrder: 1},
		{File: "/srv/vmdata/fs01-data.qcow2", Format: "qcow2", Device: "disk", Controller: "scsi", Unit: 1, Target: "sdb"},
		{File: "/srv/vmdata/fs01-legacy.vhd", Format: "vhd", Device: "disk", Controller: "ide", ControllerIndex: 1, Target: "hda"},
	}
	if !reflect.DeepEqual(v.Disks, wantDisks) {
		t.Errorf("fs01 disks\ngot  %+v\nwant %+v", v.Disks, wantDisks)
	}
	if n := v.NICs[0]; n.Switch != "br-srv" || n.Kind != "bridge" || !reflect.DeepEqual(n.VLAN, &VLAN{Mode: VLANTrunk, Trunk: []int{20, 30, 31}, Native: 20, NativeMode: "untagged"}) {
		t.Errorf("fs01 trunk NIC: %+v %+v", n, n.VLAN)
	}
	if n := v.NICs[1]; n.Switch != "backup" || n.Model != "e1000e" || n.VLAN != nil {
		t.Errorf("fs01 second NIC: %+v", n)
	}
	if v.BootPriority != 3 || !reflect.DeepEqual(v.DependsOn, []string{"dc01"}) {
		t.Errorf("fs01 DR metadata: priority %d depends %v", v.BootPriority, v.DependsOn)
	}
	if !hasWarning(fs, "devices/hostdev", "passthrough") {
		t.Errorf("fs01: hostdev not reported: %v", fs.Warnings)
	}

	test := mustImport(t, "libvirt/test-default.xml", "kvm01").VMs[0]
	if test.Name != "test" || test.VCPUs != 2 || test.Memory.StartupBytes != 2*GiB || test.Memory.MaxBytes != 8*GiB || test.Arch != "i686" ||
		test.Disks[0].File != "/guest/diskimage1" || test.Disks[0].BootOrder != 1 || test.NICs[0].MAC != "aa:bb:cc:dd:ee:ff" || test.NICs[0].Switch != "default" {
		t.Errorf("test driver domain: %+v", test)
	}
	vi := mustImport(t, "libvirt/web01-virtinst.xml", "kvm01")
	w := vi.VMs[0]
	if w.VCPUs != 4 || w.CPU.Threads != 2 || w.Memory.StartupBytes != 4*GiB || w.Memory.MaxBytes != 8*GiB || len(w.Disks) != 2 || w.Disks[1].Controller != "scsi" ||
		w.NICs[1].Switch != "br-dmz" || w.NICs[1].Kind != "bridge" || w.NICs[1].Model != "e1000" {
		t.Errorf("virt-install domain: %+v", w)
	}
	if !hasWarning(vi, "devices/disk[1]/driver/@type", "no format") {
		t.Errorf("virt-install: missing disk format not reported: %v", vi.Warnings)
	}

	lan := mustImport(t, "libvirt/net-lan.xml", "kvm01").Hosts[0].Switches[0]
	if lan.Name != "lan" || lan.Type != SwitchExternal || lan.Mode != "bridge" || lan.Bridge != "ovsbr0" || lan.VirtualPort != "openvswitch" ||
		!reflect.DeepEqual(lan.VLANs, []int{1, 10, 20, 30}) || len(lan.Portgroups) != 3 || !lan.Portgroups[0].Default || lan.Portgroups[1].VLAN.ID != 20 {
		t.Errorf("net-lan: %+v", lan)
	}
	bk := mustImport(t, "libvirt/net-backup.xml", "kvm01").Hosts[0].Switches[0]
	if bk.Type != SwitchPrivate || bk.Bridge != "virbr-bk" || !reflect.DeepEqual(bk.Subnets, []Subnet{{"172.16.99.1/24", "172.16.99.100", "172.16.99.200"}, {Address: "fd00:99::1/64"}}) {
		t.Errorf("net-backup: %+v", bk)
	}
	def := mustImport(t, "libvirt/net-default.xml", "kvm01").Hosts[0].Switches[0]
	if def.Type != SwitchInternal || def.Mode != "nat" || def.Subnets[0].Address != "192.168.122.1/24" {
		t.Errorf("net-default: %+v", def)
	}
}

// TestImportHyperV reads collector output in the shape Windows
// PowerShell 5.1's ConvertTo-Json writes (CRLF, odd indentation, enums as
// numbers, \u0027 escapes), also as UTF-16 with BOM and with single
// results not wrapped in lists.
func TestImportHyperV(t *testing.T) {
	raw := readFixture(t, "hyperv/hv01-inventory.json")
	check := func(t *testing.T, inv *Inventory) {
		t.Helper()
		h := inv.Hosts[0]
		if h.Name != "HV01" || h.Hypervisor != "hyperv" || h.Resources.VCPUs != 48 || h.Resources.MemoryBytes != 412316860416 || len(h.Switches) != 3 {
			t.Fatalf("host: %+v", h)
		}
		ext := h.Switches[2]
		if ext.Name != "LAN-External" || ext.Type != SwitchExternal || ext.Uplink != "SLOT 2 Port 1" || !reflect.DeepEqual(ext.VLANs, []int{10, 20, 30, 31, 32}) {
			t.Errorf("external switch: %+v", ext)
		}
		if h.Switches[0].Type != SwitchPrivate || h.Switches[1].Type != SwitchInternal {
			t.Errorf("switch types: %+v", h.Switches)
		}
		dc := inv.VM("DC02")
		if dc == nil || dc.Generation != 2 || dc.Firmware != FirmwareUEFI || !dc.SecureBoot || dc.VCPUs != 2 ||
			dc.Memory != (Memory{StartupBytes: 4 * GiB, Dynamic: true, MinBytes: 2 * GiB, MaxBytes: 8 * GiB}) {
			t.Fatalf("DC02: %+v", dc)
		}
		if d := dc.Disks[0]; d.File != `D:\Hyper-V\DC02\Virtual Hard Disks\DC02.vhdx` || d.Format != "vhdx" || d.VirtualSize != 60*GiB || d.Controller != "scsi" || d.BootOrder != 1 {
			t.Errorf("DC02 disk: %+v", d)
		}
		if n := dc.NICs[0]; n.MAC != "00:15:5d:0a:0b:02" || n.Switch != "LAN-External" || !reflect.DeepEqual(n.VLAN, &VLAN{Mode: VLANAccess, ID: 10}) ||
			!reflect.DeepEqual(n.IPv4, []string{"10.0.10.11/24"}) || n.IPv6 != nil || n.Gateway4 != "10.0.10.1" || !reflect.DeepEqual(n.DNS, []string{"10.0.10.10", "10.0.10.11"}) || n.BootOrder != 2 {
			t.Errorf("DC02 NIC: %+v %+v", n, n.VLAN)
		}
		if dc.BootPriority != 1 || dc.AntiAffinity != "dc" || !reflect.DeepEqual(dc.Verify, []string{"tcp:10.0.10.11:53"}) {
			t.Errorf("DC02 notes directives: %+v", dc)
		}
		sql := inv.VM("SQL01")
		if sql.Memory != (Memory{StartupBytes: 32 * GiB}) || len(sql.Disks) != 3 || sql.Disks[2].ControllerIndex != 1 || sql.Disks[1].Unit != 1 ||
			!reflect.DeepEqual(sql.DependsOn, []string{"DC02"}) {
			t.Errorf("SQL01: %+v", sql)
		}
		if v := sql.NICs[0].VLAN; !reflect.DeepEqual(v, &VLAN{Mode: VLANTrunk, Trunk: []int{20, 30, 31, 32}, Native: 20, NativeMode: "untagged"}) {
			t.Errorf("SQL01 trunk: %+v", v)
		}
		if n := sql.NICs[1]; !n.DHCP || n.Switch != "Internal-Mgmt" {
			t.Errorf("SQL01 mgmt NIC: %+v", n)
		}
		leg := inv.VM("LEGACY01")
		if leg.Generation != 1 || leg.Firmware != FirmwareBIOS || leg.Disks[0].Controller != "ide" || leg.Disks[0].Format != "vhd" ||
			leg.Disks[1].Device != "cdrom" || leg.Disks[1].BootOrder != 1 || leg.Disks[0].BootOrder != 2 || leg.NICs[0].Model != "e1000" || leg.NICs[0].MAC != "" {
			t.Errorf("LEGACY01: %+v", leg)
		}
		for _, w := range [][2]string{{"LEGACY01].NetworkAdapters[0].MacAddress", "dynamic MAC not yet assigned"},
			{"LEGACY01].NetworkAdapters[0].GuestNetworkConfiguration", "re-IP cannot be planned"}, {"LEGACY01].DvdDrives[0]", "tools.iso"}} {
			if !hasWarning(inv, w[0], w[1]) {
				t.Errorf("no warning %q ~ %q: %v", w[0], w[1], inv.Warnings)
			}
		}
	}
	t.Run("utf8", func(t *testing.T) { check(t, mustImportBytes(t, raw)) })
	t.Run("utf16-bom", func(t *testing.T) {
		u := utf16.Encode([]rune(string(raw)))
		b := []byte{0xFF, 0xFE}
		for _, c := range u {
			b = append(b, byte(c), byte(c>>8))
		}
		check(t, mustImportBytes(t, b))
	})
	t.Run("unwrapped-single-results-and-enum-names", func(t *testing.T) {
		var doc map[string]any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		for _, v := range doc["VMs"].([]any) {
			vm := v.(map[string]any)
			if l := vm["NetworkAdapters"].([]any); len(l) == 1 {
				vm["NetworkAdapters"] = l[0]
			}
			if vm["Name"] == "DC02" {
				vm["HardDrives"].([]any)[0].(map[string]any)["ControllerType"] = "SCSI"
				vm["HardDrives"].([]any)[0].(map[string]any)["VhdFormat"] = "VHDX"
			}
		}
		doc["Switches"].([]any)[0].(map[string]any)["SwitchType"] = "External"
		b, _ := json.Marshal(doc)
		check(t, mustImportBytes(t, b))
	})
}

func mustImportBytes(t *testing.T, b []byte) *Inventory {
	t.Helper()
	inv, err := Import("hv01.json", b, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestImportOVF(t *testing.T) {
	inv := mustImport(t, "ovf/app01.ovf", "esx01")
	v := inv.VMs[0]
	if v.Name != "app01" || v.Host != "esx01" || v.Firmware != FirmwareUEFI || !v.SecureBoot || v.VCPUs != 4 || v.CPU.Sockets != 2 || v.CPU.Cores != 2 || v.Memory.StartupBytes != 8*GiB {
		t.Errorf("app01: %+v", v)
	}
	want := []Disk{
		{File: "app01-disk1.vmdk", Format: "vmdk", Device: "disk", VirtualSize: 40 * GiB, Controller: "scsi"},
		{File: "app01-disk2.vmdk", Format: "vmdk", Device: "disk", VirtualSize: 200 * GiB, Controller: "scsi", Unit: 1},
		{File: "app01-file1.iso", Format: "iso", Device: "cdrom", Controller: "sata", ReadOnly: true},
	}
	if !reflect.DeepEqual(v.Disks, want) {
		t.Errorf("disks\ngot  %+v\nwant %+v", v.Disks, want)
	}
	if len(v.NICs) != 2 || v.NICs[0].MAC != "00:50:56:8a:3c:01" || v.NICs[0].Switch != "VM Network" || v.NICs[0].Model != "vmxnet3" || v.NICs[1].Switch != "DMZ-VLAN40" || v.NICs[1].Model != "e1000e" {
		t.Errorf("NICs: %+v", v.NICs)
	}
	if v.BootPriority != 4 || !reflect.DeepEqual(v.DependsOn, []string{"dc01", "sql01"}) {
		t.Errorf("annotation directives: %+v", v)
	}
	if !hasWarning(inv, "Item[9]", "no guest IP configuration") || !hasWarning(inv, "Network[VM Network]", "recorded as external") {
		t.Errorf("warnings: %v", inv.Warnings)
	}
}

func TestImportYAML(t *testing.T) {
	inv := mustImport(t, "yaml/hv02.yaml", "ignored")
	if h := inv.Hosts[0]; h.Name != "hv02" || h.Resources.MemoryBytes != 256*GiB || h.Resources.StorageBytes != 4<<40 || len(h.Switches) != 2 {
		t.Errorf("host: %+v", h)
	}
	mon := inv.VM("mon01")
	if mon.Memory != (Memory{StartupBytes: 2 * GiB, Dynamic: true, MinBytes: 1 * GiB, MaxBytes: 4 * GiB}) || mon.Firmware != FirmwareUEFI ||
		!reflect.DeepEqual(mon.NICs[0].VLAN, &VLAN{Mode: VLANTrunk, Trunk: []int{10, 20}, Native: 20, NativeMode: "untagged"}) || !mon.NICs[1].DHCP || mon.BootPriority != 5 {
		t.Errorf("mon01: %+v", mon)
	}
	dns := inv.VM("dns01")
	if dns.Disks[0].VirtualSize != 10*GiB || dns.NICs[0].VLAN.ID != 10 || dns.NICs[0].IPv4[0] != "10.0.10.53/24" {
		t.Errorf("dns01: %+v", dns)
	}
	if len(inv.Warnings) != 0 {
		t.Errorf("unexpected warnings: %v", inv.Warnings)
	}
	// Unknown keys are reported, not silently dropped.
	inv2, err := Import("x.yaml", []byte("vms:\n  - name: a\n    vcpus: 1\n    memroy: 1GiB\n    disks: [{file: /a.raw, format: raw, size: 1GiB}]\n"), ImportOptions{Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if !hasWarning(inv2, "vms[0].memroy", "unknown field") || !hasWarning(inv2, "vms[a].memory", "missing") {
		t.Errorf("typo not reported: %v", inv2.Warnings)
	}
}

// TestImportErrorsNameFileAndField: malformed values fail with the file
// and the field.
func TestImportErrorsNameFileAndField(t *testing.T) {
	dc := string(readFixture(t, "libvirt/dc01.xml"))
	hv := string(readFixture(t, "hyperv/hv01-inventory.json"))
	cases := []struct {
		name, data, file, field string
	}{
		{"bad MAC in libvirt XML", strings.Replace(dc, "52:54:00:0a:10:0a'/>", "52:54:00:zz:10:0a'/>", 1), "dc01.xml", "devices/interface[1]/mac/@address"},
		{"bad memory in libvirt XML", strings.Replace(dc, "<memory unit='KiB'>8388608", "<memory unit='KiB'>8GB", 1), "dc01.xml", "memory"},
		{"bad VLAN tag", strings.Replace(dc, "<tag id='10'/>", "<tag id='9999'/>", 1), "dc01.xml", "devices/interface[1]/vlan/tag[1]/@id"},
		{"unterminated XML", dc[:400], "dc01.xml", ""},
		{"bad MAC in Hyper-V JSON", strings.ReplaceAll(hv, `"00155D0A0B02"`, `"00155D0A0BZZ"`), "hv.json", "VMs[DC02].NetworkAdapters[0].MacAddress"},
		{"truncated by ConvertTo-Json depth", strings.Replace(hv, `"Processor":  {`, `"Processor":  "Microsoft.HyperV.PowerShell.VMProcessor", "X": {`, 1), "hv.json", "VMs[0].Processor"},
		{"bad YAML value", "vms:\n  - name: a\n    vcpus: many\n", "inv.yaml", "vms[0].vcpus"},
		{"bad YAML address", "vms:\n  - name: a\n    vcpus: 1\n    memory: 1GiB\n    nics: [{mac: '52:54:00:00:00:01', switch: s, ipv4: [10.0.0.300/24]}]\n", "inv.yaml", "vms[a].nics[0].ipv4"},
		{"duplicate VM name", "vms:\n  - {name: a, vcpus: 1, memory: 1GiB}\n  - {name: a, vcpus: 1, memory: 1GiB}\n", "inv.yaml", "vms[a].name"},
		{"YAML alias bomb refused", "a: &a [1,2]\nvms: *a\n", "inv.yaml", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Import(tc.file, []byte(tc.data), ImportOptions{Host: "h"})
			if err == nil {
				t.Fatal("no error")
			}
			var fe *FieldError
			if !errors.As(err, &fe) && tc.field != "" {
				t.Fatalf("error %v is not a FieldError", err)
			}
			if !strings.Contains(err.Error(), tc.file) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name file %q and field %q", err, tc.file, tc.field)
			}
		})
	}
}

func stripSource(inv *Inventory) []VM {
	out := append([]VM(nil), inv.VMs...)
	return out
}

// TestLibvirtRoundTrip: libvirt XML → model → DomainXML → model keeps
// CPU, memory, disks, NICs and VLANs (and everything else the model
// holds).
func TestLibvirtRoundTrip(t *testing.T) {
	for _, f := range []string{"libvirt/dc01.xml", "libvirt/fs01.xml", "libvirt/test-default.xml", "libvirt/web01-virtinst.xml"} {
		t.Run(f, func(t *testing.T) {
			a := mustImport(t, f, "kvm01")
			x, err := DomainXML(&a.VMs[0], DomainOptions{Type: "kvm"})
			if err != nil {
				t.Fatal(err)
			}
			b, err := Import("regen.xml", x, ImportOptions{Host: "kvm01"})
			if err != nil {
				t.Fatalf("re-import: %v\n%s", err, x)
			}
			want := a.VMs[0]
			// Formats the source left out are written as raw.
			for i := range want.Disks {
				if want.Disks[i].Format == "" {
					want.Disks[i].Format = "raw"
				}
			}
			if want.Machine == "" && want.Arch == "i686" {
				want.Machine = "pc"
			}
			if !reflect.DeepEqual(b.VMs[0], want) {
				gj, _ := json.MarshalIndent(b.VMs[0], "", " ")
				wj, _ := json.MarshalIndent(want, "", " ")
				t.Errorf("round trip changed the VM\ngot  %s\nwant %s\nXML:\n%s", gj, wj, x)
			}
		})
	}
	for _, f := range []string{"libvirt/net-lan.xml", "libvirt/net-backup.xml", "libvirt/net-default.xml"} {
		t.Run(f, func(t *testing.T) {
			a := mustImport(t, f, "kvm01")
			x, err := NetworkXML(&a.Hosts[0].Switches[0])
			if err != nil {
				t.Fatal(err)
			}
			b, err := Import("regen-net.xml", x, ImportOptions{Host: "kvm01"})
			if err != nil {
				t.Fatalf("re-import: %v\n%s", err, x)
			}
			if !reflect.DeepEqual(b.Hosts[0].Switches[0], a.Hosts[0].Switches[0]) {
				t.Errorf("network round trip:\ngot  %+v\nwant %+v\n%s", b.Hosts[0].Switches[0], a.Hosts[0].Switches[0], x)
			}
		})
	}
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed: run scripts/deps.sh (make deps)", name)
	}
	return p
}

// TestGeneratedXMLAcceptedByLibvirt validates generated domain and network
// XML with virt-xml-validate and defines them in libvirt's test driver;
// libvirt's own dumpxml of the defined objects re-imports to the same
// model (round trip through libvirt itself).
func TestGeneratedXMLAcceptedByLibvirt(t *testing.T) {
	needTool(t, "virsh")
	needTool(t, "virt-xml-validate")
	needTool(t, "xmllint")
	dir := t.TempDir()
	var vms []VM
	for _, f := range []string{"libvirt/dc01.xml", "libvirt/fs01.xml", "libvirt/web01-virtinst.xml"} {
		vms = append(vms, mustImport(t, f, "kvm01").VMs...)
	}
	hv := mustImport(t, "hyperv/hv01-inventory.json", "")
	for _, v := range hv.VMs {
		// Hyper-V images go to libvirt as qcow2 (bringup converts VHDX).
		for i := range v.Disks {
			if v.Disks[i].Format == "vhdx" {
				v.Disks[i].Format = "qcow2"
			}
			v.Disks[i].File = "/dr/images/" + winBase(v.Disks[i].File)
		}
		vms = append(vms, v)
	}
	yv := mustImport(t, "yaml/hv02.yaml", "")
	vms = append(vms, yv.VMs...)
	var switches []Switch
	for _, f := range []string{"libvirt/net-lan.xml", "libvirt/net-backup.xml", "libvirt/net-default.xml"} {
		s := mustImport(t, f, "kvm01").Hosts[0].Switches[0]
		s.Name += "-dr"
		s.ID = ""
		if s.Bridge != "" {
			s.Bridge += "x"
		}
		switches = append(switches, s)
	}
	switches = append(switches, *DRSwitch(&DRNetwork{Name: "dr-iso", Type: SwitchPrivate, Address: "10.99.0.1/24"}), *DRSwitch(&DRNetwork{Name: "dr-nat", Type: SwitchInternal, Address: "10.98.0.1/24"}))
	var script []string
	for i := range vms {
		vm := &vms[i]
		x, err := DomainXML(vm, DomainOptions{Type: "kvm", Graphics: true})
		if err != nil {
			t.Fatalf("%s: %v", vm.Name, err)
		}
		f := filepath.Join(dir, vm.Name+".xml")
		os.WriteFile(f, x, 0o644)
		if out, err := exec.Command("virt-xml-validate", f, "domain").CombinedOutput(); err != nil {
			t.Errorf("virt-xml-validate %s: %v\n%s\n%s", vm.Name, err, out, x)
		}
		script = append(script, "define "+f, "dumpxml "+vm.Name)
	}
	for i := range switches {
		x, err := NetworkXML(&switches[i])
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "net-"+switches[i].Name+".xml")
		os.WriteFile(f, x, 0o644)
		if out, err := exec.Command("virt-xml-validate", f, "network").CombinedOutput(); err != nil {
			t.Errorf("virt-xml-validate %s: %v\n%s\n%s", switches[i].Name, err, out, x)
		}
		script = append(script, "net-define "+f, "net-dumpxml "+switches[i].Name)
	}
	// One virsh session: the test driver keeps state per connection.
	ctx := t.Context()
	v, err := StartVirsh(ctx, "test:///default")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for i := 0; i < len(script); i += 2 {
		def := strings.Fields(script[i])
		if _, err := v.Run(ctx, def...); err != nil {
			t.Errorf("%v", err)
			continue
		}
		dump := strings.Fields(script[i+1])
		out, err := v.Run(ctx, dump...)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		re, err := Import("dumpxml", []byte(out), ImportOptions{Host: "kvm01"})
		if err != nil {
			t.Errorf("re-import %s: %v", dump[1], err)
			continue
		}
		if dump[0] == "dumpxml" {
			var orig *VM
			for k := range vms {
				if vms[k].Name == dump[1] {
					orig = &vms[k]
				}
			}
			want := *orig
			want.Host, want.Source = "kvm01", "libvirt"
			if want.ID == "" { // libvirt assigns a UUID
				want.ID = re.VMs[0].ID
			}
			if want.Machine == "" {
				want.Machine = map[bool]string{true: "q35", false: "pc"}[want.Firmware == FirmwareUEFI]
			}
			if want.Arch == "" {
				want.Arch = "x86_64"
			}
			if want.Generation == 1 || want.Machine == "pc" {
				// unchanged
			}
			for k := range want.Disks {
				if want.Disks[k].Target == "" || busFromTarget(want.Disks[k].Target) != busPrefixBus(want.Disks[k].Controller) {
					want.Disks[k].Target = re.VMs[0].Disks[k].Target
				}
				if want.Disks[k].Controller == "ide" && want.Machine == "q35" {
					want.Disks[k].Controller = "sata"
				}
				if want.Disks[k].Format == "iso" || want.Disks[k].Format == "" {
					want.Disks[k].Format = "raw"
				}
			}
			for k := range want.NICs {
				if want.NICs[k].Kind == "" {
					want.NICs[k].Kind = "network"
				}
				if want.NICs[k].MAC == "" { // libvirt assigns one; the name travels with the MAC only
					want.NICs[k].MAC, want.NICs[k].Name = re.VMs[0].NICs[k].MAC, ""
				}
			}
			got := re.VMs[0]
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s changed through libvirt:\n%s", dump[1], jsonDiff(got, want))
			}
		}
	}
}

// jsonDiff shows the lines of two values' JSON that differ.
func jsonDiff(got, want any) string {
	g, _ := json.MarshalIndent(got, "", " ")
	w, _ := json.MarshalIndent(want, "", " ")
	gl, wl := strings.Split(string(g), "\n"), strings.Split(string(w), "\n")
	var out []string
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var a, b string
		if i < len(gl) {
			a = gl[i]
		}
		if i < len(wl) {
			b = wl[i]
		}
		if a != b {
			out = append(out, fmt.Sprintf("line %d: got %s | want %s", i+1, strings.TrimSpace(a), strings.TrimSpace(b)))
		}
	}
	return strings.Join(out, "\n")
}

// TestImportVirtInstallLive imports what virt-install --print-xml writes
// today (not only the committed fixture).
func TestImportVirtInstallLive(t *testing.T) {
	needTool(t, "virt-install")
	out, err := exec.Command("virt-install", "--connect", "test:///default", "--print-xml", "--name", "live01",
		"--memory", "2048,maxmemory=4096", "--vcpus", "2,sockets=1,cores=2,threads=1",
		"--disk", "path=/var/lib/libvirt/images/live01.qcow2,size=8,bus=sata",
		"--network", "network=default,mac=52:54:00:77:00:01,model=virtio",
		"--osinfo", "linux2022", "--import", "--noautoconsole").Output()
	if err != nil {
		t.Fatalf("virt-install: %v", err)
	}
	inv, err := Import("live01.xml", out, ImportOptions{Host: "kvm01"})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	v := inv.VMs[0]
	if v.Name != "live01" || v.VCPUs != 2 || v.CPU.Cores != 2 || v.Memory.StartupBytes != 2*GiB || v.Memory.MaxBytes != 4*GiB ||
		len(v.Disks) != 1 || v.Disks[0].Controller != "sata" || v.Disks[0].File != "/var/lib/libvirt/images/live01.qcow2" ||
		len(v.NICs) != 1 || v.NICs[0].MAC != "52:54:00:77:00:01" || v.NICs[0].Switch != "default" || v.NICs[0].Model != "virtio" {
		t.Errorf("virt-install domain imported as %+v", v)
	}
}

// TestImportOVARefusedNamingTheDescriptor: an OVA (the tar archive
// ovftool and VirtualBox export, the OVF descriptor its first member) is
// refused saying so and how to get the descriptor out, not as text that
// is not UTF-8 or as malformed YAML.
func TestImportOVARefusedNamingTheDescriptor(t *testing.T) {
	for _, disk := range [][]byte{{'K', 'D', 'M', 'V', 1, 0, 0, 0, 0xff, 0xfe, 0x80}, []byte("text only\n")} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, m := range []struct {
			name string
			data []byte
		}{{"app01.ovf", readFixture(t, "ovf/app01.ovf")}, {"app01-disk1.vmdk", disk}} {
			if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Format: tar.FormatUSTAR}); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write(m.data); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		_, err := Import("app01.ova", buf.Bytes(), ImportOptions{Host: "esx01"})
		if !errors.Is(err, ErrUnknownFormat) || !strings.Contains(err.Error(), "OVA") || !strings.Contains(err.Error(), ".ovf") {
			t.Errorf("error %v, want an unknown format naming the OVA and its .ovf descriptor", err)
		}
	}
}
