package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/drpipe/drpipe/chunking"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/vmdisk"
)

// DiskMetaVersion is the format version of DiskMeta records.
const DiskMetaVersion = 1

// DiskMeta is what a snapshot records (repo.Node.Disk) for a VM disk image
// that backup recognised. The node's content is then the virtual disk, not
// the container file: Node.Size is the virtual size, and chunks are cut
// from virtual-disk bytes, so the same disk deduplicates across container
// formats. DiskMeta keeps what restore needs to rebuild a container of the
// same format (vmdisk.Info with the format parameters).
//
// Two modes:
//   - flat (Layer false): the content is the whole virtual disk as the
//     guest sees it; a differencing chain was merged (Flattened lists it).
//   - layer (Layer true): the content is this differencing image's own
//     data only (zeros elsewhere); Own lists its map (Data and Zero runs;
//     the rest comes from the parent named by Info.Backing, relative to the
//     image's directory, which is in the same snapshot).
type DiskMeta struct {
	Version int `json:"v"`
	vmdisk.Info
	Layer bool `json:"layer,omitempty"`
	// Own is the layer map inline; OwnBlob names a tree blob holding it
	// when it is long.
	Own     []diskRun `json:"own,omitempty"`
	OwnBlob *id.ID    `json:"own_blob,omitempty"`
	// Flattened lists the images merged into a flat record, top first.
	Flattened []ChainLink `json:"flattened,omitempty"`
}

// ChainLink describes one image of a flattened chain.
type ChainLink struct {
	Path     string        `json:"path"`
	Format   vmdisk.Format `json:"format"`
	FileSize int64         `json:"file_size"`
}

// diskRun is a compact [off, len, kind] triple.
type diskRun [3]int64

// inlineRuns is the longest layer map kept inside the node.
const inlineRuns = 256

// ParseDiskMeta decodes n.Disk; it returns nil, nil for a node without one.
func ParseDiskMeta(n *repo.Node) (*DiskMeta, error) {
	if len(n.Disk) == 0 {
		return nil, nil
	}
	var m DiskMeta
	if err := json.Unmarshal(n.Disk, &m); err != nil {
		return nil, fmt.Errorf("disk record of %s: malformed: %w", n.Name, err)
	}
	if m.Version != DiskMetaVersion {
		return nil, fmt.Errorf("disk record of %s: %w: version %d", n.Name, repo.ErrUnsupportedVersion, m.Version)
	}
	if m.VirtualSize != n.Size {
		return nil, fmt.Errorf("disk record of %s: virtual size %d differs from the content size %d", n.Name, m.VirtualSize, n.Size)
	}
	return &m, nil
}

// ownRuns returns the layer map, loading it from its blob if needed.
func (m *DiskMeta) ownRuns(ctx context.Context, r *repo.Repository) ([]vmdisk.Run, error) {
	raw := m.Own
	if m.OwnBlob != nil {
		b, err := r.LoadBlob(ctx, repo.TreeBlob, *m.OwnBlob, nil)
		if err != nil {
			return nil, fmt.Errorf("load layer map: %w", err)
		}
		if err := json.Unmarshal(b, &raw); err != nil {
			return nil, fmt.Errorf("layer map %s: malformed: %w", m.OwnBlob.Short(), err)
		}
	}
	out := make([]vmdisk.Run, 0, len(raw))
	var prev int64
	for _, x := range raw {
		if x[0] < prev || x[1] <= 0 || x[0] > m.VirtualSize || x[1] > m.VirtualSize-x[0] || x[2] != int64(vmdisk.Data) && x[2] != int64(vmdisk.Zero) {
			return nil, fmt.Errorf("layer map run %v is unsorted, empty or outside the disk", x)
		}
		out = append(out, vmdisk.Run{Off: x[0], Len: x[1], Kind: vmdisk.Kind(x[2])})
		prev = x[0] + x[1]
	}
	return out, nil
}

