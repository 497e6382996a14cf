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
