package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// More fuzz targets for parsers of stored bytes: the sealed records read
// through loadObject (snapshots, tombstones), session heartbeats, content
// list blobs, the config's sealed part and the blob envelope itself. The
// targets go through the real load paths of a small in-memory repository;
// the fuzzer supplies the plaintext, which is sealed with the repository
// key so that authentication passes and the decoders see it.

// fuzzNow is the clock of the fuzz repositories.
var fuzzNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// newFuzzRepo creates a repository on a fresh memory backend.
func newFuzzRepo(tb testing.TB, cacheBase string) *Repository {
	tb.Helper()
	dir, err := os.MkdirTemp(cacheBase, "cache")
	if err != nil {
		tb.Fatal(err)
	}
	r, err := Init(context.Background(), tierstest.NewMemory(), InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: dir, KDF: testKDF, Now: func() time.Time { return fuzzNow }})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// fuzzRepo returns a repository for one fuzz target, closed at the end.
func fuzzRepo(f *testing.F) *Repository {
	r := newFuzzRepo(f, f.TempDir())
	f.Cleanup(func() { r.Close() })
	return r
}

// putSealed stores plain sealed as a content-addressed object of type t,
// as saveObject does, or, when raw, stores plain itself unsealed (which
// must then fail authentication). It returns the object's name.
func putSealed(t *testing.T, r *Repository, typ tiers.Type, plain []byte, raw bool) id.ID {
	t.Helper()
	if !raw {
		x, err := r.saveObject(context.Background(), typ, plain)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	x := id.Hash(plain)
	if err := tiers.PutBytes(context.Background(), r.be, tiers.Handle{Type: typ, Name: x.String()}, plain); err != nil {
		t.Fatal(err)
	}
	return x
}

func removeObject(r *Repository, typ tiers.Type, x id.ID) {
	_ = r.be.Remove(context.Background(), tiers.Handle{Type: typ, Name: x.String()})
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzLoadSnapshot covers the snapshot record decoder and its version
// check (LoadSnapshot).
func FuzzLoadSnapshot(f *testing.F) {
	r := fuzzRepo(f)
	ctx := context.Background()
	parent := id.ID{7}
	full := &Snapshot{Version: SnapshotVersion, Time: time.Unix(1700000000, 123456789).UTC(), Host: "hv01", Tags: []string{"daily", "vm"},
		Paths: []string{"/var/lib/libvirt/images"}, Tree: id.ID{1, 2, 3}, Parent: &parent, Username: "root", Program: "drpipe 1.0",
		Summary:   &Summary{Files: 3, Dirs: 1, BytesRead: 1 << 30, BytesTotal: 2 << 30, BytesNew: 4096, BlobsNew: 2, DurationSec: 1.5},
		Inventory: json.RawMessage(`{"vms":[{"name":"db"}]}`)}
	minimal := &Snapshot{Version: SnapshotVersion, Time: time.Unix(0, 0).UTC(), Paths: []string{"/"}, Tree: id.ID{9}}
	for _, s := range []*Snapshot{full, minimal} {
		b := mustJSON(f, s)
		// decode(encode(x)) == x for real records.
		x, err := r.saveObject(ctx, tiers.TypeSnapshot, b)
		if err != nil {
			f.Fatal(err)
		}
		got, err := r.LoadSnapshot(ctx, x)
		if err != nil {
			f.Fatal(err)
		}
		s.id = x
		if !reflect.DeepEqual(got, s) {
			f.Fatalf("snapshot round trip:\n got %+v\nwant %+v", got, s)
		}
		removeObject(r, tiers.TypeSnapshot, x)
		f.Add(b, false)
	}
	f.Add([]byte(`{"version":2,"tree":"0000000000000000000000000000000000000000000000000000000000000000"}`), false)
	f.Add([]byte(`{"version":1,"time":"2025-13-01T00:00:00Z"}`), false)
	f.Add([]byte(`{"version":1,"tree":"zz"}`), false)
	f.Add([]byte(`{"version":1,"parent":null,"summary":{"files":1e400}}`), false)
	f.Add([]byte(`[]`), false)
	f.Add(mustJSON(f, minimal), true)
	f.Fuzz(func(t *testing.T, b []byte, raw bool) {
		x := putSealed(t, r, tiers.TypeSnapshot, b, raw)
		defer removeObject(r, tiers.TypeSnapshot, x)
		s, err := r.LoadSnapshot(ctx, x)
		if err != nil {
			return
		}
		if raw {
			t.Fatal("unsealed bytes accepted as a snapshot")
		}
		if !json.Valid(b) {
			t.Fatalf("invalid JSON accepted as snapshot %+v", s)
		}
		if s.Version != SnapshotVersion || s.ID() != x {
			t.Fatalf("accepted snapshot version %d id %s", s.Version, s.ID().Short())
		}
		// Re-encoding what decoded decodes again to the same record.
		e1, err := json.Marshal(s)
		if err != nil {
			return // e.g. a time that parses but does not format (year 0..9999 only)
		}
		x2 := putSealed(t, r, tiers.TypeSnapshot, e1, false)
		defer removeObject(r, tiers.TypeSnapshot, x2)
		s2, err := r.LoadSnapshot(ctx, x2)
		if err != nil {
			t.Fatalf("re-encoded snapshot does not load: %v\n%s", err, e1)
		}
		if e2 := mustJSON(t, s2); !bytes.Equal(e1, e2) {
			t.Fatalf("snapshot re-encoding is not stable:\n%s\n%s", e1, e2)
		}
	})
}

// FuzzLoadTombstones covers the tombstone decoder and its version check
// (loadTombstones).
func FuzzLoadTombstones(f *testing.F) {
	r := fuzzRepo(f)
	ctx := context.Background()
	ts := &tombstone{Version: tombstoneVersion, Time: time.Unix(1700000000, 5).UTC(), Host: "hv01", Packs: []id.ID{{1}, {2}, {0xff}}}
	b := mustJSON(f, ts)
	x, err := r.saveObject(ctx, tiers.TypeTombstone, b)
	if err != nil {
		f.Fatal(err)
	}
	got, err := r.loadTombstones(ctx)
	if err != nil || len(got) != 1 {
		f.Fatalf("tombstone round trip: %v, %d", err, len(got))
	}
	ts.name = x
	if !reflect.DeepEqual(got[0], ts) {
		f.Fatalf("tombstone round trip:\n got %+v\nwant %+v", got[0], ts)
	}
	removeObject(r, tiers.TypeTombstone, x)
	f.Add(b, false)
	f.Add(mustJSON(f, &tombstone{Version: tombstoneVersion}), false)
	f.Add([]byte(`{"version":2,"packs":[]}`), false)
	f.Add([]byte(`{"version":1,"packs":["00"]}`), false)
	f.Add([]byte(`{"version":1,"packs":[null]}`), false)
	f.Add(b, true)
	f.Fuzz(func(t *testing.T, b []byte, raw bool) {
		x := putSealed(t, r, tiers.TypeTombstone, b, raw)
		defer removeObject(r, tiers.TypeTombstone, x)
		stones, err := r.loadTombstones(ctx)
		if err != nil {
			return
		}
		if raw {
			t.Fatal("unsealed bytes accepted as a tombstone")
		}
		if !json.Valid(b) {
			t.Fatal("invalid JSON accepted as a tombstone")
		}
		if len(stones) != 1 || stones[0].Version != tombstoneVersion || stones[0].name != x {
			t.Fatalf("loaded %d tombstones (%+v) from one object", len(stones), stones)
		}
		e1, err := json.Marshal(stones[0])
		if err != nil {
			return
		}
		removeObject(r, tiers.TypeTombstone, x)
		x2 := putSealed(t, r, tiers.TypeTombstone, e1, false)
		defer removeObject(r, tiers.TypeTombstone, x2)
		again, err := r.loadTombstones(ctx)
		if err != nil || len(again) != 1 {
			t.Fatalf("re-encoded tombstone does not load: %v\n%s", err, e1)
		}
		if e2 := mustJSON(t, again[0]); !bytes.Equal(e1, e2) {
			t.Fatalf("tombstone re-encoding is not stable:\n%s\n%s", e1, e2)
		}
	})
}

// FuzzSessionRecord covers the decoding of session heartbeats
// (liveSessions), sealed the way Session.put seals them. A record this
// drpipe understands (version 1, or no version: written before sessions
// were versioned) is live or stale by its refresh time; anything else —
// another version, bytes that do not open, decode or parse — makes
// liveSessions refuse, naming the object and removing nothing.
func FuzzSessionRecord(f *testing.F) {
	r := fuzzRepo(f)
	ctx := context.Background()
	h := tiers.Handle{Type: tiers.TypeSession, Name: "00112233445566778899aabbccddeeff"}
	put := func(t testing.TB, plain []byte, raw bool) {
		sealed := plain
		if !raw {
			sealed, _ = r.key.encodeBlob(kindSession, nil, nil, plain, CompressOff)
		}
		if err := tiers.PutBytes(ctx, r.be, h, sealed); err != nil {
			t.Fatal(err)
		}
	}
	fresh := sessionRecord{Version: sessionVersion, Host: "hv01", PID: 4242, Started: fuzzNow.Add(-time.Hour), Refreshed: fuzzNow.Add(-time.Minute)}
	stale := sessionRecord{Version: sessionVersion, Host: "hv02", PID: 1, Started: fuzzNow.Add(-48 * time.Hour), Refreshed: fuzzNow.Add(-SessionTTL - ClockSkew - time.Second)}
	put(f, mustJSON(f, fresh), false)
	got, err := r.liveSessions(ctx, false, "")
	want := fresh
	want.name = h.Name
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		f.Fatalf("session round trip: %v %+v", err, got)
	}
	_ = r.be.Remove(ctx, h)
	f.Add(mustJSON(f, fresh), false)
	f.Add(mustJSON(f, stale), false)
	// As written by releases before sessions carried a version.
	f.Add([]byte(`{"host":"hv01","pid":4242,"started":"2025-06-01T11:00:00Z","refreshed":"2025-06-01T11:59:00Z"}`), false)
	f.Add([]byte(`{"host":"hv02","pid":1,"started":"2025-05-30T12:00:00Z","refreshed":"2025-06-01T11:44:59Z"}`), false)
	// Versions this drpipe does not know.
	f.Add([]byte(`{"version":2,"host":"hv01","pid":4242,"started":"2025-06-01T11:00:00Z","refreshed":"2025-06-01T11:59:00Z"}`), false)
	f.Add([]byte(`{"version":2,"refreshed":"2000-01-01T00:00:00Z"}`), false)
	f.Add([]byte(`{"version":0,"host":"hv01","refreshed":"2025-06-01T11:59:00Z"}`), false)
	f.Add([]byte(`{"version":-1}`), false)
	f.Add([]byte(`{"version":1.5}`), false)
	f.Add([]byte(`{"version":"1"}`), false)
	f.Add([]byte(`{"version":null,"refreshed":"2025-06-01T11:59:00Z"}`), false)
	f.Add([]byte(`{"version":9223372036854775808}`), false)
	f.Add([]byte(`{"host":"x","pid":-1,"refreshed":"2025-06-01T12:00:00+23:59"}`), false)
	f.Add([]byte(`{"refreshed":"9999-12-31T23:59:59.999999999Z"}`), false)
	f.Add([]byte(`null`), false)
	f.Add([]byte(`[]`), false)
	f.Add(mustJSON(f, fresh), true)
	f.Fuzz(func(t *testing.T, b []byte, raw bool) {
		put(t, b, raw)
		defer func() { _ = r.be.Remove(ctx, h) }()
		rec, perr := parseSessionRecord(b)
		understood := !raw && perr == nil && rec.Version == sessionVersion && len(b) <= maxSessionPlain
		live, err := r.liveSessions(ctx, true, "")
		if err != nil {
			if understood {
				t.Fatalf("version %d record refused: %v", rec.Version, err)
			}
			if !errors.Is(err, ErrPruneUnsafe) || !strings.Contains(err.Error(), h.String()) {
				t.Fatalf("refusal does not wrap ErrPruneUnsafe or name %s: %v", h, err)
			}
			if perr == nil && rec.Version > sessionVersion && !raw && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("version %d refused without ErrUnsupportedVersion: %v", rec.Version, err)
			}
			if _, serr := r.be.Stat(ctx, h); serr != nil {
				t.Fatalf("refused session object was removed: %v", serr)
			}
			return
		}
		if !understood {
			t.Fatalf("accepted a session record this drpipe does not understand (raw %v, parse %v, version %d): %+v", raw, perr, rec.Version, live)
		}
		if !json.Valid(b) {
			t.Fatal("invalid JSON accepted as a session")
		}
		if len(live) == 0 {
			if _, serr := r.be.Stat(ctx, h); !errors.Is(serr, tiers.ErrNotFound) {
				t.Fatalf("stale session not removed: %v", serr)
			}
			return
		}
		if len(live) != 1 || live[0].Version != sessionVersion || fuzzNow.Sub(live[0].Refreshed) > SessionTTL+ClockSkew {
			t.Fatalf("liveSessions returned %+v", live)
		}
		e1, err := json.Marshal(live[0])
		if err != nil {
			return
		}
		put(t, e1, false)
		again, err := r.liveSessions(ctx, false, "")
		if err != nil || len(again) != 1 {
			t.Fatalf("re-encoded session not live: %v %+v\n%s", err, again, e1)
		}
		if e2 := mustJSON(t, again[0]); !bytes.Equal(e1, e2) {
			t.Fatalf("session re-encoding is not stable:\n%s\n%s", e1, e2)
		}
	})
}

