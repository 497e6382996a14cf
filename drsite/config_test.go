package drsite

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestSampleConfigLoads(t *testing.T) {
	b, err := os.ReadFile("../configs/drsite.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig("configs/drsite.yaml", b)
	if err != nil {
		t.Fatalf("the shipped sample config does not load: %v", err)
	}
	if len(c.Hosts) != 3 || c.Hosts[0].MemoryBytes != 384<<30 || c.Hosts[2].Kind != KindHyperV || c.BootTimeout.Duration != 10*time.Minute ||
		len(c.NetworkMap) != 6 || *c.NetworkMap[0].To.VLAN != 110 || c.NetworkMap[3].From.VLAN != nil || len(c.ReIP) != 2 {
		t.Errorf("sample config parsed as %+v", c)
	}
}

func TestConfigErrors(t *testing.T) {
	base := "drsite:\n  hosts:\n    - {name: a, kind: libvirt, vcpus: 4, memory: 8GiB, storage: 100GiB}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key with line", base + "  hostz: []\n", "line 4: field hostz not found"},
		{"unknown host key", "drsite:\n  hosts:\n    - {name: a, kind: libvirt, vcpus: 4, memory: 8GiB, storage: 1TiB, ram: 3}\n", "field ram not found"},
		{"top-level sections", "hosts: []\n", "put the DR-site settings under a drsite: section"},
		{"no section", "repo: /x\n", "no drsite: section"},
		{"bad kind", "drsite:\n  hosts:\n    - {name: a, kind: xen, vcpus: 4, memory: 8GiB, storage: 1TiB}\n", `drsite.hosts[0].kind: "xen" is not libvirt or hyperv`},
		{"bad size", "drsite:\n  hosts:\n    - {name: a, kind: libvirt, vcpus: 4, memory: lots, storage: 1TiB}\n", "drsite.hosts[0].memory"},
		{"unknown network in map", base + "  network_map:\n    - {from: {switch: lan}, to: {network: nope}}\n", `drsite.network_map[0].to.network: network "nope" is not in drsite.networks`},
		{"bad reip", base + "  reip:\n    - {from: 10.0.0.1/24, to: 10.1.0.0/24}\n", "drsite.reip[0].from"},
		{"gateway outside", base + "  reip:\n    - {from: 10.0.0.0/24, to: 10.1.0.0/24, gateway: 10.2.0.1}\n", "10.2.0.1 is outside the DR subnet 10.1.0.0/24"},
		{"same reip source twice", base + "  reip:\n    - {from: 10.0.10.0/24, to: 10.50.10.0/24}\n    - {from: 10.0.10.0/24, to: 10.60.10.0/24}\n",
			"drsite.reip[1].from: subnet 10.0.10.0/24 is also the from of reip[0] (to 10.50.10.0/24)"},
		{"bad duration", base + "  boot_timeout: soon\n", "not a duration"},
		{"open network with a forward device", base + "  networks:\n    - {name: n, type: internal, forward: open, uplink: eth1, address: 10.50.99.1/24}\n",
			"drsite.networks[0].uplink: an open network forwards through no device"},
		{"ovs without bridge", base + "  networks:\n    - {name: n, type: external, openvswitch: true}\n", "needs its bridge name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig("dr.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "dr.yaml") {
				t.Errorf("error %v, want it to name dr.yaml and contain %q", err, tc.want)
			}
		})
	}
}
