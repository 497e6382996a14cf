package tierstest

import (
	"context"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/drpipe/drpipe/tiers"
)

// Counts are the calls and bytes a CountingBackend saw for one object type
// (or in total).
type Counts struct {
	// Calls per method, failed ones included.
	Puts, Loads, Stats, Lists, Removes int64
	// BytesPut is the number of bytes the wrapped backend read from Put
	// readers; BytesLoaded the number of bytes Load callbacks read. Both
	// include failed and repeated attempts, i.e. they measure transfer.
	BytesPut, BytesLoaded int64
}

func (c *Counts) add(o Counts) {
	c.Puts += o.Puts
	c.Loads += o.Loads
	c.Stats += o.Stats
	c.Lists += o.Lists
	c.Removes += o.Removes
	c.BytesPut += o.BytesPut
	c.BytesLoaded += o.BytesLoaded
}

// CountingBackend is a Backend wrapper that counts calls and transferred
// bytes per object type and records the handles stored, so tests can
// assert for example that a copy sent only the missing objects. It is safe
// for concurrent use and hides optional interfaces of the wrapped backend.
type CountingBackend struct {
	be     tiers.Backend
	mu     sync.Mutex
	counts map[tiers.Type]*Counts
	puts   []tiers.Handle
}

var _ tiers.Backend = (*CountingBackend)(nil)

// NewCounting wraps be.
func NewCounting(be tiers.Backend) *CountingBackend {
	return &CountingBackend{be: be, counts: make(map[tiers.Type]*Counts)}
}

// Unwrap returns the wrapped backend.
func (c *CountingBackend) Unwrap() tiers.Backend { return c.be }

func (c *CountingBackend) update(t tiers.Type, f func(*Counts)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.counts[t]
	if k == nil {
		k = new(Counts)
		c.counts[t] = k
	}
	f(k)
}

// Counts returns the counts for type t.
func (c *CountingBackend) Counts(t tiers.Type) Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := c.counts[t]; k != nil {
		return *k
	}
	return Counts{}
}

// Total returns the counts summed over all types (calls with invalid
// types included).
func (c *CountingBackend) Total() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum Counts
	for _, k := range c.counts {
		sum.add(*k)
	}
	return sum
}

// Stored returns the handles of successful Puts in completion order
// (a handle put twice appears twice).
func (c *CountingBackend) Stored() []tiers.Handle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.puts)
}

// Reset zeroes all counts and forgets the stored handles.
func (c *CountingBackend) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts = make(map[tiers.Type]*Counts)
	c.puts = nil
}

// Location returns the wrapped backend's location.
func (c *CountingBackend) Location() string { return c.be.Location() }

// Close closes the wrapped backend.
func (c *CountingBackend) Close() error { return c.be.Close() }

// Put stores through the wrapped backend, counting the bytes it reads.
func (c *CountingBackend) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	cr := &countingReader{r: rd}
	var body io.Reader = cr
	if rs, ok := rd.(io.ReadSeeker); ok {
		// Keep the body seekable so a retry wrapper below can rewind it.
		body = &countingSeeker{countingReader: cr, s: rs}
	}
	err := c.be.Put(ctx, h, body, size)
	c.update(h.Type, func(k *Counts) {
		k.Puts++
		k.BytesPut += cr.n.Load()
	})
	if err == nil {
		c.mu.Lock()
		c.puts = append(c.puts, h)
		c.mu.Unlock()
	}
	return err
}

// Load loads through the wrapped backend, counting the bytes fn reads.
func (c *CountingBackend) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	var n atomic.Int64
	err := c.be.Load(ctx, h, offset, length, func(rd io.Reader) error {
		cr := &countingReader{r: rd}
		err := fn(cr)
		n.Add(cr.n.Load())
		return err
	})
	c.update(h.Type, func(k *Counts) {
		k.Loads++
		k.BytesLoaded += n.Load()
	})
	return err
}

// Stat stats through the wrapped backend.
func (c *CountingBackend) Stat(ctx context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	c.update(h.Type, func(k *Counts) { k.Stats++ })
	return c.be.Stat(ctx, h)
}

// List lists through the wrapped backend.
func (c *CountingBackend) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	c.update(t, func(k *Counts) { k.Lists++ })
	return c.be.List(ctx, t, fn)
}

// Remove removes through the wrapped backend.
func (c *CountingBackend) Remove(ctx context.Context, h tiers.Handle) error {
	c.update(h.Type, func(k *Counts) { k.Removes++ })
	return c.be.Remove(ctx, h)
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type countingSeeker struct {
	*countingReader
	s io.Seeker
}

func (c *countingSeeker) Seek(off int64, whence int) (int64, error) { return c.s.Seek(off, whence) }
