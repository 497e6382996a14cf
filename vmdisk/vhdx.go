package vmdisk

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"
)

// VHDXParams are the VHDX container parameters kept for rebuilding.
type VHDXParams struct {
	BlockSize          int64  `json:"block_size"`
	LogicalSectorSize  int64  `json:"logical_sector_size"`
	PhysicalSectorSize int64  `json:"physical_sector_size"`
	LeaveAllocated     bool   `json:"leave_allocated,omitempty"`
	DiskID             string `json:"disk_id,omitempty"`
	DataWriteGUID      string `json:"data_write_guid,omitempty"`
	// ParentLinkage is the parent's DataWriteGuid a differencing disk
	// expects; Parent* are its locator entries.
	ParentLinkage  string `json:"parent_linkage,omitempty"`
	ParentRelative string `json:"parent_relative_path,omitempty"`
	ParentAbsolute string `json:"parent_absolute_path,omitempty"`
}

// VHDX structure constants (MS-VHDX).
const (
	vhdxHeader1     = 64 << 10
	vhdxHeader2     = 128 << 10
	vhdxRegion1     = 192 << 10
	vhdxRegion2     = 256 << 10
	vhdxHeaderLen   = 4 << 10
	vhdxRegionLen   = 64 << 10
	vhdxMB          = 1 << 20
	vhdxMaxBlock    = 256 << 20
	vhdxMinBlock    = 1 << 20
	vhdxMaxEntries  = 2047
	vhdxStateMask   = 7
	vhdxNotPresent  = 0
	vhdxUndefined   = 1
	vhdxZero        = 2
	vhdxUnmapped    = 3
	vhdxFullPresent = 6
	vhdxPartPresent = 7
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// GUIDs in their on-disk (mixed-endian) byte order.
var (
	guidBAT        = mustGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
	guidMetadata   = mustGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
	guidFileParams = mustGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	guidDiskSize   = mustGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	guidDiskID     = mustGUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
	guidLogical    = mustGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	guidPhysical   = mustGUID("CDA348C7-445D-4471-9CC9-E9885251C556")
	guidParentLoc  = mustGUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
	guidVHDXLoc    = mustGUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
)

// parseGUID converts the textual form into the on-disk byte order.
func parseGUID(s string) ([16]byte, error) {
	var g [16]byte
	s = strings.Trim(s, "{}")
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return g, fmt.Errorf("bad GUID %q", s)
	}
	var raw [16]byte
	for i := 0; i < 16; i++ {
		var b byte
		for _, c := range h[2*i : 2*i+2] {
			var v byte
			switch {
			case c >= '0' && c <= '9':
				v = byte(c - '0')
			case c >= 'a' && c <= 'f':
				v = byte(c-'a') + 10
			case c >= 'A' && c <= 'F':
				v = byte(c-'A') + 10
			default:
				return g, fmt.Errorf("bad GUID %q", s)
			}
			b = b<<4 | v
		}
		raw[i] = b
	}
	g = raw
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	return g, nil
}

func mustGUID(s string) [16]byte {
	g, err := parseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// formatGUID renders on-disk GUID bytes in the usual textual form.
func formatGUID(g []byte) string {
	return fmt.Sprintf("{%08X-%04X-%04X-%X-%X}", binary.LittleEndian.Uint32(g), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:16])
}

type vhdxHeader struct {
	seq          uint64
	dataWrite    [16]byte
	logGUID      [16]byte
	logLen       uint32
	logOff       uint64
	version      uint16
	fileWriteRaw [16]byte
}

func parseVHDXHeader(b []byte) (*vhdxHeader, bool) {
	if len(b) < vhdxHeaderLen || string(b[:4]) != "head" {
		return nil, false
	}
	sum := binary.LittleEndian.Uint32(b[4:])
	c := make([]byte, vhdxHeaderLen)
	copy(c, b)
	clear(c[4:8])
	if crc32.Checksum(c, crc32c) != sum {
		return nil, false
	}
	h := &vhdxHeader{seq: binary.LittleEndian.Uint64(b[8:])}
	copy(h.fileWriteRaw[:], b[16:32])
	copy(h.dataWrite[:], b[32:48])
	copy(h.logGUID[:], b[48:64])
	h.version = binary.LittleEndian.Uint16(b[66:])
	h.logLen = binary.LittleEndian.Uint32(b[68:])
	h.logOff = binary.LittleEndian.Uint64(b[72:])
	return h, true
}

