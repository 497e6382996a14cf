package drsite

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// MetadataNS is the XML namespace of drpipe's per-VM DR attributes inside
// a libvirt domain's <metadata> (set with
// `virsh metadata DOM urn:drpipe:inventory:1 --key drpipe --set XML`):
// boot priority, dependencies, anti-affinity group, checks, and per NIC
// the static addresses libvirt itself does not know.
const MetadataNS = "urn:drpipe:inventory:1"

// libvirt domain XML, as far as the model needs it. Unmatched children
// land in Any and are reported.
type lvDomain struct {
	XMLName       xml.Name    `xml:"domain"`
	Type          string      `xml:"type,attr"`
	Name          string      `xml:"name"`
	UUID          string      `xml:"uuid"`
	Title         string      `xml:"title"`
	Description   string      `xml:"description"`
	Metadata      *lvMetadata `xml:"metadata"`
	Memory        *lvSize     `xml:"memory"`
	CurrentMemory *lvSize     `xml:"currentMemory"`
	VCPU          *lvVCPU     `xml:"vcpu"`
	OS            *lvOS       `xml:"os"`
	CPU           *lvCPU      `xml:"cpu"`
	Clock         *lvClock    `xml:"clock"`
	Features      *lvAnyList  `xml:"features"`
	Devices       *lvDevices  `xml:"devices"`
	Any           []lvAny     `xml:",any"`
}

type lvAny struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Inner   []byte     `xml:",innerxml"`
}

type lvAnyList struct {
	Any []lvAny `xml:",any"`
}

type lvSize struct {
	Unit  string `xml:"unit,attr"`
	Value string `xml:",chardata"`
}

type lvVCPU struct {
	Placement string `xml:"placement,attr"`
	Current   string `xml:"current,attr"`
	Value     string `xml:",chardata"`
}

type lvOS struct {
	Firmware string `xml:"firmware,attr"`
	Type     struct {
		Arch    string `xml:"arch,attr"`
		Machine string `xml:"machine,attr"`
		Value   string `xml:",chardata"`
	} `xml:"type"`
	Loader *struct {
		Type   string `xml:"type,attr"`
		Secure string `xml:"secure,attr"`
		Path   string `xml:",chardata"`
	} `xml:"loader"`
	FirmwareFeatures *struct {
		Features []struct {
			Name    string `xml:"name,attr"`
			Enabled string `xml:"enabled,attr"`
		} `xml:"feature"`
	} `xml:"firmware"`
	Boot []struct {
		Dev string `xml:"dev,attr"`
	} `xml:"boot"`
	Any []lvAny `xml:",any"`
}

type lvCPU struct {
	Mode     string `xml:"mode,attr"`
	Model    string `xml:"model"`
	Topology *struct {
		Sockets string `xml:"sockets,attr"`
		Dies    string `xml:"dies,attr"`
		Cores   string `xml:"cores,attr"`
		Threads string `xml:"threads,attr"`
	} `xml:"topology"`
	Features []struct {
		Name   string `xml:"name,attr"`
		Policy string `xml:"policy,attr"`
	} `xml:"feature"`
}

type lvClock struct {
	Offset string `xml:"offset,attr"`
}

type lvDevices struct {
	Disks      []lvDisk      `xml:"disk"`
	Interfaces []lvInterface `xml:"interface"`
	Any        []lvAny       `xml:",any"`
}

type lvDisk struct {
	Type   string `xml:"type,attr"`
	Device string `xml:"device,attr"`
	Driver *struct {
		Name string `xml:"name,attr"`
		Type string `xml:"type,attr"`
	} `xml:"driver"`
	Source *struct {
		File     string `xml:"file,attr"`
		Dev      string `xml:"dev,attr"`
		Pool     string `xml:"pool,attr"`
		Volume   string `xml:"volume,attr"`
		Protocol string `xml:"protocol,attr"`
		Name     string `xml:"name,attr"`
		// Encryption is where libvirt 6.10 and later write it.
		Encryption *struct{} `xml:"encryption"`
	} `xml:"source"`
	Target *struct {
		Dev string `xml:"dev,attr"`
		Bus string `xml:"bus,attr"`
	} `xml:"target"`
	Boot *struct {
		Order string `xml:"order,attr"`
	} `xml:"boot"`
	ReadOnly  *struct{}  `xml:"readonly"`
	Shareable *struct{}  `xml:"shareable"`
	Address   *lvAddress `xml:"address"`
	Any       []lvAny    `xml:",any"`
}

type lvAddress struct {
	Type       string `xml:"type,attr"`
	Controller string `xml:"controller,attr"`
	Bus        string `xml:"bus,attr"`
	Unit       string `xml:"unit,attr"`
}

type lvInterface struct {
	Type string `xml:"type,attr"`
	MAC  *struct {
		Address string `xml:"address,attr"`
	} `xml:"mac"`
	Source *struct {
		Network   string `xml:"network,attr"`
		Bridge    string `xml:"bridge,attr"`
		Dev       string `xml:"dev,attr"`
		Mode      string `xml:"mode,attr"`
		Portgroup string `xml:"portgroup,attr"`
	} `xml:"source"`
	VLAN        *lvVLAN `xml:"vlan"`
	VirtualPort *struct {
		Type string `xml:"type,attr"`
	} `xml:"virtualport"`
	Model *struct {
		Type string `xml:"type,attr"`
	} `xml:"model"`
	Boot *struct {
		Order string `xml:"order,attr"`
	} `xml:"boot"`
	Any []lvAny `xml:",any"`
}

