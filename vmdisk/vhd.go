package vmdisk

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"unicode/utf16"
)

// VHD disk types.
const (
	vhdFixed   = 2
	vhdDynamic = 3
	vhdDiff    = 4

	vhdMaxCHS      = 65535 * 16 * 255
	vhdUnallocated = 0xFFFFFFFF
	vhdMaxBlock    = 256 << 20
)

// VHDParams are the VHD container parameters kept for rebuilding.
type VHDParams struct {
	Type       string `json:"type"` // fixed, dynamic, differencing
	BlockSize  int64  `json:"block_size,omitempty"`
	CreatorApp string `json:"creator_app"`
	Cylinders  int    `json:"cylinders"`
	Heads      int    `json:"heads"`
	Sectors    int    `json:"sectors"`
	// CurrentSize is the footer's size field (which may differ from the
	// virtual size when the geometry decides it).
	CurrentSize int64  `json:"current_size"`
	UUID        string `json:"uuid"`
	// ParentUUID and ParentName are set for differencing disks.
	ParentUUID string `json:"parent_uuid,omitempty"`
	ParentName string `json:"parent_name,omitempty"`
}

type vhdFooter struct {
	dataOffset  uint64
	creator     string
	currentSize uint64
	cyl         uint16
	heads       uint8
	secs        uint8
	diskType    uint32
	uuid        [16]byte
}

func vhdChecksum(b []byte, skip int) uint32 {
	var s uint32
	for i, c := range b {
		if i >= skip && i < skip+4 {
			continue
		}
		s += uint32(c)
	}
	return ^s
}

func parseVHDFooter(b []byte, name string) (*vhdFooter, error) {
	if len(b) < 512 || string(b[:8]) != "conectix" {
		return nil, malformed(name, "no VHD footer")
	}
	be := binary.BigEndian
	if got, want := be.Uint32(b[64:]), vhdChecksum(b[:512], 64); got != want {
		return nil, malformed(name, "VHD footer checksum %#x, computed %#x", got, want)
	}
	ft := &vhdFooter{
		dataOffset:  be.Uint64(b[16:]),
		creator:     string(b[28:32]),
		currentSize: be.Uint64(b[48:]),
		cyl:         be.Uint16(b[56:]),
		heads:       b[58],
		secs:        b[59],
		diskType:    be.Uint32(b[60:]),
	}
	if ft.currentSize > math.MaxInt64 {
		return nil, malformed(name, "VHD footer size %d is beyond any disk", ft.currentSize)
	}
	copy(ft.uuid[:], b[68:84])
	return ft, nil
}

// vhdVirtualSize is the size the image's creator gives its guest: images
// from Virtual PC and qemu's old creator are sized by the CHS geometry,
// the others (Hyper-V, Azure, VirtualBox, Disk2vhd, XenServer, ...) by
// the footer's current size. (qemu itself takes the geometry for creators
// it does not know, such as VirtualBox, whose geometry only
// approximates the size: that would cut the end of their disks off.)
func vhdVirtualSize(ft *vhdFooter) int64 {
	chs := int64(ft.cyl) * int64(ft.heads) * int64(ft.secs)
	if !vhdSizedByCHS(ft.creator) || chs == vhdMaxCHS || chs == 0 {
		return int64(ft.currentSize / 512 * 512)
	}
	return chs * 512
}

// vhdSizedByCHS reports whether images of the creator application are
// sized by their CHS geometry rather than by the footer's current size.
func vhdSizedByCHS(creator string) bool { return creator == "vpc " || creator == "qemu" }

type vhdImpl struct {
	f         io.ReaderAt
	file      *os.File // set by OpenLayer: a fixed VHD's holes are found with SEEK_DATA
	name      string
	vsize     int64
	fixed     bool
	diff      bool
	block     int64
	bitmapLen int64
	bat       []uint32
	fileSize  int64
	dataEnd   int64 // blocks end here: at the footer, or at EOF when only the copy at the start is valid
	bmcache   *lru
}

