package drsite

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// YAMLInventoryVersion is the version of the hand-written YAML form.
const YAMLInventoryVersion = 1

// decodeYAML decodes one YAML document into plain maps, lists and
// scalars. Anchors and aliases are refused (no alias expansion bombs from
// outside bytes).
func decodeYAML(data []byte) (any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var n yaml.Node
	if err := dec.Decode(&n); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the document is empty")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("more than one YAML document; put one inventory per file")
	}
	if err := noAliases(&n, 0); err != nil {
		return nil, err
	}
	keepScalarText(&n)
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// leadingZeroInt matches a plain number YAML reads as octal: 010 is 8.
var leadingZeroInt = regexp.MustCompile(`^[-+]?0[0-7_]+$`)

// noAliases refuses anchors and aliases, keys that are not strings,
// nesting deeper than 64 levels, and numbers with a leading zero, which
// YAML reads as octal (a VLAN written 010 would be VLAN 8).
func noAliases(n *yaml.Node, depth int) error {
	if depth > 64 {
		return fmt.Errorf("line %d: nested more than 64 levels deep", n.Line)
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return fmt.Errorf("line %d: YAML anchors and aliases are not accepted in inventories", n.Line)
	}
	if n.Kind == yaml.ScalarNode && n.Style == 0 && n.ShortTag() == "!!int" && leadingZeroInt.MatchString(n.Value) {
		return fmt.Errorf("line %d: %s has a leading zero, which YAML reads as an octal number; write it without the zero (or quote it)", n.Line, n.Value)
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: mapping keys must be plain strings", n.Content[i].Line)
			}
		}
	}
	for _, c := range n.Content {
		if err := noAliases(c, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// keepScalarText makes strings of mapping keys, of plain scalars YAML
// would read as a time (2024-01-01), and of those it would read as a
// number or boolean written otherwise than Go writes it back (1e3, 0x1F,
// 08, 1.10, .inf, True), so a name or path written that way keeps its
// text; where a number is wanted, a string of decimal digits is read as
// one. Numbers written plainly (4, -1, 2.5) stay numbers. noAliases has
// bounded the depth.
func keepScalarText(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Style == 0 {
		canon := ""
		switch n.ShortTag() {
		case "!!int":
			if v, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
				canon = strconv.FormatInt(v, 10)
			}
		case "!!float":
			if v, err := strconv.ParseFloat(n.Value, 64); err == nil {
				canon = strconv.FormatFloat(v, 'f', -1, 64)
			}
		case "!!bool":
			canon = strconv.FormatBool(n.Value == "true")
		case "!!timestamp":
		default:
			return
		}
		if canon != n.Value {
			n.Tag = "!!str"
		}
	}
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 && c.Kind == yaml.ScalarNode {
			c.Tag = "!!str"
			continue
		}
		keepScalarText(c)
	}
}

func importYAML(file string, data []byte, o ImportOptions) (*Inventory, error) {
	doc, err := decodeYAML(data)
	if err != nil {
		return nil, &FieldError{File: file, Err: fmt.Errorf("malformed YAML: %w", err)}
	}
	w := &warnings{file: file}
	wk := &docWalker{file: file, w: w}
	root := wk.object("", doc)
	if wk.err != nil {
		return nil, fmt.Errorf("%w (a hand-written inventory is a YAML mapping with vms: and switches:)", wk.err)
	}
	inv := yamlInventory(wk, root, o)
	root.finish()
	if wk.err != nil {
		return nil, wk.err
	}
	inv.Warnings = w.list
	return inv, nil
}