type lvVLAN struct {
	Trunk string `xml:"trunk,attr"`
	Tags  []struct {
		ID         string `xml:"id,attr"`
		NativeMode string `xml:"nativeMode,attr"`
	} `xml:"tag"`
}

type lvMetadata struct {
	VMs []drpipeMeta `xml:"urn:drpipe:inventory:1 vm"`
}

// drpipeMeta is the <drpipe:vm> metadata element.
type drpipeMeta struct {
	XMLName      xml.Name `xml:"urn:drpipe:inventory:1 vm"`
	BootPriority string   `xml:"urn:drpipe:inventory:1 boot_priority,omitempty"`
	DependsOn    []string `xml:"urn:drpipe:inventory:1 depends_on,omitempty"`
	AntiAffinity string   `xml:"urn:drpipe:inventory:1 anti_affinity,omitempty"`
	Verify       []string `xml:"urn:drpipe:inventory:1 verify,omitempty"`
	Generation   string   `xml:"urn:drpipe:inventory:1 generation,omitempty"`
	MemoryMin    string   `xml:"urn:drpipe:inventory:1 memory_min,omitempty"`
	NICs         []struct {
		MAC      string   `xml:"mac,attr"`
		IPv4     []string `xml:"urn:drpipe:inventory:1 ipv4,omitempty"`
		IPv6     []string `xml:"urn:drpipe:inventory:1 ipv6,omitempty"`
		Gateway4 string   `xml:"urn:drpipe:inventory:1 gateway4,omitempty"`
		Gateway6 string   `xml:"urn:drpipe:inventory:1 gateway6,omitempty"`
		DNS      []string `xml:"urn:drpipe:inventory:1 dns,omitempty"`
		DHCP     string   `xml:"urn:drpipe:inventory:1 dhcp,omitempty"`
		Name     string   `xml:"urn:drpipe:inventory:1 name,omitempty"`
	} `xml:"urn:drpipe:inventory:1 nic"`
	Disks []struct {
		Target      string `xml:"target,attr"`
		VirtualSize string `xml:"virtual_size,attr"`
		Controller  string `xml:"controller,attr,omitempty"`
	} `xml:"urn:drpipe:inventory:1 disk"`
}

// Elements of <domain> and <devices> that drpipe regenerates at the DR
// site with its own defaults; their absence from the model loses nothing
// a restored VM needs.
var lvRegenerated = map[string]bool{
	"on_poweroff": true, "on_reboot": true, "on_crash": true, "on_lockfailure": true, "pm": true, "resource": true,
	"seclabel": true, "emulator": true, "controller": true, "memballoon": true, "input": true, "graphics": true,
	"video": true, "sound": true, "audio": true, "serial": true, "console": true, "channel": true, "rng": true,
	"redirdev": true, "hub": true, "watchdog": true, "panic": true, "genid": true, "vcpus": true, "iothreads": true,
	"keywrap": true, "perf": true,
}

// Elements whose settings are not carried to the DR site and may matter.
var lvNotCarried = map[string]string{
	"hostdev":        "host device passthrough is not carried; the DR host must provide an equivalent device",
	"filesystem":     "shared host directory is not carried; provide it on the DR host",
	"tpm":            "virtual TPM state is not carried; BitLocker or measured boot may need recovery keys",
	"smartcard":      "smartcard device is not carried",
	"shmem":          "shared memory device is not carried",
	"cputune":        "CPU pinning and shares are not carried; the DR host uses its defaults",
	"numatune":       "NUMA tuning is not carried",
	"memtune":        "memory limits are not carried",
	"blkiotune":      "block I/O tuning is not carried",
	"memoryBacking":  "memory backing (huge pages, locking) is not carried",
	"maxMemory":      "memory hot-plug maximum is not carried",
	"sysinfo":        "SMBIOS system information is not carried; licensing tied to it may need attention",
	"idmap":          "user namespace id map is not carried",
	"launchSecurity": "launch security (SEV) is not carried",
	"vsock":          "vsock device is not carried",
	"iommu":          "IOMMU device is not carried",
	"parallel":       "parallel port is not carried",
	"lease":          "lock lease is not carried",
	"memory":         "hot-plugged memory module is not carried",
	"nvram":          "NVRAM device is not carried",
}

// Elements of <os> the DR definition does not carry; the boot menu,
// SMBIOS mode and BIOS serial settings are left to the DR host's defaults
// and change nothing the guest needs.
var lvOSNotCarried = map[string]string{
	"bootmenu": "", "smbios": "", "bios": "",
	"nvram":   "the UEFI variable store is not carried: the DR definition starts from the firmware's template, without the guest's boot entries, so a guest whose boot loader is not also at \\EFI\\BOOT\\BOOTX64.EFI (Debian's is not by default) needs its entry added at the DR site",
	"kernel":  "direct kernel boot is not carried: the DR VM boots from its disks, so a guest without a boot loader on them does not start",
	"initrd":  "the initrd of a direct kernel boot is not carried; the DR VM boots from its disks",
	"cmdline": "the kernel command line of a direct kernel boot is not carried; the DR VM boots from its disks",
	"dtb":     "the device tree of a direct kernel boot is not carried; the DR VM boots from its disks",
	"acpi":    "ACPI tables (a SLIC licence table) are not carried; licensing tied to them may need attention",
}

