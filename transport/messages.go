package transport

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// Replicated object classes in transfer (and seal) order, with their wire
// codes. Tombstones (prune bookkeeping of the primary) are not replicated.
var phaseTypes = []tiers.Type{tiers.TypeConfig, tiers.TypeKey, tiers.TypeData, tiers.TypeIndex, tiers.TypeSnapshot}

func typeCode(t tiers.Type) (uint8, bool) {
	for i, x := range phaseTypes {
		if x == t {
			return uint8(i + 1), true
		}
	}
	return 0, false
}

func typeOf(d *decoder) tiers.Type {
	c := d.u8()
	if d.err != nil {
		return ""
	}
	if c < 1 || int(c) > len(phaseTypes) {
		d.fail("unknown object type code %d", c)
		return ""
	}
	return phaseTypes[c-1]
}

func putType(e *encoder, t tiers.Type) {
	c, ok := typeCode(t)
	if !ok {
		panic("transport: object type " + string(t) + " is not replicated") // programming error
	}
	e.u8(c)
}

// Session purposes announced in Hello.
const (
	PurposeReplicate uint8 = 1 // start a session: offer and send objects
	PurposeStatus    uint8 = 2 // only ask for status
	// PurposeJoin adds this connection to the running replicate session
	// named by Hello.Session (same primary, same repository): objects
	// sent on it count for that session. Since protocol version 2.
	PurposeJoin uint8 = 3
	// PurposeRead opens a read-only session: the client lists and fetches
	// committed objects on read streams (List, Get) and sends nothing to
	// store. An optional capability of version 2: a site that predates
	// it refuses the purpose ("unknown purpose 4"), which the client
	// reports as a site too old to serve reads.
	PurposeRead uint8 = 4
)

// SessionID names a replicate session at the site so that further
// connections of the same primary can join it. The site draws it at
// random; the zero value names no session.
type SessionID [16]byte

// IsZero reports whether s names no session.
func (s SessionID) IsZero() bool { return s == SessionID{} }

// Hello opens a session (client → site).
type Hello struct {
	Purpose uint8
	// RepoID is the client repository's id (zero for status sessions).
	RepoID id.ID
	// Session is the session to join (PurposeJoin only; zero otherwise).
	Session SessionID
	Program string // client software, for logs
}

func (m Hello) encode() []byte {
	var e encoder
	e.u16(ProtocolVersion)
	e.u8(m.Purpose)
	e.bytes(m.RepoID[:])
	e.bytes(m.Session[:])
	e.str(m.Program, 256)
	return e.b
}

func decodeHello(p []byte) (Hello, error) {
	d := decoder{b: p, ctx: "Hello"}
	var m Hello
	if v := d.u16(); d.err == nil && v != ProtocolVersion {
		d.fail("protocol version %d, want %d", v, ProtocolVersion)
	}
	m.Purpose = d.u8()
	if d.err == nil && m.Purpose != PurposeReplicate && m.Purpose != PurposeStatus && m.Purpose != PurposeJoin && m.Purpose != PurposeRead {
		d.fail("unknown purpose %d", m.Purpose)
	}
	copy(m.RepoID[:], d.take(32))
	copy(m.Session[:], d.take(len(m.Session)))
	if d.err == nil && (m.Purpose == PurposeJoin) == m.Session.IsZero() {
		d.fail("purpose %d with session %x: a session is named exactly when joining", m.Purpose, m.Session)
	}
	m.Program = d.str(256)
	return m, d.done()
}

// Welcome answers Hello (site → client).
type Welcome struct {
	// RepoID is the id of the repository the site holds (zero if it holds
	// none yet).
	RepoID        id.ID
	SiteName      string
	MaxObjectSize uint64
	// Session names the replicate session this connection started or
	// joined (zero for status sessions); further connections join it.
	Session SessionID
}

func (m Welcome) encode() []byte {
	var e encoder
	e.u16(ProtocolVersion)
	e.bytes(m.RepoID[:])
	e.str(m.SiteName, 256)
	e.u64(m.MaxObjectSize)
	e.bytes(m.Session[:])
	return e.b
}

func decodeWelcome(p []byte) (Welcome, error) {
	d := decoder{b: p, ctx: "Welcome"}
	var m Welcome
	if v := d.u16(); d.err == nil && v != ProtocolVersion {
		d.fail("protocol version %d, want %d", v, ProtocolVersion)
	}
	copy(m.RepoID[:], d.take(32))
	m.SiteName = d.str(256)
	m.MaxObjectSize = d.u64()
	copy(m.Session[:], d.take(len(m.Session)))
	return m, d.done()
}