// FuzzContentList covers content-list blobs (EachExtent loading
// Node.ContentLists) through the real SaveBlob/Flush/LoadBlob path.
func FuzzContentList(f *testing.F) {
	base := f.TempDir()
	var r *Repository
	uses := 0
	f.Cleanup(func() {
		if r != nil {
			r.Close()
		}
	})
	// repo returns a repository, replaced now and then so that the packs
	// and indexes written per input do not pile up.
	repo := func(tb testing.TB) *Repository {
		if r == nil || uses >= 500 {
			if r != nil {
				r.Close()
			}
			r, uses = newFuzzRepo(tb, base), 0
		}
		uses++
		return r
	}
	ctx := context.Background()
	var extents []Extent
	for i := range InlineExtents + 3 {
		if i%5 == 4 {
			extents = append(extents, Extent{Zero: true, Len: int64(i+1) << 12})
		} else {
			extents = append(extents, Extent{ID: id.Hash([]byte{byte(i), byte(i >> 8)}), Len: int64(i + 1)})
		}
	}
	rr := repo(f)
	n := &Node{Name: "big.img", Type: NodeFile}
	if err := rr.SetContent(ctx, n, extents); err != nil {
		f.Fatal(err)
	}
	if err := rr.Flush(ctx); err != nil {
		f.Fatal(err)
	}
	if len(n.ContentLists) != 1 {
		f.Fatalf("%d content lists", len(n.ContentLists))
	}
	var got []Extent
	if err := rr.EachExtent(ctx, n, func(e Extent) error { got = append(got, e); return nil }); err != nil {
		f.Fatal(err)
	}
	if !reflect.DeepEqual(got, extents) {
		f.Fatal("content list round trip lost extents")
	}
	seed, err := rr.LoadBlob(ctx, TreeBlob, n.ContentLists[0], nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(mustJSON(f, ContentList{Version: TreeVersion, Extents: extents[:3]}))
	f.Add([]byte(`{"version":1,"extents":[{"i":"00","n":1}]}`))
	f.Add([]byte(`{"version":1,"extents":[{"z":true,"n":-1},{"i":null,"n":9223372036854775807}]}`))
	f.Add([]byte(`{"version":1,"extents":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := repo(t)
		x, _, err := r.SaveBlob(ctx, TreeBlob, b, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		n := &Node{Name: "f", Type: NodeFile, ContentLists: []id.ID{x}}
		var got []Extent
		err = r.EachExtent(ctx, n, func(e Extent) error { got = append(got, e); return nil })
		if err != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatal("invalid JSON accepted as a content list")
		}
		// What decoded is stored again by SetContent's encoder; loading
		// that gives the same extents, once normalised by one pass (the
		// encoder drops the id of a zero extent).
		load := func(es []Extent) []Extent {
			t.Helper()
			n := &Node{Name: "f", Type: NodeFile}
			b := mustJSON(t, ContentList{Version: TreeVersion, Extents: es})
			x, _, err := r.SaveBlob(ctx, TreeBlob, b, id.ID{})
			if err == nil {
				err = r.Flush(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			n.ContentLists = []id.ID{x}
			var out []Extent
			if err := r.EachExtent(ctx, n, func(e Extent) error { out = append(out, e); return nil }); err != nil {
				t.Fatalf("re-encoded content list does not load: %v\n%s", err, b)
			}
			return out
		}
		once := load(got)
		if len(once) != len(got) {
			t.Fatalf("re-encoding changed the extent count %d -> %d", len(got), len(once))
		}
		for i := range got {
			want := got[i]
			if want.Zero {
				want.ID = id.ID{}
			}
			if once[i] != want {
				t.Fatalf("extent %d: %+v re-encodes to %+v", i, got[i], once[i])
			}
		}
		if twice := load(once); !reflect.DeepEqual(twice, once) {
			t.Fatalf("content list re-encoding is not stable: %+v -> %+v", once, twice)
		}
	})
}

// FuzzOpenConfigSecret covers the config's sealed part (openSecret): its
// JSON, the cross-check against the public fields and the chunker
// polynomial check.
func FuzzOpenConfigSecret(f *testing.F) {
	r := fuzzRepo(f)
	pub := *r.cfg
	good := configSecret{ID: pub.ID, Version: pub.Version, EC: pub.EC, PackSize: pub.PackSize, Chunks: pub.Chunks, ChunkerPolynomial: pub.ChunkerPolynomial}
	f.Add(mustJSON(f, good), false)
	bad := good
	bad.EC.M++
	f.Add(mustJSON(f, bad), false)
	bad = good
	bad.ChunkerPolynomial = 0x3DA3358B4DC174 // reducible (even)
	f.Add(mustJSON(f, bad), false)
	bad.ChunkerPolynomial = 1<<63 | 1
	f.Add(mustJSON(f, bad), false)
	f.Add([]byte(`{"chunker_polynomial":"x"}`), false)
	f.Add([]byte(`{"chunker_polynomial":1}`), false)
	f.Add(mustJSON(f, good), true)
	// The real config object round-trips.
	raw, err := pub.seal(r.key)
	if err != nil {
		f.Fatal(err)
	}
	c, err := parseConfigPublic(raw)
	if err != nil {
		f.Fatal(err)
	}
	if err := c.openSecret(r.key); err != nil {
		f.Fatal(err)
	}
	if c.ChunkerPolynomial != pub.ChunkerPolynomial {
		f.Fatal("config round trip lost the chunker polynomial")
	}
	f.Fuzz(func(t *testing.T, b []byte, raw bool) {
		c := pub
		c.ChunkerPolynomial = 0
		if raw {
			c.Sealed = b
		} else {
			c.Sealed = r.key.sealAs(kindConfig, nil, b)
		}
		if err := c.openSecret(r.key); err != nil {
			if c.ChunkerPolynomial != 0 {
				t.Fatal("failed openSecret set the polynomial")
			}
			return
		}
		if raw {
			t.Fatal("unsealed bytes accepted as the config secret")
		}
		if !json.Valid(b) {
			t.Fatal("invalid JSON accepted as the config secret")
		}
		if c.ChunkerPolynomial == 0 || !c.ChunkerPolynomial.Irreducible() {
			t.Fatalf("accepted polynomial %x", c.ChunkerPolynomial)
		}
		// Re-sealing the accepted config gives a config object that opens
		// to the same values.
		out, err := c.seal(r.key)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := parseConfigPublic(out)
		if err != nil {
			t.Fatalf("re-sealed config does not parse: %v", err)
		}
		if err := c2.openSecret(r.key); err != nil {
			t.Fatalf("re-sealed config does not open: %v", err)
		}
		c2.Sealed, c.Sealed = nil, nil
		if !reflect.DeepEqual(*c2, c) {
			t.Fatalf("config round trip:\n got %+v\nwant %+v", *c2, c)
		}
	})
}

// zstdRLEFrame returns a zstd frame without a content size made of n RLE
// blocks of 128 KiB each: a few bytes that expand to n*128 KiB.
func zstdRLEFrame(n int) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3} // magic, no FCS, window 2^17
	for i := range n {
		h := uint32(128<<10)<<3 | 1<<1 // RLE block of 128 KiB
		if i == n-1 {
			h |= 1 // last
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 'z')
	}
	return b
}

// FuzzDecodeBlobEnvelope covers what decodeBlobWith does after AEAD open:
// the compression id byte and the zstd frame. The fuzzer's bytes are the
// envelope, sealed with the repository key. The decoder must never panic,
// never return more than MaxBlobSize bytes, and allocate only what such a
// blob needs.
func FuzzDecodeBlobEnvelope(f *testing.F) {
	r := fuzzRepo(f)
	codecs()
	for _, p := range [][]byte{nil, []byte("short"), bytes.Repeat([]byte("compressible tree json "), 200), randBytesSeeded(5000)} {
		for _, c := range []Compression{CompressAuto, CompressOff, CompressFastest, CompressMax} {
			sealed, _ := r.key.encodeBlob(kindBlob, nil, nil, p, c)
			env, err := r.key.Open(nil, sealed)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(env, int32(len(p)), c == CompressAuto, uint8(0))
		}
	}
	fcs := []byte{compZstd, 0x28, 0xb5, 0x2f, 0xfd, 0xe0} // single segment, 8-byte content size
	fcs = binary.LittleEndian.AppendUint64(fcs, 1<<40)
	f.Add(append(fcs, 1, 0, 0), int32(-1), false, uint8(0))
	f.Add(append([]byte{compZstd}, zstdRLEFrame(2)...), int32(-1), false, uint8(3))
	f.Add(append([]byte{compZstd}, zstdRLEFrame(2)...), int32(MaxBlobSize+1), false, uint8(0))
	// Two concatenated frames, the second with a checksum.
	crc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		f.Fatal(err)
	}
	two := append([]byte{compZstd}, zstdFrame([]byte("first frame first frame first frame"), CompressFastest)...)
	two = crc.EncodeAll([]byte("second frame second frame second frame"), two)
	f.Add(two, int32(-1), false, uint8(0))
	f.Add([]byte{}, int32(-1), false, uint8(0))
	f.Add([]byte{2, 'x'}, int32(1), false, uint8(0))
	f.Add([]byte{compNone, 'a', 'b'}, int32(3), true, uint8(1))
	f.Fuzz(func(t *testing.T, env []byte, rawLen int32, inPlace bool, prefix uint8) {
		dst := bytes.Repeat([]byte{0xa5}, int(prefix%32))
		sealed := r.key.Seal(nil, env)
		// Unsealed bytes never get past authentication.
		if _, err := r.decodeBlob(nil, env, int(rawLen), id.ID{}); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("unsealed envelope: %v", err)
		}
		var out []byte
		var err error
		if alloc := allocated(func() { out, err = r.decodeBlobWith(dst, sealed, int(rawLen), id.ID{}, inPlace) }); alloc > maxDecodeAlloc {
			t.Fatalf("decoding a %d-byte envelope allocated %d bytes", len(env), alloc)
		}
		if err != nil {
			return
		}
		switch {
		case len(env) == 0 || env[0] != compNone && env[0] != compZstd:
			t.Fatalf("envelope with compression id %x accepted", env[:min(1, len(env))])
		case env[0] == compZstd && int(rawLen) > MaxBlobSize:
			t.Fatalf("zstd blob claiming %d bytes accepted", rawLen)
		case !bytes.Equal(out[:len(dst)], dst):
			t.Fatal("decoder clobbered dst")
		}
		plain := out[len(dst):]
		if len(plain) > MaxBlobSize {
			t.Fatalf("decoded %d bytes, more than MaxBlobSize", len(plain))
		}
		if rawLen >= 0 && len(plain) != int(rawLen) {
			t.Fatalf("decoded %d bytes, caller expected %d", len(plain), rawLen)
		}
		if env[0] == compNone && !bytes.Equal(plain, env[1:]) {
			t.Fatal("stored envelope decoded to other bytes")
		}
		// The content check accepts the right id and refuses another.
		want := r.BlobID(plain)
		if _, err := r.decodeBlob(nil, r.key.Seal(nil, env), len(plain), want); err != nil {
			t.Fatalf("content check refused its own id: %v", err)
		}
		want[0] ^= 1
		if _, err := r.decodeBlob(nil, r.key.Seal(nil, env), len(plain), want); err == nil {
			t.Fatal("content check accepted a wrong id")
		}
		// Re-encoding the plaintext decodes to the same bytes.
		if len(plain) > 1<<20 {
			return // keep executions fast; the small case covers the path
		}
		for _, c := range []Compression{CompressAuto, CompressOff} {
			s2, _ := r.key.encodeBlob(kindBlob, nil, nil, plain, c)
			again, err := r.decodeBlob(nil, s2, len(plain), id.ID{})
			if err != nil || !bytes.Equal(again, plain) {
				t.Fatalf("re-encoded blob (compression %d) decodes to %d bytes, %v", c, len(again), err)
			}
		}
	})
}

// maxDecodeAlloc bounds what decoding one blob may allocate in total. With
// rawLen known the output buffer holds rawLen+1 bytes, and a frame that
// overruns it by a block is caught after append grew it once (about
// 2.25×MaxBlobSize at most); with rawLen unknown the buffer is the bound
// zstdBound reads from the headers plus at most one block of slack, and
// never grows.
const maxDecodeAlloc = 3 * MaxBlobSize

// allocated returns the bytes allocated while fn ran.
func allocated(fn func()) uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	fn()
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

// TestDecodeBlobSizeLimits checks the envelope decoder's limits on
// authenticated but oversized zstd frames: a frame that expands past
// MaxBlobSize and one that claims a huge content size are refused, and
// neither allocates more than maxDecodeAlloc. (These are too slow to be
// fuzz seeds.)
func TestDecodeBlobSizeLimits(t *testing.T) {
	r := newFuzzRepo(t, t.TempDir())
	defer r.Close()
	codecs()
	bomb := append([]byte{compZstd}, zstdRLEFrame(MaxBlobSize/(128<<10)+1)...)
	fcs := []byte{compZstd, 0x28, 0xb5, 0x2f, 0xfd, 0xe0}
	fcs = binary.LittleEndian.AppendUint64(fcs, 1<<40)
	exact := append([]byte{compZstd}, zstdRLEFrame(MaxBlobSize/(128<<10))...)
	for _, tc := range []struct {
		name   string
		env    []byte
		rawLen int
		ok     bool
	}{
		{"expands past limit", bomb, -1, false},
		{"expands past limit, small rawLen", bomb, 100, false},
		{"claims 1 TiB", append(fcs, 1, 0, 0), -1, false},
		{"exactly MaxBlobSize", exact, MaxBlobSize, true},
	} {
		var err error
		var out []byte
		alloc := allocated(func() { out, err = r.decodeBlob(nil, r.key.Seal(nil, tc.env), tc.rawLen, id.ID{}) })
		t.Logf("%s: %d-byte envelope: %d bytes out, %d MiB allocated, %v", tc.name, len(tc.env), len(out), alloc>>20, err)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		if alloc > maxDecodeAlloc {
			t.Errorf("%s: allocated %d bytes", tc.name, alloc)
		}
		// With the length known from the index, decoding stops at it;
		// with the length unknown, the frame headers refuse a bomb
		// before anything is allocated for its content.
		if !tc.ok && alloc > 1<<20 {
			t.Errorf("%s: allocated %d bytes to refuse a %d-byte envelope (rawLen %d)", tc.name, alloc, len(tc.env), tc.rawLen)
		}
	}
}

// randBytesSeeded returns n deterministic incompressible bytes.
func randBytesSeeded(n int) []byte {
	b := make([]byte, n)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