// Elements of <disk> whose settings the guest may depend on and the DR
// definition does not carry; the others (alias, backing chain, I/O
// limits) are left to the DR host.
var lvDiskNotCarried = map[string]string{
	"encryption": "disk encryption (LUKS) is not carried: the DR definition opens the image without its secret; define the secret and the disk's <encryption> at the DR site",
	"serial":     "the disk's serial number is not carried; a guest that mounts it by id (/dev/disk/by-id) does not find it",
	"wwn":        "the disk's WWN is not carried; a guest that mounts it by id (/dev/disk/by-id) does not find it",
	"vendor":     "the disk's vendor name is not carried",
	"product":    "the disk's product name is not carried",
	"blockio":    "the disk's block sizes are not carried: the DR VM sees 512-byte sectors, so a disk written with 4 KiB sectors shows no partitions",
	"geometry":   "the disk's geometry is not carried; the DR host picks its own",
}

// Elements of <interface> whose settings the DR definition does not
// carry and that change what the guest's network does; the others
// (target, alias, driver queues) are left to the DR host.
var lvInterfaceNotCarried = map[string]string{
	"mtu":       "the interface's MTU is not carried; the DR network's MTU applies (jumbo frames need it set there)",
	"link":      "the interface's link state is not carried; the DR VM's interface is up",
	"filterref": "the interface's traffic filter (anti-spoofing) is not carried; define the filter at the DR site",
	"port":      "the interface's port isolation is not carried; the DR VM can reach its neighbours on the network",
	"bandwidth": "the interface's bandwidth limits are not carried",
}

var machineVersion = regexp.MustCompile(`^(pc-q35|pc-i440fx|pc)-[0-9][0-9.]*$`)

// normMachine maps versioned machine types to their family (the DR host
// picks its newest version): pc-q35-7.2 → q35, pc-i440fx-7.2 → pc.
func normMachine(m string) string {
	if s := machineVersion.FindStringSubmatch(m); s != nil {
		if s[1] == "pc-q35" {
			return "q35"
		}
		return "pc"
	}
	return m
}

func importLibvirtDomain(file string, data []byte, o ImportOptions) (*Inventory, error) {
	// virt-install --print-xml prints one definition per install phase;
	// the last is the VM as installed (booting its disk, media ejected).
	dec, err := xmlDecoder(data)
	if err != nil {
		return nil, &FieldError{File: file, Err: fmt.Errorf("malformed libvirt domain XML: %w", err)}
	}
	var doms []lvDomain
	for {
		var d lvDomain
		err := dec.Decode(&d)
		if err == io.EOF && len(doms) > 0 {
			break
		}
		if err != nil {
			return nil, &FieldError{File: file, Err: fmt.Errorf("malformed libvirt domain XML: %w", err)}
		}
		doms = append(doms, d)
	}
	d := doms[len(doms)-1]
	w := &warnings{file: file}
	if len(doms) > 1 {
		for _, x := range doms[:len(doms)-1] {
			if strings.TrimSpace(x.Name) != strings.TrimSpace(d.Name) {
				return nil, fieldErr(file, "domain", "holds the domains %q and %q; give each its own file (virsh dumpxml VM > VM.xml)", strings.TrimSpace(x.Name), strings.TrimSpace(d.Name))
			}
		}
		w.add("domain", "%d definitions of domain %s (virt-install install phases); the last, the VM as installed, is imported", len(doms), strings.TrimSpace(d.Name))
	}
	vm, err := domainToVM(file, &d, w)
	if err != nil {
		return nil, err
	}
	vm.Host = o.Host
	inv := &Inventory{VMs: []VM{*vm}, Warnings: w.list}
	if o.Host != "" {
		inv.Hosts = []Host{{Name: o.Host, Hypervisor: "libvirt"}}
	}
	return inv, nil
}

// xmlUnmarshal decodes the root element strictly and refuses DOCTYPE
// declarations (no entity expansion from outside bytes).
func xmlUnmarshal(data []byte, v any) error {
	d, err := xmlDecoder(data)
	if err != nil {
		return err
	}
	return d.Decode(v)
}

