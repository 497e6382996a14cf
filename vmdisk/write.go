package vmdisk

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Source is what a writer turns into an image file.
type Source struct {
	// Size is the virtual disk size.
	Size int64
	// R reads the virtual disk (for a layer: the layer alone, see Own).
	R io.ReaderAt
	// Data lists the ranges of R that may hold non-zero bytes, sorted and
	// disjoint; everything else is zero. Nil means all of [0, Size).
	Data []Range
	// Backing, when set, makes the image a differencing layer over this
	// parent reference (written into the image as given); Own is then the
	// layer's own map and ranges outside it are left unallocated.
	Backing       string
	BackingFormat Format
	Own           []Run
}

// WriteOptions choose the container to write.
type WriteOptions struct {
	Format Format
	// Optional parameters of the source container, reused when the format
	// matches (cluster and block sizes, VHD geometry and creator, ids).
	QCOW2 *QCOW2Params
	VHD   *VHDParams
	VHDX  *VHDXParams
	// Dir, when set, is the open directory the image is written in: its
	// temporary file, the rename and the sync go through the descriptor
	// with path's last element as the name, so a directory of path
	// replaced by a symlink meanwhile cannot redirect the image. path
	// is then only named in messages.
	Dir *os.File
}

// WriteResult reports what a writer did.
type WriteResult struct {
	// DataBytes is the virtual-disk data written (excluding zeros skipped).
	DataBytes int64
	// FileSize is the size of the image file.
	FileSize int64
}

// Write writes src as an image file at path (or in o.Dir) in the chosen
// format. It writes a temporary file next to path, syncs it and renames
// it into place, so path is either the complete image or untouched.
func Write(ctx context.Context, path string, src Source, o WriteOptions) (*WriteResult, error) {
	if src.Size < 0 {
		return nil, fmt.Errorf("write %s: negative virtual size %d", path, src.Size)
	}
	if src.Backing != "" && o.Format == Raw {
		return nil, fmt.Errorf("write %s: a raw image cannot have a backing file; flatten the chain", path)
	}
	if src.Backing == "" {
		if src.Data == nil && src.Size > 0 { // an empty disk has no data at all
			src.Data = []Range{{0, src.Size}}
		}
		src.Own = nil
		for _, r := range src.Data {
			src.Own = append(src.Own, Run{r.Off, r.Len, Data})
		}
	}
	for i, r := range src.Own {
		if r.Off < 0 || r.Len <= 0 || r.Len > src.Size-r.Off || i > 0 && r.Off < src.Own[i-1].End() {
			return nil, fmt.Errorf("write %s: map run [%d,+%d) is empty, unsorted or outside the %d-byte disk", path, r.Off, r.Len, src.Size)
		}
	}
	dir := o.Dir
	if dir == nil {
		d, err := os.Open(filepath.Dir(path))
		if err != nil {
			return nil, fmt.Errorf("write disk image %s: %w", path, err)
		}
		defer d.Close()
		dir = d
	}
	dfd, name := int(dir.Fd()), filepath.Base(path)
	tmp, tmpName, err := createTemp(dfd, "."+name+".tmp-", path)
	if err != nil {
		return nil, fmt.Errorf("write disk image %s: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			unix.Unlinkat(dfd, tmpName, 0)
		}
	}()
	w := &imgWriter{ctx: ctx, f: tmp, name: path, src: src}
	switch o.Format {
	case Raw:
		err = w.raw()
	case QCOW2:
		err = w.qcow2(o.QCOW2)
	case VHDX:
		err = w.vhdx(o.VHDX)
	case VHD:
		err = w.vhd(o.VHD)
	default:
		err = fmt.Errorf("unknown disk format %q", o.Format)
	}
	if err != nil {
		return nil, fmt.Errorf("write %s image %s: %w", o.Format, path, err)
	}
	st, err := tmp.Stat()
	if err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Chmod(0o600); err != nil { // whatever the umask
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", path, err)
	}
	if err := unix.Renameat(dfd, tmpName, dfd, name); err != nil {
		return nil, fmt.Errorf("rename into %s: %w", path, err)
	}
	ok = true
	_ = dir.Sync()
	return &WriteResult{DataBytes: w.data, FileSize: st.Size()}, nil
}

