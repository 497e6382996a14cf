package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// ProtocolVersion is the wire protocol version this drpipe speaks. It is
// carried in every frame header and in the ALPN name; versions are never
// reused. Version 1 (one connection per session) is retired: version 2
// added the session id to Hello and Welcome and the Join purpose, so that
// a primary can spread one session over several connections.
const ProtocolVersion = 2

// ALPN is the TLS application protocol negotiated on QUIC connections.
const ALPN = "drpipe-site/2"

// Frame layout and limits.
const (
	// FrameHeaderSize is the length of a frame header: version u8, type
	// u8, payload length u32 (big-endian).
	FrameHeaderSize = 6
	// MaxFramePayload bounds every frame payload. Object bodies are not
	// frames: they follow a Put frame as raw bytes of the declared size.
	MaxFramePayload = 1 << 20
	// MaxOfferBatch bounds the number of entries in one Offer.
	MaxOfferBatch = 8192
	// DefaultWindow is the number of data objects a client offers at a
	// time (ReplicateOptions.Window).
	DefaultWindow = 8 * MaxOfferBatch
	// MaxOutstanding is the default bound on the objects a session has
	// been offered and wants but has not received yet; a site refuses
	// offers beyond it (its memory holds their names).
	MaxOutstanding = 1 << 20
	// MaxMessageText bounds error messages and other free text.
	MaxMessageText = 4096
	// MaxHostName bounds the host name in snapshot metadata.
	MaxHostName = 255
)

// FrameType identifies a message. Values are part of the wire format and
// never reused.
type FrameType uint8

// Frame types of protocol version 1.
const (
	FrameHello         FrameType = 0x01
	FrameWelcome       FrameType = 0x02
	FrameOffer         FrameType = 0x03
	FrameWant          FrameType = 0x04
	FrameSeal          FrameType = 0x05
	FrameSealed        FrameType = 0x06
	FramePut           FrameType = 0x07
	FramePutResult     FrameType = 0x08
	FrameStatusRequest FrameType = 0x09
	FrameStatusReply   FrameType = 0x0a
	FrameError         FrameType = 0x0b
	FrameBye           FrameType = 0x0c
)

// Frame types of the read capability (Hello purpose read, see doc.go):
// the first frame of a read stream is List or Get. Older sites of
// version 2 refuse the purpose, so they never see these frames.
const (
	FrameList     FrameType = 0x0d // C→S: list the objects of a type
	FrameListPage FrameType = 0x0e // S→C: a page of names and sizes; the last says Done
	FrameGet      FrameType = 0x0f // C→S: an object or a byte range of it (or only its size)
	FrameGetReply FrameType = 0x10 // S→C: object size and range length; the range's raw bytes follow
)

var frameNames = map[FrameType]string{
	FrameHello: "Hello", FrameWelcome: "Welcome", FrameOffer: "Offer", FrameWant: "Want",
	FrameSeal: "Seal", FrameSealed: "Sealed", FramePut: "Put", FramePutResult: "PutResult",
	FrameStatusRequest: "StatusRequest", FrameStatusReply: "StatusReply", FrameError: "Error", FrameBye: "Bye",
	FrameList: "List", FrameListPage: "ListPage", FrameGet: "Get", FrameGetReply: "GetReply",
}

// String names the frame type for messages.
func (t FrameType) String() string {
	if n, ok := frameNames[t]; ok {
		return n
	}
	return fmt.Sprintf("FrameType(0x%02x)", uint8(t))
}

// ErrProtocol is wrapped by every error about malformed or unexpected
// frames received from the peer.
var ErrProtocol = errors.New("drpipe site protocol error")

// Frame is one decoded frame.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// WriteFrame writes one frame. The payload must not exceed
// MaxFramePayload.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxFramePayload {
		return fmt.Errorf("write %s frame: payload of %d bytes exceeds %d", t, len(payload), MaxFramePayload)
	}
	buf := make([]byte, FrameHeaderSize+len(payload))
	buf[0] = ProtocolVersion
	buf[1] = byte(t)
	binary.BigEndian.PutUint32(buf[2:6], uint32(len(payload)))
	copy(buf[FrameHeaderSize:], payload)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write %s frame: %w", t, err)
	}
	return nil
}

// ReadFrame reads one frame. It rejects frames of another protocol
// version, unknown types and payloads longer than MaxFramePayload before
// reading the payload, so a peer cannot make it allocate more than that.
// A stream that ends cleanly before the first header byte returns io.EOF;
// one that ends inside a frame returns io.ErrUnexpectedEOF (wrapped).
func ReadFrame(r io.Reader) (Frame, error) {
	var h [FrameHeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("read frame header: %w", err)
	}
	if h[0] != ProtocolVersion {
		return Frame{}, fmt.Errorf("%w: frame of protocol version %d, this drpipe speaks %d (upgrade the older side)", ErrProtocol, h[0], ProtocolVersion)
	}
	t := FrameType(h[1])
	if _, ok := frameNames[t]; !ok {
		return Frame{}, fmt.Errorf("%w: unknown frame type 0x%02x", ErrProtocol, h[1])
	}
	n := binary.BigEndian.Uint32(h[2:6])
	if n > MaxFramePayload {
		return Frame{}, fmt.Errorf("%w: %s frame announces %d payload bytes, limit %d", ErrProtocol, t, n, MaxFramePayload)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("read %s frame payload (%d bytes): %w", t, n, err)
	}
	return Frame{Type: t, Payload: p}, nil
}

// encoder appends primitive values to a payload.
type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) bytes(v []byte) {
	e.b = append(e.b, v...)
}

// str writes a u16 length and the bytes, clipped to max at a UTF-8
// character boundary (so that valid text stays valid).
func (e *encoder) str(s string, max int) {
	if len(s) > max {
		for max > 0 && !utf8.RuneStart(s[max]) {
			max--
		}
		s = s[:max]
	}
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}

// decoder reads primitive values from a payload; the first error sticks.
type decoder struct {
	b   []byte
	off int
	err error
	ctx string
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s payload offset %d: %s", ErrProtocol, d.ctx, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.fail("truncated: need %d bytes, have %d", n, len(d.b)-d.off)
		return nil
	}
	v := d.b[d.off : d.off+n]
	d.off += n
	return v
}

func (d *decoder) u8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) str(max int) string {
	n := int(d.u16())
	if d.err == nil && n > max {
		d.fail("string of %d bytes exceeds %d", n, max)
		return ""
	}
	return string(d.take(n))
}

// done checks that the payload was consumed exactly.
func (d *decoder) done() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}
