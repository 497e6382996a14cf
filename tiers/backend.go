// Package tiers owns the storage seam of drpipe: the Backend interface that
// every tier implements (local directory, S3 bucket, DR site), the
// conformance suite they all pass (package tiers/tierstest), the wrappers
// stacked around a backend (retries, fault injection for tests) and, later,
// the tiering policy.
//
// A tier stores repository objects byte for byte. Objects are addressed by a
// Handle: a Type (the object class, which maps to a top-level folder or key
// prefix) and a Name. Names are chosen by the repository layer; apart from
// "config" they are content hashes, so storing the same name twice stores
// the same bytes and Put is idempotent.
package tiers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unsafe"
)

// Type is the class of a repository object. The set is fixed by the
// repository format; a backend maps each type to a folder or key prefix.
type Type string

// The object classes of a repository.
const (
	TypeConfig    Type = "config"     // the single repository config object, Name "config"
	TypeKey       Type = "keys"       // password-wrapped master keys (key slots)
	TypeData      Type = "data"       // erasure-coded pack shards
	TypeIndex     Type = "index"      // encrypted index files
	TypeSnapshot  Type = "snapshots"  // encrypted snapshot records
	TypeTombstone Type = "tombstones" // prune phase-one records (two-phase removal)
	TypeSession   Type = "sessions"   // running writers' heartbeats; never copied to other tiers
)

// AllTypes lists every object class, data before the metadata that
// references it.
var AllTypes = []Type{TypeConfig, TypeKey, TypeData, TypeIndex, TypeSnapshot, TypeTombstone, TypeSession}

// CopyTypes lists the object classes that make up a repository's content
// and are copied between tiers, data before the metadata that references
// it. Sessions are local to a tier and are not copied.
var CopyTypes = []Type{TypeConfig, TypeKey, TypeData, TypeIndex, TypeSnapshot, TypeTombstone}

// Valid reports whether t is one of the known object classes.
func (t Type) Valid() bool {
	for _, k := range AllTypes {
		if k == t {
			return true
		}
	}
	return false
}

// Handle names one object in a backend.
type Handle struct {
	Type Type
	Name string
}

// String renders the handle as "type/name" for messages.
func (h Handle) String() string { return string(h.Type) + "/" + h.Name }

// Validate rejects handles that could escape a backend's namespace: unknown
// types and names that are empty, contain path separators, "..", NUL or
// control characters, or are longer than 128 bytes.
func (h Handle) Validate() error {
	if !h.Type.Valid() {
		return fmt.Errorf("%w: unknown object type %q", ErrInvalidHandle, h.Type)
	}
	if err := ValidName(h.Name); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidHandle, h.Type, err)
	}
	if h.Type == TypeConfig && h.Name != "config" {
		return fmt.Errorf("%w: config object must be named \"config\", got %q", ErrInvalidHandle, h.Name)
	}
	return nil
}

// ValidName reports whether name is acceptable as an object name: 1..128
// bytes of [0-9A-Za-z._-], not starting with '.'.
func ValidName(name string) error {
	if name == "" {
		return errors.New("empty object name")
	}
	if len(name) > 128 {
		return fmt.Errorf("object name of %d bytes is longer than 128", len(name))
	}
	if name[0] == '.' {
		return fmt.Errorf("object name %q starts with '.'", name)
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("object name %q contains \"..\"", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("object name %q contains byte 0x%02x at %d", name, c, i)
		}
	}
	return nil
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Handle  Handle
	Size    int64
	ModTime time.Time
	// StorageClass is the backend's storage class for the object ("" when
	// the backend has none, e.g. a local directory).
	StorageClass string
}

// ArchiveClass reports whether objects of storage class c (as in
// ObjectInfo.StorageClass) must be restored before they can be read: S3
// GLACIER and DEEP_ARCHIVE (see Warmer).
func ArchiveClass(c string) bool { return c == "GLACIER" || c == "DEEP_ARCHIVE" }

// Sentinel errors. Backends wrap them with %w so callers use errors.Is.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrInvalidHandle: the handle failed Validate.
	ErrInvalidHandle = errors.New("invalid object handle")
	// ErrShortRead: the object is shorter than the requested range.
	ErrShortRead = errors.New("object shorter than requested range")
	// ErrLocked: the object is under retention (object lock) and cannot be
	// removed or overwritten before the retention date.
	ErrLocked = errors.New("object is locked by retention")
	// ErrNotReady: the object is in an archive storage class; a restore has
	// been requested and the object is not readable yet (see Warmer).
	ErrNotReady = errors.New("object is archived and not yet restored")
)

