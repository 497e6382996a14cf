package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
)

// ErrNoSuchPath is wrapped when a path given to WalkSnapshot is not in the
// snapshot.
var ErrNoSuchPath = errors.New("no such path in the snapshot")

// WalkSnapshot calls fn for every entry of snapshot sn below each of
// paths (absolute snapshot paths, as they were backed up; the path
// itself included, "/" or none for the whole snapshot), depth first in
// name order, with the entry's snapshot path. A directory's children
// come after it. Only the trees on the way and below are read. A path
// the snapshot lacks is an error wrapping ErrNoSuchPath, after the paths
// before it were walked. Entries whose names a restore would refuse ("",
// ".", "..", names with "/" or NUL) are left out, as restore and mount
// leave them.
func WalkSnapshot(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, paths []string, fn func(p string, n *repo.Node) error) error {
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	for _, p := range paths {
		p = path.Clean("/" + p)
		if p == "/" {
			if err := walkTree(ctx, r, sn.Tree, "/", fn); err != nil {
				return err
			}
			continue
		}
		n, err := findNode(ctx, r, sn.Tree, p)
		if err != nil {
			return err
		}
		if n == nil {
			return fmt.Errorf("%w: %s is not in snapshot %s (give it as it was backed up, e.g. /var/lib/libvirt/images/vm.qcow2; 'drpipe ls %s' lists what is there)", ErrNoSuchPath, p, sn.ID().Short(), sn.ID().Short())
		}
		if err := walkNode(ctx, r, p, n, fn); err != nil {
			return err
		}
	}
	return nil
}

// walkNode calls fn for node n at snapshot path p, then for what is
// below it.
func walkNode(ctx context.Context, r *repo.Repository, p string, n *repo.Node, fn func(p string, n *repo.Node) error) error {
	if err := fn(p, n); err != nil {
		return err
	}
	if n.Type == repo.NodeDir && n.Subtree != nil {
		return walkTree(ctx, r, *n.Subtree, p, fn)
	}
	return nil
}

// findNode returns the node at snapshot path p (not "/") below tree
// root, or nil when there is none.
func findNode(ctx context.Context, r *repo.Repository, root id.ID, p string) (*repo.Node, error) {
	tree := root
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, name := range parts {
		t, err := r.LoadTree(ctx, tree)
		if err != nil {
			return nil, fmt.Errorf("read the tree of %s: %w", "/"+strings.Join(parts[:i], "/"), err)
		}
		var n *repo.Node
		for _, c := range t.Nodes {
			if c.Name == name {
				n = c
				break
			}
		}
		if n == nil || i == len(parts)-1 {
			return n, nil
		}
		if n.Type != repo.NodeDir || n.Subtree == nil {
			return nil, nil
		}
		tree = *n.Subtree
	}
	return nil, nil
}

// walkTree calls fn for the entries of tree (snapshot path dir) and
// below, depth first in name order.
func walkTree(ctx context.Context, r *repo.Repository, tree id.ID, dir string, fn func(p string, n *repo.Node) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := r.LoadTree(ctx, tree)
	if err != nil {
		return fmt.Errorf("read the tree of %s: %w", dir, err)
	}
	for _, n := range sortedNodes(t) {
		if err := walkNode(ctx, r, path.Join(dir, n.Name), n, fn); err != nil {
			return err
		}
	}
	return nil
}

// sortedNodes returns t's nodes that name a directory entry, sorted by
// name, one per name: a tree is stored sorted, but one read from
// storage is outside data and the walks below must not depend on it.
func sortedNodes(t *repo.Tree) []*repo.Node {
	out := make([]*repo.Node, 0, len(t.Nodes))
	for _, n := range t.Nodes {
		if n == nil || n.Name == "" || n.Name == "." || n.Name == ".." || strings.ContainsAny(n.Name, "/\x00") {
			continue
		}
		out = append(out, n)
	}
	slices.SortStableFunc(out, func(a, b *repo.Node) int { return strings.Compare(a.Name, b.Name) })
	return slices.CompactFunc(out, func(a, b *repo.Node) bool { return a.Name == b.Name })
}

// Change is how an entry differs between two snapshots.
type Change string

// The changes DiffSnapshots reports.
const (
	Added    Change = "added"    // only in the newer snapshot
	Removed  Change = "removed"  // only in the older snapshot
	Modified Change = "modified" // a file whose content differs (its metadata may too)
	Metadata Change = "metadata" // same content, other mode, owner, times, xattrs or link target
	TypeDiff Change = "type"     // another kind of entry (a file became a directory, ...)
)

