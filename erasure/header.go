package erasure

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"

	"github.com/zeebo/blake3"

	"github.com/drpipe/drpipe/internal/id"
)

// Format constants of shard objects.
const (
	// Magic starts every shard object.
	Magic = "DRPS"
	// Version is the shard format version Encode writes: payload hashes
	// are BLAKE3-256. Version 1 (SHA-256 payload hashes) is still read and
	// written on request (EncodeVersion) for repositories of format 1.
	Version = 2
	// MinVersion is the oldest shard format version ParseHeader accepts.
	MinVersion = 1
	// FixedHeaderSize is the length of the fixed part of the header (magic
	// to shard size), enough to learn K and M and hence the header size.
	FixedHeaderSize = 20
	// MaxHeaderSize is the largest possible header (K+M = 255): a caller
	// that does not know K+M can range-read this many bytes (or the whole
	// object, if smaller) and pass them to ParseHeader.
	MaxHeaderSize = FixedHeaderSize + 32*MaxShards + 4
)

// MaxShardSize is the largest payload S a version 1 header can describe.
const MaxShardSize = math.MaxUint32

var (
	// ErrCorrupt is wrapped by every error reporting a malformed header or
	// a shard object that fails verification.
	ErrCorrupt = errors.New("erasure: corrupt shard")
	// ErrShortHeader is returned by ParseHeader when b is a valid but too
	// short prefix of a header; the message says how many bytes are needed.
	ErrShortHeader = errors.New("erasure: short shard header")
	// ErrTooFewShards is wrapped by Reconstruct's error when fewer than K
	// shards are present and intact.
	ErrTooFewShards = errors.New("erasure: too few intact shards")
)

// Header is the decoded header of a shard object.
type Header struct {
	Version   int     // format version, MinVersion..Version
	K, M      int     // coding parameters
	PackLen   int64   // L, length of the pack in bytes
	ShardSize int     // S, payload length of every shard, ceil(L/K)
	Hashes    []id.ID // PayloadHash of every shard's payload, K+M entries
	Index     int     // index of this shard, 0..K+M-1 (0..K-1 are data shards)
}

// HeaderSize returns the length of a shard header (table, index and
// reserved bytes; the payload starts there) for parameters p: 24+32*(K+M).
// It returns 0 if p is invalid.
func HeaderSize(p Params) int {
	if p.Validate() != nil {
		return 0
	}
	return tableSize(p.K+p.M) + 4
}

func tableSize(n int) int { return FixedHeaderSize + 32*n }

// Params returns the coding parameters K+M of the pack.
func (h Header) Params() Params { return Params{K: h.K, M: h.M} }

// Size returns the header length T+4, i.e. the offset of the payload in the
// shard object (0 if K or M is invalid).
func (h Header) Size() int { return HeaderSize(h.Params()) }

// ObjectSize returns the length of the complete shard object, header plus
// payload.
func (h Header) ObjectSize() int64 { return int64(h.Size()) + int64(h.ShardSize) }

// PackID returns the pack ID: the SHA-256 digest of the shard table, bytes
// [0:T) of the object, which is the same in every shard of the pack.
func (h Header) PackID() id.ID {
	var buf [MaxHeaderSize]byte
	return id.Hash(h.appendTable(buf[:0]))
}

// PayloadHash returns the hash of a shard payload as the table of a
// version v header records it: SHA-256 for version 1, BLAKE3-256 from
// version 2 on (three times faster; the pack ID stays SHA-256).
func PayloadHash(v int, payload []byte) id.ID {
	if v == 1 {
		return id.Hash(payload)
	}
	return id.ID(blake3.Sum256(payload))
}

// NewPayloadHash returns a streaming PayloadHash for version v.
func NewPayloadHash(v int) hash.Hash {
	if v == 1 {
		return sha256.New()
	}
	return blake3.New()
}

// PayloadHash hashes payload as this header's table does.
func (h Header) PayloadHash(payload []byte) id.ID { return PayloadHash(h.Version, payload) }

// NewPayloadHash returns a streaming hash of payloads for this header.
func (h Header) NewPayloadHash() hash.Hash { return NewPayloadHash(h.Version) }

// appendTable appends the serialized shard table of h to dst.
func (h Header) appendTable(dst []byte) []byte {
	dst = append(dst, Magic...)
	dst = append(dst, byte(h.Version), byte(h.K), byte(h.M), 0)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(h.PackLen))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.ShardSize))
	for _, x := range h.Hashes {
		dst = append(dst, x[:]...)
	}
	return dst
}

// putHeader writes the table of h and the given shard index into the first
// tableSize+4 bytes of dst (which must be that long).
func (h Header) putHeader(dst []byte, index int) {
	t := len(h.appendTable(dst[:0]))
	dst[t] = byte(index)
	dst[t+1], dst[t+2], dst[t+3] = 0, 0, 0
}

// ParseHeader decodes and checks the header at the start of b, which may be
// just a prefix of a shard object: the first FixedHeaderSize bytes determine
// K+M, and then Size() bytes are needed in total. It needs no key and does
// not look at the payload (see VerifyShard for that), nor can it check the
// shard size against the object length.
//
// A b that is too short yields an error wrapping ErrShortHeader that says
// how many bytes are needed; malformed headers yield errors wrapping
// ErrCorrupt.
func ParseHeader(b []byte) (Header, error) {
	h, p := parseHeader(b)
	if p != nil {
		if p.short {
			return Header{}, fmt.Errorf("%w: %s", ErrShortHeader, p.msg)
		}
		return Header{}, fmt.Errorf("%w: header %s", ErrCorrupt, p.msg)
	}
	return h, nil
}

