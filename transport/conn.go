package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"time"
)

// ErrStreamAborted is matched (errors.Is) by the error of a Stream's Read
// or Write when the peer aborted the stream: reset it, or stopped reading
// it. A stream whose connection ended, closed by either end or lost,
// fails with an error matching net.ErrClosed instead.
var ErrStreamAborted = errors.New("stream aborted by the peer")

// Stream is one ordered, reliable byte stream of a Conn, in both
// directions. One goroutine may read while another writes; otherwise it
// is used by one goroutine at a time (Abort and SetDeadline may be called
// from any goroutine).
type Stream interface {
	io.Reader
	io.Writer
	// CloseWrite ends the sending direction: the peer's reads return
	// io.EOF once it has read everything sent before.
	CloseWrite() error
	// CancelRead stops receiving: the peer's pending and later writes
	// fail, while what this end already wrote is still delivered. The
	// site uses it to refuse an object without reading its body.
	CancelRead()
	// Abort resets both directions: pending and later reads and writes
	// on either end fail. Used on errors.
	Abort()
	// SetDeadline bounds the next reads and writes; the zero time clears
	// it.
	SetDeadline(t time.Time) error
}

// Conn is an authenticated connection between a primary (the side that
// opens streams) and the site (the side that accepts them). It is safe
// for concurrent use.
type Conn interface {
	// OpenStream opens a new stream to the peer.
	OpenStream(ctx context.Context) (Stream, error)
	// AcceptStream waits for the next stream the peer opens.
	AcceptStream(ctx context.Context) (Stream, error)
	// Peer is the authenticated name of the remote end: the common name
	// of its verified certificate.
	Peer() string
	// RemoteAddr is the peer's network address, for logs.
	RemoteAddr() net.Addr
	// CloseWithError closes the connection, telling the peer code and
	// msg where the transport can.
	CloseWithError(code ErrorCode, msg string) error
}

// Listener accepts authenticated connections at the site.
type Listener interface {
	// Accept waits for the next connection whose handshake (including
	// client certificate verification) has completed.
	Accept(ctx context.Context) (Conn, error)
	Addr() net.Addr
	Close() error
}

// WireStats is implemented by Conns that can tell how many bytes they put
// on the network, retransmissions and protocol overhead included, and how
// many of the sent bytes were declared lost (and so sent again).
type WireStats interface {
	WireBytes() (sent, received, lost uint64)
}
