package drsite

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
)

// Gathered is what a repository says about the primary site: the VM
// inventory from the newest snapshot carrying one per host, and per VM the
// newest snapshot that holds all of its disks.
type Gathered struct {
	Inventory *Inventory
	Sources   []InventorySource
	Data      map[string]*VMData
	Issues    []Issue
	// SnapshotHost maps a VM to the host whose snapshots hold its disks.
	SnapshotHost map[string]string

	nodes map[string]*repo.Node // snapshot id + "\x00" + path
}

// fileEntry is one file of a snapshot tree.
type fileEntry struct {
	path string
	node *repo.Node
}

// treeFiles lists and caches the files below trees (shared subtrees are
// listed once).
type treeFiles struct {
	r     *repo.Repository
	cache map[id.ID][]fileEntry
}

func (tf *treeFiles) list(ctx context.Context, x id.ID, depth int) ([]fileEntry, error) {
	if out, ok := tf.cache[x]; ok {
		return out, nil
	}
	if depth > 256 {
		return nil, fmt.Errorf("tree %s is nested more than 256 levels deep", x.Short())
	}
	t, err := tf.r.LoadTree(ctx, x)
	if err != nil {
		return nil, err
	}
	var out []fileEntry
	for _, n := range t.Nodes {
		if n.Name == "" || strings.ContainsAny(n.Name, "/\x00") || n.Name == "." || n.Name == ".." {
			continue
		}
		switch {
		case n.Type == repo.NodeFile:
			out = append(out, fileEntry{path: "/" + n.Name, node: n})
		case n.Type == repo.NodeDir && n.Subtree != nil:
			sub, err := tf.list(ctx, *n.Subtree, depth+1)
			if err != nil {
				return nil, err
			}
			for _, e := range sub {
				out = append(out, fileEntry{path: "/" + n.Name + e.path, node: e.node})
			}
		}
	}
	tf.cache[x] = out
	return out, nil
}

