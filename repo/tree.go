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

// TreeVersion is the format version of tree blobs. The head of a
// directory listing too large for one blob has version treeVersionParts.
const TreeVersion = 1

// treeVersionParts marks the head of a split tree: it has no nodes of its
// own, and Parts names the tree blobs (version 1) holding the listing in
// order. Readers that only know version 1 refuse it instead of restoring
// part of a directory.
const treeVersionParts = 2

// treePartBytes is the encoded size above which a tree is split into
// parts (a variable for tests). Directories of about 25000 entries and
// more, or with large extended attributes, are split; without splitting
// a listing could outgrow MaxBlobSize and fail the backup.
var treePartBytes = 8 << 20

// maxTreeParts bounds the parts of one tree a reader accepts.
const maxTreeParts = 1 << 16

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
	// Refs names further tree blobs the node needs besides its content:
	// the layer map a Disk record keeps out of line. Prune, copy and
	// check keep and verify them like content.
	Refs []id.ID `json:"refs,omitempty"`
}

// Tree is a directory listing, sorted by name.
type Tree struct {
	Version int     `json:"version"`
	Nodes   []*Node `json:"nodes"`
	// Parts lists, in a loaded tree, the blobs its listing was split
	// into (LoadTree has already put their nodes in Nodes); walkers that
	// account for blobs mark them too. SaveTree ignores it.
	Parts []id.ID `json:"parts,omitempty"`
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

// SaveTree stores t as a tree blob and returns its id. A listing larger
// than treePartBytes is stored as a head blob and parts (see
// treeVersionParts); the same listing always splits the same way, so
// unchanged large directories still deduplicate.
func (r *Repository) SaveTree(ctx context.Context, t *Tree) (id.ID, error) {
	t.Parts = nil
	b, err := encodeTree(t)
	if err != nil {
		return id.ID{}, err
	}
	if len(b) > treePartBytes {
		return r.saveSplitTree(ctx, t.Nodes)
	}
	x, _, err := r.SaveBlob(ctx, TreeBlob, b, id.ID{})
	return x, err
}

// saveSplitTree stores nodes as parts of at most treePartBytes each
// (at least one node each), then the head that lists them.
func (r *Repository) saveSplitTree(ctx context.Context, nodes []*Node) (id.ID, error) {
	const overhead = 64 // {"version":1,"nodes":[…]} around the nodes
	var parts [][]*Node
	start, size := 0, overhead
	for i, n := range nodes {
		nb, err := json.Marshal(n)
		if err != nil {
			return id.ID{}, err
		}
		if i > start && size+len(nb)+1 > treePartBytes {
			parts = append(parts, nodes[start:i])
			start, size = i, overhead
		}
		size += len(nb) + 1
	}
	parts = append(parts, nodes[start:])
	if len(parts) > maxTreeParts {
		return id.ID{}, fmt.Errorf("directory listing of %d entries needs %d parts, more than the %d a tree may have", len(nodes), len(parts), maxTreeParts)
	}
	head := &Tree{Nodes: []*Node{}}
	for _, p := range parts {
		b, err := encodeTree(&Tree{Nodes: p})
		if err != nil {
			return id.ID{}, err
		}
		x, _, err := r.SaveBlob(ctx, TreeBlob, b, id.ID{})
		if err != nil {
			return id.ID{}, err
		}
		head.Parts = append(head.Parts, x)
	}
	b, err := encodeTree(head)
	if err != nil {
		return id.ID{}, err
	}
	x, _, err := r.SaveBlob(ctx, TreeBlob, b, id.ID{})
	return x, err
}

// LoadTree reads tree x, with the nodes of all its parts when it was
// split (t.Parts names them).
func (r *Repository) LoadTree(ctx context.Context, x id.ID) (*Tree, error) {
	b, err := r.LoadBlob(ctx, TreeBlob, x, nil)
	if err != nil {
		return nil, err
	}
	t, err := decodeTree(b)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", x.Short(), err)
	}
	for i, px := range t.Parts {
		b, err := r.LoadBlob(ctx, TreeBlob, px, nil)
		if err != nil {
			return nil, fmt.Errorf("tree %s, part %d (%s): %w", x.Short(), i+1, px.Short(), err)
		}
		p, err := decodeTree(b)
		if err == nil && len(p.Parts) > 0 {
			err = errors.New("malformed: a part names parts of its own")
		}
		if err != nil {
			return nil, fmt.Errorf("tree %s, part %d (%s): %w", x.Short(), i+1, px.Short(), err)
		}
		t.Nodes = append(t.Nodes, p.Nodes...)
	}
	return t, nil
}

