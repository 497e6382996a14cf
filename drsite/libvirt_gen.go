package drsite

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Output shapes for libvirt XML. Field order is element order.
type genDomain struct {
	XMLName       xml.Name    `xml:"domain"`
	Type          string      `xml:"type,attr"`
	Name          string      `xml:"name"`
	UUID          string      `xml:"uuid,omitempty"`
	Description   string      `xml:"description,omitempty"`
	Metadata      *genMeta    `xml:"metadata"`
	Memory        genSize     `xml:"memory"`
	CurrentMemory genSize     `xml:"currentMemory"`
	VCPU          genVCPU     `xml:"vcpu"`
	OS            genOS       `xml:"os"`
	Features      genFeatures `xml:"features"`
	CPU           *genCPU     `xml:"cpu"`
	Clock         genAttr     `xml:"clock"`
	OnPoweroff    string      `xml:"on_poweroff"`
	OnReboot      string      `xml:"on_reboot"`
	OnCrash       string      `xml:"on_crash"`
	Devices       genDevices  `xml:"devices"`
}

type genMeta struct {
	VM *genDrpipeMeta
}

// genDrpipeMeta is written with an explicit prefix so libvirt keeps it.
type genDrpipeMeta struct {
	XMLName      xml.Name     `xml:"drpipe:vm"`
	NS           string       `xml:"xmlns:drpipe,attr"`
	BootPriority int          `xml:"drpipe:boot_priority,omitempty"`
	Generation   int          `xml:"drpipe:generation,omitempty"`
	MemoryMin    int64        `xml:"drpipe:memory_min,omitempty"`
	DependsOn    []string     `xml:"drpipe:depends_on,omitempty"`
	AntiAffinity string       `xml:"drpipe:anti_affinity,omitempty"`
	Verify       []string     `xml:"drpipe:verify,omitempty"`
	NICs         []genMetaNIC `xml:"drpipe:nic"`
	Disks        []genMetaDsk `xml:"drpipe:disk"`
}

type genMetaNIC struct {
	MAC      string   `xml:"mac,attr"`
	Name     string   `xml:"drpipe:name,omitempty"`
	IPv4     []string `xml:"drpipe:ipv4,omitempty"`
	IPv6     []string `xml:"drpipe:ipv6,omitempty"`
	Gateway4 string   `xml:"drpipe:gateway4,omitempty"`
	Gateway6 string   `xml:"drpipe:gateway6,omitempty"`
	DNS      []string `xml:"drpipe:dns,omitempty"`
	DHCP     string   `xml:"drpipe:dhcp,omitempty"`
}

type genMetaDsk struct {
	Target      string `xml:"target,attr"`
	VirtualSize int64  `xml:"virtual_size,attr"`
}

type genSize struct {
	Unit  string `xml:"unit,attr"`
	Value int64  `xml:",chardata"`
}

type genVCPU struct {
	Placement string `xml:"placement,attr"`
	Value     int    `xml:",chardata"`
}

type genOS struct {
	Firmware string `xml:"firmware,attr,omitempty"`
	Type     struct {
		Arch    string `xml:"arch,attr"`
		Machine string `xml:"machine,attr,omitempty"`
		Value   string `xml:",chardata"`
	} `xml:"type"`
	Loader *genAttr `xml:"loader"`
}

type genAttr struct {
	Offset string `xml:"offset,attr,omitempty"`
	Secure string `xml:"secure,attr,omitempty"`
	State  string `xml:"state,attr,omitempty"`
	Type   string `xml:"type,attr,omitempty"`
	Port   string `xml:"port,attr,omitempty"`
	Order  int    `xml:"order,attr,omitempty"`
}

type genFeatures struct {
	ACPI *struct{} `xml:"acpi"`
	APIC *struct{} `xml:"apic"`
	SMM  *genAttr  `xml:"smm"`
}

type genCPU struct {
	Mode     string `xml:"mode,attr,omitempty"`
	Model    string `xml:"model,omitempty"`
	Topology *struct {
		Sockets int `xml:"sockets,attr"`
		Dies    int `xml:"dies,attr"`
		Cores   int `xml:"cores,attr"`
		Threads int `xml:"threads,attr"`
	} `xml:"topology"`
}

type genDevices struct {
	Disks      []genDisk      `xml:"disk"`
	Interfaces []genInterface `xml:"interface"`
	Serial     genSerial      `xml:"serial"`
	Console    genSerial      `xml:"console"`
	Graphics   *genGraphics   `xml:"graphics"`
	Video      *genVideo      `xml:"video"`
}

