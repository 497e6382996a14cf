package drsite

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Issue kinds: what the plan could not resolve.
const (
	IssueCapacity      = "capacity"         // a VM needs more than any DR host has
	IssueShortfall     = "shortfall"        // the DR site lacks capacity in total
	IssueFragmentation = "fragmentation"    // enough in total, no single host fits
	IssueAntiAffinity  = "anti-affinity"    // only hosts holding a group member would fit
	IssueCycle         = "dependency-cycle" // VMs depend on each other in a circle
	IssueDependency    = "dependency"       // a dependency is unknown, excluded or unplaced
	IssueUnmapped      = "unmapped-network" // a NIC's switch/VLAN has no network_map entry
	IssueNetwork       = "network"          // the mapped DR network cannot carry the NIC
	IssueReIP          = "reip"             // an address cannot be re-IP'd validly
	IssueDisk          = "disk"             // a disk is in no snapshot
	IssueInventory     = "inventory"        // unknown or missing inventory fields
)

// Issue is one unresolved item. Blocking issues stop the VM from being
// brought up; the others need attention but do not.
type Issue struct {
	Kind     string `json:"kind"`
	VM       string `json:"vm,omitempty"`
	Blocking bool   `json:"blocking"`
	Message  string `json:"message"`
}

// String renders "kind vm: message".
func (i Issue) String() string {
	s := i.Kind
	if i.VM != "" {
		s += " " + i.VM
	}
	return s + ": " + i.Message
}

// DiskData is what the repository holds of one disk image.
type DiskData struct {
	// File is the path in the inventory; Path is the snapshot path.
	File string `json:"file"`
	Path string `json:"path"`
	// Size is the image file's size; DataBytes the part that is stored
	// data (not holes or zeros) and must be restored.
	Size      int64 `json:"size"`
	DataBytes int64 `json:"data_bytes"`
}

// VMData is what the repository knows about one VM: the newest snapshot
// holding every one of its disks.
type VMData struct {
	Snapshot     string     `json:"snapshot,omitempty"`
	SnapshotTime time.Time  `json:"snapshot_time,omitzero"`
	Disks        []DiskData `json:"disks,omitempty"`
	// Missing lists inventory disk files no snapshot of the host holds.
	Missing []string `json:"missing,omitempty"`
}

// InventorySource is a snapshot the inventory was read from.
type InventorySource struct {
	Host     string    `json:"host"`
	Snapshot string    `json:"snapshot"`
	Time     time.Time `json:"time"`
	VMs      int       `json:"vms"`
}

// PlanInput is everything planning needs.
type PlanInput struct {
	Config    *Config
	Inventory *Inventory
	// Data holds the repository facts per VM name; nil plans without them
	// (no RPO, sizes from the inventory).
	Data map[string]*VMData
	// Now is the planning time (RPO reference).
	Now time.Time
	// RestoreRate is bytes per second for duration estimates (0: none).
	RestoreRate float64
	// RateSource says how RestoreRate was obtained.
	RateSource string
	Repo       string
	Sources    []InventorySource
	// Issues found while gathering the inventory.
	Issues []Issue
}

// Plan is the result of planning the DR bring-up.
type Plan struct {
	Generated   time.Time         `json:"generated"`
	Repo        string            `json:"repo,omitempty"`
	Sources     []InventorySource `json:"sources,omitempty"`
	RestoreRate float64           `json:"restore_rate_bytes_per_s,omitempty"`
	RateSource  string            `json:"restore_rate_source,omitempty"`
	VMs         []*PlannedVM      `json:"vms"`
	Hosts       []*HostUse        `json:"hosts"`
	Groups      []*BootGroup      `json:"boot_groups"`
	Networks    []*NetworkUse     `json:"networks"`
	Issues      []Issue           `json:"issues"`
	// Config is the configuration the plan was made with.
	Config *Config `json:"-"`

	byName map[string]*PlannedVM
}