// encodeTree is the plaintext of tree blob t (its version set: 1, or the
// head of a split tree when t has Parts).
func encodeTree(t *Tree) ([]byte, error) {
	t.Version = TreeVersion
	if len(t.Parts) > 0 {
		t.Version = treeVersionParts
	}
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
	switch {
	case t.Version == TreeVersion && len(t.Parts) == 0:
	case t.Version == treeVersionParts && len(t.Parts) > 0 && len(t.Parts) <= maxTreeParts && len(t.Nodes) == 0:
	case t.Version == TreeVersion || t.Version == treeVersionParts:
		return nil, fmt.Errorf("malformed: version %d tree with %d parts and %d nodes of its own", t.Version, len(t.Parts), len(t.Nodes))
	default:
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
	w := r.NewContentWriter()
	for _, e := range extents {
		if err := w.Add(ctx, e); err != nil {
			return err
		}
	}
	return w.Finish(ctx, n)
}

// ContentWriter stores a file's extents as they come, in the form
// SetContent gives them (inline up to InlineExtents, otherwise content
// lists of ContentListExtents each, the last shorter), so the same
// extents give the same content lists however they were written. It
// holds at most one content list of extents: a 10 TiB image, some 14
// million extents, takes 400 KiB instead of 670 MB.
type ContentWriter struct {
	r     *Repository
	buf   []Extent
	lists []id.ID
}

// NewContentWriter returns a writer of one file's content.
func (r *Repository) NewContentWriter() *ContentWriter { return &ContentWriter{r: r} }

// Add appends e.
func (w *ContentWriter) Add(ctx context.Context, e Extent) error {
	if len(w.buf) == ContentListExtents {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	w.buf = append(w.buf, e)
	return nil
}

// Zero appends n bytes of zeros, lengthening the last extent when it is
// zeros too.
func (w *ContentWriter) Zero(ctx context.Context, n int64) error {
	if k := len(w.buf); k > 0 && w.buf[k-1].Zero {
		w.buf[k-1].Len += n
		return nil
	}
	return w.Add(ctx, Extent{Len: n, Zero: true})
}

// flush stores the buffered extents as a content list.
func (w *ContentWriter) flush(ctx context.Context) error {
	b, err := json.Marshal(ContentList{Version: TreeVersion, Extents: w.buf})
	if err != nil {
		return err
	}
	x, _, err := w.r.SaveBlob(ctx, TreeBlob, b, id.ID{})
	if err != nil {
		return err
	}
	w.lists = append(w.lists, x)
	w.buf = w.buf[:0]
	return nil
}

// Finish sets n's content to the extents added. The writer is not used
// after.
func (w *ContentWriter) Finish(ctx context.Context, n *Node) error {
	n.Content, n.ContentLists = nil, nil
	if len(w.lists) == 0 && len(w.buf) <= InlineExtents {
		if len(w.buf) > 0 {
			n.Content = w.buf
		}
		return nil
	}
	if len(w.buf) > 0 {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	n.ContentLists = w.lists
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
		ext, err := r.LoadContentList(ctx, n, x)
		if err != nil {
			return err
		}
		for _, e := range ext {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// LoadContentList reads content list x of n (one of n.ContentLists) and
// returns its extents.
func (r *Repository) LoadContentList(ctx context.Context, n *Node, x id.ID) ([]Extent, error) {
	b, err := r.LoadBlob(ctx, TreeBlob, x, nil)
	if err != nil {
		return nil, fmt.Errorf("content list of %q: %w", n.Name, err)
	}
	var cl ContentList
	if err := json.Unmarshal(b, &cl); err != nil {
		return nil, fmt.Errorf("content list %s of %q: malformed: %w", x.Short(), n.Name, err)
	}
	if cl.Version != TreeVersion {
		return nil, fmt.Errorf("content list %s of %q: %w: version %d", x.Short(), n.Name, ErrUnsupportedVersion, cl.Version)
	}
	return cl.Extents, nil
}
