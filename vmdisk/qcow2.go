package vmdisk

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// QCOW2Params are the qcow2 container parameters kept for rebuilding.
type QCOW2Params struct {
	Version         int    `json:"version"`
	ClusterBits     int    `json:"cluster_bits"`
	CompressionType string `json:"compression_type,omitempty"` // "zlib" or "zstd"
	RefcountOrder   int    `json:"refcount_order,omitempty"`
	Compressed      int64  `json:"compressed_clusters,omitempty"`
	// ExtendedL2 is set for images with extended L2 entries, whose map
	// is kept per subcluster (1/32 of a cluster).
	ExtendedL2 bool `json:"extended_l2,omitempty"`
}

// qcow2 header constants.
const (
	qcowMagic          = "QFI\xfb"
	qcowMaxL1Bytes     = 32 << 20 // qemu's limit
	qcowL2Mask         = 0x00fffffffffffe00
	qcowCompressedBit  = 1 << 62
	qcowZeroBit        = 1
	qcowExtBackingFmt  = 0xE2792ACA
	qcowExtDataFile    = 0x44415441
	qcowExtEncryption  = 0x0537be77
	qcowIncompatDirty  = 1 << 0
	qcowIncompatCorrup = 1 << 1
	qcowIncompatData   = 1 << 2
	qcowIncompatComp   = 1 << 3
	qcowIncompatExtL2  = 1 << 4
)

type qcowHeader struct {
	version       uint32
	backingOff    uint64
	backingLen    uint32
	clusterBits   uint32
	size          uint64
	crypt         uint32
	l1Size        uint32
	l1Off         uint64
	incompat      uint64
	refcountOrder uint32
	headerLen     uint32
	compType      byte
}

type qcow2Impl struct {
	f           io.ReaderAt
	name        string
	fileSize    int64
	vsize       int64
	clusterBits uint
	cs          int64 // cluster size
	l2Entries   int64
	extL2       bool  // extended L2 entries (subclusters)
	grain       int64 // the unit the map is kept in: cluster or subcluster
	l1          []uint64
	zstd        bool
	v3          bool
	l2cache     *lru
	ccache      *lru // decompressed clusters by host entry
}

func parseQCOW2Header(b []byte, name string) (*qcowHeader, error) {
	if len(b) < 72 || string(b[:4]) != qcowMagic {
		return nil, malformed(name, "no qcow2 header")
	}
	be := binary.BigEndian
	h := &qcowHeader{
		version:     be.Uint32(b[4:]),
		backingOff:  be.Uint64(b[8:]),
		backingLen:  be.Uint32(b[16:]),
		clusterBits: be.Uint32(b[20:]),
		size:        be.Uint64(b[24:]),
		crypt:       be.Uint32(b[32:]),
		l1Size:      be.Uint32(b[36:]),
		l1Off:       be.Uint64(b[40:]),
		headerLen:   72,
	}
	switch h.version {
	case 2:
		h.refcountOrder = 4
	case 3:
		if len(b) < 104 {
			return nil, malformed(name, "qcow2 v3 header is truncated")
		}
		h.incompat = be.Uint64(b[72:])
		h.refcountOrder = be.Uint32(b[96:])
		h.headerLen = be.Uint32(b[100:])
		if h.headerLen < 104 || h.headerLen%8 != 0 && h.headerLen != 104 {
			return nil, malformed(name, "qcow2 header length %d is invalid", h.headerLen)
		}
		if h.headerLen > 104 && len(b) > 104 {
			h.compType = b[104]
		}
	default:
		return nil, unsupported(name, "qcow2 version %d (only 2 and 3 exist)", h.version)
	}
	if h.clusterBits < 9 || h.clusterBits > 21 {
		return nil, malformed(name, "qcow2 cluster_bits %d is outside 9..21", h.clusterBits)
	}
	if int64(h.headerLen) > int64(1)<<h.clusterBits {
		return nil, malformed(name, "qcow2 header length %d exceeds the first cluster", h.headerLen)
	}
	return h, nil
}