// knownRaw says why path is a raw disk whose header is not to be read
// ("" when it is not): its name ends in .raw, or the VM inventory gives
// it as raw (matched by its path or by its path with symlinks resolved).
func (b *backup) knownRaw(path string) string {
	if strings.EqualFold(filepath.Ext(path), ".raw") {
		return "its name ends in .raw"
	}
	if len(b.o.RawDisks) == 0 {
		return ""
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	if !b.o.RawDisks[abs] {
		// The inventory may name the disk through a symlinked
		// directory, or the backup path may be one.
		if real, err := filepath.EvalSymlinks(abs); err != nil || !b.o.RawDisks[real] {
			return ""
		}
	}
	return "the VM inventory gives it as raw"
}

// diskSource is a recognised disk image opened for backup.
type diskSource struct {
	r     io.ReaderAt
	size  int64
	data  []chunking.Range
	close func() error
}

// minDiskImage is the smallest file probed for a disk-image header
// whatever its size. Smaller ones are probed when their size is a whole
// number of 512-byte sectors (a VHD, a qcow2 image whose guest wrote
// some clusters), or a multiple of 8 bytes from minFreshQCOW2 on.
const minDiskImage = 1 << 20

// minFreshQCOW2 is the size of the smallest qcow2 image with qemu's
// default 64 KiB clusters: header, refcount table and refcount block
// clusters, and one 8-byte L1 entry, which ends a fresh image.
const minFreshQCOW2 = 3<<16 + 8

// minQCOW2 is the size of the smallest fresh qcow2 image there can be:
// three 512-byte clusters and one L1 entry.
const minQCOW2 = 3*512 + 8

// qcow2Name reports whether path is named as qcow2 images are (.qcow2,
// .qcow, and .img, which libvirt gives qcow2 and raw disks alike).
func qcow2Name(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".qcow2", ".qcow", ".img":
		return true
	}
	return false
}

