package drsite

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
)

// GroupVMs is one boot group's DR VMs on one host.
type GroupVMs struct {
	Number int
	VMs    []*VM
}

// psq quotes a PowerShell single-quoted string. PowerShell takes the
// typographic quotes U+2018, U+2019, U+201A and U+201B as single quotes
// too ("Don’t" in VM notes would end the string), so each of the five is
// doubled.
func psq(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range s {
		if strings.ContainsRune("'\u2018\u2019\u201a\u201b", r) {
			b.WriteRune(r)
		}
		b.WriteRune(r)
	}
	b.WriteByte('\'')
	return b.String()
}

// psMACString renders a MAC the way Hyper-V takes it: 00155D0A0B02.
func psMACString(mac string) string {
	return strings.ToUpper(strings.ReplaceAll(mac, ":", ""))
}

// HyperVScript renders the PowerShell that rebuilds VMs on a Hyper-V DR
// host: switches (New-VMSwitch), then per boot group each VM (New-VM,
// Set-VMProcessor, Set-VMMemory, Add-VMHardDiskDrive, network adapters
// with Set-VMNetworkAdapterVlan, firmware boot order) and, with -Start,
// starting the group, waiting for heartbeats and re-addressing Windows
// guests through PowerShell Direct. Disk files of the VMs are relative to
// the script's -ImageRoot. VMs that already exist are left alone. Each
// wait lasts at most bootTimeout (drsite.boot_timeout) unless the
// operator gives -BootTimeoutSeconds.
func HyperVScript(host *DRHost, nets []*DRNetwork, groups []GroupVMs, bootTimeout time.Duration, now time.Time) []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	root := host.ImageDir // empty: $PSScriptRoot\images
	w("<#\n.SYNOPSIS\n    drpipe DR bring-up for Hyper-V host %s (generated %s).\n\n", commentText(host.Name), now.UTC().Format(time.RFC3339))
	w(".DESCRIPTION\n    Creates the DR virtual switches and VMs in boot-group order:\n")
	for _, g := range groups {
		var names []string
		for _, vm := range g.VMs {
			names = append(names, commentText(vm.Name))
		}
		w("        group %d: %s\n", g.Number, strings.Join(names, ", "))
	}
	w("    Copy the restored images (the images directory next to this script) to -ImageRoot first.\n")
	w("    With -Start each group is started and its VMs' heartbeats awaited before the next group;\n")
	w("    with -GuestCredential static addresses are set inside Windows guests (PowerShell Direct).\n")
	w("    With -Group only those boot groups are created (and started): a group whose images are not\n")
	w("    restored yet is left out, not created without its disks.\n#>\n")
	w("[CmdletBinding()]\nparam(\n")
	if root != "" {
		w("    [string]$ImageRoot = %s,\n", psq(root))
	} else {
		w("    [string]$ImageRoot = (Join-Path $PSScriptRoot 'images'),\n")
	}
	// -BootTimeoutSeconds defaults to drsite.boot_timeout, as --execute
	// and bringup.sh wait.
	w("    [int[]]$Group,\n    [switch]$Start,\n    [System.Management.Automation.PSCredential]$GuestCredential,\n    [int]$BootTimeoutSeconds = %d\n)\n\n", max(int(math.Ceil(bootTimeout.Seconds())), 1))
	w("$ErrorActionPreference = 'Stop'\nImport-Module Hyper-V\n\n")
	w(`function Wait-DrVMHeartbeat([string]$Name, [int]$Timeout) {
    $deadline = (Get-Date).AddSeconds($Timeout)
    while ((Get-VM -Name $Name).Heartbeat -notmatch '^Ok') {
        if ((Get-Date) -gt $deadline) { throw "VM $Name has no heartbeat after $Timeout s" }
        Start-Sleep -Seconds 5
    }
    Write-Host "VM $Name is up"
}

function Set-DrGuestAddress([string]$VMName, [string]$Mac, [string[]]$Address, [int[]]$PrefixLength, [string]$Gateway, [string]$Gateway6, [string[]]$Dns) {
    if (-not $GuestCredential) { Write-Warning "re-IP of $VMName skipped: no -GuestCredential"; return }
    try {
        Invoke-Command -VMName $VMName -Credential $GuestCredential -ScriptBlock {
            param($Mac, $Address, $PrefixLength, $Gateway, $Gateway6, $Dns)
            $want = ($Mac -replace '(..)(?!$)', '$1-')
            $nic = Get-NetAdapter | Where-Object { $_.MacAddress -eq $want }
            if (-not $nic) { throw "no adapter with MAC $want" }
            Get-NetIPAddress -InterfaceIndex $nic.ifIndex -ErrorAction SilentlyContinue |
                Where-Object { $_.PrefixOrigin -eq 'Manual' } | Remove-NetIPAddress -Confirm:$false
            Get-NetRoute -InterfaceIndex $nic.ifIndex -DestinationPrefix '0.0.0.0/0', '::/0' -ErrorAction SilentlyContinue |
                Remove-NetRoute -Confirm:$false
            # The default gateway goes with the first address of its family.
            $gw = @{ 4 = $Gateway; 6 = $Gateway6 }
            for ($i = 0; $i -lt $Address.Count; $i++) {
                $p = @{ InterfaceIndex = $nic.ifIndex; IPAddress = $Address[$i]; PrefixLength = $PrefixLength[$i] }
                $family = if ($Address[$i].Contains(':')) { 6 } else { 4 }
                if ($gw[$family]) { $p.DefaultGateway = $gw[$family]; $gw[$family] = $null }
                New-NetIPAddress @p | Out-Null
            }
            if ($Dns) { Set-DnsClientServerAddress -InterfaceIndex $nic.ifIndex -ServerAddresses $Dns }
        } -ArgumentList $Mac, $Address, $PrefixLength, $Gateway, $Gateway6, $Dns
        Write-Host "re-addressed $VMName ($Mac): $($Address -join ', ')"
    } catch {
        Write-Warning "re-IP of $VMName failed (not a Windows guest, or credentials): $_"
    }
}

function Test-DrCheck([string]$Check, [int]$Timeout) {
    if ($Check -notmatch '^tcp:(.+):(\d+)$') { Write-Host "check by hand: $Check"; return }
    $target = $Matches[1] -replace '^\[(.*)\]$', '$1'   # tcp:[2001:db8::5]:443
    $port = [int]$Matches[2]
    $deadline = (Get-Date).AddSeconds($Timeout)
    while (-not (Test-NetConnection -ComputerName $target -Port $port -InformationLevel Quiet -WarningAction SilentlyContinue)) {
        if ((Get-Date) -gt $deadline) { throw "check $Check failed after $Timeout s" }
        Start-Sleep -Seconds 5
    }
    Write-Host "check $Check passed"
}

`)
	if len(nets) > 0 {
		w("# Virtual switches\n")
	}
	for _, n := range nets {
		w("if (-not (Get-VMSwitch -Name %s -ErrorAction SilentlyContinue)) {\n", psq(n.Name))
		switch n.Type {
		case SwitchExternal:
			w("    New-VMSwitch -Name %s -NetAdapterName %s -AllowManagementOS $true | Out-Null\n", psq(n.Name), psq(n.Uplink))
		case SwitchInternal:
			w("    New-VMSwitch -Name %s -SwitchType Internal | Out-Null\n", psq(n.Name))
			if n.Address != "" {
				if p, err := netip.ParsePrefix(n.Address); err == nil {
					w("    New-NetIPAddress -InterfaceAlias %s -IPAddress %s -PrefixLength %d | Out-Null\n", psq("vEthernet ("+n.Name+")"), psq(p.Addr().String()), p.Bits())
				}
			}
		default:
			w("    New-VMSwitch -Name %s -SwitchType Private | Out-Null\n", psq(n.Name))
		}
		w("}\n")
	}
	for _, g := range groups {
		w("\n# ---- Boot group %d ----\nif (-not $Group -or $Group -contains %d) {\n", g.Number, g.Number)
		for _, vm := range g.VMs {
			writePSVM(&b, vm)
		}
		w("\nif ($Start) {\n")
		for _, vm := range g.VMs {
			w("    if ((Get-VM -Name %s).State -ne 'Running') { Start-VM -Name %s }\n", psq(vm.Name), psq(vm.Name))
		}
		for _, vm := range g.VMs {
			w("    Wait-DrVMHeartbeat %s $BootTimeoutSeconds\n", psq(vm.Name))
		}
		for _, vm := range g.VMs {
			for _, n := range vm.NICs {
				if n.DHCP || len(n.IPv4)+len(n.IPv6) == 0 || n.MAC == "" {
					continue
				}
				var addrs, bits []string
				for _, s := range append(append([]string(nil), n.IPv4...), n.IPv6...) {
					if p, err := netip.ParsePrefix(s); err == nil {
						addrs = append(addrs, psq(p.Addr().String()))
						bits = append(bits, itoa(p.Bits()))
					}
				}
				var dns []string
				for _, d := range n.DNS {
					dns = append(dns, psq(d))
				}
				dnsArg := "@()"
				if len(dns) > 0 {
					dnsArg = "@(" + strings.Join(dns, ", ") + ")"
				}
				w("    Set-DrGuestAddress -VMName %s -Mac %s -Address @(%s) -PrefixLength @(%s) -Gateway %s -Gateway6 %s -Dns %s\n",
					psq(vm.Name), psq(psMACString(n.MAC)), strings.Join(addrs, ", "), strings.Join(bits, ", "), psq(n.Gateway4), psq(n.Gateway6), dnsArg)
			}
		}
		for _, vm := range g.VMs {
			for _, c := range vm.Verify {
				w("    Test-DrCheck %s $BootTimeoutSeconds\n", psq(c))
			}
		}
		w("}\n}\n")
	}
	w("\nWrite-Host 'drpipe bring-up script finished'\n")
	return []byte(strings.ReplaceAll(b.String(), "\n", "\r\n"))
}