func yamlInventory(wk *docWalker, root *docObj, o ImportOptions) *Inventory {
	inv := &Inventory{}
	if v, ok := root.num("version"); ok && v != YAMLInventoryVersion {
		wk.fail("version", "version %d is not supported (this drpipe reads version %d)", v, YAMLInventoryVersion)
	}
	hostName := root.str("host")
	if hostName == "" {
		hostName = o.Host
	}
	host := Host{Name: hostName, Hypervisor: root.str("hypervisor")}
	if r := root.sub("resources"); r != nil {
		if n, ok := r.num("vcpus"); ok {
			host.Resources.VCPUs = int(n)
		}
		host.Resources.MemoryBytes, _ = r.size("memory")
		host.Resources.StorageBytes, _ = r.size("storage")
		r.finish()
	}
	sws, sp := root.list("switches")
	for i, v := range sws {
		so := wk.object(fmt.Sprintf("%s[%d]", sp, i), v)
		if so == nil {
			continue
		}
		s := Switch{Name: so.str("name"), ID: so.str("id"), Type: strings.ToLower(so.str("type")), Mode: so.str("mode"),
			Bridge: so.str("bridge"), Uplink: so.str("uplink"), VirtualPort: so.str("virtualport")}
		if s.Name == "" {
			wk.fail(so.path+".name", "switch without a name")
		}
		if s.Type == "" {
			wk.w.add(so.path+".type", "switch %s has no type; recorded as external", s.Name)
			s.Type = SwitchExternal
		}
		l, lp := so.list("vlans")
		for k, x := range l {
			id, err := toInt(x)
			if err != nil {
				wk.fail(fmt.Sprintf("%s[%d]", lp, k), "%v", err)
			}
			s.VLANs = append(s.VLANs, int(id))
		}
		for _, a := range so.strs("subnets") {
			s.Subnets = append(s.Subnets, Subnet{Address: a})
		}
		so.finish()
		host.Switches = append(host.Switches, s)
	}
	vms, vp := root.list("vms")
	if len(vms) == 0 && len(sws) == 0 {
		wk.fail("vms", "no vms: and no switches: (a hand-written inventory lists them)")
	}
	for i, v := range vms {
		vo := wk.object(fmt.Sprintf("%s[%d]", vp, i), v)
		if vo == nil {
			continue
		}
		vm := yamlVM(wk, vo)
		if vm.Host == "" {
			vm.Host = hostName
		}
		vo.finish()
		inv.VMs = append(inv.VMs, vm)
	}
	if host.Name != "" || len(host.Switches) > 0 {
		inv.Hosts = []Host{host}
	}
	return inv
}

