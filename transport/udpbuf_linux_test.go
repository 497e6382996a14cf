package transport

import (
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUDPBuffers: the QUIC sockets get the buffers long fast links need,
// or a warning that names the sysctl to raise.
func TestUDPBuffers(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := sizeUDPBuffers(c)
	rc, _ := c.SyscallConn()
	var rcv, snd int
	rc.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	t.Logf("receive buffer %d KiB, send buffer %d KiB, warning %q", rcv>>10, snd>>10, msg)
	switch {
	case rcv >= WantUDPBuffer && snd >= WantUDPBuffer:
		if msg != "" {
			t.Errorf("warned %q with both buffers large enough", msg)
		}
	case msg == "":
		t.Errorf("buffers of %d/%d bytes (want %d) without a warning", rcv, snd, WantUDPBuffer)
	default:
		for _, want := range []string{"net.core.rmem_max", "sysctl -w"} {
			if !strings.Contains(msg, want) {
				t.Errorf("warning %q does not mention %s", msg, want)
			}
		}
	}
	if os.Geteuid() == 0 && msg != "" {
		t.Errorf("as root the buffers are forced past the caps, yet: %s", msg)
	}
}