func openQCOW2(f io.ReaderAt, name string, fileSize int64, lim Limits, info *Info) (impl, error) {
	hb := make([]byte, 512)
	if fileSize < 72 {
		return nil, malformed(name, "file of %d bytes is too short for a qcow2 header", fileSize)
	}
	if err := readFullAt(f, name, hb[:min(512, fileSize)], 0, "qcow2 header"); err != nil {
		return nil, err
	}
	h, err := parseQCOW2Header(hb[:min(512, fileSize)], name)
	if err != nil {
		return nil, err
	}
	if int64(h.headerLen) > fileSize {
		return nil, malformed(name, "qcow2 header length %d runs past the end of the %d-byte file (truncated?)", h.headerLen, fileSize)
	}
	if h.crypt != 0 {
		return nil, unsupported(name, "encrypted qcow2 (method %d); decrypt it with qemu-img convert first", h.crypt)
	}
	if h.incompat&qcowIncompatCorrup != 0 {
		return nil, malformed(name, "qcow2 image is marked corrupt; repair a copy with 'qemu-img check -r all' first")
	}
	if h.incompat&qcowIncompatData != 0 {
		return nil, unsupported(name, "qcow2 with an external data file")
	}
	if h.incompat&qcowIncompatExtL2 != 0 && h.clusterBits < 14 {
		return nil, malformed(name, "qcow2 with extended L2 entries has %d-byte clusters (at least 16384 needed)", 1<<h.clusterBits)
	}
	if unk := h.incompat &^ (qcowIncompatDirty | qcowIncompatComp | qcowIncompatCorrup | qcowIncompatData | qcowIncompatExtL2); unk != 0 {
		return nil, unsupported(name, "qcow2 incompatible feature bits %#x", unk)
	}
	q := &qcow2Impl{f: f, name: name, fileSize: fileSize, clusterBits: uint(h.clusterBits), v3: h.version == 3}
	q.cs = int64(1) << h.clusterBits
	q.l2Entries = q.cs / 8
	q.grain = q.cs
	if h.incompat&qcowIncompatExtL2 != 0 {
		// 16-byte L2 entries: the cluster entry and a bitmap of its 32
		// subclusters.
		q.extL2 = true
		q.l2Entries = q.cs / 16
		q.grain = q.cs / 32
	}
	switch {
	case h.incompat&qcowIncompatComp == 0 || h.compType == 0:
	case h.compType == 1:
		q.zstd = true
	default:
		return nil, unsupported(name, "qcow2 compression type %d", h.compType)
	}
	if h.size > uint64(lim.MaxVirtualSize) {
		return nil, malformed(name, "qcow2 virtual size %d is beyond the limit of %d bytes", h.size, lim.MaxVirtualSize)
	}
	q.vsize = int64(h.size)
	need := (q.vsize + q.cs*q.l2Entries - 1) / (q.cs * q.l2Entries)
	if int64(h.l1Size) < need {
		return nil, malformed(name, "qcow2 L1 table has %d entries, %d needed for %d bytes", h.l1Size, need, q.vsize)
	}
	l1Bytes := int64(h.l1Size) * 8
	if l1Bytes > qcowMaxL1Bytes || l1Bytes > lim.MaxTableBytes {
		return nil, malformed(name, "qcow2 L1 table of %d entries is too large", h.l1Size)
	}
	if h.l1Off%uint64(q.cs) != 0 || h.l1Off > uint64(fileSize) || int64(h.l1Off)+int64(need)*8 > fileSize {
		return nil, malformed(name, "qcow2 L1 table at %d (+%d bytes) is misaligned or beyond the end of the %d-byte file (truncated?)", h.l1Off, need*8, fileSize)
	}
	// Only the entries that map the virtual size matter.
	raw := make([]byte, need*8)
	if err := readFullAt(f, name, raw, int64(h.l1Off), "qcow2 L1 table"); err != nil {
		return nil, err
	}
	q.l1 = make([]uint64, need)
	for i := range q.l1 {
		q.l1[i] = binary.BigEndian.Uint64(raw[8*i:])
	}
	// Header extensions (backing format) and the backing file name.
	p := &QCOW2Params{Version: int(h.version), ClusterBits: int(h.clusterBits), RefcountOrder: int(h.refcountOrder)}
	if q.zstd {
		p.CompressionType = "zstd"
	}
	p.ExtendedL2 = q.extL2
	ext := make([]byte, min(q.cs, fileSize)-int64(h.headerLen))
	if len(ext) > 0 {
		if err := readFullAt(f, name, ext, int64(h.headerLen), "qcow2 header extensions"); err != nil {
			return nil, err
		}
	}
	for len(ext) >= 8 {
		typ, n := binary.BigEndian.Uint32(ext), binary.BigEndian.Uint32(ext[4:])
		if typ == 0 {
			break
		}
		if int64(n) > int64(len(ext)-8) {
			return nil, malformed(name, "qcow2 header extension %#x of %d bytes overruns the first cluster", typ, n)
		}
		data := ext[8 : 8+n]
		switch typ {
		case qcowExtBackingFmt:
			bf, err := ParseFormat(string(data))
			if err != nil {
				return nil, unsupported(name, "backing file format %q", data)
			}
			info.BackingFormat = bf
		case qcowExtDataFile:
			return nil, unsupported(name, "qcow2 with an external data file")
		case qcowExtEncryption:
			return nil, unsupported(name, "encrypted qcow2")
		}
		adv := 8 + (int(n)+7)&^7
		if adv > len(ext) {
			break
		}
		ext = ext[adv:]
	}
	if h.backingOff != 0 {
		if h.backingLen == 0 || h.backingLen > 1023 || h.backingOff > uint64(q.cs) || h.backingOff+uint64(h.backingLen) > uint64(q.cs) {
			return nil, malformed(name, "qcow2 backing file name at %d (%d bytes) is outside the first cluster or too long", h.backingOff, h.backingLen)
		}
		bn := make([]byte, h.backingLen)
		if err := readFullAt(f, name, bn, int64(h.backingOff), "qcow2 backing file name"); err != nil {
			return nil, err
		}
		if bytes.IndexByte(bn, 0) >= 0 {
			return nil, malformed(name, "qcow2 backing file name contains a NUL byte")
		}
		info.Backing = string(bn)
		info.backingCandidates = resolveNear(name, info.Backing)
	}
	info.VirtualSize = q.vsize
	info.QCOW2 = p
	q.l2cache = newLRU(64)
	q.ccache = newLRU(16)
	return q, nil
}