// Backend is a tier's object store. Implementations are safe for concurrent
// use by multiple goroutines.
//
// Contract (tiers/tierstest checks every point):
//   - Put stores exactly size bytes read from rd under h, atomically: a
//     concurrent or later Load/Stat/List sees either no object or the whole
//     object, never a partial one. When Put returns nil the object is durable
//     (fsynced or acknowledged by the remote). Putting an existing name
//     replaces it (names are content hashes, so the bytes are the same); a
//     reader that yields fewer or more than size bytes makes Put fail and
//     leaves no object behind.
//   - Load calls fn with a reader over length bytes of h starting at offset
//     (length 0 means to the end). fn may be called more than once if the
//     backend retries; it must be idempotent and consume the reader fully
//     before returning. If the object is shorter than offset+length, Load
//     returns an error wrapping ErrShortRead. A missing object wraps
//     ErrNotFound.
//   - Stat returns the object's size; ErrNotFound if absent.
//   - List calls fn for every object of type t, in no particular order.
//     Objects being written by a concurrent Put are either listed whole or
//     not at all. Returning an error from fn stops the listing and List
//     returns that error.
//   - Remove deletes h. Removing a missing object returns nil (idempotent).
//     An object under retention returns an error wrapping ErrLocked.
//   - Every method validates its handle and returns ErrInvalidHandle for a
//     bad one before touching storage.
type Backend interface {
	// Location returns a human-readable address such as a path or
	// "s3://bucket/prefix", never containing secrets.
	Location() string
	Put(ctx context.Context, h Handle, rd io.Reader, size int64) error
	Load(ctx context.Context, h Handle, offset, length int64, fn func(rd io.Reader) error) error
	Stat(ctx context.Context, h Handle) (ObjectInfo, error)
	List(ctx context.Context, t Type, fn func(ObjectInfo) error) error
	Remove(ctx context.Context, h Handle) error
	// Close releases resources. The backend must not be used afterwards.
	Close() error
}

// Warmer is implemented by backends with archive storage classes (S3
// GLACIER, DEEP_ARCHIVE). Warmup requests that the objects become readable
// and reports when they are expected to be; Load on a cold object returns
// ErrNotReady until then.
type Warmer interface {
	Warmup(ctx context.Context, hs []Handle) (ready time.Time, pending []Handle, err error)
}

// Retainer is implemented by backends that can put objects under retention
// (S3 Object Lock). RetainUntil reports the retention date of h (zero if
// none).
type Retainer interface {
	RetainUntil(ctx context.Context, h Handle) (time.Time, error)
}

// ReadAlign is the memory alignment that lets ranged reads from a local
// directory skip a copy: a range read into memory whose address is
// congruent to the object offset modulo ReadAlign goes from the device
// straight into it (O_DIRECT on Linux), all but its first and last partial
// blocks. Placed lays buffers out that way; other backends ignore it.
const ReadAlign = 4096

// Placed returns n bytes of buf's storage, which must have a capacity of
// at least n + ReadAlign - 1, placed so that byte at of the result lies at
// an address congruent to objOffset modulo ReadAlign: a ranged read of an
// object from objOffset on into result[at:] then skips a copy where the
// backend can (see ReadAlign). The result aliases buf; its capacity ends
// with it.
func Placed(buf []byte, n, at, objOffset int64) []byte {
	buf = buf[:cap(buf)]
	if len(buf) == 0 {
		return buf[:n] // n == 0; a larger n panics as slicing past cap does
	}
	addr := int64(uintptr(unsafe.Pointer(&buf[0])) % ReadAlign)
	shift := ((objOffset-at-addr)%ReadAlign + ReadAlign) % ReadAlign
	return buf[shift : shift+n : shift+n]
}

// LoadAll reads length bytes of h at offset (0 = to the end) into memory.
func LoadAll(ctx context.Context, be Backend, h Handle, offset, length int64) ([]byte, error) {
	return LoadInto(ctx, be, h, offset, length, nil)
}

// LoadInto is LoadAll reading into buf's storage when length > 0 and
// cap(buf) >= length (so callers can reuse buffers); it returns the bytes
// read, which alias buf in that case.
func LoadInto(ctx context.Context, be Backend, h Handle, offset, length int64, buf []byte) ([]byte, error) {
	var out []byte
	err := be.Load(ctx, h, offset, length, func(rd io.Reader) error {
		if length > 0 {
			b := buf
			if int64(cap(b)) < length {
				b = make([]byte, length)
			}
			b = b[:length]
			n, err := io.ReadFull(rd, b)
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				return fmt.Errorf("%w: got %d bytes, want %d", ErrShortRead, n, length)
			}
			if err != nil {
				return err
			}
			// The contract says exactly length bytes; more is a backend bug.
			var one [1]byte
			if m, _ := rd.Read(one[:]); m > 0 {
				return fmt.Errorf("%w: backend returned more than the %d bytes asked for", ErrShortRead, length)
			}
			out = b
			return nil
		}
		b, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		out = b
		return nil
	})
	return out, err
}

// PutBytes stores b under h.
func PutBytes(ctx context.Context, be Backend, h Handle, b []byte) error {
	return be.Put(ctx, h, bytes.NewReader(b), int64(len(b)))
}
