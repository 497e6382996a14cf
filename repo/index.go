package repo

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
)

// Index file plaintext (sealed and zstd-compressed like a blob, stored as
// index/<sha256 of the stored bytes>):
//
//	"DRPI" | version u8 | reserved 3
//	nSupersedes u32 | nSupersedes × id [32]
//	nPacks u32 | nPacks × pack
//	pack: id [32] | length u64 | shard size u32 | K u8 | M u8 | nBlobs u32 | nBlobs × blob
//	blob: type u8 | offset u32 | length u32 | raw length u32 | id [32]
const (
	indexMagic     = "DRPI"
	indexVersion   = 1
	indexPackFixed = 32 + 8 + 4 + 1 + 1 + 4
	indexBlobSize  = 1 + 4 + 4 + 4 + 32
)

// maxIndexPlainLen bounds an index object's plaintext: readers refuse a
// larger one before allocating for it, and SaveIndexFile splits an index
// that would exceed it. (Before the limit was stated, readers already
// capped zstd-compressed index objects at 64 MiB.)
const maxIndexPlainLen = maxObjectPlain

// PackInfo is what a reader needs to locate a pack's shards.
type PackInfo struct {
	ID        id.ID
	Length    int64  // logical pack length
	ShardSize uint32 // payload bytes per shard
	K, M      uint8
}

// IndexPack is one pack and its blobs as recorded in an index file.
type IndexPack struct {
	PackInfo
	Blobs []BlobEntry
}

// IndexFile is the decoded content of one index object.
type IndexFile struct {
	// Supersedes lists index objects whose content this one contains,
	// less what its writer left out on purpose; they may be deleted once
	// this one is durable. Readers take the union of all index objects
	// and do not act on it.
	Supersedes []id.ID
	Packs      []IndexPack
}

func encodeIndex(f *IndexFile) []byte {
	n := 8 + 4 + 32*len(f.Supersedes) + 4
	for _, p := range f.Packs {
		n += indexPackFixed + indexBlobSize*len(p.Blobs)
	}
	b := make([]byte, 0, n)
	b = append(b, indexMagic...)
	b = append(b, indexVersion, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Supersedes)))
	for _, s := range f.Supersedes {
		b = append(b, s[:]...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Packs)))
	for _, p := range f.Packs {
		b = append(b, p.ID[:]...)
		b = binary.LittleEndian.AppendUint64(b, uint64(p.Length))
		b = binary.LittleEndian.AppendUint32(b, p.ShardSize)
		b = append(b, p.K, p.M)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Blobs)))
		for _, e := range p.Blobs {
			b = append(b, byte(e.Type))
			b = binary.LittleEndian.AppendUint32(b, e.Offset)
			b = binary.LittleEndian.AppendUint32(b, e.Length)
			b = binary.LittleEndian.AppendUint32(b, e.RawLength)
			b = append(b, e.ID[:]...)
		}
	}
	return b
}

var errIndexTrunc = errors.New("index: truncated")

// decodeIndex parses an index plaintext. It never allocates more than the
// input size justifies.
func decodeIndex(b []byte) (*IndexFile, error) {
	if len(b) < 8 || string(b[:4]) != indexMagic {
		return nil, errors.New("index: bad magic")
	}
	if b[4] != indexVersion {
		return nil, fmt.Errorf("%w: index version %d (this drpipe reads %d)", ErrUnsupportedVersion, b[4], indexVersion)
	}
	if b[5]|b[6]|b[7] != 0 {
		return nil, errors.New("index: reserved header bytes are not zero")
	}
	p := b[8:]
	u32 := func() (uint32, error) {
		if len(p) < 4 {
			return 0, errIndexTrunc
		}
		v := binary.LittleEndian.Uint32(p)
		p = p[4:]
		return v, nil
	}
	f := &IndexFile{}
	ns, err := u32()
	if err != nil {
		return nil, err
	}
	if uint64(ns)*32 > uint64(len(p)) {
		return nil, fmt.Errorf("%w: %d superseded ids in %d bytes", errIndexTrunc, ns, len(p))
	}
	f.Supersedes = make([]id.ID, ns)
	for i := range f.Supersedes {
		copy(f.Supersedes[i][:], p[:32])
		p = p[32:]
	}
	np, err := u32()
	if err != nil {
		return nil, err
	}
	if uint64(np)*indexPackFixed > uint64(len(p)) {
		return nil, fmt.Errorf("%w: %d packs in %d bytes", errIndexTrunc, np, len(p))
	}
	f.Packs = make([]IndexPack, np)
	for i := range f.Packs {
		if len(p) < indexPackFixed {
			return nil, fmt.Errorf("%w: pack %d", errIndexTrunc, i)
		}
		ip := &f.Packs[i]
		copy(ip.ID[:], p[:32])
		ip.Length = int64(binary.LittleEndian.Uint64(p[32:40]))
		ip.ShardSize = binary.LittleEndian.Uint32(p[40:44])
		ip.K, ip.M = p[44], p[45]
		nb := binary.LittleEndian.Uint32(p[46:50])
		p = p[indexPackFixed:]
		if ip.K == 0 || int(ip.K) > erasure.MaxK || int(ip.M) > erasure.MaxM || ip.Length <= 0 || ip.Length > 1<<32 {
			return nil, fmt.Errorf("index: pack %s has implausible geometry (%d+%d, %d bytes)", ip.ID.Short(), ip.K, ip.M, ip.Length)
		}
		if want := (ip.Length + int64(ip.K) - 1) / int64(ip.K); int64(ip.ShardSize) != want {
			return nil, fmt.Errorf("index: pack %s shard size %d, want %d", ip.ID.Short(), ip.ShardSize, want)
		}
		if uint64(nb)*indexBlobSize > uint64(len(p)) {
			return nil, fmt.Errorf("%w: pack %s claims %d blobs in %d bytes", errIndexTrunc, ip.ID.Short(), nb, len(p))
		}
		ip.Blobs = make([]BlobEntry, nb)
		for j := range ip.Blobs {
			e := &ip.Blobs[j]
			e.Type = BlobType(p[0])
			e.Offset = binary.LittleEndian.Uint32(p[1:5])
			e.Length = binary.LittleEndian.Uint32(p[5:9])
			e.RawLength = binary.LittleEndian.Uint32(p[9:13])
			copy(e.ID[:], p[13:45])
			p = p[indexBlobSize:]
			if !e.Type.valid() {
				return nil, fmt.Errorf("index: pack %s blob %d has unknown type %d", ip.ID.Short(), j, uint8(e.Type))
			}
			if uint64(e.Offset)+uint64(e.Length) > uint64(ip.Length) || e.Length < sealOverhead+1 || e.RawLength > MaxBlobSize {
				return nil, fmt.Errorf("index: pack %s blob %d lies outside the pack or has implausible lengths", ip.ID.Short(), j)
			}
		}
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("index: %d trailing bytes", len(p))
	}
	return f, nil
}

// SealIndexObject encodes and seals an index object without storing it and
// returns its name (the SHA-256 of the sealed bytes) and bytes. Tiering
// uses it to give a tier an index for exactly the packs it receives.
func (r *Repository) SealIndexObject(f *IndexFile) (id.ID, []byte) {
	sealed, _ := r.key.encodeBlob(kindIndex, nil, nil, encodeIndex(f), CompressAuto)
	return id.Hash(sealed), sealed
}