// createTemp creates a new file, mode 0600, named prefix and a random
// suffix in directory dfd without following a symlink; path names the
// image in messages.
func createTemp(dfd int, prefix, path string) (*os.File, string, error) {
	for try := 0; ; try++ {
		var b [8]byte
		rand.Read(b[:])
		name := fmt.Sprintf("%s%x", prefix, b)
		fd, err := unix.Openat(dfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			return os.NewFile(uintptr(fd), filepath.Join(filepath.Dir(path), name)), name, nil
		}
		if (err != unix.EEXIST && err != unix.EINTR) || try == 100 {
			return nil, "", err
		}
	}
}

type imgWriter struct {
	ctx  context.Context
	f    *os.File
	name string
	src  Source
	data int64
	buf  []byte
}

// blocks calls fn, in order, for every block of size g that the source
// map touches, with the block's content in buf (zeros where the map has
// no Data) and the runs inside it.
func (w *imgWriter) blocks(g int64, fn func(blk int64, buf []byte, in []Run) error) error {
	if int64(cap(w.buf)) < g {
		w.buf = make([]byte, g)
	}
	runs := w.src.Own
	var cur []Run
	curBlk := int64(-1)
	flush := func() error {
		if curBlk < 0 {
			return nil
		}
		if err := w.ctx.Err(); err != nil {
			return err
		}
		start := curBlk * g
		n := min(g, w.src.Size-start)
		buf := w.buf[:n]
		clear(buf)
		for _, r := range cur {
			if r.Kind != Data {
				continue
			}
			if err := readSrc(w.src.R, buf[r.Off-start:r.End()-start], r.Off); err != nil {
				return err
			}
		}
		err := fn(curBlk, buf, cur)
		cur, curBlk = cur[:0], -1
		return err
	}
	for _, r := range runs {
		for off := r.Off; off < r.End(); {
			b := off / g
			end := min(r.End(), (b+1)*g)
			if b != curBlk {
				if err := flush(); err != nil {
					return err
				}
				curBlk = b
			}
			cur = append(cur, Run{off, end - off, r.Kind})
			off = end
		}
	}
	return flush()
}

func readSrc(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read source at offset %d: %w", off, err)
}

