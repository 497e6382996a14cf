package erasure

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/drpipe/drpipe/internal/id"
)

// ShardName returns the object name of shard i of pack packID:
// "<packID hex>-<i>" with i in decimal, e.g. "ab12…ef-3".
func ShardName(packID id.ID, i int) string {
	return packID.String() + "-" + strconv.Itoa(i)
}

// ParseShardName splits an object name made by ShardName into pack ID and
// shard index. Only the canonical form is accepted: 64 lower-case hex
// digits, "-", and an index 0..MaxShards-1 in decimal without sign or
// leading zeros.
func ParseShardName(name string) (id.ID, int, error) {
	hexPart, idxPart, ok := strings.Cut(name, "-")
	if !ok {
		return id.ID{}, 0, fmt.Errorf("erasure: shard name %q: want \"<pack id>-<index>\"", clip(name))
	}
	packID, err := id.Parse(hexPart)
	if err != nil {
		return id.ID{}, 0, fmt.Errorf("erasure: shard name %q: pack id: %w", clip(name), err)
	}
	if packID.String() != hexPart {
		return id.ID{}, 0, fmt.Errorf("erasure: shard name %q: pack id must be lower-case hex", clip(name))
	}
	i, ok := smallUint(idxPart)
	if !ok || strconv.Itoa(i) != idxPart || i >= MaxShards {
		return id.ID{}, 0, fmt.Errorf("erasure: shard name %q: index %q, want a decimal number 0..%d without leading zeros", clip(name), clip(idxPart), MaxShards-1)
	}
	return packID, i, nil
}

// Span is a piece of a pack byte range stored contiguously in one data
// shard object.
type Span struct {
	Shard     int   // data shard index, 0..K-1
	ObjOffset int64 // offset inside the shard object (header size + payload offset)
	Len       int64 // number of bytes
}

// Locate maps the pack byte range [off, off+n) onto the data shards of the
// pack described by h (any shard's header: they share the table). The spans
// come in pack order; reading each span's Len bytes at ObjOffset from shard
// object ShardName(packID, Shard) and concatenating them yields the range.
// A range that is not within [0, PackLen] is an error; n == 0 yields no
// spans.
func (h Header) Locate(off, n int64) ([]Span, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	if off < 0 || n < 0 || off > h.PackLen || n > h.PackLen-off {
		return nil, fmt.Errorf("erasure: locate %d bytes at offset %d of pack %s: out of range, the pack is %d bytes", n, off, h.PackID().Short(), h.PackLen)
	}
	s := int64(h.ShardSize)
	hs := int64(h.Size())
	var spans []Span
	for n > 0 {
		within := off % s
		l := min(s-within, n)
		spans = append(spans, Span{Shard: int(off / s), ObjOffset: hs + within, Len: l})
		off += l
		n -= l
	}
	return spans, nil
}
