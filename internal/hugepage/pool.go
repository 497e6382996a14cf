package hugepage

// Pool keeps up to a fixed number of large buffers for reuse. Unlike a
// sync.Pool it does not let a garbage collection drop them: each buffer
// a pipeline needs at once is made once, by Make, and used again, where
// a sync.Pool remade its multi-MiB buffers after collections and left the
// dropped ones as garbage the heap kept until the next one. The process's
// peak memory is then what the pipeline holds at once, not that and
// whatever garbage the collector has not yet reached.
type Pool struct {
	size int
	free chan []byte
}

// NewPool returns a Pool of buffers of size bytes that keeps up to keep
// of them between uses (at least one).
func NewPool(size, keep int) *Pool {
	return &Pool{size: size, free: make(chan []byte, max(keep, 1))}
}

// Get returns a buffer of the Pool's size in length: a kept
// one (its contents left from its last use), or a new one from Make.
func (p *Pool) Get() []byte {
	select {
	case b := <-p.free:
		return b[:p.size]
	default:
		return Make(p.size)
	}
}

// Put gives b back for reuse. A buffer smaller than Size, or one beyond
// the number kept, is left to the garbage collector.
func (p *Pool) Put(b []byte) {
	if cap(b) < p.size {
		return
	}
	select {
	case p.free <- b:
	default:
	}
}