// pathComponents splits a Unix or Windows path into components; windows
// reports a drive letter or backslashes (compared case-insensitively).
func pathComponents(p string) (parts []string, windows bool) {
	windows = strings.Contains(p, `\`) || (len(p) >= 2 && p[1] == ':')
	p = strings.ReplaceAll(p, `\`, "/")
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			parts = append(parts, c)
		}
	}
	if windows && len(parts) > 0 && len(parts[0]) == 2 && parts[0][1] == ':' {
		parts[0] = parts[0][:1] // "D:" also matches a snapshot dir "/D"
	}
	return parts, windows
}

// fileIndex groups a snapshot's files by lower-case base name, so disk
// lookups only compare paths that can match.
type fileIndex map[string][]fileEntry

func indexFiles(files []fileEntry) fileIndex {
	idx := fileIndex{}
	for _, f := range files {
		k := strings.ToLower(path.Base(f.path))
		idx[k] = append(idx[k], f)
	}
	return idx
}

func (idx fileIndex) match(file string) (fileEntry, bool) {
	parts, _ := pathComponents(file)
	if len(parts) == 0 {
		return fileEntry{}, false
	}
	return matchDisk(idx[strings.ToLower(parts[len(parts)-1])], file)
}

// matchDisk finds the snapshot file for an inventory disk path: the file
// whose path shares the longest unique suffix of components with it
// (exact paths match all components).
func matchDisk(files []fileEntry, file string) (fileEntry, bool) {
	want, windows := pathComponents(file)
	if len(want) == 0 {
		return fileEntry{}, false
	}
	eq := func(a, b string) bool {
		if windows {
			return strings.EqualFold(a, b)
		}
		return a == b
	}
	best, bestLen, ties := fileEntry{}, 0, 0
	for _, f := range files {
		got, _ := pathComponents(f.path)
		if windows && len(got) > 0 && len(got[0]) == 2 && got[0][1] == ':' {
			got[0] = got[0][:1]
		}
		n := 0
		for n < len(want) && n < len(got) && eq(want[len(want)-1-n], got[len(got)-1-n]) {
			n++
		}
		if n == 0 {
			continue
		}
		switch {
		case n > bestLen:
			best, bestLen, ties = f, n, 1
		case n == bestLen:
			ties++
		}
	}
	return best, bestLen > 0 && ties == 1
}

// Gather reads the inventory and disk facts from r. Snapshots that cannot
// be read and inventories that cannot be decoded become issues; an error
// is returned only when the repository cannot be listed at all.
func Gather(ctx context.Context, r *repo.Repository) (*Gathered, error) {
	snaps, lerr := r.ListSnapshots(ctx)
	g := &Gathered{Data: map[string]*VMData{}, SnapshotHost: map[string]string{}, nodes: map[string]*repo.Node{}}
	if lerr != nil {
		if len(snaps) == 0 {
			return nil, fmt.Errorf("list snapshots: %w", lerr)
		}
		g.Issues = append(g.Issues, Issue{Kind: IssueInventory, Message: fmt.Sprintf("some snapshots could not be read: %v", lerr)})
	}
	byHost := map[string][]*repo.Snapshot{}
	for _, s := range snaps {
		byHost[s.Host] = append(byHost[s.Host], s)
	}
	hosts := sortedKeys(byHost)
	for _, h := range hosts {
		list := byHost[h]
		sort.SliceStable(list, func(i, j int) bool { return list[i].Time.After(list[j].Time) })
	}
	type hostInv struct {
		host string
		sn   *repo.Snapshot
		inv  *Inventory
	}
	var found []hostInv
	for _, h := range hosts {
		for _, s := range byHost[h] {
			if len(s.Inventory) == 0 {
				continue
			}
			inv, err := DecodeInventory(s.Inventory)
			if err != nil {
				g.Issues = append(g.Issues, Issue{Kind: IssueInventory, Message: fmt.Sprintf("snapshot %s of host %s: inventory unreadable (%v); using an older one", s.ID().Short(), h, err)})
				continue
			}
			found = append(found, hostInv{h, s, inv})
			break
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no snapshot in %s carries a VM inventory: back up with drpipe backup --inventory FILE (libvirt XML, Hyper-V collector JSON, OVF or YAML)", r.Backend().Location())
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].sn.Time.After(found[j].sn.Time) })
	merged := &Inventory{}
	for _, f := range found {
		n := 0
		for _, vm := range f.inv.VMs {
			if prev, dup := g.SnapshotHost[vm.Name]; dup {
				g.Issues = append(g.Issues, Issue{Kind: IssueInventory, VM: vm.Name, Message: fmt.Sprintf("VM %s is in the inventories of hosts %s and %s; using %s's (newer)", vm.Name, prev, f.host, prev)})
				continue
			}
			if vm.Host == "" {
				vm.Host = f.host
			}
			g.SnapshotHost[vm.Name] = f.host
			merged.VMs = append(merged.VMs, vm)
			n++
		}
		for _, h := range f.inv.Hosts {
			if merged.Host(h.Name) == nil {
				merged.Hosts = append(merged.Hosts, h)
			}
		}
		merged.Sources = append(merged.Sources, f.inv.Sources...)
		merged.Warnings = append(merged.Warnings, f.inv.Warnings...)
		g.Sources = append(g.Sources, InventorySource{Host: f.host, Snapshot: f.sn.ID().String(), Time: f.sn.Time, VMs: n})
	}
	merged.Normalize()
	g.Inventory = merged

	tf := &treeFiles{r: r, cache: map[id.ID][]fileEntry{}}
	indexes := map[id.ID]fileIndex{}
	for i := range merged.VMs {
		vm := &merged.VMs[i]
		var files []string
		for _, d := range vm.Disks {
			if d.File != "" {
				files = append(files, d.File)
			}
		}
		if len(files) == 0 {
			continue
		}
		var newestMissing []string
		for k, s := range byHost[g.SnapshotHost[vm.Name]] {
			idx, ok := indexes[s.Tree]
			if !ok {
				entries, err := tf.list(ctx, s.Tree, 0)
				if err != nil {
					g.Issues = append(g.Issues, Issue{Kind: IssueDisk, VM: vm.Name, Message: fmt.Sprintf("snapshot %s unreadable: %v", s.ID().Short(), err)})
					continue
				}
				idx = indexFiles(entries)
				indexes[s.Tree] = idx
			}
			d := &VMData{Snapshot: s.ID().String(), SnapshotTime: s.Time}
			var missing []string
			for _, f := range files {
				e, ok := idx.match(f)
				if !ok {
					missing = append(missing, f)
					continue
				}
				dd := DiskData{File: f, Path: e.path, Size: e.node.Size}
				err := r.EachExtent(ctx, e.node, func(x repo.Extent) error {
					if !x.Zero {
						dd.DataBytes += x.Len
					}
					return nil
				})
				if err != nil {
					g.Issues = append(g.Issues, Issue{Kind: IssueDisk, VM: vm.Name, Message: fmt.Sprintf("content list of %s in snapshot %s unreadable: %v", e.path, s.ID().Short(), err)})
					missing = append(missing, f)
					continue
				}
				g.nodes[d.Snapshot+"\x00"+e.path] = e.node
				d.Disks = append(d.Disks, dd)
			}
			if k == 0 {
				newestMissing = missing
			}
			if len(missing) == 0 {
				g.Data[vm.Name] = d
				break
			}
		}
		if g.Data[vm.Name] == nil {
			if newestMissing == nil {
				newestMissing = files
			}
			g.Data[vm.Name] = &VMData{Missing: newestMissing}
		}
	}
	return g, nil
}

// MeasureRestoreRate reads up to sample bytes of the largest disk's
// stored data from the repository (fetch, verify, decrypt, decompress) and
// returns the rate in bytes per second and a description of the sample.
func (g *Gathered) MeasureRestoreRate(ctx context.Context, r *repo.Repository, sample int64) (float64, string, error) {
	var best *repo.Node
	var bestName string
	var bestData int64
	for vm, d := range g.Data {
		for _, dd := range d.Disks {
			if dd.DataBytes > bestData || (dd.DataBytes == bestData && vm+dd.Path < bestName) {
				best, bestData, bestName = g.nodes[d.Snapshot+"\x00"+dd.Path], dd.DataBytes, vm+":"+dd.Path
			}
		}
	}
	if best == nil || bestData == 0 {
		return 0, "", fmt.Errorf("measure restore rate: no disk data in the repository")
	}
	var read int64
	var buf []byte
	start := time.Now()
	errStop := fmt.Errorf("enough")
	err := r.EachExtent(ctx, best, func(x repo.Extent) error {
		if x.Zero {
			return nil
		}
		b, err := r.LoadBlob(ctx, repo.DataBlob, x.ID, buf)
		if err != nil {
			return err
		}
		buf = b
		read += int64(len(b))
		if read >= sample {
			return errStop
		}
		return nil
	})
	if err != nil && err != errStop {
		return 0, "", fmt.Errorf("measure restore rate on %s: %w", bestName, err)
	}
	el := time.Since(start).Seconds()
	if el <= 0 || read == 0 {
		return 0, "", fmt.Errorf("measure restore rate: nothing read")
	}
	_, file := path.Split(bestName)
	return float64(read) / el, fmt.Sprintf("measured: read %s of %s from the repository in %.2fs", HumanBytes(read), file, el), nil
}