func fmtUUID(u []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func openVHD(f io.ReaderAt, name string, fileSize int64, lim Limits, info *Info) (impl, error) {
	if fileSize < 512 {
		return nil, malformed(name, "file of %d bytes is too short for a VHD", fileSize)
	}
	b := make([]byte, 512)
	// The footer at the end is authoritative; dynamic disks keep a copy at
	// the start, used when the end is damaged or truncated.
	var ft *vhdFooter
	var err error
	dataEnd := fileSize - 512
	if err = readFullAt(f, name, b, fileSize-512, "VHD footer"); err == nil {
		ft, err = parseVHDFooter(b, name)
	}
	if err != nil {
		dataEnd = fileSize
		if rerr := readFullAt(f, name, b, 0, "VHD footer copy"); rerr != nil {
			return nil, err
		}
		ft2, err2 := parseVHDFooter(b, name)
		if err2 != nil {
			return nil, err
		}
		if ft2.diskType == vhdFixed {
			return nil, err
		}
		ft = ft2
	}
	v := &vhdImpl{f: f, name: name, fileSize: fileSize, dataEnd: dataEnd, vsize: vhdVirtualSize(ft)}
	if v.vsize > lim.MaxVirtualSize {
		return nil, malformed(name, "VHD virtual size %d is beyond the limit of %d bytes", v.vsize, lim.MaxVirtualSize)
	}
	p := &VHDParams{CreatorApp: ft.creator, Cylinders: int(ft.cyl), Heads: int(ft.heads), Sectors: int(ft.secs),
		CurrentSize: int64(ft.currentSize), UUID: fmtUUID(ft.uuid[:])}
	info.identity = append([]byte(nil), ft.uuid[:]...)
	switch ft.diskType {
	case vhdFixed:
		p.Type = "fixed"
		v.fixed = true
		if v.vsize > fileSize-512 {
			return nil, malformed(name, "fixed VHD of %d bytes holds less than its virtual size %d (truncated?)", fileSize, v.vsize)
		}
	case vhdDynamic, vhdDiff:
		p.Type = "dynamic"
		if ft.diskType == vhdDiff {
			p.Type = "differencing"
			v.diff = true
		}
		if err := v.openDynamic(ft, lim, info, p); err != nil {
			return nil, err
		}
	default:
		return nil, unsupported(name, "VHD disk type %d", ft.diskType)
	}
	info.VirtualSize = v.vsize
	info.VHD = p
	v.bmcache = newLRU(64)
	return v, nil
}

func (v *vhdImpl) openDynamic(ft *vhdFooter, lim Limits, info *Info, p *VHDParams) error {
	name := v.name
	if ft.dataOffset > uint64(v.fileSize) || int64(ft.dataOffset)+1024 > v.fileSize {
		return malformed(name, "VHD dynamic header at %d is beyond the end of the %d-byte file (truncated?)", ft.dataOffset, v.fileSize)
	}
	h := make([]byte, 1024)
	if err := readFullAt(v.f, name, h, int64(ft.dataOffset), "VHD dynamic header"); err != nil {
		return err
	}
	if string(h[:8]) != "cxsparse" {
		return malformed(name, "VHD dynamic header at %d has no cxsparse cookie", ft.dataOffset)
	}
	be := binary.BigEndian
	if got, want := be.Uint32(h[36:]), vhdChecksum(h, 36); got != want {
		return malformed(name, "VHD dynamic header checksum %#x, computed %#x", got, want)
	}
	tableOff := be.Uint64(h[16:])
	entries := int64(be.Uint32(h[28:]))
	v.block = int64(be.Uint32(h[32:]))
	if v.block < 512 || v.block > vhdMaxBlock || v.block&(v.block-1) != 0 {
		return malformed(name, "VHD block size %d is not a power of two between 512 and %d", v.block, vhdMaxBlock)
	}
	need := (v.vsize + v.block - 1) / v.block
	if entries < need {
		return malformed(name, "VHD block table has %d entries, %d needed for %d bytes", entries, need, v.vsize)
	}
	if need*4 > lim.MaxTableBytes {
		return malformed(name, "VHD block table of %d entries is too large", need)
	}
	if tableOff > uint64(v.fileSize) || int64(tableOff)+need*4 > v.fileSize {
		return malformed(name, "VHD block table at %d (%d entries) extends beyond the end of the %d-byte file: truncated BAT", tableOff, need, v.fileSize)
	}
	raw := make([]byte, need*4)
	if err := readFullAt(v.f, name, raw, int64(tableOff), "VHD block table"); err != nil {
		return err
	}
	v.bat = make([]uint32, need)
	for i := range v.bat {
		v.bat[i] = be.Uint32(raw[4*i:])
	}
	v.bitmapLen = ((v.block/512+7)/8 + 511) &^ 511
	p.BlockSize = v.block
	if v.diff {
		p.ParentUUID = fmtUUID(h[40:56])
		info.parentIdentity = append([]byte(nil), h[40:56]...)
		p.ParentName = decodeUTF16(h[64:576], true)
		var rel, abs string
		for i := 0; i < 8; i++ {
			e := h[576+24*i:]
			code := string(e[:4])
			dlen := int64(be.Uint32(e[8:]))
			doff := be.Uint64(e[16:])
			if code != "W2ru" && code != "W2ku" || dlen == 0 {
				continue
			}
			if dlen > 4096 || doff > uint64(v.fileSize) || int64(doff)+dlen > v.fileSize {
				return malformed(name, "VHD parent locator %s at %d (%d bytes) is beyond the end of the file", code, doff, dlen)
			}
			d := make([]byte, dlen)
			if err := readFullAt(v.f, name, d, int64(doff), "VHD parent locator"); err != nil {
				return err
			}
			s := decodeUTF16(d, false)
			if code == "W2ru" {
				rel = s
			} else {
				abs = s
			}
		}
		info.Backing = winToSlash(rel)
		if info.Backing == "" {
			info.Backing = p.ParentName
		}
		if info.Backing == "" {
			return malformed(name, "differencing VHD names no parent")
		}
		info.backingCandidates = resolveNear(name, info.Backing)
		if p.ParentName != "" {
			info.backingCandidates = append(info.backingCandidates, resolveNear(name, winBase(p.ParentName))...)
		}
		if abs != "" {
			info.backingCandidates = append(info.backingCandidates, winToSlash(abs))
		}
		info.BackingFormat = VHD
	}
	return nil
}

// decodeUTF16 decodes a NUL-terminated UTF-16 string (big or little endian).
func decodeUTF16(b []byte, big bool) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		var c uint16
		if big {
			c = binary.BigEndian.Uint16(b[i:])
		} else {
			c = binary.LittleEndian.Uint16(b[i:])
		}
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

func encodeUTF16(s string, big bool) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		if big {
			binary.BigEndian.PutUint16(b[2*i:], c)
		} else {
			binary.LittleEndian.PutUint16(b[2*i:], c)
		}
	}
	return b
}

