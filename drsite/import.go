package drsite

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Format names an inventory input format.
type Format string

// Input formats, detected from the content by Detect.
const (
	FormatLibvirtDomain  Format = "libvirt-domain"
	FormatLibvirtNetwork Format = "libvirt-network"
	FormatHyperV         Format = "hyperv-json"
	FormatOVF            Format = "ovf"
	FormatYAML           Format = "yaml"
	FormatModel          Format = "drpipe-json"
)

// MaxInventoryBytes bounds one inventory file.
const MaxInventoryBytes = 64 << 20

// ErrUnknownFormat is wrapped when Detect cannot tell what a file is.
var ErrUnknownFormat = errors.New("unknown inventory format")

// ImportOptions configure an import.
type ImportOptions struct {
	// Host is the source host assigned to VMs and switches whose input
	// does not name one (libvirt XML, OVF).
	Host string
}

// decodeText strips a UTF-8 byte order mark and converts UTF-16 (with a
// BOM, as Windows PowerShell's Out-File writes it) to UTF-8.
func decodeText(data []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(data, []byte{0xEF, 0xBB, 0xBF}):
		data = data[3:]
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}), bytes.HasPrefix(data, []byte{0xFE, 0xFF}):
		be := data[0] == 0xFE
		data = data[2:]
		if len(data)%2 != 0 {
			return nil, errors.New("UTF-16 text has an odd number of bytes")
		}
		u := make([]uint16, len(data)/2)
		for i := range u {
			if be {
				u[i] = uint16(data[2*i])<<8 | uint16(data[2*i+1])
			} else {
				u[i] = uint16(data[2*i+1])<<8 | uint16(data[2*i])
			}
		}
		return []byte(string(utf16.Decode(u))), nil
	}
	if !utf8.Valid(data) {
		return nil, errors.New("not UTF-8 (or UTF-16 with a byte order mark) text")
	}
	return data, nil
}

// Detect tells the format of an inventory file from its content: the XML
// root element (libvirt <domain> or <network>, OVF <Envelope>), the JSON
// header (drpipe's "format" or the Hyper-V collector's "Collector"), or
// else YAML. A tar archive (an OVA) is refused, naming its descriptor.
func Detect(data []byte) (Format, error) {
	// A tar header holds NUL bytes no text inventory has, and "ustar" at
	// offset 257.
	if len(data) >= 262 && string(data[257:262]) == "ustar" && bytes.IndexByte(data[:257], 0) >= 0 {
		return "", fmt.Errorf("%w: a tar archive (an OVA?); give its OVF descriptor instead (tar -xf FILE.ova --wildcards '*.ovf')", ErrUnknownFormat)
	}
	text, err := decodeText(data)
	if err != nil {
		return "", err
	}
	t := bytes.TrimSpace(text)
	if len(t) == 0 {
		return "", fmt.Errorf("%w: the file is empty", ErrUnknownFormat)
	}
	switch t[0] {
	case '<':
		d := xml.NewDecoder(bytes.NewReader(t))
		d.Strict = true
		for {
			tok, err := d.Token()
			if err != nil {
				return "", fmt.Errorf("%w: XML without a root element: %v", ErrUnknownFormat, err)
			}
			if se, ok := tok.(xml.StartElement); ok {
				switch se.Name.Local {
				case "domain":
					return FormatLibvirtDomain, nil
				case "network":
					return FormatLibvirtNetwork, nil
				case "Envelope":
					return FormatOVF, nil
				}
				return "", fmt.Errorf("%w: XML root element <%s>; drpipe imports libvirt <domain> and <network> XML and OVF <Envelope> descriptors", ErrUnknownFormat, se.Name.Local)
			}
		}
	case '{':
		var head map[string]json.RawMessage
		if err := json.Unmarshal(t, &head); err != nil {
			return "", fmt.Errorf("%w: malformed JSON: %v", ErrUnknownFormat, err)
		}
		var s string
		if raw, ok := head["format"]; ok && json.Unmarshal(raw, &s) == nil && s == InventoryFormat {
			return FormatModel, nil
		}
		for k := range head {
			if strings.EqualFold(k, "Collector") || strings.EqualFold(k, "VMs") {
				return FormatHyperV, nil
			}
		}
		return "", fmt.Errorf("%w: JSON object is neither a drpipe inventory (\"format\": %q) nor Hyper-V collector output (\"Collector\", \"VMs\")", ErrUnknownFormat, InventoryFormat)
	case '[':
		return "", fmt.Errorf("%w: a top-level JSON array; use the Hyper-V collector's object output (configs/hyperv-inventory.ps1)", ErrUnknownFormat)
	}
	return FormatYAML, nil
}

