package transport

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// seedFrames are real frames of every type for the fuzz corpus.
func seedFrames() [][]byte {
	var out [][]byte
	add := func(t FrameType, p []byte) {
		var b bytes.Buffer
		WriteFrame(&b, t, p)
		out = append(out, b.Bytes())
	}
	add(FrameHello, Hello{Purpose: PurposeReplicate, RepoID: id.Hash([]byte("r")), Program: "drpipe 1"}.encode())
	add(FrameHello, Hello{Purpose: PurposeJoin, RepoID: id.Hash([]byte("r")), Session: SessionID{1, 2, 3}, Program: "drpipe 1"}.encode())
	add(FrameWelcome, Welcome{RepoID: id.Hash([]byte("r")), SiteName: "dr", MaxObjectSize: 1 << 31, Session: SessionID{9: 7}}.encode())
	add(FrameOffer, Offer{Type: tiers.TypeData, Entries: []OfferEntry{{id.Hash(nil).String() + "-3", 4242}, {"x", 1}}}.encode())
	add(FrameWant, Want{Want: []bool{true, false, true, true, false, false, false, false, true}}.encode())
	add(FrameSeal, Seal{Type: tiers.TypeIndex}.encode())
	add(FrameSealed, Sealed{Type: tiers.TypeSnapshot}.encode())
	add(FramePut, Put{Type: tiers.TypeSnapshot, Name: id.Hash(nil).String(), Size: 77, Meta: &SnapshotMeta{Host: "hv01", Time: time.Unix(1700000000, 5)}}.encode())
	add(FramePut, Put{Type: tiers.TypeConfig, Name: "config", Size: 300}.encode())
	add(FramePutResult, PutResult{Code: CodeVerify, Message: "no"}.encode())
	add(FrameError, encodeError(CodeBadName, "bad"))
	add(FrameStatusRequest, nil)
	add(FrameStatusReply, []byte(`{"hosts":[]}`))
	add(FrameBye, nil)
	add(FrameHello, Hello{Purpose: PurposeRead, Program: "drpipe restore"}.encode())
	add(FrameList, List{Type: tiers.TypeSnapshot}.encode())
	add(FrameListPage, ListPage{Entries: []OfferEntry{{id.Hash(nil).String(), 512}, {"config", 300}}}.encode())
	add(FrameListPage, ListPage{Done: true}.encode())
	add(FrameGet, Get{Type: tiers.TypeData, Name: id.Hash(nil).String() + "-1", Offset: 4096, Length: 8192}.encode())
	add(FrameGet, Get{Type: tiers.TypeKey, Name: "../../etc/passwd", Head: true}.encode())
	add(FrameGetReply, GetReply{Size: 1 << 20, ModTime: time.Unix(1700000000, 9), Length: 8192}.encode())
	return out
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader and the message
// decoders: they must never panic or allocate beyond the limits, every
// failure must be classified, and every accepted message must re-encode
// to exactly the bytes it came from.
func FuzzReadFrame(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Add([]byte{ProtocolVersion, 3, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 1, 0, 0, 0, 0}) // retired version 1
	f.Add([]byte{ProtocolVersion + 1, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			fr, err := ReadFrame(r)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unclassified error: %v", err)
				}
				return
			}
			if len(fr.Payload) > MaxFramePayload {
				t.Fatalf("payload of %d bytes accepted", len(fr.Payload))
			}
			m, err := decodeAny(fr)
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("%s: unclassified decode error: %v", fr.Type, err)
				}
				continue
			}
			var again []byte
			switch v := m.(type) {
			case Hello:
				again = v.encode()
			case Welcome:
				again = v.encode()
			case Offer:
				if len(v.Entries) > MaxOfferBatch {
					t.Fatalf("offer of %d entries accepted", len(v.Entries))
				}
				again = v.encode()
			case Want:
				again = v.encode()
			case Seal:
				again = v.encode()
			case Sealed:
				again = v.encode()
			case Put:
				again = v.encode()
				if v.Meta != nil && len(v.Meta.Host) > MaxHostName {
					t.Fatalf("host of %d bytes accepted", len(v.Meta.Host))
				}
			case PutResult:
				again = v.encode()
			case List:
				again = v.encode()
			case ListPage:
				if len(v.Entries) > MaxListPage {
					t.Fatalf("list page of %d entries accepted", len(v.Entries))
				}
				again = v.encode()
			case Get:
				again = v.encode()
			case GetReply:
				if v.Length > v.Size {
					t.Fatalf("reply range %d beyond size %d accepted", v.Length, v.Size)
				}
				again = v.encode()
			case *RemoteError:
				again = encodeError(v.Code, v.Message)
			default:
				continue
			}
			if !bytes.Equal(again, fr.Payload) {
				t.Fatalf("%s: decoded %#v re-encodes to %x, want %x", fr.Type, m, again, fr.Payload)
			}
			// Decoding the re-encoding gives the same message.
			m2, err := decodeAny(Frame{Type: fr.Type, Payload: again})
			if err != nil || !reflect.DeepEqual(m, m2) {
				t.Fatalf("%s: round trip %#v -> %#v (%v)", fr.Type, m, m2, err)
			}
		}
	})
}
