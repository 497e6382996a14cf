package drsite

import (
	"fmt"
	"math/big"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// bootGroups derives start-up groups: a VM starts after all its
// dependencies; among VMs that are ready, the lowest boot priority goes
// first. Dependency cycles are found with Tarjan's algorithm and reported.
func (p *Plan) bootGroups(in PlanInput) {
	byName := map[string]*PlannedVM{}
	for _, v := range p.VMs {
		byName[v.Name] = v
	}
	// Dependencies on VMs that are unknown, excluded or cannot come up.
	for _, v := range p.VMs {
		if v.Excluded {
			continue
		}
		for _, d := range v.DependsOn {
			dv := byName[d]
			switch {
			case dv == nil:
				p.addIssue(IssueDependency, v.Name, false, "depends on %q, which is in no inventory; it starts without waiting for it", d)
			case dv.Excluded:
				p.addIssue(IssueDependency, v.Name, false, "depends on %s, which drsite.exclude keeps down; it starts without it", d)
			}
		}
	}
	// Cycles among the VMs to bring up.
	var nodes []string
	for _, v := range p.VMs {
		if !v.Excluded {
			nodes = append(nodes, v.Name)
		}
	}
	sort.Strings(nodes)
	inCycle := map[string]bool{}
	for _, scc := range stronglyConnected(nodes, func(n string) []string {
		var out []string
		for _, d := range byName[n].DependsOn {
			if dv := byName[d]; dv != nil && !dv.Excluded {
				out = append(out, d)
			}
		}
		return out
	}) {
		self := len(scc) == 1 && containsStr(byName[scc[0]].DependsOn, scc[0])
		if len(scc) < 2 && !self {
			continue
		}
		path := cyclePath(scc, byName)
		for _, n := range scc {
			inCycle[n] = true
			byName[n].Blocked = true
		}
		p.addIssue(IssueCycle, strings.Join(scc, ","), true, "dependency cycle %s: none of them can start first; remove one dependency", strings.Join(path, " → "))
	}
	// Kahn's algorithm over the VMs that can come up.
	remaining := map[string]*PlannedVM{}
	for _, v := range p.VMs {
		if !v.Excluded && !v.Blocked && !inCycle[v.Name] {
			remaining[v.Name] = v
		}
	}
	for _, v := range p.VMs {
		if v.Excluded || remaining[v.Name] == nil {
			continue
		}
		for _, d := range v.DependsOn {
			if dv := byName[d]; dv != nil && !dv.Excluded && remaining[d] == nil && !inCycle[d] {
				p.addIssue(IssueDependency, v.Name, false, "depends on %s, which cannot be brought up (see its issues); it starts without it", d)
			}
		}
	}
	started := map[string]bool{}
	for len(remaining) > 0 {
		var ready []*PlannedVM
		for _, v := range remaining {
			ok := true
			for _, d := range v.DependsOn {
				if _, waiting := remaining[d]; waiting || inCycle[d] {
					ok = false
				}
			}
			if ok {
				ready = append(ready, v)
			}
		}
		if len(ready) == 0 {
			break
		}
		minP := prioKey(ready[0].BootPriority)
		for _, v := range ready {
			minP = min(minP, prioKey(v.BootPriority))
		}
		g := &BootGroup{Number: len(p.Groups) + 1}
		for _, v := range ready {
			if prioKey(v.BootPriority) == minP {
				g.VMs = append(g.VMs, v.Name)
			}
		}
		sort.Strings(g.VMs)
		for _, n := range g.VMs {
			byName[n].Group = g.Number
			started[n] = true
			delete(remaining, n)
		}
		p.Groups = append(p.Groups, g)
	}
	names := sortedKeys(remaining)
	for _, n := range names {
		v := remaining[n]
		v.Blocked = true
		p.addIssue(IssueCycle, n, true, "waits for a VM in a dependency cycle (%s); it cannot start", strings.Join(v.DependsOn, ", "))
	}
}

func containsStr(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}

// stronglyConnected returns the strongly connected components of a
// graph (Tarjan), each sorted, in a deterministic order.
func stronglyConnected(nodes []string, edges func(string) []string) [][]string {
	index := map[string]int{}
	low := map[string]int{}
	onStack := map[string]bool{}
	var stack []string
	var out [][]string
	next := 0
	var visit func(n string)
	visit = func(n string) {
		index[n], low[n] = next, next
		next++
		stack = append(stack, n)
		onStack[n] = true
		for _, m := range edges(n) {
			if _, seen := index[m]; !seen {
				visit(m)
				low[n] = min(low[n], low[m])
			} else if onStack[m] {
				low[n] = min(low[n], index[m])
			}
		}
		if low[n] == index[n] {
			var scc []string
			for {
				m := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[m] = false
				scc = append(scc, m)
				if m == n {
					break
				}
			}
			sort.Strings(scc)
			out = append(out, scc)
		}
	}
	for _, n := range nodes {
		if _, seen := index[n]; !seen {
			visit(n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// cyclePath walks dependencies inside an SCC from its first member back
// to it: a → b → c → a.
func cyclePath(scc []string, byName map[string]*PlannedVM) []string {
	in := map[string]bool{}
	for _, n := range scc {
		in[n] = true
	}
	start := scc[0]
	path := []string{start}
	seen := map[string]bool{start: true}
	cur := start
	for {
		var next string
		deps := append([]string(nil), byName[cur].DependsOn...)
		sort.Strings(deps)
		for _, d := range deps {
			if d == start && (len(path) > 1 || cur == start) {
				return append(path, start)
			}
		}
		for _, d := range deps {
			if in[d] && !seen[d] {
				next = d
				break
			}
		}
		if next == "" {
			return append(path, start)
		}
		seen[next] = true
		path = append(path, next)
		cur = next
	}
}

// matchRule returns the first network_map rule for a source switch and
// VLAN (0 = untagged).
func (c *Config) matchRule(host, sw string, vlan int) *NetworkRule {
	for i := range c.NetworkMap {
		r := &c.NetworkMap[i]
		if r.From.Host != "" && !strings.EqualFold(r.From.Host, host) {
			continue
		}
		if r.From.Switch != "*" && !strings.EqualFold(r.From.Switch, sw) {
			continue
		}
		if r.From.VLAN != nil && *r.From.VLAN != vlan {
			continue
		}
		return r
	}
	return nil
}

func ruleVLAN(r *NetworkRule, src int) int {
	if r.To.VLAN != nil {
		return *r.To.VLAN
	}
	return src
}

// mapNetworks maps every NIC of every VM to be brought up.
func (p *Plan) mapNetworks(in PlanInput) {
	c := p.Config
	uses := map[[2]string]*NetworkUse{}
	// Inventories of different source hosts are merged without checking
	// their MACs against each other.
	macs := map[string]string{}
	for _, v := range p.VMs {
		if v.Excluded {
			continue
		}
		vm := v.VM
		for k := range vm.NICs {
			n := &vm.NICs[k]
			pn := &PlannedNIC{MAC: n.MAC, Name: n.Name, SourceSwitch: n.Switch, SourceVLAN: n.VLAN, DHCP: n.DHCP}
			v.NICs = append(v.NICs, pn)
			label := n.MAC
			if label == "" {
				label = fmt.Sprintf("#%d", k)
			}
			if n.MAC != "" {
				if other, dup := macs[n.MAC]; dup && other == v.Name {
					p.addIssue(IssueNetwork, v.Name, true, "two of its NICs have the MAC address %s; give one of them another MAC in its inventory", n.MAC)
					v.Blocked = true
				} else if dup {
					p.addIssue(IssueNetwork, v.Name, true, "NIC %s has the MAC address of a NIC of %s (source host %s); give one of them another MAC in its inventory", n.MAC, other, p.VM(other).SourceHost)
					v.Blocked = true
				} else {
					macs[n.MAC] = v.Name
				}
			}
			if n.Switch == "" {
				p.addIssue(IssueUnmapped, v.Name, true, "NIC %s is connected to no switch in the inventory; add it to the inventory", label)
				v.Blocked = true
				continue
			}
			var ids []int
			mode := VLANUntagged
			if n.VLAN != nil {
				mode = n.VLAN.Mode
			}
			switch mode {
			case VLANAccess:
				ids = []int{n.VLAN.ID}
			case VLANTrunk:
				ids = append(ids, n.VLAN.Trunk...)
				if n.VLAN.Native != 0 && !containsInt(ids, n.VLAN.Native) {
					ids = append(ids, n.VLAN.Native)
				}
				if len(ids) == 0 {
					ids = []int{0}
				}
			default:
				ids = []int{0}
			}
			var rule *NetworkRule
			var unmapped []string
			mapped := map[int]int{}
			for _, id := range ids {
				r := c.matchRule(vm.Host, n.Switch, id)
				if r == nil {
					unmapped = append(unmapped, vlanLabel(id))
					continue
				}
				if rule != nil && r.To.Network != rule.To.Network {
					p.addIssue(IssueNetwork, v.Name, true, "NIC %s trunks VLANs that map to different DR networks (%s and %s); one adapter connects to one network", label, rule.To.Network, r.To.Network)
					v.Blocked = true
				}
				if rule == nil {
					rule = r
				}
				mapped[id] = ruleVLAN(r, id)
			}
			if len(unmapped) > 0 {
				p.addIssue(IssueUnmapped, v.Name, true, "NIC %s on switch %q %s has no drsite.network_map entry; add one (from: {switch: %q, vlan: N}, to: {network: DR-NETWORK})",
					label, n.Switch, strings.Join(unmapped, ", "), n.Switch)
				v.Blocked = true
				continue
			}
			pn.Network, pn.Portgroup, pn.Mapped = rule.To.Network, rule.To.Portgroup, true
			switch mode {
			case VLANAccess:
				if id := mapped[n.VLAN.ID]; id != 0 {
					pn.VLAN = &VLAN{Mode: VLANAccess, ID: id}
				}
			case VLANTrunk:
				t := &VLAN{Mode: VLANTrunk, Native: mapped[n.VLAN.Native], NativeMode: n.VLAN.NativeMode}
				for _, id := range n.VLAN.Trunk {
					t.Trunk = append(t.Trunk, mapped[id])
				}
				t.Trunk = sortedInts(t.Trunk)
				pn.VLAN = t
			default:
				if id := mapped[0]; id != 0 {
					pn.VLAN = &VLAN{Mode: VLANAccess, ID: id}
				}
			}
			dn := c.Network(pn.Network)
			if dn == nil {
				continue // Validate rejects such configs
			}
			var vids []int
			if pn.VLAN != nil {
				vids = append(append(vids, pn.VLAN.ID), pn.VLAN.Trunk...)
			}
			for _, id := range vids {
				if id != 0 && len(dn.VLANs) > 0 && !containsInt(dn.VLANs, id) {
					p.addIssue(IssueNetwork, v.Name, true, "NIC %s maps to VLAN %d, which DR network %s does not carry (vlans %v)", label, id, dn.Name, dn.VLANs)
					v.Blocked = true
				}
			}
			if v.DRHost == "" {
				continue
			}
			switch v.DRKind {
			case KindLibvirt:
				if dn.Type == SwitchExternal && dn.Bridge == "" {
					p.addIssue(IssueNetwork, v.Name, true, "DR network %s is external but has no bridge for libvirt host %s; set drsite.networks[].bridge", dn.Name, v.DRHost)
					v.Blocked = true
				}
				// DRSwitch makes an internal network forward (nat by
				// default), which libvirt defines only with an address
				// of the host on it.
				if dn.Type == SwitchInternal && dn.Address == "" {
					fwd := dn.Forward
					if fwd == "" {
						fwd = "nat"
					}
					p.addIssue(IssueNetwork, v.Name, true, "DR network %s is internal (forward %s) but has no address for libvirt host %s, and libvirt defines no forwarding network without one; set drsite.networks[].address (e.g. 10.50.99.1/24), or make it type private",
						dn.Name, fwd, v.DRHost)
					v.Blocked = true
				}
				if pn.VLAN != nil && !dn.OpenVSwitch {
					p.addIssue(IssueNetwork, v.Name, true, "NIC %s needs VLAN tagging (%s) but DR network %s is not Open vSwitch; libvirt cannot tag ports on a Linux bridge: map the VLAN to a network whose bridge carries it untagged (vlan: 0), or set openvswitch: true",
						label, vlanString(pn.VLAN), dn.Name)
					v.Blocked = true
				}
			case KindHyperV:
				if dn.Type == SwitchExternal && dn.Uplink == "" {
					p.addIssue(IssueNetwork, v.Name, true, "DR network %s is external but has no uplink adapter for Hyper-V host %s; set drsite.networks[].uplink", dn.Name, v.DRHost)
					v.Blocked = true
				}
			}
			key := [2]string{v.DRHost, dn.Name}
			u := uses[key]
			if u == nil {
				u = &NetworkUse{Host: v.DRHost, Network: dn.Name, Type: dn.Type}
				uses[key] = u
			}
			if !containsStr(u.VMs, v.Name) {
				u.VMs = append(u.VMs, v.Name)
			}
			for _, id := range vids {
				if id != 0 && !containsInt(u.VLANs, id) {
					u.VLANs = append(u.VLANs, id)
				}
			}
		}
	}
	for _, u := range uses {
		sort.Ints(u.VLANs)
		sort.Strings(u.VMs)
		p.Networks = append(p.Networks, u)
	}
	sort.Slice(p.Networks, func(i, j int) bool {
		if p.Networks[i].Host != p.Networks[j].Host {
			return p.Networks[i].Host < p.Networks[j].Host
		}
		return p.Networks[i].Network < p.Networks[j].Network
	})
	for _, h := range p.Hosts {
		for _, u := range p.Networks {
			if u.Host == h.Name {
				h.Networks = append(h.Networks, u.Network)
			}
		}
	}
}

func vlanLabel(id int) string {
	if id == 0 {
		return "untagged"
	}
	return fmt.Sprintf("VLAN %d", id)
}

func vlanString(v *VLAN) string {
	if v == nil {
		return "untagged"
	}
	switch v.Mode {
	case VLANAccess:
		return fmt.Sprintf("VLAN %d", v.ID)
	case VLANTrunk:
		s := make([]string, len(v.Trunk))
		for i, t := range v.Trunk {
			s[i] = itoa(t)
		}
		out := "trunk " + strings.Join(s, ",")
		if v.Native != 0 {
			out += fmt.Sprintf(" native %d", v.Native)
		}
		return out
	}
	return "untagged"
}

// reIPRule returns the most specific rule whose source subnet holds a.
func (c *Config) reIPRule(a netip.Addr) *ReIPRule {
	var best *ReIPRule
	for i := range c.ReIP {
		r := &c.ReIP[i]
		if r.from.IsValid() && r.from.Contains(a) && (best == nil || r.from.Bits() > best.from.Bits()) {
			best = r
		}
	}
	return best
}

// translate moves a from r.from into r.to keeping the host part. ok is
// false when the host part does not fit the DR subnet.
func (r *ReIPRule) translate(a netip.Addr) (netip.Addr, bool) {
	bits := a.BitLen()
	av, fv, tv := addrInt(a), addrInt(r.from.Addr()), addrInt(r.to.Addr())
	off := new(big.Int).Sub(av, fv)
	size := new(big.Int).Lsh(big.NewInt(1), uint(bits-r.to.Bits()))
	if off.Cmp(size) >= 0 {
		return netip.Addr{}, false
	}
	return intAddr(new(big.Int).Add(tv, off), bits), true
}

func addrInt(a netip.Addr) *big.Int {
	b := a.As16()
	if a.Is4() {
		v4 := a.As4()
		return new(big.Int).SetBytes(v4[:])
	}
	return new(big.Int).SetBytes(b[:])
}

func intAddr(v *big.Int, bits int) netip.Addr {
	if bits == 32 {
		var b [4]byte
		v.FillBytes(b[:])
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	v.FillBytes(b[:])
	return netip.AddrFrom16(b)
}

// hostPartEdge reports whether a is the network or broadcast address of
// an IPv4 prefix (IPv6 subnet-router anycast is allowed as a host).
func hostPartEdge(p netip.Prefix) bool {
	if !p.Addr().Is4() || p.Bits() >= 31 {
		return false
	}
	a := addrInt(p.Addr())
	base := addrInt(p.Masked().Addr())
	last := new(big.Int).Add(base, new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(32-p.Bits())), big.NewInt(1)))
	return a.Cmp(base) == 0 || a.Cmp(last) == 0
}

// reIP re-addresses static addresses of mapped NICs and checks each
// result: inside the DR subnet, not a network or broadcast address, not
// the DR host's own address on the network, inside the DR network's
// subnets when given, unique across VMs.
func (p *Plan) reIP() {
	c := p.Config
	owner := map[netip.Addr]string{}
	for _, v := range p.VMs {
		if v.Excluded {
			continue
		}
		for k, pn := range v.NICs {
			n := &v.VM.NICs[k]
			if !pn.Mapped {
				continue
			}
			label := n.MAC
			if label == "" {
				label = fmt.Sprintf("#%d", k)
			}
			dn := c.Network(pn.Network)
			var subnets []netip.Prefix
			var hostAddr netip.Addr
			if dn != nil {
				if hp, err := netip.ParsePrefix(dn.Address); err == nil {
					hostAddr = hp.Addr()
				}
				for _, s := range dn.Subnets {
					if sp, err := netip.ParsePrefix(s); err == nil {
						subnets = append(subnets, sp)
					}
				}
			}
			pn.Gateway4, pn.Gateway6 = n.Gateway4, n.Gateway6
			var dns []string
			var newPrefixes []netip.Prefix
			setByRule := map[*string]bool{}
			for _, s := range append(append([]string(nil), n.IPv4...), n.IPv6...) {
				pf, err := netip.ParsePrefix(s)
				if err != nil {
					continue // Validate rejects these
				}
				pn.From = append(pn.From, pf.String())
				a := pf.Addr()
				r := c.reIPRule(a)
				np := pf
				if r != nil {
					na, ok := r.translate(a)
					if !ok {
						p.addIssue(IssueReIP, v.Name, true, "NIC %s address %s cannot move from %s into %s: its host part does not fit the DR subnet (outside the DR subnet)", label, pf, r.from, r.to)
						v.Blocked = true
						continue
					}
					// An address whose subnet is the rule's source (or
					// wider) moves into the DR subnet, whose size it takes
					// (the rule's gateway may be anywhere in it). One in
					// a smaller subnet of the source keeps that subnet's
					// size, as translate keeps the offset from the
					// subnet's start, within the DR subnet: a /24 under a
					// /16 rule mapped to a /24 (or to a /8) stays a /24.
					bits := r.to.Bits()
					if pf.Bits() > r.from.Bits() {
						bits = max(pf.Bits(), r.to.Bits())
					}
					np = netip.PrefixFrom(na, bits)
					if r.gateway.IsValid() {
						if na.Is4() && r.gateway.Is4() {
							pn.Gateway4 = r.gateway.String()
							setByRule[&pn.Gateway4] = true
						} else if na.Is6() && r.gateway.Is6() {
							pn.Gateway6 = r.gateway.String()
							setByRule[&pn.Gateway6] = true
						}
					}
					for _, d := range r.dns {
						if !containsStr(dns, d.String()) {
							dns = append(dns, d.String())
						}
					}
				}
				if hostPartEdge(np) {
					p.addIssue(IssueReIP, v.Name, true, "NIC %s address %s (from %s) is the network or broadcast address of its subnet", label, np, pf)
					v.Blocked = true
					continue
				}
				if np.Addr() == hostAddr {
					p.addIssue(IssueReIP, v.Name, true, "NIC %s address %s (from %s) is the DR host's own address on network %s (drsite.networks[].address); change the address or the reip rule", label, np.Addr(), pf, dn.Name)
					v.Blocked = true
					continue
				}
				if len(subnets) > 0 {
					inside := false
					for _, sp := range subnets {
						inside = inside || sp.Contains(np.Addr())
					}
					if !inside {
						what := "is kept (no drsite.reip rule matches it)"
						if r != nil {
							what = fmt.Sprintf("becomes %s by rule %s → %s", np, r.from, r.to)
						}
						p.addIssue(IssueReIP, v.Name, true, "NIC %s address %s %s, outside the DR subnet of network %s (%s)", label, pf, what, dn.Name, strings.Join(dn.Subnets, ", "))
						v.Blocked = true
						continue
					}
				}
				if other, dup := owner[np.Addr()]; dup {
					p.addIssue(IssueReIP, v.Name, true, "NIC %s address %s is also given to %s at the DR site", label, np.Addr(), other)
					v.Blocked = true
				}
				owner[np.Addr()] = v.Name
				pn.To = append(pn.To, np.String())
				newPrefixes = append(newPrefixes, np)
			}
			// Gateways not set by a rule move with their subnet.
			for _, gw := range []*string{&pn.Gateway4, &pn.Gateway6} {
				if *gw == "" {
					continue
				}
				a, err := netip.ParseAddr(*gw)
				if err != nil {
					continue
				}
				if !setByRule[gw] {
					if r := c.reIPRule(a); r != nil {
						if na, ok := r.translate(a); ok {
							a = na
							*gw = na.String()
						}
					}
				}
				inSome, hasFamily := false, false
				for _, np := range newPrefixes {
					if np.Addr().Is4() != a.Is4() {
						continue
					}
					hasFamily = true
					inSome = inSome || np.Masked().Contains(a)
					if np.Addr() == a {
						p.addIssue(IssueReIP, v.Name, true, "NIC %s gateway %s equals its own address", label, a)
						v.Blocked = true
					}
				}
				if hasFamily && !inSome {
					p.addIssue(IssueReIP, v.Name, false, "NIC %s gateway %s is outside its DR subnet; set drsite.reip[].gateway", label, a)
				}
			}
			if len(dns) == 0 {
				for _, d := range n.DNS {
					a, err := netip.ParseAddr(d)
					if err != nil {
						continue
					}
					if r := c.reIPRule(a); r != nil {
						if na, ok := r.translate(a); ok {
							a = na
						}
					}
					dns = append(dns, a.String())
				}
			}
			pn.DNS = dns
			// The libvirt definition records a NIC's addresses by its
			// MAC (DomainXML refuses them without one), and nothing in
			// the guest can tell which adapter they belong to.
			if n.MAC == "" && v.DRKind == KindLibvirt && (len(pn.To)+len(pn.DNS) > 0 || pn.Gateway4 != "" || pn.Gateway6 != "") {
				p.addIssue(IssueNetwork, v.Name, true, "NIC %s has static addresses, gateway or DNS servers but no MAC in the inventory, so the guest's adapter they belong to cannot be named on libvirt host %s; add the NIC's MAC to the inventory", label, v.DRHost)
				v.Blocked = true
			}
		}
	}
}

// libvirtDefinitions blocks each VM placed on a libvirt host whose
// definition DomainXML refuses (a disk format libvirt does not know, a
// drive address past its controller): bringup writes the definitions
// only after restoring the boot group's disks, and stops there.
func (p *Plan) libvirtDefinitions() {
	for _, v := range p.VMs {
		if v.Excluded || v.Blocked || v.DRKind != KindLibvirt {
			continue
		}
		dvm := p.DRVM(v, func(d Disk) (string, string) {
			format, _ := targetFormat(KindLibvirt, v.VM.DiskFormat(d))
			return d.File, format
		})
		if _, err := DomainXML(dvm, DomainOptions{Type: p.Config.DomainType}); err != nil {
			p.addIssue(IssueInventory, v.Name, true, "its definition for libvirt host %s cannot be written: %v; correct the inventory", v.DRHost, err)
			v.Blocked = true
		}
	}
}

// durations fills in per-group data sizes and expected durations.
func (p *Plan) durations() {
	for _, g := range p.Groups {
		for _, n := range g.VMs {
			v := p.VM(n)
			g.DataBytes += v.DataBytes
			g.RestoreTime += v.RestoreTime
		}
		g.Expected = g.RestoreTime + 30*time.Second + p.Config.ExpectedBoot.Duration
	}
}

// DRVM returns the VM as it is defined at the DR site: mapped networks
// and VLANs, re-IP'd addresses (in its tcp: checks too), and disk files
// as given by diskPath
// (inventory file → DR path and format). It returns nil for VMs that are
// not placed or blocked.
func (p *Plan) DRVM(pv *PlannedVM, diskPath func(d Disk) (string, string)) *VM {
	if pv.DRHost == "" || pv.Blocked {
		return nil
	}
	vm := *pv.VM
	vm.Disks = append([]Disk(nil), pv.VM.Disks...)
	// tcp: checks probe the VM where it answers after re-IP.
	vm.Verify = nil
	for _, chk := range pv.VM.Verify {
		vm.Verify = append(vm.Verify, drCheck(pv, chk))
	}
	sata := 0
	for i := range vm.Disks {
		if diskPath != nil {
			vm.Disks[i].File, vm.Disks[i].Format = diskPath(vm.Disks[i])
		}
		// Windows guests from Hyper-V have no virtio-scsi driver: their
		// SCSI disks become SATA (AHCI, in the box) on libvirt hosts.
		if pv.DRKind == KindLibvirt && pv.VM.Source == "hyperv" && vm.Disks[i].Controller == "scsi" {
			vm.Disks[i].Controller, vm.Disks[i].ControllerIndex, vm.Disks[i].Unit, vm.Disks[i].Target = "sata", sata/6, sata%6, ""
			sata++
		}
	}
	// Dynamic memory from Hyper-V (or described as such) has no
	// counterpart in libvirt, which grows no guest's memory: defined as
	// <memory>, its maximum (1 TiB by Hyper-V's default) is what qemu
	// must set up and what a guest without a balloon driver uses. On a
	// libvirt host the VM gets the startup memory it was placed with.
	if pv.DRKind == KindLibvirt && pv.VM.Source != "libvirt" && vm.Memory.Dynamic {
		vm.Memory = Memory{StartupBytes: vm.Memory.StartupBytes}
	}
	vm.NICs = nil
	for k, pn := range pv.NICs {
		n := pv.VM.NICs[k]
		n.Switch, n.Portgroup, n.VLAN = pn.Network, pn.Portgroup, pn.VLAN
		n.IPv4, n.IPv6 = nil, nil
		for _, s := range pn.To {
			if pf, err := netip.ParsePrefix(s); err == nil && pf.Addr().Is4() {
				n.IPv4 = append(n.IPv4, s)
			} else {
				n.IPv6 = append(n.IPv6, s)
			}
		}
		n.Gateway4, n.Gateway6, n.DNS = pn.Gateway4, pn.Gateway6, pn.DNS
		dn := p.Config.Network(pn.Network)
		n.Kind, n.VirtualPort = "network", ""
		if dn != nil && dn.OpenVSwitch && pv.DRKind == KindLibvirt {
			n.VirtualPort = "openvswitch"
		}
		if n.Model == "" || n.Model == "vmxnet3" || n.Model == "pcnet" {
			if pv.VM.Source == "hyperv" || pv.VM.Source == "ovf" {
				n.Model = "e1000e" // guests without virtio drivers
			} else if n.Model != "" {
				n.Model = "virtio"
			}
		}
		vm.NICs = append(vm.NICs, n)
	}
	if vm.Machine == "" && vm.Generation == 1 {
		vm.Machine = "pc"
	}
	return &vm
}
