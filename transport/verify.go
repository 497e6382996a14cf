package transport

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// MaxConfigSize bounds the config object (it is a small JSON document).
const MaxConfigSize = 1 << 20

// VerifyError reports object bytes that do not match the object's name.
type VerifyError struct {
	Handle tiers.Handle
	Reason string
}

// Error implements error.
func (e *VerifyError) Error() string {
	return fmt.Sprintf("object %s does not match its name: %s", e.Handle, e.Reason)
}

// CheckName reports whether h is acceptable for replication: a valid
// handle of a replicated type whose name is canonical for that type
// (config: "config"; data: "<pack id>-<index>"; keys, index, snapshots:
// 64 lower-case hex digits).
func CheckName(h tiers.Handle) error {
	if _, ok := typeCode(h.Type); !ok {
		return fmt.Errorf("%w: object type %q is not replicated", tiers.ErrInvalidHandle, h.Type)
	}
	if err := h.Validate(); err != nil {
		return err
	}
	switch h.Type {
	case tiers.TypeConfig:
		return nil // Validate insists on "config"
	case tiers.TypeData:
		if _, _, err := erasure.ParseShardName(h.Name); err != nil {
			return fmt.Errorf("%w: %v", tiers.ErrInvalidHandle, err)
		}
	default:
		x, err := id.Parse(h.Name)
		if err != nil || x.String() != h.Name {
			return fmt.Errorf("%w: %s name %q is not 64 lower-case hex digits", tiers.ErrInvalidHandle, h.Type, h.Name)
		}
	}
	return nil
}

// newVerifier returns a verifier for an object of the given handle and
// declared size; the handle must have passed CheckName. extra, if set,
// runs on a parsed config and its bytes.
func newVerifier(h tiers.Handle, size int64, extra func(c *repo.Config, raw []byte) error) (verifier, error) {
	switch h.Type {
	case tiers.TypeConfig:
		if size > MaxConfigSize {
			return nil, &VerifyError{h, fmt.Sprintf("config of %d bytes exceeds %d", size, MaxConfigSize)}
		}
		return &configVerifier{h: h, extra: extra}, nil
	case tiers.TypeData:
		pack, idx, err := erasure.ParseShardName(h.Name)
		if err != nil {
			return nil, &VerifyError{h, err.Error()}
		}
		return &shardVerifier{h: h, pack: pack, index: idx, size: size}, nil
	default:
		want, err := id.Parse(h.Name)
		if err != nil {
			return nil, &VerifyError{h, err.Error()}
		}
		return &hashVerifier{h: h, want: want, sum: sha256.New()}, nil
	}
}

// verifier sees an object's bytes in order; finish reports whether they
// match the name. Write fails early when the bytes already cannot match.
type verifier interface {
	io.Writer
	finish() error
}

type hashVerifier struct {
	h    tiers.Handle
	want id.ID
	sum  hash.Hash
}

func (v *hashVerifier) Write(p []byte) (int, error) { return v.sum.Write(p) }

func (v *hashVerifier) finish() error {
	var got id.ID
	v.sum.Sum(got[:0])
	if got != v.want {
		return &VerifyError{v.h, fmt.Sprintf("content hashes to %s", got.Short())}
	}
	return nil
}

// shardVerifier streams the check of erasure.VerifyShard: the header is
// parsed by package erasure, the shard table must hash to the pack id of
// the name, the header's index must be the name's, the object must be
// exactly header + shard size long and the payload must hash to the
// table's entry.
type shardVerifier struct {
	h     tiers.Handle
	pack  id.ID
	index int
	size  int64

	head   []byte // header bytes until parsed
	hdr    *erasure.Header
	hsize  int
	seen   int64
	sum    hash.Hash
	failed error
}

func (v *shardVerifier) fail(format string, args ...any) error {
	v.failed = &VerifyError{v.h, fmt.Sprintf(format, args...)}
	return v.failed
}

