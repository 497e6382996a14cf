package drsite

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// HyperVCollector is the "Collector" value written by
// configs/hyperv-inventory.ps1; HyperVCollectorVersion is the newest
// version understood.
const (
	HyperVCollector        = "drpipe-hyperv-inventory"
	HyperVCollectorVersion = 1
)

// psTypeName matches the strings ConvertTo-Json leaves when -Depth is too
// small ("Microsoft.HyperV.PowerShell.VMNetworkAdapter",
// "System.Collections.Hashtable", "@{Name=...}").
var psTypeName = regexp.MustCompile(`^(Microsoft\.|System\.)[A-Za-z0-9_.+\[\]` + "`" + `]+$|^@\{.*\}$`)

func importHyperV(file string, data []byte, o ImportOptions) (*Inventory, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var doc any
	if err := d.Decode(&doc); err != nil {
		return nil, &FieldError{File: file, Err: fmt.Errorf("malformed JSON: %w", err)}
	}
	if d.More() {
		return nil, &FieldError{File: file, Err: fmt.Errorf("trailing data after the JSON object")}
	}
	w := &warnings{file: file}
	wk := &docWalker{file: file, w: w, truncated: psTypeName.MatchString}
	root := wk.object("", doc)
	inv := hyperVInventory(wk, root, o)
	root.finish()
	if wk.err != nil {
		return nil, wk.err
	}
	inv.Warnings = append(inv.Warnings, w.list...)
	return inv, nil
}

// psEnum reads an enum written as its number or (with -EnumsAsStrings) its
// name; names maps lower-case names to numbers.
func psEnum(o *docObj, key string, names map[string]int64) (int64, bool) {
	v, p, ok := o.get(key)
	if !ok || v == nil {
		return 0, false
	}
	if s, isStr := v.(string); isStr {
		if n, found := names[strings.ToLower(strings.TrimSpace(s))]; found {
			return n, true
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return n, true
		}
		o.wk.fail(p, "unknown value %q", s)
		return 0, false
	}
	return o.num(key)
}

var (
	psSwitchType     = map[string]int64{"private": 0, "internal": 1, "external": 2}
	psControllerType = map[string]int64{"ide": 0, "scsi": 1}
	psVhdFormat      = map[string]int64{"vhd": 2, "vhdx": 3, "vhdset": 4}
	psVhdType        = map[string]int64{"fixed": 2, "dynamic": 3, "differencing": 4}
	psVlanMode       = map[string]int64{"untagged": 0, "access": 1, "trunk": 2, "private": 3}
	psOnOff          = map[string]int64{"on": 0, "off": 1}
	psBootType       = map[string]int64{"drive": 1, "network": 2, "file": 3}
	psBiosDevice     = map[string]int64{"floppy": 0, "cd": 1, "ide": 2, "legacynetworkadapter": 3}
)

