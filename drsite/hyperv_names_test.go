package drsite

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestHyperVGen1KeepsRealSlots: a generation 1 VM from a Hyper-V
// inventory keeps the slots it has; a SCSI data disk listed before the
// IDE system disk (no boot order: the BIOS boots IDE) must not be moved
// onto IDE 0:0 and push the system disk aside, or the VM boots its data
// disk at the DR site.
func TestHyperVGen1KeepsRealSlots(t *testing.T) {
	for _, c := range []struct {
		name, disks string
		want        []string
	}{
		{"SCSI data disk listed first", `      - {file: 'C:\VMs\data.vhdx', format: vhdx, size: 1GiB, controller: scsi}
      - {file: 'C:\VMs\os.vhdx', format: vhdx, size: 1GiB, controller: ide}
`, []string{"HardDisk SCSI 0 0 data", "HardDisk IDE 0 0 os"}},
		{"a moved disk does not take a later disk's slot", `      - {file: 'C:\VMs\os.vhdx', format: vhdx, size: 1GiB, controller: ide, boot_order: 1}
      - {file: 'C:\VMs\tools.iso', format: raw, device: cdrom, controller: sata}
      - {file: 'C:\VMs\logs.vhdx', format: vhdx, size: 1GiB, controller: ide, unit: 1}
`, []string{"HardDisk IDE 0 0 os", "Dvd IDE 1 0 tools", "HardDisk IDE 0 1 logs"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := "  - name: hv1\n    vcpus: 1\n    memory: 1GiB\n    generation: 1\n    disks:\n" + c.disks
			got, _ := hyperVDiskSlots(t, vm)
			if strings.Join(got, "; ") != strings.Join(c.want, "; ") {
				t.Errorf("disk slots %q, want %q", got, c.want)
			}
		})
	}
}

// TestHyperVRefusesWindowsDeviceAndTrailingDotNames: besides the
// characters Windows refuses, a folder named for a device (aux, CON,
// com1.web) cannot be created, and a trailing dot or space is dropped
// ("web." would share the folder of "web"): such VMs are blocked on a
// Hyper-V DR host too, before bring-up fails halfway.
func TestHyperVRefusesWindowsDeviceAndTrailingDotNames(t *testing.T) {
	for _, name := range []string{"aux", "CON", "com1.web", "lpt9", "web."} {
		inv := "vms:\n  - {name: '" + name + "', vcpus: 1, memory: 1GiB, generation: 2, disks: [{file: 'C:\\VMs\\web.vhdx', format: vhdx, size: 1GiB, controller: scsi}]}\n"
		p := planFrom(t, "hosts:\n  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}\n", inv)
		if v := p.VM(name); v == nil || !v.Blocked {
			t.Errorf("VM %q on a Hyper-V host is not blocked: %v", name, p.BlockingIssues())
		}
	}
	for _, name := range []string{"auxiliary", "console", "com10", "web.1", "web"} {
		inv := "vms:\n  - {name: '" + name + "', vcpus: 1, memory: 1GiB, generation: 2, disks: [{file: 'C:\\VMs\\web.vhdx', format: vhdx, size: 1GiB, controller: scsi}]}\n"
		p := planFrom(t, "hosts:\n  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}\n", inv)
		if v := p.VM(name); v == nil || v.Blocked {
			t.Errorf("VM %q on a Hyper-V host blocked: %v", name, p.BlockingIssues())
		}
	}
}

// TestWindowsInvalidNameGoesToALibvirtHost: a VM whose name Windows
// refuses is placed on a libvirt host with room rather than blocked on
// the first Hyper-V host, where it also held capacity another VM could
// use.
func TestWindowsInvalidNameGoesToALibvirtHost(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr-hv, kind: hyperv, vcpus: 2, memory: 4GiB, storage: 1TiB}
  - {name: dr-kvm, kind: libvirt, vcpus: 2, memory: 4GiB, storage: 1TiB}
