package pipeline

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/vmdisk"
)

// NodeReader reads the content of one file node from the repository on
// demand: any offset, any tier the repository reads from. Chunks come from
// a BlobCache, so nearby reads do not load a chunk twice. A chunk that
// cannot be loaded (lost, or damaged beyond what parity can rebuild) makes
// the read fail with an error wrapping the repository's; no wrong bytes are
// ever returned. It is safe for concurrent use.
type NodeReader struct {
	r     *repo.Repository
	name  string
	size  int64
	ext   []repo.Extent
	offs  []int64 // start offset of each extent
	cache *BlobCache
}

// NewNodeReader loads n's extent list (content lists included) and returns
// a reader over its content. cache may be shared between readers; nil
// gives the reader its own small cache.
func NewNodeReader(ctx context.Context, r *repo.Repository, n *repo.Node, cache *BlobCache) (*NodeReader, error) {
	if cache == nil {
		cache = NewBlobCache(r, 32<<20)
	}
	nr := &NodeReader{r: r, name: n.Name, size: n.Size, cache: cache}
	var off int64
	err := r.EachExtent(ctx, n, func(e repo.Extent) error {
		if e.Len <= 0 || off+e.Len > n.Size {
			return fmt.Errorf("extent at %d (+%d) is outside the file size %d", off, e.Len, n.Size)
		}
		nr.ext = append(nr.ext, e)
		nr.offs = append(nr.offs, off)
		off += e.Len
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read content list of %s: %w", n.Name, err)
	}
	if off != n.Size {
		return nil, fmt.Errorf("content of %s covers %d bytes, its size is %d", n.Name, off, n.Size)
	}
	return nr, nil
}

// Size returns the content size.
func (nr *NodeReader) Size() int64 { return nr.size }

// Data returns the ranges held by stored chunks (zero extents excluded),
// merged.
func (nr *NodeReader) Data() []vmdisk.Range {
	var out []vmdisk.Range
	for i, e := range nr.ext {
		if e.Zero {
			continue
		}
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == nr.offs[i] {
			out[k-1].Len += e.Len
			continue
		}
		out = append(out, vmdisk.Range{Off: nr.offs[i], Len: e.Len})
	}
	return out
}

// ReadAtContext reads len(p) bytes at off (fewer, with io.EOF, at the end).
func (nr *NodeReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s at negative offset %d", nr.name, off)
	}
	if off >= nr.size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > nr.size-off {
		p, eof = p[:nr.size-off], io.EOF
	}
	i := sort.Search(len(nr.offs), func(i int) bool { return nr.offs[i] > off }) - 1
	done := 0
	for done < len(p) {
		e, start := nr.ext[i], nr.offs[i]
		in := off + int64(done) - start
		n := int(min(int64(len(p)-done), e.Len-in))
		if e.Zero {
			clear(p[done : done+n])
		} else {
			b, err := nr.cache.Get(ctx, e.ID)
			if err != nil {
				return done, fmt.Errorf("read %s at offset %d: chunk %s: %w", nr.name, start, e.ID.Short(), err)
			}
			if int64(len(b)) != e.Len {
				return done, fmt.Errorf("read %s at offset %d: chunk %s has %d bytes, the extent says %d", nr.name, start, e.ID.Short(), len(b), e.Len)
			}
			copy(p[done:done+n], b[in:])
		}
		done += n
		i++
	}
	return done, eof
}

// ReaderAt adapts nr to io.ReaderAt for the duration of one operation
// under ctx (the adapter is meant to be short-lived and local).
func (nr *NodeReader) ReaderAt(ctx context.Context) io.ReaderAt { return ctxReaderAt{ctx, nr} }

type ctxReaderAt struct {
	ctx context.Context
	nr  *NodeReader
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return c.nr.ReadAtContext(c.ctx, p, off)
}

// BlobCache keeps recently used data blobs in memory, bounded in bytes,
// least recently used first out. Concurrent loads of the same blob are
// coalesced. It is safe for concurrent use.
type BlobCache struct {
	r        *repo.Repository
	maxBytes int64

	mu       sync.Mutex
	bytes    int64
	lru      *list.List // of *cacheEntry, front = newest
	m        map[id.ID]*list.Element
	inflight map[id.ID]*loadCall
}

type cacheEntry struct {
	id   id.ID
	data []byte
}

type loadCall struct {
	done     chan struct{}
	data     []byte
	err      error
	canceled bool // err came from the loading caller's context ending
}

// NewBlobCache returns a cache holding up to maxBytes of blobs of r.
func NewBlobCache(r *repo.Repository, maxBytes int64) *BlobCache {
	return &BlobCache{r: r, maxBytes: maxBytes, lru: list.New(), m: map[id.ID]*list.Element{}, inflight: map[id.ID]*loadCall{}}
}

// Get returns data blob x (the slice must not be modified).
func (c *BlobCache) Get(ctx context.Context, x id.ID) ([]byte, error) {
	for {
		d, again, err := c.get(ctx, x)
		if !again {
			return d, err
		}
	}
}

// get is one attempt of Get. again is set when the load it waited for
// ended with its own caller's cancellation (another FUSE request,
// interrupted), which is not this caller's failure: it tries again.
func (c *BlobCache) get(ctx context.Context, x id.ID) (d []byte, again bool, err error) {
	c.mu.Lock()
	if el, ok := c.m[x]; ok {
		c.lru.MoveToFront(el)
		d := el.Value.(*cacheEntry).data
		c.mu.Unlock()
		return d, false, nil
	}
	if call, ok := c.inflight[x]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			if call.err != nil && call.canceled && ctx.Err() == nil {
				return nil, true, nil
			}
			return call.data, false, call.err
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	call := &loadCall{done: make(chan struct{})}
	c.inflight[x] = call
	c.mu.Unlock()

	call.data, call.err = c.r.LoadBlob(ctx, repo.DataBlob, x, nil)
	call.canceled = call.err != nil && ctx.Err() != nil
	c.mu.Lock()
	delete(c.inflight, x)
	if call.err == nil {
		c.m[x] = c.lru.PushFront(&cacheEntry{x, call.data})
		c.bytes += int64(len(call.data))
		for c.bytes > c.maxBytes && c.lru.Len() > 1 {
			el := c.lru.Back()
			e := el.Value.(*cacheEntry)
			c.lru.Remove(el)
			delete(c.m, e.id)
			c.bytes -= int64(len(e.data))
		}
	}
	c.mu.Unlock()
	close(call.done)
	return call.data, false, call.err
}