// problem describes why a header does not parse.
type problem struct {
	short bool // b is too short, not malformed
	msg   string
}

func shortf(format string, args ...any) *problem {
	return &problem{short: true, msg: fmt.Sprintf(format, args...)}
}

func badf(format string, args ...any) *problem {
	return &problem{msg: fmt.Sprintf(format, args...)}
}

// parseHeader does the work of ParseHeader; messages leave the context
// (pack, shard) to the caller.
func parseHeader(b []byte) (Header, *problem) {
	if len(b) < FixedHeaderSize {
		return Header{}, shortf("have %d bytes, need at least %d", len(b), FixedHeaderSize)
	}
	if string(b[0:4]) != Magic {
		return Header{}, badf("offset 0: magic %q, want %q", b[0:4], Magic)
	}
	if b[4] < MinVersion || b[4] > Version {
		return Header{}, badf("offset 4: format version %d, this drpipe reads %d..%d (a newer drpipe wrote it?)", b[4], MinVersion, Version)
	}
	k, m := int(b[5]), int(b[6])
	if k < 1 || k > MaxK {
		return Header{}, badf("offset 5: K=%d, want 1..%d", k, MaxK)
	}
	if m > MaxM {
		return Header{}, badf("offset 6: M=%d, want 0..%d", m, MaxM)
	}
	if k+m > MaxShards {
		return Header{}, badf("offsets 5-6: K+M=%d+%d=%d shards, want at most %d", k, m, k+m, MaxShards)
	}
	if b[7] != 0 {
		return Header{}, badf("offset 7: reserved byte 0x%02x, want 0", b[7])
	}
	l := binary.LittleEndian.Uint64(b[8:16])
	if l == 0 {
		return Header{}, badf("offset 8: pack length 0, want at least 1")
	}
	s := binary.LittleEndian.Uint32(b[16:20])
	want := (l-1)/uint64(k) + 1 // ceil(l/k) without overflow
	if want > MaxShardSize {
		return Header{}, badf("offset 8: pack length %d is too large for K=%d (shard size would be %d, limit %d)", l, k, want, uint64(MaxShardSize))
	}
	if uint64(s) != want {
		return Header{}, badf("offset 16: shard size %d, want ceil(%d/%d)=%d", s, l, k, want)
	}
	n := k + m
	t := tableSize(n)
	if uint64(s) > uint64(math.MaxInt-t-4) {
		// Only reachable where int is 32 bits.
		return Header{}, badf("offset 16: shard size %d is too large for this platform", s)
	}
	if len(b) < t+4 {
		return Header{}, shortf("have %d bytes, need %d for a %d+%d header", len(b), t+4, k, m)
	}
	if int(b[t]) >= n {
		return Header{}, badf("offset %d: shard index %d, want 0..%d", t, b[t], n-1)
	}
	if !bytes.Equal(b[t+1:t+4], []byte{0, 0, 0}) {
		return Header{}, badf("offset %d: reserved bytes % x, want zeros", t+1, b[t+1:t+4])
	}
	h := Header{
		Version:   int(b[4]),
		K:         k,
		M:         m,
		PackLen:   int64(l), // l <= MaxK*MaxShardSize < 2^39
		ShardSize: int(s),
		Hashes:    make([]id.ID, n),
		Index:     int(b[t]),
	}
	for i := range h.Hashes {
		copy(h.Hashes[i][:], b[FixedHeaderSize+32*i:])
	}
	return h, nil
}

// validate checks the fields of a Header that may have been built by hand.
func (h Header) validate() error {
	if err := h.Params().Validate(); err != nil {
		return err
	}
	if h.PackLen < 1 || h.ShardSize < 1 || int64(h.ShardSize) != (h.PackLen-1)/int64(h.K)+1 {
		return fmt.Errorf("erasure: invalid header: pack length %d and shard size %d do not match K=%d", h.PackLen, h.ShardSize, h.K)
	}
	return nil
}

// VerifyShard checks that obj is the complete, intact shard object number
// index of the pack packID: the table hashes to packID, the header is well
// formed and names index, the object is exactly ObjectSize bytes, and the
// payload hashes to the table entry for index. It needs no key. All
// failures wrap ErrCorrupt. On success it returns the decoded header.
func VerifyShard(packID id.ID, index int, obj []byte) (Header, error) {
	h, p := parseHeader(obj)
	if p != nil {
		if p.short {
			return Header{}, corruptf(packID, index, "truncated header: %s", p.msg)
		}
		return Header{}, corruptf(packID, index, "header %s", p.msg)
	}
	t := tableSize(h.K + h.M)
	if h.Index != index {
		return Header{}, corruptf(packID, index, "header offset %d: shard index %d, want %d", t, h.Index, index)
	}
	if got := id.Hash(obj[:t]); got != packID {
		return Header{}, corruptf(packID, index, "shard table [0:%d) hashes to %s, not to the pack ID", t, got.Short())
	}
	if want := h.ObjectSize(); int64(len(obj)) != want {
		return Header{}, corruptf(packID, index, "object is %d bytes, want %d (%d-byte header + %d-byte payload)", len(obj), want, h.Size(), h.ShardSize)
	}
	hs := h.Size()
	if got := h.PayloadHash(obj[hs:]); got != h.Hashes[index] {
		return Header{}, corruptf(packID, index, "payload [%d:%d) hashes to %s, table says %s", hs, len(obj), got.Short(), h.Hashes[index].Short())
	}
	return h, nil
}

func corruptf(packID id.ID, index int, format string, args ...any) error {
	return fmt.Errorf("%w: shard %d of pack %s: %s", ErrCorrupt, index, packID.Short(), fmt.Sprintf(format, args...))
}
