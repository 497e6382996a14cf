package drsite

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// planFrom builds a plan from a drsite config section and a hand-written
// YAML inventory (both through their real parsers).
func planFrom(t *testing.T, cfgYAML, invYAML string) *Plan {
	t.Helper()
	cfg, err := LoadConfig("drsite.yaml", []byte("drsite:\n"+indent(cfgYAML)))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	inv, err := Import("inv.yaml", []byte(invYAML), ImportOptions{Host: "hv01"})
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	return MakePlan(PlanInput{Config: cfg, Inventory: inv, Now: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)})
}

func indent(s string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// vmYAML renders one VM for the inventory.
func vmYAML(name string, vcpus int, mem, disk string, extra string) string {
	s := "  - name: " + name + "\n    vcpus: " + itoa(vcpus) + "\n    memory: " + mem +
		"\n    disks: [{file: /img/" + name + ".qcow2, format: qcow2, size: " + disk + "}]\n"
	if extra != "" {
		s += indent(indent(extra))
	}
	return s
}

const netCfg = `
networks:
  - {name: dr-lan, type: external, bridge: br0, openvswitch: true, subnets: [10.50.0.0/16]}
  - {name: dr-flat, type: external, bridge: br1}
network_map:
  - from: {switch: lan}
    to: {network: dr-lan}
reip:
  - {from: 10.0.0.0/16, to: 10.50.0.0/16, gateway: 10.50.10.1, dns: [10.50.10.10]}
`

func issuesOf(p *Plan, kind string) []Issue {
	var out []Issue
	for _, i := range p.Issues {
		if i.Kind == kind {
			out = append(out, i)
		}
	}
	return out
}

func TestPlanTable(t *testing.T) {
	type check func(t *testing.T, p *Plan)
	placedOn := func(vm, host string) check {
		return func(t *testing.T, p *Plan) {
			t.Helper()
			if got := p.VM(vm).DRHost; got != host {
				t.Errorf("%s placed on %q, want %q", vm, got, host)
			}
		}
	}
	verdict := func(kind, vm string, blocking bool, substr ...string) check {
		return func(t *testing.T, p *Plan) {
			t.Helper()
			for _, i := range issuesOf(p, kind) {
				if vm != "" && !strings.Contains(i.VM, vm) {
					continue
				}
				ok := i.Blocking == blocking
				for _, s := range substr {
					ok = ok && strings.Contains(i.Message, s)
				}
				if ok {
					return
				}
			}
			t.Errorf("no %s issue for %q with %q (blocking %v); issues: %v", kind, vm, substr, blocking, p.Issues)
		}
	}
	noIssues := func(t *testing.T, p *Plan) {
		t.Helper()
		if len(p.Issues) > 0 {
			t.Errorf("unexpected issues: %v", p.Issues)
		}
	}
	groups := func(want ...string) check {
		return func(t *testing.T, p *Plan) {
			t.Helper()
			var got []string
			for _, g := range p.Groups {
				got = append(got, strings.Join(g.VMs, "+"))
			}
			if strings.Join(got, " | ") != strings.Join(want, " | ") {
				t.Errorf("boot groups %q, want %q", got, want)
			}
		}
	}
	blocked := func(vm string, want bool) check {
		return func(t *testing.T, p *Plan) {
			t.Helper()
			if p.VM(vm).Blocked != want {
				t.Errorf("%s blocked = %v, want %v", vm, p.VM(vm).Blocked, want)
			}
		}
	}
	nic := func(vm string, to, gw string, dns string) check {
		return func(t *testing.T, p *Plan) {
			t.Helper()
			n := p.VM(vm).NICs[0]
			if strings.Join(n.To, ",") != to || n.Gateway4 != gw || strings.Join(n.DNS, ",") != dns {
				t.Errorf("%s NIC: addresses %v gateway %s dns %v, want %s %s %s", vm, n.To, n.Gateway4, n.DNS, to, gw, dns)
			}
		}
	}
	hosts2 := `
hosts:
  - {name: dr1, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}
  - {name: dr2, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}
` + netCfg

	tests := []struct {
		name   string
		cfg    string
		inv    string
		checks []check
	}{
		{"everything fits, first-fit-decreasing by priority then size", hosts2,
			"vms:\n" + vmYAML("small", 2, "4GiB", "20GiB", "") + vmYAML("big", 8, "24GiB", "100GiB", "") +
				vmYAML("dns", 1, "2GiB", "10GiB", "boot_priority: 1") + vmYAML("mid", 4, "16GiB", "50GiB", ""),
			[]check{noIssues, placedOn("dns", "dr1"), placedOn("big", "dr1"), placedOn("mid", "dr2"), placedOn("small", "dr1"),
				groups("dns", "big+mid+small")}},
		{"capacity shortfall: one VM larger than any host", hosts2,
			"vms:\n" + vmYAML("huge", 8, "64GiB", "100GiB", "") + vmYAML("ok", 2, "8GiB", "20GiB", ""),
			[]check{verdict(IssueCapacity, "huge", true, "64.0 GiB memory", "largest host dr1 has 32.0 GiB"), blocked("huge", true),
				placedOn("ok", "dr1"), verdict(IssueShortfall, "", false, "72.0 GiB needed, 64.0 GiB available")}},
		{"capacity shortfall: site full after higher priorities", hosts2,
			"vms:\n" + vmYAML("a", 16, "8GiB", "10GiB", "boot_priority: 1") + vmYAML("b", 16, "8GiB", "10GiB", "boot_priority: 2") +
				vmYAML("c", 4, "8GiB", "10GiB", "boot_priority: 3"),
			[]check{placedOn("a", "dr1"), placedOn("b", "dr2"), verdict(IssueShortfall, "c", true, "site is full", "0 vCPUs free of 4 needed")}},
		{"fragmentation: enough in total, no single host fits", hosts2,
			"vms:\n" + vmYAML("a", 2, "20GiB", "10GiB", "") + vmYAML("b", 2, "20GiB", "10GiB", "") + vmYAML("c", 2, "16GiB", "10GiB", ""),
			[]check{placedOn("a", "dr1"), placedOn("b", "dr2"),
				verdict(IssueFragmentation, "c", true, "24.0 GiB memory", "no single host has room", "most free memory: 12.0 GiB on dr1")}},
		{"anti-affinity spreads domain controllers", hosts2,
			"vms:\n" + vmYAML("dc01", 2, "4GiB", "40GiB", "anti_affinity: dc\nboot_priority: 1") + vmYAML("dc02", 2, "4GiB", "40GiB", "anti_affinity: dc\nboot_priority: 1"),
			[]check{noIssues, placedOn("dc01", "dr1"), placedOn("dc02", "dr2"), groups("dc01+dc02")}},
		{"anti-affinity with no second host that fits",
			"hosts:\n  - {name: dr1, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}\n  - {name: tiny, kind: libvirt, vcpus: 1, memory: 2GiB, storage: 1TiB}\n" + netCfg,
			"vms:\n" + vmYAML("dc01", 2, "4GiB", "40GiB", "anti_affinity: dc") + vmYAML("dc02", 2, "4GiB", "40GiB", "anti_affinity: dc"),
			[]check{placedOn("dc01", "dr1"), blocked("dc02", true), verdict(IssueAntiAffinity, "dc02", true, `group "dc" keeps it off dr1 (runs dc01)`)}},
		{"dependency cycle is reported with its path; dependents wait", hosts2,
			"vms:\n" + vmYAML("a", 1, "1GiB", "1GiB", "depends_on: [b]") + vmYAML("b", 1, "1GiB", "1GiB", "depends_on: [c]") +
				vmYAML("c", 1, "1GiB", "1GiB", "depends_on: [a]") + vmYAML("d", 1, "1GiB", "1GiB", "depends_on: [a]") + vmYAML("e", 1, "1GiB", "1GiB", ""),
			[]check{verdict(IssueCycle, "a,b,c", true, "a → b → c → a"), verdict(IssueCycle, "d", true, "waits for a VM in a dependency cycle"),
				blocked("a", true), blocked("d", true), blocked("e", false), groups("e")}},
		{"boot groups: dependencies first, then priority", hosts2,
			"vms:\n" + vmYAML("app", 1, "1GiB", "1GiB", "depends_on: [db]\nboot_priority: 1") + vmYAML("db", 1, "1GiB", "1GiB", "depends_on: [dc]\nboot_priority: 5") +
				vmYAML("dc", 1, "1GiB", "1GiB", "boot_priority: 2") + vmYAML("web", 1, "1GiB", "1GiB", "depends_on: [app]") + vmYAML("mon", 1, "1GiB", "1GiB", "") +
				vmYAML("x", 1, "1GiB", "1GiB", "depends_on: [ghost]"),
			[]check{groups("dc", "db", "app", "mon+web+x"), verdict(IssueDependency, "x", false, `"ghost", which is in no inventory`)}},
		{"unmapped network", hosts2,
			"vms:\n" + vmYAML("web", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:01', switch: dmz, vlan: 40, ipv4: [10.0.40.5/24]}]"),
			[]check{blocked("web", true), verdict(IssueUnmapped, "web", true, `switch "dmz" VLAN 40 has no drsite.network_map entry`)}},
		{"a VM its network blocks is in no boot group; its dependents hear of it", hosts2,
			"vms:\n" + vmYAML("web", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:01', switch: dmz, dhcp: true}]") +
				vmYAML("app", 1, "1GiB", "1GiB", "depends_on: [web]"),
			[]check{blocked("web", true), groups("app"), verdict(IssueDependency, "app", false, "depends on web, which cannot be brought up")}},
		{"re-IP keeps host part, sets gateway and DNS", hosts2,
			"vms:\n" + vmYAML("db", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:02', switch: lan, vlan: 10, ipv4: [10.0.10.25/24], gateway4: 10.0.10.1, dns: [10.0.10.10]}]"),
			[]check{noIssues, nic("db", "10.50.10.25/24", "10.50.10.1", "10.50.10.10")}},
		{"re-IP outside the DR subnet (host part does not fit)",
			hosts2 + "  - {from: 10.9.0.0/16, to: 10.50.1.0/24}\n",
			"vms:\n" + vmYAML("app", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:03', switch: lan, ipv4: [10.9.3.7/16]}]"),
			[]check{blocked("app", true), verdict(IssueReIP, "app", true, "10.9.3.7/16 cannot move from 10.9.0.0/16 into 10.50.1.0/24", "outside the DR subnet")}},
		{"re-IP into a narrower DR subnet keeps the address's prefix", hosts2 + "  - {from: 10.8.0.0/16, to: 10.50.8.0/24}\n",
			"vms:\n" + vmYAML("n", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:0a', switch: lan, ipv4: [10.8.0.5/24]}]"),
			[]check{noIssues, nic("n", "10.50.8.5/24", "", "")}},
		{"re-IP into a wider DR subnet keeps the address's prefix", hosts2 + "  - {from: 10.6.0.0/24, to: 10.50.0.0/16}\n",
			"vms:\n" + vmYAML("w", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:0b', switch: lan, ipv4: [10.6.0.70/26]}]"),
			[]check{noIssues, nic("w", "10.50.0.70/26", "", "")}},
		{"address kept but outside the DR network's subnets", hosts2,
			"vms:\n" + vmYAML("old", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:04', switch: lan, ipv4: [192.168.5.9/24]}]"),
			[]check{blocked("old", true), verdict(IssueReIP, "old", true, "192.168.5.9/24 is kept (no drsite.reip rule matches it), outside the DR subnet of network dr-lan (10.50.0.0/16)")}},
		{"re-IP onto a broadcast address", hosts2 + "  - {from: 10.7.0.0/24, to: 10.50.7.0/24}\n",
			"vms:\n" + vmYAML("bc", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:05', switch: lan, ipv4: [10.7.0.255/25]}]"),
			[]check{verdict(IssueReIP, "bc", true, "network or broadcast address")}},
		{"duplicate address after re-IP", hosts2 + "  - {from: 172.16.0.0/24, to: 10.50.10.0/24}\n",
			"vms:\n" + vmYAML("a1", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:06', switch: lan, ipv4: [10.0.10.9/24]}]") +
				vmYAML("a2", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:07', switch: lan, ipv4: [172.16.0.9/24]}]"),
			[]check{verdict(IssueReIP, "a2", true, "10.50.10.9 is also given to a1")}},
		{"VLAN tag on a Linux bridge cannot be set by libvirt",
			"hosts:\n  - {name: dr1, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}\nnetworks:\n  - {name: flat, type: external, bridge: br0}\nnetwork_map:\n  - from: {switch: lan}\n    to: {network: flat}\n",
			"vms:\n" + vmYAML("v", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:08', switch: lan, vlan: 10, dhcp: true}]"),
			[]check{verdict(IssueNetwork, "v", true, "needs VLAN tagging (VLAN 10)", "not Open vSwitch")}},
		{"trunk VLANs map one by one",
			"hosts:\n  - {name: dr1, kind: hyperv, vcpus: 16, memory: 32GiB, storage: 1TiB}\nnetworks:\n  - {name: ext, type: external, uplink: 'SLOT 1'}\nnetwork_map:\n" +
				"  - from: {switch: lan, vlan: 20}\n    to: {network: ext, vlan: 120}\n  - from: {switch: lan, vlan: 30}\n    to: {network: ext, vlan: 130}\n",
			"vms:\n" + vmYAML("t", 1, "1GiB", "1GiB", "nics: [{mac: '52:54:00:00:00:09', switch: lan, vlan: {mode: trunk, ids: [20, 30], native: 20}, dhcp: true}]"),
			[]check{noIssues, func(t *testing.T, p *Plan) {
				v := p.VM("t").NICs[0].VLAN
				if v == nil || v.Mode != VLANTrunk || v.Native != 120 || len(v.Trunk) != 2 || v.Trunk[0] != 120 || v.Trunk[1] != 130 {
					t.Errorf("trunk mapped to %+v, want trunk [120 130] native 120", v)
				}
			}}},
		{"excluded VMs are not placed", hosts2 + "exclude: [lab]\n",
			"vms:\n" + vmYAML("lab", 64, "512GiB", "10TiB", "") + vmYAML("prod", 2, "4GiB", "10GiB", ""),
			[]check{noIssues, placedOn("lab", ""), placedOn("prod", "dr1")}},
		{"missing vCPUs and memory block the VM",
			hosts2, "vms:\n  - name: half\n    disks: [{file: /img/half.raw, format: raw, size: 1GiB}]\n",
			[]check{blocked("half", true), verdict(IssueInventory, "half", true, "vCPU count unknown"), verdict(IssueInventory, "half", true, "memory size unknown")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planFrom(t, tc.cfg, tc.inv)
			for _, c := range tc.checks {
				c(t, p)
			}
		})
	}
}

// TestSameMACFromTwoHosts: inventories of different source hosts are
// merged without checking their VMs against each other (Gather); two VMs
// with one MAC at the DR site would take each other's traffic.
func TestSameMACFromTwoHosts(t *testing.T) {
	cfg, err := LoadConfig("drsite.yaml", []byte("drsite:\n"+indent(`
hosts:
  - {name: dr1, kind: libvirt, vcpus: 16, memory: 32GiB, storage: 1TiB}
`+netCfg)))
	if err != nil {
		t.Fatal(err)
	}
	vm := func(name, host, mac string) VM {
		return VM{Name: name, Host: host, VCPUs: 1, Memory: Memory{StartupBytes: GiB},
			Disks: []Disk{{File: "/img/" + name + ".qcow2", Format: "qcow2", VirtualSize: GiB}},
			NICs:  []NIC{{MAC: mac, Switch: "lan", DHCP: true}}}
	}
	inv := &Inventory{VMs: []VM{vm("a", "hv01", "00:15:5D:0A:01:02"), vm("b", "hv02", "00-15-5d-0a-01-02"), vm("c", "hv02", "00:15:5d:0a:01:03")}}
	inv.Normalize()
	p := MakePlan(PlanInput{Config: cfg, Inventory: inv, Now: time.Now()})
	if p.VM("a").Blocked == p.VM("b").Blocked || p.VM("c").Blocked {
		t.Errorf("a and b share MAC 00:15:5d:0a:01:02: blocked a %v, b %v, c %v; issues %v", p.VM("a").Blocked, p.VM("b").Blocked, p.VM("c").Blocked, p.Issues)
	}
	// Two NICs of one VM with one MAC: the issue does not name the VM as
	// "the other".
	d := vm("d", "hv03", "00:15:5d:0a:01:04")
	d.NICs = append(d.NICs, NIC{MAC: "00:15:5d:0a:01:04", Switch: "lan", DHCP: true})
	inv = &Inventory{VMs: []VM{d}}
	inv.Normalize()
	p = MakePlan(PlanInput{Config: cfg, Inventory: inv, Now: time.Now()})
	if !p.VM("d").Blocked || !slices.ContainsFunc(p.Issues, func(i Issue) bool { return strings.Contains(i.Message, "two of its NICs have the MAC address") }) {
		t.Errorf("two NICs of d share a MAC: blocked %v, issues %v", p.VM("d").Blocked, p.Issues)
	}
}