func allZeroBytes(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// raw writes a sparse raw image: zero blocks stay holes.
func (w *imgWriter) raw() error {
	if err := w.f.Truncate(w.src.Size); err != nil {
		return err
	}
	const g = 1 << 20
	return w.blocks(g, func(blk int64, buf []byte, _ []Run) error {
		for o := 0; o < len(buf); o += 64 << 10 {
			p := buf[o:min(len(buf), o+64<<10)]
			if allZeroBytes(p) {
				continue
			}
			if _, err := w.f.WriteAt(p, blk*g+int64(o)); err != nil {
				return err
			}
			w.data += int64(len(p))
		}
		return nil
	})
}

// fullyCovered reports whether runs cover [start, start+n) completely.
func fullyCovered(in []Run, start, n int64) bool {
	pos := start
	for _, r := range in {
		if r.Off != pos {
			return false
		}
		pos = r.End()
	}
	return pos == start+n
}

// qcow2 writes a qcow2 v3 image: header, then data clusters with each L2
// table after the data it maps, then the L1 table, the refcount table and
// the refcount blocks, every cluster referenced exactly once.
func (w *imgWriter) qcow2(p *QCOW2Params) error {
	bits := 16
	if p != nil && p.ClusterBits >= 9 && p.ClusterBits <= 21 {
		bits = p.ClusterBits
	}
	cs := int64(1) << bits
	l2n := cs / 8
	// Extended L2 entries keep a layer's map per subcluster, as the
	// source image did.
	ext := p != nil && p.ExtendedL2 && bits >= 14
	if ext {
		l2n = cs / 16
	}
	span := cs * l2n
	l1Size := (w.src.Size + span - 1) / span
	if l1Size*8 > qcowMaxL1Bytes {
		return fmt.Errorf("virtual size %d needs an L1 table larger than 32 MiB with %d-byte clusters", w.src.Size, cs)
	}
	l1 := make([]uint64, l1Size)
	bw := &clusterWriter{f: w.f, cs: cs, next: 1}
	var l2 []byte
	l2Idx := int64(-1)
	flushL2 := func() error {
		if l2Idx < 0 {
			return nil
		}
		at, err := bw.put(l2)
		if err != nil {
			return err
		}
		l1[l2Idx] = uint64(at) | 1<<63
		l2Idx = -1
		return nil
	}
	layer := w.src.Backing != ""
	err := w.blocks(cs, func(c int64, buf []byte, in []Run) error {
		var e uint64
		var bitmap uint64 = 0xffffffff // extended L2: the subclusters allocated
		covered := fullyCovered(in, c*cs, int64(len(buf)))
		if layer && !covered && ext {
			var err error
			if bitmap, err = subclusters(in, c*cs, c*cs+int64(len(buf)), cs/32); err != nil {
				return err
			}
		}
		switch {
		case layer && !covered && !ext:
			return fmt.Errorf("layer map run at %d is not aligned to the %d-byte cluster size; restore this chain flattened", in[0].Off, cs)
		case allZeroBytes(buf):
			if !layer {
				return nil // unallocated reads as zeros without a backing file
			}
			e = qcowZeroBit
			if ext {
				e, bitmap = 0, bitmap<<32 // the same subclusters, read as zeros
			}
		default:
			if int64(len(buf)) < cs { // last partial cluster
				buf = append(buf, make([]byte, cs-int64(len(buf)))...)
			}
			at, err := bw.put(buf)
			if err != nil {
				return err
			}
			w.data += cs
			e = uint64(at) | 1<<63
		}
		if i := c / l2n; i != l2Idx {
			if err := flushL2(); err != nil {
				return err
			}
			l2Idx, l2 = i, make([]byte, cs)
		}
		if ext {
			binary.BigEndian.PutUint64(l2[16*(c%l2n):], e)
			binary.BigEndian.PutUint64(l2[16*(c%l2n)+8:], bitmap)
		} else {
			binary.BigEndian.PutUint64(l2[8*(c%l2n):], e)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := flushL2(); err != nil {
		return err
	}
	// L1 table.
	l1b := make([]byte, (l1Size*8+cs-1)/cs*cs)
	for i, e := range l1 {
		binary.BigEndian.PutUint64(l1b[8*i:], e)
	}
	var l1Off int64 // an empty disk has no L1 table (a cluster for it would leak)
	if len(l1b) > 0 {
		if l1Off, err = bw.put(l1b); err != nil {
			return err
		}
	}
	// Refcount table and blocks covering every cluster, themselves included.
	perBlock := cs / 2
	t := bw.next
	var rb, rt int64
	for {
		nrb := (t + rb + rt + perBlock - 1) / perBlock
		nrt := (nrb*8 + cs - 1) / cs
		if nrb == rb && nrt == rt {
			break
		}
		rb, rt = nrb, nrt
	}
	total := t + rt + rb
	rtb := make([]byte, rt*cs)
	for i := int64(0); i < rb; i++ {
		binary.BigEndian.PutUint64(rtb[8*i:], uint64((t+rt+i)*cs))
	}
	rtOff, err := bw.put(rtb)
	if err != nil {
		return err
	}
	blk := make([]byte, cs)
	for i := int64(0); i < rb; i++ {
		clear(blk)
		for j := int64(0); j < perBlock && i*perBlock+j < total; j++ {
			binary.BigEndian.PutUint16(blk[2*j:], 1)
		}
		if _, err := bw.put(blk); err != nil {
			return err
		}
	}
	if err := bw.flush(); err != nil {
		return err
	}
	// Header (cluster 0).
	h := make([]byte, cs)
	be := binary.BigEndian
	copy(h, qcowMagic)
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], uint32(bits))
	be.PutUint64(h[24:], uint64(w.src.Size))
	be.PutUint32(h[36:], uint32(l1Size))
	be.PutUint64(h[40:], uint64(l1Off))
	be.PutUint64(h[48:], uint64(rtOff))
	be.PutUint32(h[56:], uint32(rt))
	if ext {
		be.PutUint64(h[72:], qcowIncompatExtL2)
	}
	be.PutUint32(h[96:], 4) // refcount_order: 16-bit refcounts
	be.PutUint32(h[100:], 104)
	pos := 104
	if layer {
		if len(w.src.Backing) > 1023 {
			return fmt.Errorf("backing file name of %d bytes is too long", len(w.src.Backing))
		}
		if w.src.BackingFormat != "" {
			bf := string(w.src.BackingFormat)
			if w.src.BackingFormat == VHD {
				bf = "vpc"
			}
			be.PutUint32(h[pos:], qcowExtBackingFmt)
			be.PutUint32(h[pos+4:], uint32(len(bf)))
			copy(h[pos+8:], bf)
			pos += 8 + (len(bf)+7)&^7
		}
		pos += 8 // end-of-extensions marker (zeros)
		if int64(pos+len(w.src.Backing)) > cs {
			return fmt.Errorf("backing file name does not fit in the first cluster")
		}
		be.PutUint64(h[8:], uint64(pos))
		be.PutUint32(h[16:], uint32(len(w.src.Backing)))
		copy(h[pos:], w.src.Backing)
	}
	_, err = w.f.WriteAt(h, 0)
	return err
}

// subclusters returns the allocation bitmap of an extended L2 entry for
// the cluster [start, end) whose map runs are in (sc-byte subclusters).
func subclusters(in []Run, start, end, sc int64) (uint64, error) {
	var bitmap uint64
	for _, r := range in {
		if (r.Off-start)%sc != 0 || (r.End()-start)%sc != 0 && r.End() != end {
			return 0, fmt.Errorf("layer map run [%d,+%d) is not aligned to the %d-byte subcluster size; restore this chain flattened", r.Off, r.Len, sc)
		}
		for s := (r.Off - start) / sc; s < (r.End()-start+sc-1)/sc; s++ {
			bitmap |= 1 << s
		}
	}
	return bitmap, nil
}

// clusterWriter appends whole clusters sequentially through a buffer.
type clusterWriter struct {
	f    *os.File
	cs   int64
	next int64 // next free cluster index
	bw   *bufio.Writer
}

func (c *clusterWriter) put(b []byte) (int64, error) {
	if c.bw == nil {
		if _, err := c.f.Seek(c.next*c.cs, io.SeekStart); err != nil {
			return 0, err
		}
		c.bw = bufio.NewWriterSize(c.f, 4<<20)
	}
	if int64(len(b))%c.cs != 0 {
		return 0, errors.New("internal error: partial cluster")
	}
	at := c.next * c.cs
	if _, err := c.bw.Write(b); err != nil {
		return 0, err
	}
	c.next += int64(len(b)) / c.cs
	return at, nil
}

func (c *clusterWriter) flush() error {
	if c.bw == nil {
		return nil
	}
	return c.bw.Flush()
}

func randomGUID() [16]byte {
	var g [16]byte
	_, _ = rand.Read(g[:])
	g[7] = g[7]&0x0f | 0x40 // version 4 (little-endian field 3)
	g[8] = g[8]&0x3f | 0x80
	return g
}

func guidOr(s string) [16]byte {
	if g, err := parseGUID(s); err == nil && s != "" {
		return g
	}
	return randomGUID()
}

// vhdx writes a VHDX image: identifier, two headers, two region tables, an
// empty log, the metadata region, the BAT and 1 MiB-aligned payload blocks.
func (w *imgWriter) vhdx(p *VHDXParams) error {
	block := int64(32 << 20)
	lss, pss := int64(512), int64(4096)
	var dataWrite, diskID [16]byte
	if p != nil {
		if p.BlockSize >= vhdxMinBlock && p.BlockSize <= vhdxMaxBlock && p.BlockSize&(p.BlockSize-1) == 0 {
			block = p.BlockSize
		}
		if p.LogicalSectorSize == 4096 {
			lss = 4096
		}
		if p.PhysicalSectorSize == 512 || p.PhysicalSectorSize == 4096 {
			pss = p.PhysicalSectorSize
		}
		dataWrite, diskID = guidOr(p.DataWriteGUID), guidOr(p.DiskID)
	} else {
		dataWrite, diskID = randomGUID(), randomGUID()
	}
	if w.src.Size%lss != 0 {
		return fmt.Errorf("virtual size %d is not a multiple of the %d-byte sector", w.src.Size, lss)
	}
	layer := w.src.Backing != ""
	chunkRatio := (int64(1) << 23) * lss / block
	dataBlocks := (w.src.Size + block - 1) / block
	var total int64
	if layer {
		total = ((dataBlocks + chunkRatio - 1) / chunkRatio) * (chunkRatio + 1)
	} else {
		total = dataBlocks + max(0, (dataBlocks-1)/chunkRatio)
	}
	const logOff, logLen, metaOff, metaLen, batOff = 1 << 20, 1 << 20, 2 << 20, 1 << 20, 3 << 20
	batLen := (total*8 + vhdxMB - 1) / vhdxMB * vhdxMB
	if batLen == 0 {
		batLen = vhdxMB
	}
	bat := make([]uint64, total)
	next := int64(batOff) + batLen
	bitmaps := map[int64][]byte{}
	err := w.blocks(block, func(b int64, buf []byte, in []Run) error {
		idx := b + b/chunkRatio
		full := fullyCovered(in, b*block, int64(len(buf)))
		zero := allZeroBytes(buf)
		switch {
		case !layer && zero:
			return nil // NOT_PRESENT reads as zeros
		case layer && full && zero:
			bat[idx] = vhdxZero
			return nil
		}
		if int64(len(buf)) < block {
			buf = append(buf, make([]byte, block-int64(len(buf)))...)
		}
		if _, err := w.f.WriteAt(buf, next); err != nil {
			return err
		}
		w.data += int64(len(buf))
		state := uint64(vhdxFullPresent)
		if layer && !full {
			state = vhdxPartPresent
			c := b / chunkRatio
			bm := bitmaps[c]
			if bm == nil {
				bm = make([]byte, vhdxMB)
				bitmaps[c] = bm
			}
			for _, r := range in {
				for s := r.Off / lss; s < (r.End()+lss-1)/lss; s++ {
					bit := s % (1 << 23)
					bm[bit/8] |= 1 << (bit % 8)
				}
			}
		}
		bat[idx] = uint64(next/vhdxMB)<<20 | state
		next += block
		return nil
	})
	if err != nil {
		return err
	}
	for c, bm := range bitmaps {
		if _, err := w.f.WriteAt(bm, next); err != nil {
			return err
		}
		bat[c*(chunkRatio+1)+chunkRatio] = uint64(next/vhdxMB)<<20 | vhdxFullPresent
		next += vhdxMB
	}
	if err := w.f.Truncate(next); err != nil {
		return err
	}
	batb := make([]byte, batLen)
	for i, e := range bat {
		binary.LittleEndian.PutUint64(batb[8*i:], e)
	}
	if _, err := w.f.WriteAt(batb, batOff); err != nil {
		return err
	}
	// Metadata region.
	meta := make([]byte, metaLen)
	copy(meta, "metadata")
	type item struct {
		g     [16]byte
		data  []byte
		flags uint32
	}
	fp := make([]byte, 8)
	binary.LittleEndian.PutUint32(fp, uint32(block))
	if layer {
		binary.LittleEndian.PutUint32(fp[4:], 2)
	}
	vs := make([]byte, 8)
	binary.LittleEndian.PutUint64(vs, uint64(w.src.Size))
	ls := binary.LittleEndian.AppendUint32(nil, uint32(lss))
	ps := binary.LittleEndian.AppendUint32(nil, uint32(pss))
	items := []item{{guidFileParams, fp, 4}, {guidDiskSize, vs, 6}, {guidDiskID, diskID[:], 6}, {guidLogical, ls, 6}, {guidPhysical, ps, 6}}
	if layer {
		kv := [][2]string{{"relative_path", slashToWin(w.src.Backing)}}
		if p != nil && p.ParentLinkage != "" {
			kv = append([][2]string{{"parent_linkage", p.ParentLinkage}}, kv...)
		}
		if p != nil && p.ParentAbsolute != "" {
			kv = append(kv, [2]string{"absolute_win32_path", p.ParentAbsolute})
		}
		items = append(items, item{guidParentLoc, buildParentLocator(kv), 4})
	}
	binary.LittleEndian.PutUint16(meta[10:], uint16(len(items)))
	pos := int64(64 << 10)
	for i, it := range items {
		e := meta[32+32*i:]
		copy(e, it.g[:])
		binary.LittleEndian.PutUint32(e[16:], uint32(pos))
		binary.LittleEndian.PutUint32(e[20:], uint32(len(it.data)))
		binary.LittleEndian.PutUint32(e[24:], it.flags)
		copy(meta[pos:], it.data)
		pos += (int64(len(it.data)) + 7) &^ 7
	}
	if _, err := w.f.WriteAt(meta, metaOff); err != nil {
		return err
	}
	// Log area stays zero (no log GUID in the headers: nothing to replay).
	if _, err := w.f.WriteAt(make([]byte, logLen), logOff); err != nil {
		return err
	}
	// Region tables.
	rt := make([]byte, vhdxRegionLen)
	copy(rt, "regi")
	binary.LittleEndian.PutUint32(rt[8:], 2)
	for i, r := range []struct {
		g        [16]byte
		off, len int64
	}{{guidBAT, batOff, batLen}, {guidMetadata, metaOff, metaLen}} {
		e := rt[16+32*i:]
		copy(e, r.g[:])
		binary.LittleEndian.PutUint64(e[16:], uint64(r.off))
		binary.LittleEndian.PutUint32(e[24:], uint32(r.len))
		binary.LittleEndian.PutUint32(e[28:], 1)
	}
	binary.LittleEndian.PutUint32(rt[4:], crc32.Checksum(rt, crc32c))
	for _, off := range []int64{vhdxRegion1, vhdxRegion2} {
		if _, err := w.f.WriteAt(rt, off); err != nil {
			return err
		}
	}
	// Headers: same content, sequence numbers 1 and 2.
	fileWrite := randomGUID()
	for i, off := range []int64{vhdxHeader1, vhdxHeader2} {
		h := make([]byte, vhdxHeaderLen)
		copy(h, "head")
		binary.LittleEndian.PutUint64(h[8:], uint64(i+1))
		copy(h[16:], fileWrite[:])
		copy(h[32:], dataWrite[:])
		binary.LittleEndian.PutUint16(h[66:], 1)
		binary.LittleEndian.PutUint32(h[68:], logLen)
		binary.LittleEndian.PutUint64(h[72:], logOff)
		binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(h, crc32c))
		if _, err := w.f.WriteAt(h, off); err != nil {
			return err
		}
	}
	ident := make([]byte, 64<<10)
	copy(ident, "vhdxfile")
	copy(ident[8:], encodeUTF16("drpipe", false))
	_, err = w.f.WriteAt(ident, 0)
	return err
}

func slashToWin(s string) string {
	out := []byte(s)
	for i, c := range out {
		if c == '/' {
			out[i] = '\\'
		}
	}
	if len(out) > 0 && out[0] != '\\' && !(len(out) > 1 && out[1] == ':') {
		return ".\\" + string(out)
	}
	return string(out)
}

func buildParentLocator(kv [][2]string) []byte {
	b := make([]byte, 20+12*len(kv))
	copy(b, guidVHDXLoc[:])
	binary.LittleEndian.PutUint16(b[18:], uint16(len(kv)))
	for i, e := range kv {
		k, v := encodeUTF16(e[0], false), encodeUTF16(e[1], false)
		ent := b[20+12*i:]
		binary.LittleEndian.PutUint32(ent, uint32(len(b)))
		binary.LittleEndian.PutUint16(ent[8:], uint16(len(k)))
		b = append(b, k...)
		ent = b[20+12*i:]
		binary.LittleEndian.PutUint32(ent[4:], uint32(len(b)))
		binary.LittleEndian.PutUint16(ent[10:], uint16(len(v)))
		b = append(b, v...)
	}
	return b
}

// vhdGeometry is the CHS calculation of the VHD specification.
func vhdGeometry(size int64) (cyl, heads, secs int) {
	total := size / 512
	if total > 65535*16*255 {
		total = 65535 * 16 * 255
	}
	var ch int64
	if total >= 65535*16*63 {
		secs, heads = 255, 16
		ch = total / int64(secs)
	} else {
		secs = 17
		ch = total / int64(secs)
		heads = int((ch + 1023) / 1024)
		if heads < 4 {
			heads = 4
		}
		if ch >= int64(heads)*1024 || heads > 16 {
			secs, heads = 31, 16
			ch = total / int64(secs)
		}
		if ch >= int64(heads)*1024 {
			secs, heads = 63, 16
			ch = total / int64(secs)
		}
	}
	cyl = int(ch / int64(heads))
	return
}

// vhd writes a fixed, dynamic or differencing VHD.
// vhdMaxSize is the largest virtual disk of a VHD (Hyper-V's and qemu's
// limit, below the 2 TiB a dynamic VHD's 32-bit sector offsets reach).
const vhdMaxSize = 2040 << 30

func (w *imgWriter) vhd(p *VHDParams) error {
	typ := "dynamic"
	creator := "qem2" // "size from the footer" for qemu and Hyper-V alike
	block := int64(2 << 20)
	cur := w.src.Size
	cyl, heads, secs := vhdGeometry(w.src.Size)
	var uuid [16]byte
	_, _ = rand.Read(uuid[:])
	if p != nil {
		if p.Type == "fixed" {
			typ = "fixed"
		}
		if len(p.CreatorApp) == 4 {
			creator = p.CreatorApp
		}
		if p.BlockSize >= 512 && p.BlockSize <= vhdMaxBlock && p.BlockSize&(p.BlockSize-1) == 0 {
			block = p.BlockSize
		}
		// Only a creator sized by its geometry may have a footer size
		// beyond the virtual size; for the others it is the size.
		if p.CurrentSize >= w.src.Size && vhdSizedByCHS(creator) {
			cur = p.CurrentSize
		}
		if p.Cylinders > 0 {
			cyl, heads, secs = p.Cylinders, p.Heads, p.Sectors
		}
		if u, err := parseUUID(p.UUID); err == nil {
			uuid = u
		}
	}
	if w.src.Size%512 != 0 {
		return fmt.Errorf("virtual size %d is not a multiple of 512", w.src.Size)
	}
	if w.src.Size > vhdMaxSize {
		// A dynamic VHD addresses its blocks in 32-bit sectors: beyond
		// 2 TiB of file they would wrap over earlier blocks.
		return fmt.Errorf("virtual size %d is beyond the VHD format's 2040 GiB: restore this disk as VHDX, qcow2 or raw (--disk-format)", w.src.Size)
	}
	layer := w.src.Backing != ""
	if layer {
		typ = "differencing"
	}
	footer := make([]byte, 512)
	be := binary.BigEndian
	copy(footer, "conectix")
	be.PutUint32(footer[8:], 2)
	be.PutUint32(footer[12:], 0x00010000)
	be.PutUint32(footer[24:], uint32(time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Seconds()))
	copy(footer[28:32], creator)
	be.PutUint32(footer[32:], 0x00050003)
	copy(footer[36:40], "Wi2k")
	be.PutUint64(footer[40:], uint64(cur))
	be.PutUint64(footer[48:], uint64(cur))
	be.PutUint16(footer[56:], uint16(cyl))
	footer[58], footer[59] = byte(heads), byte(secs)
	copy(footer[68:84], uuid[:])
	sum := func(b []byte, at int) {
		be.PutUint32(b[at:], 0)
		be.PutUint32(b[at:], vhdChecksum(b, at))
	}
	if typ == "fixed" {
		be.PutUint64(footer[16:], ^uint64(0))
		be.PutUint32(footer[60:], vhdFixed)
		sum(footer, 64)
		if err := w.f.Truncate(w.src.Size); err != nil {
			return err
		}
		const g = 1 << 20
		err := w.blocks(g, func(b int64, buf []byte, _ []Run) error {
			if allZeroBytes(buf) {
				return nil
			}
			w.data += int64(len(buf))
			_, err := w.f.WriteAt(buf, b*g)
			return err
		})
		if err != nil {
			return err
		}
		_, err = w.f.WriteAt(footer, w.src.Size)
		return err
	}
	diskType := uint32(vhdDynamic)
	if layer {
		diskType = vhdDiff
	}
	be.PutUint64(footer[16:], 512)
	be.PutUint32(footer[60:], diskType)
	sum(footer, 64)
	entries := (w.src.Size + block - 1) / block
	batOff := int64(1536)
	batLen := (entries*4 + 511) &^ 511
	hdr := make([]byte, 1024)
	copy(hdr, "cxsparse")
	be.PutUint64(hdr[8:], ^uint64(0))
	be.PutUint64(hdr[16:], uint64(batOff))
	be.PutUint32(hdr[24:], 0x00010000)
	be.PutUint32(hdr[28:], uint32(entries))
	be.PutUint32(hdr[32:], uint32(block))
	next := batOff + batLen
	var locator []byte
	if layer {
		if p != nil {
			if u, err := parseUUID(p.ParentUUID); err == nil {
				copy(hdr[40:56], u[:])
			}
		}
		name := winBase(w.src.Backing)
		if p != nil && p.ParentName != "" {
			name = p.ParentName
		}
		copy(hdr[64:576], encodeUTF16(name, true))
		locator = encodeUTF16(slashToWin(w.src.Backing), false)
		space := (int64(len(locator)) + 511) &^ 511
		e := hdr[576:]
		copy(e, "W2ru")
		be.PutUint32(e[4:], uint32(space))
		be.PutUint32(e[8:], uint32(len(locator)))
		be.PutUint64(e[16:], uint64(next))
		next += space
	}
	sum(hdr, 36)
	bat := make([]byte, batLen)
	for i := range bat {
		bat[i] = 0xFF
	}
	bmLen := ((block/512+7)/8 + 511) &^ 511
	err := w.blocks(block, func(b int64, buf []byte, in []Run) error {
		if allZeroBytes(buf) && !layer {
			return nil
		}
		bm := make([]byte, bmLen)
		if layer {
			for _, r := range in {
				for s := (r.Off - b*block) / 512; s < (r.End()-b*block+511)/512; s++ {
					bm[s/8] |= 0x80 >> (s % 8)
				}
			}
		} else {
			for i := range bm {
				bm[i] = 0xFF
			}
		}
		if int64(len(buf)) < block {
			buf = append(buf, make([]byte, block-int64(len(buf)))...)
		}
		if _, err := w.f.WriteAt(bm, next); err != nil {
			return err
		}
		if _, err := w.f.WriteAt(buf, next+bmLen); err != nil {
			return err
		}
		w.data += int64(len(buf))
		be.PutUint32(bat[4*b:], uint32(next/512))
		next += bmLen + block
		return nil
	})
	if err != nil {
		return err
	}
	for _, x := range []struct {
		b   []byte
		off int64
	}{{footer, 0}, {hdr, 512}, {bat, batOff}, {footer, next}} {
		if _, err := w.f.WriteAt(x.b, x.off); err != nil {
			return err
		}
	}
	if layer {
		if _, err := w.f.WriteAt(locator, int64(be.Uint64(hdr[576+16:]))); err != nil {
			return err
		}
	}
	return nil
}

func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	h := make([]byte, 0, 32)
	for _, c := range s {
		if c != '-' {
			h = append(h, byte(c))
		}
	}
	if len(h) != 32 {
		return u, fmt.Errorf("bad uuid %q", s)
	}
	for i := 0; i < 16; i++ {
		var v byte
		for _, c := range h[2*i : 2*i+2] {
			switch {
			case c >= '0' && c <= '9':
				v = v<<4 | (c - '0')
			case c >= 'a' && c <= 'f':
				v = v<<4 | (c - 'a' + 10)
			case c >= 'A' && c <= 'F':
				v = v<<4 | (c - 'A' + 10)
			default:
				return u, fmt.Errorf("bad uuid %q", s)
			}
		}
		u[i] = v
	}
	return u, nil
}