type vhdxRegion struct {
	off, len int64
	required bool
}

func parseVHDXRegions(b []byte) (map[[16]byte]vhdxRegion, bool) {
	if len(b) < vhdxRegionLen || string(b[:4]) != "regi" {
		return nil, false
	}
	sum := binary.LittleEndian.Uint32(b[4:])
	c := make([]byte, vhdxRegionLen)
	copy(c, b)
	clear(c[4:8])
	if crc32.Checksum(c, crc32c) != sum {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if n > vhdxMaxEntries {
		return nil, false
	}
	m := map[[16]byte]vhdxRegion{}
	for i := 0; i < int(n); i++ {
		e := b[16+32*i:]
		var g [16]byte
		copy(g[:], e[:16])
		m[g] = vhdxRegion{off: int64(binary.LittleEndian.Uint64(e[16:])), len: int64(binary.LittleEndian.Uint32(e[24:])), required: binary.LittleEndian.Uint32(e[28:])&1 != 0}
	}
	return m, true
}

type vhdxImpl struct {
	f          io.ReaderAt
	name       string
	fileSize   int64
	vsize      int64
	block      int64
	lss        int64
	chunkRatio int64
	diff       bool
	bat        []uint64
	bmcache    *lru
}

func openVHDX(f io.ReaderAt, name string, fileSize int64, lim Limits, info *Info) (impl, error) {
	if fileSize < vhdxRegion2+vhdxRegionLen {
		return nil, malformed(name, "file of %d bytes is too short for a VHDX", fileSize)
	}
	id := make([]byte, 8)
	if err := readFullAt(f, name, id, 0, "VHDX file identifier"); err != nil {
		return nil, err
	}
	if string(id) != "vhdxfile" {
		return nil, malformed(name, "no VHDX file identifier")
	}
	// The current header is the valid one with the higher sequence number.
	var cur *vhdxHeader
	for _, off := range []int64{vhdxHeader1, vhdxHeader2} {
		b := make([]byte, vhdxHeaderLen)
		if err := readFullAt(f, name, b, off, "VHDX header"); err != nil {
			return nil, err
		}
		if h, ok := parseVHDXHeader(b); ok && (cur == nil || h.seq > cur.seq) {
			cur = h
		}
	}
	if cur == nil {
		return nil, malformed(name, "neither VHDX header has a valid signature and checksum")
	}
	if cur.version != 1 {
		return nil, unsupported(name, "VHDX version %d", cur.version)
	}
	if cur.logGUID != [16]byte{} {
		return nil, unsupported(name, "the VHDX log is not empty (the image was not closed cleanly, log %s): attach it once in Hyper-V or run 'qemu-img check -r all' on a copy to replay the log, then back it up again", formatGUID(cur.logGUID[:]))
	}
	var regions map[[16]byte]vhdxRegion
	for _, off := range []int64{vhdxRegion1, vhdxRegion2} {
		b := make([]byte, vhdxRegionLen)
		if err := readFullAt(f, name, b, off, "VHDX region table"); err != nil {
			return nil, err
		}
		if m, ok := parseVHDXRegions(b); ok {
			regions = m
			break
		}
	}
	if regions == nil {
		return nil, malformed(name, "neither VHDX region table has a valid signature and checksum")
	}
	for g, r := range regions {
		if r.required && g != guidBAT && g != guidMetadata {
			return nil, unsupported(name, "VHDX requires unknown region %s", formatGUID(g[:]))
		}
	}
	batR, ok1 := regions[guidBAT]
	metaR, ok2 := regions[guidMetadata]
	if !ok1 || !ok2 {
		return nil, malformed(name, "VHDX region table lacks the BAT or metadata region")
	}
	for what, r := range map[string]vhdxRegion{"BAT": batR, "metadata": metaR} {
		if r.off < vhdxMB || r.off%vhdxMB != 0 || r.len <= 0 || r.off > fileSize || r.off+r.len > fileSize {
			return nil, malformed(name, "VHDX %s region at %d (%d bytes) is misaligned or beyond the end of the %d-byte file (truncated?)", what, r.off, r.len, fileSize)
		}
	}
	x := &vhdxImpl{f: f, name: name, fileSize: fileSize}
	p := &VHDXParams{DataWriteGUID: formatGUID(cur.dataWrite[:])}
	info.identity = append([]byte(nil), cur.dataWrite[:]...)
	if err := x.readMetadata(metaR, p, info); err != nil {
		return nil, err
	}
	if x.vsize > lim.MaxVirtualSize {
		return nil, malformed(name, "VHDX virtual size %d is beyond the limit of %d bytes", x.vsize, lim.MaxVirtualSize)
	}
	x.chunkRatio = (int64(1) << 23) * x.lss / x.block
	dataBlocks := (x.vsize + x.block - 1) / x.block
	var total int64
	if x.diff {
		total = ((dataBlocks + x.chunkRatio - 1) / x.chunkRatio) * (x.chunkRatio + 1)
	} else {
		total = dataBlocks + max(0, (dataBlocks-1)/x.chunkRatio)
	}
	if total*8 > batR.len {
		return nil, malformed(name, "VHDX BAT region of %d bytes is too small for %d entries: truncated BAT", batR.len, total)
	}
	if total*8 > lim.MaxTableBytes {
		return nil, malformed(name, "VHDX BAT of %d entries is too large", total)
	}
	raw := make([]byte, total*8)
	if err := readFullAt(f, name, raw, batR.off, "VHDX BAT"); err != nil {
		return nil, err
	}
	x.bat = make([]uint64, total)
	for i := range x.bat {
		x.bat[i] = binary.LittleEndian.Uint64(raw[8*i:])
	}
	info.VirtualSize = x.vsize
	info.VHDX = p
	x.bmcache = newLRU(8)
	return x, nil
}

func (x *vhdxImpl) readMetadata(r vhdxRegion, p *VHDXParams, info *Info) error {
	name := x.name
	if r.len < 64<<10 || r.len > 64<<20 {
		return malformed(name, "VHDX metadata region of %d bytes is out of range", r.len)
	}
	m := make([]byte, r.len)
	if err := readFullAt(x.f, name, m, r.off, "VHDX metadata region"); err != nil {
		return err
	}
	if string(m[:8]) != "metadata" {
		return malformed(name, "VHDX metadata table has no signature")
	}
	n := int(binary.LittleEndian.Uint16(m[10:]))
	if n > vhdxMaxEntries {
		return malformed(name, "VHDX metadata table has %d entries (at most %d)", n, vhdxMaxEntries)
	}
	items := map[[16]byte][]byte{}
	for i := 0; i < n; i++ {
		e := m[32+32*i:]
		var g [16]byte
		copy(g[:], e[:16])
		off := int64(binary.LittleEndian.Uint32(e[16:]))
		l := int64(binary.LittleEndian.Uint32(e[20:]))
		flags := binary.LittleEndian.Uint32(e[24:])
		if l == 0 {
			items[g] = nil
			continue
		}
		if off < 64<<10 || off+l > r.len {
			return malformed(name, "VHDX metadata item %s at %d (+%d) lies outside the metadata region", formatGUID(g[:]), off, l)
		}
		items[g] = m[off : off+l]
		known := g == guidFileParams || g == guidDiskSize || g == guidDiskID || g == guidLogical || g == guidPhysical || g == guidParentLoc
		if !known && flags&4 != 0 {
			return unsupported(name, "VHDX requires unknown metadata item %s", formatGUID(g[:]))
		}
	}
	get := func(g [16]byte, what string, l int) ([]byte, error) {
		b, ok := items[g]
		if !ok || len(b) < l {
			return nil, malformed(name, "VHDX metadata lacks %s", what)
		}
		return b, nil
	}
	fp, err := get(guidFileParams, "file parameters", 8)
	if err != nil {
		return err
	}
	x.block = int64(binary.LittleEndian.Uint32(fp))
	flags := binary.LittleEndian.Uint32(fp[4:])
	if x.block < vhdxMinBlock || x.block > vhdxMaxBlock || x.block&(x.block-1) != 0 {
		return malformed(name, "VHDX block size %d is not a power of two between 1 MiB and 256 MiB", x.block)
	}
	p.BlockSize = x.block
	p.LeaveAllocated = flags&1 != 0
	x.diff = flags&2 != 0
	ds, err := get(guidDiskSize, "virtual disk size", 8)
	if err != nil {
		return err
	}
	vs := binary.LittleEndian.Uint64(ds)
	if vs > 1<<62 {
		return malformed(name, "VHDX virtual size %d is absurd", vs)
	}
	x.vsize = int64(vs)
	ls, err := get(guidLogical, "logical sector size", 4)
	if err != nil {
		return err
	}
	x.lss = int64(binary.LittleEndian.Uint32(ls))
	if x.lss != 512 && x.lss != 4096 {
		return malformed(name, "VHDX logical sector size %d (want 512 or 4096)", x.lss)
	}
	if x.vsize%x.lss != 0 {
		return malformed(name, "VHDX virtual size %d is not a multiple of the sector size %d", x.vsize, x.lss)
	}
	p.LogicalSectorSize = x.lss
	if ps, err := get(guidPhysical, "physical sector size", 4); err == nil {
		p.PhysicalSectorSize = int64(binary.LittleEndian.Uint32(ps))
	}
	if id, err := get(guidDiskID, "disk id", 16); err == nil {
		p.DiskID = formatGUID(id)
	}
	if x.diff {
		loc, err := get(guidParentLoc, "parent locator", 20)
		if err != nil {
			return err
		}
		kv, err := parseParentLocator(loc)
		if err != nil {
			return malformed(name, "VHDX parent locator: %v", err)
		}
		p.ParentLinkage = kv["parent_linkage"]
		p.ParentRelative = kv["relative_path"]
		p.ParentAbsolute = kv["absolute_win32_path"]
		if g, err := parseGUID(p.ParentLinkage); err == nil {
			info.parentIdentity = g[:]
		}
		info.Backing = winToSlash(p.ParentRelative)
		if info.Backing == "" {
			info.Backing = winToSlash(p.ParentAbsolute)
		}
		if info.Backing == "" {
			return malformed(name, "differencing VHDX names no parent path")
		}
		info.backingCandidates = resolveNear(name, info.Backing)
		if p.ParentAbsolute != "" {
			info.backingCandidates = append(info.backingCandidates, resolveNear(name, winBase(p.ParentAbsolute))...)
		}
		info.BackingFormat = VHDX
	}
	return nil
}

func parseParentLocator(b []byte) (map[string]string, error) {
	if len(b) < 20 {
		return nil, fmt.Errorf("too short")
	}
	if [16]byte(b[:16]) != guidVHDXLoc {
		return nil, fmt.Errorf("unknown locator type %s", formatGUID(b[:16]))
	}
	n := int(binary.LittleEndian.Uint16(b[18:]))
	if 20+12*n > len(b) {
		return nil, fmt.Errorf("%d entries do not fit in %d bytes", n, len(b))
	}
	kv := map[string]string{}
	for i := 0; i < n; i++ {
		e := b[20+12*i:]
		ko, vo := int64(binary.LittleEndian.Uint32(e)), int64(binary.LittleEndian.Uint32(e[4:]))
		kl, vl := int64(binary.LittleEndian.Uint16(e[8:])), int64(binary.LittleEndian.Uint16(e[10:]))
		if ko+kl > int64(len(b)) || vo+vl > int64(len(b)) {
			return nil, fmt.Errorf("entry %d points outside the locator", i)
		}
		kv[decodeUTF16(b[ko:ko+kl], false)] = decodeUTF16(b[vo:vo+vl], false)
	}
	return kv, nil
}

// payload returns the BAT entry of payload block i.
func (x *vhdxImpl) payload(i int64) uint64 { return x.bat[i+i/x.chunkRatio] }

func (x *vhdxImpl) blockOffset(i int64, e uint64) (int64, error) {
	off := int64(e>>20) * vhdxMB
	// The last block need only hold the end of the disk: qemu makes a
	// fixed VHDX just as long as its virtual size.
	if off < vhdxMB || off > x.fileSize-min(x.block, x.vsize-i*x.block) {
		return 0, malformed(x.name, "VHDX block %d at %d is beyond the end of the %d-byte file (truncated?)", i, off, x.fileSize)
	}
	return off, nil
}

func (x *vhdxImpl) sectorBitmap(i int64) ([]byte, error) {
	c := i / x.chunkRatio
	e := x.bat[c*(x.chunkRatio+1)+x.chunkRatio]
	if e&vhdxStateMask != vhdxFullPresent {
		return nil, malformed(x.name, "VHDX block %d is partially present but its sector bitmap is not", i)
	}
	off := int64(e>>20) * vhdxMB
	if off < vhdxMB || off > x.fileSize-vhdxMB {
		return nil, malformed(x.name, "VHDX sector bitmap at %d is beyond the end of the file", off)
	}
	if b, ok := x.bmcache.get(off); ok {
		return b, nil
	}
	b := make([]byte, vhdxMB)
	if err := readFullAt(x.f, x.name, b, off, "VHDX sector bitmap"); err != nil {
		return nil, err
	}
	x.bmcache.put(off, b)
	return b, nil
}

func (x *vhdxImpl) lookup(off, limit int64) (Kind, int64, error) {
	i := off / x.block
	n := min(limit, (i+1)*x.block-off)
	e := x.payload(i)
	switch e & vhdxStateMask {
	case vhdxFullPresent:
		if _, err := x.blockOffset(i, e); err != nil {
			return 0, 0, err
		}
		return Data, n, nil
	case vhdxZero:
		return Zero, n, nil
	case vhdxNotPresent, vhdxUndefined, vhdxUnmapped:
		if x.diff {
			return Unallocated, n, nil
		}
		return Zero, n, nil
	case vhdxPartPresent:
		if !x.diff {
			return 0, 0, malformed(x.name, "VHDX block %d is partially present in a disk without parent", i)
		}
		if _, err := x.blockOffset(i, e); err != nil {
			return 0, 0, err
		}
		bm, err := x.sectorBitmap(i)
		if err != nil {
			return 0, 0, err
		}
		// Sector number within the chunk's bitmap (1 MiB covers 2^23 sectors).
		s := (off / x.lss) % (1 << 23)
		set := bm[s/8]&(1<<(s%8)) != 0
		m := (off/x.lss+1)*x.lss - off
		for m < n {
			s++
			if (bm[s/8]&(1<<(s%8)) != 0) != set {
				break
			}
			m += x.lss
		}
		k := Unallocated
		if set {
			k = Data
		}
		return k, min(m, n), nil
	}
	return 0, 0, malformed(x.name, "VHDX block %d has invalid state %d", i, e&vhdxStateMask)
}

func (x *vhdxImpl) readData(p []byte, off int64) error {
	for len(p) > 0 {
		i := off / x.block
		in := off - i*x.block
		n := min(int64(len(p)), x.block-in)
		start, err := x.blockOffset(i, x.payload(i))
		if err != nil {
			return err
		}
		if err := readFullAt(x.f, x.name, p[:n], start+in, "VHDX block data"); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

func (x *vhdxImpl) runs() ([]Run, error) {
	// Payload blocks must not overlap: a BAT pointing blocks into one
	// another would let a small file describe a huge map.
	var blocks []Range
	for i := int64(0); i*x.block < x.vsize; i++ {
		e := x.payload(i)
		if s := e & vhdxStateMask; s != vhdxFullPresent && s != vhdxPartPresent {
			continue
		}
		off, err := x.blockOffset(i, e)
		if err != nil {
			return nil, err
		}
		if int64(len(blocks)) > x.fileSize/x.block {
			return nil, malformed(x.name, "VHDX BAT maps more blocks than the %d-byte file holds: blocks overlap", x.fileSize)
		}
		blocks = append(blocks, Range{off, min(x.block, x.vsize-i*x.block)})
	}
	slices.SortFunc(blocks, func(a, b Range) int { return cmp64(a.Off, b.Off) })
	for i := 1; i < len(blocks); i++ {
		if blocks[i].Off < blocks[i-1].End() {
			return nil, malformed(x.name, "VHDX blocks at file offsets %d and %d overlap", blocks[i-1].Off, blocks[i].Off)
		}
	}
	var b runBuilder
	for off := int64(0); off < x.vsize; {
		i := off / x.block
		lim := min(x.vsize, (i+1)*x.block) - off
		k, n, err := x.lookup(off, lim)
		if err != nil {
			return nil, err
		}
		if !x.diff && k == Zero {
			k = Unallocated // a base disk's absent blocks are simply unallocated
		}
		b.add(off, n, k)
		off += n
	}
	return b.rs, nil
}
