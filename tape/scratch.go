package tape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/drpipe/drpipe/tiers"
)

// Scratch is a tiers.Backend over a directory for the temporary
// repository a tape restore reads objects into. Puts are atomic (temp
// file and rename) but not fsynced: the directory is disposable, and a
// crash only means reading the tapes again. It passes the tiers
// conformance suite. Safe for concurrent use.
type Scratch struct {
	dir string
}

// NewScratch creates dir (if needed) and returns a backend over it.
func NewScratch(dir string) (*Scratch, error) {
	for _, t := range tiers.AllTypes {
		if err := os.MkdirAll(filepath.Join(dir, string(t)), 0o700); err != nil {
			return nil, fmt.Errorf("scratch repository %s: %w", dir, err)
		}
	}
	return &Scratch{dir: dir}, nil
}

// Location implements tiers.Backend.
func (s *Scratch) Location() string { return s.dir }

func (s *Scratch) path(ctx context.Context, h tiers.Handle) (string, error) {
	if err := h.Validate(); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, string(h.Type), h.Name), nil
}

// Put implements tiers.Backend.
func (s *Scratch) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	p, err := s.path(ctx, h)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+h.Name+"-*")
	if err != nil {
		return fmt.Errorf("put %s to %s: %w", h, s.dir, err)
	}
	tmp := f.Name()
	buf := make([]byte, min(size, 1<<20)+1)
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, io.LimitReader(ctxReader{ctx, rd}, size), buf)
	if err == nil && n != size {
		err = fmt.Errorf("reader yielded %d bytes, want %d", n, size)
	}
	if err == nil {
		var one [1]byte
		m, rerr := rd.Read(one[:])
		switch {
		case m > 0:
			err = fmt.Errorf("reader yields more than %d bytes", size)
		case rerr != nil && rerr != io.EOF:
			err = rerr
		}
	}
	if err == nil {
		err = ctx.Err()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("put %s to %s: %w", h, s.dir, err)
	}
	return nil
}

// Load implements tiers.Backend.
func (s *Scratch) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(io.Reader) error) error {
	p, err := s.path(ctx, h)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("load %s from %s: %w", h, s.dir, tiers.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("load %s from %s: %w", h, s.dir, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if offset < 0 || length < 0 || offset > fi.Size() || (length > 0 && offset+length > fi.Size()) {
		return fmt.Errorf("load %s from %s: %d bytes at %d of %d: %w", h, s.dir, length, offset, fi.Size(), tiers.ErrShortRead)
	}
	if length == 0 {
		length = fi.Size() - offset
	}
	return fn(io.NewSectionReader(f, offset, length))
}

// Stat implements tiers.Backend.
func (s *Scratch) Stat(ctx context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	p, err := s.path(ctx, h)
	if err != nil {
		return tiers.ObjectInfo{}, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return tiers.ObjectInfo{}, fmt.Errorf("stat %s in %s: %w", h, s.dir, tiers.ErrNotFound)
	}
	if err != nil {
		return tiers.ObjectInfo{}, err
	}
	return tiers.ObjectInfo{Handle: h, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List implements tiers.Backend.
func (s *Scratch) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	if !t.Valid() {
		return fmt.Errorf("%w: unknown object type %q", tiers.ErrInvalidHandle, t)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ents, err := os.ReadDir(filepath.Join(s.dir, string(t)))
	if err != nil {
		return fmt.Errorf("list %s in %s: %w", t, s.dir, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if err := fn(tiers.ObjectInfo{Handle: tiers.Handle{Type: t, Name: e.Name()}, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// Remove implements tiers.Backend.
func (s *Scratch) Remove(ctx context.Context, h tiers.Handle) error {
	p, err := s.path(ctx, h)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s from %s: %w", h, s.dir, err)
	}
	return nil
}

// Close implements tiers.Backend.
func (s *Scratch) Close() error { return nil }

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
