package drsite

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the DR-site configuration: the `drsite:` section of a drpipe
// config file (configs/drsite.yaml documents every key).
type Config struct {
	// VirshURI is the libvirt connection used by bringup --execute for
	// libvirt hosts without their own uri (default qemu:///system).
	VirshURI string `yaml:"virsh_uri"`
	// DomainType is the libvirt domain type written into definitions:
	// kvm (default), qemu (software emulation) or test.
	DomainType string `yaml:"domain_type"`
	// RestoreRate overrides the measured restore rate used for expected
	// durations (e.g. "250MiB/s"); empty measures it.
	RestoreRate string `yaml:"restore_rate"`
	// RateSample is how much data the restore-rate measurement reads
	// (default 64MiB).
	RateSample string `yaml:"rate_sample"`
	// ExpectedBoot is the runbook's estimate of one boot group's start-up
	// (default 2m).
	ExpectedBoot Duration `yaml:"expected_boot"`
	// BootTimeout is how long bringup --execute waits for a boot group's
	// checks before it stops (default 10m).
	BootTimeout Duration `yaml:"boot_timeout"`
	// Exclude names VMs that are not brought up at the DR site.
	Exclude []string `yaml:"exclude"`
	// Hosts are the DR hypervisor hosts, tried in this order.
	Hosts []DRHost `yaml:"hosts"`
	// Networks are the DR networks VMs are attached to.
	Networks []DRNetwork `yaml:"networks"`
	// NetworkMap maps source switches/VLANs onto DR networks/VLANs; the
	// first matching rule wins.
	NetworkMap []NetworkRule `yaml:"network_map"`
	// ReIP rules re-address static IPs: the most specific matching source
	// subnet wins.
	ReIP []ReIPRule `yaml:"reip"`

	// File is where the configuration was read from (for messages).
	File string `yaml:"-"`
}

// Duration is a time.Duration written as "2m", "90s".
type Duration struct{ time.Duration }

// UnmarshalYAML parses Go duration syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration like 90s or 5m", n.Line, n.Value)
	}
	d.Duration = v
	return nil
}

// Host kinds.
const (
	KindLibvirt = "libvirt"
	KindHyperV  = "hyperv"
)

// DRHost is a hypervisor host at the DR site.
type DRHost struct {
	Name string `yaml:"name"`
	// Kind is libvirt or hyperv.
	Kind string `yaml:"kind"`
	// VCPUs, Memory and Storage are what VMs may use on the host.
	VCPUs   int    `yaml:"vcpus"`
	Memory  string `yaml:"memory"`
	Storage string `yaml:"storage"`
	// URI is the libvirt connection for this host (default: virsh_uri).
	URI string `yaml:"uri"`
	// ImageDir is where the host keeps restored disk images (a Linux path
	// for libvirt, a Windows path for Hyper-V). Default: the bringup
	// output directory.
	ImageDir string `yaml:"image_dir"`

	MemoryBytes  int64 `yaml:"-"`
	StorageBytes int64 `yaml:"-"`
}

// DRNetwork is a network at the DR site, created on every DR host that
// runs a VM attached to it.
type DRNetwork struct {
	Name string `yaml:"name"`
	// Type is external (bridged to the physical network), internal (host
	// and VMs; NAT or routed on libvirt) or private (VMs only).
	Type string `yaml:"type"`
	// Bridge is the host bridge of an external network on libvirt hosts.
	Bridge string `yaml:"bridge"`
	// OpenVSwitch marks Bridge as an Open vSwitch bridge: VLANs are then
	// set per port. A Linux bridge carries one VLAN; map VLANs to one
	// network per VLAN bridge.
	OpenVSwitch bool `yaml:"openvswitch"`
	// Uplink is the physical adapter of an external Hyper-V switch (or the
	// forward device of a libvirt NAT network).
	Uplink string `yaml:"uplink"`
	// Forward is the libvirt forward mode of an internal network: nat
	// (default), route or open.
	Forward string `yaml:"forward"`
	// Address is the host's address on an internal or private network
	// (address/prefix), e.g. 10.50.99.1/24.
	Address string `yaml:"address"`
	// Subnets lists the IP subnets on this network; re-IP'd addresses
	// must fall inside one of them when any is given.
	Subnets []string `yaml:"subnets"`
	// VLANs lists the VLAN ids the network carries; a mapping to another
	// VLAN is an error when any is given.
	VLANs []int `yaml:"vlans"`
}

// NetworkRule maps a source switch (and VLAN) to a DR network (and
// VLAN).
type NetworkRule struct {
	From struct {
		// Host restricts the rule to VMs of one source host.
		Host string `yaml:"host"`
		// Switch is the source switch or network name ("*" for any).
		Switch string `yaml:"switch"`
		// VLAN restricts the rule to one VLAN (0 = untagged); omitted
		// matches any VLAN.
		VLAN *int `yaml:"vlan"`
	} `yaml:"from"`
	To struct {
		Network string `yaml:"network"`
		// VLAN is the DR VLAN; omitted keeps the source VLAN, 0 makes the
		// port untagged.
		VLAN      *int   `yaml:"vlan"`
		Portgroup string `yaml:"portgroup"`
	} `yaml:"to"`
}