// hvSlot is where a disk goes on a Hyper-V VM: controller type, number
// and location.
type hvSlot struct {
	ct       string // IDE or SCSI
	num, loc int
}

// hvDiskSlots gives each disk of vm a distinct Hyper-V slot. A disk keeps
// its source controller number and location when it came from the same
// kind of controller and the slot is free; others (virtio, SATA or NVMe
// disks of a libvirt VM, which all read as controller 0, location 0) take
// the next free slot. A generation 1 VM boots only from IDE, and takes
// DVD drives only there, so its boot disk (lowest boot order, else the
// first disk) and its DVD drives go on IDE.
func hvDiskSlots(vm *VM, gen int) []hvSlot {
	boot, bestOrder := -1, 0
	for i, d := range vm.Disks {
		if d.Device == "cdrom" {
			continue
		}
		// Without boot orders, a generation 1 source VM booted from its
		// IDE disk: that one, not a SCSI data disk listed first.
		if boot < 0 || d.BootOrder > 0 && (bestOrder == 0 || d.BootOrder < bestOrder) ||
			bestOrder == 0 && d.Controller == "ide" && vm.Disks[boot].Controller != "ide" {
			boot = i
			if d.BootOrder > 0 {
				bestOrder = d.BootOrder
			}
		}
	}
	limits := map[string][2]int{"IDE": {2, 2}, "SCSI": {4, 64}}
	used := map[hvSlot]bool{}
	free := func(ct string) (hvSlot, bool) {
		l := limits[ct]
		for n := 0; n < l[0]; n++ {
			for k := 0; k < l[1]; k++ {
				if sl := (hvSlot{ct, n, k}); !used[sl] {
					return sl, true
				}
			}
		}
		return hvSlot{}, false
	}
	out := make([]hvSlot, len(vm.Disks))
	kept := make([]bool, len(vm.Disks))
	ctOf := func(i int) string {
		if d := vm.Disks[i]; gen == 1 && (d.Controller == "ide" || d.Device == "cdrom" || i == boot) {
			return "IDE"
		}
		return "SCSI"
	}
	// The disks that keep their source slots first, so that a disk moved
	// to a free slot never takes the slot a later disk really has.
	for i, d := range vm.Disks {
		ct := ctOf(i)
		sl, l := hvSlot{ct, d.ControllerIndex, d.Unit}, limits[ct]
		if strings.ToLower(d.Controller) == strings.ToLower(ct) && sl.num < l[0] && sl.loc < l[1] && !used[sl] {
			used[sl], out[i], kept[i] = true, sl, true
		}
	}
	for i := range vm.Disks {
		if kept[i] {
			continue
		}
		sl, ok := free(ctOf(i))
		if !ok {
			sl, _ = free("SCSI") // IDE is full: the disk still attaches
		}
		used[sl], out[i] = true, sl
	}
	return out
}

