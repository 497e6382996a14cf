package drsite

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPlanLibvirtNetworkLibvirtAccepts: an internal DR network forwards
// (nat, route, open) on a libvirt host, and libvirt defines such a
// network only with an address of the host on it. A plan that puts a VM
// of hv02 (testdata/yaml/hv02.yaml) on one without drsite.networks[].address
// must block it, naming the key, and not leave bringup --execute to fail
// at net-define once the group's disks are restored; with the address,
// the network it writes is defined and started by libvirt.
func TestPlanLibvirtNetworkLibvirtAccepts(t *testing.T) {
	virsh := needTool(t, "virsh")
	inv := mustImport(t, "yaml/hv02.yaml", "")
	for _, tc := range []struct {
		name, network string
		blocked       bool
	}{
		{"nat without address", "{name: dr-int, type: internal}", true},
		{"route without address", "{name: dr-int, type: internal, forward: route}", true},
		{"open without address", "{name: dr-int, type: internal, forward: open}", true},
		{"nat with address", "{name: dr-int, type: internal, address: 10.50.10.1/24}", false},
		{"private without address", "{name: dr-int, type: private}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadConfig("drsite.yaml", []byte("drsite:\n"+indent(`
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}
networks:
  - `+tc.network+`
network_map:
  - from: {switch: lan, vlan: 10}
    to: {network: dr-int, vlan: 0}
reip:
  - {from: 10.0.10.0/24, to: 10.50.10.0/24}
exclude: [mon01]
`)))
			if err != nil {
				t.Fatal(err)
			}
			p := MakePlan(PlanInput{Config: cfg, Inventory: inv, Now: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)})
			v := p.VM("dns01")
			if v.Blocked != tc.blocked {
				t.Fatalf("dns01 blocked %v, want %v; issues %v", v.Blocked, tc.blocked, p.Issues)
			}
			if tc.blocked {
				if iss := issuesOf(p, IssueNetwork); len(iss) != 1 || !strings.Contains(iss[0].Message, "drsite.networks[].address") || iss[0].VM != "dns01" {
					t.Errorf("issues %v, want one for dns01 naming drsite.networks[].address", p.Issues)
				}
				return
			}
			x, err := NetworkXML(DRSwitch(cfg.Network("dr-int")))
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "dr-int.xml")
			if err := os.WriteFile(f, x, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(virsh, "-c", "test:///default", "net-define "+f+" ; net-start dr-int").CombinedOutput(); err != nil || strings.Contains(string(out), "error") {
				t.Errorf("libvirt refuses the network of a plan without blocking issues: %v\n%s\n%s", err, out, x)
			}
		})
	}
}

// TestPlanStaticAddressWithoutMAC: a libvirt DR definition records a
// NIC's addresses by its MAC, and DomainXML refuses a NIC with static
// addresses and no MAC. bringup writes the definitions after restoring
// the boot group's disks, so a plan that lets such a VM through stops
// the bring-up there, the later groups too: the plan blocks the VM,
// naming the NIC, and every VM it does not block renders.
func TestPlanStaticAddressWithoutMAC(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}
`+netCfg, "vms:\n"+
		vmYAML("static", 1, "1GiB", "1GiB", "nics: [{switch: lan, ipv4: [10.0.10.25/24], gateway4: 10.0.10.1}]")+
		vmYAML("dnsonly", 1, "1GiB", "1GiB", "nics: [{switch: lan, dhcp: true, dns: [10.0.10.10]}]")+
		vmYAML("dhcp", 1, "1GiB", "1GiB", "nics: [{switch: lan, dhcp: true}]")+
		vmYAML("withmac", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:0c', switch: lan, ipv4: [10.0.10.26/24]}]"))
	for _, v := range p.VMs {
		dvm := p.DRVM(v, nil)
		if dvm == nil {
			continue
		}
		if _, err := DomainXML(dvm, DomainOptions{Type: "test"}); err != nil {
			t.Errorf("%s is not blocked, but its DR definition cannot be written: %v", v.Name, err)
		}
	}
	for vm, want := range map[string]bool{"static": true, "dnsonly": true, "dhcp": false, "withmac": false} {
		if got := p.VM(vm).Blocked; got != want {
			t.Errorf("%s blocked %v, want %v; issues %v", vm, got, want, p.Issues)
		}
	}
	if iss := issuesOf(p, IssueNetwork); len(iss) != 2 || !strings.Contains(iss[0].Message, "NIC #0") || !strings.Contains(iss[0].Message, "no MAC") {
		t.Errorf("issues %v, want one per VM naming NIC #0 and its missing MAC", iss)
	}
}

// TestPlanBlocksWhatLibvirtCannotDefine: bringup writes a VM's libvirt
// definition only after restoring its boot group's disks, and a
// definition it cannot write stops the bring-up there. A VM whose
// inventory DomainXML refuses (a disk format libvirt does not know, a
// SATA unit past 5) is blocked by the plan with DomainXML's reason, and
// every VM the plan lets through renders with the disk formats bringup
// gives it.
func TestPlanBlocksWhatLibvirtCannotDefine(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}
`, `vms:
  - {name: typo, vcpus: 1, memory: 1GiB, disks: [{file: /img/typo.img, format: qcwo2, size: 1GiB}]}
  - {name: sata9, vcpus: 1, memory: 1GiB, disks: [{file: /img/sata9.qcow2, format: qcow2, size: 1GiB, controller: sata, unit: 9}]}
  - {name: vhdx, vcpus: 1, memory: 1GiB, disks: [{file: /img/vhdx.vhdx, format: vhdx, size: 1GiB}]}
  - {name: ok, vcpus: 1, memory: 1GiB, disks: [{file: /img/ok.qcow2, format: qcow2, size: 1GiB}]}
`)
	for _, v := range p.VMs {
		dvm := p.DRVM(v, func(d Disk) (string, string) {
			f, _ := targetFormat(KindLibvirt, v.VM.DiskFormat(d))
			return d.File, f
		})
		if dvm == nil {
			continue
		}
		if _, err := DomainXML(dvm, DomainOptions{Type: "test"}); err != nil {
			t.Errorf("%s is not blocked, but its DR definition cannot be written: %v", v.Name, err)
		}
	}
	for vm, want := range map[string]string{"typo": `disk format "qcwo2" is not known to libvirt`, "sata9": "SATA controllers have units 0..5", "vhdx": "", "ok": ""} {
		v := p.VM(vm)
		if v.Blocked != (want != "") {
			t.Errorf("%s blocked %v, want %v; issues %v", vm, v.Blocked, want != "", p.Issues)
		}
		if want != "" && !slices.ContainsFunc(p.Issues, func(i Issue) bool { return i.VM == vm && i.Blocking && strings.Contains(i.Message, want) }) {
			t.Errorf("no blocking issue of %s says %q: %v", vm, want, p.Issues)
		}
	}
}
