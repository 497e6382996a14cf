package tiers

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
)

// ErrVerify is wrapped by the errors of ObjectVerifier.Check: the bytes of
// an object do not match its name.
var ErrVerify = errors.New("object does not match its name")

// ObjectVerifier checks an object's bytes against its name as they stream
// through Write, without the repository key and without holding the
// object:
//
//   - data (pack shards, named "<pack id>-<i>"): the shard table hashes to
//     the pack ID, the header names shard i, the object has exactly the
//     header's size and the payload hashes to the table's entry i;
//   - keys, index, snapshots: SHA-256 of the bytes is the name;
//   - config.carry no hash in their name: only the byte
//     count is checked (against the expected size given to Check).
//
// Write never fails; Check reports the verdict. Reset starts over (for a
// retried transfer).
type ObjectVerifier struct {
	h     Handle
	n     int64
	sum   hash.Hash // whole object (keys, index, snapshots) or shard payload
	want  id.ID
	shard bool
	// shard state
	pack    id.ID
	index   int
	head    []byte // buffered header prefix, until parsed
	hdr     *erasure.Header
	bad     error
	hashAll bool
}

// NewObjectVerifier returns a verifier for h; it fails if h's name cannot
// be the name of such an object (e.g. a data object not named like a
// shard).
func NewObjectVerifier(h Handle) (*ObjectVerifier, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	v := &ObjectVerifier{h: h}
	switch h.Type {
	case TypeData:
		p, i, err := erasure.ParseShardName(h.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", h, ErrVerify, err)
		}
		v.shard, v.pack, v.index = true, p, i
	case TypeKey, TypeIndex, TypeSnapshot, TypeTombstone:
		want, err := id.Parse(h.Name)
		if err != nil || want.String() != h.Name {
			return nil, fmt.Errorf("%s: %w: name is not a lower-case SHA-256 hex digest", h, ErrVerify)
		}
		v.want, v.hashAll = want, true
	}
	v.Reset()
	return v, nil
}

// Reset forgets everything written.
func (v *ObjectVerifier) Reset() {
	v.n, v.head, v.hdr, v.bad = 0, v.head[:0], nil, nil
	v.sum = nil
	if v.hashAll {
		v.sum = sha256.New()
	}
}

// Write feeds the next bytes of the object.
func (v *ObjectVerifier) Write(p []byte) (int, error) {
	n := len(p)
	v.n += int64(n)
	switch {
	case v.hashAll:
		v.sum.Write(p)
	case v.shard && v.bad == nil:
		if v.hdr == nil {
			need := erasure.MaxHeaderSize - len(v.head)
			take := min(need, len(p))
			v.head = append(v.head, p[:take]...)
			p = p[take:]
			if len(v.head) < erasure.MaxHeaderSize {
				return n, nil
			}
			v.parseHead()
			if v.bad != nil {
				return n, nil
			}
			v.sum.Write(v.head[v.hdr.Size():])
		}
		v.sum.Write(p)
	}
	return n, nil
}

// parseHead parses the buffered header prefix (all of the object if it is
// shorter than MaxHeaderSize) and checks what the header alone decides.
func (v *ObjectVerifier) parseHead() {
	hd, err := erasure.ParseHeader(v.head)
	if err != nil {
		v.bad = err
		return
	}
	table := v.head[:hd.Size()-4]
	if id.Hash(table) != v.pack {
		v.bad = fmt.Errorf("shard table does not hash to the pack ID")
		return
	}
	if hd.Index != v.index {
		v.bad = fmt.Errorf("header holds shard index %d", hd.Index)
		return
	}
	v.hdr = &hd
	v.sum = hd.NewPayloadHash() // the header's version decides the hash
}

// Written returns the number of bytes written since the last Reset.
func (v *ObjectVerifier) Written() int64 { return v.n }

// Check reports whether the bytes written are the object h names. size
// is the expected length (-1 if unknown); it is the only check for
// config.
func (v *ObjectVerifier) Check(size int64) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w: %s", v.h, ErrVerify, fmt.Sprintf(format, args...))
	}
	if size >= 0 && v.n != size {
		return fail("%d bytes, listed as %d", v.n, size)
	}
	switch {
	case v.hashAll:
		if got := id.ID(v.sum.Sum(nil)); got != v.want {
			return fail("content hashes to %s", got.Short())
		}
	case v.shard:
		if v.hdr == nil && v.bad == nil {
			v.parseHead() // object shorter than MaxHeaderSize
			if v.bad == nil {
				v.sum.Write(v.head[min(v.hdr.Size(), len(v.head)):])
			}
		}
		if v.bad != nil {
			return fail("%v", v.bad)
		}
		if want := v.hdr.ObjectSize(); v.n != want {
			return fail("%d bytes, the header says %d", v.n, want)
		}
		if got := id.ID(v.sum.Sum(nil)); got != v.hdr.Hashes[v.index] {
			return fail("payload hashes to %s, the shard table says %s", got.Short(), v.hdr.Hashes[v.index].Short())
		}
	}
	return nil
}
