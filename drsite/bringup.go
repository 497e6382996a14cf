package drsite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/drpipe/drpipe/internal/atomicfile"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/vmdisk"
)

// BringupOptions configure Bringup.
type BringupOptions struct {
	// Out is the output directory: per DR host a directory with domain
	// and network XML (libvirt) or bringup.ps1 (Hyper-V), and images/.
	Out string
	// Hosts restricts the bring-up to these DR hosts (empty: all).
	Hosts []string
	// NoRestore writes definitions without restoring disks.
	NoRestore bool
	// Groups restricts restoring disks and, with Execute, defining and
	// starting VMs to these boot groups (empty: all). Definitions and
	// scripts are written for every group, as with NoRestore for the
	// others: a runbook followed by hand brings the groups up one at a
	// time.
	Groups []int
	// Execute defines and starts libvirt VMs through virsh in boot-group
	// order, waiting for each group's checks.
	Execute bool
	// StartVirsh opens a virsh session (default StartVirsh).
	StartVirsh func(ctx context.Context, uri string) (*Virsh, error)
	// Progress receives one line per step (may be nil).
	Progress func(string)
	// Now is the generation time (default time.Now).
	Now time.Time
	// RestoreWorkers is passed to pipeline.Restore.
	RestoreWorkers int
	// RestoreProgress receives the restores' byte counters (may be nil).
	RestoreProgress pipeline.Progress
	// CheckInterval is the polling interval of checks (default 2s).
	CheckInterval time.Duration
}

// RestoredDisk is one disk image placed for the DR site.
type RestoredDisk struct {
	VM   string `json:"vm"`
	File string `json:"file"`
	// Path is where the image now is; Format its format.
	Path      string `json:"path"`
	Format    string `json:"format"`
	Bytes     int64  `json:"bytes"`
	Converted bool   `json:"converted,omitempty"`
	// Kept is set when the image existed from an earlier run that
	// restored it from the same snapshot and path (see imageSource).
	Kept bool `json:"kept,omitempty"`
}

// HostOutput is what Bringup wrote for one DR host.
type HostOutput struct {
	Name     string            `json:"name"`
	Kind     string            `json:"kind"`
	Dir      string            `json:"dir"`
	Script   string            `json:"script"`
	Domains  map[string]string `json:"domains,omitempty"`
	Networks map[string]string `json:"networks,omitempty"`
}