// ReIPRule moves addresses from one subnet to another, keeping the host
// part: 10.0.10.25/24 under from 10.0.10.0/24 to 10.50.10.0/24 becomes
// 10.50.10.25/24.
type ReIPRule struct {
	From    string   `yaml:"from"`
	To      string   `yaml:"to"`
	Gateway string   `yaml:"gateway"`
	DNS     []string `yaml:"dns"`

	from, to netip.Prefix
	gateway  netip.Addr
	dns      []netip.Addr
}

// configFile is the shape of a drpipe config file: the drsite section,
// with everything else left to drpipe's own loader.
type configFile struct {
	DRSite *Config              `yaml:"drsite"`
	Rest   map[string]yaml.Node `yaml:",inline"`
}

// LoadConfig parses the drsite section of a drpipe config file. Unknown
// keys, malformed sizes, subnets and references are errors that name the
// file, line or key.
func LoadConfig(file string, data []byte) (*Config, error) {
	text, err := decodeText(data)
	if err != nil {
		return nil, fmt.Errorf("DR-site config %s: %w", file, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	var cf configFile
	if err := dec.Decode(&cf); err != nil {
		return nil, fmt.Errorf("DR-site config %s: %w", file, err)
	}
	if cf.DRSite == nil {
		for _, k := range []string{"hosts", "networks", "network_map", "reip"} {
			if _, ok := cf.Rest[k]; ok {
				return nil, fmt.Errorf("DR-site config %s: %q is at the top level; put the DR-site settings under a drsite: section (see configs/drsite.yaml)", file, k)
			}
		}
		return nil, fmt.Errorf("DR-site config %s: no drsite: section (see configs/drsite.yaml)", file)
	}
	c := cf.DRSite
	c.File = file
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks the configuration and fills in parsed fields and
// defaults.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fieldErr(c.File, "drsite."+field, format, args...))
	}
	if c.VirshURI == "" {
		c.VirshURI = "qemu:///system"
	}
	if c.DomainType == "" {
		c.DomainType = "kvm"
	}
	switch c.DomainType {
	case "kvm", "qemu", "test":
	default:
		add("domain_type", "%q is not kvm, qemu or test", c.DomainType)
	}
	if c.RestoreRate != "" {
		if v, err := ParseSize(c.RestoreRate); err != nil || v <= 0 {
			add("restore_rate", "%q is not a rate like 200MiB/s", c.RestoreRate)
		}
	}
	if c.RateSample != "" {
		if v, err := ParseSize(c.RateSample); err != nil || v <= 0 {
			add("rate_sample", "%q is not a size like 64MiB", c.RateSample)
		}
	}
	if c.ExpectedBoot.Duration == 0 {
		c.ExpectedBoot.Duration = 2 * time.Minute
	}
	if c.BootTimeout.Duration == 0 {
		c.BootTimeout.Duration = 10 * time.Minute
	}
	if len(c.Hosts) == 0 {
		add("hosts", "no DR hosts: list at least one")
	}
	seen := map[string]bool{}
	for i := range c.Hosts {
		h := &c.Hosts[i]
		f := fmt.Sprintf("hosts[%d]", i)
		if h.Name == "" {
			add(f+".name", "missing")
		} else if seen[h.Name] {
			add(f+".name", "host %q is listed twice", h.Name)
		}
		seen[h.Name] = true
		switch h.Kind {
		case KindLibvirt, KindHyperV:
		default:
			add(f+".kind", "%q is not libvirt or hyperv", h.Kind)
		}
		if h.VCPUs <= 0 {
			add(f+".vcpus", "must be positive")
		}
		var err error
		if h.MemoryBytes, err = ParseSize(h.Memory); err != nil || h.MemoryBytes <= 0 {
			add(f+".memory", "%q is not a size like 256GiB", h.Memory)
		}
		if h.StorageBytes, err = ParseSize(h.Storage); err != nil || h.StorageBytes <= 0 {
			add(f+".storage", "%q is not a size like 4TiB", h.Storage)
		}
	}
	nets := map[string]*DRNetwork{}
	for i := range c.Networks {
		n := &c.Networks[i]
		f := fmt.Sprintf("networks[%d]", i)
		if n.Name == "" {
			add(f+".name", "missing")
		} else if nets[n.Name] != nil {
			add(f+".name", "network %q is listed twice", n.Name)
		}
		nets[n.Name] = n
		switch n.Type {
		case SwitchExternal, SwitchInternal, SwitchPrivate:
		default:
			add(f+".type", "%q is not external, internal or private", n.Type)
		}
		switch n.Forward {
		case "", "nat", "route", "open":
		default:
			add(f+".forward", "%q is not nat, route or open", n.Forward)
		}
		if n.Forward != "" && n.Type != SwitchInternal {
			add(f+".forward", "only internal networks forward")
		}
		if n.Forward == "open" && n.Uplink != "" {
			// libvirt: "forward dev not allowed ... with forward mode='open'".
			add(f+".uplink", "an open network forwards through no device, and libvirt refuses one; remove uplink, or use forward nat or route")
		}
		if n.Address != "" {
			if _, err := netip.ParsePrefix(n.Address); err != nil {
				add(f+".address", "%q is not address/prefix", n.Address)
			}
			if n.Type == SwitchExternal {
				add(f+".address", "an external network has no host address here; configure it on the bridge")
			}
		}
		for k, s := range n.Subnets {
			p, err := netip.ParsePrefix(s)
			if err != nil || p.Masked() != p {
				add(fmt.Sprintf("%s.subnets[%d]", f, k), "%q is not a subnet like 10.50.10.0/24", s)
			}
		}
		for _, v := range n.VLANs {
			if v < 1 || v > 4094 {
				add(f+".vlans", "VLAN %d is outside 1..4094", v)
			}
		}
		if n.OpenVSwitch && n.Bridge == "" {
			add(f+".bridge", "an Open vSwitch network needs its bridge name")
		}
	}
	for i := range c.NetworkMap {
		r := &c.NetworkMap[i]
		f := fmt.Sprintf("network_map[%d]", i)
		if r.From.Switch == "" {
			add(f+".from.switch", "missing (use \"*\" for any switch)")
		}
		if r.From.VLAN != nil && (*r.From.VLAN < 0 || *r.From.VLAN > 4094) {
			add(f+".from.vlan", "VLAN %d is outside 0..4094", *r.From.VLAN)
		}
		if r.To.VLAN != nil && (*r.To.VLAN < 0 || *r.To.VLAN > 4094) {
			add(f+".to.vlan", "VLAN %d is outside 0..4094", *r.To.VLAN)
		}
		n := nets[r.To.Network]
		if n == nil {
			add(f+".to.network", "network %q is not in drsite.networks", r.To.Network)
			continue
		}
		if r.To.VLAN != nil && *r.To.VLAN != 0 && len(n.VLANs) > 0 && !containsInt(n.VLANs, *r.To.VLAN) {
			add(f+".to.vlan", "VLAN %d is not among network %s's vlans %v", *r.To.VLAN, n.Name, n.VLANs)
		}
	}
	// The most specific rule wins: two rules for one source subnet leave
	// its addresses to the order of the list.
	fromRule := map[netip.Prefix]int{}
	for i := range c.ReIP {
		r := &c.ReIP[i]
		f := fmt.Sprintf("reip[%d]", i)
		var err error
		if r.from, err = netip.ParsePrefix(r.From); err != nil || r.from.Masked() != r.from {
			add(f+".from", "%q is not a subnet like 10.0.10.0/24", r.From)
		} else if k, dup := fromRule[r.from]; dup {
			add(f+".from", "subnet %s is also the from of reip[%d] (to %s); keep one rule per source subnet", r.from, k, c.ReIP[k].To)
		} else {
			fromRule[r.from] = i
		}
		if r.to, err = netip.ParsePrefix(r.To); err != nil || r.to.Masked() != r.to {
			add(f+".to", "%q is not a subnet like 10.50.10.0/24", r.To)
		}
		if r.from.IsValid() && r.to.IsValid() && r.from.Addr().Is4() != r.to.Addr().Is4() {
			add(f, "from and to must both be IPv4 or both IPv6")
		}
		if r.Gateway != "" {
			if r.gateway, err = netip.ParseAddr(r.Gateway); err != nil {
				add(f+".gateway", "%q is not an IP address", r.Gateway)
			} else if r.to.IsValid() && !r.to.Contains(r.gateway) {
				add(f+".gateway", "%s is outside the DR subnet %s", r.gateway, r.to)
			}
		}
		r.dns = nil
		for k, d := range r.DNS {
			a, err := netip.ParseAddr(d)
			if err != nil {
				add(fmt.Sprintf("%s.dns[%d]", f, k), "%q is not an IP address", d)
				continue
			}
			r.dns = append(r.dns, a)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("DR-site config %s: %w", c.File, errors.Join(errs...))
	}
	return nil
}

// Network returns the DR network called name, or nil.
func (c *Config) Network(name string) *DRNetwork {
	for i := range c.Networks {
		if c.Networks[i].Name == name {
			return &c.Networks[i]
		}
	}
	return nil
}

// Host returns the DR host called name, or nil.
func (c *Config) Host(name string) *DRHost {
	for i := range c.Hosts {
		if c.Hosts[i].Name == name {
			return &c.Hosts[i]
		}
	}
	return nil
}

// URIFor returns the libvirt URI for a DR host.
func (c *Config) URIFor(h *DRHost) string {
	if h != nil && h.URI != "" {
		return h.URI
	}
	return c.VirshURI
}
