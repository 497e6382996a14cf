package tiers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrReadOnly is returned by backends that cannot be written through.
var ErrReadOnly = errors.New("backend is read-only")

// Subset is a read-only view of a backend that shows only the allowed
// objects, plus extra objects held in memory. Tiering uses it to copy a
// chosen set of snapshots to a tier with the ordinary copy and replicate
// paths: the view holds exactly the shards, snapshots and a synthesized
// index object those snapshots need.
type Subset struct {
	src   Backend
	allow map[Handle]bool
	extra map[Handle][]byte
	now   time.Time
}

// NewSubset returns a view of src restricted to allow, with extra objects
// added (extra wins over src for the same handle). Config and key objects
// of src are always visible.
func NewSubset(src Backend, allow map[Handle]bool, extra map[Handle][]byte) *Subset {
	return &Subset{src: src, allow: allow, extra: extra, now: time.Now()}
}

func (s *Subset) visible(h Handle) bool {
	return h.Type == TypeConfig || h.Type == TypeKey || s.allow[h]
}

// Location describes the view.
func (s *Subset) Location() string { return "subset of " + s.src.Location() }

// Put is refused (after the handle is checked, as for every backend).
func (s *Subset) Put(_ context.Context, h Handle, _ io.Reader, _ int64) error {
	if err := h.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("put %s to %s: %w: a selection is copied from, never written to", h, s.Location(), ErrReadOnly)
}

// Remove is refused (after the handle is checked).
func (s *Subset) Remove(_ context.Context, h Handle) error {
	if err := h.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("remove %s from %s: %w: a selection is copied from, never written to", h, s.Location(), ErrReadOnly)
}

// Close does not close the underlying backend.
func (s *Subset) Close() error { return nil }

// Load reads an extra object or a visible object of the source.
func (s *Subset) Load(ctx context.Context, h Handle, offset, length int64, fn func(io.Reader) error) error {
	if err := h.Validate(); err != nil {
		return err
	}
	if b, ok := s.extra[h]; ok {
		if offset < 0 || length < 0 {
			return fmt.Errorf("load %s: negative range", h)
		}
		if offset > int64(len(b)) || length > int64(len(b))-offset {
			return fmt.Errorf("load %s: %w", h, ErrShortRead)
		}
		end := int64(len(b))
		if length > 0 {
			end = offset + length
		}
		return fn(bytes.NewReader(b[offset:end]))
	}
	if !s.visible(h) {
		return fmt.Errorf("load %s: %w (not in the selection)", h, ErrNotFound)
	}
	return s.src.Load(ctx, h, offset, length, fn)
}

// Stat reports an extra or visible object.
func (s *Subset) Stat(ctx context.Context, h Handle) (ObjectInfo, error) {
	if err := h.Validate(); err != nil {
		return ObjectInfo{}, err
	}
	if b, ok := s.extra[h]; ok {
		return ObjectInfo{Handle: h, Size: int64(len(b)), ModTime: s.now}, nil
	}
	if !s.visible(h) {
		return ObjectInfo{}, fmt.Errorf("stat %s: %w", h, ErrNotFound)
	}
	return s.src.Stat(ctx, h)
}

// List lists the visible objects of type t and the extras.
func (s *Subset) List(ctx context.Context, t Type, fn func(ObjectInfo) error) error {
	if !t.Valid() {
		return fmt.Errorf("%w: unknown object type %q", ErrInvalidHandle, t)
	}
	err := s.src.List(ctx, t, func(oi ObjectInfo) error {
		if _, dup := s.extra[oi.Handle]; dup || !s.visible(oi.Handle) {
			return nil
		}
		return fn(oi)
	})
	if err != nil {
		return err
	}
	for h, b := range s.extra {
		if h.Type == t {
			if err := fn(ObjectInfo{Handle: h, Size: int64(len(b)), ModTime: s.now}); err != nil {
				return err
			}
		}
	}
	return nil
}