// OfferEntry is one object the client holds.
type OfferEntry struct {
	Name string
	Size int64
}

// Offer lists objects of one type the client holds (client → site).
type Offer struct {
	Type    tiers.Type
	Entries []OfferEntry
}

func (m Offer) encode() []byte {
	var e encoder
	putType(&e, m.Type)
	e.u32(uint32(len(m.Entries)))
	for _, x := range m.Entries {
		e.str(x.Name, 255)
		e.u64(uint64(x.Size))
	}
	return e.b
}

func decodeOffer(p []byte) (Offer, error) {
	d := decoder{b: p, ctx: "Offer"}
	var m Offer
	m.Type = typeOf(&d)
	n := d.u32()
	if d.err == nil && n > MaxOfferBatch {
		d.fail("%d entries, limit %d", n, MaxOfferBatch)
	}
	if d.err == nil {
		m.Entries = make([]OfferEntry, 0, min(n, uint32(len(p)/10)))
	}
	for i := uint32(0); i < n && d.err == nil; i++ {
		name := d.str(255)
		size := d.u64()
		if d.err == nil && size > math.MaxInt64 {
			d.fail("entry %d: size %d out of range", i, size)
		}
		m.Entries = append(m.Entries, OfferEntry{Name: name, Size: int64(size)})
	}
	return m, d.done()
}

// Want answers an Offer: Want[i] says the site lacks entry i.
type Want struct {
	Want []bool
}

func (m Want) encode() []byte {
	var e encoder
	e.u32(uint32(len(m.Want)))
	bm := make([]byte, (len(m.Want)+7)/8)
	for i, w := range m.Want {
		if w {
			bm[i/8] |= 1 << (i % 8)
		}
	}
	e.bytes(bm)
	return e.b
}

func decodeWant(p []byte) (Want, error) {
	d := decoder{b: p, ctx: "Want"}
	n := d.u32()
	if d.err == nil && n > MaxOfferBatch {
		d.fail("%d entries, limit %d", n, MaxOfferBatch)
	}
	bm := d.take(int((n + 7) / 8))
	var m Want
	if d.err == nil {
		m.Want = make([]bool, n)
		for i := range m.Want {
			m.Want[i] = bm[i/8]&(1<<(i%8)) != 0
		}
		// Padding bits must be zero (one encoding per message).
		if n%8 != 0 && bm[len(bm)-1]>>(n%8) != 0 {
			d.fail("non-zero padding bits")
		}
	}
	return m, d.done()
}

// Seal declares that the client has offered every object of Type it holds
// and sent every one the site wanted (client → site).
type Seal struct{ Type tiers.Type }

func (m Seal) encode() []byte {
	var e encoder
	putType(&e, m.Type)
	return e.b
}

func decodeSeal(p []byte) (Seal, error) {
	d := decoder{b: p, ctx: "Seal"}
	m := Seal{Type: typeOf(&d)}
	return m, d.done()
}

// Sealed confirms a Seal (site → client).
type Sealed struct{ Type tiers.Type }

func (m Sealed) encode() []byte { return Seal(m).encode() }

func decodeSealed(p []byte) (Sealed, error) {
	s, err := decodeSeal(p)
	return Sealed(s), err
}

// SnapshotMeta is what the client asserts about a snapshot it sends: the
// site cannot decrypt the snapshot to check it.
type SnapshotMeta struct {
	Host string
	Time time.Time
}

// Put announces one object on an object stream; Size raw bytes follow
// (client → site).
type Put struct {
	Type tiers.Type
	Name string
	Size int64
	// Meta accompanies snapshot objects (nil when the client has none).
	Meta *SnapshotMeta
}

func (m Put) encode() []byte {
	var e encoder
	putType(&e, m.Type)
	e.str(m.Name, 255)
	e.u64(uint64(m.Size))
	if m.Meta == nil {
		e.u8(0)
	} else {
		e.u8(1)
		// The site reports the host in metrics and status, which need
		// valid UTF-8: a name that is not is sent with U+FFFD for its
		// invalid bytes.
		e.str(strings.ToValidUTF8(m.Meta.Host, "\uFFFD"), MaxHostName)
		e.u64(uint64(m.Meta.Time.UnixNano()))
	}
	return e.b
}

