//go:build !linux

package transport

import "net"

// sizeUDPBuffers asks for WantUDPBuffer in both directions; this platform
// offers no reliable way to read back what was granted, so it never
// warns.
func sizeUDPBuffers(c *net.UDPConn) string {
	_ = c.SetReadBuffer(WantUDPBuffer)
	_ = c.SetWriteBuffer(WantUDPBuffer)
	return ""
}
