package drsite

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
)

// Inventory format identification. The version is bumped on incompatible
// changes and never reused; readers reject versions they do not know.
const (
	InventoryFormat  = "drpipe-inventory"
	InventoryVersion = 1
)

// Inventory is the documented configuration of the primary site: hosts
// with their virtual switches, and VMs. The zero value is empty; use
// Normalize before comparing or storing.
type Inventory struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Hosts lists the source hosts with their virtual switches.
	Hosts []Host `json:"hosts,omitempty"`
	// VMs lists the virtual machines, sorted by name.
	VMs []VM `json:"vms"`
	// Sources records which files the inventory was imported from.
	Sources []Source `json:"sources,omitempty"`
	// Warnings lists unknown or missing fields the importers met. They are
	// carried into plans and runbooks as unresolved items.
	Warnings []Warning `json:"warnings,omitempty"`
}

// Source records one imported file.
type Source struct {
	File   string `json:"file"`
	Format Format `json:"format"`
	SHA256 string `json:"sha256"`
}

// Warning is an unknown or missing field met while importing.
type Warning struct {
	File    string `json:"file,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// String renders "file: field: message".
func (w Warning) String() string {
	var b strings.Builder
	if w.File != "" {
		b.WriteString(w.File)
		b.WriteString(": ")
	}
	if w.Field != "" {
		b.WriteString(w.Field)
		b.WriteString(": ")
	}
	b.WriteString(w.Message)
	return b.String()
}

// Host is a source hypervisor host.
type Host struct {
	Name string `json:"name"`
	// Hypervisor is libvirt, hyperv or vmware (empty when unknown).
	Hypervisor string    `json:"hypervisor,omitempty"`
	Switches   []Switch  `json:"switches,omitempty"`
	Resources  Resources `json:"resources,omitzero"`
}

// Resources is a host's capacity (zero when unknown).
type Resources struct {
	VCPUs        int   `json:"vcpus,omitempty"`
	MemoryBytes  int64 `json:"memory_bytes,omitempty"`
	StorageBytes int64 `json:"storage_bytes,omitempty"`
}

// Switch types, in Hyper-V's terms (libvirt networks map onto them:
// forward bridge/passthrough → external, nat/route/open → internal, no
// forward → private).
const (
	SwitchExternal = "external"
	SwitchInternal = "internal"
	SwitchPrivate  = "private"
)

// Switch is a virtual switch (Hyper-V) or virtual network (libvirt).
type Switch struct {
	Name string `json:"name"`
	ID   string `json:"id,omitempty"`
	// Type is external, internal or private.
	Type string `json:"type"`
	// Mode is libvirt's forward mode (nat, route, bridge, open, ...;
	// empty for an isolated network or a Hyper-V switch).
	Mode string `json:"mode,omitempty"`
	// Bridge is the host bridge device (libvirt).
	Bridge string `json:"bridge,omitempty"`
	// Uplink is the physical adapter the switch is bound to.
	Uplink string `json:"uplink,omitempty"`
	// VirtualPort is "openvswitch" for OVS bridges.
	VirtualPort string `json:"virtualport,omitempty"`
	// VLAN is the switch-level VLAN setting (libvirt network vlan).
	VLAN *VLAN `json:"vlan,omitempty"`
	// VLANs lists the VLAN ids in use on the switch (from port groups,
	// trunk settings and the VMs' adapters).
	VLANs      []int       `json:"vlans,omitempty"`
	Portgroups []Portgroup `json:"portgroups,omitempty"`
	// Subnets are the addresses the host has on the switch, as
	// address/prefix (e.g. 192.168.122.1/24), with an optional DHCP range.
	Subnets []Subnet `json:"subnets,omitempty"`
}

// Portgroup is a libvirt network port group.
type Portgroup struct {
	Name    string `json:"name"`
	Default bool   `json:"default,omitempty"`
	VLAN    *VLAN  `json:"vlan,omitempty"`
}

// Subnet is an address of the host on a switch.
type Subnet struct {
	Address   string `json:"address"`
	DHCPStart string `json:"dhcp_start,omitempty"`
	DHCPEnd   string `json:"dhcp_end,omitempty"`
}

// VLAN modes.
const (
	VLANUntagged = "untagged"
	VLANAccess   = "access"
	VLANTrunk    = "trunk"
)

// VLAN is the VLAN setting of an adapter, port group or network.
type VLAN struct {
	// Mode is untagged, access or trunk.
	Mode string `json:"mode"`
	// ID is the access VLAN.
	ID int `json:"id,omitempty"`
	// Trunk lists the allowed VLANs of a trunk.
	Trunk []int `json:"trunk,omitempty"`
	// Native is the native (untagged) VLAN of a trunk.
	Native int `json:"native,omitempty"`
	// NativeMode is libvirt's nativeMode of the native tag (tagged or
	// untagged).
	NativeMode string `json:"native_mode,omitempty"`
}

// Firmware kinds.
const (
	FirmwareBIOS = "bios"
	FirmwareUEFI = "uefi"
)

// VM is one virtual machine.
type VM struct {
	Name string `json:"name"`
	ID   string `json:"id,omitempty"`
	// Host is the source host the VM runs on.
	Host string `json:"host,omitempty"`
	// Source is the importer that produced it (libvirt, hyperv, ovf, yaml).
	Source string `json:"source,omitempty"`
	// Firmware is bios or uefi.
	Firmware string `json:"firmware,omitempty"`
	// SecureBoot is set for UEFI VMs with secure boot on.
	SecureBoot bool `json:"secure_boot,omitempty"`
	// Generation is the Hyper-V generation (1 or 2; 0 when not Hyper-V).
	Generation int    `json:"generation,omitempty"`
	Arch       string `json:"arch,omitempty"`
	Machine    string `json:"machine,omitempty"`
	VCPUs      int    `json:"vcpus"`
	CPU        CPU    `json:"cpu,omitzero"`
	Memory     Memory `json:"memory"`
	Disks      []Disk `json:"disks,omitempty"`
	NICs       []NIC  `json:"nics,omitempty"`
	// BootPriority orders start-up: lower starts first; 0 means none
	// given (after every VM with a priority).
	BootPriority int `json:"boot_priority,omitempty"`
	// DependsOn names VMs that must be running before this one starts.
	DependsOn []string `json:"depends_on,omitempty"`
	// AntiAffinity names a group whose members must run on different DR
	// hosts (e.g. two domain controllers).
	AntiAffinity string `json:"anti_affinity,omitempty"`
	// Verify lists checks that show the VM is up: tcp:HOST:PORT (after
	// re-IP) is probed; anything else is listed in the runbook.
	Verify []string `json:"verify,omitempty"`
	Notes  string   `json:"notes,omitempty"`
}

// CPU is the guest CPU model and topology.
type CPU struct {
	// Mode is libvirt's cpu mode (host-passthrough, host-model, custom).
	Mode    string `json:"mode,omitempty"`
	Model   string `json:"model,omitempty"`
	Sockets int    `json:"sockets,omitempty"`
	Cores   int    `json:"cores,omitempty"`
	Threads int    `json:"threads,omitempty"`
}

// Memory is a VM's memory. Startup is what the VM boots with; with
// dynamic memory (Hyper-V) or a balloon below the maximum (libvirt) it
// may range between Min and Max.
type Memory struct {
	StartupBytes int64 `json:"startup_bytes"`
	Dynamic      bool  `json:"dynamic,omitempty"`
	MinBytes     int64 `json:"min_bytes,omitempty"`
	MaxBytes     int64 `json:"max_bytes,omitempty"`
}

// Disk is one virtual disk or optical drive.
type Disk struct {
	// File is the image path on the source host.
	File string `json:"file"`
	// Format is raw, qcow2, vhd, vhdx, vmdk, iso, ...
	Format string `json:"format,omitempty"`
	// Device is disk or cdrom.
	Device string `json:"device,omitempty"`
	// VirtualSize is the guest-visible size in bytes (0 when unknown).
	VirtualSize int64 `json:"virtual_size,omitempty"`
	// Controller is the bus: virtio, scsi, sata, ide, usb, fdc, nvme.
	Controller string `json:"controller,omitempty"`
	// ControllerIndex and Unit are the controller number and location
	// (Hyper-V ControllerNumber/ControllerLocation).
	ControllerIndex int `json:"controller_index,omitempty"`
	Unit            int `json:"unit,omitempty"`
	// Target is libvirt's target device name (vda, sda, hdc).
	Target    string `json:"target,omitempty"`
	BootOrder int    `json:"boot_order,omitempty"`
	ReadOnly  bool   `json:"readonly,omitempty"`
	Shareable bool   `json:"shareable,omitempty"`
}

// NIC is one network adapter.
type NIC struct {
	Name string `json:"name,omitempty"`
	// MAC is lower-case colon-separated.
	MAC string `json:"mac,omitempty"`
	// Switch is the virtual switch or network the NIC is connected to.
	Switch string `json:"switch,omitempty"`
	// Kind is libvirt's interface type (network, bridge, direct).
	Kind      string `json:"kind,omitempty"`
	Portgroup string `json:"portgroup,omitempty"`
	Model     string `json:"model,omitempty"`
	// VirtualPort is "openvswitch" when the port is on an OVS bridge.
	VirtualPort string `json:"virtualport,omitempty"`
	VLAN        *VLAN  `json:"vlan,omitempty"`
	// IPv4 and IPv6 hold static addresses as address/prefix.
	IPv4     []string `json:"ipv4,omitempty"`
	IPv6     []string `json:"ipv6,omitempty"`
	Gateway4 string   `json:"gateway4,omitempty"`
	Gateway6 string   `json:"gateway6,omitempty"`
	DNS      []string `json:"dns,omitempty"`
	DHCP     bool     `json:"dhcp,omitempty"`
	// BootOrder is set when the VM network-boots from this NIC.
	BootOrder int `json:"boot_order,omitempty"`
}

// VLANID returns the VLAN the NIC's untagged traffic belongs to for
// mapping purposes: the access id, the trunk's native VLAN, or 0.
func (n *NIC) VLANID() int {
	if n.VLAN == nil {
		return 0
	}
	switch n.VLAN.Mode {
	case VLANAccess:
		return n.VLAN.ID
	case VLANTrunk:
		return n.VLAN.Native
	}
	return 0
}

// VM returns the VM called name, or nil.
func (inv *Inventory) VM(name string) *VM {
	for i := range inv.VMs {
		if inv.VMs[i].Name == name {
			return &inv.VMs[i]
		}
	}
	return nil
}

// Host returns the host called name, or nil.
func (inv *Inventory) Host(name string) *Host {
	for i := range inv.Hosts {
		if inv.Hosts[i].Name == name {
			return &inv.Hosts[i]
		}
	}
	return nil
}

// Normalize sets the format header, sorts hosts, switches and VMs by name
// and canonicalises MACs, addresses and VLAN lists so that equal
// inventories encode to equal JSON.
func (inv *Inventory) Normalize() {
	inv.Format, inv.Version = InventoryFormat, InventoryVersion
	if inv.VMs == nil {
		inv.VMs = []VM{}
	}
	sort.SliceStable(inv.Hosts, func(i, j int) bool { return inv.Hosts[i].Name < inv.Hosts[j].Name })
	for i := range inv.Hosts {
		h := &inv.Hosts[i]
		sort.SliceStable(h.Switches, func(a, b int) bool { return h.Switches[a].Name < h.Switches[b].Name })
		for k := range h.Switches {
			s := &h.Switches[k]
			s.VLANs = sortedInts(s.VLANs)
			normVLAN(s.VLAN)
			for p := range s.Portgroups {
				normVLAN(s.Portgroups[p].VLAN)
			}
		}
	}
	sort.SliceStable(inv.VMs, func(i, j int) bool { return inv.VMs[i].Name < inv.VMs[j].Name })
	for i := range inv.VMs {
		vm := &inv.VMs[i]
		vm.Notes = strings.ReplaceAll(vm.Notes, "\r\n", "\n")
		for k := range vm.NICs {
			n := &vm.NICs[k]
			if m, err := net.ParseMAC(n.MAC); err == nil && len(m) == 6 {
				n.MAC = m.String()
			}
			normVLAN(n.VLAN)
			n.IPv4 = normPrefixes(n.IPv4)
			n.IPv6 = normPrefixes(n.IPv6)
			n.Gateway4 = normAddr(n.Gateway4)
			n.Gateway6 = normAddr(n.Gateway6)
			for d := range n.DNS {
				n.DNS[d] = normAddr(n.DNS[d])
			}
		}
	}
}

func normVLAN(v *VLAN) {
	if v != nil {
		v.Trunk = sortedInts(v.Trunk)
		if v.Mode == VLANTrunk && v.Native != 0 && v.NativeMode == "" {
			v.NativeMode = "untagged"
		}
	}
}

func sortedInts(xs []int) []int {
	if len(xs) == 0 {
		return nil
	}
	out := append([]int(nil), xs...)
	sort.Ints(out)
	j := 0
	for i, x := range out {
		if i == 0 || x != out[j-1] {
			out[j] = x
			j++
		}
	}
	return out[:j]
}

func normPrefixes(xs []string) []string {
	for i, s := range xs {
		if p, err := netip.ParsePrefix(s); err == nil {
			xs[i] = p.String()
		}
	}
	return xs
}

func normAddr(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String()
	}
	return s
}

// FieldError is a malformed value in an inventory, a configuration or a
// generated definition: where it is and what is wrong.
type FieldError struct {
	// File is the input file (may be empty).
	File string
	// Field is the path to the value, e.g. vms[dc01].nics[0].mac or
	// devices/interface[1]/mac/@address.
	Field string
	Err   error
}

// Error renders "file: field: problem".
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(file, field, format string, args ...any) error {
	return &FieldError{File: file, Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks the values of a (normalised or not) inventory: unique
// VM names, positive sizes, well-formed MACs, addresses, VLAN ids and
// references. It returns every problem found, joined; each is a
// *FieldError naming the field.
func (inv *Inventory) Validate(file string) error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fieldErr(file, field, format, args...))
	}
	if inv.Format != "" && inv.Format != InventoryFormat {
		add("format", "is %q, want %q", inv.Format, InventoryFormat)
	}
	if inv.Version != 0 && inv.Version != InventoryVersion {
		add("version", "inventory version %d is not supported (this drpipe reads version %d); upgrade drpipe", inv.Version, InventoryVersion)
	}
	hosts := map[string]bool{}
	for i, h := range inv.Hosts {
		f := fmt.Sprintf("hosts[%d]", i)
		if hosts[h.Name] {
			add(f+".name", "host %q appears twice", h.Name)
		}
		hosts[h.Name] = true
		if h.Resources.VCPUs < 0 || h.Resources.MemoryBytes < 0 || h.Resources.StorageBytes < 0 {
			add(f+".resources", "negative capacity")
		}
		sw := map[string]bool{}
		for k, s := range h.Switches {
			sf := fmt.Sprintf("%s.switches[%d]", f, k)
			if s.Name == "" {
				add(sf+".name", "missing switch name")
			} else if sw[s.Name] {
				add(sf+".name", "switch %q appears twice on host %q", s.Name, h.Name)
			}
			sw[s.Name] = true
			switch s.Type {
			case SwitchExternal, SwitchInternal, SwitchPrivate:
			default:
				add(sf+".type", "%q is not external, internal or private", s.Type)
			}
			for _, v := range s.VLANs {
				if v < 0 || v > 4095 {
					add(sf+".vlans", "VLAN id %d is outside 0..4095", v)
				}
			}
			if err := s.VLAN.validate(); err != nil {
				add(sf+".vlan", "%v", err)
			}
			for p, pg := range s.Portgroups {
				if err := pg.VLAN.validate(); err != nil {
					add(fmt.Sprintf("%s.portgroups[%d].vlan", sf, p), "%v", err)
				}
			}
			for n, sub := range s.Subnets {
				if _, err := netip.ParsePrefix(sub.Address); err != nil {
					add(fmt.Sprintf("%s.subnets[%d].address", sf, n), "%q is not address/prefix", sub.Address)
				}
			}
		}
	}
	names := map[string]bool{}
	macs := map[string]string{}
	for i := range inv.VMs {
		vm := &inv.VMs[i]
		f := fmt.Sprintf("vms[%d]", i)
		if vm.Name == "" {
			add(f+".name", "missing VM name")
		} else {
			f = fmt.Sprintf("vms[%s]", vm.Name)
			if err := fileNameOK(vm.Name); err != nil {
				add(f+".name", "%v", err)
			}
			if names[vm.Name] {
				add(f+".name", "VM %q appears twice; VM names must be unique across hosts", vm.Name)
			}
			names[vm.Name] = true
		}
		if vm.VCPUs < 0 || vm.VCPUs > 4096 {
			add(f+".vcpus", "%d is outside 0..4096", vm.VCPUs)
		}
		m := vm.Memory
		if m.StartupBytes < 0 || m.MinBytes < 0 || m.MaxBytes < 0 {
			add(f+".memory", "negative size")
		}
		if m.Dynamic && m.MaxBytes > 0 && m.StartupBytes > m.MaxBytes {
			add(f+".memory", "startup %d exceeds dynamic maximum %d", m.StartupBytes, m.MaxBytes)
		}
		if m.Dynamic && m.MinBytes > 0 && m.StartupBytes > 0 && m.MinBytes > m.StartupBytes {
			add(f+".memory", "dynamic minimum %d exceeds startup %d", m.MinBytes, m.StartupBytes)
		}
		switch vm.Firmware {
		case "", FirmwareBIOS, FirmwareUEFI:
		default:
			add(f+".firmware", "%q is not bios or uefi", vm.Firmware)
		}
		if vm.Generation != 0 && vm.Generation != 1 && vm.Generation != 2 {
			add(f+".generation", "%d is not 1 or 2", vm.Generation)
		}
		if vm.BootPriority < 0 {
			add(f+".boot_priority", "%d is negative", vm.BootPriority)
		}
		for k, d := range vm.Disks {
			df := fmt.Sprintf("%s.disks[%d]", f, k)
			if d.File == "" {
				add(df+".file", "missing image file")
			}
			if d.VirtualSize < 0 {
				add(df+".virtual_size", "negative size")
			}
			if d.BootOrder < 0 || d.ControllerIndex < 0 || d.Unit < 0 {
				add(df, "negative boot order, controller or unit")
			}
		}
		for k := range vm.NICs {
			n := &vm.NICs[k]
			nf := fmt.Sprintf("%s.nics[%d]", f, k)
			if n.MAC != "" {
				hw, err := net.ParseMAC(n.MAC)
				if err != nil || len(hw) != 6 {
					add(nf+".mac", "%q is not a MAC address", n.MAC)
				} else if other, dup := macs[hw.String()]; dup {
					add(nf+".mac", "MAC %s is also used by %s", hw, other)
				} else {
					macs[hw.String()] = vm.Name
				}
			}
			if err := n.VLAN.validate(); err != nil {
				add(nf+".vlan", "%v", err)
			}
			for _, p := range n.IPv4 {
				if pp, err := netip.ParsePrefix(p); err != nil || !pp.Addr().Is4() {
					add(nf+".ipv4", "%q is not an IPv4 address/prefix", p)
				}
			}
			for _, p := range n.IPv6 {
				if pp, err := netip.ParsePrefix(p); err != nil || !pp.Addr().Is6() {
					add(nf+".ipv6", "%q is not an IPv6 address/prefix", p)
				}
			}
			if n.Gateway4 != "" {
				if a, err := netip.ParseAddr(n.Gateway4); err != nil || !a.Is4() {
					add(nf+".gateway4", "%q is not an IPv4 address", n.Gateway4)
				}
			}
			if n.Gateway6 != "" {
				if a, err := netip.ParseAddr(n.Gateway6); err != nil || !a.Is6() {
					add(nf+".gateway6", "%q is not an IPv6 address", n.Gateway6)
				}
			}
			for _, d := range n.DNS {
				if _, err := netip.ParseAddr(d); err != nil {
					add(nf+".dns", "%q is not an IP address", d)
				}
			}
		}
	}
	for i := range inv.VMs {
		vm := &inv.VMs[i]
		for _, d := range vm.DependsOn {
			if d == vm.Name {
				add(fmt.Sprintf("vms[%s].depends_on", vm.Name), "a VM cannot depend on itself")
			}
		}
	}
	return errors.Join(errs...)
}

// DiskFormat is the format d is read in: its own, or raw for a libvirt
// disk without one (libvirt reads a disk whose driver gives no type as
// raw; it has not probed formats since CVE-2010-2237), so its guest
// writes every byte of it, an image header too. "" when unknown.
func (vm *VM) DiskFormat(d Disk) string {
	if d.Format == "" && vm.Source == "libvirt" && d.Device != "cdrom" && d.Device != "floppy" {
		return "raw"
	}
	return d.Format
}

// fileNameOK says whether a VM name can name the VM's files at the DR
// site (domains/NAME.xml, images/NAME/) without leaving their folder: a
// name from a compromised source host must not write elsewhere when the
// DR operator runs bringup as root.
func fileNameOK(name string) error {
	if name == "." || name == ".." {
		return fmt.Errorf("%q cannot name the VM's files at the DR site; rename the VM", name)
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return r == '/' || r == '\\' || r < 0x20 || r == 0x7f }); i >= 0 {
		return fmt.Errorf("%q holds %q, which cannot be in the VM's file names at the DR site; rename the VM", name, name[i:i+1])
	}
	if len(name) > 200 {
		return fmt.Errorf("%d bytes is too long for the VM's file names at the DR site (at most 200); rename the VM", len(name))
	}
	return nil
}

func (v *VLAN) validate() error {
	if v == nil {
		return nil
	}
	ok := func(x int) bool { return x >= 0 && x <= 4095 }
	switch v.Mode {
	case VLANUntagged:
	case VLANAccess:
		if !ok(v.ID) || v.ID == 0 {
			return fmt.Errorf("access VLAN id %d is outside 1..4095", v.ID)
		}
	case VLANTrunk:
		for _, t := range v.Trunk {
			if !ok(t) {
				return fmt.Errorf("trunk VLAN id %d is outside 0..4095", t)
			}
		}
		if !ok(v.Native) {
			return fmt.Errorf("native VLAN id %d is outside 0..4095", v.Native)
		}
	default:
		return fmt.Errorf("mode %q is not untagged, access or trunk", v.Mode)
	}
	return nil
}