// openDisk recognises a disk image container in f. It returns nil for
// raw images and other files (backed up as they are), and otherwise fills
// n.Size and n.Disk and returns the virtual disk to chunk. An image that
// cannot be parsed is reported as a warning and backed up as a plain file.
func (b *backup) openDisk(path string, f *os.File, n *repo.Node) *diskSource {
	// Probing every small file's first and last block would put a
	// synchronous read in the walker's path: a tree of small files
	// backed up 10% slower when one in eight was probed. But a qcow2
	// overlay or a differencing VHD is a few hundred KiB until the guest
	// writes to it, and read as a plain file it would leave its parent's
	// data out of the snapshot. A VHD is whole sectors long; a fresh
	// qcow2 image ends with its L1 table (196616 bytes with the default
	// clusters). That rules out all but about one small file in 400.
	// With smaller clusters (qemu-img -o cluster_size=4k) a fresh image
	// is smaller still: those are probed when named as disk images are.
	if b.o.NoDiskImages || n.Size < minDiskImage && !(n.Size > 0 && n.Size%512 == 0 || n.Size >= minFreshQCOW2 && n.Size%8 == 0 ||
		n.Size >= minQCOW2 && n.Size%8 == 0 && qcow2Name(path)) {
		return nil
	}
	format, err := vmdisk.Detect(f, n.Size)
	if err != nil || format == vmdisk.Raw {
		return nil
	}
	if why := b.knownRaw(path); why != "" {
		// The guest wrote the header: its disk is the file's bytes.
		b.progress.Warn(path, fmt.Errorf("starts with a %s header, but is a raw disk (%s): backed up as a plain file, its header not followed", format, why))
		return nil
	}
	top, err := vmdisk.OpenLayer(f, path, format, vmdisk.Limits{})
	if err != nil {
		b.progress.Warn(path, fmt.Errorf("not read as a %s disk image, backed up as a plain file: %w", format, err))
		return nil
	}
	meta := &DiskMeta{Version: DiskMetaVersion, Info: top.Info}
	parentIn := top.Info.Backing != "" && b.inBackup(top.Info.Path, top.Info.Backing)
	flatten := top.Info.Backing != "" && (b.o.Flatten || !parentIn)
	var ds *diskSource
	if flatten {
		// The flattened disk is restored as the image's: its parents
		// are opened with the rights of everyone who may rewrite it.
		var lim vmdisk.Limits
		if st, err := f.Stat(); err == nil {
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				if ws := imageWriters(sys); len(ws) > 0 {
					lim.OpenParent = func(name string) (*os.File, error) { return openAsEach(ws, name) }
				}
			}
		}
		d, err := vmdisk.OpenFile(f, path, lim)
		switch {
		case err != nil && parentIn:
			// --flatten asked for it; the parent is backed up as well, so
			// the chain still restores.
			b.progress.Warn(path, fmt.Errorf("cannot flatten the backing chain, backing up this image as a layer: %w", err))
		case err != nil:
			// The snapshot gets the layer alone: a restore cannot give a
			// usable disk. The backup is partial (exit 3).
			b.warn(path, fmt.Errorf("cannot read the backing chain, and its parent %s is not in the backup paths: backing up this image as a layer alone, which does not restore to a usable disk; make the parent readable or add its directory to the backup: %w", top.Info.Backing, err))
		default:
			al, err := d.Allocated()
			if err != nil {
				d.Close()
				b.progress.Warn(path, fmt.Errorf("not read as a disk image, backed up as a plain file: %w", err))
				return nil
			}
			for _, l := range d.Layers {
				meta.Flattened = append(meta.Flattened, ChainLink{Path: l.Info.Path, Format: l.Info.Format, FileSize: l.Info.FileSize})
			}
			meta.Backing, meta.BackingFormat = "", ""
			ds = &diskSource{r: d, size: d.Size(), data: toChunkRanges(al), close: d.Close}
		}
	}
	if ds == nil {
		runs, err := top.Runs()
		if err != nil {
			b.progress.Warn(path, fmt.Errorf("not read as a disk image, backed up as a plain file: %w", err))
			return nil
		}
		var data []vmdisk.Range
		for _, r := range runs {
			if r.Kind == vmdisk.Data {
				data = append(data, vmdisk.Range{Off: r.Off, Len: r.Len})
			}
		}
		if top.Info.Backing != "" {
			meta.Layer = true
			own := make([]diskRun, len(runs))
			for i, r := range runs {
				own[i] = diskRun{r.Off, r.Len, int64(r.Kind)}
			}
			if len(own) <= inlineRuns {
				meta.Own = own
			} else {
				raw, err := json.Marshal(own)
				if err != nil {
					b.fatal(err)
					return nil
				}
				x, _, err := b.r.SaveBlob(b.ctx, repo.TreeBlob, raw, id.ID{})
				if err != nil {
					b.fatal(fmt.Errorf("store layer map of %s: %w", path, err))
					return nil
				}
				meta.OwnBlob = &x
				n.Refs = []id.ID{x} // so prune, copy and check know the blob
			}
		}
		ds = &diskSource{r: top, size: top.Size(), data: toChunkRanges(data), close: top.Close}
	}
	raw, err := json.Marshal(meta)
	if err != nil {
		ds.close()
		b.fatal(err)
		return nil
	}
	n.Disk = raw
	n.Size = ds.size
	return ds
}

func toChunkRanges(rs []vmdisk.Range) []chunking.Range {
	out := make([]chunking.Range, len(rs))
	for i, r := range rs {
		out[i] = chunking.Range{Off: r.Off, Len: r.Len}
	}
	return out
}

// inBackup reports whether the parent ref of the image at imgPath is
// inside one of the backup paths (so the chain is backed up with it).
// The name is followed as the snapshot follows it: through the symlinks
// the backup stores (those at or below a backup path), by their text,
// every step named under a backup path as given (link/images, not what
// link leads to). A link that leads out of the paths, by a relative or an
// absolute target, is stored alone, and the chain would not restore.
func (b *backup) inBackup(imgPath, ref string) bool {
	p := ref
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(imgPath), ref)
	}
	p = filepath.Clean(p)
	if _, err := os.Stat(p); err != nil {
		return false
	}
	for hops := 0; hops <= maxLinkHops; hops++ {
		if !b.underPaths(p) {
			return false
		}
		link, rest, ok := b.firstStoredLink(p)
		if !ok {
			return true
		}
		target, err := os.Readlink(link)
		if err != nil {
			return false
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(link), target)
		}
		p = filepath.Clean(filepath.Join(target, rest))
	}
	return false
}