// l2 returns the L2 table for L1 index i (nil when unallocated).
func (q *qcow2Impl) l2(i int64) ([]byte, error) {
	e := q.l1[i] & qcowL2Mask
	if e == 0 {
		return nil, nil
	}
	if int64(e)%q.cs != 0 || int64(e) > q.fileSize-q.cs {
		return nil, malformed(q.name, "qcow2 L2 table %d at offset %d is misaligned or beyond the end of the %d-byte file (truncated?)", i, e, q.fileSize)
	}
	if t, ok := q.l2cache.get(int64(e)); ok {
		return t, nil
	}
	t := make([]byte, q.cs)
	if err := readFullAt(q.f, q.name, t, int64(e), "qcow2 L2 table"); err != nil {
		return nil, err
	}
	q.l2cache.put(int64(e), t)
	return t, nil
}

// entry returns the L2 entry for virtual cluster c and, with extended L2
// entries, its subcluster bitmap.
func (q *qcow2Impl) entry(c int64) (e, bitmap uint64, err error) {
	t, err := q.l2(c / q.l2Entries)
	if err != nil || t == nil {
		return 0, 0, err
	}
	e, bitmap = q.entryIn(t, c%q.l2Entries)
	return e, bitmap, nil
}

// entryIn returns entry j of L2 table t and its subcluster bitmap.
func (q *qcow2Impl) entryIn(t []byte, j int64) (e, bitmap uint64) {
	if q.extL2 {
		return binary.BigEndian.Uint64(t[16*j:]), binary.BigEndian.Uint64(t[16*j+8:])
	}
	return binary.BigEndian.Uint64(t[8*j:]), 0
}

// kindOf returns what L2 entry e (with its subcluster bitmap) holds for
// subcluster sub (0 without extended L2 entries).
func (q *qcow2Impl) kindOf(e, bitmap uint64, sub uint) (Kind, error) {
	if e&qcowCompressedBit != 0 {
		return Data, nil
	}
	if q.extL2 {
		alloc, zero := bitmap&(1<<sub) != 0, bitmap&(1<<(32+sub)) != 0
		switch {
		case bitmap&(bitmap>>32) != 0 || e&qcowL2Mask == 0 && bitmap&0xffffffff != 0:
			return 0, malformed(q.name, "qcow2 L2 entry %#x has the invalid subcluster bitmap %#x", e, bitmap)
		case zero:
			return Zero, nil
		case alloc:
			return Data, nil
		}
		return Unallocated, nil
	}
	switch {
	case q.v3 && e&qcowZeroBit != 0:
		return Zero, nil
	case e&qcowL2Mask != 0:
		return Data, nil
	}
	return Unallocated, nil
}

