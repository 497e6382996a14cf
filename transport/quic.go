package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// This file is the only one that imports quic-go: it adapts quic.Conn and
// quic.Stream to Conn and Stream.

// QUICOptions tune the QUIC transport; zero values pick defaults suited to
// bulk replication over long fat links.
type QUICOptions struct {
	// IdleTimeout closes a connection without traffic (default 30s).
	IdleTimeout time.Duration
	// HandshakeTimeout bounds connection set-up (default 10s).
	HandshakeTimeout time.Duration
	// MaxStreams bounds concurrent streams a client may open (default 64).
	MaxStreams int64
	// Warn receives warnings about the local network set-up, such as UDP
	// socket buffers smaller than fast long links need (see
	// WantUDPBuffer); nil discards them. Once drpipe has warned, quic-go's
	// own warning about the same thing is switched off (by setting
	// QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING unless it is set).
	Warn func(msg string)
}

// WantUDPBuffer is the UDP receive and send buffer size the QUIC sockets
// ask for (quic-go's own target). Smaller buffers drop datagrams in
// bursts on fast links, which the congestion controller reads as loss.
const WantUDPBuffer = 7 << 20

// listenUDP opens the UDP socket of one QUIC transport and sizes its
// buffers (see sizeUDPBuffers).
func listenUDP(addr string, warn func(string)) (*net.UDPConn, error) {
	var ua *net.UDPAddr
	if addr != "" {
		var err error
		if ua, err = net.ResolveUDPAddr("udp", addr); err != nil {
			return nil, err
		}
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	if msg := sizeUDPBuffers(c); msg != "" && warn != nil {
		if _, set := os.LookupEnv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"); !set {
			os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
		}
		warnOnce.Do(func() { warn(msg) })
	}
	return c, nil
}

// warnOnce: the buffer warning is about the host, not the socket.
var warnOnce sync.Once

func (o QUICOptions) config() *quic.Config {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 64
	}
	return &quic.Config{
		HandshakeIdleTimeout:           o.HandshakeTimeout,
		MaxIdleTimeout:                 o.IdleTimeout,
		KeepAlivePeriod:                o.IdleTimeout / 3,
		MaxIncomingStreams:             o.MaxStreams,
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     2 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 4 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
	}
}

// ListenQUIC listens on the UDP address addr with the site's TLS
// configuration (see ServerTLS). Accept returns only connections whose
// client certificate was verified.
func ListenQUIC(addr string, tlsConf *tls.Config, o QUICOptions) (Listener, error) {
	tc := tlsConf.Clone()
	tc.NextProtos = []string{ALPN}
	udp, err := listenUDP(addr, o.Warn)
	if err != nil {
		return nil, fmt.Errorf("listen on udp %s: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	l, err := tr.Listen(tc, o.config())
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, fmt.Errorf("listen on udp %s: %w", addr, err)
	}
	return &quicListener{l: l, tr: tr, udp: udp}, nil
}

type quicListener struct {
	l   *quic.Listener
	tr  *quic.Transport
	udp *net.UDPConn
}

func (l *quicListener) Accept(ctx context.Context) (Conn, error) {
	c, err := l.l.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return newQUICConn(c), nil
}

func (l *quicListener) Addr() net.Addr { return l.l.Addr() }

func (l *quicListener) Close() error {
	err := l.l.Close()
	l.tr.Close()
	l.udp.Close()
	return err
}

// DialQUIC connects to the site at addr (host:port) with the primary's TLS
// configuration (see ClientTLS). It returns once the handshake has
// completed from the client's side; a site that refuses the client's
// certificate closes the connection, which makes the first exchange fail.
// Every connection has a UDP socket (and source port) of its own, so that
// several connections to one site are separate flows for the kernel and
// the network; the socket is closed with the connection.
func DialQUIC(ctx context.Context, addr string, tlsConf *tls.Config, o QUICOptions) (Conn, error) {
	tc := tlsConf.Clone()
	tc.NextProtos = []string{ALPN}
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to DR site %s: %w", addr, err)
	}
	udp, err := listenUDP("", o.Warn)
	if err != nil {
		return nil, fmt.Errorf("connect to DR site %s: open a UDP socket: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	c, err := tr.Dial(ctx, ra, tc, o.config())
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, fmt.Errorf("connect to DR site %s: %w", addr, err)
	}
	qc := newQUICConn(c)
	// Release the socket once the connection is over, however it ended.
	context.AfterFunc(c.Context(), func() {
		tr.Close()
		udp.Close()
	})
	return qc, nil
}

type quicConn struct {
	c    *quic.Conn
	peer string
}

func newQUICConn(c *quic.Conn) *quicConn {
	qc := &quicConn{c: c}
	if cs := c.ConnectionState().TLS.PeerCertificates; len(cs) > 0 {
		qc.peer = cs[0].Subject.CommonName
	}
	return qc
}

func (c *quicConn) OpenStream(ctx context.Context) (Stream, error) {
	s, err := c.c.OpenStreamSync(ctx)
	if err != nil {
		return nil, quicErr(err)
	}
	return &quicStream{s: s}, nil
}

func (c *quicConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := c.c.AcceptStream(ctx)
	if err != nil {
		return nil, quicErr(err)
	}
	return &quicStream{s: s}, nil
}

func (c *quicConn) Peer() string         { return c.peer }
func (c *quicConn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }
func (c *quicConn) WireBytes() (uint64, uint64, uint64) {
	st := c.c.ConnectionStats()
	return st.BytesSent, st.BytesReceived, st.BytesLost
}

func (c *quicConn) CloseWithError(code ErrorCode, msg string) error {
	return c.c.CloseWithError(quic.ApplicationErrorCode(code), msg)
}

// quicErr turns a connection closed by the site with an application error
// into a RemoteError, and a stream the peer reset or stopped reading into
// an error matching ErrStreamAborted. quic-go's errors of a connection
// that ended match net.ErrClosed already.
func quicErr(err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode != 0 {
		return fmt.Errorf("%w", &RemoteError{Code: ErrorCode(ae.ErrorCode), Message: ae.ErrorMessage})
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		return fmt.Errorf("%w: %w", ErrStreamAborted, err)
	}
	return err
}

type quicStream struct{ s *quic.Stream }

func (s *quicStream) Read(p []byte) (int, error) {
	n, err := s.s.Read(p)
	if err != nil && n == 0 {
		err = quicErr(err)
	}
	return n, err
}

func (s *quicStream) Write(p []byte) (int, error) {
	n, err := s.s.Write(p)
	if err != nil {
		err = quicErr(err)
	}
	return n, err
}

func (s *quicStream) CloseWrite() error { return s.s.Close() }

func (s *quicStream) CancelRead() { s.s.CancelRead(uint64ToCode(CodeUnsolicited)) }

func uint64ToCode(c ErrorCode) quic.StreamErrorCode { return quic.StreamErrorCode(c) }

func (s *quicStream) Abort() {
	s.s.CancelRead(1)
	s.s.CancelWrite(1)
}

func (s *quicStream) SetDeadline(t time.Time) error { return s.s.SetDeadline(t) }