// maxLinkHops is how many symlinks a name is followed through, as Linux
// follows at most 40.
const maxLinkHops = 40

// firstStoredLink returns the first prefix of absolute path p that is a
// symlink the backup stores as such (at or below a backup path), and what
// follows it in p.
func (b *backup) firstStoredLink(p string) (link, rest string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i := range parts {
		q := "/" + strings.Join(parts[:i+1], "/")
		if !b.underPaths(q) {
			continue // above the backup paths: the snapshot's ancestors
		}
		if fi, err := os.Lstat(q); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			return q, strings.Join(parts[i+1:], "/"), true
		}
	}
	return "", "", false
}

// underPaths reports whether absolute path p is one of the backup paths,
// as given, or below one.
func (b *backup) underPaths(p string) bool {
	for _, root := range b.o.Paths {
		a, err := filepath.Abs(root)
		if err != nil {
			continue
		}
		if p == a || a == "/" || strings.HasPrefix(p, a+"/") {
			return true
		}
	}
	return false
}

// diskUnchanged reports whether a disk node of the parent snapshot can be
// reused for n (still holding Lstat's container size): same container
// file, not flattened (a flattened record also depends on its parents).
func (b *backup) diskUnchanged(p, n *repo.Node) bool {
	m, err := ParseDiskMeta(p)
	if err != nil || m == nil || len(m.Flattened) > 0 || b.o.NoDiskImages {
		return false
	}
	if m.Layer && b.o.Flatten {
		return false
	}
	return p.Type == repo.NodeFile && m.FileSize == n.Size && p.ModTime.Equal(n.ModTime) &&
		p.ChangeTime.Equal(n.ChangeTime) && p.Inode == n.Inode && b.contentKnown(p) &&
		(m.OwnBlob == nil || b.r.Has(repo.TreeBlob, *m.OwnBlob))
}

// diskRefs returns the blobs disk node n's record names besides its
// content (its layer map, when kept out of line), for Node.Refs.
func diskRefs(n *repo.Node) []id.ID {
	if m, err := ParseDiskMeta(n); err == nil && m != nil && m.OwnBlob != nil {
		return []id.ID{*m.OwnBlob}
	}
	return nil
}

// DiskFormatOriginal restores a disk image in the format it was backed up
// from (the default).
const DiskFormatOriginal = "original"

// SnapshotDisk is the flattened virtual disk of a disk node in a snapshot,
// read on demand from the repository. For a layer record the parents are
// looked up in the same snapshot. It is safe for concurrent use.
type SnapshotDisk struct {
	// Meta is the node's disk record.
	Meta *DiskMeta
	size int64
	top  *NodeReader
	own  []vmdisk.Run // layer map (nil for flat records)
	par  *SnapshotDisk
}

// OpenSnapshotDisk opens the disk node n found at snapshot path snapPath
// in the snapshot whose root tree is root.
func OpenSnapshotDisk(ctx context.Context, r *repo.Repository, root id.ID, snapPath string, n *repo.Node, cache *BlobCache) (*SnapshotDisk, error) {
	return openSnapshotDisk(ctx, r, root, snapPath, n, cache, 0)
}

