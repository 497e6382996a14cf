package drsite

import (
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// OVF descriptor (DMTF DSP0243 1.x and 2.x), matched by local names so
// both the rasd:/vssd: (1.x) and sasd:/epasd: (2.x) item forms parse.
type ovfEnvelope struct {
	References struct {
		Files []struct {
			ID   string `xml:"id,attr"`
			Href string `xml:"href,attr"`
			Size string `xml:"size,attr"`
		} `xml:"File"`
	} `xml:"References"`
	DiskSection *struct {
		Disks []struct {
			DiskID        string `xml:"diskId,attr"`
			FileRef       string `xml:"fileRef,attr"`
			Capacity      string `xml:"capacity,attr"`
			CapacityUnits string `xml:"capacityAllocationUnits,attr"`
			Format        string `xml:"format,attr"`
		} `xml:"Disk"`
	} `xml:"DiskSection"`
	// DeploymentOptionSection lists the configurations an item may be
	// limited to (ovf:configuration); the default one is imported.
	DeploymentOptionSection *struct {
		Configurations []struct {
			ID      string `xml:"id,attr"`
			Default string `xml:"default,attr"`
		} `xml:"Configuration"`
	} `xml:"DeploymentOptionSection"`
	NetworkSection *struct {
		Networks []struct {
			Name string `xml:"name,attr"`
		} `xml:"Network"`
	} `xml:"NetworkSection"`
	VirtualSystem *ovfSystem     `xml:"VirtualSystem"`
	Collection    *ovfCollection `xml:"VirtualSystemCollection"`
}

type ovfCollection struct {
	Systems     []ovfSystem     `xml:"VirtualSystem"`
	Collections []ovfCollection `xml:"VirtualSystemCollection"`
}

type ovfSystem struct {
	ID       string `xml:"id,attr"`
	Name     string `xml:"Name"`
	Hardware []struct {
		System *struct {
			Type string `xml:"VirtualSystemType"`
		} `xml:"System"`
		Items        []ovfItem `xml:"Item"`
		StorageItems []ovfItem `xml:"StorageItem"`
		EthItems     []ovfItem `xml:"EthernetPortItem"`
		Configs      []struct {
			Key   string `xml:"key,attr"`
			Value string `xml:"value,attr"`
		} `xml:"Config"`
	} `xml:"VirtualHardwareSection"`
	Annotation *struct {
		Text string `xml:"Annotation"`
	} `xml:"AnnotationSection"`
	Product *struct{} `xml:"ProductSection"`
	// VBox is VirtualBox's own machine section, where alone it writes
	// the firmware (Hardware/Firmware type BIOS, EFI, EFI64, ...).
	VBox *struct {
		Firmware *struct {
			Type string `xml:"type,attr"`
		} `xml:"Hardware>Firmware"`
	} `xml:"http://www.virtualbox.org/ovf/machine Machine"`
}

type ovfItem struct {
	InstanceID      string `xml:"InstanceID"`
	ResourceType    string `xml:"ResourceType"`
	ResourceSubType string `xml:"ResourceSubType"`
	ElementName     string `xml:"ElementName"`
	VirtualQuantity string `xml:"VirtualQuantity"`
	AllocationUnits string `xml:"AllocationUnits"`
	Address         string `xml:"Address"`
	AddressOnParent string `xml:"AddressOnParent"`
	Parent          string `xml:"Parent"`
	HostResource    string `xml:"HostResource"`
	Connection      string `xml:"Connection"`
	CoresPerSocket  string `xml:"CoresPerSocket"`
	Required        string `xml:"required,attr"`
	// Configuration lists the deployment configurations the item is for
	// (all when empty); Bound is min or max for a range's end.
	Configuration string `xml:"configuration,attr"`
	Bound         string `xml:"bound,attr"`
}

// applies says whether the item is part of deployment configuration cfg
// at its normal value (not a range's min or max).
func (it *ovfItem) applies(cfg string) bool {
	if b := strings.TrimSpace(it.Bound); b != "" && b != "normal" {
		return false
	}
	c := strings.Fields(it.Configuration)
	return len(c) == 0 || slices.Contains(c, cfg)
}

var ovfUnitsRE = regexp.MustCompile(`^\s*byte\s*(?:\*\s*(2|10)\s*\^\s*(-?[0-9]+))?\s*$`)

// ovfUnits parses programmatic units ("byte * 2^30", "byte") and the
// older names (KiloBytes, MegaBytes, GigaBytes).
func ovfUnits(s string) (int64, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return 1, nil
	case "kilobytes":
		return 1 << 10, nil
	case "megabytes":
		return 1 << 20, nil
	case "gigabytes":
		return 1 << 30, nil
	}
	m := ovfUnitsRE.FindStringSubmatch(strings.ToLower(s))
	if m == nil {
		return 0, fmt.Errorf("unknown allocation units %q (want e.g. \"byte * 2^30\")", s)
	}
	if m[1] == "" {
		return 1, nil
	}
	base, _ := strconv.Atoi(m[1])
	exp, _ := strconv.Atoi(m[2])
	v := math.Pow(float64(base), float64(exp))
	if exp < 0 || v > 1<<50 {
		return 0, fmt.Errorf("allocation units %q are out of range", s)
	}
	return int64(v), nil
}

