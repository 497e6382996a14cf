package pipeline

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"slices"
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
//
// Its memory does not grow with the file's chunks: a large file's extents
// are in content lists of repo.ContentListExtents each, of which the
// reader keeps the offsets and the recentLists it read last (a 10 TiB
// image has some 14 million extents, 780 MB held whole). It does keep the
// file's data ranges (Data), 16 bytes for each run of data between holes.
type NodeReader struct {
	r     *repo.Repository
	node  *repo.Node
	size  int64
	segs  []extentSeg // in file order, none empty
	data  []vmdisk.Range
	cache *BlobCache

	mu     sync.Mutex
	recent []*extentSeg // content lists loaded last, newest first
}

// extentSeg is a run of a file's extents: its inline extents, or one of
// its content lists (loaded when read).
type extentSeg struct {
	off  int64 // offset of the first extent
	list id.ID // the content list; null for inline extents
	n    int   // number of extents
	ext  []repo.Extent
	offs []int64 // offset of each extent
}

// recentLists is how many content lists a NodeReader keeps loaded, 32 x
// 8192 extents (about 14 MiB, for files of more than 200 GiB): random
// reads over 150 GiB of a mounted image (a VM booting from it) then find
// their list loaded.
const recentLists = 32

// NewNodeReader reads n's extent list (content lists included) once to
// check that it covers n's size and to find its data ranges, and returns
// a reader over its content. cache may be shared between readers; nil
// gives the reader its own small cache.
func NewNodeReader(ctx context.Context, r *repo.Repository, n *repo.Node, cache *BlobCache) (*NodeReader, error) {
	if cache == nil {
		cache = NewBlobCache(r, 32<<20)
	}
	nr := &NodeReader{r: r, node: n, size: n.Size, cache: cache}
	var off int64
	add := func(s *extentSeg, e repo.Extent) error {
		if e.Len <= 0 || e.Len > n.Size-off { // not off+e.Len > n.Size: the sum may wrap around
			return fmt.Errorf("read content list of %s: extent at %d (+%d) is outside the file size %d", n.Name, off, e.Len, n.Size)
		}
		if !e.Zero {
			if k := len(nr.data); k > 0 && nr.data[k-1].Off+nr.data[k-1].Len == off {
				nr.data[k-1].Len += e.Len
			} else {
				nr.data = append(nr.data, vmdisk.Range{Off: off, Len: e.Len})
			}
		}
		if s.list.IsNull() {
			s.ext = append(s.ext, e)
			s.offs = append(s.offs, off)
		}
		s.n++
		off += e.Len
		return nil
	}
	if len(n.Content) > 0 {
		s := &extentSeg{}
		for _, e := range n.Content {
			if err := add(s, e); err != nil {
				return nil, err
			}
		}
		nr.segs = append(nr.segs, *s)
	}
	for _, x := range n.ContentLists {
		ext, err := r.LoadContentList(ctx, n, x)
		if err != nil {
			return nil, fmt.Errorf("read content list of %s: %w", n.Name, err)
		}
		s := &extentSeg{off: off, list: x}
		for _, e := range ext {
			if err := add(s, e); err != nil {
				return nil, err
			}
		}
		if s.n > 0 {
			nr.segs = append(nr.segs, *s)
		}
	}
	if off != n.Size {
		return nil, fmt.Errorf("content of %s covers %d bytes, its size is %d", n.Name, off, n.Size)
	}
	return nr, nil
}

// Size returns the content size.
func (nr *NodeReader) Size() int64 { return nr.size }

// Data returns the ranges held by stored chunks (zero extents excluded),
// merged, in a slice of the caller's own.
func (nr *NodeReader) Data() []vmdisk.Range { return slices.Clone(nr.data) }

// extents returns segment i's extents and their offsets, loading its
// content list unless it is one of those read last.
func (nr *NodeReader) extents(ctx context.Context, i int) ([]repo.Extent, []int64, error) {
	s := &nr.segs[i]
	if s.list.IsNull() {
		return s.ext, s.offs, nil
	}
	nr.mu.Lock()
	for k, c := range nr.recent {
		if c.list == s.list && c.off == s.off {
			copy(nr.recent[1:k+1], nr.recent[:k])
			nr.recent[0] = c
			nr.mu.Unlock()
			return c.ext, c.offs, nil
		}
	}
	nr.mu.Unlock()
	ext, err := nr.r.LoadContentList(ctx, nr.node, s.list)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s at offset %d: %w", nr.node.Name, s.off, err)
	}
	if len(ext) != s.n { // content-addressed: the same list reads the same
		return nil, nil, fmt.Errorf("read %s at offset %d: content list %s holds %d extents, %d when opened", nr.node.Name, s.off, s.list.Short(), len(ext), s.n)
	}
	c := &extentSeg{off: s.off, list: s.list, n: s.n, ext: ext, offs: make([]int64, len(ext))}
	off := s.off
	for k, e := range ext {
		c.offs[k] = off
		off += e.Len
	}
	nr.mu.Lock()
	if len(nr.recent) < recentLists {
		nr.recent = append(nr.recent, nil)
	}
	copy(nr.recent[1:], nr.recent[:len(nr.recent)-1])
	nr.recent[0] = c
	nr.mu.Unlock()
	return c.ext, c.offs, nil
}

// ReadAtContext reads len(p) bytes at off (fewer, with io.EOF, at the end).
func (nr *NodeReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s at negative offset %d", nr.node.Name, off)
	}
	if off >= nr.size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > nr.size-off {
		p, eof = p[:nr.size-off], io.EOF
	}
	si := sort.Search(len(nr.segs), func(i int) bool { return nr.segs[i].off > off }) - 1
	ext, offs, err := nr.extents(ctx, si)
	if err != nil {
		return 0, err
	}
	i := sort.Search(len(offs), func(i int) bool { return offs[i] > off }) - 1
	done := 0
	for done < len(p) {
		if i == len(ext) {
			si, i = si+1, 0
			if ext, offs, err = nr.extents(ctx, si); err != nil {
				return done, err
			}
		}
		e, start := ext[i], offs[i]
		in := off + int64(done) - start
		n := int(min(int64(len(p)-done), e.Len-in))
		if e.Zero {
			clear(p[done : done+n])
		} else {
			b, err := nr.cache.Get(ctx, e.ID)
			if err != nil {
				return done, fmt.Errorf("read %s at offset %d: chunk %s: %w", nr.node.Name, start, e.ID.Short(), err)
			}
			if int64(len(b)) != e.Len {
				return done, fmt.Errorf("read %s at offset %d: chunk %s has %d bytes, the extent says %d", nr.node.Name, start, e.ID.Short(), len(b), e.Len)
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
