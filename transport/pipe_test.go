package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// In-memory Conn pairs for tests: every stream is two io.Pipes, so the
// protocol runs exactly as over QUIC minus the network. A shared byte
// budget can cut the whole connection after a given number of bytes
// written in either direction (both peers see the cut).

type pipeLink struct {
	mu      sync.Mutex
	closed  bool
	err     error
	streams []*pipeStream
	accept  chan *pipeStream // client-opened streams, to the server
	done    chan struct{}
	budget  *atomic.Int64 // bytes left before the cut; <0: unlimited (may be shared by links)
	written atomic.Int64
}

type pipeConn struct {
	l      *pipeLink
	client bool
	peer   string
}

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

// pipePair returns the client and server ends of a connection whose
// server sees the client as peer. cutAfter < 0 never cuts.
func pipePair(peer string, cutAfter int64) (client, server *pipeConn, link *pipeLink) {
	b := &atomic.Int64{}
	b.Store(cutAfter)
	return pipePairShared(peer, b)
}

// pipePairShared is pipePair with a byte budget shared with other
// connections: whichever connection exhausts it is cut, and the others
// are cut at their next write.
func pipePairShared(peer string, budget *atomic.Int64) (client, server *pipeConn, link *pipeLink) {
	l := &pipeLink{accept: make(chan *pipeStream, 128), done: make(chan struct{}), budget: budget}
	return &pipeConn{l: l, client: true, peer: "site"}, &pipeConn{l: l, peer: peer}, l
}

var errCut = fmt.Errorf("pipe: connection cut: %w", net.ErrClosed)

func (l *pipeLink) close(err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.err = err
	ss := l.streams
	l.mu.Unlock()
	close(l.done)
	for _, s := range ss {
		s.kill(err)
	}
}

func (c *pipeConn) OpenStream(ctx context.Context) (Stream, error) {
	if !c.client {
		return nil, errors.New("pipe: only the client opens streams")
	}
	p1, p2 := newBufPipe(256<<10), newBufPipe(256<<10)
	a := &pipeStream{l: c.l, in: p1, out: p2}
	b := &pipeStream{l: c.l, in: p2, out: p1}
	c.l.mu.Lock()
	if c.l.closed {
		err := c.l.err
		c.l.mu.Unlock()
		return nil, err
	}
	c.l.streams = append(c.l.streams, a, b)
	c.l.mu.Unlock()
	select {
	case c.l.accept <- b:
		return a, nil
	case <-c.l.done:
		return nil, c.l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *pipeConn) AcceptStream(ctx context.Context) (Stream, error) {
	select {
	case s := <-c.l.accept:
		return s, nil
	case <-c.l.done:
		return nil, c.l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *pipeConn) Peer() string         { return c.peer }
func (c *pipeConn) RemoteAddr() net.Addr { return pipeAddr("pipe:" + c.peer) }
func (c *pipeConn) CloseWithError(code ErrorCode, msg string) error {
	var err error = &RemoteError{Code: code, Message: msg}
	if code == CodeOK {
		err = fmt.Errorf("pipe: connection closed: %w", net.ErrClosed)
	}
	c.l.close(err)
	return nil
}

// bufPipe is one direction of a stream with a bounded buffer, like a
// QUIC stream's flow-control window.
type bufPipe struct {
	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte
	max  int
	eof  bool  // writer closed
	rerr error // reader cancelled: writes fail
	err  error // killed: everything fails
}

func newBufPipe(max int) *bufPipe {
	p := &bufPipe{max: max}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *bufPipe) read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 && !p.eof && p.err == nil && p.rerr == nil {
		p.cond.Wait()
	}
	if p.err != nil {
		return 0, p.err
	}
	if p.rerr != nil {
		return 0, p.rerr
	}
	if len(p.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	p.cond.Broadcast()
	return n, nil
}

func (p *bufPipe) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	done := 0
	for len(b) > 0 {
		for len(p.buf) >= p.max && p.err == nil && p.rerr == nil {
			p.cond.Wait()
		}
		switch {
		case p.err != nil:
			return done, p.err
		case p.rerr != nil:
			return done, p.rerr
		case p.eof:
			return done, errors.New("pipe: write after CloseWrite")
		}
		n := min(len(b), p.max-len(p.buf))
		p.buf = append(p.buf, b[:n]...)
		b = b[n:]
		done += n
		p.cond.Broadcast()
	}
	return done, nil
}

func (p *bufPipe) set(f func()) {
	p.mu.Lock()
	f()
	p.cond.Broadcast()
	p.mu.Unlock()
}

type pipeStream struct {
	l       *pipeLink
	in, out *bufPipe
	mu      sync.Mutex
	timer   *time.Timer
}

func (s *pipeStream) Read(p []byte) (int, error) { return s.in.read(p) }

func (s *pipeStream) Write(p []byte) (int, error) {
	if b := s.l.budget.Load(); b >= 0 {
		left := s.l.budget.Add(-int64(len(p)))
		if left < 0 {
			// Deliver what fits, then cut everything.
			n := int(max(0, int64(len(p))+left))
			if n > 0 {
				s.out.write(p[:n])
			}
			s.l.close(errCut)
			return n, errCut
		}
	}
	n, err := s.out.write(p)
	s.l.written.Add(int64(n))
	return n, err
}

func (s *pipeStream) CloseWrite() error {
	s.out.set(func() { s.out.eof = true })
	return nil
}

func (s *pipeStream) CancelRead() {
	s.in.set(func() {
		if s.in.rerr == nil {
			s.in.rerr = fmt.Errorf("pipe: stream reading cancelled by the peer: %w", ErrStreamAborted)
		}
		s.in.buf = nil
	})
}

func (s *pipeStream) kill(err error) {
	for _, p := range []*bufPipe{s.in, s.out} {
		p.set(func() {
			if p.err == nil {
				p.err = err
			}
		})
	}
}

func (s *pipeStream) Abort() { s.kill(fmt.Errorf("pipe: stream reset: %w", ErrStreamAborted)) }

func (s *pipeStream) SetDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !t.IsZero() {
		s.timer = time.AfterFunc(time.Until(t), func() { s.kill(os.ErrDeadlineExceeded) })
	}
	return nil
}
