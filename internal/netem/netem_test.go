package netem

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

func udpEcho(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, a, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], a)
		}
	}()
	return c.LocalAddr().String()
}

func TestUDPDelayLossCut(t *testing.T) {
	p, err := NewUDP("127.0.0.1:0", udpEcho(t), Impairment{Delay: 25 * time.Millisecond}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("udp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 100)
	start := time.Now()
	c.Write([]byte("ping"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 50*time.Millisecond || rtt > time.Second {
		t.Errorf("RTT %v through a 25 ms each-way link, want about 50 ms (at most a second on a busy machine)", rtt)
	}

	// 10% loss each way: about 19% of round trips fail.
	p.Set(Impairment{Loss: 0.10})
	got := 0
	const n = 2000
	c.(*net.UDPConn).SetReadBuffer(4 << 20)
	for i := 0; i < n; i++ {
		c.Write([]byte{byte(i), byte(i >> 8)})
		if i%50 == 49 {
			time.Sleep(5 * time.Millisecond) // stay clear of socket buffer drops
		}
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
		got++
	}
	if frac := 1 - float64(got)/n; frac < 0.14 || frac > 0.25 {
		t.Errorf("lost %.1f%% of round trips at 10%% loss each way, want about 19%%", 100*frac)
	}

	p.Set(Impairment{})
	p.Cut()
	c.Write([]byte("cut"))
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(buf); err == nil {
		t.Error("datagram crossed a cut link")
	}
	p.Restore()
	c.Write([]byte("back"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Errorf("after Restore: %v", err)
	}
}

func TestTCPDelayRateCut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	const rate = 4 << 20
	p, err := NewTCP("127.0.0.1:0", ln.Addr().String(), Impairment{Delay: 20 * time.Millisecond, Rate: rate}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("x"))
	one := make([]byte, 1)
	io.ReadFull(c, one)
	if rtt := time.Since(start); rtt < 40*time.Millisecond {
		t.Errorf("RTT %v, want >= 40 ms", rtt)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 2<<20/16)
	start = time.Now()
	go c.Write(data)
	back := make([]byte, len(data))
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if !bytes.Equal(back, data) {
		t.Fatal("data changed in transit")
	}
	if min := time.Duration(float64(len(data)) / rate * float64(time.Second)); el < min {
		t.Errorf("2 MiB echoed in %v at a 4 MiB/s cap, want >= %v", el, min)
	}
	p.Cut()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(one); err == nil {
		t.Error("connection survived a cut")
	}
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		c2.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c2.Read(one); err == nil {
			t.Error("new connection served during a cut")
		}
		c2.Close()
	}
}