// PlannedVM is one VM's place in the plan.
type PlannedVM struct {
	Name       string `json:"name"`
	SourceHost string `json:"source_host,omitempty"`
	// DRHost is where the VM runs at the DR site ("" when unplaced).
	DRHost       string `json:"dr_host,omitempty"`
	DRKind       string `json:"dr_kind,omitempty"`
	Excluded     bool   `json:"excluded,omitempty"`
	VCPUs        int    `json:"vcpus"`
	MemoryBytes  int64  `json:"memory_bytes"`
	StorageBytes int64  `json:"storage_bytes"`
	// DataBytes is what must be restored from the repository.
	DataBytes int64 `json:"data_bytes"`
	// Group is the 1-based boot group (0: none).
	Group        int           `json:"boot_group"`
	BootPriority int           `json:"boot_priority,omitempty"`
	DependsOn    []string      `json:"depends_on,omitempty"`
	AntiAffinity string        `json:"anti_affinity,omitempty"`
	NICs         []*PlannedNIC `json:"nics"`
	Data         *VMData       `json:"data,omitempty"`
	// RPO is the age of the newest snapshot holding all of the VM's
	// disks at planning time.
	RPO time.Duration `json:"rpo_ns,omitempty"`
	// RestoreTime is the expected restore duration at the plan's rate.
	RestoreTime time.Duration `json:"restore_ns,omitempty"`
	// Blocked is set when a blocking issue stops the bring-up.
	Blocked bool `json:"blocked"`
	// VM is the inventory record (source view).
	VM *VM `json:"-"`
}

// PlannedNIC is one NIC mapped onto the DR site.
type PlannedNIC struct {
	MAC          string   `json:"mac,omitempty"`
	Name         string   `json:"name,omitempty"`
	SourceSwitch string   `json:"source_switch"`
	SourceVLAN   *VLAN    `json:"source_vlan,omitempty"`
	Network      string   `json:"dr_network,omitempty"`
	Portgroup    string   `json:"dr_portgroup,omitempty"`
	VLAN         *VLAN    `json:"dr_vlan,omitempty"`
	Mapped       bool     `json:"mapped"`
	DHCP         bool     `json:"dhcp,omitempty"`
	From         []string `json:"addresses_from,omitempty"`
	To           []string `json:"addresses_to,omitempty"`
	Gateway4     string   `json:"gateway4,omitempty"`
	Gateway6     string   `json:"gateway6,omitempty"`
	DNS          []string `json:"dns,omitempty"`
}

// HostUse is a DR host's load in the plan.
type HostUse struct {
	Name         string   `json:"name"`
	Kind         string   `json:"kind"`
	VCPUs        int      `json:"vcpus"`
	MemoryBytes  int64    `json:"memory_bytes"`
	StorageBytes int64    `json:"storage_bytes"`
	UsedVCPUs    int      `json:"used_vcpus"`
	UsedMemory   int64    `json:"used_memory_bytes"`
	UsedStorage  int64    `json:"used_storage_bytes"`
	VMs          []string `json:"vms"`
	Networks     []string `json:"networks"`
}

// BootGroup is a set of VMs started together once every earlier group
// passed its checks.
type BootGroup struct {
	Number int      `json:"number"`
	VMs    []string `json:"vms"`
	// DataBytes and RestoreTime cover the group's disks.
	DataBytes   int64         `json:"data_bytes"`
	RestoreTime time.Duration `json:"restore_ns"`
	// Expected is restore plus define plus the configured boot estimate.
	Expected time.Duration `json:"expected_ns"`
}

// NetworkUse is a DR network in use on a DR host.
type NetworkUse struct {
	Host    string   `json:"host"`
	Network string   `json:"network"`
	Type    string   `json:"type"`
	VLANs   []int    `json:"vlans,omitempty"`
	VMs     []string `json:"vms"`
}

func (p *Plan) addIssue(kind, vm string, blocking bool, format string, args ...any) {
	p.Issues = append(p.Issues, Issue{Kind: kind, VM: vm, Blocking: blocking, Message: fmt.Sprintf(format, args...)})
}

