package chunking

import (
	"sync"

	"github.com/drpipe/drpipe/internal/id"
	"lukechampine.com/blake3"
)

// IDFunc computes the ID of a chunk's plaintext. (*Hasher).ID is an IDFunc.
type IDFunc func(data []byte) id.ID

// Hasher computes chunk IDs: the BLAKE3-256 hash of the plaintext keyed with
// a secret 32-byte key, so that IDs reveal nothing about content to anyone
// without the key. A Hasher is safe for concurrent use.
type Hasher struct {
	pool sync.Pool // of *blake3.Hasher, all keyed with the same key
}

// NewHasher returns a Hasher keyed with key. The key should be a secret
// dedicated to chunk IDs (derived from the repository master key), and
// must stay the same for as long as chunks should deduplicate.
func NewHasher(key [32]byte) *Hasher {
	h := &Hasher{}
	h.pool.New = func() any { return blake3.New(32, key[:]) }
	return h
}

// ID returns the keyed BLAKE3-256 hash of data.
func (h *Hasher) ID(data []byte) id.ID {
	b := h.pool.Get().(*blake3.Hasher)
	b.Reset()
	_, _ = b.Write(data) // never fails
	var out id.ID
	b.Sum(out[:0])
	h.pool.Put(b)
	return out
}
