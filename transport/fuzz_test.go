package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// seedFrame is a real frame of the fuzz corpus and the name of its file
// under testdata/fuzz/FuzzReadFrame.
type seedFrame struct {
	name  string
	frame []byte
}

// seedFrames are real frames of every type for the fuzz corpus.
func seedFrames() []seedFrame {
	var out []seedFrame
	add := func(name string, t FrameType, p []byte) {
		var b bytes.Buffer
		WriteFrame(&b, t, p)
		out = append(out, seedFrame{name, b.Bytes()})
	}
	add("hello", FrameHello, Hello{Purpose: PurposeReplicate, RepoID: id.Hash([]byte("r")), Program: "drpipe 1"}.encode())
	add("hello-join", FrameHello, Hello{Purpose: PurposeJoin, RepoID: id.Hash([]byte("r")), Session: SessionID{1, 2, 3}, Program: "drpipe 1"}.encode())
	add("welcome", FrameWelcome, Welcome{RepoID: id.Hash([]byte("r")), SiteName: "dr", MaxObjectSize: 1 << 31, Session: SessionID{9: 7}}.encode())
	add("offer", FrameOffer, Offer{Type: tiers.TypeData, Entries: []OfferEntry{{id.Hash(nil).String() + "-3", 4242}, {"x", 1}}}.encode())
	add("want", FrameWant, Want{Want: []bool{true, false, true, true, false, false, false, false, true}}.encode())
	add("seal", FrameSeal, Seal{Type: tiers.TypeIndex}.encode())
	add("sealed", FrameSealed, Sealed{Type: tiers.TypeSnapshot}.encode())
	add("put-snapshot-meta", FramePut, Put{Type: tiers.TypeSnapshot, Name: id.Hash(nil).String(), Size: 77, Meta: &SnapshotMeta{Host: "hv01", Time: time.Unix(1700000000, 5)}}.encode())
	add("put-config", FramePut, Put{Type: tiers.TypeConfig, Name: "config", Size: 300}.encode())
	add("putresult", FramePutResult, PutResult{Code: CodeVerify, Message: "no"}.encode())
	add("error", FrameError, encodeError(CodeBadName, "bad"))
	add("status-request", FrameStatusRequest, nil)
	add("status-reply", FrameStatusReply, []byte(`{"hosts":[]}`))
	add("bye", FrameBye, nil)
	add("hello-read", FrameHello, Hello{Purpose: PurposeRead, Program: "drpipe restore"}.encode())
	add("list", FrameList, List{Type: tiers.TypeSnapshot}.encode())
	add("listpage", FrameListPage, ListPage{Entries: []OfferEntry{{id.Hash(nil).String(), 512}, {"config", 300}}}.encode())
	add("listpage-done", FrameListPage, ListPage{Done: true}.encode())
	add("get", FrameGet, Get{Type: tiers.TypeData, Name: id.Hash(nil).String() + "-1", Offset: 4096, Length: 8192}.encode())
	add("get-head-bad-name", FrameGet, Get{Type: tiers.TypeKey, Name: "../../etc/passwd", Head: true}.encode())
	add("getreply", FrameGetReply, GetReply{Size: 1 << 20, ModTime: time.Unix(1700000000, 9), Length: 8192}.encode())
	return out
}

// TestFuzzCorpusHoldsSeedFrames: the stored corpus, which fuzzing starts
// from, has every seed frame as written by TestWriteFuzzSeeds.
func TestFuzzCorpusHoldsSeedFrames(t *testing.T) {
	for _, s := range seedFrames() {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzReadFrame", s.name))
		if err != nil || string(b) != fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.frame) {
			t.Errorf("corpus file %s does not hold its seed frame (%v): run DRPIPE_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./transport", s.name, err)
		}
	}
}

// TestWriteFuzzSeeds writes the seed frames to the corpus under
// testdata/fuzz when DRPIPE_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("DRPIPE_WRITE_SEEDS") == "" {
		t.Skip("set DRPIPE_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReadFrame")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range seedFrames() {
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.frame)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader and the message
// decoders: they must never panic or allocate beyond the limits, every
// failure must be classified, and every accepted message must re-encode
// to exactly the bytes it came from.
func FuzzReadFrame(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s.frame)
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