`, "vms:\n"+vmYAML("web:1", 2, "4GiB", "1GiB", "boot_priority: 1")+vmYAML("app", 2, "4GiB", "1GiB", "boot_priority: 2"))
	if v := p.VM("web:1"); v.Blocked || v.DRHost != "dr-kvm" {
		t.Errorf("web:1 on %q, blocked %v: %v", v.DRHost, v.Blocked, p.BlockingIssues())
	}
	if v := p.VM("app"); v.Blocked || v.DRHost != "dr-hv" {
		t.Errorf("app on %q, blocked %v: %v", v.DRHost, v.Blocked, p.BlockingIssues())
	}
}

// TestHyperVChecksUseDRAddresses: bringup.ps1 probes a VM's tcp: checks
// at the address the VM has after re-IP, as the libvirt bring-up does,
// not at its address on the primary site.
func TestHyperVChecksUseDRAddresses(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}
networks:
  - {name: dr-lan, type: external, uplink: 'SLOT 1', subnets: [10.50.0.0/16]}
network_map:
  - from: {switch: lan}
    to: {network: dr-lan}
reip:
  - {from: 10.0.0.0/16, to: 10.50.0.0/16}
`, "vms:\n"+vmYAML("web", 1, "1GiB", "1GiB", "generation: 2\nnics: [{mac: '00:15:5d:00:00:01', switch: lan, ipv4: [10.0.1.5/24]}]\nverify: ['tcp:10.0.1.5:443']"))
	if bi := p.BlockingIssues(); len(bi) > 0 {
		t.Fatal(bi)
	}
	res, err := Bringup(t.Context(), nil, p, BringupOptions{Out: t.TempDir(), NoRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.ReadFile(res.Hosts[0].Script)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(s), "Test-DrCheck 'tcp:10.50.1.5:443'") {
		t.Errorf("bringup.ps1 does not check web at its DR address 10.50.1.5:\n%s", s)
	}
}

// TestHyperVRunbookStepsTakeOneGroup: the runbook's steps by hand restore
// one boot group at a time (drsite bringup --group N), so the Hyper-V
// script they run for a group creates and starts that group's VMs only.
// Run whole, it would create the VMs of later groups over disks not yet
// restored: Add-VMHardDiskDrive fails, the script stops, and the VM left
// without disks is "already there" when its group's turn comes.
func TestHyperVRunbookStepsTakeOneGroup(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, "vms:\n"+vmYAML("db", 1, "1GiB", "1GiB", "boot_priority: 1")+vmYAML("web", 1, "1GiB", "1GiB", "boot_priority: 2"))
	if bi := p.BlockingIssues(); len(bi) > 0 || len(p.Groups) != 2 {
		t.Fatalf("groups %d, blocking %v", len(p.Groups), bi)
	}
	rb := BuildRunbook(p, RunbookOptions{})
	for _, g := range rb.Groups {
		for _, st := range g.Steps {
			for _, c := range st.Commands {
				if strings.Contains(c, "bringup.ps1") && !strings.Contains(c, fmt.Sprintf("bringup.ps1' -Group %d", g.Number)) {
					t.Errorf("group %d, step %q runs the script for every group: %s", g.Number, st.Title, c)
				}
			}
		}
	}
	res, err := Bringup(t.Context(), nil, p, BringupOptions{Out: t.TempDir(), NoRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(res.Hosts[0].Script)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	if !strings.Contains(s, "[int[]]$Group") {
		t.Fatalf("bringup.ps1 takes no -Group:\n%s", s)
	}
	i2 := strings.Index(s, "# ---- Boot group 2 ----")
	if i2 < 0 || !strings.HasPrefix(s[i2:], "# ---- Boot group 2 ----\nif (-not $Group -or $Group -contains 2) {\n") {
		t.Errorf("boot group 2 is not skipped when -Group leaves it out:\n%s", s)
	}
}
