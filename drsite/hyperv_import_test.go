package drsite

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// hyperVDoc wraps VM objects in the collector's header.
func hyperVDoc(vms string) []byte {
	return []byte(`{"Collector":"drpipe-hyperv-inventory","CollectorVersion":1,"ComputerName":"HV01","VMs":` + vms + `}`)
}

// TestHyperVGuestIPv6PrefixWithSlash: the guests' data exchange service
// reports an IPv6 subnet as "/64"; the address is imported with its
// prefix, not the whole inventory refused.
func TestHyperVGuestIPv6PrefixWithSlash(t *testing.T) {
	doc := hyperVDoc(`[{"Name":"web01","Generation":2,"ProcessorCount":2,"Memory":{"Startup":4294967296},
		"HardDrives":[{"Path":"D:\\web01.vhdx","ControllerType":1,"VhdFormat":3,"Size":1073741824}],
		"NetworkAdapters":[{"Name":"n","MacAddress":"00155D0A0B02","SwitchName":"LAN","Vlan":{"OperationMode":0},
		"GuestNetworkConfiguration":{"DHCPEnabled":false,"IPAddresses":["10.0.10.5","2001:db8:10::5","fe80::1"],
		"Subnets":["255.255.255.0","/64","/64"],"DefaultGateways":["10.0.10.1"],"DNSServers":["10.0.10.53"]}}]}]`)
	inv, err := Import("hv01.json", doc, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := inv.VMs[0].NICs[0]
	if strings.Join(n.IPv4, ",") != "10.0.10.5/24" || strings.Join(n.IPv6, ",") != "2001:db8:10::5/64" {
		t.Errorf("addresses %v %v, want 10.0.10.5/24 and 2001:db8:10::5/64", n.IPv4, n.IPv6)
	}
}

// TestHyperVVLANListBounded: a trunk's AllowedVlanIdListString of more
// ranges than there are VLAN ids (a hostile 64 MiB collector file) is
// refused at once, not walked range by range for minutes, and the error
// does not quote the whole list.
func TestHyperVVLANListBounded(t *testing.T) {
	list := strings.Repeat("1-4094,", 100000) + "10"
	doc := hyperVDoc(`[{"Name":"web01","Generation":2,"ProcessorCount":2,"Memory":{"Startup":4294967296},
		"NetworkAdapters":[{"Name":"n","MacAddress":"00155D0A0B02","SwitchName":"LAN",
		"Vlan":{"OperationMode":2,"NativeVlanId":0,"AllowedVlanIdListString":"` + list + `"}}]}]`)
	t0 := time.Now()
	_, err := Import("hv01.json", doc, ImportOptions{})
	if d := time.Since(t0); d > time.Second {
		t.Errorf("import took %v", d)
	}
	if err == nil || !strings.Contains(err.Error(), "AllowedVlanIdListString") || len(err.Error()) > 1000 {
		t.Errorf("error %.300q (%d bytes), want a short one naming AllowedVlanIdListString", err, len(fmt.Sprint(err)))
	}
}

// TestHyperVBootOrderLinear: a file listing many disks and as many boot
// entries naming none of them is read in time proportional to its size,
// not disks × entries (a hostile 64 MiB collector file took an hour).
func TestHyperVBootOrderLinear(t *testing.T) {
	const n = 40000
	var disks, fw, bios []string
	for i := 0; i < n; i++ {
		disks = append(disks, fmt.Sprintf(`{"Path":"D:\\d%d.vhdx","ControllerType":1,"VhdFormat":3,"Size":1073741824}`, i))
		fw = append(fw, `{"BootType":1,"Path":"D:\\none.vhdx"}`)
		bios = append(bios, `"IDE"`)
	}
	for _, boot := range []string{
		`"Generation":2,"Firmware":{"BootOrder":[` + strings.Join(fw, ",") + `]}`,
		`"Generation":1,"BIOS":{"StartupOrder":[` + strings.Join(bios, ",") + `]}`,
	} {
		doc := hyperVDoc(`[{"Name":"web01",` + boot + `,"ProcessorCount":2,"Memory":{"Startup":4294967296},"HardDrives":[` + strings.Join(disks, ",") + `]}]`)
		t0 := time.Now()
		if _, err := Import("hv01.json", doc, ImportOptions{}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d > 4*time.Second {
			t.Errorf("%.40s...: import took %v", boot, d)
		}
	}
}