func hyperVInventory(wk *docWalker, root *docObj, o ImportOptions) *Inventory {
	inv := &Inventory{}
	if root == nil {
		wk.fail("", "empty document")
		return inv
	}
	if c := root.str("Collector"); c != "" && c != HyperVCollector {
		wk.fail("Collector", "is %q, want %q (output of configs/hyperv-inventory.ps1)", c, HyperVCollector)
	}
	if v, ok := root.num("CollectorVersion"); ok && (v < 1 || v > HyperVCollectorVersion) {
		wk.fail("CollectorVersion", "version %d is not supported (this drpipe reads up to %d); upgrade drpipe", v, HyperVCollectorVersion)
	}
	root.known("CollectedAt")
	hostName := root.str("ComputerName")
	if hostName == "" {
		hostName = o.Host
		wk.w.add("ComputerName", "missing; the VMs are recorded under host %q", hostName)
	}
	host := Host{Name: hostName, Hypervisor: "hyperv"}
	if h := root.sub("Host"); h != nil {
		if n, ok := h.num("LogicalProcessorCount"); ok {
			host.Resources.VCPUs = int(n)
		}
		if n, ok := h.size("MemoryCapacity"); ok {
			host.Resources.MemoryBytes = n
		}
		h.known("VirtualHardDiskPath", "VirtualMachinePath")
		vols, vp := h.list("Volumes")
		for i, v := range vols {
			vo := wk.object(fmt.Sprintf("%s[%d]", vp, i), v)
			if vo == nil {
				continue
			}
			vo.known("DriveLetter", "SizeRemaining")
			if n, ok := vo.size("Size"); ok {
				host.Resources.StorageBytes += n
			}
			vo.finish()
		}
		h.finish()
	}
	switchVLANs := map[string]map[int]bool{}
	sws, sp := root.list("Switches")
	for i, v := range sws {
		so := wk.object(fmt.Sprintf("%s[%d]", sp, i), v)
		if so == nil {
			continue
		}
		s := Switch{Name: so.str("Name"), ID: so.str("Id")}
		if s.Name == "" {
			wk.fail(so.path+".Name", "switch without a name")
		}
		t, ok := psEnum(so, "SwitchType", psSwitchType)
		switch {
		case !ok:
			wk.w.add(so.path+".SwitchType", "switch %s has no type; recorded as private", s.Name)
			s.Type = SwitchPrivate
		case t == 0:
			s.Type = SwitchPrivate
		case t == 1:
			s.Type = SwitchInternal
		case t == 2:
			s.Type = SwitchExternal
		default:
			wk.fail(so.path+".SwitchType", "unknown switch type %d", t)
		}
		s.Uplink = so.str("NetAdapterName")
		if desc := so.str("NetAdapterInterfaceDescription"); s.Uplink == "" {
			s.Uplink = desc
		}
		if s.Type == SwitchExternal && s.Uplink == "" {
			wk.w.add(so.path+".NetAdapterName", "external switch %s without an uplink adapter", s.Name)
		}
		so.known("AllowManagementOS", "Notes")
		so.finish()
		host.Switches = append(host.Switches, s)
	}
	vms, vp := root.list("VMs")
	for i, v := range vms {
		vo := wk.object(fmt.Sprintf("%s[%d]", vp, i), v)
		if vo == nil {
			continue
		}
		vm := hyperVVM(wk, vo, switchVLANs)
		vm.Host = hostName
		vo.finish()
		inv.VMs = append(inv.VMs, vm)
	}
	for k := range host.Switches {
		for id := range switchVLANs[host.Switches[k].Name] {
			host.Switches[k].VLANs = append(host.Switches[k].VLANs, id)
		}
	}
	inv.Hosts = []Host{host}
	return inv
}

// notesDirective matches "drpipe.priority: 1" lines in VM notes.
var notesDirective = regexp.MustCompile(`(?mi)^\s*drpipe\.([a-z-]+)\s*[:=]\s*(.*?)\s*$`)

// applyNotes reads drpipe directives from free-text notes (Hyper-V Notes,
// OVF annotations).
func applyNotes(wk *docWalker, field string, vm *VM) {
	for _, m := range notesDirective.FindAllStringSubmatch(vm.Notes, -1) {
		key, val := strings.ToLower(m[1]), m[2]
		switch key {
		case "priority", "boot-priority":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				wk.fail(field, "drpipe.%s: %q is not a whole number", key, val)
				continue
			}
			vm.BootPriority = n
		case "depends", "depends-on":
			for _, d := range strings.Split(val, ",") {
				if d = strings.TrimSpace(d); d != "" {
					vm.DependsOn = append(vm.DependsOn, d)
				}
			}
		case "anti-affinity":
			vm.AntiAffinity = val
		case "verify":
			for _, d := range strings.Split(val, ",") {
				if d = strings.TrimSpace(d); d != "" {
					vm.Verify = append(vm.Verify, d)
				}
			}
		default:
			wk.w.add(field, "unknown directive drpipe.%s in notes; ignored", key)
		}
	}
}

func psMAC(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) == 12 && !strings.ContainsAny(s, ":-") {
		var b strings.Builder
		for i := 0; i < 12; i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(s[i : i+2])
		}
		s = b.String()
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%q is not a MAC address", s)
	}
	return hw.String(), nil
}

