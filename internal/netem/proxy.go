package netem

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// UDPProxy forwards datagrams between clients of its listening address and
// a target, impairing each direction. Safe for concurrent use.
type UDPProxy struct {
	ln     *net.UDPConn
	target *net.UDPAddr
	up     *shaper // client -> target
	down   *shaper // target -> client
	q      *delayQueue

	mu    sync.Mutex
	flows map[string]*net.UDPConn
	done  chan struct{}
	wg    sync.WaitGroup

	fwd atomic.Int64
}

// NewUDP listens on listen (e.g. "127.0.0.1:0") and forwards to target
// with imp in both directions. seed makes loss and jitter reproducible.
func NewUDP(listen, target string, imp Impairment, seed uint64) (*UDPProxy, error) {
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, err
	}
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, err
	}
	_ = ln.SetReadBuffer(8 << 20)
	_ = ln.SetWriteBuffer(8 << 20)
	p := &UDPProxy{ln: ln, target: ta, up: newShaper(imp, seed), down: newShaper(imp, seed+1), q: newDelayQueue(),
		flows: map[string]*net.UDPConn{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's listening address: point clients at it.
func (p *UDPProxy) Addr() string { return p.ln.LocalAddr().String() }

// Set changes the impairment of both directions.
func (p *UDPProxy) Set(imp Impairment) { p.up.set(imp); p.down.set(imp) }

// Cut drops every datagram in both directions until Restore.
func (p *UDPProxy) Cut() { p.up.setCut(true); p.down.setCut(true) }

// Restore ends a Cut.
func (p *UDPProxy) Restore() { p.up.setCut(false); p.down.setCut(false) }

// Dropped returns the number of datagrams dropped (loss, queue, cut).
func (p *UDPProxy) Dropped() int64 {
	p.up.mu.Lock()
	d := p.up.drops
	p.up.mu.Unlock()
	p.down.mu.Lock()
	d += p.down.drops
	p.down.mu.Unlock()
	return d
}

// Forwarded returns the number of datagrams delivered.
func (p *UDPProxy) Forwarded() int64 { return p.fwd.Load() }

// Close stops the proxy.
func (p *UDPProxy) Close() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	close(p.done)
	err := p.ln.Close()
	p.mu.Lock()
	for _, c := range p.flows {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.q.close()
	return err
}

func (p *UDPProxy) serve() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		flow, err := p.flow(from)
		if err != nil {
			continue
		}
		due, ok := p.up.schedule(time.Now(), n, true, false)
		if !ok {
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		p.q.add(due, func() {
			if _, err := flow.Write(pkt); err == nil {
				p.fwd.Add(1)
			}
		})
	}
}

// flow returns the upstream socket for a client address, creating it
// (and its reply pump) on first use.
func (p *UDPProxy) flow(from *net.UDPAddr) (*net.UDPConn, error) {
	key := from.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.flows[key]; ok {
		return c, nil
	}
	c, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(8 << 20)
	_ = c.SetWriteBuffer(8 << 20)
	p.flows[key] = c
	client := *from
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
					continue // e.g. ICMP port unreachable while the target restarts
				}
				return
			}
			due, ok := p.down.schedule(time.Now(), n, true, false)
			if !ok {
				continue
			}
			pkt := append([]byte(nil), buf[:n]...)
			p.q.add(due, func() {
				if _, err := p.ln.WriteToUDP(pkt, &client); err == nil {
					p.fwd.Add(1)
				}
			})
		}
	}()
	return c, nil
}

// TCPProxy forwards TCP connections to a target, delaying and rate
// limiting each direction of every connection. Safe for concurrent use.
type TCPProxy struct {
	ln     net.Listener
	target string
	imp    atomic.Pointer[Impairment]
	cut    atomic.Bool
	seed   uint64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewTCP listens on listen and forwards each connection to target.
func NewTCP(listen, target string, imp Impairment, seed uint64) (*TCPProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &TCPProxy{ln: ln, target: target, seed: seed, conns: map[net.Conn]struct{}{}}
	p.imp.Store(&imp)
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *TCPProxy) Addr() string { return p.ln.Addr().String() }

// Set changes the impairment for new connections.
func (p *TCPProxy) Set(imp Impairment) { p.imp.Store(&imp) }

// Cut closes every connection and refuses new ones until Restore.
func (p *TCPProxy) Cut() {
	p.cut.Store(true)
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// Restore ends a Cut.
func (p *TCPProxy) Restore() { p.cut.Store(false) }

// Close stops the proxy and closes every connection.
func (p *TCPProxy) Close() error {
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

func (p *TCPProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

func (p *TCPProxy) serve() {
	defer p.wg.Done()
	n := uint64(0)
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			c.Close()
			continue
		}
		n++
		p.wg.Add(1)
		go p.handle(c, p.seed+2*n)
	}
}

func (p *TCPProxy) handle(c net.Conn, seed uint64) {
	defer p.wg.Done()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.track(c, true)
	p.track(u, true)
	imp := *p.imp.Load()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pump(u, c, newShaper(imp, seed)) }()
	go func() { defer wg.Done(); pump(c, u, newShaper(imp, seed+1)) }()
	wg.Wait()
	p.track(c, false)
	p.track(u, false)
	c.Close()
	u.Close()
}

// pump copies src to dst through the shaper, preserving order.
func pump(dst, src net.Conn, s *shaper) {
	type chunk struct {
		due time.Time
		b   []byte
	}
	ch := make(chan chunk, 1024) // at most 16 MiB in flight
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 16<<10)
			n, err := src.Read(b)
			if n > 0 {
				due, _ := s.schedule(time.Now(), n, false, true)
				ch <- chunk{due, b[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.b); err != nil {
			src.Close()
			for range ch {
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
}