func yamlVM(wk *docWalker, vo *docObj) VM {
	vm := VM{Name: vo.str("name"), ID: vo.str("id"), Host: vo.str("host"), Source: "yaml",
		Firmware: strings.ToLower(vo.str("firmware")), Arch: vo.str("arch"), Machine: vo.str("machine"),
		AntiAffinity: vo.str("anti_affinity"), Notes: vo.str("notes")}
	if vm.Name == "" {
		wk.fail(vo.path+".name", "VM without a name")
	}
	at := fmt.Sprintf("vms[%s]", vm.Name)
	if n, ok := vo.num("generation"); ok {
		vm.Generation = int(n)
	}
	vm.SecureBoot, _ = vo.boolean("secure_boot")
	if vm.Firmware == "" {
		vm.Firmware = FirmwareBIOS
		if vm.Generation == 2 {
			vm.Firmware = FirmwareUEFI
		}
	}
	if n, ok := vo.num("vcpus"); ok {
		vm.VCPUs = int(n)
	} else {
		wk.w.add(at+".vcpus", "missing; the VM cannot be placed until it is set")
	}
	if c := vo.sub("cpu"); c != nil {
		vm.CPU.Mode, vm.CPU.Model = c.str("mode"), c.str("model")
		for _, p := range []struct {
			k   string
			dst *int
		}{{"sockets", &vm.CPU.Sockets}, {"cores", &vm.CPU.Cores}, {"threads", &vm.CPU.Threads}} {
			if n, ok := c.num(p.k); ok {
				*p.dst = int(n)
			}
		}
		c.finish()
	}
	if v, p, ok := vo.get("memory"); ok && v != nil {
		if _, isMap := v.(map[string]any); isMap {
			m := wk.object(p, v)
			vm.Memory.StartupBytes, _ = m.size("startup")
			vm.Memory.MinBytes, _ = m.size("min")
			vm.Memory.MaxBytes, _ = m.size("max")
			if d, ok := m.boolean("dynamic"); ok {
				vm.Memory.Dynamic = d
			} else {
				vm.Memory.Dynamic = vm.Memory.MinBytes > 0 || vm.Memory.MaxBytes > 0
			}
			m.finish()
		} else {
			vm.Memory.StartupBytes, _ = vo.size("memory")
		}
	}
	for _, b := range []int64{vm.Memory.StartupBytes, vm.Memory.MinBytes, vm.Memory.MaxBytes} {
		if b > 0 && b < 1<<20 {
			wk.fail(at+".memory", "%d bytes is less than 1 MiB: a size without a unit is bytes; write e.g. 4096MiB or 4GiB", b)
			break
		}
	}
	if vm.Memory.StartupBytes == 0 {
		wk.w.add(at+".memory", "missing; the VM cannot be placed until it is set")
	}
	if n, ok := vo.num("boot_priority"); ok {
		vm.BootPriority = int(n)
	}
	vm.DependsOn = vo.strs("depends_on")
	vm.Verify = vo.strs("verify")
	disks, dp := vo.list("disks")
	for i, v := range disks {
		do := wk.object(fmt.Sprintf("%s[%d]", dp, i), v)
		if do == nil {
			continue
		}
		d := Disk{File: do.str("file"), Format: strings.ToLower(do.str("format")), Device: do.str("device"),
			Controller: strings.ToLower(do.str("controller")), Target: do.str("target")}
		if d.Device == "" {
			d.Device = "disk"
		}
		d.VirtualSize, _ = do.size("size")
		for _, p := range []struct {
			k   string
			dst *int
		}{{"controller_index", &d.ControllerIndex}, {"unit", &d.Unit}, {"boot_order", &d.BootOrder}} {
			if n, ok := do.num(p.k); ok {
				*p.dst = int(n)
			}
		}
		d.ReadOnly, _ = do.boolean("readonly")
		d.Shareable, _ = do.boolean("shareable")
		df := fmt.Sprintf("%s.disks[%d]", at, i)
		if d.Format == "" {
			wk.w.add(df+".format", "missing image format")
		}
		if d.VirtualSize == 0 {
			wk.w.add(df+".size", "virtual size unknown; storage planning uses the image file size")
		}
		do.finish()
		vm.Disks = append(vm.Disks, d)
	}
	nics, np := vo.list("nics")
	for i, v := range nics {
		no := wk.object(fmt.Sprintf("%s[%d]", np, i), v)
		if no == nil {
			continue
		}
		nf := fmt.Sprintf("%s.nics[%d]", at, i)
		n := NIC{Name: no.str("name"), Switch: no.str("switch"), Kind: no.str("kind"), Portgroup: no.str("portgroup"),
			Model: no.str("model"), VirtualPort: no.str("virtualport"), Gateway4: no.str("gateway4"), Gateway6: no.str("gateway6")}
		if mac := no.str("mac"); mac != "" {
			hw, err := net.ParseMAC(mac)
			if err != nil || len(hw) != 6 {
				wk.fail(nf+".mac", "%q is not a MAC address", mac)
			}
			n.MAC = hw.String()
		} else {
			wk.w.add(nf+".mac", "missing; the DR host assigns a new MAC")
		}
		n.IPv4, n.IPv6, n.DNS = no.strs("ipv4"), no.strs("ipv6"), no.strs("dns")
		n.DHCP, _ = no.boolean("dhcp")
		if b, ok := no.num("boot_order"); ok {
			n.BootOrder = int(b)
		}
		if v, p, ok := no.get("vlan"); ok && v != nil {
			if _, isMap := v.(map[string]any); isMap {
				vl := wk.object(p, v)
				n.VLAN = &VLAN{Mode: strings.ToLower(vl.str("mode"))}
				if id, ok := vl.num("id"); ok {
					n.VLAN.ID = int(id)
				}
				if id, ok := vl.num("native"); ok {
					n.VLAN.Native = int(id)
				}
				l, lp := vl.list("ids")
				for k, x := range l {
					id, err := toInt(x)
					if err != nil {
						wk.fail(fmt.Sprintf("%s[%d]", lp, k), "%v", err)
					}
					n.VLAN.Trunk = append(n.VLAN.Trunk, int(id))
				}
				if n.VLAN.Mode == "" {
					n.VLAN.Mode = VLANAccess
					if len(n.VLAN.Trunk) > 0 {
						n.VLAN.Mode = VLANTrunk
					}
				}
				vl.finish()
			} else {
				id, err := toInt(v)
				if err != nil {
					wk.fail(p, "%v (give a VLAN id, or {mode: trunk, ids: [...], native: N})", err)
				}
				if id != 0 {
					n.VLAN = &VLAN{Mode: VLANAccess, ID: int(id)}
				}
			}
		}
		if n.Switch == "" {
			wk.w.add(nf+".switch", "NIC is connected to no switch")
		}
		if len(n.IPv4)+len(n.IPv6) == 0 && !n.DHCP {
			wk.w.add(nf, "no static address and dhcp not set; re-IP cannot be planned for this NIC")
		}
		no.finish()
		vm.NICs = append(vm.NICs, n)
	}
	return vm
}
