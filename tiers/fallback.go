package tiers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Fallback reads a repository from several tiers in order of preference
// (hot disk, DR site, cloud, tape staging): each object is loaded from the
// first tier that has it intact, so a restore survives the loss of any
// tier that is not the last holder of an object. It records which tier
// served what. Writes go to the first tier only.
//
// A tier answering ErrNotReady (archive storage class being restored) is
// skipped; if no tier can serve an object and one of them was not ready,
// the error wraps ErrNotReady so the caller can wait instead of failing.
type Fallback struct {
	// Verify makes Load check whole objects against their names (see
	// ObjectVerifier) before handing them on, so a corrupt copy falls
	// through to the next tier. Only for repository objects; leave it off
	// for arbitrary content.
	Verify bool

	tiers []Backend
	names []string

	mu     sync.Mutex
	served map[string]*TierUse
}

// TierUse counts what one tier served.
type TierUse struct {
	Tier    string `json:"tier"`
	Objects int64  `json:"objects"`
	Bytes   int64  `json:"bytes"`
	Misses  int64  `json:"misses"`
}

// NewFallback returns a Fallback over tiers in order of preference. names
// label them in reports (default: their Location).
func NewFallback(tiers []Backend, names []string) (*Fallback, error) {
	if len(tiers) == 0 {
		return nil, errors.New("fallback needs at least one tier")
	}
	f := &Fallback{tiers: tiers, served: map[string]*TierUse{}}
	for i, t := range tiers {
		n := t.Location()
		if i < len(names) && names[i] != "" {
			n = names[i]
		}
		f.names = append(f.names, n)
		f.served[n] = &TierUse{Tier: n}
	}
	return f, nil
}

// Location lists the tiers.
func (f *Fallback) Location() string { return "fallback(" + strings.Join(f.names, " → ") + ")" }

// Usage returns what each tier served so far, in tier order.
func (f *Fallback) Usage() []TierUse {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]TierUse, 0, len(f.names))
	for _, n := range f.names {
		out = append(out, *f.served[n])
	}
	return out
}

func (f *Fallback) count(i int, n int64, miss bool) {
	f.mu.Lock()
	u := f.served[f.names[i]]
	if miss {
		u.Misses++
	} else {
		u.Objects++
		u.Bytes += n
	}
	f.mu.Unlock()
}

// Put writes to the first tier.
func (f *Fallback) Put(ctx context.Context, h Handle, rd io.Reader, size int64) error {
	return f.tiers[0].Put(ctx, h, rd, size)
}

// Remove removes from the first tier.
func (f *Fallback) Remove(ctx context.Context, h Handle) error { return f.tiers[0].Remove(ctx, h) }

// Load tries each tier in order. A tier's failure (missing object, short
// read, I/O error, or fn rejecting the bytes) moves on to the next.
func (f *Fallback) Load(ctx context.Context, h Handle, offset, length int64, fn func(rd io.Reader) error) error {
	if err := h.Validate(); err != nil {
		return err
	}
	var errs []error
	notReady := false
	// Whole objects are verified against their name before fn sees them,
	// so a corrupt copy in one tier falls through to the next. (Ranged
	// reads are authenticated by the caller, which then asks for whole
	// shards to rebuild.)
	verify := f.Verify && offset == 0 && length == 0 && h.Type != TypeConfig && h.Type != TypeSession
	for i, t := range f.tiers {
		cr := &countingReader{}
		err := t.Load(ctx, h, offset, length, func(rd io.Reader) error {
			if !verify {
				cr.r = rd
				return fn(cr)
			}
			v, err := NewObjectVerifier(h)
			if err != nil {
				return err
			}
			b, err := io.ReadAll(io.TeeReader(rd, v))
			if err != nil {
				return err
			}
			if err := v.Check(int64(len(b))); err != nil {
				return err
			}
			cr.r = bytes.NewReader(b)
			return fn(cr)
		})
		if err == nil {
			f.count(i, cr.n, false)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.count(i, 0, true)
		if errors.Is(err, ErrNotReady) {
			notReady = true
		}
		errs = append(errs, fmt.Errorf("%s: %w", f.names[i], err))
	}
	joined := errors.Join(errs...)
	switch {
	case notReady:
		return fmt.Errorf("%s: %w: %w", h, ErrNotReady, joined)
	case allNotFound(errs):
		return fmt.Errorf("%s: %w in any tier: %w", h, ErrNotFound, joined)
	}
	return fmt.Errorf("%s: no tier could serve it: %w", h, joined)
}

func allNotFound(errs []error) bool {
	for _, e := range errs {
		if !errors.Is(e, ErrNotFound) {
			return false
		}
	}
	return len(errs) > 0
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Stat returns the first tier's answer that is not ErrNotFound: the
// object's information from the first tier that has it, else the first
// error other than ErrNotFound (a tier that failed to answer may hold
// the object, so the object is not called missing), else ErrNotFound.
func (f *Fallback) Stat(ctx context.Context, h Handle) (ObjectInfo, error) {
	var notFound, failed error
	for _, t := range f.tiers {
		oi, err := t.Stat(ctx, h)
		if err == nil {
			return oi, nil
		}
		if ctx.Err() != nil {
			return ObjectInfo{}, ctx.Err()
		}
		switch {
		case errors.Is(err, ErrNotFound):
			notFound = err
		case failed == nil:
			failed = err
		}
	}
	if failed != nil {
		return ObjectInfo{}, failed
	}
	return ObjectInfo{}, notFound
}

// List returns the union over all tiers (each name once). Unreachable
// tiers are skipped as long as one tier answers.
func (f *Fallback) List(ctx context.Context, typ Type, fn func(ObjectInfo) error) error {
	if !typ.Valid() {
		return fmt.Errorf("%w: unknown object type %q", ErrInvalidHandle, typ)
	}
	seen := map[string]bool{}
	var errs []error
	ok := 0
	for i, t := range f.tiers {
		var cbErr error
		err := t.List(ctx, typ, func(oi ObjectInfo) error {
			if seen[oi.Handle.Name] {
				return nil
			}
			seen[oi.Handle.Name] = true
			if e := fn(oi); e != nil {
				cbErr = e
				return e
			}
			return nil
		})
		if cbErr != nil {
			return cbErr
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", f.names[i], err))
			continue
		}
		ok++
	}
	if ok == 0 {
		return fmt.Errorf("list %s: no tier answered: %w", typ, errors.Join(errs...))
	}
	return nil
}

// Close closes every tier.
func (f *Fallback) Close() error {
	var errs []error
	for _, t := range f.tiers {
		errs = append(errs, t.Close())
	}
	return errors.Join(errs...)
}