func writePSVM(b *strings.Builder, vm *VM) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	name := psq(vm.Name)
	gen := vm.Generation
	if gen == 0 {
		gen = 1
		if vm.Firmware == FirmwareUEFI {
			gen = 2
		}
	}
	w("\n# VM %s: %d vCPUs, %s, generation %d\n", commentText(vm.Name), vm.VCPUs, HumanBytes(vm.Memory.StartupBytes), gen)
	w("if (Get-VM -Name %s -ErrorAction SilentlyContinue) {\n    Write-Warning %s\n} else {\n", name, psq("VM "+vm.Name+" already exists; left as it is"))
	w("    New-VM -Name %s -Generation %d -MemoryStartupBytes %d -NoVHD -Path (Join-Path $ImageRoot %s) | Out-Null\n", name, gen, vm.Memory.StartupBytes, psq(vm.Name))
	w("    Set-VMProcessor -VMName %s -Count %d\n", name, vm.VCPUs)
	if vm.CPU.Mode == "host-passthrough" {
		w("    Set-VMProcessor -VMName %s -ExposeVirtualizationExtensions $true\n", name)
	}
	m := vm.Memory
	if m.Dynamic {
		min, max := m.MinBytes, m.MaxBytes
		if min <= 0 || min > m.StartupBytes {
			min = m.StartupBytes
		}
		if max < m.StartupBytes {
			max = m.StartupBytes
		}
		min, max = min&^(2<<20-1), (max+2<<20-1)&^(2<<20-1) // Hyper-V wants multiples of 2 MiB
		w("    Set-VMMemory -VMName %s -DynamicMemoryEnabled $true -MinimumBytes %d -StartupBytes %d -MaximumBytes %d\n", name, min, m.StartupBytes, max)
	} else {
		w("    Set-VMMemory -VMName %s -DynamicMemoryEnabled $false -StartupBytes %d\n", name, m.StartupBytes)
	}
	if gen == 1 {
		w("    Get-VMDvdDrive -VMName %s | Remove-VMDvdDrive\n", name)
	}
	first := ""
	bestOrder := 0
	slots := hvDiskSlots(vm, gen)
	scsi := 0 // SCSI controllers the disks need
	for _, sl := range slots {
		if sl.ct == "SCSI" {
			scsi = max(scsi, sl.num+1)
		}
	}
	if scsi > 0 {
		w("    while (@(Get-VMScsiController -VMName %s).Count -lt %d) { Add-VMScsiController -VMName %s }\n", name, scsi, name)
	}
	for i, d := range vm.Disks {
		path := "(Join-Path $ImageRoot " + psq(d.File) + ")"
		sl := slots[i]
		loc := fmt.Sprintf("-ControllerType %s -ControllerNumber %d -ControllerLocation %d", sl.ct, sl.num, sl.loc)
		if d.Device == "cdrom" {
			w("    Add-VMDvdDrive -VMName %s %s -Path %s\n", name, loc, path)
			continue
		}
		w("    Add-VMHardDiskDrive -VMName %s %s -Path %s\n", name, loc, path)
		if d.BootOrder > 0 && (bestOrder == 0 || d.BootOrder < bestOrder) {
			bestOrder = d.BootOrder
			first = fmt.Sprintf("(Get-VMHardDiskDrive -VMName %s %s)", name, loc)
		}
	}
	w("    Get-VMNetworkAdapter -VMName %s | Remove-VMNetworkAdapter\n", name)
	for i, n := range vm.NICs {
		an := n.Name
		if an == "" {
			an = fmt.Sprintf("Network Adapter %d", i+1)
		}
		args := fmt.Sprintf("-VMName %s -Name %s -SwitchName %s", name, psq(an), psq(n.Switch))
		if n.MAC != "" {
			args += " -StaticMacAddress " + psq(psMACString(n.MAC))
		}
		if n.Model == "e1000" && gen == 1 {
			args += " -IsLegacy $true"
		}
		w("    Add-VMNetworkAdapter %s\n", args)
		vl := fmt.Sprintf("-VMName %s -VMNetworkAdapterName %s", name, psq(an))
		switch {
		case n.VLAN == nil || n.VLAN.Mode == VLANUntagged:
			w("    Set-VMNetworkAdapterVlan %s -Untagged\n", vl)
		case n.VLAN.Mode == VLANAccess:
			w("    Set-VMNetworkAdapterVlan %s -Access -VlanId %d\n", vl, n.VLAN.ID)
		default:
			ids := make([]string, len(n.VLAN.Trunk))
			for k, t := range n.VLAN.Trunk {
				ids[k] = itoa(t)
			}
			w("    Set-VMNetworkAdapterVlan %s -Trunk -AllowedVlanIdList %s -NativeVlanId %d\n", vl, psq(strings.Join(ids, ",")), n.VLAN.Native)
		}
	}
	if gen == 2 {
		sb := "Off"
		if vm.SecureBoot {
			sb = "On"
		}
		if first != "" {
			w("    Set-VMFirmware -VMName %s -EnableSecureBoot %s -FirstBootDevice %s\n", name, sb, first)
		} else {
			w("    Set-VMFirmware -VMName %s -EnableSecureBoot %s\n", name, sb)
		}
	} else {
		w("    Set-VMBios -VMName %s -StartupOrder @('IDE', 'CD', 'LegacyNetworkAdapter', 'Floppy')\n", name)
	}
	if vm.Notes != "" {
		w("    Set-VM -Name %s -Notes %s\n", name, psq(vm.Notes))
	}
	w("}\n")
}