func decodePut(p []byte) (Put, error) {
	d := decoder{b: p, ctx: "Put"}
	var m Put
	m.Type = typeOf(&d)
	m.Name = d.str(255)
	size := d.u64()
	if d.err == nil && size > math.MaxInt64 {
		d.fail("size %d out of range", size)
	}
	m.Size = int64(size)
	switch f := d.u8(); {
	case d.err != nil:
	case f == 1:
		host := d.str(MaxHostName)
		if d.err == nil && !utf8.ValidString(host) {
			d.fail("snapshot host %q is not valid UTF-8", host)
		}
		ns := int64(d.u64())
		m.Meta = &SnapshotMeta{Host: host, Time: time.Unix(0, ns).UTC()}
	case f != 0:
		d.fail("meta flag %d, want 0 or 1", f)
	}
	return m, d.done()
}

// PutResult answers a Put (site → client). Code 0 means committed.
type PutResult struct {
	Code    ErrorCode
	Message string
}

func (m PutResult) encode() []byte {
	var e encoder
	e.u16(uint16(m.Code))
	e.str(m.Message, MaxMessageText)
	return e.b
}

func decodePutResult(p []byte) (PutResult, error) {
	d := decoder{b: p, ctx: "PutResult"}
	m := PutResult{Code: ErrorCode(d.u16())}
	m.Message = d.str(MaxMessageText)
	return m, d.done()
}

// ErrorCode classifies refusals on the wire.
type ErrorCode uint16

// Error codes of protocol version 1; never reused.
const (
	CodeOK           ErrorCode = 0
	CodeBadFrame     ErrorCode = 1 // malformed or unexpected frame
	CodeBadName      ErrorCode = 2 // object name not acceptable for its type
	CodeVerify       ErrorCode = 3 // object bytes do not match its name
	CodeOrder        ErrorCode = 4 // object class not allowed yet (seal order)
	CodeRepoMismatch ErrorCode = 5 // the site holds another repository
	CodeTooLarge     ErrorCode = 6 // object larger than the site accepts
	CodeInternal     ErrorCode = 7 // the site failed to store
	CodeUnsolicited  ErrorCode = 8 // object was not offered or not wanted
	CodeIncomplete   ErrorCode = 9 // Seal with objects still outstanding
	CodeShutdown     ErrorCode = 10
	CodeNoSession    ErrorCode = 11 // Join of a session that is not running (since version 2)
	CodeNotFound     ErrorCode = 12 // read: the site holds no such committed object
	CodeShortRead    ErrorCode = 13 // read: the range lies beyond the object's end
)

var codeNames = map[ErrorCode]string{
	CodeOK: "ok", CodeBadFrame: "bad frame", CodeBadName: "bad object name", CodeVerify: "verification failed",
	CodeOrder: "out of order", CodeRepoMismatch: "repository mismatch", CodeTooLarge: "object too large",
	CodeInternal: "site storage error", CodeUnsolicited: "unsolicited object", CodeIncomplete: "incomplete",
	CodeShutdown: "site shutting down", CodeNoSession: "no such session",
	CodeNotFound: "no such object", CodeShortRead: "range beyond the object",
}

// String names the code.
func (c ErrorCode) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// RemoteError is an error reported by the peer.
type RemoteError struct {
	Code    ErrorCode
	Message string
}

// Error implements error.
func (e *RemoteError) Error() string { return fmt.Sprintf("site refused (%s): %s", e.Code, e.Message) }

// errorFrame is the payload of an Error frame.
func encodeError(code ErrorCode, msg string) []byte {
	return PutResult{Code: code, Message: msg}.encode()
}

func decodeError(p []byte) (*RemoteError, error) {
	r, err := decodePutResult(p)
	if err != nil {
		return nil, err
	}
	return &RemoteError{Code: r.Code, Message: r.Message}, nil
}