// Import parses one inventory file of any supported format into the
// model. name is used in messages. Malformed values are errors
// (*FieldError naming the file and field); unknown and missing fields are
// in the returned inventory's Warnings. The result is normalised and
// validated.
func Import(name string, data []byte, o ImportOptions) (*Inventory, error) {
	if len(data) > MaxInventoryBytes {
		return nil, fmt.Errorf("inventory %s: %d bytes is more than the %d allowed", name, len(data), MaxInventoryBytes)
	}
	f, err := Detect(data)
	if err != nil {
		return nil, fmt.Errorf("inventory %s: %w", name, err)
	}
	text, _ := decodeText(data)
	var inv *Inventory
	switch f {
	case FormatLibvirtDomain:
		inv, err = importLibvirtDomain(name, text, o)
	case FormatLibvirtNetwork:
		inv, err = importLibvirtNetwork(name, text, o)
	case FormatHyperV:
		inv, err = importHyperV(name, text, o)
	case FormatOVF:
		inv, err = importOVF(name, text, o)
	case FormatYAML:
		inv, err = importYAML(name, text, o)
	case FormatModel:
		inv, err = DecodeInventory(text)
		if err != nil {
			err = &FieldError{File: name, Err: err}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("inventory %s (%s): %w", name, f, err)
	}
	sum := sha256.Sum256(data)
	if f != FormatModel {
		inv.Sources = []Source{{File: name, Format: f, SHA256: hex.EncodeToString(sum[:])}}
	}
	inv.Normalize()
	if err := inv.Validate(name); err != nil {
		return nil, fmt.Errorf("inventory %s (%s): %w", name, f, err)
	}
	return inv, nil
}

// ImportFiles reads, imports and merges inventory files. host is the
// source host for inputs that do not name one (libvirt XML, OVF). Any
// error names the file and field; nothing is returned then.
func ImportFiles(paths []string, host string) (*Inventory, error) {
	var parts []*Inventory
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("read inventory: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(f, MaxInventoryBytes+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read inventory %s: %w", p, err)
		}
		inv, err := Import(filepath.Base(p), data, ImportOptions{Host: host})
		if err != nil {
			return nil, err
		}
		parts = append(parts, inv)
	}
	return Merge(parts...)
}

