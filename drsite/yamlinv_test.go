package drsite

import (
	"strings"
	"testing"
)

// TestYAMLLeadingZeroNumberRefused: YAML reads a plain 010 as octal 8; a
// zero-padded VLAN id must not put the NIC on another VLAN silently.
func TestYAMLLeadingZeroNumberRefused(t *testing.T) {
	doc := "vms:\n  - name: web01\n    vcpus: 2\n    memory: 4GiB\n    nics:\n      - mac: '52:54:00:00:00:01'\n        switch: lan\n        vlan: 010\n        dhcp: true\n"
	inv, err := Import("hv02.yaml", []byte(doc), ImportOptions{Host: "hv02"})
	if err == nil {
		t.Fatalf("imported with VLAN %+v, want an error naming the line", *inv.VMs[0].NICs[0].VLAN)
	}
	if !strings.Contains(err.Error(), "hv02.yaml") || !strings.Contains(err.Error(), "line 8") || !strings.Contains(err.Error(), "010") {
		t.Errorf("error %q does not name the file, line and value", err)
	}
	quoted := strings.Replace(doc, "vlan: 010", `vlan: "010"`, 1)
	inv, err = Import("hv02.yaml", []byte(quoted), ImportOptions{Host: "hv02"})
	if err != nil {
		t.Fatal(err)
	}
	if id := inv.VMs[0].NICs[0].VLANID(); id != 10 {
		t.Errorf("quoted \"010\" is VLAN %d, want 10", id)
	}
}

// TestYAMLMemoryWithoutUnitRefused: memory: 4096 (meant as MiB) is 4096
// bytes; a VM is not recorded with 4 KiB of memory without a word.
func TestYAMLMemoryWithoutUnitRefused(t *testing.T) {
	for _, mem := range []string{"4096", "{startup: 2GiB, min: 512, max: 4GiB}"} {
		doc := "vms:\n  - name: web01\n    vcpus: 2\n    memory: " + mem + "\n"
		inv, err := Import("hv02.yaml", []byte(doc), ImportOptions{Host: "hv02"})
		if err == nil {
			t.Errorf("memory: %s imported as %+v, want an error", mem, inv.VMs[0].Memory)
			continue
		}
		if !strings.Contains(err.Error(), "vms[web01].memory") {
			t.Errorf("memory: %s: error %q does not name the field", mem, err)
		}
	}
	doc := "vms:\n  - name: web01\n    vcpus: 2\n    memory: 4294967296\n"
	if _, err := Import("hv02.yaml", []byte(doc), ImportOptions{Host: "hv02"}); err != nil {
		t.Errorf("memory in bytes: %v", err)
	}
}

// TestYAMLNamesKeepTheirText: a plain value YAML reads as a number in
// another spelling (1e3, 0x1F, 08, 1.10, .inf), or as a time
// (2024-01-01), keeps the text it was written with where a name is read:
// the VM, switch and disk are the ones the file names, not 1000, 31, 8,
// 1.1 or +Inf, nor refused as not a string.
func TestYAMLNamesKeepTheirText(t *testing.T) {
	names := []string{"1e3", "0x1F", "08", "1.10", ".inf", "2024-01-01"}
	var b strings.Builder
	b.WriteString("switches:\n  - {name: 10.10, type: external}\nvms:\n")
	for i, n := range names {
		b.WriteString("  - name: " + n + "\n    vcpus: 2\n    memory: 4GiB\n")
		b.WriteString("    disks: [{file: 2024.10, format: raw, size: 10GiB}]\n")
		b.WriteString("    nics: [{mac: '52:54:00:00:00:0" + string(rune('1'+i)) + "', switch: 10.10, dhcp: true, vlan: 20}]\n")
	}
	inv, err := Import("odd.yaml", []byte(b.String()), ImportOptions{Host: "hv02"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, vm := range inv.VMs {
		got[vm.Name] = true
		if vm.Disks[0].File != "2024.10" || vm.NICs[0].Switch != "10.10" || vm.NICs[0].VLANID() != 20 || vm.VCPUs != 2 {
			t.Errorf("VM %s: disk %q, switch %q, VLAN %d, %d vCPUs; want 2024.10, 10.10, 20, 2", vm.Name, vm.Disks[0].File, vm.NICs[0].Switch, vm.NICs[0].VLANID(), vm.VCPUs)
		}
	}
	for _, n := range names {
		if !got[n] {
			t.Errorf("no VM %q among %v", n, got)
		}
	}
	if s := inv.Hosts[0].Switches[0].Name; s != "10.10" {
		t.Errorf("switch %q, want 10.10", s)
	}
}
