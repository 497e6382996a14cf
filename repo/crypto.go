package repo

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/drpipe/drpipe/tiers"
)

// Sealing: every encrypted object and blob is nonce(12) || AES-256-GCM
// ciphertext || tag(16). Nonces are random; with 96-bit random nonces the
// collision probability stays negligible far beyond 10^9 blobs per key.
const (
	nonceSize    = 12
	tagSize      = 16
	sealOverhead = nonceSize + tagSize
)

// ErrDecrypt is returned (wrapped) when authenticated decryption fails: the
// bytes were corrupted or tampered with, or the wrong key was used.
var ErrDecrypt = errors.New("authentication failed (data corrupted, tampered with, or wrong key)")

// MasterKey is the repository's secret. It is generated at init, stored only
// in password-wrapped key files, and never written elsewhere.
type MasterKey struct {
	// Encrypt is the AES-256-GCM key for all sealed bytes.
	Encrypt [32]byte `json:"encrypt"`
	// ChunkID keys the BLAKE3 hash that names blobs, so storage cannot
	// fingerprint plaintext.
	ChunkID [32]byte `json:"chunk_id"`

	aead cipher.AEAD
	// typed binds sealed metadata to its kind (format version 3 on, see
	// kindAD); set once the repository's format version is known.
	typed bool
}

// Kinds of sealed bytes. From format version 3 on, everything but pack
// blobs is sealed with "drpipe:<kind>" as associated data, so sealed bytes
// of one kind do not open as another: a data blob, whose plaintext anyone
// who can write a backed-up file chooses, cannot be copied into the
// repository as a snapshot, index, tombstone, session, pack header or
// config. Earlier versions seal everything without associated data.
const (
	kindBlob       = "" // data and tree blobs: found only through the index
	kindIndex      = "index"
	kindSnapshot   = "snapshot"
	kindTombstone  = "tombstone"
	kindSession    = "session"
	kindPackHeader = "pack-header"
	kindConfig     = "config"
)

// objectKind is the sealing kind of a metadata object type.
func objectKind(t tiers.Type) string {
	switch t {
	case tiers.TypeIndex:
		return kindIndex
	case tiers.TypeSnapshot:
		return kindSnapshot
	case tiers.TypeTombstone:
		return kindTombstone
	case tiers.TypeSession:
		return kindSession
	}
	return string(t)
}

// kindAD is the associated data for sealing bytes of kind.
func (k *MasterKey) kindAD(kind string) []byte {
	if !k.typed || kind == kindBlob {
		return nil
	}
	return []byte("drpipe:" + kind)
}

// setFormat sets how k seals for a repository of format version v.
func (k *MasterKey) setFormat(v int) { k.typed = v >= 3 }

// NewMasterKey returns a fresh random master key.
func NewMasterKey() (*MasterKey, error) {
	k := &MasterKey{}
	if _, err := rand.Read(k.Encrypt[:]); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	if _, err := rand.Read(k.ChunkID[:]); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	return k, k.init()
}

func (k *MasterKey) init() error {
	a, err := newAEAD(k.Encrypt[:])
	if err != nil {
		return err
	}
	k.aead = a
	return nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("init AES: %w", err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("init GCM: %w", err)
	}
	return a, nil
}

// Seal appends nonce||ciphertext||tag of plain to dst and returns it.
// Safe for concurrent use.
func (k *MasterKey) Seal(dst, plain []byte) []byte {
	return seal(k.aead, dst, plain, nil)
}

// sealAs is Seal for bytes of kind (see kindAD).
func (k *MasterKey) sealAs(kind string, dst, plain []byte) []byte {
	return seal(k.aead, dst, plain, k.kindAD(kind))
}

// openAs is Open for bytes of kind (see kindAD).
func (k *MasterKey) openAs(kind string, dst, sealed []byte) ([]byte, error) {
	return open(k.aead, dst, sealed, k.kindAD(kind))
}

// Open authenticates and decrypts sealed (as produced by Seal), appending
// the plaintext to dst. It returns an error wrapping ErrDecrypt on failure.
// Safe for concurrent use.
func (k *MasterKey) Open(dst, sealed []byte) ([]byte, error) {
	return open(k.aead, dst, sealed, nil)
}

func seal(a cipher.AEAD, dst, plain, ad []byte) []byte {
	n := len(dst)
	if cap(dst)-n < nonceSize+len(plain)+tagSize {
		nd := make([]byte, n, n+nonceSize+len(plain)+tagSize)
		copy(nd, dst)
		dst = nd
	}
	dst = dst[:n+nonceSize]
	if _, err := rand.Read(dst[n:]); err != nil {
		// crypto/rand.Read never returns an error on supported platforms
		// (Go 1.24+); a failure here means the OS RNG is broken.
		panic("drpipe: crypto/rand failed: " + err.Error())
	}
	return a.Seal(dst, dst[n:n+nonceSize], plain, ad)
}

func open(a cipher.AEAD, dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < sealOverhead {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the %d-byte envelope", ErrDecrypt, len(sealed), sealOverhead)
	}
	out, err := a.Open(dst, sealed[:nonceSize], sealed[nonceSize:], ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}