func ovfFormat(uri string) string {
	u := strings.ToLower(uri)
	switch {
	case strings.Contains(u, "vmdk"):
		return "vmdk"
	case strings.Contains(u, "vhdx"):
		return "vhdx"
	case strings.Contains(u, "vhd"):
		return "vhd"
	case strings.Contains(u, "qcow"):
		return "qcow2"
	case strings.Contains(u, "raw"):
		return "raw"
	}
	return ""
}

func importOVF(file string, data []byte, o ImportOptions) (*Inventory, error) {
	var env ovfEnvelope
	if err := xmlUnmarshal(data, &env); err != nil {
		return nil, &FieldError{File: file, Err: fmt.Errorf("malformed OVF descriptor: %w", err)}
	}
	w := &warnings{file: file}
	wk := &docWalker{file: file, w: w}
	files := map[string]string{}
	for _, f := range env.References.Files {
		files[f.ID] = f.Href
	}
	type ovfDisk struct {
		file   string
		size   int64
		format string
	}
	disks := map[string]ovfDisk{}
	if env.DiskSection != nil {
		for i, d := range env.DiskSection.Disks {
			field := fmt.Sprintf("DiskSection/Disk[%d]", i+1)
			od := ovfDisk{format: ovfFormat(d.Format)}
			if d.FileRef != "" {
				href, ok := files[d.FileRef]
				if !ok {
					return nil, fieldErr(file, field+"/@fileRef", "refers to file %q, which References does not list", d.FileRef)
				}
				od.file = href
			}
			if d.Capacity != "" {
				unit, err := ovfUnits(d.CapacityUnits)
				if err != nil {
					return nil, fieldErr(file, field+"/@capacityAllocationUnits", "%v", err)
				}
				c, err := parseIntField(file, field+"/@capacity", d.Capacity, 0, (1<<62)/unit)
				if err != nil {
					return nil, err
				}
				od.size = c * unit
			}
			if od.format == "" && d.Format != "" {
				w.add(field+"/@format", "unknown disk format %q", d.Format)
			}
			disks[d.DiskID] = od
		}
	}
	// DSP0243: the configuration marked ovf:default, else the first.
	cfg := ""
	if ds := env.DeploymentOptionSection; ds != nil && len(ds.Configurations) > 0 {
		cfg = ds.Configurations[0].ID
		for _, c := range ds.Configurations {
			if c.Default == "true" || c.Default == "1" {
				cfg = c.ID
				break
			}
		}
		if len(ds.Configurations) > 1 {
			w.add("DeploymentOptionSection", "the descriptor offers %d deployment configurations; the default, %q, is imported", len(ds.Configurations), cfg)
		}
	}
	host := Host{Name: o.Host}
	if env.NetworkSection != nil {
		for _, n := range env.NetworkSection.Networks {
			host.Switches = append(host.Switches, Switch{Name: n.Name, Type: SwitchExternal})
			w.add("NetworkSection/Network["+n.Name+"]", "OVF does not say what kind of network %q is; recorded as external", n.Name)
		}
	}
	var systems []ovfSystem
	if env.VirtualSystem != nil {
		systems = append(systems, *env.VirtualSystem)
	}
	var collect func(c *ovfCollection, depth int)
	collect = func(c *ovfCollection, depth int) {
		if c == nil || depth > 8 {
			return
		}
		systems = append(systems, c.Systems...)
		for i := range c.Collections {
			collect(&c.Collections[i], depth+1)
		}
	}
	collect(env.Collection, 0)
	if len(systems) == 0 {
		return nil, fieldErr(file, "VirtualSystem", "the descriptor contains no VirtualSystem")
	}
	inv := &Inventory{}
	for si, s := range systems {
		vm := VM{Name: strings.TrimSpace(s.Name), ID: s.ID, Source: "ovf", Host: o.Host}
		if vm.Name == "" {
			vm.Name = s.ID
		}
		at := fmt.Sprintf("VirtualSystem[%s]", vm.Name)
		if vm.Name == "" {
			return nil, fieldErr(file, fmt.Sprintf("VirtualSystem[%d]", si+1), "virtual system without a name or id")
		}
		if s.Annotation != nil {
			vm.Notes = strings.TrimSpace(s.Annotation.Text)
			applyNotes(wk, at+"/AnnotationSection", &vm)
		}
		if s.Product != nil {
			w.add(at+"/ProductSection", "product properties (guestinfo) are not carried")
		}
		if len(s.Hardware) == 0 {
			return nil, fieldErr(file, at, "no VirtualHardwareSection")
		}
		hw := s.Hardware[0]
		vm.Firmware = FirmwareBIOS
		for _, c := range hw.Configs {
			switch c.Key {
			case "firmware":
				if c.Value == "efi" {
					vm.Firmware = FirmwareUEFI
				}
			case "bootOptions.efiSecureBootEnabled", "uefi.secureBoot.enabled":
				vm.SecureBoot = c.Value == "true"
			}
		}
		if vb := s.VBox; vb != nil && vb.Firmware != nil && strings.HasPrefix(strings.ToUpper(strings.TrimSpace(vb.Firmware.Type)), "EFI") {
			vm.Firmware = FirmwareUEFI
		}
		items := append(append(append([]ovfItem(nil), hw.Items...), hw.StorageItems...), hw.EthItems...)
		controllers := map[string]ovfItem{}
		for _, it := range items {
			if !it.applies(cfg) {
				continue
			}
			switch strings.TrimSpace(it.ResourceType) {
			case "5", "6", "20":
				controllers[strings.TrimSpace(it.InstanceID)] = it
			}
		}
		for i, it := range items {
			if !it.applies(cfg) {
				continue
			}
			field := fmt.Sprintf("%s/VirtualHardwareSection/Item[%d]", at, i+1)
			rt := strings.TrimSpace(it.ResourceType)
			switch rt {
			case "3":
				n, err := parseIntField(file, field+"/VirtualQuantity", it.VirtualQuantity, 1, 4096)
				if err != nil {
					return nil, err
				}
				vm.VCPUs = int(n)
				if it.CoresPerSocket != "" {
					c, err := parseIntField(file, field+"/CoresPerSocket", it.CoresPerSocket, 1, 4096)
					if err != nil {
						return nil, err
					}
					if n%c == 0 {
						vm.CPU.Sockets, vm.CPU.Cores, vm.CPU.Threads = int(n/c), int(c), 1
					}
				}
			case "4":
				unit, err := ovfUnits(it.AllocationUnits)
				if err != nil {
					return nil, fieldErr(file, field+"/AllocationUnits", "%v", err)
				}
				if it.AllocationUnits == "" {
					unit = 1 << 20 // DSP0243: memory defaults to megabytes in practice
					w.add(field+"/AllocationUnits", "memory without units; MiB assumed")
				}
				n, err := parseIntField(file, field+"/VirtualQuantity", it.VirtualQuantity, 1, (1<<62)/unit)
				if err != nil {
					return nil, err
				}
				vm.Memory.StartupBytes = n * unit
			case "17", "15", "16", "14":
				d := Disk{Device: "disk"}
				if rt != "17" {
					d.Device = "cdrom"
					if rt == "14" {
						d.Device = "floppy"
					}
					d.ReadOnly = true
				}
				hr := strings.TrimSpace(it.HostResource)
				switch {
				case strings.HasPrefix(hr, "ovf:/disk/") || strings.HasPrefix(hr, "/disk/"):
					od, ok := disks[hr[strings.LastIndex(hr, "/")+1:]]
					if !ok {
						return nil, fieldErr(file, field+"/HostResource", "refers to disk %q, which DiskSection does not list", hr)
					}
					d.File, d.VirtualSize, d.Format = od.file, od.size, od.format
				case strings.HasPrefix(hr, "ovf:/file/") || strings.HasPrefix(hr, "/file/"):
					ref := hr[strings.LastIndex(hr, "/")+1:]
					href, ok := files[ref]
					if !ok {
						return nil, fieldErr(file, field+"/HostResource", "refers to file %q, which References does not list", ref)
					}
					d.File = href
					if d.Device != "disk" {
						d.Format = "iso"
					}
				case hr == "":
					if d.Device == "disk" {
						w.add(field+"/HostResource", "disk drive without a disk; not carried")
					}
					continue
				default:
					w.add(field+"/HostResource", "host resource %q is not a disk or file of the package; not carried", hr)
					continue
				}
				if d.File == "" {
					w.add(field, "disk without an image file (created empty on import); not carried")
					continue
				}
				if ctl, ok := controllers[strings.TrimSpace(it.Parent)]; ok {
					switch strings.TrimSpace(ctl.ResourceType) {
					case "5":
						d.Controller = "ide"
					case "6":
						d.Controller = "scsi"
					case "20":
						st := strings.ToLower(ctl.ResourceSubType)
						switch {
						case strings.Contains(st, "nvme"):
							d.Controller = "nvme"
						default:
							d.Controller = "sata"
						}
					}
					if ctl.Address != "" {
						n, err := parseIntField(file, field+"/Parent/Address", ctl.Address, 0, 3)
						if err != nil {
							return nil, err
						}
						d.ControllerIndex = int(n)
					}
				} else {
					w.add(field+"/Parent", "disk %s is on no known controller; the DR definition uses virtio", d.File)
				}
				if it.AddressOnParent != "" {
					n, err := parseIntField(file, field+"/AddressOnParent", it.AddressOnParent, 0, 63)
					if err != nil {
						return nil, err
					}
					d.Unit = int(n)
				}
				if d.Format == "" && d.Device == "disk" {
					w.add(field, "disk %s has no format", d.File)
				}
				vm.Disks = append(vm.Disks, d)
			case "10":
				n := NIC{Switch: strings.TrimSpace(it.Connection), Name: strings.TrimSpace(it.ElementName)}
				if a := strings.TrimSpace(it.Address); a != "" {
					hw, err := net.ParseMAC(a)
					if err != nil || len(hw) != 6 {
						return nil, fieldErr(file, field+"/Address", "%q is not a MAC address", a)
					}
					n.MAC = hw.String()
				} else {
					w.add(field+"/Address", "adapter %s without a MAC; the DR host assigns one", n.Name)
				}
				n.Model = map[string]string{"e1000": "e1000", "e1000e": "e1000e", "vmxnet3": "vmxnet3", "pcnet32": "pcnet", "virtio": "virtio"}[strings.ToLower(strings.TrimSpace(it.ResourceSubType))]
				if n.Switch == "" {
					w.add(field+"/Connection", "adapter %s is connected to no network", n.Name)
				}
				w.add(field, "OVF carries no guest IP configuration for adapter %s; re-IP cannot be planned for it", n.Name)
				vm.NICs = append(vm.NICs, n)
			case "5", "6", "20", "1", "23", "24", "35":
				// Controllers, USB, video and sound are regenerated.
			default:
				w.add(field+"/ResourceType", "resource type %s (%s) is not carried", rt, strings.TrimSpace(it.ElementName))
			}
		}
		if vm.VCPUs == 0 {
			w.add(at, "no processor item; the VM cannot be placed until vCPUs are set")
		}
		if vm.Memory.StartupBytes == 0 {
			w.add(at, "no memory item; the VM cannot be placed until memory is set")
		}
		if len(vm.Disks) == 0 {
			w.add(at, "no disk image; nothing to restore for it")
		}
		inv.VMs = append(inv.VMs, vm)
	}
	if wk.err != nil {
		return nil, wk.err
	}
	if host.Name != "" || len(host.Switches) > 0 {
		inv.Hosts = []Host{host}
	}
	inv.Warnings = w.list
	return inv, nil
}