// kindAt returns what the layer holds for map unit u (a cluster, or a
// subcluster with extended L2 entries).
func (q *qcow2Impl) kindAt(u int64) (Kind, error) {
	per := q.cs / q.grain
	e, bitmap, err := q.entry(u / per)
	if err != nil {
		return 0, err
	}
	return q.kindOf(e, bitmap, uint(u%per))
}

func (q *qcow2Impl) lookup(off, limit int64) (Kind, int64, error) {
	u := off / q.grain
	k, err := q.kindAt(u)
	if err != nil {
		return 0, 0, err
	}
	n := min(limit, (u+1)*q.grain-off)
	// Extend over following units of the same kind (bounded by limit).
	for n < limit {
		u++
		k2, err := q.kindAt(u)
		if err != nil {
			return 0, 0, err
		}
		if k2 != k {
			break
		}
		n = min(limit, (u+1)*q.grain-off)
	}
	return k, n, nil
}

func (q *qcow2Impl) readData(p []byte, off int64) error {
	for len(p) > 0 {
		c := off >> q.clusterBits
		in := off - c*q.cs
		n := min(int64(len(p)), q.cs-in)
		e, _, err := q.entry(c)
		if err != nil {
			return err
		}
		if e&qcowCompressedBit != 0 {
			d, err := q.decompress(e)
			if err != nil {
				return fmt.Errorf("%s: cluster at virtual offset %d: %w", q.name, c*q.cs, err)
			}
			copy(p[:n], d[in:])
		} else {
			host := int64(e & qcowL2Mask)
			if host%q.cs != 0 {
				return malformed(q.name, "qcow2 data cluster for virtual offset %d at unaligned host offset %d", c*q.cs, host)
			}
			if err := readFullAt(q.f, q.name, p[:n], host+in, "qcow2 data cluster"); err != nil {
				return err
			}
		}
		p, off = p[n:], off+n
	}
	return nil
}

func (q *qcow2Impl) decompress(e uint64) ([]byte, error) {
	x := 62 - (q.clusterBits - 8)
	coff := int64(e & (1<<x - 1))
	nsec := int64((e>>x)&(1<<(q.clusterBits-8)-1)) + 1
	if d, ok := q.ccache.get(coff); ok {
		return d, nil
	}
	clen := nsec*512 - coff&511
	if coff >= q.fileSize {
		return nil, malformed(q.name, "compressed cluster at %d is beyond the end of the %d-byte file", coff, q.fileSize)
	}
	clen = min(clen, q.fileSize-coff)
	src := make([]byte, clen)
	if err := readFullAt(q.f, q.name, src, coff, "qcow2 compressed cluster"); err != nil {
		return nil, err
	}
	out := make([]byte, q.cs)
	if q.zstd {
		dec, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(4*q.cs)))
		if err != nil {
			return nil, err
		}
		defer dec.Close()
		if _, err := io.ReadFull(dec, out); err != nil {
			return nil, malformed(q.name, "zstd cluster at %d does not decompress to %d bytes: %v", coff, q.cs, err)
		}
	} else {
		fr := flate.NewReader(bytes.NewReader(src))
		if _, err := io.ReadFull(fr, out); err != nil {
			return nil, malformed(q.name, "deflate cluster at %d does not decompress to %d bytes: %v", coff, q.cs, err)
		}
	}
	q.ccache.put(coff, out)
	return out, nil
}

func (q *qcow2Impl) runs() ([]Run, error) {
	var b runBuilder
	span := q.cs * q.l2Entries
	seen := map[uint64]bool{}
	for i := range q.l1 {
		base := int64(i) * span
		if e := q.l1[i] & qcowL2Mask; e != 0 {
			// A shared L2 table is corrupt (and would let a tiny file
			// describe a huge map).
			if seen[e] {
				return nil, malformed(q.name, "qcow2 L2 table at %d is referenced by more than one L1 entry", e)
			}
			seen[e] = true
		}
		t, err := q.l2(int64(i))
		if err != nil {
			return nil, err
		}
		if t == nil {
			continue
		}
		for j := int64(0); j < q.l2Entries; j++ {
			e, bitmap := q.entryIn(t, j)
			for sub := int64(0); sub < q.cs/q.grain; sub++ {
				off := base + j*q.cs + sub*q.grain
				if off >= q.vsize {
					break
				}
				k, err := q.kindOf(e, bitmap, uint(sub))
				if err != nil {
					return nil, err
				}
				b.add(off, min(q.grain, q.vsize-off), k)
			}
		}
	}
	return b.rs, nil
}
