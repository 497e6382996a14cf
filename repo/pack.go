package repo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/drpipe/drpipe/internal/id"
)

// Pack layout (before erasure coding):
//
//	blob 0 | blob 1 | ... | blob n-1 | sealed header | header length (u32 LE) | "DRPK"
//
// Each blob is a sealed envelope (nonce || AES-GCM(compression id ||
// payload) || tag). The sealed header lists every blob so that an index can
// be rebuilt from packs alone:
//
//	"DRPH" | version u8 | reserved 3 | count u32 | count × entry
//	entry: type u8 | length u32 | raw length u32 | blob id [32]
//
// Blob offsets follow from the lengths in order.
const (
	packHeaderMagic   = "DRPH"
	packTrailerMagic  = "DRPK"
	packHeaderVersion = 1
	packEntrySize     = 1 + 4 + 4 + 32
	packTrailerSize   = 8
	// maxBlobsPerPack bounds header parsing.
	maxBlobsPerPack = 1 << 20
)

// BlobEntry locates one blob inside a pack.
type BlobEntry struct {
	Type      BlobType
	ID        id.ID
	Offset    uint32 // offset of the sealed envelope in the pack
	Length    uint32 // sealed length
	RawLength uint32 // plaintext length
}

// encodePackHeader builds the plaintext header for entries.
func encodePackHeader(entries []BlobEntry) []byte {
	b := make([]byte, 0, 12+len(entries)*packEntrySize)
	b = append(b, packHeaderMagic...)
	b = append(b, packHeaderVersion, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, byte(e.Type))
		b = binary.LittleEndian.AppendUint32(b, e.Length)
		b = binary.LittleEndian.AppendUint32(b, e.RawLength)
		b = append(b, e.ID[:]...)
	}
	return b
}

// decodePackHeader parses a plaintext pack header. headerOffset is where
// the sealed header starts in the pack, which bounds the blob area.
func decodePackHeader(b []byte, headerOffset uint32) ([]BlobEntry, error) {
	if len(b) < 12 || string(b[:4]) != packHeaderMagic {
		return nil, errors.New("pack header: bad magic")
	}
	if b[4] != packHeaderVersion {
		return nil, fmt.Errorf("%w: pack header version %d", ErrUnsupportedVersion, b[4])
	}
	if b[5]|b[6]|b[7] != 0 {
		return nil, errors.New("pack header: reserved bytes are not zero")
	}
	n := binary.LittleEndian.Uint32(b[8:12])
	if n > maxBlobsPerPack || uint64(len(b)-12) != uint64(n)*packEntrySize {
		return nil, fmt.Errorf("pack header: %d entries do not fit %d bytes", n, len(b)-12)
	}
	out := make([]BlobEntry, n)
	var off uint64
	p := b[12:]
	for i := range out {
		e := &out[i]
		e.Type = BlobType(p[0])
		e.Length = binary.LittleEndian.Uint32(p[1:5])
		e.RawLength = binary.LittleEndian.Uint32(p[5:9])
		copy(e.ID[:], p[9:41])
		if !e.Type.valid() {
			return nil, fmt.Errorf("pack header: entry %d has unknown blob type %d", i, p[0])
		}
		if e.Length < sealOverhead+1 || e.RawLength > MaxBlobSize {
			return nil, fmt.Errorf("pack header: entry %d has implausible lengths (%d sealed, %d raw)", i, e.Length, e.RawLength)
		}
		e.Offset = uint32(off)
		off += uint64(e.Length)
		if off > uint64(headerOffset) {
			return nil, fmt.Errorf("pack header: entry %d ends at %d, beyond the blob area (%d bytes)", i, off, headerOffset)
		}
		p = p[packEntrySize:]
	}
	return out, nil
}

// parsePackTrailer returns the sealed header's offset and length from the
// last 8 bytes of a pack of packLen bytes.
func parsePackTrailer(trailer []byte, packLen int64) (hdrOff, hdrLen uint32, err error) {
	if len(trailer) != packTrailerSize || string(trailer[4:]) != packTrailerMagic {
		return 0, 0, errors.New("pack trailer: bad magic")
	}
	// Blob and header offsets are 32-bit: no pack is longer.
	if packLen > math.MaxUint32 {
		return 0, 0, fmt.Errorf("pack trailer: a %d-byte pack is longer than the 4 GiB the format addresses", packLen)
	}
	hl := int64(binary.LittleEndian.Uint32(trailer[:4]))
	if hl < sealOverhead+12 || hl > packLen-packTrailerSize {
		return 0, 0, fmt.Errorf("pack trailer: header length %d does not fit a %d-byte pack", hl, packLen)
	}
	return uint32(packLen - packTrailerSize - hl), uint32(hl), nil
}

// ParsePack decodes the blob list of a complete plaintext-framed pack using
// the master key. Used by check --read-data and index repair.
func (r *Repository) ParsePack(pack []byte) ([]BlobEntry, error) {
	if len(pack) < packTrailerSize {
		return nil, errors.New("pack shorter than its trailer")
	}
	hdrOff, hdrLen, err := parsePackTrailer(pack[len(pack)-packTrailerSize:], int64(len(pack)))
	if err != nil {
		return nil, err
	}
	plain, err := r.key.openAs(kindPackHeader, nil, pack[hdrOff:hdrOff+hdrLen])
	if err != nil {
		return nil, fmt.Errorf("pack header: %w", err)
	}
	return decodePackHeader(plain, hdrOff)
}