func openSnapshotDisk(ctx context.Context, r *repo.Repository, root id.ID, snapPath string, n *repo.Node, cache *BlobCache, depth int) (*SnapshotDisk, error) {
	if depth > 32 {
		return nil, fmt.Errorf("disk %s: backing chain deeper than 32 images (cycle?)", snapPath)
	}
	m, err := ParseDiskMeta(n)
	if err != nil {
		return nil, err
	}
	nr, err := NewNodeReader(ctx, r, n, cache)
	if err != nil {
		return nil, err
	}
	sd := &SnapshotDisk{Meta: m, size: n.Size, top: nr}
	if m == nil || !m.Layer {
		return sd, nil
	}
	if sd.own, err = m.ownRuns(ctx, r); err != nil {
		return nil, fmt.Errorf("disk %s: %w", snapPath, err)
	}
	pp := m.Backing
	if !path.IsAbs(pp) {
		pp = path.Join(path.Dir(snapPath), pp)
	}
	// qemu opens the backing file through symlinks (base.qcow2 ->
	// images/base-v1.qcow2, or a directory images -> store): follow the
	// snapshot's, or the parent's data would read as the zeros of a
	// symlink's empty content. pp stays the name the image gives, which
	// the parent's own backing file is relative to, as it is for qemu.
	pn, err := findFollowing(ctx, r, root, pp)
	if err != nil {
		return nil, fmt.Errorf("disk %s: its backing file %s: %w (back up the whole chain, or use --flatten)", snapPath, pp, err)
	}
	if pn.Type != repo.NodeFile {
		return nil, fmt.Errorf("disk %s: its backing file %s is not a file in the snapshot (back up the whole chain, or use --flatten)", snapPath, pp)
	}
	if len(pn.Disk) == 0 && m.BackingFormat != vmdisk.Raw {
		// A parent image backup could not read (it warned) is in the
		// snapshot as its container file: read as a disk, its headers
		// and tables would be served as the guest's data.
		f := m.BackingFormat
		if f == "" {
			pr, err := NewNodeReader(ctx, r, pn, cache)
			if err != nil {
				return nil, fmt.Errorf("disk %s: its backing file %s: %w", snapPath, pp, err)
			}
			if f, err = vmdisk.Detect(pr.ReaderAt(ctx), pn.Size); err != nil {
				return nil, fmt.Errorf("disk %s: its backing file %s: %w", snapPath, pp, err)
			}
		}
		if f != vmdisk.Raw {
			return nil, fmt.Errorf("disk %s: its backing file %s is a %s image the snapshot holds as a plain file (backup could not read it as an image), so the disk cannot be flattened: restore both in their original format and read them with qemu", snapPath, pp, f)
		}
	}
	if pm, err := ParseDiskMeta(pn); err == nil && pm != nil && m.BackingFormat != "" && pm.Format != m.BackingFormat {
		// As for qemu, the format the image names is the one its parent
		// is read in: a raw parent's bytes are its data, a qcow2 header
		// among them included, and those bytes are not what the snapshot
		// holds of a parent it recorded as an image.
		return nil, fmt.Errorf("disk %s: its backing file %s is in the snapshot as a %s image, but the image reads it as %s, which the snapshot does not hold: the disk cannot be flattened from this snapshot", snapPath, pp, pm.Format, m.BackingFormat)
	}
	if sd.par, err = openSnapshotDisk(ctx, r, root, pp, pn, cache, depth+1); err != nil {
		return nil, err
	}
	return sd, nil
}

// ErrNotFound is wrapped when a snapshot path does not exist.
var ErrNotFound = errors.New("not found in the snapshot")

// FindNode returns the node at absolute snapshot path p.
func FindNode(ctx context.Context, r *repo.Repository, root id.ID, p string) (*repo.Node, error) {
	parts := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	tree := root
	for i, name := range parts {
		t, err := r.LoadTree(ctx, tree)
		if err != nil {
			return nil, err
		}
		k := sort.Search(len(t.Nodes), func(j int) bool { return t.Nodes[j].Name >= name })
		if k == len(t.Nodes) || t.Nodes[k].Name != name {
			return nil, fmt.Errorf("%s: %w", p, ErrNotFound)
		}
		nd := t.Nodes[k]
		if i == len(parts)-1 {
			return nd, nil
		}
		if nd.Type != repo.NodeDir || nd.Subtree == nil {
			return nil, fmt.Errorf("%s: %s is not a directory: %w", p, name, ErrNotFound)
		}
		tree = *nd.Subtree
	}
	return nil, fmt.Errorf("%s: %w", p, ErrNotFound)
}

