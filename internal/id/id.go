// Package id defines the 32-byte identifiers used throughout drpipe: chunk
// (blob) IDs, pack IDs and the names of content-addressed repository objects.
//
// Object names (packs, indexes, snapshots, keys) are SHA-256 digests of the
// stored bytes, so any holder can verify an object without the repository
// key. Chunk IDs are keyed hashes of the plaintext and are computed in
// package chunking; they share this type.
package id

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// ID is a 32-byte identifier. The zero value is "no ID".
type ID [32]byte

// Hash returns the SHA-256 digest of data as an ID.
func Hash(data []byte) ID { return ID(sha256.Sum256(data)) }

// Parse decodes a 64-character lower- or upper-case hex string.
func Parse(s string) (ID, error) {
	var i ID
	if len(s) != 2*len(i) {
		return ID{}, fmt.Errorf("id: %q is %d characters, want %d hex digits", short(s), len(s), 2*len(i))
	}
	if _, err := hex.Decode(i[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("id: %q is not hex: %w", short(s), err)
	}
	return i, nil
}

// String returns the full lower-case hex form.
func (i ID) String() string { return hex.EncodeToString(i[:]) }

// Short returns the first 8 hex digits, for messages.
func (i ID) Short() string { return hex.EncodeToString(i[:4]) }

// IsNull reports whether i is the zero ID.
func (i ID) IsNull() bool { return i == ID{} }

// MarshalText implements encoding.TextMarshaler (hex).
func (i ID) MarshalText() ([]byte, error) {
	b := make([]byte, 2*len(i))
	hex.Encode(b, i[:])
	return b, nil
}

// UnmarshalText implements encoding.TextUnmarshaler (hex).
func (i *ID) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*i = v
	return nil
}

// Less orders IDs bytewise; used to keep lists deterministic.
func (i ID) Less(o ID) bool {
	for k := range i {
		if i[k] != o[k] {
			return i[k] < o[k]
		}
	}
	return false
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