// decodeAny decodes the payload of any frame type; the fuzz target and
// logging use it.
func decodeAny(f Frame) (any, error) {
	switch f.Type {
	case FrameHello:
		return decodeHello(f.Payload)
	case FrameWelcome:
		return decodeWelcome(f.Payload)
	case FrameOffer:
		return decodeOffer(f.Payload)
	case FrameWant:
		return decodeWant(f.Payload)
	case FrameSeal:
		return decodeSeal(f.Payload)
	case FrameSealed:
		return decodeSealed(f.Payload)
	case FramePut:
		return decodePut(f.Payload)
	case FramePutResult:
		return decodePutResult(f.Payload)
	case FrameError:
		return decodeError(f.Payload)
	case FrameStatusRequest, FrameBye:
		if len(f.Payload) != 0 {
			return nil, fmt.Errorf("%w: %s frame with %d payload bytes, want none", ErrProtocol, f.Type, len(f.Payload))
		}
		return nil, nil
	case FrameStatusReply:
		return f.Payload, nil
	case FrameList:
		return decodeList(f.Payload)
	case FrameListPage:
		return decodeListPage(f.Payload)
	case FrameGet:
		return decodeGet(f.Payload)
	case FrameGetReply:
		return decodeGetReply(f.Payload)
	}
	return nil, fmt.Errorf("%w: unknown frame type %s", ErrProtocol, f.Type)
}

// MaxListPage bounds the entries of one ListPage.
const MaxListPage = MaxOfferBatch

// List asks for every committed object of Type (client → site, first
// frame of a read stream). The site answers with ListPage frames, the
// last of which has Done set, and closes the stream.
type List struct{ Type tiers.Type }

func (m List) encode() []byte { return Seal(m).encode() }

func decodeList(p []byte) (List, error) {
	d := decoder{b: p, ctx: "List"}
	m := List{Type: typeOf(&d)}
	return m, d.done()
}

// ListPage carries up to MaxListPage names and sizes (site → client).
type ListPage struct {
	Entries []OfferEntry
	Done    bool // no page follows
}

func (m ListPage) encode() []byte {
	var e encoder
	if m.Done {
		e.u8(1)
	} else {
		e.u8(0)
	}
	e.bytes(Offer{Type: tiers.TypeConfig, Entries: m.Entries}.encode()[1:])
	return e.b
}

func decodeListPage(p []byte) (ListPage, error) {
	d := decoder{b: p, ctx: "ListPage"}
	var m ListPage
	switch f := d.u8(); {
	case d.err != nil:
	case f == 1:
		m.Done = true
	case f != 0:
		d.fail("done flag %d, want 0 or 1", f)
	}
	if d.err != nil {
		return m, d.err
	}
	// The rest is an Offer's entry list.
	o, err := decodeOffer(append([]byte{1}, p[1:]...))
	if err != nil {
		return m, fmt.Errorf("%w (ListPage entries)", err)
	}
	m.Entries = o.Entries
	return m, nil
}

// Get asks for Length bytes of an object at Offset (Length 0: to the
// end), or with Head only for its size (client → site, first frame of a
// read stream).
type Get struct {
	Type           tiers.Type
	Name           string
	Offset, Length int64
	Head           bool
}

func (m Get) encode() []byte {
	var e encoder
	putType(&e, m.Type)
	e.str(m.Name, 255)
	e.u64(uint64(m.Offset))
	e.u64(uint64(m.Length))
	if m.Head {
		e.u8(1)
	} else {
		e.u8(0)
	}
	return e.b
}

func decodeGet(p []byte) (Get, error) {
	d := decoder{b: p, ctx: "Get"}
	var m Get
	m.Type = typeOf(&d)
	m.Name = d.str(255)
	off, n := d.u64(), d.u64()
	if d.err == nil && (off > math.MaxInt64 || n > math.MaxInt64) {
		d.fail("range %d+%d out of range", off, n)
	}
	m.Offset, m.Length = int64(off), int64(n)
	switch f := d.u8(); {
	case d.err != nil:
	case f == 1:
		m.Head = true
	case f != 0:
		d.fail("head flag %d, want 0 or 1", f)
	}
	return m, d.done()
}

// GetReply answers a Get (site → client): the object's size and
// modification time, and the length of the range whose raw bytes follow
// (0 for Head).
type GetReply struct {
	Size    int64
	ModTime time.Time
	Length  int64
}

func (m GetReply) encode() []byte {
	var e encoder
	e.u64(uint64(m.Size))
	e.u64(uint64(m.ModTime.UnixNano()))
	e.u64(uint64(m.Length))
	return e.b
}

func decodeGetReply(p []byte) (GetReply, error) {
	d := decoder{b: p, ctx: "GetReply"}
	var m GetReply
	size := d.u64()
	ns := int64(d.u64())
	n := d.u64()
	if d.err == nil && (size > math.MaxInt64 || n > size) {
		d.fail("range length %d of an object of %d bytes", n, size)
	}
	m.Size, m.ModTime, m.Length = int64(size), time.Unix(0, ns).UTC(), int64(n)
	return m, d.done()
}