type genDisk struct {
	Type   string `xml:"type,attr"`
	Device string `xml:"device,attr"`
	Driver struct {
		Name string `xml:"name,attr"`
		Type string `xml:"type,attr"`
	} `xml:"driver"`
	Source struct {
		File string `xml:"file,attr"`
	} `xml:"source"`
	Target struct {
		Dev string `xml:"dev,attr"`
		Bus string `xml:"bus,attr"`
	} `xml:"target"`
	Boot      *genAttr    `xml:"boot"`
	ReadOnly  *struct{}   `xml:"readonly"`
	Shareable *struct{}   `xml:"shareable"`
	Address   *genAddress `xml:"address"`
}

type genAddress struct {
	Type       string `xml:"type,attr"`
	Controller int    `xml:"controller,attr"`
	Bus        int    `xml:"bus,attr"`
	Target     int    `xml:"target,attr"`
	Unit       int    `xml:"unit,attr"`
}

type genInterface struct {
	Type string `xml:"type,attr"`
	MAC  *struct {
		Address string `xml:"address,attr"`
	} `xml:"mac"`
	Source struct {
		Network   string `xml:"network,attr,omitempty"`
		Bridge    string `xml:"bridge,attr,omitempty"`
		Dev       string `xml:"dev,attr,omitempty"`
		Mode      string `xml:"mode,attr,omitempty"`
		Portgroup string `xml:"portgroup,attr,omitempty"`
	} `xml:"source"`
	VLAN        *genVLAN `xml:"vlan"`
	VirtualPort *genAttr `xml:"virtualport"`
	Model       *genAttr `xml:"model"`
	Boot        *genAttr `xml:"boot"`
}

type genVLAN struct {
	Trunk string `xml:"trunk,attr,omitempty"`
	Tags  []struct {
		ID         int    `xml:"id,attr"`
		NativeMode string `xml:"nativeMode,attr,omitempty"`
	} `xml:"tag"`
}

type genSerial struct {
	Type   string  `xml:"type,attr"`
	Target genAttr `xml:"target"`
}

type genGraphics struct {
	Type     string `xml:"type,attr"`
	Port     string `xml:"port,attr"`
	Autoport string `xml:"autoport,attr"`
	Listen   string `xml:"listen,attr"`
}

type genVideo struct {
	Model genAttr `xml:"model"`
}