// CheckResult is one verification after a boot group started.
type CheckResult struct {
	VM     string `json:"vm"`
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// BringupResult describes a bring-up.
type BringupResult struct {
	Hosts    []*HostOutput  `json:"hosts"`
	Restored []RestoredDisk `json:"restored"`
	Defined  []string       `json:"defined"`
	Started  []string       `json:"started"`
	Checks   []CheckResult  `json:"checks"`
	// Skipped lists VMs not brought up with the blocking reasons.
	Skipped []Issue `json:"skipped"`
}

// ErrBringupIncomplete is wrapped when some VMs were skipped because of
// blocking plan issues; the others were brought up.
var ErrBringupIncomplete = errors.New("bring-up incomplete")

// ErrNotInPlan is wrapped when BringupOptions name a DR host or boot group
// the configuration or plan does not have (a usage error: nothing is done).
var ErrNotInPlan = errors.New("not in the plan")

// diskTarget is where a VM disk goes and in which format.
type diskTarget struct {
	final  string // absolute path on this machine
	ref    string // path written into the definition
	format string
	conv   bool
	kind   string // DR host kind
	detect bool   // the inventory has no format: read it from the image
}

// retarget recomputes the target for a source format learnt from the
// restored image.
func (t diskTarget) retarget(from string) diskTarget {
	format, conv := targetFormat(t.kind, from)
	if conv == t.conv && format == t.format {
		return t
	}
	ext := filepath.Ext(t.final)
	stem := strings.TrimSuffix(filepath.Base(t.final), ext)
	if conv || t.kind == KindHyperV {
		ext = "." + format // Hyper-V tells VHD from VHDX by the name
	}
	t.final = filepath.Join(filepath.Dir(t.final), stem+ext)
	if t.kind == KindHyperV {
		// VM\NAME: the folder before the last backslash stays.
		t.ref = t.ref[:strings.LastIndex(t.ref, `\`)+1] + stem + ext
	} else {
		t.ref = t.final
	}
	t.format, t.conv = format, conv
	return t
}

// detectImageFormat reads an image's header (and VHD footer): qcow2,
// vhdx, vhd, vmdk, or raw. Bringup restores disks flattened, so a restored
// qcow2, VHD or VHDX that names a backing file, or a VMDK that names a
// parent or extent files, was a plain file in the snapshot: a raw disk
// whose guest wrote that header. It is raw (as libvirt takes a disk
// without a format): declared as an image, the DR hypervisor would open
// whatever DR host file the header names. An image vmdisk cannot read (a
// VHDX whose log is not empty, an encrypted qcow2, any VMDK) keeps its
// header's format unless its header names a backing file: qemu-img and
// Hyper-V read what vmdisk does not.
func detectImageFormat(path string) string {
	format := detectHeader(path)
	switch format {
	case "qcow2", "vhdx", "vhd":
		f, err := os.Open(path)
		if err != nil {
			return "raw"
		}
		defer f.Close()
		l, err := vmdisk.OpenLayer(f, path, vmdisk.Format(format), vmdisk.Limits{})
		if err != nil {
			if headerNamesBacking(f, format) {
				return "raw"
			}
			return format
		}
		defer l.Close()
		if l.Info.Backing != "" {
			return "raw"
		}
	case "vmdk":
		// vmdisk does not read VMDK: its header and descriptor say
		// whether it names other files.
		f, err := os.Open(path)
		if err != nil {
			return "raw"
		}
		defer f.Close()
		if vmdkNamesOtherFiles(f) {
			return "raw"
		}
	}
	return format
}

// vmdkDescriptorMax bounds the bytes of a VMDK descriptor searched for a
// parent: qemu reads 10 KiB of it, libvirt up to 32 KiB.
const vmdkDescriptorMax = 64 << 10

// vmdkNamesOtherFiles reports whether a VMDK sparse extent ("KDMV")
// makes a hypervisor open other files: a descriptor naming a parent
// (parentFileNameHint, which qemu and libvirt read at offset 512 and
// where the header puts the descriptor), or a capacity of 0, with which
// qemu opens the extent files its descriptor names. A header or
// descriptor that cannot be read counts as naming them.
func vmdkNamesOtherFiles(f *os.File) bool {
	var h [44]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return true
	}
	if binary.LittleEndian.Uint64(h[12:]) == 0 {
		return true
	}
	st, err := f.Stat()
	if err != nil {
		return true
	}
	size := st.Size()
	descOff, descLen := binary.LittleEndian.Uint64(h[28:]), binary.LittleEndian.Uint64(h[36:])
	regions := [][2]int64{{512, vmdkDescriptorMax}}
	if descOff > 0 && descOff < uint64(size)/512 {
		regions = append(regions, [2]int64{int64(descOff) * 512, int64(min(descLen, vmdkDescriptorMax/512)) * 512})
	}
	for _, r := range regions {
		if r[0] >= size {
			continue
		}
		b := make([]byte, min(r[1], size-r[0]))
		if _, err := f.ReadAt(b, r[0]); err != nil && !errors.Is(err, io.EOF) {
			return true
		}
		if bytes.Contains(b, []byte("parentFileNameHint")) {
			return true
		}
	}
	return false
}

// qedNamesBacking reports whether the file at path is not a QED image
// (whose format detectHeader does not know) or is one whose header's
// features name a backing file (QED_F_BACKING_FILE), which qemu opens.
func qedNamesBacking(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	var h [24]byte
	if _, err := f.ReadAt(h[:], 0); err != nil || string(h[:4]) != "QED\x00" {
		return true
	}
	return binary.LittleEndian.Uint64(h[16:])&1 != 0
}

// headerNamesBacking reads, from the fixed fields alone, whether a qcow2
// header has a backing file offset or a VHD footer says differencing.
func headerNamesBacking(f *os.File, format string) bool {
	b := make([]byte, 512)
	switch format {
	case "qcow2":
		if _, err := f.ReadAt(b[:20], 0); err != nil {
			return true
		}
		return binary.BigEndian.Uint64(b[8:]) != 0 || binary.BigEndian.Uint32(b[16:]) != 0
	case "vhd":
		st, err := f.Stat()
		if err != nil {
			return true
		}
		for _, off := range []int64{st.Size() - 512, 0} {
			if _, err := f.ReadAt(b, off); err == nil && string(b[:8]) == "conectix" {
				return binary.BigEndian.Uint32(b[60:]) == 4 // differencing
			}
		}
		return true
	}
	return false
}

// detectHeader is detectImageFormat by magic numbers alone.
func detectHeader(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "raw"
	}
	defer f.Close()
	head := make([]byte, 8)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	switch {
	case len(head) >= 4 && string(head[:4]) == "QFI\xfb":
		return "qcow2"
	case len(head) >= 8 && string(head) == "vhdxfile":
		return "vhdx"
	case len(head) >= 4 && string(head[:4]) == "KDMV":
		return "vmdk"
	case len(head) >= 8 && string(head) == "conectix":
		return "vhd"
	}
	if st, err := f.Stat(); err == nil && st.Size() >= 512 {
		foot := make([]byte, 8)
		if _, err := f.ReadAt(foot, st.Size()-512); err == nil && string(foot) == "conectix" {
			return "vhd"
		}
	}
	return "raw"
}

// targetFormat decides the DR format: libvirt cannot attach VHDX (→
// qcow2); Hyper-V needs VHD or VHDX (→ vhdx).
func targetFormat(kind, format string) (string, bool) {
	f := strings.ToLower(format)
	switch kind {
	case KindLibvirt:
		if f == "vhdx" {
			return "qcow2", true
		}
		if f == "" {
			return "raw", false
		}
		return f, false
	case KindHyperV:
		switch f {
		case "vhd", "vhdx", "iso":
			return f, false
		}
		return "vhdx", true
	}
	return f, false
}

// Bringup restores the disks of every placed, unblocked VM (by boot
// group), writes the hypervisor definitions per DR host and, with
// Execute, defines and starts the libvirt VMs group by group, waiting for
// each group's checks (domain running, then tcp: checks) before the next.
// Groups restricts the restores and the starts to some boot groups.
// VMs with blocking issues are skipped and listed; the error then wraps
// ErrBringupIncomplete. A failed check stops the bring-up with an error.
func Bringup(ctx context.Context, r *repo.Repository, p *Plan, o BringupOptions) (*BringupResult, error) {
	if o.Out == "" {
		return nil, errors.New("bring-up needs an output directory")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	abs, err := filepath.Abs(o.Out)
	if err != nil {
		return nil, fmt.Errorf("output directory %s: %w", o.Out, err)
	}
	o.Out = abs
	if o.StartVirsh == nil {
		o.StartVirsh = StartVirsh
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = 2 * time.Second
	}
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			o.Progress(fmt.Sprintf(format, args...))
		}
	}
	c := p.Config
	want := map[string]bool{}
	for _, h := range o.Hosts {
		if c.Host(h) == nil {
			return nil, fmt.Errorf("--dr-host %s is not in drsite.hosts: %w", h, ErrNotInPlan)
		}
		want[h] = true
	}
	selected := func(h string) bool { return len(want) == 0 || want[h] }
	groups := map[int]bool{}
	for _, n := range o.Groups {
		if !slices.ContainsFunc(p.Groups, func(g *BootGroup) bool { return g.Number == n }) {
			return nil, fmt.Errorf("--group %d: the plan has no boot group %d (it has %d; see drpipe drsite plan): %w", n, n, len(p.Groups), ErrNotInPlan)
		}
		groups[n] = true
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.Out, err)
	}
	res := &BringupResult{}
	for _, v := range p.VMs {
		if v.Excluded || (v.DRHost != "" && !selected(v.DRHost)) {
			continue
		}
		if v.Blocked || v.DRHost == "" {
			var why []string
			for _, i := range p.Issues {
				if i.Blocking && (i.VM == v.Name || containsStr(strings.Split(i.VM, ","), v.Name)) {
					why = append(why, i.Kind+": "+i.Message)
				}
			}
			res.Skipped = append(res.Skipped, Issue{Kind: "skipped", VM: v.Name, Blocking: true, Message: strings.Join(why, "; ")})
		}
	}
	outs := map[string]*HostOutput{}
	hostOut := func(name string) (*HostOutput, error) {
		if ho := outs[name]; ho != nil {
			return ho, nil
		}
		h := c.Host(name)
		dir := filepath.Join(o.Out, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
		ho := &HostOutput{Name: name, Kind: h.Kind, Dir: dir, Domains: map[string]string{}, Networks: map[string]string{}}
		outs[name] = ho
		res.Hosts = append(res.Hosts, ho)
		return ho, nil
	}
	// Networks per host.
	netsOn := map[string][]*DRNetwork{}
	for _, u := range p.Networks {
		if !selected(u.Host) {
			continue
		}
		if dn := c.Network(u.Network); dn != nil {
			netsOn[u.Host] = append(netsOn[u.Host], dn)
		}
	}
	for _, h := range c.Hosts {
		if !selected(h.Name) || len(p.hostVMs(h.Name)) == 0 {
			continue
		}
		ho, err := hostOut(h.Name)
		if err != nil {
			return nil, err
		}
		if h.Kind != KindLibvirt {
			continue
		}
		if err := os.MkdirAll(filepath.Join(ho.Dir, "networks"), 0o755); err != nil {
			return nil, err
		}
		for _, dn := range netsOn[h.Name] {
			x, err := NetworkXML(DRSwitch(dn))
			if err != nil {
				return nil, fmt.Errorf("network %s for %s: %w", dn.Name, h.Name, err)
			}
			f := filepath.Join(ho.Dir, "networks", dn.Name+".xml")
			if err := atomicfile.WriteFile(f, x, 0o644); err != nil {
				return nil, err
			}
			ho.Networks[dn.Name] = f
		}
	}
	sessions := map[string]*Virsh{}
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	// Before any group is defined or started: an image already where a
	// disk goes must be the one the plan restores, in every group this
	// run restores, or none comes up on another snapshot's data beside
	// the others.
	if !o.NoRestore {
		for _, g := range p.Groups {
			if len(groups) > 0 && !groups[g.Number] {
				continue
			}
			for _, n := range g.VMs {
				v := p.VM(n)
				if v == nil || !selected(v.DRHost) || v.Blocked || v.DRHost == "" || v.Data == nil {
					continue
				}
				ho, err := hostOut(v.DRHost)
				if err != nil {
					return res, err
				}
				targets := vmDiskTargets(v, c.Host(v.DRHost), ho)
				for _, d := range v.Data.Disks {
					if pt, _, ok := placedImage(targets[d.File]); ok {
						if err := sameImageSource(pt.final, v, d); err != nil {
							return res, err
						}
					}
				}
			}
		}
	}
	netsUp := map[string]bool{}
	psGroups := map[string][]GroupVMs{}
	for _, g := range p.Groups {
		var groupVMs []*PlannedVM
		for _, n := range g.VMs {
			if v := p.VM(n); v != nil && selected(v.DRHost) && !v.Blocked && v.DRHost != "" {
				groupVMs = append(groupVMs, v)
			}
		}
		if len(groupVMs) == 0 {
			continue
		}
		inGroups := len(groups) == 0 || groups[g.Number]
		if inGroups {
			progress("boot group %d: %s", g.Number, strings.Join(g.VMs, ", "))
		} else {
			progress("boot group %d: %s (definitions only: not in --group)", g.Number, strings.Join(g.VMs, ", "))
		}
		targets := map[string]map[string]diskTarget{} // vm -> inventory file -> target
		for _, v := range groupVMs {
			ho, err := hostOut(v.DRHost)
			if err != nil {
				return res, err
			}
			targets[v.Name] = vmDiskTargets(v, c.Host(v.DRHost), ho)
		}
		if !o.NoRestore && inGroups {
			if err := restoreGroup(ctx, r, groupVMs, targets, o, res, progress); err != nil {
				return res, err
			}
		} else {
			// Not restored in this run: a disk an earlier run placed
			// is defined as its image's header gives (placedImage).
			for _, v := range groupVMs {
				for f, t := range targets[v.Name] {
					if pt, _, ok := placedImage(t); ok {
						targets[v.Name][f] = pt
					}
				}
			}
		}
		var toStart []*PlannedVM
		for _, v := range groupVMs {
			ho := outs[v.DRHost]
			h := c.Host(v.DRHost)
			dvm := p.DRVM(v, func(d Disk) (string, string) {
				t := targets[v.Name][d.File]
				return t.ref, t.format
			})
			if h.Kind == KindHyperV {
				psGroups[h.Name] = append(psGroups[h.Name], GroupVMs{Number: g.Number, VMs: []*VM{dvm}})
				continue
			}
			if !uuidRE.MatchString(dvm.ID) {
				// Without a UUID libvirt makes up a new one on every
				// define, and defining the VM again (a second run)
				// fails: "domain already exists with uuid".
				dvm.ID = stableUUID(dvm.Name)
			}
			x, err := DomainXML(dvm, DomainOptions{Type: c.DomainType, Graphics: c.DomainType != "test"})
			if err != nil {
				return res, fmt.Errorf("domain XML for %s: %w", v.Name, err)
			}
			if err := os.MkdirAll(filepath.Join(ho.Dir, "domains"), 0o755); err != nil {
				return res, err
			}
			f := filepath.Join(ho.Dir, "domains", v.Name+".xml")
			if err := atomicfile.WriteFile(f, x, 0o644); err != nil {
				return res, err
			}
			ho.Domains[v.Name] = f
			progress("  wrote %s", f)
			toStart = append(toStart, v)
		}
		if !o.Execute || !inGroups || len(toStart) == 0 {
			continue
		}
		for _, v := range toStart {
			h := c.Host(v.DRHost)
			uri := c.URIFor(h)
			s := sessions[uri]
			if s == nil {
				var err error
				if s, err = o.StartVirsh(ctx, uri); err != nil {
					return res, err
				}
				sessions[uri] = s
			}
			for _, pn := range v.NICs {
				key := uri + "\x00" + pn.Network
				if pn.Network == "" || netsUp[key] {
					continue
				}
				if err := ensureNetwork(ctx, s, pn.Network, outs[v.DRHost].Networks[pn.Network]); err != nil {
					return res, err
				}
				progress("  network %s active on %s", pn.Network, v.DRHost)
				netsUp[key] = true
			}
			if _, err := s.Run(ctx, "define", outs[v.DRHost].Domains[v.Name]); err != nil {
				return res, fmt.Errorf("define %s on %s: %w", v.Name, v.DRHost, err)
			}
			res.Defined = append(res.Defined, v.Name)
			if st, err := s.Run(ctx, "domstate", v.Name); err == nil && strings.TrimSpace(st) == "running" {
				progress("  %s on %s is running from an earlier run; left running", v.Name, v.DRHost)
				continue
			}
			if _, err := s.Run(ctx, "start", v.Name); err != nil {
				return res, fmt.Errorf("start %s on %s: %w", v.Name, v.DRHost, err)
			}
			res.Started = append(res.Started, v.Name)
			progress("  started %s on %s", v.Name, v.DRHost)
		}
		if err := waitChecks(ctx, p, toStart, sessions, o, res, progress); err != nil {
			return res, fmt.Errorf("boot group %d: %w", g.Number, err)
		}
	}
	// Per-host scripts.
	for _, ho := range res.Hosts {
		h := c.Host(ho.Name)
		var script []byte
		switch h.Kind {
		case KindHyperV:
			ho.Script = filepath.Join(ho.Dir, "bringup.ps1")
			script = HyperVScript(h, netsOn[h.Name], mergeGroups(psGroups[h.Name]), p.Config.BootTimeout.Duration, o.Now)
		default:
			ho.Script = filepath.Join(ho.Dir, "bringup.sh")
			script = libvirtScript(p, h, ho, o.Now)
		}
		if err := atomicfile.WriteFile(ho.Script, script, 0o644); err != nil {
			return res, err
		}
		if h.Kind == KindLibvirt {
			os.Chmod(ho.Script, 0o755)
		}
	}
	sort.Slice(res.Hosts, func(i, j int) bool { return res.Hosts[i].Name < res.Hosts[j].Name })
	if b, err := json.MarshalIndent(p, "", "  "); err == nil {
		atomicfile.WriteFile(filepath.Join(o.Out, "plan.json"), b, 0o644)
	}
	if len(res.Skipped) > 0 {
		return res, fmt.Errorf("%w: %d VMs skipped because of blocking issues", ErrBringupIncomplete, len(res.Skipped))
	}
	return res, nil
}

func winBaseOrUnix(p string) string {
	b := path.Base(p)
	if strings.Contains(p, `\`) {
		b = winBase(p)
	}
	if b == "" || b == "." || b == ".." || b == "/" {
		return "disk" // a file name that would name the VM's folder or its parent
	}
	return b
}

func mergeGroups(gs []GroupVMs) []GroupVMs {
	var out []GroupVMs
	for _, g := range gs {
		if n := len(out); n > 0 && out[n-1].Number == g.Number {
			out[n-1].VMs = append(out[n-1].VMs, g.VMs...)
			continue
		}
		out = append(out, g)
	}
	return out
}

// hostVMs lists the bring-up VMs placed on a DR host.
func (p *Plan) hostVMs(host string) []*PlannedVM {
	var out []*PlannedVM
	for _, v := range p.VMs {
		if v.DRHost == host && !v.Blocked {
			out = append(out, v)
		}
	}
	return out
}

// DRSwitch turns a DR network into the switch model (for NetworkXML).
func DRSwitch(n *DRNetwork) *Switch {
	s := &Switch{Name: n.Name, Type: n.Type, Bridge: n.Bridge}
	switch n.Type {
	case SwitchExternal:
		s.Mode = "bridge"
		if n.OpenVSwitch {
			s.VirtualPort = "openvswitch"
		}
	case SwitchInternal:
		s.Mode = n.Forward
		if s.Mode == "" {
			s.Mode = "nat"
		}
		s.Uplink = n.Uplink
	case SwitchPrivate:
		s.Mode = "none"
	}
	if n.Address != "" {
		s.Subnets = []Subnet{{Address: n.Address}}
	}
	return s
}

func restoreGroup(ctx context.Context, r *repo.Repository, vms []*PlannedVM, targets map[string]map[string]diskTarget, o BringupOptions, res *BringupResult, progress func(string, ...any)) error {
	// One restore per snapshot, for the disks not placed by an earlier run.
	type item struct {
		vm   *PlannedVM
		disk DiskData
		t    diskTarget
	}
	bySnap := map[string][]item{}
	for _, v := range vms {
		for _, d := range v.Data.Disks {
			t := targets[v.Name][d.File]
			if pt, st, ok := placedImage(t); ok {
				if err := sameImageSource(pt.final, v, d); err != nil {
					return err
				}
				t = pt
				targets[v.Name][d.File] = t
				res.Restored = append(res.Restored, RestoredDisk{VM: v.Name, File: d.File, Path: t.final, Format: t.format, Bytes: st.Size(), Kept: true})
				progress("  %s: %s exists from an earlier run; kept", v.Name, t.final)
				continue
			}
			key := v.Data.Snapshot + "\x00" + filepath.Dir(filepath.Dir(t.final))
			bySnap[key] = append(bySnap[key], item{v, d, t})
		}
	}
	for _, key := range sortedKeys(bySnap) {
		items := bySnap[key]
		snapID, _, _ := strings.Cut(key, "\x00")
		sn, err := r.FindSnapshot(ctx, snapID, "")
		if errors.Is(err, repo.ErrBadSnapshotRef) {
			// Not the operator's argument (exit 2): the VM's record
			// names it.
			return fmt.Errorf("VM %s names snapshot %q, which is not one snapshot id (%v); run drpipe drsite plan again", items[0].vm.Name, snapID, err)
		}
		if err != nil {
			return fmt.Errorf("find snapshot %s: %w", snapID, err)
		}
		staging := filepath.Join(filepath.Dir(filepath.Dir(items[0].t.final)), ".drpipe-restore-"+sn.ID().Short())
		var include []string
		for _, it := range items {
			include = append(include, it.disk.Path)
		}
		// Only what this restore writes is placed: not an image an
		// earlier run left here when it was stopped.
		if err := os.RemoveAll(staging); err != nil {
			return fmt.Errorf("remove what an earlier run left in %s: %w", staging, err)
		}
		progress("  restoring %d disks from snapshot %s", len(include), sn.ID().Short())
		if rr, err := pipeline.Restore(ctx, r, sn, pipeline.RestoreOptions{Target: staging, Include: include, Workers: o.RestoreWorkers, Progress: o.RestoreProgress, Flatten: true}); err != nil {
			// Name every VM whose disk failed, not the batch's first.
			var failed, beside []string
			if rr != nil {
				named := map[int]bool{}
				for _, fe := range rr.Failed {
					disk := false
					for i, it := range items {
						if fe.Path == filepath.Join(staging, filepath.FromSlash(it.disk.Path)) || fe.Path == path.Clean("/"+it.disk.Path) {
							failed = append(failed, fmt.Sprintf("VM %s disk %s: %v", it.vm.Name, it.disk.File, fe.Err))
							disk, named[i] = true, true
						}
					}
					if !disk {
						beside = append(beside, fe.Err.Error())
					}
				}
				// A disk below a directory that failed (its tree did
				// not read) has no failure of its own: it is not there.
				for i, it := range items {
					if st, serr := os.Lstat(filepath.Join(staging, filepath.FromSlash(it.disk.Path))); !named[i] && (serr != nil || !st.Mode().IsRegular()) {
						failed = append(failed, fmt.Sprintf("VM %s disk %s: not restored: %s", it.vm.Name, it.disk.File, strings.Join(beside, "; ")))
					}
				}
			}
			switch {
			case len(failed) > 0:
				return fmt.Errorf("restore from snapshot %s: %s: %w; the disks placed so far are kept: run drpipe check --read-data and drpipe repair, restore from another tier, or list the VMs under drsite.exclude, then run bringup again",
					sn.ID().Short(), strings.Join(failed, "; "), err)
			case rr == nil || !errors.Is(err, pipeline.ErrRestoreIncomplete):
				var names []string
				for _, it := range items {
					if !slices.Contains(names, it.vm.Name) {
						names = append(names, it.vm.Name)
					}
				}
				return fmt.Errorf("restore the disks of %s from snapshot %s: %w", strings.Join(names, ", "), sn.ID().Short(), err)
			}
			// Every disk's data is restored; what failed beside them
			// (extended attributes the DR file system does not support,
			// a directory's metadata) no hypervisor reads.
			for _, b := range beside {
				progress("  not restored, not needed by the VMs: %s", b)
			}
		}
		for _, it := range items {
			src := filepath.Join(staging, filepath.FromSlash(it.disk.Path))
			from := sourceFormat(it.vm.VM, it.disk.File)
			if it.t.detect {
				from = detectImageFormat(src)
				it.t = it.t.retarget(from)
				targets[it.vm.Name][it.disk.File] = it.t
				progress("  %s: %s has no format in the inventory; the image header says %s", it.vm.Name, it.disk.File, from)
			} else if t, ok := declaredRaw(it.t, from, src); ok {
				progress("  %s: %s is %s in the inventory, but its restored image is no %s image that names no other file (a guest's raw disk, or a header naming a backing file, parent or extents the DR host did not restore); it is raw", it.vm.Name, it.disk.File, from, from)
				from, it.t = "raw", t
				targets[it.vm.Name][it.disk.File] = it.t
			}
			if err := os.MkdirAll(filepath.Dir(it.t.final), 0o755); err != nil {
				return err
			}
			rd := RestoredDisk{VM: it.vm.Name, File: it.disk.File, Path: it.t.final, Format: it.t.format, Bytes: it.disk.Size}
			// The record goes first: the image is placed whole by a
			// rename, so a run stopped in between leaves no image that
			// the next run must refuse, only a record it rewrites.
			if err := writeImageSource(it.t.final, imageSource{Snapshot: sn.ID().String(), Path: it.disk.Path}); err != nil {
				return fmt.Errorf("record where disk %s of %s came from: %w", it.disk.File, it.vm.Name, err)
			}
			if it.t.conv {
				if err := convertImage(ctx, src, it.t.final, from, it.t.format); err != nil {
					return fmt.Errorf("convert disk %s of %s: %w", it.disk.File, it.vm.Name, err)
				}
				rd.Converted = true
				if st, err := os.Stat(it.t.final); err == nil {
					rd.Bytes = st.Size()
				}
			} else if err := os.Rename(src, it.t.final); err != nil {
				return fmt.Errorf("place disk %s of %s: %w", it.disk.File, it.vm.Name, err)
			}
			res.Restored = append(res.Restored, rd)
			progress("  %s: %s (%s)", it.vm.Name, it.t.final, HumanBytes(rd.Bytes))
		}
		os.RemoveAll(staging)
	}
	return nil
}

// vmDiskTargets returns where each disk of v (by inventory file) goes on
// DR host h, whose output is ho, and in which format. The same plan gives
// the same targets, so a pre-flight check sees the paths the run uses.
func vmDiskTargets(v *PlannedVM, h *DRHost, ho *HostOutput) map[string]diskTarget {
	out := map[string]diskTarget{}
	taken := map[string]bool{} // image names of the VM, lower-case (NTFS)
	// Disks with a format first: a disk without one may take
	// another name once its header is read, and yields.
	disks := slices.Clone(v.VM.Disks)
	for i := range disks {
		disks[i].Format = v.VM.DiskFormat(disks[i])
	}
	slices.SortStableFunc(disks, func(a, b Disk) int { return cmpBool(a.Format == "", b.Format == "") })
	for _, d := range disks {
		format, conv := targetFormat(h.Kind, d.Format)
		base := winBaseOrUnix(d.File)
		if conv || h.Kind == KindHyperV && !strings.EqualFold(filepath.Ext(base), "."+format) {
			// Hyper-V tells VHD from VHDX by the name.
			base = strings.TrimSuffix(base, filepath.Ext(base)) + "." + format
		}
		// The names the image can have: a disk without a format
		// takes the name of the format its header gives
		// (disk.img holding a VHDX becomes disk.qcow2).
		names := func(b string) []string {
			n := []string{strings.ToLower(b)}
			if d.Format == "" {
				for _, f := range detectedFormats {
					c := diskTarget{final: b, format: format, conv: conv, kind: h.Kind}.retarget(f)
					n = append(n, strings.ToLower(filepath.Base(c.final)))
				}
			}
			return n
		}
		// Disks with the same file name in different source
		// directories (data.vhdx on D: and on E:) get their own
		// images: data.vhdx, data-2.vhdx.
		ext := filepath.Ext(base)
		for k, stem := 2, strings.TrimSuffix(base, ext); slices.ContainsFunc(names(base), func(n string) bool { return taken[n] }); k++ {
			base = fmt.Sprintf("%s-%d%s", stem, k, ext)
		}
		for _, n := range names(base) {
			taken[n] = true
		}
		local := filepath.Join(ho.Dir, "images", v.Name, base)
		ref := local
		switch h.Kind {
		case KindLibvirt:
			if h.ImageDir != "" {
				local = filepath.Join(h.ImageDir, v.Name, base)
				ref = local
			}
		case KindHyperV:
			ref = v.Name + `\` + base
		}
		out[d.File] = diskTarget{final: local, ref: ref, format: format, conv: conv, kind: h.Kind, detect: d.Format == ""}
	}
	return out
}

// detectedFormats are the formats detectImageFormat gives.
var detectedFormats = []string{"qcow2", "vhdx", "vhd", "vmdk", "raw"}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// placedDetected returns the target of a disk without a format in the
// inventory as an earlier run placed it: under the name for the format
// its header gave, which differs when the image was converted (a VHDX
// on a libvirt host becomes NAME.qcow2). Without such an image, t.
func placedDetected(t diskTarget) diskTarget {
	for _, f := range detectedFormats {
		c := t.retarget(f)
		if c.final == t.final {
			continue
		}
		if st, err := os.Stat(c.final); err == nil && st.Mode().IsRegular() {
			return c
		}
	}
	return t
}

// imageSource records, beside each image a bring-up placed (see
// imageSourceFile), the snapshot and path it was restored from, so that
// a later run keeps only an image of the snapshot its plan restores:
// resuming a bring-up keeps what it placed, but a recovery must never
// boot a VM from the image a drill placed from last month's snapshot.
type imageSource struct {
	Snapshot string `json:"snapshot"`
	Path     string `json:"path"`
}

// imageSourceFile is the file that holds image's imageSource: hidden,
// beside it.
func imageSourceFile(image string) string {
	return filepath.Join(filepath.Dir(image), "."+filepath.Base(image)+".drpipe-source")
}

// writeImageSource records where image comes from, before it is placed.
func writeImageSource(image string, s imageSource) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(imageSourceFile(image), append(b, '\n'), 0o644)
}

// parseImageSource decodes a record writeImageSource wrote.
func parseImageSource(b []byte) (imageSource, error) {
	var s imageSource
	if len(b) > 4096 {
		return s, fmt.Errorf("image source record of %d bytes, longer than any drpipe writes", len(b))
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("image source record: %w", err)
	}
	return s, nil
}

// sameImageSource returns nil when image, which an earlier run placed,
// was restored from the snapshot and path the plan gives for disk d of
// v, and otherwise an error that says what the image is and what to do.
// An image without a record (placed by hand, or by a drpipe that kept
// none) is refused too: which data it holds is not known.
func sameImageSource(image string, v *PlannedVM, d DiskData) error {
	what := fmt.Sprintf("VM %s: disk %s is already at %s", v.Name, d.File, image)
	advice := fmt.Sprintf("stop any VM using it, then move it away or remove it (with %s) and run bringup again; the plan restores it from snapshot %s", imageSourceFile(image), shortID(v.Data.Snapshot))
	b, err := os.ReadFile(imageSourceFile(image))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s, with no record of which snapshot it was restored from (a bring-up records it in %s), so which data it holds is not known: %s", what, imageSourceFile(image), advice)
	}
	if err != nil {
		return fmt.Errorf("%s; its record of which snapshot it came from cannot be read (%v): %s", what, err, advice)
	}
	s, err := parseImageSource(b)
	if err != nil {
		return fmt.Errorf("%s; its record of which snapshot it came from, %s, is damaged: %s", what, imageSourceFile(image), advice)
	}
	if !strings.EqualFold(s.Snapshot, v.Data.Snapshot) || s.Path != d.Path {
		return fmt.Errorf("%s, restored by an earlier bring-up from snapshot %s (%s), not from the snapshot this plan restores: %s", what, shortID(s.Snapshot), s.Path, advice)
	}
	return nil
}

// shortID is a snapshot id as drpipe prints it: its first 8 digits.
func shortID(x string) string {
	if len(x) > 8 {
		return x[:8]
	}
	return x
}

// placedImage returns the target of a disk as an earlier run placed
// it and the image's file information; ok is false when no image is
// placed. A disk without a format in the inventory takes the format the
// image's header gives, under the name an earlier run gave that format
// (placedDetected).
func placedImage(t diskTarget) (diskTarget, os.FileInfo, bool) {
	if t.detect {
		t = placedDetected(t)
	}
	st, err := os.Stat(t.final)
	if err != nil || !st.Mode().IsRegular() {
		return t, nil, false
	}
	if t.detect {
		t.format = detectImageFormat(t.final)
	} else if !t.conv {
		// Placed as restored: its header is the one declaredRaw read.
		if rt, ok := declaredRaw(t, t.format, t.final); ok {
			t = rt
		}
	}
	return t, st, true
}

// declaredRaw returns the target of a disk whose inventory gives an
// image format, from, that can name other files (qcow2, qcow, vmdk,
// vhd, vhdx, qed), when the image at path is raw to detectImageFormat
// (qedNamesBacking for QED): no header of an image naming no other file. Bringup restores disks flattened,
// so a header naming a backing file, a parent or extents was written by
// a guest into its raw disk (or the inventory, from a compromised or
// mistaken primary, is wrong): declared as an image, the DR hypervisor
// would open, or qemu-img copy into the converted image, the DR host
// files it names. The disk is raw instead, under the same name: on a
// Hyper-V host converted to its image format. ok is false when the
// image is what the inventory says.
func declaredRaw(t diskTarget, from, path string) (diskTarget, bool) {
	switch strings.ToLower(from) {
	case "qcow2", "qcow", "vmdk", "vhd", "vpc", "vhdx":
		// qcow (version 1) has qcow2's magic and backing fields; vpc
		// is qemu's name for VHD.
		if detectImageFormat(path) != "raw" {
			return t, false
		}
	case "qed":
		if !qedNamesBacking(path) {
			return t, false
		}
	default:
		return t, false
	}
	switch {
	case t.kind == KindHyperV:
		t.conv = true
	case !t.conv:
		t.format = "raw"
	}
	return t, true
}

func sourceFormat(vm *VM, file string) string {
	for _, d := range vm.Disks {
		if d.File == file {
			return vm.DiskFormat(d)
		}
	}
	return ""
}

// convertImage converts with qemu-img into a temporary file and renames
// it into place, so a present target is always complete.
func convertImage(ctx context.Context, src, dst, from, to string) error {
	qf := map[string]string{"vhd": "vpc", "": "raw"}[from]
	if qf == "" {
		qf = from
	}
	qt := map[string]string{"vhd": "vpc"}[to]
	if qt == "" {
		qt = to
	}
	tmp := dst + ".converting"
	cmd := exec.CommandContext(ctx, "qemu-img", "convert", "-f", qf, "-O", qt, src, tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("qemu-img convert %s → %s: %w: %s", qf, qt, err, strings.TrimSpace(string(out)))
	}
	return os.Rename(tmp, dst)
}

func ensureNetwork(ctx context.Context, s *Virsh, name, file string) error {
	if out, err := s.Run(ctx, "net-info", name); err == nil {
		// "Persistent: yes" and "Autostart: yes" say nothing of whether
		// it runs.
		for _, l := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "Active" && strings.TrimSpace(v) == "yes" {
				return nil
			}
		}
		if _, err := s.Run(ctx, "net-start", name); err != nil {
			return fmt.Errorf("start network %s: %w", name, err)
		}
		return nil
	}
	if file == "" {
		return fmt.Errorf("network %s is missing and no definition was written", name)
	}
	if _, err := s.Run(ctx, "net-define", file); err != nil {
		return fmt.Errorf("define network %s: %w", name, err)
	}
	if _, err := s.Run(ctx, "net-start", name); err != nil {
		return fmt.Errorf("start network %s: %w", name, err)
	}
	s.Run(ctx, "net-autostart", name)
	return nil
}

// waitChecks waits until every VM of the group runs and its tcp: checks
// answer, up to the configured boot timeout.
func waitChecks(ctx context.Context, p *Plan, vms []*PlannedVM, sessions map[string]*Virsh, o BringupOptions, res *BringupResult, progress func(string, ...any)) error {
	c := p.Config
	deadline := time.Now().Add(c.BootTimeout.Duration)
	for _, v := range vms {
		s := sessions[c.URIFor(c.Host(v.DRHost))]
		checks := []string{"running"}
		checks = append(checks, v.VM.Verify...)
		for _, chk := range checks {
			for {
				ok, detail := runCheck(ctx, s, v.Name, drCheck(v, chk))
				if ok {
					res.Checks = append(res.Checks, CheckResult{VM: v.Name, Check: chk, OK: true, Detail: detail})
					progress("  check %s %s: ok", v.Name, chk)
					break
				}
				if time.Now().After(deadline) {
					res.Checks = append(res.Checks, CheckResult{VM: v.Name, Check: chk, OK: false, Detail: detail})
					return fmt.Errorf("check %q of %s did not pass within %s: %s", chk, v.Name, c.BootTimeout.Duration, detail)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(o.CheckInterval):
				}
			}
		}
	}
	return nil
}

func runCheck(ctx context.Context, s *Virsh, vm, chk string) (bool, string) {
	switch {
	case chk == "running":
		out, err := s.Run(ctx, "domstate", vm)
		if err != nil {
			return false, err.Error()
		}
		return strings.TrimSpace(out) == "running", "domain state " + strings.TrimSpace(out)
	case strings.HasPrefix(chk, "tcp:"):
		addr := strings.TrimPrefix(chk, "tcp:")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return false, fmt.Sprintf("%q is not tcp:HOST:PORT", chk)
		}
		d := net.Dialer{Timeout: 3 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, "connected to " + addr
	}
	return true, "not automated; verify by hand"
}

// libvirtScript renders the virsh commands an operator runs on a libvirt
// DR host instead of --execute.
func libvirtScript(p *Plan, h *DRHost, ho *HostOutput, now time.Time) []byte {
	var b strings.Builder
	uri := p.Config.URIFor(h)
	fmt.Fprintf(&b, "#!/bin/sh\n# drpipe DR bring-up for libvirt host %s (generated %s).\n", commentText(h.Name), now.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# Run on %s after the disk images are in place. Stops at the first failure.\nset -eu\n# virsh untranslated: the script compares its states.\nexport LC_ALL=C\nURI=${DRPIPE_VIRSH_URI:-%s}\ncd \"$(dirname \"$0\")\"\n", commentText(h.Name), shq(uri))
	// Each wait ends, as --execute's, after drsite.boot_timeout.
	fmt.Fprintf(&b, `TIMEOUT=${DRPIPE_BOOT_TIMEOUT:-%d}
# wait_for WHAT COMMAND...: run COMMAND until it succeeds, for at most $TIMEOUT seconds.
wait_for() {
	what=$1; shift; end=$(($(date +%%s) + TIMEOUT))
	until "$@"; do
		if [ "$(date +%%s)" -ge "$end" ]; then echo "drpipe: $what after ${TIMEOUT}s; stopped" >&2; exit 1; fi
		sleep 2
	done
}
running() { [ "$(virsh -c "$URI" domstate "$1" 2>/dev/null)" = running ]; }

`, max(int(math.Ceil(p.Config.BootTimeout.Seconds())), 1))
	for _, n := range sortedKeys(ho.Networks) {
		rel := "networks/" + n + ".xml"
		fmt.Fprintf(&b, "virsh -c \"$URI\" net-info %s >/dev/null 2>&1 || { virsh -c \"$URI\" net-define %s && virsh -c \"$URI\" net-autostart %s; }\n", shq(n), shq(rel), shq(n))
		fmt.Fprintf(&b, "virsh -c \"$URI\" net-start %s 2>/dev/null || true\n", shq(n))
	}
	for _, g := range p.Groups {
		var names []string
		for _, n := range g.VMs {
			if _, ok := ho.Domains[n]; ok {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n# boot group %d\n", g.Number)
		for _, n := range names {
			// A domain still running from an earlier run is left running.
			fmt.Fprintf(&b, "virsh -c \"$URI\" define %s\n[ \"$(virsh -c \"$URI\" domstate %s 2>/dev/null)\" = running ] || virsh -c \"$URI\" start %s\n",
				shq("domains/"+n+".xml"), shq(n), shq(n))
		}
		for _, n := range names {
			fmt.Fprintf(&b, "wait_for %s running %s\n", shq("VM "+n+" is not running"), shq(n))
			for _, chk := range p.VM(n).VM.Verify {
				if a, ok := strings.CutPrefix(drCheck(p.VM(n), chk), "tcp:"); ok {
					if host, port, err := net.SplitHostPort(a); err == nil {
						fmt.Fprintf(&b, "wait_for %s nc -z -w 3 %s %s  # %s\n", shq("check "+chk+" of "+n+" did not pass"), shq(host), shq(port), commentText(chk))
					}
				}
			}
		}
	}
	b.WriteString("\necho 'drpipe bring-up finished'\n")
	return []byte(b.String())
}

// drCheck rewrites a tcp:HOST:PORT check to the VM's DR address.
func drCheck(v *PlannedVM, chk string) string {
	a, ok := strings.CutPrefix(chk, "tcp:")
	if !ok {
		return chk
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return chk
	}
	if dr := drAddress(v, host); dr != "" {
		return "tcp:" + net.JoinHostPort(dr, port)
	}
	return chk
}

// drAddress returns the DR address that replaces a source address of the
// VM (re-IP), or "".
func drAddress(v *PlannedVM, src string) string {
	a, err := netip.ParseAddr(src)
	if err != nil {
		return ""
	}
	for _, n := range v.NICs {
		for i, f := range n.From {
			if pf, err := netip.ParsePrefix(f); err == nil && pf.Addr() == a && i < len(n.To) {
				if tp, err := netip.ParsePrefix(n.To[i]); err == nil {
					return tp.Addr().String()
				}
			}
		}
	}
	return ""
}

func shq(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\r'\"\\$`;&|<>*?()[]{}!#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// stableUUID derives a domain UUID from a VM name (RFC 9562 version 8,
// from SHA-256), so that every bring-up defines the same domain.
func stableUUID(name string) string {
	h := sha256.Sum256([]byte("drpipe DR domain\x00" + name))
	h[6] = h[6]&0x0f | 0x80
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// commentText makes s (from the inventory) safe in a one-line shell or
// PowerShell comment: line breaks and other control characters become
// spaces, and "#>" cannot end a PowerShell block comment.
func commentText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0x85 || r == 0x2028 || r == 0x2029 {
			return ' '
		}
		return r
	}, s)
	return strings.ReplaceAll(s, "#>", "# >")
}