// DiffEntry is one entry that differs between two snapshots. Old and New
// are the entry in each (nil where it is absent).
type DiffEntry struct {
	Path     string
	Change   Change
	Old, New *repo.Node
}

// DiffSnapshots calls fn for every entry that differs between snapshots
// a (older) and b (newer), depth first in name order. A directory whose
// tree is the same blob in both is skipped without being read, so the
// cost follows the size of the change, not of the snapshots. Everything
// below an added or removed directory is reported too, each entry as
// added or removed.
func DiffSnapshots(ctx context.Context, r *repo.Repository, a, b *repo.Snapshot, fn func(DiffEntry) error) error {
	return diffTrees(ctx, r, &a.Tree, &b.Tree, "/", fn)
}

func diffTrees(ctx context.Context, r *repo.Repository, ta, tb *id.ID, dir string, fn func(DiffEntry) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ta != nil && tb != nil && *ta == *tb {
		return nil
	}
	load := func(x *id.ID) ([]*repo.Node, error) {
		if x == nil {
			return nil, nil
		}
		t, err := r.LoadTree(ctx, *x)
		if err != nil {
			return nil, fmt.Errorf("read the tree of %s: %w", dir, err)
		}
		return sortedNodes(t), nil
	}
	na, err := load(ta)
	if err != nil {
		return err
	}
	nb, err := load(tb)
	if err != nil {
		return err
	}
	for i, j := 0, 0; i < len(na) || j < len(nb); {
		var x, y *repo.Node
		switch {
		case j == len(nb) || i < len(na) && na[i].Name < nb[j].Name:
			x = na[i]
			i++
		case i == len(na) || nb[j].Name < na[i].Name:
			y = nb[j]
			j++
		default:
			x, y = na[i], nb[j]
			i, j = i+1, j+1
		}
		if err := diffNode(ctx, r, x, y, dir, fn); err != nil {
			return err
		}
	}
	return nil
}

func diffNode(ctx context.Context, r *repo.Repository, x, y *repo.Node, dir string, fn func(DiffEntry) error) error {
	var name string
	if x != nil {
		name = x.Name
	} else {
		name = y.Name
	}
	p := path.Join(dir, name)
	subtree := func(n *repo.Node) *id.ID {
		if n == nil || n.Type != repo.NodeDir {
			return nil
		}
		return n.Subtree
	}
	switch {
	case x == nil:
		if err := fn(DiffEntry{Path: p, Change: Added, New: y}); err != nil {
			return err
		}
	case y == nil:
		if err := fn(DiffEntry{Path: p, Change: Removed, Old: x}); err != nil {
			return err
		}
	case x.Type != y.Type:
		if err := fn(DiffEntry{Path: p, Change: TypeDiff, Old: x, New: y}); err != nil {
			return err
		}
	case x.Type == repo.NodeFile && !sameContent(x, y):
		if err := fn(DiffEntry{Path: p, Change: Modified, Old: x, New: y}); err != nil {
			return err
		}
	case !sameMeta(x, y):
		if err := fn(DiffEntry{Path: p, Change: Metadata, Old: x, New: y}); err != nil {
			return err
		}
	}
	sa, sb := subtree(x), subtree(y)
	if sa == nil && sb == nil {
		return nil
	}
	return diffTrees(ctx, r, sa, sb, p, fn)
}

// sameContent reports whether two file nodes hold the same bytes, by
// their extents (content-addressed: the same chunk ids in the same
// order are the same bytes) without reading any content. A VM disk
// image's content is its virtual disk, a layer's only its own data: its
// disk record (format, backing file, layer map) must be the same too.
func sameContent(x, y *repo.Node) bool {
	return x.Size == y.Size && slices.Equal(x.Content, y.Content) && slices.Equal(x.ContentLists, y.ContentLists) &&
		bytes.Equal(x.Disk, y.Disk)
}

// sameMeta reports whether two nodes of one type agree on what restore
// sets besides content: mode, owner, modification time, link target,
// device number and extended attributes. Access and change times are
// left out: reading a file changes the one, and restore cannot set the
// other.
func sameMeta(x, y *repo.Node) bool {
	return x.Mode == y.Mode && x.UID == y.UID && x.GID == y.GID && x.ModTime.Equal(y.ModTime) &&
		x.LinkTarget == y.LinkTarget && x.Rdev == y.Rdev &&
		maps.EqualFunc(x.Xattrs, y.Xattrs, bytes.Equal)
}
