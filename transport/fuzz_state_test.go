package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// FuzzSiteState feeds arbitrary site state files (the snapshot and client
// records under StateDirName) to the readers: loadSnapshotRecords at
// server start, computeStatus and addSession. They must never panic or
// fail on a bad record, must not accept invalid JSON, and what they accept
// must write back (writeJSON) to a file that reads as the same record.
func FuzzSiteState(f *testing.F) {
	// writeJSON fsyncs every file: use tmpfs when there is one so that
	// fuzzing is not bound by the disk.
	dir, err := os.MkdirTemp("/dev/shm", "drpipe-fuzz-state-")
	if err != nil {
		dir = f.TempDir()
	} else {
		f.Cleanup(func() { os.RemoveAll(dir) })
	}
	st, err := openState(dir, true)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.close() })
	ctx := context.Background()
	be := tierstest.NewMemory()
	snapID := id.Hash([]byte("snapshot"))
	if err := tiers.PutBytes(ctx, be, tiers.Handle{Type: tiers.TypeSnapshot, Name: snapID.String()}, []byte("sealed")); err != nil {
		f.Fatal(err)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	snapRel := "snapshots/" + snapID.String() + ".json"
	clientRel := "clients/primary.json"

	// Seeds are files written by the site itself.
	rec := SnapshotRecord{ID: snapID.String(), Host: "hv01", Time: now.Add(-time.Hour), AssertedBy: "client", Client: "primary",
		ReplicatedAt: now.Add(-time.Minute), SessionBytes: 1 << 30}
	if _, err := st.putSnapshot(rec, true); err != nil {
		f.Fatal(err)
	}
	if err := st.addSession("primary", now, 100, 3); err != nil {
		f.Fatal(err)
	}
	if got := st.loadSnapshotRecords(); len(got) != 1 || got[0] != rec {
		f.Fatalf("snapshot record round trip: %+v", got)
	}
	var seedSnap, seedClient []byte
	for rel, p := range map[string]*[]byte{snapRel: &seedSnap, clientRel: &seedClient} {
		if *p, err = os.ReadFile(filepath.Join(dir, StateDirName, filepath.FromSlash(rel))); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(seedSnap, seedClient)
	f.Add([]byte(`{"id":"nothex","host":"h"}`), []byte(`{"sessions":-1,"bytes_received":9223372036854775807}`))
	f.Add([]byte(`{"id":"`+snapID.String()+`","time":"0000-01-01T00:00:00Z"}`), []byte(`{"last_session":"2025-06-01T12:00:00+24:00"}`))
	f.Add([]byte(`[]`), []byte(`null`))
	f.Add([]byte{}, []byte(`{"name":"x"`))

	write := func(t *testing.T, rel string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, StateDirName, filepath.FromSlash(rel)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// rewrite writes v as the site does and checks that it reads back to
	// the same encoding.
	rewrite := func(t *testing.T, rel string, v, fresh any) {
		e1, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return // e.g. a time that parses but does not format
		}
		if err := st.writeJSON(rel, v); err != nil {
			t.Fatalf("write back %s: %v", rel, err)
		}
		if err := st.readJSON(rel, fresh); err != nil {
			t.Fatalf("written %s does not read: %v", rel, err)
		}
		if e2, _ := json.MarshalIndent(fresh, "", "  "); !bytes.Equal(e1, e2) {
			t.Fatalf("%s re-encoding is not stable:\n%s\n%s", rel, e1, e2)
		}
	}
	f.Fuzz(func(t *testing.T, snap, client []byte) {
		write(t, snapRel, snap)
		write(t, clientRel, client)

		var sr SnapshotRecord
		serr := st.readJSON(snapRel, &sr)
		if serr == nil && !json.Valid(snap) {
			t.Fatal("invalid JSON accepted as a snapshot record")
		}
		var cr ClientRecord
		cerr := st.readJSON(clientRel, &cr)
		if cerr == nil && !json.Valid(client) {
			t.Fatal("invalid JSON accepted as a client record")
		}

		recs := st.loadSnapshotRecords()
		if len(recs) > 1 || len(recs) == 1 && serr != nil {
			t.Fatalf("loaded %d records from one file (read error %v)", len(recs), serr)
		}
		for _, r := range recs {
			if _, err := id.Parse(r.ID); err != nil {
				t.Fatalf("record with bad id %q loaded", r.ID)
			}
		}
		s, err := computeStatus(ctx, be, st, now)
		if err != nil {
			t.Fatalf("status with a bad record: %v", err)
		}
		meta, clients := 0, 0
		if serr == nil && sr.ID == snapID.String() {
			meta = 1
		}
		if cerr == nil {
			clients = 1
		}
		if s.Snapshots != 1 || s.SnapshotsWithoutMeta != 1-meta || len(s.Hosts) != meta || len(s.Clients) != clients {
			t.Fatalf("status %+v for records %+v (%v), %+v (%v)", s, sr, serr, cr, cerr)
		}

		if serr == nil {
			rewrite(t, snapRel, sr, &SnapshotRecord{})
		}
		if cerr == nil {
			rewrite(t, clientRel, cr, &ClientRecord{})
			write(t, clientRel, client)
		}
		// A session always counts, even over an unreadable record.
		if err := st.addSession("primary", now, 10, 1); err != nil {
			t.Fatalf("add session over a bad record: %v", err)
		}
		var after ClientRecord
		if err := st.readJSON(clientRel, &after); err != nil {
			t.Fatalf("client record after a session: %v", err)
		}
		want := int64(1)
		if cerr == nil {
			want = cr.Sessions + 1
		}
		if after.Name != "primary" || after.Sessions != want {
			t.Fatalf("client record after a session: %+v (before %+v, %v)", after, cr, cerr)
		}
	})
}

// FuzzReadSession drives the site's read session (serveread.go) with
// arbitrary requests. The input is a sequence of streams, each a length
// byte and that many bytes the client writes before ending its side. The
// site must answer every stream that carries a well-formed List or Get
// exactly (the committed objects of the type; the bytes of the range
// asked for; an Error frame for what it cannot serve), may reset only
// streams whose request is malformed, must never list or serve a file
// that is not a committed object (hidden temporary files, names not in
// canonical form, the site's own state), must not hang, and must end
// the session on Bye.
func FuzzReadSession(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "site")
	be, err := tiers.NewLocal(dir)
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	held := map[tiers.Handle][]byte{}
	put := func(h tiers.Handle, b []byte) {
		if err := tiers.PutBytes(ctx, be, h, b); err != nil {
			f.Fatal(err)
		}
		held[h] = b
	}
	key := []byte("a key object")
	put(tiers.Handle{Type: tiers.TypeKey, Name: id.Hash(key).String()}, key)
	snap := []byte("a snapshot object")
	put(tiers.Handle{Type: tiers.TypeSnapshot, Name: id.Hash(snap).String()}, snap)
	big := make([]byte, 300<<10) // more than a stream's buffer
	for i := range big {
		big[i] = byte(i * 7)
	}
	shard := tiers.Handle{Type: tiers.TypeData, Name: id.Hash(big).String() + "-0"}
	put(shard, big)
	be.Close()
	// Files in the object directories that are not committed objects.
	for _, p := range []string{"keys/." + id.Hash(key).String() + ".tmp-1", "keys/" + strings.ToUpper(id.Hash(snap).String()), "snapshots/notes"} {
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(p)), []byte("not an object"), 0o600); err != nil {
			f.Fatal(err)
		}
	}
	s, err := NewServer(ctx, ServerOptions{Dir: dir, SiteName: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })

	frame := func(t FrameType, p []byte) []byte {
		var b bytes.Buffer
		WriteFrame(&b, t, p)
		return b.Bytes()
	}
	// streams joins requests into one input.
	streams := func(reqs ...[]byte) []byte {
		var out []byte
		for _, r := range reqs {
			out = append(out, byte(len(r)))
			out = append(out, r...)
		}
		return out
	}
	var seeds [][]byte
	for _, sf := range seedFrames() {
		if t := FrameType(sf.frame[1]); t == FrameList || t == FrameGet {
			seeds = append(seeds, sf.frame)
		}
	}
	for _, ty := range phaseTypes {
		seeds = append(seeds, frame(FrameList, List{Type: ty}.encode()))
	}
	names := make([]tiers.Handle, 0, len(held))
	for h := range held {
		names = append(names, h)
	}
	sort.Slice(names, func(i, j int) bool { return names[i].String() < names[j].String() })
	for _, h := range names {
		n := int64(len(held[h]))
		for _, g := range []Get{{Head: true}, {}, {Offset: 3, Length: 5}, {Offset: n}, {Offset: n - 1, Length: 2}, {Offset: n + 1}} {
			g.Type, g.Name = h.Type, h.Name
			seeds = append(seeds, frame(FrameGet, g.encode()))
		}
	}
	seeds = append(seeds, frame(FrameGet, Get{Type: tiers.TypeKey, Name: "." + id.Hash(key).String() + ".tmp-1"}.encode()),
		frame(FrameGet, Get{Type: tiers.TypeSnapshot, Name: "notes"}.encode()),
		frame(FrameOffer, Offer{Type: tiers.TypeKey}.encode()), frame(FrameBye, nil))
	for _, sd := range seeds {
		f.Add(streams(sd))
	}
	f.Add(streams(seeds...))
	f.Add(streams(seeds[0][:3], seeds[1], append(bytes.Clone(seeds[2]), 0xff)))

	f.Fuzz(func(t *testing.T, in []byte) {
		cc, sc, _ := pipePair("hv01", -1)
		served := make(chan error, 1)
		go func() { served <- s.ServeConn(ctx, sc) }()
		defer cc.CloseWithError(CodeOK, "")
		ctl, _, err := openSession(ctx, cc, Hello{Purpose: PurposeRead, Program: "fuzz"}, 10*time.Second)
		if err != nil {
			t.Fatalf("open read session: %v", err)
		}
		for n := 0; len(in) > 0 && n < 16; n++ {
			l := min(int(in[0]), len(in)-1)
			req := in[1 : 1+l]
			in = in[1+l:]
			checkReadStream(t, cc, req, held)
		}
		ctl.SetDeadline(time.Now().Add(10 * time.Second))
		if err := WriteFrame(ctl, FrameBye, nil); err != nil {
			t.Fatalf("Bye: %v", err)
		}
		ctl.CloseWrite()
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("session ended after Bye with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end 10s after Bye")
		}
	})
}