// Merge combines inventories: VMs are concatenated (a VM name may appear
// only once), hosts with the same name are combined, and a switch that
// appears twice on one host must be described identically. Warnings and
// sources are concatenated. The result is normalised and validated, and
// NICs whose switch no input describes get a warning.
func Merge(parts ...*Inventory) (*Inventory, error) {
	out := &Inventory{}
	origin := map[string]string{}
	// switchAt indexes each host's switches by host and switch name.
	switchAt := map[string]int{}
	for _, p := range parts {
		if p == nil {
			continue
		}
		from := "an inventory"
		if len(p.Sources) > 0 {
			from = p.Sources[0].File
		}
		for _, vm := range p.VMs {
			if prev, dup := origin[vm.Name]; dup {
				return nil, fieldErr(from, "vms["+vm.Name+"]", "VM %q is also described by %s; each VM may appear in one inventory file only", vm.Name, prev)
			}
			origin[vm.Name] = from
			out.VMs = append(out.VMs, vm)
		}
		for _, h := range p.Hosts {
			dst := out.Host(h.Name)
			if dst == nil {
				out.Hosts = append(out.Hosts, Host{Name: h.Name})
				dst = &out.Hosts[len(out.Hosts)-1]
			}
			if dst.Hypervisor == "" {
				dst.Hypervisor = h.Hypervisor
			}
			if dst.Resources == (Resources{}) {
				dst.Resources = h.Resources
			}
			for _, s := range h.Switches {
				key := h.Name + "\x00" + s.Name
				if i, found := switchAt[key]; found {
					if !reflect.DeepEqual(dst.Switches[i], s) {
						return nil, fieldErr(from, "switch "+s.Name, "switch %q on host %q is described differently by two inventory files", s.Name, h.Name)
					}
					continue
				}
				switchAt[key] = len(dst.Switches)
				dst.Switches = append(dst.Switches, s)
			}
		}
		out.Sources = append(out.Sources, p.Sources...)
		out.Warnings = append(out.Warnings, p.Warnings...)
	}
	out.Normalize()
	if err := out.Validate(""); err != nil {
		return nil, err
	}
	out.noteUndescribedSwitches()
	return out, nil
}

// noteUndescribedSwitches warns about NICs attached to a libvirt network
// or Hyper-V switch that no input described (the DR mapping then lacks
// the switch's type and subnets).
func (inv *Inventory) noteUndescribedSwitches() {
	seen := map[string]bool{}
	for _, h := range inv.Hosts {
		for _, s := range h.Switches {
			seen[h.Name+"\x00"+s.Name] = true
		}
	}
	for _, vm := range inv.VMs {
		for _, n := range vm.NICs {
			if n.Switch == "" || (n.Kind != "" && n.Kind != "network") {
				continue
			}
			key := vm.Host + "\x00" + n.Switch
			if !seen[key] {
				seen[key] = true
				hint := "add its description (virsh net-dumpxml " + n.Switch + " > net-" + n.Switch + ".xml, or the Hyper-V collector output)"
				inv.Warnings = append(inv.Warnings, Warning{Field: "host " + vm.Host + " switch " + n.Switch,
					Message: "switch used by VM " + vm.Name + " is described by no inventory file; " + hint})
			}
		}
	}
}

// EncodeInventory returns the versioned JSON form of inv (normalised).
func EncodeInventory(inv *Inventory) ([]byte, error) {
	c := *inv
	c.Normalize()
	return json.Marshal(&c)
}

// DecodeInventory parses the versioned JSON form. Unknown fields and
// unknown versions are errors.
func DecodeInventory(data []byte) (*Inventory, error) {
	var head struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("decode inventory JSON: %w", err)
	}
	if head.Format != InventoryFormat {
		return nil, &FieldError{Field: "format", Err: fmt.Errorf("is %q, want %q", head.Format, InventoryFormat)}
	}
	if head.Version != InventoryVersion {
		return nil, &FieldError{Field: "version", Err: fmt.Errorf("inventory version %d is not supported (this drpipe reads version %d); upgrade drpipe", head.Version, InventoryVersion)}
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	var inv Inventory
	if err := d.Decode(&inv); err != nil {
		return nil, fmt.Errorf("decode inventory JSON: %w", err)
	}
	if d.More() {
		return nil, errors.New("decode inventory JSON: trailing data after the object")
	}
	inv.Normalize()
	// Inventories come from the hosts backed up: one from a compromised
	// host is checked as a file given on the command line is.
	if err := inv.Validate(""); err != nil {
		return nil, err
	}
	return &inv, nil
}

// warnings collects import warnings for one file.
type warnings struct {
	file string
	list []Warning
}

func (w *warnings) add(field, format string, args ...any) {
	w.list = append(w.list, Warning{File: w.file, Field: field, Message: fmt.Sprintf(format, args...)})
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