// winToSlash turns a Windows relative locator (".\\base.vhd") into a
// slash path ("base.vhd").
func winToSlash(s string) string {
	s = strings.ReplaceAll(s, "\\", "/")
	s = strings.TrimPrefix(s, "./")
	if len(s) >= 2 && s[1] == ':' { // drive letter: keep only the name
		return winBase(s)
	}
	return s
}

func winBase(s string) string {
	s = strings.ReplaceAll(s, "\\", "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func (v *vhdImpl) blockStart(i int64) (int64, error) {
	e := v.bat[i]
	if e == vhdUnallocated {
		return -1, nil
	}
	start := int64(e) * 512
	// A block (bitmap and data) is always whole in the file (qemu and
	// Hyper-V allocate whole blocks before the footer): one that runs into
	// the footer or past EOF is a truncated or damaged image, not zeros.
	if start+v.bitmapLen+v.block > v.dataEnd {
		return 0, malformed(v.name, "VHD block %d at %d (%d bytes) runs past the end of the block area at %d of the %d-byte file: the image is truncated", i, start, v.bitmapLen+v.block, v.dataEnd, v.fileSize)
	}
	return start, nil
}

// bitmap returns the sector bitmap of block i (differencing disks only).
func (v *vhdImpl) bitmap(i int64, start int64) ([]byte, error) {
	if bm, ok := v.bmcache.get(start); ok {
		return bm, nil
	}
	bm := make([]byte, v.bitmapLen)
	if err := readFullAt(v.f, v.name, bm, start, "VHD sector bitmap"); err != nil {
		return nil, err
	}
	v.bmcache.put(start, bm)
	return bm, nil
}

func (v *vhdImpl) lookup(off, limit int64) (Kind, int64, error) {
	if v.fixed {
		return Data, limit, nil
	}
	i := off / v.block
	start, err := v.blockStart(i)
	if err != nil {
		return 0, 0, err
	}
	n := min(limit, (i+1)*v.block-off)
	if start < 0 {
		return Unallocated, n, nil
	}
	if !v.diff {
		return Data, n, nil
	}
	bm, err := v.bitmap(i, start)
	if err != nil {
		return 0, 0, err
	}
	s := (off - i*v.block) / 512
	set := bm[s/8]&(0x80>>(s%8)) != 0
	k := Unallocated
	if set {
		k = Data
	}
	m := (s+1)*512 + i*v.block - off
	for m < n {
		s++
		if (bm[s/8]&(0x80>>(s%8)) != 0) != set {
			break
		}
		m += 512
	}
	return k, min(m, n), nil
}

func (v *vhdImpl) readData(p []byte, off int64) error {
	if v.fixed {
		return readFullAt(v.f, v.name, p, off, "VHD data")
	}
	for len(p) > 0 {
		i := off / v.block
		in := off - i*v.block
		n := min(int64(len(p)), v.block-in)
		start, err := v.blockStart(i)
		if err != nil {
			return err
		}
		if start < 0 {
			return fmt.Errorf("%s: internal error: read of unallocated VHD block %d", v.name, i)
		}
		if err := readFullAt(v.f, v.name, p[:n], start+v.bitmapLen+in, "VHD block data"); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

func (v *vhdImpl) runs() ([]Run, error) {
	var b runBuilder
	if v.fixed {
		rs := []Range{{0, v.vsize}}
		if v.file != nil {
			var err error
			if rs, err = dataRanges(v.file, v.vsize); err != nil {
				return nil, fmt.Errorf("%s: find allocated ranges: %w", v.name, err)
			}
		}
		for _, r := range rs {
			b.add(r.Off, min(r.Len, v.vsize-r.Off), Data)
		}
		return b.rs, nil
	}
	// Blocks must not overlap: a table pointing blocks into one another
	// would let a small file describe a huge map.
	var starts []int64
	for i := range v.bat {
		start, err := v.blockStart(int64(i))
		if err != nil {
			return nil, err
		}
		if start < 0 {
			continue
		}
		if int64(len(starts)) >= v.dataEnd/(v.bitmapLen+v.block) {
			return nil, malformed(v.name, "VHD block table maps more blocks than the %d-byte file holds: blocks overlap", v.fileSize)
		}
		starts = append(starts, start)
	}
	slices.Sort(starts)
	for i := 1; i < len(starts); i++ {
		if starts[i] < starts[i-1]+v.bitmapLen+v.block {
			return nil, malformed(v.name, "VHD blocks at file offsets %d and %d overlap", starts[i-1], starts[i])
		}
	}
	for i := range v.bat {
		off := int64(i) * v.block
		n := min(v.block, v.vsize-off)
		start, err := v.blockStart(int64(i))
		if err != nil {
			return nil, err
		}
		if start < 0 {
			continue
		}
		if !v.diff {
			b.add(off, n, Data)
			continue
		}
		for x := off; x < off+n; {
			k, m, err := v.lookup(x, off+n-x)
			if err != nil {
				return nil, err
			}
			b.add(x, m, k)
			x += m
		}
	}
	return b.rs, nil
}
