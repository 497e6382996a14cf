package repo

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/drpipe/drpipe/internal/cpus"
	"github.com/drpipe/drpipe/internal/id"
)

// BlobType says what a blob holds. The numeric values are stored in pack
// headers and index files and are never reused.
type BlobType uint8

// Blob types.
const (
	DataBlob BlobType = 1 // file content chunk
	TreeBlob BlobType = 2 // directory listing, content list or other metadata
)

// String names the blob type for messages.
func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

func (t BlobType) valid() bool { return t == DataBlob || t == TreeBlob }

// Compression algorithm IDs, stored as the first plaintext byte of every
// sealed blob. Fixed forever; never reuse a number.
const (
	compNone byte = 0
	compZstd byte = 1
)

// Compression selects how hard new blobs are compressed. Reading never
// depends on it.
type Compression int

// Compression levels; "auto" is the default.
const (
	CompressAuto Compression = iota // zstd default level, stored raw when it does not help
	CompressOff
	CompressFastest
	CompressMax
)

// ParseCompression maps a config value to a Compression.
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "", "auto":
		return CompressAuto, nil
	case "off", "none":
		return CompressOff, nil
	case "fastest":
		return CompressFastest, nil
	case "max":
		return CompressMax, nil
	}
	return 0, fmt.Errorf("unknown compression %q: use auto, off, fastest or max", s)
}

var (
	decOnce sync.Once
	// sizedDecoder decodes every zstd payload that decompressZstd does
	// not (all of them in a pure-Go build). It stops at the spare
	// capacity of the destination (WithDecodeAllCapLimit), so the caller
	// decides how much may be allocated before decoding starts: the
	// plaintext length from the index for blobs, the bound zstdBound reads
	// from the frame headers for metadata objects. A frame that claims or
	// expands to more fails before memory is allocated for it. It also
	// refuses frames declaring more than MaxBlobSize of content or window;
	// the window is only checked, never allocated: DecodeAll decodes in
	// place into the destination, which doubles as the history.
	sizedDecoder *zstd.Decoder
)

func codecs() {
	decOnce.Do(func() {
		sd, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(cpus.N()), zstd.WithDecoderMaxMemory(MaxBlobSize), zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(err) // static options; cannot fail
		}
		sizedDecoder = sd
	})
}

// MaxBlobSize bounds a blob's plaintext; chunks are at most 8 MiB and tree
// blobs are split well below this. It is also the limit of an index,
// snapshot or tombstone object's plaintext (see maxObjectPlain).
const MaxBlobSize = 64 << 20

// ErrTooLarge is wrapped when a stored object, or the content it
// decompresses to, is larger than drpipe allows for its kind (MaxBlobSize
// for blobs and for index, snapshot and tombstone objects; see
// docs/REPOSITORY-FORMAT.md). drpipe never writes such an object: it was
// written by a newer or faulty drpipe or by someone else holding the
// repository key. It is refused before memory is allocated for its
// content.
var ErrTooLarge = errors.New("object larger than drpipe allows for its kind")

// encodeBlob compresses (when it helps) and seals plain as bytes of kind
// (kindBlob for pack blobs), appending to dst. scratch is a reusable
// buffer for the compressed form; the grown scratch is returned for reuse.
func (k *MasterKey) encodeBlob(kind string, dst, scratch, plain []byte, c Compression) (out, newScratch []byte) {
	codecs()
	scratch = append(scratch[:0], compNone)
	if c != CompressOff && len(plain) >= 64 {
		var ok bool
		scratch, ok = compressZstd(append(scratch[:0], compZstd), plain, c)
		// Keep the compressed form only if it saves at least 1/32.
		if !ok || len(scratch)-1 > len(plain)-len(plain)/32 {
			scratch = append(scratch[:0], compNone)
			scratch = append(scratch, plain...)
		}
	} else {
		scratch = append(scratch, plain...)
	}
	return k.sealAs(kind, dst, scratch), scratch
}

// decodeBlob opens a sealed blob and decompresses it, appending to dst. It
// verifies the plaintext length and, when want is not null, that the
// keyed hash matches.
func (r *Repository) decodeBlob(dst, sealed []byte, rawLen int, want id.ID) ([]byte, error) {
	return r.decodeBlobWith(dst, sealed, rawLen, want, false)
}

// decodeBlobInPlace is decodeBlob decrypting over sealed's own storage
// (which it clobbers), saving an allocation per blob on the read path.
func (r *Repository) decodeBlobInPlace(dst, sealed []byte, rawLen int, want id.ID) ([]byte, error) {
	return r.decodeBlobWith(dst, sealed, rawLen, want, true)
}

