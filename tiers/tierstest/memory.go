package tierstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// Memory is an in-memory Backend for tests of code above the tier layer.
// It follows the whole contract (it passes Run) and is safe for concurrent
// use. Stored bytes are copied in and out, so callers cannot alias them.
type Memory struct {
	mu     sync.RWMutex
	objs   map[tiers.Handle]memObject
	closed bool
	clock  func() time.Time
}

type memObject struct {
	data []byte
	mod  time.Time
}

var _ tiers.Backend = (*Memory)(nil)

// NewMemory returns an empty in-memory backend.
func NewMemory() *Memory { return &Memory{objs: make(map[tiers.Handle]memObject)} }

// SetClock makes the backend take the modification times of the objects
// it stores from now (time.Now by default): a test that moves a
// simulated clock moves the storage's clock with it.
func (m *Memory) SetClock(now func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock = now
}

// Location returns "memory://" and the backend's address.
func (m *Memory) Location() string { return fmt.Sprintf("memory://%p", m) }

// Close marks the backend closed; later calls fail.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

func (m *Memory) check(ctx context.Context, op string, h tiers.Handle) error {
	if err := h.Validate(); err != nil {
		return fmt.Errorf("%s %q in %s: %w", op, h.String(), m.Location(), err)
	}
	if err := m.ready(ctx); err != nil {
		return fmt.Errorf("%s %s in %s: %w", op, h, m.Location(), err)
	}
	return nil
}

func (m *Memory) ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return errors.New("backend closed")
	}
	return nil
}

// Put stores size bytes of rd under h.
func (m *Memory) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if err := m.check(ctx, "put", h); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %s in %s: negative size %d", h, m.Location(), size)
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(&ctxReader{ctx: ctx, r: rd}, size+1))
	if err != nil {
		return fmt.Errorf("put %s in %s: read body: %w", h, m.Location(), err)
	}
	if n != size {
		return fmt.Errorf("put %s in %s: %w: reader yielded %d bytes, want %d", h, m.Location(), tiers.ErrSizeMismatch, n, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s in %s: %w", h, m.Location(), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mod := time.Now()
	if m.clock != nil {
		mod = m.clock()
	}
	m.objs[h] = memObject{data: buf.Bytes(), mod: mod}
	return nil
}

// Load calls fn with the requested range of h.
func (m *Memory) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	if err := m.check(ctx, "load", h); err != nil {
		return err
	}
	if offset < 0 || length < 0 {
		return fmt.Errorf("load %s from %s: invalid range: offset %d, length %d", h, m.Location(), offset, length)
	}
	m.mu.RLock()
	o, ok := m.objs[h]
	m.mu.RUnlock()
	if !ok {
		return fmt.Errorf("load %s from %s: %w", h, m.Location(), tiers.ErrNotFound)
	}
	size := int64(len(o.data))
	n := length
	if n == 0 {
		n = size - offset
	}
	if offset > size || n > size-offset {
		return fmt.Errorf("load %s from %s: %w: object has %d bytes, want %d at offset %d", h, m.Location(), tiers.ErrShortRead, size, n, offset)
	}
	// o.data is never modified after Put, so no copy is needed.
	if err := fn(&ctxReader{ctx: ctx, r: bytes.NewReader(o.data[offset : offset+n])}); err != nil {
		return fmt.Errorf("load %s from %s: %w", h, m.Location(), err)
	}
	return nil
}

// Stat returns the size of h.
func (m *Memory) Stat(ctx context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	if err := m.check(ctx, "stat", h); err != nil {
		return tiers.ObjectInfo{}, err
	}
	m.mu.RLock()
	o, ok := m.objs[h]
	m.mu.RUnlock()
	if !ok {
		return tiers.ObjectInfo{}, fmt.Errorf("stat %s in %s: %w", h, m.Location(), tiers.ErrNotFound)
	}
	return tiers.ObjectInfo{Handle: h, Size: int64(len(o.data)), ModTime: o.mod}, nil
}

// List calls fn for every object of type t.
func (m *Memory) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	if !t.Valid() {
		return fmt.Errorf("list %q in %s: %w: unknown object type", t, m.Location(), tiers.ErrInvalidHandle)
	}
	if err := m.ready(ctx); err != nil {
		return fmt.Errorf("list %s in %s: %w", t, m.Location(), err)
	}
	m.mu.RLock()
	var infos []tiers.ObjectInfo
	for h, o := range m.objs {
		if h.Type == t {
			infos = append(infos, tiers.ObjectInfo{Handle: h, Size: int64(len(o.data)), ModTime: o.mod})
		}
	}
	m.mu.RUnlock()
	for _, oi := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %s in %s: %w", t, m.Location(), err)
		}
		if err := fn(oi); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes h; a missing object is not an error.
func (m *Memory) Remove(ctx context.Context, h tiers.Handle) error {
	if err := m.check(ctx, "remove", h); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, h)
	return nil
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