// checkReadStream sends req on a new read stream and checks the site's
// answer against the objects it holds.
func checkReadStream(t *testing.T, c Conn, req []byte, held map[tiers.Handle][]byte) {
	t.Helper()
	st, err := c.OpenStream(context.Background())
	if err != nil {
		t.Fatalf("open read stream: %v", err)
	}
	st.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Write(req); err != nil && !errors.Is(err, ErrStreamAborted) {
		t.Fatalf("write request: %v", err)
	}
	st.CloseWrite()
	// What a well-formed request asks for.
	var list *List
	var get *Get
	if rf, err := ReadFrame(bytes.NewReader(req)); err == nil {
		switch rf.Type {
		case FrameList:
			if m, err := decodeList(rf.Payload); err == nil {
				list = &m
			}
		case FrameGet:
			if m, err := decodeGet(rf.Payload); err == nil {
				get = &m
			}
		}
	}
	fr, err := ReadFrame(st)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("no answer to %x in 10s", req)
	}
	if err != nil {
		if list != nil || get != nil {
			t.Fatalf("well-formed request %x: stream failed: %v", req, err)
		}
		return // a malformed request may be reset
	}
	if fr.Type == FrameError {
		re, err := decodeError(fr.Payload)
		if err != nil {
			t.Fatalf("Error frame: %v", err)
		}
		if get != nil {
			h := tiers.Handle{Type: get.Type, Name: get.Name}
			b, ok := held[h]
			n := get.Length
			if n == 0 {
				n = int64(len(b)) - get.Offset
			}
			if ok && get.Offset <= int64(len(b)) && n <= int64(len(b))-get.Offset {
				t.Fatalf("Get %+v of a held object refused: %v", *get, re)
			}
		}
		if list != nil {
			t.Fatalf("List %s refused: %v", list.Type, re)
		}
		if _, err := ReadFrame(st); !errors.Is(err, io.EOF) {
			t.Fatalf("after the Error frame: %v, want the end of the stream", err)
		}
		return
	}
	switch {
	case list != nil:
		want := map[string]int64{}
		for h, b := range held {
			if h.Type == list.Type {
				want[h.Name] = int64(len(b))
			}
		}
		for {
			if fr.Type != FrameListPage {
				t.Fatalf("List answered with %s", fr.Type)
			}
			p, err := decodeListPage(fr.Payload)
			if err != nil {
				t.Fatalf("ListPage: %v", err)
			}
			for _, e := range p.Entries {
				size, ok := want[e.Name]
				if !ok || size != e.Size {
					t.Fatalf("List %s: lists %q (%d bytes), not a held object or listed twice", list.Type, e.Name, e.Size)
				}
				delete(want, e.Name)
			}
			if p.Done {
				break
			}
			if fr, err = ReadFrame(st); err != nil {
				t.Fatalf("List %s: next page: %v", list.Type, err)
			}
		}
		if len(want) > 0 {
			t.Fatalf("List %s: %v not listed", list.Type, want)
		}
	case get != nil:
		b, ok := held[tiers.Handle{Type: get.Type, Name: get.Name}]
		if !ok {
			t.Fatalf("Get %s/%q answered for an object the site does not hold", get.Type, get.Name)
		}
		if fr.Type != FrameGetReply {
			t.Fatalf("Get answered with %s", fr.Type)
		}
		r, err := decodeGetReply(fr.Payload)
		if err != nil || r.Size != int64(len(b)) {
			t.Fatalf("GetReply %+v (%v) for an object of %d bytes", r, err, len(b))
		}
		if get.Head {
			break
		}
		body, err := io.ReadAll(st)
		if err != nil {
			t.Fatalf("Get %+v: body: %v", *get, err)
		}
		if end := get.Offset + r.Length; int64(len(body)) != r.Length || !bytes.Equal(body, b[get.Offset:end]) {
			t.Fatalf("Get %+v: %d bytes that are not the object's bytes %d+%d", *get, len(body), get.Offset, r.Length)
		}
		return
	default:
		t.Fatalf("malformed request %x answered with %s", req, fr.Type)
	}
	if _, err := ReadFrame(st); !errors.Is(err, io.EOF) {
		t.Fatalf("after the answer: %v, want the end of the stream", err)
	}
}