func (v *shardVerifier) Write(p []byte) (int, error) {
	if v.failed != nil {
		return 0, v.failed
	}
	n := len(p)
	v.seen += int64(n)
	if v.hdr == nil {
		need := erasure.FixedHeaderSize
		if len(v.head) >= erasure.FixedHeaderSize {
			need = erasure.MaxHeaderSize
		}
		take := min(len(p), need-len(v.head))
		v.head = append(v.head, p[:take]...)
		p = p[take:]
		h, err := erasure.ParseHeader(v.head)
		switch {
		case errors.Is(err, erasure.ErrShortHeader):
			if len(p) > 0 {
				// More bytes are available: keep filling.
				v.seen -= int64(len(p))
				_, err := v.Write(p)
				return n, err
			}
			return n, nil
		case err != nil:
			return n, v.fail("%v", err)
		}
		v.hdr = &h
		v.hsize = h.Size()
		if h.Index != v.index {
			return n, v.fail("header names shard %d, the name says %d", h.Index, v.index)
		}
		t := v.hsize - 4
		if got := id.Hash(v.head[:t]); got != v.pack {
			return n, v.fail("shard table hashes to %s, not to the pack id of the name", got.Short())
		}
		if want := h.ObjectSize(); want != v.size {
			return n, v.fail("object is %d bytes, its header says %d", v.size, want)
		}
		v.sum = h.NewPayloadHash()
		// Header bytes past the header size are payload.
		v.sum.Write(v.head[v.hsize:])
		v.head = v.head[:v.hsize]
	}
	v.sum.Write(p)
	return n, nil
}

func (v *shardVerifier) finish() error {
	if v.failed != nil {
		return v.failed
	}
	if v.hdr == nil {
		return v.fail("object of %d bytes ends inside the shard header", v.seen)
	}
	if v.seen != v.size {
		return v.fail("got %d bytes, want %d", v.seen, v.size)
	}
	var got id.ID
	v.sum.Sum(got[:0])
	if got != v.hdr.Hashes[v.index] {
		return v.fail("payload hashes to %s, the shard table says %s", got.Short(), v.hdr.Hashes[v.index].Short())
	}
	return nil
}

type configVerifier struct {
	h     tiers.Handle
	buf   bytes.Buffer
	extra func(c *repo.Config, raw []byte) error
}

func (v *configVerifier) Write(p []byte) (int, error) {
	if v.buf.Len()+len(p) > MaxConfigSize {
		return 0, &VerifyError{v.h, fmt.Sprintf("config exceeds %d bytes", MaxConfigSize)}
	}
	return v.buf.Write(p)
}

func (v *configVerifier) finish() error {
	c, err := repo.ParseConfig(v.buf.Bytes())
	if err != nil {
		return &VerifyError{v.h, err.Error()}
	}
	if v.extra != nil {
		return v.extra(c, v.buf.Bytes())
	}
	return nil
}

// checkedReader reads exactly size bytes of an object body from r, feeds
// them to v, and at the end returns v's verdict instead of io.EOF, so a
// tiers.Backend Put that consumes it commits only verified bytes (Put
// reads one byte past size to see the end).
type checkedReader struct {
	r    io.Reader
	v    verifier
	left int64
	size int64
	done bool
	err  error
}

func newCheckedReader(r io.Reader, v verifier, size int64) *checkedReader {
	return &checkedReader{r: r, v: v, left: size, size: size}
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.left == 0 {
		if !c.done {
			c.done = true
			if err := c.v.finish(); err != nil {
				c.err = err
				return 0, err
			}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if n > 0 {
		if _, verr := c.v.Write(p[:n]); verr != nil {
			c.err = verr
			return n, verr
		}
	}
	if err == io.EOF && c.left > 0 {
		c.err = fmt.Errorf("object body ended after %d of %d bytes: %w", c.size-c.left, c.size, io.ErrUnexpectedEOF)
		return n, c.err
	}
	if err != nil && err != io.EOF {
		c.err = err
		return n, err
	}
	return n, nil
}
