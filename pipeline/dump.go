package pipeline

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/drpipe/drpipe/repo"
	"golang.org/x/sys/unix"
)

// DumpResult says what Dump wrote.
type DumpResult struct {
	// Tar is set when the path was not a regular file and Dump wrote a
	// tar archive of it and everything below.
	Tar bool
	// Entries counts the archive's entries (1 for a file).
	Entries int64
	// Bytes counts the file content written (headers left out).
	Bytes int64
}

// ErrDumpDiskImage is wrapped when the path Dump is given is, or holds,
// a VM disk image: the snapshot keeps its virtual disk, not its container
// file, which only a restore rebuilds.
var ErrDumpDiskImage = errors.New("a VM disk image cannot be dumped")

// dumpBuf is how much file content Dump reads at a time.
const dumpBuf = 4 << 20

// Dump writes snapshot path p (absolute, as backed up; a relative one is
// taken from the snapshot's root, as a --stdin-name is) to w: a regular
// file as its content, anything else as a tar archive (POSIX, PAX where
// needed) of it and everything below, named by snapshot path without the
// leading slash, with modes, owners, times, symlinks, devices, FIFOs and
// extended attributes (SCHILY.xattr, as GNU tar --xattrs reads them).
// Holes are written as the zeros they read as; sockets are left out, as
// restore leaves them; hard links are written as separate files. A VM
// disk image, which only a restore rebuilds, is an error wrapping
// ErrDumpDiskImage, in an archive too (when it is met).
func Dump(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, p string, w io.Writer) (*DumpResult, error) {
	p = path.Clean("/" + p)
	cache := NewBlobCache(r, 64<<20)
	res := &DumpResult{}
	var tw *tar.Writer
	if p == "/" {
		// The whole snapshot is an archive, an empty one too.
		tw, res.Tar = tar.NewWriter(w), true
	}
	err := WalkSnapshot(ctx, r, sn, []string{p}, func(q string, n *repo.Node) error {
		if n.Type == repo.NodeFile && len(n.Disk) > 0 {
			return fmt.Errorf("%s: %w: the snapshot holds its virtual disk, not the image file; restore it (drpipe restore --path %s, with --disk-format raw for a raw disk), or read its raw view in drpipe mount", q, ErrDumpDiskImage, q)
		}
		if tw == nil && q == p && n.Type == repo.NodeFile {
			res.Entries++
			return dumpContent(ctx, r, n, cache, w, res)
		}
		if tw == nil {
			tw, res.Tar = tar.NewWriter(w), true
		}
		return dumpTarEntry(ctx, r, tw, q, n, cache, res)
	})
	if err != nil {
		return res, err
	}
	if tw != nil {
		if err := tw.Close(); err != nil {
			return res, fmt.Errorf("finish the tar archive: %w", err)
		}
	}
	return res, nil
}

// dumpTarEntry writes one tar entry for node n at snapshot path q.
func dumpTarEntry(ctx context.Context, r *repo.Repository, tw *tar.Writer, q string, n *repo.Node, cache *BlobCache, res *DumpResult) error {
	h := &tar.Header{
		Name:    strings.TrimPrefix(q, "/"),
		Mode:    int64(uint32(n.Mode.Perm()) | UnixModeBits(n.Mode)),
		Uid:     int(n.UID),
		Gid:     int(n.GID),
		ModTime: n.ModTime,
		Format:  tar.FormatPAX,
	}
	switch n.Type {
	case repo.NodeFile:
		h.Typeflag, h.Size = tar.TypeReg, n.Size
	case repo.NodeDir:
		h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
	case repo.NodeSymlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, n.LinkTarget
	case repo.NodeDev, repo.NodeCharDev:
		h.Typeflag = tar.TypeBlock
		if n.Type == repo.NodeCharDev {
			h.Typeflag = tar.TypeChar
		}
		h.Devmajor, h.Devminor = int64(unix.Major(n.Rdev)), int64(unix.Minor(n.Rdev))
	case repo.NodeFIFO:
		h.Typeflag = tar.TypeFifo
	default:
		return nil // a socket: nothing a tar (or a restore) can make
	}
	for k, v := range n.Xattrs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = string(v)
	}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write the tar header of %s: %w", q, err)
	}
	res.Entries++
	if n.Type == repo.NodeFile {
		return dumpContent(ctx, r, n, cache, tw, res)
	}
	return nil
}

// dumpContent writes file node n's content to w.
func dumpContent(ctx context.Context, r *repo.Repository, n *repo.Node, cache *BlobCache, w io.Writer, res *DumpResult) error {
	nr, err := NewNodeReader(ctx, r, n, cache)
	if err != nil {
		return err
	}
	buf := make([]byte, min(n.Size, dumpBuf))
	for off := int64(0); off < n.Size; {
		k, err := nr.ReadAtContext(ctx, buf[:min(int64(len(buf)), n.Size-off)], off)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return fmt.Errorf("write %s: %w", n.Name, werr)
			}
			off += int64(k)
			res.Bytes += int64(k)
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read %s at offset %d: %w", n.Name, off, err)
		}
		if k == 0 && err != nil {
			return fmt.Errorf("read %s: the content ends at %d of %d bytes", n.Name, off, n.Size)
		}
	}
	return nil
}
