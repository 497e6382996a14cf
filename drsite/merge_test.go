package drsite

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestMergeLinearInSwitches: merging an inventory of many switches and
// many adapters on switches no file describes takes time proportional to
// its size, not switches × adapters (a hostile 64 MiB collector file held
// backup for hours).
func TestMergeLinearInSwitches(t *testing.T) {
	const n = 40000
	var sws, nics []string
	for i := 0; i < n; i++ {
		sws = append(sws, fmt.Sprintf(`{"Name":"s%d","SwitchType":1}`, i))
		nics = append(nics, fmt.Sprintf(`{"SwitchName":"x%d","Vlan":null}`, i))
	}
	doc := []byte(`{"Collector":"drpipe-hyperv-inventory","ComputerName":"HV01","Switches":[` + strings.Join(sws, ",") +
		`],"VMs":[{"Name":"web01","ProcessorCount":1,"Memory":{"Startup":1073741824},"NetworkAdapters":[` + strings.Join(nics, ",") + `]}]}`)
	inv, err := Import("hv01.json", doc, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	m, err := Merge(inv, inv2(t))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 4*time.Second {
		t.Errorf("merge took %v", d)
	}
	undescribed := 0
	for _, w := range m.Warnings {
		if strings.Contains(w.Message, "described by no inventory file") {
			undescribed++
		}
	}
	if undescribed != n || len(m.Hosts[0].Switches) != n+1 {
		t.Errorf("%d undescribed-switch warnings and %d switches, want %d and %d", undescribed, len(m.Hosts[0].Switches), n, n+1)
	}
}

// inv2 is a second collector file for host HV01 repeating switch s0 and
// adding s-extra.
func inv2(t *testing.T) *Inventory {
	t.Helper()
	doc := []byte(`{"Collector":"drpipe-hyperv-inventory","ComputerName":"HV01","Switches":[{"Name":"s0","SwitchType":1},{"Name":"s-extra","SwitchType":0}],"VMs":[]}`)
	inv, err := Import("hv01-b.json", doc, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}
