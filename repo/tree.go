package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"
	"unicode/utf8"

	"github.com/drpipe/drpipe/internal/id"
)

// TreeVersion is the format version of tree blobs.
const TreeVersion = 1

// NodeType is the kind of a tree entry.
type NodeType string

// Node types.
const (
	NodeFile    NodeType = "file"
	NodeDir     NodeType = "dir"
	NodeSymlink NodeType = "symlink"
	NodeDev     NodeType = "dev"     // block device
	NodeCharDev NodeType = "chardev" // character device
	NodeFIFO    NodeType = "fifo"
	NodeSocket  NodeType = "socket"
)

// Extent is a run of a file's content: either a stored chunk (ID) or a
// zero region (Zero) that was not stored and is restored as a hole.
type Extent struct {
	ID   id.ID `json:"i,omitempty"`
	Len  int64 `json:"n"`
	Zero bool  `json:"z,omitempty"`
}

// MarshalJSON writes {"i":hex,"n":len} or {"z":true,"n":len}.
func (e Extent) MarshalJSON() ([]byte, error) {
	if e.Zero {
		return []byte(fmt.Sprintf(`{"z":true,"n":%d}`, e.Len)), nil
	}
	return []byte(fmt.Sprintf(`{"i":"%s","n":%d}`, e.ID, e.Len)), nil
}

// Node is one entry of a tree. Times are kept to the nanosecond.
type Node struct {
	Name       string      `json:"name"`
	Type       NodeType    `json:"type"`
	Mode       fs.FileMode `json:"mode"`
	ModTime    time.Time   `json:"mtime"`
	AccessTime time.Time   `json:"atime,omitzero"`
	ChangeTime time.Time   `json:"ctime,omitzero"`
	UID        uint32      `json:"uid"`
	GID        uint32      `json:"gid"`
	Size       int64       `json:"size,omitempty"`
	Inode      uint64      `json:"inode,omitempty"`
	DeviceID   uint64      `json:"device_id,omitempty"`
	Links      uint64      `json:"links,omitempty"`
	Rdev       uint64      `json:"rdev,omitempty"`
	LinkTarget string      `json:"linktarget,omitempty"`
	// NameRaw and LinkTargetRaw carry Name and LinkTarget when they are
	// not valid UTF-8 (Linux names are bytes; a JSON string would turn
	// them into U+FFFD and two names could become one). SaveTree sets
	// them, LoadTree puts them back into Name and LinkTarget.
	NameRaw       []byte `json:"name_raw,omitempty"`
	LinkTargetRaw []byte `json:"linktarget_raw,omitempty"`
	// Content holds the extents of a small file inline.
	Content []Extent `json:"content,omitempty"`
	// ContentLists holds, for a large file, the ids of tree blobs that
	// each carry a run of its extents (see ContentList).
	ContentLists []id.ID `json:"content_lists,omitempty"`
	// Subtree is the tree of a directory.
	Subtree *id.ID `json:"subtree,omitempty"`
	// Xattrs holds extended attributes by name.
	Xattrs map[string][]byte `json:"xattrs,omitempty"`
	// Disk describes a VM disk image recognised in this file (set by the
	// disk-image layer; opaque here).
	Disk json.RawMessage `json:"disk,omitempty"`
}

// Tree is a directory listing, sorted by name.
type Tree struct {
	Version int     `json:"version"`
	Nodes   []*Node `json:"nodes"`
}

// ContentList is the tree blob behind Node.ContentLists.
type ContentList struct {
	Version int      `json:"version"`
	Extents []Extent `json:"extents"`
}

// Content list sizing: up to InlineExtents extents stay in the node; more
// are split into content lists of ContentListExtents each.
const (
	InlineExtents      = 512
	ContentListExtents = 8192
)

// SaveTree stores t as a tree blob and returns its id.
func (r *Repository) SaveTree(ctx context.Context, t *Tree) (id.ID, error) {
	b, err := encodeTree(t)
	if err != nil {
		return id.ID{}, err
	}
	x, _, err := r.SaveBlob(ctx, TreeBlob, b, id.ID{})
	return x, err
}

// LoadTree reads tree x.
func (r *Repository) LoadTree(ctx context.Context, x id.ID) (*Tree, error) {
	b, err := r.LoadBlob(ctx, TreeBlob, x, nil)
	if err != nil {
		return nil, err
	}
	t, err := decodeTree(b)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", x.Short(), err)
	}
	return t, nil
}

// encodeTree is the plaintext of tree blob t (its version set).
func encodeTree(t *Tree) ([]byte, error) {
	t.Version = TreeVersion
	for _, n := range t.Nodes {
		n.NameRaw, n.LinkTargetRaw = rawIfInvalid(n.Name), rawIfInvalid(n.LinkTarget)
	}
	return json.Marshal(t)
}

// decodeTree parses the plaintext of a tree blob.
func decodeTree(b []byte) (*Tree, error) {
	var t Tree
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("malformed: %w", err)
	}
	if t.Version != TreeVersion {
		return nil, fmt.Errorf("%w: version %d", ErrUnsupportedVersion, t.Version)
	}
	for _, n := range t.Nodes {
		if n == nil {
			return nil, errors.New("malformed: null node")
		}
		if n.NameRaw != nil {
			n.Name = string(n.NameRaw)
		}
		if n.LinkTargetRaw != nil {
			n.LinkTarget = string(n.LinkTargetRaw)
		}
	}
	return &t, nil
}

// rawIfInvalid returns s's bytes if s is not valid UTF-8, else nil.
func rawIfInvalid(s string) []byte {
	if utf8.ValidString(s) {
		return nil
	}
	return []byte(s)
}

// SetContent stores extents in n: inline when short, otherwise as content
// list blobs.
func (r *Repository) SetContent(ctx context.Context, n *Node, extents []Extent) error {
	n.Content, n.ContentLists = nil, nil
	if len(extents) <= InlineExtents {
		n.Content = extents
		return nil
	}
	for len(extents) > 0 {
		k := min(len(extents), ContentListExtents)
		b, err := json.Marshal(ContentList{Version: TreeVersion, Extents: extents[:k]})
		if err != nil {
			return err
		}
		x, _, err := r.SaveBlob(ctx, TreeBlob, b, id.ID{})
		if err != nil {
			return err
		}
		n.ContentLists = append(n.ContentLists, x)
		extents = extents[k:]
	}
	return nil
}

// EachExtent calls fn for every extent of n's content in order, loading
// content lists one at a time.
func (r *Repository) EachExtent(ctx context.Context, n *Node, fn func(Extent) error) error {
	for _, e := range n.Content {
		if err := fn(e); err != nil {
			return err
		}
	}
	for _, x := range n.ContentLists {
		b, err := r.LoadBlob(ctx, TreeBlob, x, nil)
		if err != nil {
			return fmt.Errorf("content list of %q: %w", n.Name, err)
		}
		var cl ContentList
		if err := json.Unmarshal(b, &cl); err != nil {
			return fmt.Errorf("content list %s of %q: malformed: %w", x.Short(), n.Name, err)
		}
		if cl.Version != TreeVersion {
			return fmt.Errorf("content list %s of %q: %w: version %d", x.Short(), n.Name, ErrUnsupportedVersion, cl.Version)
		}
		for _, e := range cl.Extents {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return nil
}