// findFollowing returns the node at absolute snapshot path p as opening
// p would find it: the snapshot's symlinks are followed, those of the
// directories on the way as the last one, at most 40 of them (where Linux
// gives up too).
func findFollowing(ctx context.Context, r *repo.Repository, root id.ID, p string) (*repo.Node, error) {
	names := func(p string) []string {
		return strings.FieldsFunc(path.Clean("/"+p), func(c rune) bool { return c == '/' })
	}
	rest, dir, tree := names(p), "/", root
	for links := 0; len(rest) > 0; {
		t, err := r.LoadTree(ctx, tree)
		if err != nil {
			return nil, err
		}
		name := rest[0]
		k := sort.Search(len(t.Nodes), func(j int) bool { return t.Nodes[j].Name >= name })
		if k == len(t.Nodes) || t.Nodes[k].Name != name {
			return nil, fmt.Errorf("%s: %w", p, ErrNotFound)
		}
		nd := t.Nodes[k]
		rest = rest[1:]
		switch {
		case nd.Type == repo.NodeSymlink:
			if links++; links > maxLinkHops {
				return nil, fmt.Errorf("%s: too many levels of symbolic links", p)
			}
			target := nd.LinkTarget
			if !path.IsAbs(target) {
				target = path.Join(dir, target)
			}
			rest, dir, tree = append(names(target), rest...), "/", root
		case len(rest) == 0:
			return nd, nil
		case nd.Type != repo.NodeDir || nd.Subtree == nil:
			return nil, fmt.Errorf("%s: %s is not a directory: %w", p, name, ErrNotFound)
		default:
			dir, tree = path.Join(dir, name), *nd.Subtree
		}
	}
	// p, or a link on the way, leads to the snapshot's root.
	return nil, fmt.Errorf("%s: %w", p, ErrNotFound)
}

// Size returns the virtual disk size.
func (sd *SnapshotDisk) Size() int64 { return sd.size }

// Data returns ranges that may hold non-zero data.
func (sd *SnapshotDisk) Data() []vmdisk.Range {
	out := sd.top.Data()
	if sd.par != nil {
		for _, r := range sd.par.Data() {
			if r.Off < sd.size {
				out = append(out, vmdisk.Range{Off: r.Off, Len: min(r.Len, sd.size-r.Off)})
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Off < out[j].Off })
		merged := out[:0]
		for _, r := range out {
			if k := len(merged); k > 0 && r.Off <= merged[k-1].Off+merged[k-1].Len {
				merged[k-1].Len = max(merged[k-1].Off+merged[k-1].Len, r.Off+r.Len) - merged[k-1].Off
				continue
			}
			merged = append(merged, r)
		}
		out = merged
	}
	return out
}

// ReadAtContext reads the flattened virtual disk.
func (sd *SnapshotDisk) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if sd.par == nil {
		return sd.top.ReadAtContext(ctx, p, off)
	}
	if off >= sd.size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > sd.size-off {
		p, eof = p[:sd.size-off], io.EOF
	}
	done := int64(0)
	i := sort.Search(len(sd.own), func(i int) bool { return sd.own[i].End() > off })
	for done < int64(len(p)) {
		pos := off + done
		var n int64
		var mine bool
		switch {
		case i < len(sd.own) && sd.own[i].Off <= pos:
			n, mine = min(int64(len(p))-done, sd.own[i].End()-pos), true
			i++
		case i < len(sd.own):
			n = min(int64(len(p))-done, sd.own[i].Off-pos)
		default:
			n = int64(len(p)) - done
		}
		q := p[done : done+n]
		if mine {
			if _, err := sd.top.ReadAtContext(ctx, q, pos); err != nil && err != io.EOF {
				return int(done), err
			}
		} else if pos >= sd.par.size {
			clear(q)
		} else {
			m, err := sd.par.ReadAtContext(ctx, q, pos)
			if err != nil && err != io.EOF {
				return int(done), err
			}
			clear(q[m:])
		}
		done += n
	}
	return len(p), eof
}

// ReaderAt adapts sd to io.ReaderAt for one operation under ctx.
func (sd *SnapshotDisk) ReaderAt(ctx context.Context) io.ReaderAt { return sdReaderAt{ctx, sd} }

type sdReaderAt struct {
	ctx context.Context
	sd  *SnapshotDisk
}

func (s sdReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return s.sd.ReadAtContext(s.ctx, p, off)
}