// VM returns the planned VM called name, or nil.
func (p *Plan) VM(name string) *PlannedVM {
	if p.byName != nil {
		return p.byName[name]
	}
	for _, v := range p.VMs {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// BlockingIssues returns the issues that stop a VM's bring-up.
func (p *Plan) BlockingIssues() []Issue {
	var out []Issue
	for _, i := range p.Issues {
		if i.Blocking {
			out = append(out, i)
		}
	}
	return out
}

// storageNeed is what a VM's disks may grow to on the DR host: per disk
// the larger of the virtual size and the image file size.
func storageNeed(vm *VM, d *VMData) int64 {
	var n int64
	for _, dk := range vm.Disks {
		size := dk.VirtualSize
		if d != nil {
			for _, dd := range d.Disks {
				if dd.File == dk.File && dd.Size > size {
					size = dd.Size
				}
			}
		}
		n = addSat(n, size)
	}
	return n
}

// addSat adds non-negative sizes, stopping at math.MaxInt64 instead of
// wrapping around to a negative need that fits any host.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// MakePlan places the inventory's VMs on the DR hosts, derives boot
// groups, maps networks and re-addresses NICs. It never fails: what
// cannot be resolved is in Plan.Issues, blocking issues mark the VM
// Blocked.
func MakePlan(in PlanInput) *Plan {
	c := in.Config
	p := &Plan{Generated: in.Now, Repo: in.Repo, Sources: in.Sources, RestoreRate: in.RestoreRate, RateSource: in.RateSource, Config: c}
	p.Issues = append(p.Issues, in.Issues...)
	inv := in.Inventory
	if inv == nil {
		inv = &Inventory{}
	}
	for _, w := range inv.Warnings {
		p.addIssue(IssueInventory, "", false, "%s", w.String())
	}
	excluded := map[string]bool{}
	for _, e := range c.Exclude {
		excluded[e] = true
		if inv.VM(e) == nil {
			p.addIssue(IssueInventory, e, false, "drsite.exclude names %q, which is in no inventory", e)
		}
	}
	for i := range inv.VMs {
		vm := &inv.VMs[i]
		pv := &PlannedVM{Name: vm.Name, SourceHost: vm.Host, VCPUs: vm.VCPUs, MemoryBytes: vm.Memory.StartupBytes,
			BootPriority: vm.BootPriority, DependsOn: vm.DependsOn, AntiAffinity: vm.AntiAffinity, VM: vm, Excluded: excluded[vm.Name]}
		if in.Data != nil {
			pv.Data = in.Data[vm.Name]
		}
		pv.StorageBytes = storageNeed(vm, pv.Data)
		if pv.Data != nil {
			for _, d := range pv.Data.Disks {
				pv.DataBytes += d.DataBytes
			}
			if !pv.Data.SnapshotTime.IsZero() {
				pv.RPO = in.Now.Sub(pv.Data.SnapshotTime)
			}
		}
		if in.RestoreRate > 0 {
			pv.RestoreTime = time.Duration(float64(pv.DataBytes) / in.RestoreRate * float64(time.Second))
		}
		p.VMs = append(p.VMs, pv)
		if pv.Excluded {
			continue
		}
		if vm.VCPUs <= 0 {
			p.addIssue(IssueInventory, vm.Name, true, "vCPU count unknown; set it in the inventory")
			pv.Blocked = true
		}
		if vm.Memory.StartupBytes <= 0 {
			p.addIssue(IssueInventory, vm.Name, true, "memory size unknown; set it in the inventory")
			pv.Blocked = true
		}
		if len(vm.Disks) == 0 {
			p.addIssue(IssueDisk, vm.Name, true, "no disk image in the inventory; nothing to restore")
			pv.Blocked = true
		}
		if in.Data != nil {
			switch {
			case pv.Data == nil:
				p.addIssue(IssueDisk, vm.Name, true, "no snapshot of host %s holds its disks", vm.Host)
				pv.Blocked = true
			case len(pv.Data.Missing) > 0:
				p.addIssue(IssueDisk, vm.Name, true, "disk %s is in no snapshot of host %s; back it up (drpipe backup --host %s PATH)",
					strings.Join(pv.Data.Missing, ", "), vm.Host, vm.Host)
				pv.Blocked = true
			}
		}
		if pv.StorageBytes == 0 && len(vm.Disks) > 0 {
			p.addIssue(IssueInventory, vm.Name, false, "disk sizes unknown; storage planning counts it as 0")
		}
	}
	p.byName = map[string]*PlannedVM{}
	for _, v := range p.VMs {
		p.byName[v.Name] = v
	}
	for _, h := range c.Hosts {
		p.Hosts = append(p.Hosts, &HostUse{Name: h.Name, Kind: h.Kind, VCPUs: h.VCPUs, MemoryBytes: h.MemoryBytes, StorageBytes: h.StorageBytes, VMs: []string{}, Networks: []string{}})
	}
	p.place()
	p.mapNetworks(in)
	p.reIP()
	p.libvirtDefinitions()
	// Boot groups last: a VM its network or addresses block is in none,
	// and the VMs depending on it are told.
	p.bootGroups(in)
	p.durations()
	for _, v := range p.VMs {
		sort.Strings(v.DependsOn)
	}
	sort.SliceStable(p.Issues, func(i, j int) bool {
		if p.Issues[i].Blocking != p.Issues[j].Blocking {
			return p.Issues[i].Blocking
		}
		return false
	})
	return p
}

func prioKey(pr int) int {
	if pr <= 0 {
		return math.MaxInt32
	}
	return pr
}

// place runs priority-ordered first-fit-decreasing with anti-affinity.
func (p *Plan) place() {
	var order []*PlannedVM
	for _, v := range p.VMs {
		if !v.Excluded && !v.Blocked {
			order = append(order, v)
		}
	}
	sort.SliceStable(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if prioKey(a.BootPriority) != prioKey(b.BootPriority) {
			return prioKey(a.BootPriority) < prioKey(b.BootPriority)
		}
		if a.MemoryBytes != b.MemoryBytes {
			return a.MemoryBytes > b.MemoryBytes
		}
		if a.VCPUs != b.VCPUs {
			return a.VCPUs > b.VCPUs
		}
		if a.StorageBytes != b.StorageBytes {
			return a.StorageBytes > b.StorageBytes
		}
		return a.Name < b.Name
	})
	group := map[string]map[string][]string{} // anti-affinity group -> host -> VMs
	fits := func(h *HostUse, v *PlannedVM) bool {
		return h.VCPUs-h.UsedVCPUs >= v.VCPUs && h.MemoryBytes-h.UsedMemory >= v.MemoryBytes && h.StorageBytes-h.UsedStorage >= v.StorageBytes
	}
	for _, v := range order {
		var chosen *HostUse
		var blockedBy []string
		// A name Windows refuses cannot name the VM's folder under a
		// Hyper-V host's image root (':' would name an NTFS stream, the
		// others are refused or renamed): only libvirt hosts take it.
		winWhy := windowsNameProblem(v.Name)
		var winHost string
		for _, h := range p.Hosts {
			if !fits(h, v) {
				continue
			}
			if v.AntiAffinity != "" && len(group[v.AntiAffinity][h.Name]) > 0 {
				blockedBy = append(blockedBy, fmt.Sprintf("%s (runs %s)", h.Name, strings.Join(group[v.AntiAffinity][h.Name], ", ")))
				continue
			}
			if winWhy != "" && h.Kind == KindHyperV {
				if winHost == "" {
					winHost = h.Name
				}
				continue
			}
			chosen = h
			break
		}
		if chosen == nil && winHost != "" {
			v.Blocked = true
			p.addIssue(IssueInventory, v.Name, true, "VM name %q %s, which Windows does not allow in the names of the VM's folder and files on Hyper-V host %s, and no libvirt DR host has room for it: rename the VM, or make room on a libvirt DR host", v.Name, winWhy, winHost)
			continue
		}
		if chosen != nil {
			chosen.UsedVCPUs += v.VCPUs
			chosen.UsedMemory += v.MemoryBytes
			chosen.UsedStorage += v.StorageBytes
			chosen.VMs = append(chosen.VMs, v.Name)
			v.DRHost, v.DRKind = chosen.Name, chosen.Kind
			if v.AntiAffinity != "" {
				if group[v.AntiAffinity] == nil {
					group[v.AntiAffinity] = map[string][]string{}
				}
				group[v.AntiAffinity][chosen.Name] = append(group[v.AntiAffinity][chosen.Name], v.Name)
			}
			continue
		}
		v.Blocked = true
		p.Issues = append(p.Issues, p.whyUnplaced(v, blockedBy))
	}
	// Site-wide shortfall.
	var needC int
	var needM, needS int64
	var capC int
	var capM, capS int64
	for _, v := range p.VMs {
		if !v.Excluded {
			needC += v.VCPUs
			needM = addSat(needM, v.MemoryBytes)
			needS = addSat(needS, v.StorageBytes)
		}
	}
	for _, h := range p.Hosts {
		capC += h.VCPUs
		capM += h.MemoryBytes
		capS += h.StorageBytes
	}
	var short []string
	if needM > capM {
		short = append(short, fmt.Sprintf("memory %s needed, %s available", HumanBytes(needM), HumanBytes(capM)))
	}
	if needC > capC {
		short = append(short, fmt.Sprintf("%d vCPUs needed, %d available", needC, capC))
	}
	if needS > capS {
		short = append(short, fmt.Sprintf("storage %s needed, %s available", HumanBytes(needS), HumanBytes(capS)))
	}
	if len(short) > 0 {
		p.addIssue(IssueShortfall, "", false, "the DR site is too small for all VMs: %s", strings.Join(short, "; "))
	}
}

// whyUnplaced explains why no host took v: more than any host has
// (capacity), only hosts of its anti-affinity group would fit, enough in
// total but split across hosts (fragmentation), or the site is full.
func (p *Plan) whyUnplaced(v *PlannedVM, blockedBy []string) Issue {
	need := fmt.Sprintf("%d vCPUs, %s memory, %s storage", v.VCPUs, HumanBytes(v.MemoryBytes), HumanBytes(v.StorageBytes))
	var big []string
	var maxC int
	var maxM, maxS int64
	var maxCH, maxMH, maxSH string
	var freeC int
	var freeM, freeS int64
	var bestFreeM int64
	var bestFreeMH string
	for _, h := range p.Hosts {
		if h.VCPUs > maxC {
			maxC, maxCH = h.VCPUs, h.Name
		}
		if h.MemoryBytes > maxM {
			maxM, maxMH = h.MemoryBytes, h.Name
		}
		if h.StorageBytes > maxS {
			maxS, maxSH = h.StorageBytes, h.Name
		}
		freeC += h.VCPUs - h.UsedVCPUs
		freeM += h.MemoryBytes - h.UsedMemory
		freeS += h.StorageBytes - h.UsedStorage
		if fm := h.MemoryBytes - h.UsedMemory; fm > bestFreeM || bestFreeMH == "" {
			bestFreeM, bestFreeMH = fm, h.Name
		}
	}
	if v.VCPUs > maxC {
		big = append(big, fmt.Sprintf("%d vCPUs (largest host %s has %d)", v.VCPUs, maxCH, maxC))
	}
	if v.MemoryBytes > maxM {
		big = append(big, fmt.Sprintf("%s memory (largest host %s has %s)", HumanBytes(v.MemoryBytes), maxMH, HumanBytes(maxM)))
	}
	if v.StorageBytes > maxS {
		big = append(big, fmt.Sprintf("%s storage (largest host %s has %s)", HumanBytes(v.StorageBytes), maxSH, HumanBytes(maxS)))
	}
	if len(big) > 0 {
		return Issue{Kind: IssueCapacity, VM: v.Name, Blocking: true,
			Message: "cannot be placed: it needs " + strings.Join(big, " and ") + "; add a larger DR host or shrink the VM"}
	}
	if len(blockedBy) > 0 {
		return Issue{Kind: IssueAntiAffinity, VM: v.Name, Blocking: true,
			Message: fmt.Sprintf("cannot be placed: anti-affinity group %q keeps it off %s, and no other host has room for %s", v.AntiAffinity, strings.Join(blockedBy, ", "), need)}
	}
	if freeC >= v.VCPUs && freeM >= v.MemoryBytes && freeS >= v.StorageBytes {
		return Issue{Kind: IssueFragmentation, VM: v.Name, Blocking: true,
			Message: fmt.Sprintf("cannot be placed: the DR site has %d vCPUs, %s memory, %s storage free in total, but no single host has room for %s (most free memory: %s on %s)",
				freeC, HumanBytes(freeM), HumanBytes(freeS), need, HumanBytes(bestFreeM), bestFreeMH)}
	}
	var lack []string
	if freeC < v.VCPUs {
		lack = append(lack, fmt.Sprintf("%d vCPUs free of %d needed", freeC, v.VCPUs))
	}
	if freeM < v.MemoryBytes {
		lack = append(lack, fmt.Sprintf("%s memory free of %s needed", HumanBytes(freeM), HumanBytes(v.MemoryBytes)))
	}
	if freeS < v.StorageBytes {
		lack = append(lack, fmt.Sprintf("%s storage free of %s needed", HumanBytes(freeS), HumanBytes(v.StorageBytes)))
	}
	return Issue{Kind: IssueShortfall, VM: v.Name, Blocking: true,
		Message: "cannot be placed: the DR site is full after higher-priority VMs: " + strings.Join(lack, ", ")}
}

// windowsNameProblem says why name cannot name a folder or file on
// Windows, or returns "". Separators and control characters are refused
// at import (fileNameOK).
func windowsNameProblem(name string) string {
	if i := strings.IndexAny(name, `<>:"|?*`); i >= 0 {
		return fmt.Sprintf("holds %q", name[i:i+1])
	}
	if strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") {
		// Windows drops them: "web." would be the folder of "web".
		return "ends in a dot or a space"
	}
	base, _, _ := strings.Cut(name, ".")
	switch b := strings.ToUpper(strings.TrimRight(base, " ")); {
	case b == "CON" || b == "PRN" || b == "AUX" || b == "NUL",
		len(b) == 4 && (strings.HasPrefix(b, "COM") || strings.HasPrefix(b, "LPT")) && b[3] >= '0' && b[3] <= '9':
		return "is a device name (" + b + ")"
	}
	return ""
}