// xmlDecoder returns a strict decoder of data, refusing DOCTYPE and
// ENTITY declarations.
func xmlDecoder(data []byte) (*xml.Decoder, error) {
	if bytes.Contains(data, []byte("<!DOCTYPE")) || bytes.Contains(data, []byte("<!ENTITY")) {
		return nil, fmt.Errorf("DOCTYPE and ENTITY declarations are not accepted")
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	return d, nil
}

func parseIntField(file, field, s string, min, max int64) (int64, error) {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || v < min || v > max {
		return 0, fieldErr(file, field, "%q is not a whole number in %d..%d", s, min, max)
	}
	return v, nil
}

// lvBytes converts a libvirt scaled size (unit attribute, default KiB).
func lvBytes(file, field string, s *lvSize) (int64, error) {
	v, err := parseIntField(file, field, s.Value, 0, 1<<62)
	if err != nil {
		return 0, err
	}
	mult := map[string]int64{"": 1024, "b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9, "t": 1 << 40, "tib": 1 << 40, "tb": 1e12}[strings.ToLower(s.Unit)]
	if mult == 0 {
		return 0, fieldErr(file, field+"/@unit", "unknown unit %q", s.Unit)
	}
	if v > (1<<62)/mult {
		return 0, fieldErr(file, field, "%s %s is out of range", s.Value, s.Unit)
	}
	return v * mult, nil
}

func domainToVM(file string, d *lvDomain, w *warnings) (*VM, error) {
	name := strings.TrimSpace(d.Name)
	if name == "" {
		return nil, fieldErr(file, "name", "the domain has no <name>")
	}
	vm := &VM{Name: name, ID: strings.TrimSpace(d.UUID), Source: "libvirt", Notes: strings.TrimSpace(d.Description)}
	if vm.Notes == "" {
		vm.Notes = strings.TrimSpace(d.Title)
	}
	if d.Memory == nil {
		w.add("memory", "domain %s has no <memory>; the VM needs its memory size set before it can be placed", name)
	} else {
		max, err := lvBytes(file, "memory", d.Memory)
		if err != nil {
			return nil, err
		}
		vm.Memory.StartupBytes = max
		if d.CurrentMemory != nil {
			cur, err := lvBytes(file, "currentMemory", d.CurrentMemory)
			if err != nil {
				return nil, err
			}
			if cur > 0 && cur < max {
				vm.Memory = Memory{StartupBytes: cur, Dynamic: true, MaxBytes: max}
			}
		}
	}
	if d.VCPU == nil {
		w.add("vcpu", "domain %s has no <vcpu>; the VM needs its vCPU count set before it can be placed", name)
	} else {
		n, err := parseIntField(file, "vcpu", d.VCPU.Value, 1, 4096)
		if err != nil {
			return nil, err
		}
		vm.VCPUs = int(n)
		if d.VCPU.Current != "" && strings.TrimSpace(d.VCPU.Current) != strings.TrimSpace(d.VCPU.Value) {
			w.add("vcpu/@current", "domain %s runs %s of %d vCPUs; the DR definition starts all %d", name, d.VCPU.Current, n, n)
		}
	}
	if d.CPU != nil {
		vm.CPU.Mode = d.CPU.Mode
		vm.CPU.Model = strings.TrimSpace(d.CPU.Model)
		if t := d.CPU.Topology; t != nil {
			for _, p := range []struct {
				f   string
				s   string
				dst *int
			}{{"sockets", t.Sockets, &vm.CPU.Sockets}, {"cores", t.Cores, &vm.CPU.Cores}, {"threads", t.Threads, &vm.CPU.Threads}} {
				if p.s == "" {
					continue
				}
				v, err := parseIntField(file, "cpu/topology/@"+p.f, p.s, 1, 4096)
				if err != nil {
					return nil, err
				}
				*p.dst = int(v)
			}
			if t.Dies != "" && strings.TrimSpace(t.Dies) != "1" {
				w.add("cpu/topology/@dies", "%s dies per socket are not carried; the DR definition uses 1", t.Dies)
			}
		}
		if len(d.CPU.Features) > 0 {
			w.add("cpu/feature", "%d CPU feature policies are not carried", len(d.CPU.Features))
		}
	}
	if d.Clock != nil && d.Clock.Offset != "" && d.Clock.Offset != "utc" {
		w.add("clock/@offset", "clock offset %q is not carried; the DR definition uses utc (Windows guests expect localtime)", d.Clock.Offset)
	}
	if d.Features != nil {
		for _, f := range d.Features.Any {
			switch f.XMLName.Local {
			case "acpi", "apic", "pae", "vmport", "vmcoreinfo", "hap", "privnet", "smm":
			default:
				w.add("features/"+f.XMLName.Local, "feature <%s> is not carried", f.XMLName.Local)
			}
		}
	}
	bootDevs := []string{}
	if d.OS != nil {
		vm.Arch = d.OS.Type.Arch
		vm.Machine = normMachine(d.OS.Type.Machine)
		if t := strings.TrimSpace(d.OS.Type.Value); t != "" && t != "hvm" {
			w.add("os/type", "OS type %q (not a full-virtualisation hvm guest) is not supported at the DR site", t)
		}
		vm.Firmware = FirmwareBIOS
		if d.OS.Firmware == "efi" || (d.OS.Loader != nil && (d.OS.Loader.Type == "pflash" || strings.Contains(strings.ToUpper(d.OS.Loader.Path), "OVMF"))) {
			vm.Firmware = FirmwareUEFI
		}
		if d.OS.Loader != nil && d.OS.Loader.Secure == "yes" {
			vm.SecureBoot = true
		}
		if ff := d.OS.FirmwareFeatures; ff != nil {
			for _, f := range ff.Features {
				if f.Name == "secure-boot" && f.Enabled == "yes" {
					vm.SecureBoot = true
				}
			}
		}
		for _, b := range d.OS.Boot {
			bootDevs = append(bootDevs, b.Dev)
		}
		for _, a := range d.OS.Any {
			msg, known := lvOSNotCarried[a.XMLName.Local]
			switch {
			case !known:
				w.add("os/"+a.XMLName.Local, "unrecognised element <%s> of <os>; not carried to the DR site", a.XMLName.Local)
			case msg != "":
				w.add("os/"+a.XMLName.Local, "%s", msg)
			}
		}
	} else {
		w.add("os", "domain %s has no <os>; firmware is unknown (the DR definition uses BIOS)", name)
	}
	for _, a := range d.Any {
		addUnknown(w, a.XMLName.Local, "")
	}
	if d.Devices != nil {
		for i, x := range d.Devices.Disks {
			field := fmt.Sprintf("devices/disk[%d]", i+1)
			disk, skip, err := lvDiskToModel(file, field, &x, w)
			if err != nil {
				return nil, err
			}
			if !skip {
				vm.Disks = append(vm.Disks, disk)
			}
		}
		for i, x := range d.Devices.Interfaces {
			field := fmt.Sprintf("devices/interface[%d]", i+1)
			nic, err := lvInterfaceToModel(file, field, &x, w)
			if err != nil {
				return nil, err
			}
			vm.NICs = append(vm.NICs, nic)
		}
		for _, a := range d.Devices.Any {
			addUnknown(w, a.XMLName.Local, "devices/")
		}
	}
	if len(vm.Disks) == 0 {
		w.add("devices/disk", "domain %s has no disk image; nothing to restore for it", name)
	}
	// Legacy <os><boot dev=.../> becomes per-device boot order.
	hasOrder := false
	for _, dk := range vm.Disks {
		hasOrder = hasOrder || dk.BootOrder > 0
	}
	for _, n := range vm.NICs {
		hasOrder = hasOrder || n.BootOrder > 0
	}
	if !hasOrder {
		order := 1
		// next[dev] is where the search for the device's next disk
		// goes on: the disks are walked once per kind, not per entry.
		next := map[string]int{}
		for _, dev := range bootDevs {
			switch dev {
			case "hd", "cdrom", "fd":
				want := map[string]string{"hd": "disk", "cdrom": "cdrom", "fd": "floppy"}[dev]
				for i := next[dev]; i < len(vm.Disks); i++ {
					next[dev] = i + 1
					if vm.Disks[i].Device == want && vm.Disks[i].BootOrder == 0 {
						vm.Disks[i].BootOrder = order
						order++
						break
					}
				}
			case "network":
				if len(vm.NICs) > 0 && vm.NICs[0].BootOrder == 0 {
					vm.NICs[0].BootOrder = order
					order++
				}
			}
		}
	}
	if d.Metadata != nil {
		for i := range d.Metadata.VMs {
			if err := applyMeta(file, vm, &d.Metadata.VMs[i], w); err != nil {
				return nil, err
			}
		}
	}
	return vm, nil
}

func addUnknown(w *warnings, local, prefix string) {
	if lvRegenerated[local] || local == "metadata" || local == "name" {
		return
	}
	if msg, ok := lvNotCarried[local]; ok {
		w.add(prefix+local, "%s", msg)
		return
	}
	w.add(prefix+local, "unrecognised element <%s>; not carried to the DR site", local)
}

func lvDiskToModel(file, field string, x *lvDisk, w *warnings) (Disk, bool, error) {
	var d Disk
	d.Device = x.Device
	if d.Device == "" {
		d.Device = "disk"
	}
	if x.Source != nil {
		switch x.Type {
		case "", "file":
			d.File = x.Source.File
		case "block":
			d.File = x.Source.Dev
			w.add(field, "block device %s: drpipe restores it as an image file of the same content", x.Source.Dev)
		case "volume":
			w.add(field, "storage pool volume %s/%s: give the volume's file path instead (virsh vol-path)", x.Source.Pool, x.Source.Volume)
		case "network":
			w.add(field, "network disk %s:%s is not backed up by drpipe; not carried", x.Source.Protocol, x.Source.Name)
			return d, true, nil
		default:
			w.add(field+"/@type", "disk type %q is not supported; not carried", x.Type)
			return d, true, nil
		}
	}
	if d.File == "" {
		if d.Device == "cdrom" || d.Device == "floppy" {
			w.add(field, "%s drive without media; not carried", d.Device)
		} else {
			w.add(field+"/source", "disk without a source file; not carried")
		}
		return d, true, nil
	}
	if x.Driver != nil {
		d.Format = x.Driver.Type
		if d.Format == "vpc" {
			d.Format = "vhd"
		}
	}
	if d.Format == "" {
		w.add(field+"/driver/@type", "disk %s has no format (driver type): libvirt reads it as raw, and so do backup and bringup", d.File)
	}
	if x.Target != nil {
		d.Target, d.Controller = x.Target.Dev, x.Target.Bus
	}
	switch d.Controller {
	case "", "virtio", "scsi", "sata", "ide", "usb", "fdc", "nvme":
	default:
		// A Xen guest's xen bus, say: no DR host's KVM offers it.
		w.add(field+"/target/@bus", "disk %s is on bus %q, which the DR definition cannot use; it uses the bus its target name tells, or virtio", d.File, d.Controller)
		d.Controller = busFromTarget(d.Target)
		if d.Controller == "" {
			d.Controller = "virtio"
		}
	}
	if d.Controller == "" {
		d.Controller = busFromTarget(d.Target)
		if d.Controller == "" {
			w.add(field+"/target", "disk %s has no bus; the DR definition uses virtio", d.File)
		}
	}
	if x.Boot != nil {
		v, err := parseIntField(file, field+"/boot/@order", x.Boot.Order, 1, 1<<16)
		if err != nil {
			return d, false, err
		}
		d.BootOrder = int(v)
	}
	d.ReadOnly = x.ReadOnly != nil
	d.Shareable = x.Shareable != nil
	if x.Source != nil && x.Source.Encryption != nil {
		w.add(field+"/source/encryption", "%s", lvDiskNotCarried["encryption"])
	}
	for _, a := range x.Any {
		if msg, ok := lvDiskNotCarried[a.XMLName.Local]; ok {
			w.add(field+"/"+a.XMLName.Local, "%s", msg)
		}
	}
	if a := x.Address; a != nil && a.Type == "drive" {
		ctl, bus, unit := int64(0), int64(0), int64(0)
		var err error
		if a.Controller != "" {
			if ctl, err = parseIntField(file, field+"/address/@controller", a.Controller, 0, 1<<16); err != nil {
				return d, false, err
			}
		}
		if a.Bus != "" {
			if bus, err = parseIntField(file, field+"/address/@bus", a.Bus, 0, 1<<16); err != nil {
				return d, false, err
			}
		}
		if a.Unit != "" {
			if unit, err = parseIntField(file, field+"/address/@unit", a.Unit, 0, 1<<16); err != nil {
				return d, false, err
			}
		}
		if d.Controller == "ide" {
			d.ControllerIndex, d.Unit = int(bus), int(unit)
		} else {
			d.ControllerIndex, d.Unit = int(ctl), int(unit)
		}
	}
	return d, false, nil
}

func busFromTarget(t string) string {
	switch {
	case strings.HasPrefix(t, "vd"):
		return "virtio"
	case strings.HasPrefix(t, "sd"):
		return "scsi"
	case strings.HasPrefix(t, "hd"):
		return "ide"
	case strings.HasPrefix(t, "fd"):
		return "fdc"
	}
	return ""
}

func lvInterfaceToModel(file, field string, x *lvInterface, w *warnings) (NIC, error) {
	n := NIC{Kind: x.Type}
	if x.MAC != nil {
		hw, err := net.ParseMAC(x.MAC.Address)
		if err != nil || len(hw) != 6 {
			return n, fieldErr(file, field+"/mac/@address", "%q is not a MAC address", x.MAC.Address)
		}
		n.MAC = hw.String()
	} else {
		w.add(field+"/mac", "interface without a MAC address; the DR host will assign a new one (guests may then rename the adapter)")
	}
	if x.Source != nil {
		switch x.Type {
		case "network":
			n.Switch, n.Portgroup = x.Source.Network, x.Source.Portgroup
		case "bridge":
			n.Switch = x.Source.Bridge
		case "direct":
			n.Switch = x.Source.Dev
		default:
			n.Switch = firstNonEmpty(x.Source.Network, x.Source.Bridge, x.Source.Dev)
		}
	}
	switch x.Type {
	case "network", "bridge", "direct":
	case "user":
		w.add(field, "user-mode (slirp) networking: the DR mapping treats it as switch \"user\"")
		n.Switch = "user"
	default:
		w.add(field+"/@type", "interface type %q is not carried as such; map its switch explicitly", x.Type)
	}
	if n.Switch == "" {
		w.add(field+"/source", "interface %s is connected to no switch", n.MAC)
	}
	if x.Model != nil {
		n.Model = x.Model.Type
	}
	if x.VirtualPort != nil {
		n.VirtualPort = x.VirtualPort.Type
	}
	if x.VLAN != nil {
		v, err := lvVLANToModel(file, field+"/vlan", x.VLAN)
		if err != nil {
			return n, err
		}
		n.VLAN = v
	}
	if x.Boot != nil {
		v, err := parseIntField(file, field+"/boot/@order", x.Boot.Order, 1, 1<<16)
		if err != nil {
			return n, err
		}
		n.BootOrder = int(v)
	}
	for _, a := range x.Any {
		msg, ok := lvInterfaceNotCarried[a.XMLName.Local]
		// A link set up and a port not isolated are what the DR
		// definition gives.
		for _, at := range a.Attrs {
			ok = ok && !(a.XMLName.Local == "link" && at.Name.Local == "state" && at.Value == "up") &&
				!(a.XMLName.Local == "port" && at.Name.Local == "isolated" && at.Value != "yes")
		}
		if ok {
			w.add(field+"/"+a.XMLName.Local, "%s", msg)
		}
	}
	return n, nil
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func lvVLANToModel(file, field string, x *lvVLAN) (*VLAN, error) {
	if len(x.Tags) == 0 {
		return nil, fieldErr(file, field, "<vlan> without <tag>")
	}
	var ids []int
	v := &VLAN{}
	for i, t := range x.Tags {
		id, err := parseIntField(file, fmt.Sprintf("%s/tag[%d]/@id", field, i+1), t.ID, 0, 4095)
		if err != nil {
			return nil, err
		}
		ids = append(ids, int(id))
		if t.NativeMode != "" {
			v.Native, v.NativeMode = int(id), t.NativeMode
		}
	}
	if x.Trunk == "yes" || len(ids) > 1 {
		v.Mode, v.Trunk = VLANTrunk, ids
		return v, nil
	}
	return &VLAN{Mode: VLANAccess, ID: ids[0]}, nil
}

func applyMeta(file string, vm *VM, md *drpipeMeta, w *warnings) error {
	if md.BootPriority != "" {
		v, err := parseIntField(file, "metadata/vm/boot_priority", md.BootPriority, 0, 1<<20)
		if err != nil {
			return err
		}
		vm.BootPriority = int(v)
	}
	if md.Generation != "" {
		v, err := parseIntField(file, "metadata/vm/generation", md.Generation, 1, 2)
		if err != nil {
			return err
		}
		vm.Generation = int(v)
	}
	if md.MemoryMin != "" {
		v, err := ParseSize(md.MemoryMin)
		if err != nil {
			return fieldErr(file, "metadata/vm/memory_min", "%v", err)
		}
		if !vm.Memory.Dynamic {
			w.add("metadata/vm/memory_min", "minimum memory given but the domain's memory is not dynamic (currentMemory below memory); ignored")
		} else {
			vm.Memory.MinBytes = v
		}
	}
	for _, d := range md.DependsOn {
		if d = strings.TrimSpace(d); d != "" {
			vm.DependsOn = append(vm.DependsOn, d)
		}
	}
	vm.AntiAffinity = strings.TrimSpace(md.AntiAffinity)
	for _, c := range md.Verify {
		if c = strings.TrimSpace(c); c != "" {
			vm.Verify = append(vm.Verify, c)
		}
	}
	nicAt, diskAt := map[string]int{}, map[string]int{}
	for k := range vm.NICs {
		nicAt[vm.NICs[k].MAC] = k
	}
	for k := range vm.Disks {
		diskAt[vm.Disks[k].Target] = k
	}
	for i, mn := range md.NICs {
		field := fmt.Sprintf("metadata/vm/nic[%d]", i+1)
		hw, err := net.ParseMAC(mn.MAC)
		if err != nil || len(hw) != 6 {
			return fieldErr(file, field+"/@mac", "%q is not a MAC address", mn.MAC)
		}
		var nic *NIC
		if k, ok := nicAt[hw.String()]; ok {
			nic = &vm.NICs[k]
		}
		if nic == nil {
			w.add(field, "addresses for MAC %s, but the domain has no interface with that MAC; ignored", hw)
			continue
		}
		for _, a := range mn.IPv4 {
			if _, err := netip.ParsePrefix(strings.TrimSpace(a)); err != nil {
				return fieldErr(file, field+"/ipv4", "%q is not address/prefix", a)
			}
			nic.IPv4 = append(nic.IPv4, strings.TrimSpace(a))
		}
		for _, a := range mn.IPv6 {
			if _, err := netip.ParsePrefix(strings.TrimSpace(a)); err != nil {
				return fieldErr(file, field+"/ipv6", "%q is not address/prefix", a)
			}
			nic.IPv6 = append(nic.IPv6, strings.TrimSpace(a))
		}
		nic.Gateway4, nic.Gateway6 = strings.TrimSpace(mn.Gateway4), strings.TrimSpace(mn.Gateway6)
		for _, a := range mn.DNS {
			nic.DNS = append(nic.DNS, strings.TrimSpace(a))
		}
		nic.DHCP = mn.DHCP == "yes" || mn.DHCP == "true"
		nic.Name = strings.TrimSpace(mn.Name)
	}
	for i, mdd := range md.Disks {
		field := fmt.Sprintf("metadata/vm/disk[%d]", i+1)
		var disk *Disk
		if k, ok := diskAt[mdd.Target]; ok {
			disk = &vm.Disks[k]
		}
		if disk == nil {
			w.add(field, "size for target %q, but the domain has no such disk; ignored", mdd.Target)
			continue
		}
		if mdd.VirtualSize != "" {
			v, err := ParseSize(mdd.VirtualSize)
			if err != nil {
				return fieldErr(file, field+"/@virtual_size", "%v", err)
			}
			disk.VirtualSize = v
		}
	}
	return nil
}

// libvirt network XML.
type lvNetwork struct {
	XMLName xml.Name `xml:"network"`
	Name    string   `xml:"name"`
	UUID    string   `xml:"uuid"`
	Forward *struct {
		Mode       string `xml:"mode,attr"`
		Dev        string `xml:"dev,attr"`
		Interfaces []struct {
			Dev string `xml:"dev,attr"`
		} `xml:"interface"`
	} `xml:"forward"`
	Bridge *struct {
		Name string `xml:"name,attr"`
	} `xml:"bridge"`
	VirtualPort *struct {
		Type string `xml:"type,attr"`
	} `xml:"virtualport"`
	VLAN       *lvVLAN `xml:"vlan"`
	Portgroups []struct {
		Name    string  `xml:"name,attr"`
		Default string  `xml:"default,attr"`
		VLAN    *lvVLAN `xml:"vlan"`
	} `xml:"portgroup"`
	IPs []struct {
		Family  string `xml:"family,attr"`
		Address string `xml:"address,attr"`
		Netmask string `xml:"netmask,attr"`
		Prefix  string `xml:"prefix,attr"`
		DHCP    *struct {
			Ranges []struct {
				Start string `xml:"start,attr"`
				End   string `xml:"end,attr"`
			} `xml:"range"`
			Hosts []struct{} `xml:"host"`
		} `xml:"dhcp"`
	} `xml:"ip"`
	Any []lvAny `xml:",any"`
}

func importLibvirtNetwork(file string, data []byte, o ImportOptions) (*Inventory, error) {
	var n lvNetwork
	if err := xmlUnmarshal(data, &n); err != nil {
		return nil, &FieldError{File: file, Err: fmt.Errorf("malformed libvirt network XML: %w", err)}
	}
	w := &warnings{file: file}
	s, err := networkToSwitch(file, &n, w)
	if err != nil {
		return nil, err
	}
	host := o.Host
	if host == "" {
		w.add("network", "no source host given for network %s; it is recorded under host \"\" (pass --host to drpipe backup)", s.Name)
	}
	return &Inventory{Hosts: []Host{{Name: host, Hypervisor: "libvirt", Switches: []Switch{*s}}}, Warnings: w.list}, nil
}

func networkToSwitch(file string, n *lvNetwork, w *warnings) (*Switch, error) {
	s := &Switch{Name: strings.TrimSpace(n.Name), ID: strings.TrimSpace(n.UUID)}
	if s.Name == "" {
		return nil, fieldErr(file, "name", "the network has no <name>")
	}
	s.Type = SwitchPrivate
	if f := n.Forward; f != nil {
		s.Mode = f.Mode
		if s.Mode == "" {
			s.Mode = "nat"
		}
		s.Uplink = f.Dev
		if s.Uplink == "" && len(f.Interfaces) > 0 {
			s.Uplink = f.Interfaces[0].Dev
		}
		switch s.Mode {
		case "bridge", "passthrough", "private", "vepa", "hostdev":
			s.Type = SwitchExternal
		default:
			s.Type = SwitchInternal
		}
	}
	if n.Bridge != nil {
		s.Bridge = n.Bridge.Name
		if s.Type == SwitchExternal && s.Uplink == "" {
			s.Uplink = n.Bridge.Name
		}
	}
	if n.VirtualPort != nil {
		s.VirtualPort = n.VirtualPort.Type
	}
	vlans := map[int]bool{}
	addV := func(v *VLAN) {
		if v == nil {
			return
		}
		if v.ID > 0 {
			vlans[v.ID] = true
		}
		for _, t := range v.Trunk {
			vlans[t] = true
		}
	}
	if n.VLAN != nil {
		v, err := lvVLANToModel(file, "vlan", n.VLAN)
		if err != nil {
			return nil, err
		}
		s.VLAN = v
		addV(v)
	}
	for i, pg := range n.Portgroups {
		p := Portgroup{Name: pg.Name, Default: pg.Default == "yes"}
		if pg.VLAN != nil {
			v, err := lvVLANToModel(file, fmt.Sprintf("portgroup[%d]/vlan", i+1), pg.VLAN)
			if err != nil {
				return nil, err
			}
			p.VLAN = v
			addV(v)
		}
		s.Portgroups = append(s.Portgroups, p)
	}
	for v := range vlans {
		s.VLANs = append(s.VLANs, v)
	}
	for i, ip := range n.IPs {
		field := fmt.Sprintf("ip[%d]", i+1)
		a, err := netip.ParseAddr(ip.Address)
		if err != nil {
			return nil, fieldErr(file, field+"/@address", "%q is not an IP address", ip.Address)
		}
		bits := -1
		switch {
		case ip.Prefix != "":
			v, err := parseIntField(file, field+"/@prefix", ip.Prefix, 0, int64(a.BitLen()))
			if err != nil {
				return nil, err
			}
			bits = int(v)
		case ip.Netmask != "":
			m, err := netip.ParseAddr(ip.Netmask)
			if err != nil || !m.Is4() {
				return nil, fieldErr(file, field+"/@netmask", "%q is not an IPv4 netmask", ip.Netmask)
			}
			mb := m.As4()
			ones, total := net.IPMask(mb[:]).Size()
			if total == 0 {
				return nil, fieldErr(file, field+"/@netmask", "%q is not a contiguous netmask", ip.Netmask)
			}
			bits = ones
		default:
			bits = map[bool]int{true: 24, false: 64}[a.Is4()]
			w.add(field, "address %s without netmask or prefix; libvirt's default /%d assumed", a, bits)
		}
		sub := Subnet{Address: netip.PrefixFrom(a, bits).String()}
		if ip.DHCP != nil && len(ip.DHCP.Ranges) > 0 {
			sub.DHCPStart, sub.DHCPEnd = ip.DHCP.Ranges[0].Start, ip.DHCP.Ranges[0].End
			if r := ip.DHCP.Ranges; len(r) > 1 {
				w.add(field+"/dhcp/range", "%d DHCP ranges of network %s after the first (from %s-%s) are not carried; only %s-%s is", len(r)-1, s.Name, r[1].Start, r[1].End, r[0].Start, r[0].End)
			}
		}
		if ip.DHCP != nil && len(ip.DHCP.Hosts) > 0 {
			w.add(field+"/dhcp/host", "%d DHCP reservations (fixed addresses by MAC) of network %s are not carried: a guest that takes its address from one gets another at the DR site", len(ip.DHCP.Hosts), s.Name)
		}
		s.Subnets = append(s.Subnets, sub)
	}
	for _, a := range n.Any {
		switch a.XMLName.Local {
		case "mac", "domain", "dns", "mtu", "port", "metadata":
		case "route":
			w.add(a.XMLName.Local, "static route of network %s is not carried", s.Name)
		default:
			w.add(a.XMLName.Local, "unrecognised element <%s> of network %s; not carried", a.XMLName.Local, s.Name)
		}
	}
	return s, nil
}