// restoreDisk writes disk node n as an image file in the requested format
// (a flat record restored as raw takes the plain, batched file path).
// Problems with this file are recorded as failures; the error is fatal.
func (rs *restorer) restoreDisk(n *repo.Node, sp string, dir *restoreDir, dp string) error {
	m, err := ParseDiskMeta(n)
	if err != nil {
		rs.fail(dp, err)
		return nil
	}
	want := rs.o.DiskFormat
	if want == "" {
		want = DiskFormatOriginal
	}
	var format vmdisk.Format
	if want == DiskFormatOriginal {
		format = m.Format
	} else if format, err = vmdisk.ParseFormat(want); err != nil {
		return err
	}
	if format != m.Format {
		// dc01.vhdx -> dc01.raw, unless another entry of the directory has
		// that name or an earlier conversion took it (disk.qcow2 and
		// disk.vhdx both to raw): then dc01.vhdx.raw. Never two disks
		// written to one file.
		taken := func(p string) bool { return rs.dirNames[filepath.Base(p)] || rs.converted[p] }
		conv := strings.TrimSuffix(dp, filepath.Ext(dp)) + format.Ext()
		if taken(conv) {
			conv = dp + format.Ext()
		}
		// The fallback may be taken too (the snapshot holds dc01.raw and
		// dc01.vhdx.raw): dc01.vhdx.2.raw, and so on.
		for i := 2; taken(conv); i++ {
			conv = fmt.Sprintf("%s.%d%s", dp, i, format.Ext())
		}
		rs.converted[conv] = true
		dp = conv
	}
	if format == vmdisk.Raw && !m.Layer {
		return rs.file(rawNode(n, filepath.Base(dp)), dir, filepath.Base(dp), dp)
	}
	rs.total.Add(n.Size)
	o := vmdisk.WriteOptions{Format: format, Dir: dir.f}
	var src vmdisk.Source
	if format == m.Format {
		o.QCOW2, o.VHD, o.VHDX = m.QCOW2, m.VHD, m.VHDX
	}
	// A layer stays a layer (its parent reference, only its own data) in
	// its own format, as long as the parent keeps its name: in a restore
	// in the original formats, or when the format asked for is the
	// parent's too (a converted parent gets another name), and unless the
	// caller asked for self-contained disks (Flatten). Otherwise it is
	// flattened.
	if format == m.Format && m.Layer && !rs.o.Flatten && (want == DiskFormatOriginal || m.BackingFormat == format) {
		// Keep the chain: the same parent reference, only this layer's data.
		nr, err := NewNodeReader(rs.ctx, rs.r, n, nil)
		if err == nil {
			var own []vmdisk.Run
			if own, err = m.ownRuns(rs.ctx, rs.r); err == nil {
				src = vmdisk.Source{Size: n.Size, R: nr.ReaderAt(rs.ctx), Backing: m.Backing, BackingFormat: m.BackingFormat, Own: own}
			}
		}
		if err != nil {
			rs.fail(dp, err)
			return nil
		}
	} else {
		sd, err := OpenSnapshotDisk(rs.ctx, rs.r, rs.root, sp, n, nil)
		if err != nil {
			rs.fail(dp, err)
			return nil
		}
		src = vmdisk.Source{Size: sd.Size(), R: sd.ReaderAt(rs.ctx), Data: sd.Data()}
	}
	res, err := vmdisk.Write(rs.ctx, dp, src, o)
	if err != nil {
		rs.fail(dp, err)
		return nil
	}
	rs.written.Add(res.DataBytes)
	rs.progress.AddDone(0, n.Size)
	if err := rs.applyMeta(dir, filepath.Base(dp), dp, n, rs.inheritsACL(dir)); err != nil {
		rs.fail(dp, err)
		return nil
	}
	// Only now: a disk that failed, or its metadata, is listed, not counted.
	rs.files.Add(1)
	rs.progress.AddDone(1, 0)
	if src.Backing != "" {
		rs.layers = append(rs.layers, restoredLayer{dp, src.Backing})
	}
	return nil
}

// rawNode is n renamed, without its disk record.
func rawNode(n *repo.Node, name string) *repo.Node {
	c := *n
	c.Name, c.Disk = name, nil
	return &c
}
