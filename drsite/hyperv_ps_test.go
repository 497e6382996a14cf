package drsite

import (
	"strings"
	"testing"
	"time"
)

// TestHyperVScript plans the Hyper-V fixture onto a Hyper-V DR host and
// checks the generated script: switches, VMs with processors, memory,
// disks, adapters with mapped VLANs, firmware, boot-group order, re-IP.
func TestHyperVScript(t *testing.T) {
	cfg, err := LoadConfig("dr.yaml", []byte(`drsite:
  hosts:
    - {name: dr-hv1, kind: hyperv, vcpus: 32, memory: 128GiB, storage: 4TiB, image_dir: 'E:\DR'}
  networks:
    - {name: dr-lan, type: external, uplink: 'SLOT 3 Port 1', subnets: [10.50.0.0/16]}
    - {name: dr-mgmt, type: internal, address: 192.168.250.1/24}
    - {name: dr-cluster, type: private}
  network_map:
    - {from: {switch: LAN-External, vlan: 10}, to: {network: dr-lan, vlan: 110}}
    - {from: {switch: LAN-External, vlan: 20}, to: {network: dr-lan, vlan: 120}}
    - {from: {switch: LAN-External}, to: {network: dr-lan}}
    - {from: {switch: Internal-Mgmt}, to: {network: dr-mgmt}}
    - {from: {switch: Cluster-Private}, to: {network: dr-cluster}}
  reip:
    - {from: 10.0.10.0/24, to: 10.50.10.0/24, gateway: 10.50.10.1, dns: [10.50.10.11]}
    - {from: 10.0.20.0/24, to: 10.50.20.0/24, gateway: 10.50.20.1}
`))
	if err != nil {
		t.Fatal(err)
	}
	inv := mustImport(t, "hyperv/hv01-inventory.json", "")
	p := MakePlan(PlanInput{Config: cfg, Inventory: inv, Now: time.Now()})
	for _, i := range p.BlockingIssues() {
		t.Errorf("blocking: %s", i)
	}
	var groups []GroupVMs
	for _, g := range p.Groups {
		gv := GroupVMs{Number: g.Number}
		for _, n := range g.VMs {
			gv.VMs = append(gv.VMs, p.DRVM(p.VM(n), func(d Disk) (string, string) { return n + `\` + winBase(d.File), d.Format }))
		}
		groups = append(groups, gv)
	}
	var nets []*DRNetwork
	for _, u := range p.Networks {
		nets = append(nets, cfg.Network(u.Network))
	}
	s := string(HyperVScript(cfg.Host("dr-hv1"), nets, groups, 90*time.Second, time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)))
	for _, want := range []string{
		"[string]$ImageRoot = 'E:\\DR',",
		"[int]$BootTimeoutSeconds = 90", // drsite.boot_timeout
		"New-VMSwitch -Name 'dr-lan' -NetAdapterName 'SLOT 3 Port 1' -AllowManagementOS $true",
		"New-VMSwitch -Name 'dr-mgmt' -SwitchType Internal",
		"New-NetIPAddress -InterfaceAlias 'vEthernet (dr-mgmt)' -IPAddress '192.168.250.1' -PrefixLength 24",
		"New-VMSwitch -Name 'dr-cluster' -SwitchType Private",
		"New-VM -Name 'DC02' -Generation 2 -MemoryStartupBytes 4294967296 -NoVHD",
		"Set-VMProcessor -VMName 'DC02' -Count 2",
		"Set-VMMemory -VMName 'DC02' -DynamicMemoryEnabled $true -MinimumBytes 2147483648 -StartupBytes 4294967296 -MaximumBytes 8589934592",
		"Add-VMHardDiskDrive -VMName 'DC02' -ControllerType SCSI -ControllerNumber 0 -ControllerLocation 0 -Path (Join-Path $ImageRoot 'DC02\\DC02.vhdx')",
		"Add-VMNetworkAdapter -VMName 'DC02' -Name 'Network Adapter' -SwitchName 'dr-lan' -StaticMacAddress '00155D0A0B02'",
		"Set-VMNetworkAdapterVlan -VMName 'DC02' -VMNetworkAdapterName 'Network Adapter' -Access -VlanId 110",
		"Set-VMFirmware -VMName 'DC02' -EnableSecureBoot On -FirstBootDevice (Get-VMHardDiskDrive -VMName 'DC02' -ControllerType SCSI -ControllerNumber 0 -ControllerLocation 0)",
		"Set-DrGuestAddress -VMName 'DC02' -Mac '00155D0A0B02' -Address @('10.50.10.11') -PrefixLength @(24) -Gateway '10.50.10.1' -Gateway6 '' -Dns @('10.50.10.11')",
		"Test-DrCheck 'tcp:10.50.10.11:53'", // DC02's check at its DR address
		"Set-VMMemory -VMName 'SQL01' -DynamicMemoryEnabled $false -StartupBytes 34359738368",
		"Add-VMHardDiskDrive -VMName 'SQL01' -ControllerType SCSI -ControllerNumber 1 -ControllerLocation 0 -Path (Join-Path $ImageRoot 'SQL01\\SQL01-Log.vhdx')",
		"Set-VMNetworkAdapterVlan -VMName 'SQL01' -VMNetworkAdapterName 'LAN' -Trunk -AllowedVlanIdList '30,31,32,120' -NativeVlanId 120",
		"Set-VMNetworkAdapterVlan -VMName 'SQL01' -VMNetworkAdapterName 'Mgmt' -Untagged",
		"New-VM -Name 'LEGACY01' -Generation 1 -MemoryStartupBytes 1073741824",
		"Add-VMHardDiskDrive -VMName 'LEGACY01' -ControllerType IDE -ControllerNumber 0 -ControllerLocation 0 -Path (Join-Path $ImageRoot 'LEGACY01\\LEGACY01.vhd')",
		"Add-VMNetworkAdapter -VMName 'LEGACY01' -Name 'Legacy Network Adapter' -SwitchName 'dr-cluster' -IsLegacy $true",
		"Set-VMBios -VMName 'LEGACY01' -StartupOrder",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	// Boot groups in order: DC02 (priority 1) before SQL01 (depends on DC02).
	if i, j := strings.Index(s, "Start-VM -Name 'DC02'"), strings.Index(s, "Start-VM -Name 'SQL01'"); i < 0 || j < 0 || i > j {
		t.Errorf("DC02 must start before SQL01 (%d, %d)", i, j)
	}
	if !strings.Contains(s, "\r\n") || strings.Contains(strings.ReplaceAll(s, "\r\n", ""), "\n") {
		t.Error("script must use CRLF line ends throughout")
	}
	// Quotes in names are doubled.
	if got := psq("it's"); got != "'it''s'" {
		t.Errorf("psq = %s", got)
	}
}

// TestHyperVScriptIPv6Gateway: a NIC's IPv6 gateway reaches the guest
// with its first IPv6 address, and a tcp: check of an IPv6 address is
// probed without its brackets.
func TestHyperVScriptIPv6Gateway(t *testing.T) {
	cfg, err := LoadConfig("dr.yaml", []byte(`drsite:
  hosts:
    - {name: dr-hv1, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}
  networks:
    - {name: dr-lan, type: private}
  network_map:
    - {from: {switch: lan}, to: {network: dr-lan}}
`))
	if err != nil {
		t.Fatal(err)
	}
	inv, err := Import("hv.yaml", []byte(`version: 1
host: hv01
hypervisor: hyperv
switches:
  - {name: lan, type: private}
vms:
  - name: web6
    generation: 2
    vcpus: 2
    memory: 2GiB
    disks: [{file: 'D:\VMs\web6.vhdx', format: vhdx, size: 10GiB}]
    nics:
      - {mac: "00:15:5d:00:00:06", switch: lan, ipv4: [10.0.0.6/24], ipv6: ["2001:db8:20::6/64"], gateway4: 10.0.0.1, gateway6: "2001:db8:20::1"}
    verify: ["tcp:[2001:db8:20::6]:443"]
`), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := MakePlan(PlanInput{Config: cfg, Inventory: inv, Now: time.Now()})
	for _, i := range p.BlockingIssues() {
		t.Fatalf("blocking: %s", i)
	}
	v := p.VM("web6")
	gv := []GroupVMs{{Number: 1, VMs: []*VM{p.DRVM(v, func(d Disk) (string, string) { return "web6\\web6.vhdx", d.Format })}}}
	s := string(HyperVScript(cfg.Host("dr-hv1"), []*DRNetwork{cfg.Network("dr-lan")}, gv, 10*time.Minute, time.Now()))
	for _, want := range []string{
		"-Address @('10.0.0.6', '2001:db8:20::6') -PrefixLength @(24, 64) -Gateway '10.0.0.1' -Gateway6 '2001:db8:20::1'",
		"$gw = @{ 4 = $Gateway; 6 = $Gateway6 }",
		"-DestinationPrefix '0.0.0.0/0', '::/0'",
		"$target = $Matches[1] -replace '^\\[(.*)\\]$', '$1'",
		"Test-DrCheck 'tcp:[2001:db8:20::6]:443'",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q", want)
		}
	}
}
