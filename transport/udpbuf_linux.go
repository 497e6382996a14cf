package transport

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// sizeUDPBuffers raises the receive and send buffers of c to
// WantUDPBuffer: with setsockopt, which the kernel caps at
// net.core.rmem_max / wmem_max, then, where that falls short, with
// SO_RCVBUFFORCE / SO_SNDBUFFORCE, which privileged processes
// (CAP_NET_ADMIN) may use beyond the caps. It returns a warning for the
// operator when a buffer stays smaller, and "" otherwise.
func sizeUDPBuffers(c *net.UDPConn) string {
	rc, err := c.SyscallConn()
	if err != nil {
		return ""
	}
	var msgs []string
	for _, b := range []struct {
		name       string
		opt, force int
		sysctl     string
		set        func(int) error
	}{
		{"receive", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, "net.core.rmem_max", c.SetReadBuffer},
		{"send", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, "net.core.wmem_max", c.SetWriteBuffer},
	} {
		get := func() int {
			var v int
			rc.Control(func(fd uintptr) {
				v, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, b.opt)
			})
			if err != nil {
				return -1
			}
			return v // the kernel reports twice what was set (bookkeeping)
		}
		if get() >= WantUDPBuffer {
			continue
		}
		_ = b.set(WantUDPBuffer)
		if get() < WantUDPBuffer {
			rc.Control(func(fd uintptr) {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, b.force, WantUDPBuffer)
			})
		}
		if got := get(); got >= 0 && got < WantUDPBuffer {
			msgs = append(msgs, fmt.Sprintf("%s buffer %d KiB (%s caps it)", b.name, got>>10, b.sysctl))
		}
	}
	if len(msgs) == 0 {
		return ""
	}
	return fmt.Sprintf("QUIC UDP socket: %v, want %d KiB: fast long links will lose datagrams and slow down; "+
		"raise the caps with 'sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d' (persist in /etc/sysctl.d/)",
		msgs, WantUDPBuffer>>10, WantUDPBuffer, WantUDPBuffer)
}