// DomainOptions tune DomainXML.
type DomainOptions struct {
	// Type is the domain type: kvm (default), qemu (TCG), or test.
	Type string
	// Graphics adds a VNC console on 127.0.0.1 and a VGA adapter.
	Graphics bool
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

// lvFormat maps a model disk format to libvirt's driver type.
func lvFormat(f string) (string, error) {
	switch strings.ToLower(f) {
	case "", "raw", "img":
		return "raw", nil
	case "qcow2", "qcow", "vmdk", "vdi", "qed", "iso":
		if strings.ToLower(f) == "iso" {
			return "raw", nil
		}
		return strings.ToLower(f), nil
	case "vhd", "vpc":
		return "vpc", nil
	case "vhdx":
		return "", fmt.Errorf("libvirt cannot attach VHDX images; convert to qcow2 first (qemu-img convert -O qcow2)")
	}
	return "", fmt.Errorf("disk format %q is not known to libvirt", f)
}

// DomainXML renders vm as libvirt domain XML for the DR host. The VM is
// taken as given: disk files, networks, VLANs and addresses must already
// be the DR ones (see Bringup). DR attributes (boot priority,
// dependencies, addresses) travel in <metadata> so that importing the
// result yields the same model.
func DomainXML(vm *VM, o DomainOptions) ([]byte, error) {
	if o.Type == "" {
		o.Type = "kvm"
	}
	if vm.Name == "" {
		return nil, fmt.Errorf("domain XML: VM without a name")
	}
	if vm.VCPUs < 1 {
		return nil, fieldErr("", "vms["+vm.Name+"].vcpus", "no vCPU count; set it in the inventory")
	}
	if vm.Memory.StartupBytes < 1 {
		return nil, fieldErr("", "vms["+vm.Name+"].memory", "no memory size; set it in the inventory")
	}
	d := genDomain{Type: o.Type, Name: vm.Name, Description: vm.Notes, OnPoweroff: "destroy", OnReboot: "restart", OnCrash: "destroy"}
	if uuidRE.MatchString(vm.ID) {
		d.UUID = strings.ToLower(vm.ID)
	}
	kib := func(b int64) int64 { return (b + 1023) / 1024 }
	max := vm.Memory.StartupBytes
	if vm.Memory.Dynamic && vm.Memory.MaxBytes > max {
		max = vm.Memory.MaxBytes
	}
	d.Memory = genSize{Unit: "KiB", Value: kib(max)}
	d.CurrentMemory = genSize{Unit: "KiB", Value: kib(vm.Memory.StartupBytes)}
	d.VCPU = genVCPU{Placement: "static", Value: vm.VCPUs}
	arch := vm.Arch
	if arch == "" {
		arch = "x86_64"
	}
	d.OS.Type.Arch, d.OS.Type.Value = arch, "hvm"
	d.OS.Type.Machine = vm.Machine
	if d.OS.Type.Machine == "" && (arch == "x86_64" || arch == "i686") {
		d.OS.Type.Machine = "pc"
		if vm.Firmware == FirmwareUEFI || vm.Generation == 2 {
			d.OS.Type.Machine = "q35"
		}
	}
	d.Features.ACPI, d.Features.APIC = &struct{}{}, &struct{}{}
	if vm.Firmware == FirmwareUEFI {
		d.OS.Firmware = "efi"
		if vm.SecureBoot {
			d.OS.Loader = &genAttr{Secure: "yes"}
			d.Features.SMM = &genAttr{State: "on"}
		}
	}
	if c := vm.CPU; c != (CPU{}) {
		gc := &genCPU{Mode: c.Mode, Model: c.Model}
		if gc.Mode == "" && gc.Model != "" {
			gc.Mode = "custom"
		}
		s, co, t := max1(c.Sockets), max1(c.Cores), max1(c.Threads)
		if (c.Sockets > 0 || c.Cores > 0 || c.Threads > 0) && s*co*t == vm.VCPUs {
			gc.Topology = &struct {
				Sockets int `xml:"sockets,attr"`
				Dies    int `xml:"dies,attr"`
				Cores   int `xml:"cores,attr"`
				Threads int `xml:"threads,attr"`
			}{s, 1, co, t}
		}
		if gc.Mode != "" || gc.Model != "" || gc.Topology != nil {
			d.CPU = gc
		}
	}
	d.Clock = genAttr{Offset: "utc"}
	meta := &genDrpipeMeta{NS: MetadataNS, BootPriority: vm.BootPriority, Generation: vm.Generation, DependsOn: vm.DependsOn, AntiAffinity: vm.AntiAffinity, Verify: vm.Verify}
	if vm.Memory.Dynamic && vm.Memory.MaxBytes > vm.Memory.StartupBytes {
		meta.MemoryMin = vm.Memory.MinBytes
	}
	used := map[string]bool{}
	for _, dk := range vm.Disks {
		if dk.Target != "" {
			used[dk.Target] = true
		}
	}
	slots := map[driveSlot]bool{}
	for i, dk := range vm.Disks {
		gd := genDisk{Type: "file", Device: dk.Device}
		if gd.Device == "" {
			gd.Device = "disk"
		}
		f, err := lvFormat(dk.Format)
		if err != nil {
			return nil, fieldErr("", fmt.Sprintf("vms[%s].disks[%d].format", vm.Name, i), "%v", err)
		}
		gd.Driver.Name, gd.Driver.Type = "qemu", f
		gd.Source.File = dk.File
		bus := dk.Controller
		if bus == "" {
			bus = "virtio"
		}
		if bus == "ide" && d.OS.Type.Machine == "q35" {
			bus = "sata"
		}
		gd.Target.Bus = bus
		gd.Target.Dev = dk.Target
		if gd.Target.Dev == "" || busFromTarget(gd.Target.Dev) != busPrefixBus(bus) {
			gd.Target.Dev = nextTarget(bus, used)
		}
		used[gd.Target.Dev] = true
		if dk.BootOrder > 0 {
			gd.Boot = &genAttr{Order: dk.BootOrder}
		}
		if dk.ReadOnly || gd.Device == "cdrom" {
			gd.ReadOnly = &struct{}{}
		}
		if dk.Shareable {
			gd.Shareable = &struct{}{}
		}
		switch bus {
		case "scsi", "sata":
			gd.Address = &genAddress{Type: "drive", Controller: dk.ControllerIndex, Unit: dk.Unit}
		case "ide":
			gd.Address = &genAddress{Type: "drive", Bus: dk.ControllerIndex, Unit: dk.Unit}
		}
		if gd.Address != nil {
			// Sources that give no address (virt-install --print-xml,
			// a YAML inventory without units) leave every disk at 0:0.
			if slots[driveSlot{bus, *gd.Address}] {
				a, ok := freeDriveSlot(bus, gd.Target.Dev, slots)
				if !ok {
					return nil, fieldErr("", fmt.Sprintf("vms[%s].disks[%d]", vm.Name, i), "no free %s slot is left for the disk", bus)
				}
				gd.Address = &a
			}
			slots[driveSlot{bus, *gd.Address}] = true
		}
		if gd.Address != nil && bus == "sata" && gd.Address.Unit > 5 {
			return nil, fieldErr("", fmt.Sprintf("vms[%s].disks[%d].unit", vm.Name, i), "SATA controllers have units 0..5, not %d", dk.Unit)
		}
		if gd.Address != nil && bus == "ide" && (gd.Address.Unit > 1 || gd.Address.Bus > 1) {
			return nil, fieldErr("", fmt.Sprintf("vms[%s].disks[%d]", vm.Name, i), "IDE has controllers 0..1 with locations 0..1")
		}
		if dk.VirtualSize > 0 {
			meta.Disks = append(meta.Disks, genMetaDsk{Target: gd.Target.Dev, VirtualSize: dk.VirtualSize})
		}
		d.Devices.Disks = append(d.Devices.Disks, gd)
	}
	for i, n := range vm.NICs {
		gi := genInterface{Type: n.Kind}
		if gi.Type == "" {
			gi.Type = "network"
		}
		switch gi.Type {
		case "network":
			gi.Source.Network, gi.Source.Portgroup = n.Switch, n.Portgroup
		case "bridge":
			gi.Source.Bridge = n.Switch
		case "direct":
			gi.Source.Dev, gi.Source.Mode = n.Switch, "bridge"
		default:
			return nil, fieldErr("", fmt.Sprintf("vms[%s].nics[%d].kind", vm.Name, i), "interface kind %q cannot be defined; map it to a network or bridge", n.Kind)
		}
		if n.Switch == "" {
			return nil, fieldErr("", fmt.Sprintf("vms[%s].nics[%d].switch", vm.Name, i), "NIC is connected to no network")
		}
		if n.MAC != "" {
			gi.MAC = &struct {
				Address string `xml:"address,attr"`
			}{n.MAC}
		}
		if v := n.VLAN; v != nil && v.Mode != VLANUntagged {
			gv := &genVLAN{}
			add := func(id int, mode string) {
				gv.Tags = append(gv.Tags, struct {
					ID         int    `xml:"id,attr"`
					NativeMode string `xml:"nativeMode,attr,omitempty"`
				}{id, mode})
			}
			if v.Mode == VLANAccess {
				add(v.ID, "")
			} else {
				gv.Trunk = "yes"
				ids := v.Trunk
				if v.Native != 0 && !containsInt(ids, v.Native) {
					ids = append(append([]int(nil), ids...), v.Native)
				}
				for _, t := range ids {
					mode := ""
					if t == v.Native && v.Native != 0 {
						mode = v.NativeMode
						if mode == "" {
							mode = "untagged"
						}
					}
					add(t, mode)
				}
			}
			gi.VLAN = gv
		}
		if n.VirtualPort != "" {
			gi.VirtualPort = &genAttr{Type: n.VirtualPort}
		}
		if n.Model != "" {
			gi.Model = &genAttr{Type: n.Model}
		}
		if n.BootOrder > 0 {
			gi.Boot = &genAttr{Order: n.BootOrder}
		}
		hasAddr := len(n.IPv4)+len(n.IPv6)+len(n.DNS) > 0 || n.Gateway4 != "" || n.Gateway6 != ""
		if hasAddr && n.MAC == "" {
			return nil, fieldErr("", fmt.Sprintf("vms[%s].nics[%d].mac", vm.Name, i), "a NIC with static addresses needs a MAC to be recognised in the guest")
		}
		if n.MAC != "" && (hasAddr || n.DHCP || n.Name != "") {
			mn := genMetaNIC{MAC: n.MAC, Name: n.Name, IPv4: n.IPv4, IPv6: n.IPv6, Gateway4: n.Gateway4, Gateway6: n.Gateway6, DNS: n.DNS}
			if n.DHCP {
				mn.DHCP = "yes"
			}
			meta.NICs = append(meta.NICs, mn)
		}
		d.Devices.Interfaces = append(d.Devices.Interfaces, gi)
	}
	d.Devices.Serial = genSerial{Type: "pty", Target: genAttr{Port: "0"}}
	d.Devices.Console = genSerial{Type: "pty", Target: genAttr{Type: "serial", Port: "0"}}
	if o.Graphics {
		d.Devices.Graphics = &genGraphics{Type: "vnc", Port: "-1", Autoport: "yes", Listen: "127.0.0.1"}
		d.Devices.Video = &genVideo{Model: genAttr{Type: "vga"}}
	}
	if meta.BootPriority != 0 || meta.Generation != 0 || meta.MemoryMin != 0 || len(meta.DependsOn)+len(meta.Verify)+len(meta.NICs)+len(meta.Disks) > 0 || meta.AntiAffinity != "" {
		d.Metadata = &genMeta{VM: meta}
	}
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	enc.Indent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("domain XML for %s: %w", vm.Name, err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

func max1(x int) int {
	if x < 1 {
		return 1
	}
	return x
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func busPrefixBus(bus string) string {
	switch bus {
	case "virtio":
		return "virtio"
	case "scsi", "sata", "usb":
		return "scsi"
	case "ide":
		return "ide"
	case "fdc":
		return "fdc"
	}
	return ""
}

// nextTarget returns the first unused target device name for a bus.
func nextTarget(bus string, used map[string]bool) string {
	prefix := map[string]string{"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd", "fdc": "fd"}[bus]
	if prefix == "" {
		prefix = "vd"
	}
	for i := 0; ; i++ {
		name := prefix + diskLetters(i)
		if !used[name] {
			return name
		}
	}
}

// driveSlot is a drive address on a bus.
type driveSlot struct {
	bus  string
	addr genAddress
}

// freeDriveSlot returns a drive address for a disk whose slot an earlier
// disk has: the one libvirt derives from the target name (sdb: unit 1,
// hdc: the secondary IDE channel) when that is free, else the first free
// one on the bus.
func freeDriveSlot(bus, dev string, used map[driveSlot]bool) (genAddress, bool) {
	per, limit := 7, 1<<16
	switch bus {
	case "sata":
		per = 6
	case "ide":
		per, limit = 2, 4
	}
	slot := func(i int) genAddress {
		if bus == "ide" {
			return genAddress{Type: "drive", Bus: i / per, Unit: i % per}
		}
		return genAddress{Type: "drive", Controller: i / per, Unit: i % per}
	}
	if i, ok := targetIndex(dev); ok && i < limit && !used[driveSlot{bus, slot(i)}] {
		return slot(i), true
	}
	for i := range limit {
		if !used[driveSlot{bus, slot(i)}] {
			return slot(i), true
		}
	}
	return genAddress{}, false
}

// targetIndex is the inverse of diskLetters for a target name such as
// sdb (1) or hdc (2).
func targetIndex(dev string) (int, bool) {
	if len(dev) < 3 || len(dev) > 6 {
		return 0, false
	}
	i := 0
	for _, r := range dev[2:] {
		if r < 'a' || r > 'z' {
			return 0, false
		}
		i = i*26 + int(r-'a') + 1
	}
	return i - 1, true
}

// diskLetters returns a, b, ..., z, aa, ab, ... for 0, 1, ...
func diskLetters(i int) string {
	s := ""
	for i++; i > 0; i = (i - 1) / 26 {
		s = string(rune('a'+(i-1)%26)) + s
	}
	return s
}

// Output shape of libvirt network XML.
type genNetwork struct {
	XMLName xml.Name `xml:"network"`
	Name    string   `xml:"name"`
	UUID    string   `xml:"uuid,omitempty"`
	Forward *struct {
		Mode string `xml:"mode,attr"`
		Dev  string `xml:"dev,attr,omitempty"`
	} `xml:"forward"`
	Bridge *struct {
		Name string `xml:"name,attr"`
	} `xml:"bridge"`
	VirtualPort *genAttr       `xml:"virtualport"`
	VLAN        *genVLAN       `xml:"vlan"`
	Portgroups  []genPortgroup `xml:"portgroup"`
	IPs         []genIP        `xml:"ip"`
}

type genPortgroup struct {
	Name    string   `xml:"name,attr"`
	Default string   `xml:"default,attr,omitempty"`
	VLAN    *genVLAN `xml:"vlan"`
}

type genIP struct {
	Family  string `xml:"family,attr,omitempty"`
	Address string `xml:"address,attr"`
	Prefix  int    `xml:"prefix,attr"`
	DHCP    *struct {
		Range struct {
			Start string `xml:"start,attr"`
			End   string `xml:"end,attr"`
		} `xml:"range"`
	} `xml:"dhcp"`
}

func vlanToGen(v *VLAN) *genVLAN {
	if v == nil || v.Mode == VLANUntagged {
		return nil
	}
	g := &genVLAN{}
	add := func(id int, mode string) {
		g.Tags = append(g.Tags, struct {
			ID         int    `xml:"id,attr"`
			NativeMode string `xml:"nativeMode,attr,omitempty"`
		}{id, mode})
	}
	if v.Mode == VLANAccess {
		add(v.ID, "")
		return g
	}
	g.Trunk = "yes"
	for _, t := range v.Trunk {
		mode := ""
		if t == v.Native && v.Native != 0 {
			mode = v.NativeMode
			if mode == "" {
				mode = "untagged"
			}
		}
		add(t, mode)
	}
	return g
}

// NetworkXML renders a switch as libvirt network XML: forward mode from
// Mode (none for a private switch), the bridge, OVS virtualport, VLANs and
// port groups, and the host's addresses with their DHCP ranges.
func NetworkXML(s *Switch) ([]byte, error) {
	if s.Name == "" {
		return nil, fmt.Errorf("network XML: switch without a name")
	}
	n := genNetwork{Name: s.Name}
	if uuidRE.MatchString(s.ID) {
		n.UUID = strings.ToLower(s.ID)
	}
	mode := s.Mode
	if mode == "" && s.Type == SwitchExternal {
		mode = "bridge"
	}
	if mode == "" && s.Type == SwitchInternal {
		mode = "nat"
	}
	if mode != "" && mode != "none" {
		n.Forward = &struct {
			Mode string `xml:"mode,attr"`
			Dev  string `xml:"dev,attr,omitempty"`
		}{Mode: mode}
		if mode != "bridge" && s.Uplink != "" && s.Uplink != s.Bridge {
			n.Forward.Dev = s.Uplink
		}
	}
	br := s.Bridge
	if br == "" && mode == "bridge" {
		br = s.Uplink
	}
	if mode == "bridge" && br == "" {
		return nil, fieldErr("", "switch "+s.Name+".bridge", "a bridged network needs the host bridge name")
	}
	if br != "" {
		n.Bridge = &struct {
			Name string `xml:"name,attr"`
		}{br}
	}
	if s.VirtualPort != "" {
		n.VirtualPort = &genAttr{Type: s.VirtualPort}
	}
	n.VLAN = vlanToGen(s.VLAN)
	for _, pg := range s.Portgroups {
		g := genPortgroup{Name: pg.Name, VLAN: vlanToGen(pg.VLAN)}
		if pg.Default {
			g.Default = "yes"
		}
		n.Portgroups = append(n.Portgroups, g)
	}
	for i, sub := range s.Subnets {
		p, err := netip.ParsePrefix(sub.Address)
		if err != nil {
			return nil, fieldErr("", fmt.Sprintf("switch %s.subnets[%d]", s.Name, i), "%q is not address/prefix", sub.Address)
		}
		if mode == "bridge" {
			return nil, fieldErr("", "switch "+s.Name+".subnets", "a bridged network cannot carry host addresses in libvirt; configure them on the bridge")
		}
		ip := genIP{Address: p.Addr().String(), Prefix: p.Bits()}
		if p.Addr().Is6() {
			ip.Family = "ipv6"
		}
		if sub.DHCPStart != "" {
			ip.DHCP = &struct {
				Range struct {
					Start string `xml:"start,attr"`
					End   string `xml:"end,attr"`
				} `xml:"range"`
			}{}
			ip.DHCP.Range.Start, ip.DHCP.Range.End = sub.DHCPStart, sub.DHCPEnd
		}
		n.IPs = append(n.IPs, ip)
	}
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	enc.Indent("", "  ")
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("network XML for %s: %w", s.Name, err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// itoa is strconv.Itoa, shorter at call sites.
func itoa(i int) string { return strconv.Itoa(i) }