func winBase(p string) string { return path.Base(strings.ReplaceAll(p, `\`, "/")) }

func hyperVVM(wk *docWalker, vo *docObj, switchVLANs map[string]map[int]bool) VM {
	vm := VM{Name: vo.str("Name"), ID: vo.str("Id"), Source: "hyperv", Notes: vo.str("Notes")}
	if vm.Name == "" {
		wk.fail(vo.path+".Name", "VM without a name")
	}
	at := fmt.Sprintf("VMs[%s]", vm.Name)
	vo.known("Version", "State", "Path", "AutomaticStartAction", "AutomaticStartDelay")
	if g, ok := vo.num("Generation"); ok {
		if g != 1 && g != 2 {
			wk.fail(at+".Generation", "%d is not 1 or 2", g)
		}
		vm.Generation = int(g)
	} else {
		wk.w.add(at+".Generation", "missing; firmware unknown (the DR definition uses BIOS)")
	}
	vm.Firmware = FirmwareBIOS
	if vm.Generation == 2 {
		vm.Firmware = FirmwareUEFI
	}
	vm.Machine = map[int]string{1: "pc", 2: "q35"}[vm.Generation]
	if n, ok := vo.num("ProcessorCount"); ok {
		vm.VCPUs = int(n)
	}
	if p := vo.sub("Processor"); p != nil {
		if n, ok := p.num("Count"); ok {
			vm.VCPUs = int(n)
		}
		if r, ok := p.num("Reserve"); ok && r != 0 {
			wk.w.add(at+".Processor.Reserve", "processor reserve %d%% is not carried", r)
		}
		if m, ok := p.num("Maximum"); ok && m != 100 {
			wk.w.add(at+".Processor.Maximum", "processor limit %d%% is not carried", m)
		}
		if x, _ := p.boolean("ExposeVirtualizationExtensions"); x {
			wk.w.add(at+".Processor.ExposeVirtualizationExtensions", "nested virtualisation: the DR host must allow it (libvirt: cpu mode host-passthrough)")
			vm.CPU.Mode = "host-passthrough"
		}
		p.known("RelativeWeight", "CompatibilityForMigrationEnabled")
		p.finish()
	}
	if vm.VCPUs == 0 {
		wk.w.add(at+".Processor.Count", "missing processor count; the VM cannot be placed until it is set")
	}
	if m := vo.sub("Memory"); m != nil {
		if n, ok := m.size("Startup"); ok {
			vm.Memory.StartupBytes = n
		}
		dyn, _ := m.boolean("DynamicMemoryEnabled")
		if dyn {
			vm.Memory.Dynamic = true
			vm.Memory.MinBytes, _ = m.size("Minimum")
			vm.Memory.MaxBytes, _ = m.size("Maximum")
		} else {
			m.known("Minimum", "Maximum")
		}
		m.known("Buffer", "Priority")
		m.finish()
	}
	if vm.Memory.StartupBytes == 0 {
		wk.w.add(at+".Memory.Startup", "missing startup memory; the VM cannot be placed until it is set")
	}
	applyNotes(wk, at+".Notes", &vm)

	drives, dp := vo.list("HardDrives")
	for i, v := range drives {
		do := wk.object(fmt.Sprintf("%s[%d]", dp, i), v)
		if do == nil {
			continue
		}
		d := Disk{File: do.str("Path"), Device: "disk"}
		df := fmt.Sprintf("%s.HardDrives[%d]", at, i)
		if d.File == "" {
			wk.w.add(df+".Path", "hard drive without a path (pass-through disk?); not carried")
			do.known("ControllerType", "ControllerNumber", "ControllerLocation", "VhdFormat", "VhdType", "Size", "FileSize", "ParentPath")
			do.finish()
			continue
		}
		hyperVController(wk, do, df, &d)
		if f, ok := psEnum(do, "VhdFormat", psVhdFormat); ok {
			switch f {
			case 2:
				d.Format = "vhd"
			case 3:
				d.Format = "vhdx"
			default:
				wk.fail(df+".VhdFormat", "VHD Set (%d) disks are not supported; convert to VHDX (Convert-VHD)", f)
			}
		} else {
			ext := strings.ToLower(path.Ext(winBase(d.File)))
			switch ext {
			case ".vhdx", ".vhd":
				d.Format = ext[1:]
				wk.w.add(df+".VhdFormat", "missing (Get-VHD failed on the host); format %s taken from the file name", d.Format)
			default:
				wk.w.add(df+".VhdFormat", "missing and the file name %s does not tell the format", winBase(d.File))
			}
		}
		if t, ok := psEnum(do, "VhdType", psVhdType); ok && t == 4 {
			wk.w.add(df+".VhdType", "differencing disk; its parent %s must be in the same backup and stay at the same relative path", do.str("ParentPath"))
		} else {
			do.known("ParentPath")
		}
		if n, ok := do.size("Size"); ok {
			d.VirtualSize = n
		} else {
			wk.w.add(df+".Size", "virtual size unknown; storage planning uses the image file size")
		}
		do.known("FileSize")
		do.finish()
		vm.Disks = append(vm.Disks, d)
	}
	dvds, vp := vo.list("DvdDrives")
	for i, v := range dvds {
		do := wk.object(fmt.Sprintf("%s[%d]", vp, i), v)
		if do == nil {
			continue
		}
		d := Disk{File: do.str("Path"), Device: "cdrom", Format: "iso", ReadOnly: true}
		df := fmt.Sprintf("%s.DvdDrives[%d]", at, i)
		hyperVController(wk, do, df, &d)
		do.finish()
		if d.File == "" {
			continue // empty drive: nothing to carry
		}
		wk.w.add(df+".Path", "DVD image %s is attached; include it in the backup or detach it at the DR site", winBase(d.File))
		vm.Disks = append(vm.Disks, d)
	}
	if len(vm.Disks) == 0 {
		wk.w.add(at+".HardDrives", "VM has no virtual hard disk; nothing to restore for it")
	}
	nics, np := vo.list("NetworkAdapters")
	for i, v := range nics {
		no := wk.object(fmt.Sprintf("%s[%d]", np, i), v)
		if no == nil {
			continue
		}
		nf := fmt.Sprintf("%s.NetworkAdapters[%d]", at, i)
		n := NIC{Name: no.str("Name"), Switch: no.str("SwitchName")}
		if mac := no.str("MacAddress"); mac != "" {
			m, err := psMAC(mac)
			if err != nil {
				wk.fail(nf+".MacAddress", "%v", err)
			}
			n.MAC = m
			if m == "00:00:00:00:00:00" {
				n.MAC = ""
				wk.w.add(nf+".MacAddress", "dynamic MAC not yet assigned (VM never started); the DR host assigns a new one")
			}
		}
		if dyn, _ := no.boolean("DynamicMacAddressEnabled"); dyn && n.MAC != "" {
			wk.w.add(nf+".DynamicMacAddressEnabled", "dynamic MAC %s is set as static at the DR site so the guest keeps its adapter identity", n.MAC)
		}
		if legacy, _ := no.boolean("IsLegacy"); legacy {
			n.Model = "e1000"
		}
		if n.Switch == "" {
			wk.w.add(nf+".SwitchName", "adapter %s is connected to no switch", n.Name)
		}
		no.known("Id", "IPAddresses")
		if vl := no.sub("Vlan"); vl != nil {
			mode, _ := psEnum(vl, "OperationMode", psVlanMode)
			switch mode {
			case 0:
			case 1:
				id, _ := vl.num("AccessVlanId")
				if id < 1 || id > 4094 {
					wk.fail(vl.path+".AccessVlanId", "access VLAN %d is outside 1..4094", id)
				}
				n.VLAN = &VLAN{Mode: VLANAccess, ID: int(id)}
			case 2:
				native, _ := vl.num("NativeVlanId")
				ids := map[int]bool{}
				l, lp := vl.list("AllowedVlanIdList")
				for k, x := range l {
					id, err := toInt(x)
					if err != nil || id < 0 || id > 4094 {
						wk.fail(fmt.Sprintf("%s[%d]", lp, k), "is not a VLAN id")
						continue
					}
					ids[int(id)] = true
				}
				if s := vl.str("AllowedVlanIdListString"); len(ids) == 0 && s != "" {
					parts := strings.Split(s, ",")
					if len(parts) > 4095 {
						// Each range is walked: a list of more
						// ranges than there are VLAN ids would
						// only make the walk long.
						wk.fail(vl.path+".AllowedVlanIdListString", "%d entries are more than there are VLAN ids", len(parts))
						parts = nil
					}
					for _, part := range parts {
						lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
						a, err1 := strconv.Atoi(strings.TrimSpace(lo))
						b := a
						var err2 error
						if isRange {
							b, err2 = strconv.Atoi(strings.TrimSpace(hi))
						}
						if err1 != nil || err2 != nil || a < 0 || b > 4094 || b < a || b-a > 4094 {
							wk.fail(vl.path+".AllowedVlanIdListString", "%s is not a VLAN list like 10,20-30", describe(s))
							break
						}
						for x := a; x <= b; x++ {
							ids[x] = true
						}
					}
				}
				v := &VLAN{Mode: VLANTrunk, Native: int(native)}
				for id := range ids {
					v.Trunk = append(v.Trunk, id)
				}
				n.VLAN = v
			case 3:
				wk.w.add(vl.path+".OperationMode", "private VLAN mode is not carried; the adapter is mapped untagged")
			default:
				wk.fail(vl.path+".OperationMode", "unknown VLAN mode %d", mode)
			}
			vl.known("AccessVlanId", "NativeVlanId", "AllowedVlanIdList", "AllowedVlanIdListString", "PrivateVlanMode", "PrimaryVlanId", "SecondaryVlanIdList")
			vl.finish()
		} else {
			wk.w.add(nf+".Vlan", "missing VLAN setting (Get-VMNetworkAdapterVlan); treated as untagged")
		}
		if n.Switch != "" {
			set := switchVLANs[n.Switch]
			if set == nil {
				set = map[int]bool{}
				switchVLANs[n.Switch] = set
			}
			if n.VLAN != nil {
				if n.VLAN.ID > 0 {
					set[n.VLAN.ID] = true
				}
				for _, t := range n.VLAN.Trunk {
					set[t] = true
				}
			}
		}
		if g := no.sub("GuestNetworkConfiguration"); g != nil {
			hyperVGuestIP(wk, g, nf, &n)
			g.finish()
		} else if n.Switch != "" {
			wk.w.add(nf+".GuestNetworkConfiguration", "guest IP configuration unknown (VM off or no integration services); re-IP cannot be planned for this adapter")
		}
		no.finish()
		vm.NICs = append(vm.NICs, n)
	}
	if fw := vo.sub("Firmware"); fw != nil {
		if sb, ok := psEnum(fw, "SecureBoot", psOnOff); ok {
			vm.SecureBoot = sb == 0
		}
		fw.known("SecureBootTemplate")
		order := 1
		// The devices not yet in the boot order, by path (compared
		// as Windows does, case-insensitively) and MAC: one lookup
		// per entry, however many devices and entries a file lists.
		disks, nics := map[string][]int{}, map[string][]int{}
		for k := range vm.Disks {
			key := strings.ToUpper(vm.Disks[k].File)
			disks[key] = append(disks[key], k)
		}
		for k := range vm.NICs {
			nics[vm.NICs[k].MAC] = append(nics[vm.NICs[k].MAC], k)
		}
		bo, bp := fw.list("BootOrder")
		for i, v := range bo {
			e := wk.object(fmt.Sprintf("%s[%d]", bp, i), v)
			if e == nil {
				continue
			}
			t, _ := psEnum(e, "BootType", psBootType)
			p, mac := e.str("Path"), e.str("MacAddress")
			switch t {
			case 1:
				if ks := disks[strings.ToUpper(p)]; p != "" && len(ks) > 0 {
					vm.Disks[ks[0]].BootOrder = order
					order++
					disks[strings.ToUpper(p)] = ks[1:]
				}
			case 2:
				m, err := psMAC(mac)
				if err != nil {
					wk.fail(e.path+".MacAddress", "%v", err)
				} else if ks := nics[m]; len(ks) > 0 {
					vm.NICs[ks[0]].BootOrder = order
					order++
					nics[m] = ks[1:]
				}
			}
			e.finish()
		}
		fw.finish()
	}
	if bios := vo.sub("BIOS"); bios != nil {
		order := 1
		// next[dev] is where the search for the device's next
		// unordered disk or adapter goes on: each list is walked once.
		next := map[int64]int{}
		so, sp := bios.list("StartupOrder")
		for i, v := range so {
			var dev int64
			if s, ok := v.(string); ok {
				d, found := psBiosDevice[strings.ToLower(s)]
				if !found {
					wk.fail(fmt.Sprintf("%s[%d]", sp, i), "unknown BIOS boot device %q", s)
				}
				dev = d
			} else {
				d, err := toInt(v)
				if err != nil {
					wk.fail(fmt.Sprintf("%s[%d]", sp, i), "%v", err)
				}
				dev = d
			}
			switch dev {
			case 1, 2:
				want := map[int64]string{1: "cdrom", 2: "disk"}[dev]
				for k := next[dev]; k < len(vm.Disks); k++ {
					next[dev] = k + 1
					if vm.Disks[k].Device == want && vm.Disks[k].Controller == "ide" && vm.Disks[k].BootOrder == 0 {
						vm.Disks[k].BootOrder = order
						order++
						break
					}
				}
			case 3:
				for k := next[dev]; k < len(vm.NICs); k++ {
					next[dev] = k + 1
					if vm.NICs[k].Model == "e1000" && vm.NICs[k].BootOrder == 0 {
						vm.NICs[k].BootOrder = order
						order++
						break
					}
				}
			}
		}
		bios.finish()
	}
	return vm
}

func hyperVController(wk *docWalker, do *docObj, df string, d *Disk) {
	ct, ok := psEnum(do, "ControllerType", psControllerType)
	switch {
	case !ok:
		wk.w.add(df+".ControllerType", "missing; the DR definition uses SCSI")
		d.Controller = "scsi"
	case ct == 0:
		d.Controller = "ide"
	case ct == 1:
		d.Controller = "scsi"
	default:
		wk.fail(df+".ControllerType", "unknown controller type %d", ct)
	}
	if n, ok := do.num("ControllerNumber"); ok {
		if n < 0 || n > 3 {
			wk.fail(df+".ControllerNumber", "%d is outside 0..3", n)
		}
		d.ControllerIndex = int(n)
	}
	if n, ok := do.num("ControllerLocation"); ok {
		if n < 0 || n > 63 {
			wk.fail(df+".ControllerLocation", "%d is outside 0..63", n)
		}
		d.Unit = int(n)
	}
}

// hyperVGuestIP reads Msvm_GuestNetworkAdapterConfiguration: parallel
// lists of addresses and subnets (IPv4 netmasks, IPv6 prefix lengths as
// the guests' data exchange service reports them, "/64", or bare).
func hyperVGuestIP(wk *docWalker, g *docObj, nf string, n *NIC) {
	n.DHCP, _ = g.boolean("DHCPEnabled")
	addrs := g.strs("IPAddresses")
	subs := g.strs("Subnets")
	for i, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			wk.fail(fmt.Sprintf("%s.GuestNetworkConfiguration.IPAddresses[%d]", nf, i), "%q is not an IP address", a)
			continue
		}
		if ip.IsLinkLocalUnicast() {
			continue
		}
		bits := -1
		if i < len(subs) {
			s := subs[i]
			if m, err := netip.ParseAddr(s); err == nil && m.Is4() {
				mb := m.As4()
				if ones, total := net.IPMask(mb[:]).Size(); total > 0 {
					bits = ones
				}
			} else if v, err := strconv.Atoi(strings.TrimPrefix(s, "/")); err == nil && v >= 0 && v <= ip.BitLen() {
				bits = v
			}
			if bits < 0 {
				wk.fail(fmt.Sprintf("%s.GuestNetworkConfiguration.Subnets[%d]", nf, i), "%q is neither a netmask nor a prefix length", s)
				continue
			}
		} else {
			wk.w.add(nf+".GuestNetworkConfiguration.Subnets", "no subnet for %s; host address /%d assumed", ip, ip.BitLen())
			bits = ip.BitLen()
		}
		p := netip.PrefixFrom(ip, bits).String()
		if ip.Is4() {
			n.IPv4 = append(n.IPv4, p)
		} else {
			n.IPv6 = append(n.IPv6, p)
		}
	}
	for i, gw := range g.strs("DefaultGateways") {
		ip, err := netip.ParseAddr(gw)
		if err != nil {
			wk.fail(fmt.Sprintf("%s.GuestNetworkConfiguration.DefaultGateways[%d]", nf, i), "%q is not an IP address", gw)
			continue
		}
		if ip.Is4() && n.Gateway4 == "" {
			n.Gateway4 = ip.String()
		} else if ip.Is6() && n.Gateway6 == "" {
			n.Gateway6 = ip.String()
		}
	}
	for i, d := range g.strs("DNSServers") {
		if _, err := netip.ParseAddr(d); err != nil {
			wk.fail(fmt.Sprintf("%s.GuestNetworkConfiguration.DNSServers[%d]", nf, i), "%q is not an IP address", d)
			continue
		}
		n.DNS = append(n.DNS, d)
	}
}
