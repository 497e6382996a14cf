package drsite

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// addFixtures seeds a fuzz target with the realistic fixtures.
func addFixtures(f *testing.F, pattern string) {
	f.Helper()
	files, _ := filepath.Glob(filepath.Join("testdata", pattern))
	for _, p := range files {
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// modelRoundTrip checks that an imported inventory survives its JSON form.
func modelRoundTrip(t *testing.T, inv *Inventory) {
	t.Helper()
	b, err := EncodeInventory(inv)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	back, err := DecodeInventory(b)
	if err != nil {
		t.Fatalf("decode of encoded inventory: %v\n%s", err, b)
	}
	b2, _ := EncodeInventory(back)
	if !bytes.Equal(b, b2) {
		t.Fatalf("JSON round trip differs:\n%s\n%s", b, b2)
	}
}

func FuzzImportLibvirtDomain(f *testing.F) {
	addFixtures(f, "libvirt/*.xml")
	f.Add([]byte(`<domain><name>x</name><vcpu>1</vcpu><memory>1</memory><devices><disk><source file='/a'/></disk></devices></domain>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := importLibvirtDomain("f.xml", data, ImportOptions{Host: "h"})
		if err != nil {
			return
		}
		inv.Normalize()
		if inv.Validate("f.xml") != nil {
			return
		}
		modelRoundTrip(t, inv)
		// Once generated, XML is a fixed point of import → generate.
		x1, err := DomainXML(&inv.VMs[0], DomainOptions{})
		if err != nil {
			return
		}
		a, err := importLibvirtDomain("g.xml", x1, ImportOptions{Host: "h"})
		if err != nil {
			t.Fatalf("generated XML does not import: %v\n%s", err, x1)
		}
		a.Normalize()
		x2, err := DomainXML(&a.VMs[0], DomainOptions{})
		if err != nil {
			t.Fatalf("re-generate: %v", err)
		}
		b, err := importLibvirtDomain("g2.xml", x2, ImportOptions{Host: "h"})
		if err != nil {
			t.Fatal(err)
		}
		b.Normalize()
		if !reflect.DeepEqual(a.VMs, b.VMs) || !bytes.Equal(x1, x2) && !bytes.Equal(x2, mustGen(t, &b.VMs[0])) {
			t.Fatalf("round trip not stable:\n%s\n%s", x1, x2)
		}
	})
}

func mustGen(t *testing.T, vm *VM) []byte {
	x, err := DomainXML(vm, DomainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func FuzzImportLibvirtNetwork(f *testing.F) {
	addFixtures(f, "libvirt/net-*.xml")
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := importLibvirtNetwork("n.xml", data, ImportOptions{Host: "h"})
		if err != nil {
			return
		}
		inv.Normalize()
		if inv.Validate("n.xml") != nil {
			return
		}
		modelRoundTrip(t, inv)
		s := inv.Hosts[0].Switches[0]
		x, err := NetworkXML(&s)
		if err != nil {
			return
		}
		back, err := importLibvirtNetwork("g.xml", x, ImportOptions{Host: "h"})
		if err != nil {
			t.Fatalf("generated network XML does not import: %v\n%s", err, x)
		}
		back.Normalize()
		x2, err := NetworkXML(&back.Hosts[0].Switches[0])
		if err != nil || !bytes.Equal(x, x2) {
			t.Fatalf("network round trip not stable (%v):\n%s\n%s", err, x, x2)
		}
	})
}

func fuzzImporter(f *testing.F, imp func(string, []byte, ImportOptions) (*Inventory, error)) {
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := imp("f", data, ImportOptions{Host: "h"})
		if err != nil {
			return
		}
		inv.Normalize()
		if inv.Validate("f") != nil {
			return
		}
		modelRoundTrip(t, inv)
	})
}

func FuzzImportHyperV(f *testing.F) {
	addFixtures(f, "hyperv/*.json")
	f.Add([]byte(`{"Collector":"drpipe-hyperv-inventory","VMs":{"Name":"a","NetworkAdapters":{"MacAddress":"00155D000001","Vlan":{"OperationMode":2,"AllowedVlanIdListString":"1-3"}}}}`))
	fuzzImporter(f, importHyperV)
}

func FuzzImportOVF(f *testing.F) {
	addFixtures(f, "ovf/*.ovf")
	fuzzImporter(f, importOVF)
}

func FuzzImportYAML(f *testing.F) {
	addFixtures(f, "yaml/*.yaml")
	f.Add([]byte("vms:\n  - {name: a, vcpus: 1, memory: 1GiB, nics: [{vlan: {mode: trunk, ids: [1, 2]}}]}\n"))
	fuzzImporter(f, importYAML)
}

func FuzzDecodeInventory(f *testing.F) {
	for _, p := range []string{"libvirt/dc01.xml", "hyperv/hv01-inventory.json", "ovf/app01.ovf", "yaml/hv02.yaml"} {
		b, _ := os.ReadFile(filepath.Join("testdata", p))
		inv, err := Import(p, b, ImportOptions{Host: "h"})
		if err != nil {
			f.Fatal(err)
		}
		j, _ := EncodeInventory(inv)
		f.Add(j)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := DecodeInventory(data)
		if err != nil {
			return
		}
		_ = inv.Validate("")
		modelRoundTrip(t, inv)
	})
}

func FuzzDetectAndImport(f *testing.F) {
	addFixtures(f, "*/*")
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := Import("any", data, ImportOptions{Host: "h"})
		if err != nil {
			return
		}
		modelRoundTrip(t, inv)
	})
}

func FuzzLoadConfig(f *testing.F) {
	if b, err := os.ReadFile("../configs/drsite.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("drsite:\n  hosts: [{name: a, kind: libvirt, vcpus: 1, memory: 1GiB, storage: 1GiB}]\n  reip: [{from: 10.0.0.0/8, to: 10.0.0.0/8}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := LoadConfig("f.yaml", data)
		if err != nil {
			return
		}
		// A valid config plans an empty inventory without trouble.
		MakePlan(PlanInput{Config: c, Inventory: &Inventory{}})
	})
}
