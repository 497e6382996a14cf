package netem

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// newLink creates a Link for a test. The Link needs root; CI runs as
// root, so a non-root run fails loudly rather than skipping silently.
func newLink(t *testing.T, o LinkOptions) *Link {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("%v (this test checks the packet-level link used by the QUIC benchmark and e2e tests)", ErrNeedRoot)
	}
	l, err := NewLink(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// listenTCP listens on side s and serves each connection with serve.
func listenTCP(t *testing.T, l *Link, s Side, serve func(net.Conn)) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	if err := l.Do(s, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(l.Addr(s).String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func dialTCP(t *testing.T, l *Link, s Side, to netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	if err := l.Do(s, func() (err error) {
		c, err = net.DialTimeout("tcp", to.String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func udpSocket(t *testing.T, l *Link, s Side) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := l.Do(s, func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.Addr(s), 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

func within(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got < lo || got > hi {
		t.Errorf("%s took %v, want %v..%v", what, got, lo, hi)
	}
}

// TestLinkDelayIsEndToEnd: TCP's own handshake and UDP both see the
// added delay as round-trip time (a terminating proxy would answer the
// TCP handshake at once), and Set changes it.
func TestLinkDelayIsEndToEnd(t *testing.T) {
	l := newLink(t, LinkOptions{Delay: 25 * time.Millisecond})
	echo := listenTCP(t, l, B, func(c net.Conn) { io.Copy(c, c) })
	start := time.Now()
	c := dialTCP(t, l, A, echo)
	within(t, "TCP connect (SYN, SYN-ACK) over a 25 ms each-way link", time.Since(start), 48*time.Millisecond, 150*time.Millisecond)
	buf := make([]byte, 5)
	rtt := func() time.Duration {
		start := time.Now()
		c.Write([]byte("hello"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	within(t, "TCP round trip", rtt(), 48*time.Millisecond, 150*time.Millisecond)

	ua, ub := udpSocket(t, l, A), udpSocket(t, l, B)
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := ub.ReadFromUDPAddrPort(b)
			if err != nil {
				return
			}
			ub.WriteToUDPAddrPort(b[:n], from)
		}
	}()
	start = time.Now()
	ua.WriteToUDPAddrPort([]byte("ping"), netip.MustParseAddrPort(ub.LocalAddr().String()))
	ua.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ua.ReadFromUDP(buf); err != nil {
		t.Fatal(err)
	}
	within(t, "UDP round trip", time.Since(start), 48*time.Millisecond, 150*time.Millisecond)

	if err := l.Set(LinkOptions{Delay: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	within(t, "TCP round trip after Set(5 ms)", rtt(), 9*time.Millisecond, 60*time.Millisecond)
	if st := l.Stats(); st.Forwarded[0] == 0 || st.Forwarded[1] == 0 || st.Dropped[0]+st.Dropped[1] != 0 {
		t.Errorf("stats %+v: want packets both ways and no drops", st)
	}
}

// TestLinkLossAndCut: datagrams are lost at the configured rate in each
// direction; TCP delivers a stream intact across the same losses; a cut
// link delivers nothing until restored.
func TestLinkLossAndCut(t *testing.T) {
	l := newLink(t, LinkOptions{Delay: time.Millisecond, Loss: 0.10})
	ua, ub := udpSocket(t, l, A), udpSocket(t, l, B)
	count := func(from, to *net.UDPConn, n int) int {
		got := make(chan int)
		go func() {
			b := make([]byte, 64)
			k := 0
			for {
				to.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if _, _, err := to.ReadFromUDP(b); err != nil {
					got <- k
					return
				}
				k++
			}
		}()
		dst := netip.MustParseAddrPort(to.LocalAddr().String())
		for i := range n {
			from.WriteToUDPAddrPort([]byte{byte(i)}, dst)
			if i%100 == 99 {
				time.Sleep(2 * time.Millisecond) // stay under the socket buffers
			}
		}
		return <-got
	}
	const n = 5000
	for _, dir := range []struct {
		name     string
		from, to *net.UDPConn
	}{{"A→B", ua, ub}, {"B→A", ub, ua}} {
		got := count(dir.from, dir.to, n)
		if loss := 1 - float64(got)/n; loss < 0.08 || loss > 0.12 {
			t.Errorf("%s: %d of %d datagrams arrived: loss %.3f, want about 0.10", dir.name, got, n, loss)
		}
	}

	// TCP recovers end to end: 2 MiB arrive intact.
	data := make([]byte, 2<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sums := make(chan [32]byte, 1)
	sink := listenTCP(t, l, B, func(c net.Conn) {
		h := sha256.New()
		io.Copy(h, c)
		var s [32]byte
		h.Sum(s[:0])
		sums <- s
	})
	c := dialTCP(t, l, A, sink)
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case s := <-sums:
		if s != sha256.Sum256(data) {
			t.Error("TCP stream corrupted across the lossy link")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("TCP transfer over 10% loss did not finish in 60 s")
	}

	// Cut: nothing arrives; Restore: traffic flows again.
	l.Set(LinkOptions{Delay: time.Millisecond})
	l.Cut()
	if got := count(ua, ub, 50); got != 0 {
		t.Errorf("%d datagrams crossed a cut link", got)
	}
	if st := l.Stats(); st.Dropped[0] < 50 {
		t.Errorf("bridge counted %d drops while cut, want at least 50", st.Dropped[0])
	}
	l.Restore()
	if got := count(ua, ub, 50); got != 50 {
		t.Errorf("%d of 50 datagrams crossed the restored link", got)
	}
}

// TestLinkRate: the htb cap bounds a TCP transfer's rate.
func TestLinkRate(t *testing.T) {
	const rate = 8 << 20
	l := newLink(t, LinkOptions{Delay: 2 * time.Millisecond, Rate: rate})
	done := make(chan int64, 1)
	sink := listenTCP(t, l, B, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		done <- n
	})
	c := dialTCP(t, l, A, sink)
	const size = 6 << 20
	start := time.Now()
	if _, err := io.Copy(c, io.LimitReader(zeros{}, size)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if n := <-done; n != size {
		t.Fatalf("received %d bytes, sent %d", n, size)
	}
	d := time.Since(start)
	// IP and TCP headers add about 3% at this MTU.
	within(t, "6 MiB at 8 MiB/s", d, 700*time.Millisecond, 1500*time.Millisecond)
	t.Logf("6 MiB through an 8 MiB/s link in %v (%.1f MiB/s)", d, size/d.Seconds()/(1<<20))

	if err := l.Set(LinkOptions{}); err != nil {
		t.Fatal(err)
	}
	if o := l.Options(); o.Rate != 0 || o.MTU != 1500 {
		t.Errorf("options after Set: %+v", o)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestLinkRefusesBadOptions(t *testing.T) {
	if os.Geteuid() != 0 {
		if _, err := NewLink(LinkOptions{}); !errors.Is(err, ErrNeedRoot) {
			t.Fatalf("NewLink as non-root: %v, want ErrNeedRoot", err)
		}
		return
	}
	if _, err := NewLink(LinkOptions{MTU: 100}); err == nil {
		t.Error("MTU 100 accepted")
	}
	l := newLink(t, LinkOptions{})
	for _, o := range []LinkOptions{{Loss: 1.5}, {Loss: -0.1}, {Delay: -time.Second}, {Rate: -1}} {
		if err := l.Set(o); err == nil {
			t.Errorf("Set(%+v) accepted", o)
		}
	}
	var b bytes.Buffer
	c := l.Command(t.Context(), A, "ip", "-o", "addr", "show", "dev", "tun0")
	c.Stdout = &b
	if err := c.Run(); err != nil || !bytes.Contains(b.Bytes(), []byte(l.Addr(A).String())) {
		t.Errorf("ip addr in side A: %v %q", err, b.String())
	}
}