func (r *Repository) decodeBlobWith(dst, sealed []byte, rawLen int, want id.ID, inPlace bool) ([]byte, error) {
	return r.decodeSealed(kindBlob, dst, sealed, rawLen, MaxBlobSize, want, inPlace)
}

// decodeObject opens a sealed metadata object (index, snapshot, tombstone
// or session) whose plaintext length is recorded nowhere, refusing
// content of more than limit bytes with an error wrapping ErrTooLarge.
// Decoding allocates at most a copy of the decrypted envelope and a buffer
// of limit + 128 KiB: a zstd payload is bounded from its frame headers
// (zstdBound) before anything is allocated, so a small frame that claims
// or expands to gigabytes costs nothing, and the decoder never grows the
// buffer. The caller names the object in its error.
func (r *Repository) decodeObject(kind string, sealed []byte, limit int) ([]byte, error) {
	return r.decodeSealed(kind, nil, sealed, -1, limit, id.ID{}, false)
}

// errUnknownCompression is wrapped when sealed content names a compression
// this drpipe does not know: not damage, a newer drpipe may have written it.
var errUnknownCompression = errors.New("blob uses unknown compression id")

// decodeSealed is decodeBlobWith with an explicit plaintext limit for
// content of unknown length (rawLen < 0).
func (r *Repository) decodeSealed(kind string, dst, sealed []byte, rawLen, limit int, want id.ID, inPlace bool) ([]byte, error) {
	codecs()
	var plain []byte
	var err error
	if inPlace && len(sealed) >= sealOverhead {
		plain, err = r.key.openAs(kind, sealed[nonceSize:nonceSize], sealed)
	} else {
		plain, err = r.key.openAs(kind, nil, sealed)
	}
	if err != nil {
		return nil, err
	}
	if len(plain) == 0 {
		return nil, fmt.Errorf("%w: empty blob envelope", ErrDecrypt)
	}
	var out []byte
	switch plain[0] {
	case compNone:
		if rawLen < 0 && len(plain)-1 > limit {
			return nil, fmt.Errorf("%w: %d bytes of content, more than the %d-byte limit", ErrTooLarge, len(plain)-1, limit)
		}
		out = append(dst, plain[1:]...)
	case compZstd:
		if rawLen > limit {
			return nil, fmt.Errorf("%w: blob claims %d bytes, more than the %d limit", ErrTooLarge, rawLen, limit)
		}
		if rawLen >= 0 {
			// At least rawLen bytes of room (plus one, so that a longer
			// frame is caught by the length check below, not mistaken
			// for a fit). Spare capacity the caller already has is used
			// as it is: decoding into it allocates nothing, and capping
			// it would shrink the caller's reusable buffer.
			if cap(dst)-len(dst) <= rawLen {
				nd := make([]byte, len(dst), len(dst)+rawLen+1)
				copy(nd, dst)
				dst = nd
			}
		} else {
			// Unknown length: room for what the frame headers allow and
			// no more (the decoder stops at the capacity; the slack only
			// lets it detect a lying frame without reallocating).
			bound, slack, err := zstdBound(plain[1:], limit)
			if err != nil {
				return nil, fmt.Errorf("zstd content: %w", err)
			}
			if room := bound + slack; cap(dst)-len(dst) < room {
				nd := make([]byte, len(dst), len(dst)+room)
				copy(nd, dst)
				dst = nd
			} else {
				dst = dst[: len(dst) : len(dst)+room]
			}
		}
		done := false
		if rawLen >= 0 {
			out, done = decompressZstd(dst, plain[1:], rawLen+1)
		}
		if !done {
			out, err = sizedDecoder.DecodeAll(plain[1:], dst)
		}
		if err != nil && rawLen < 0 {
			return nil, fmt.Errorf("decompress: %w", err)
		}
		if err != nil {
			return nil, fmt.Errorf("decompress blob: %w", err)
		}
	default:
		return nil, fmt.Errorf("%w %d (written by a newer drpipe?)", errUnknownCompression, plain[0])
	}
	if rawLen >= 0 && len(out)-len(dst) != rawLen {
		return nil, fmt.Errorf("blob decoded to %d bytes, index says %d", len(out)-len(dst), rawLen)
	}
	if !want.IsNull() && r.BlobID(out[len(dst):]) != want {
		return nil, fmt.Errorf("blob content does not match its id %s", want.Short())
	}
	return out, nil
}
