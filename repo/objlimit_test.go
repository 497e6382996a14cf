package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/zstd"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// Size limits of metadata objects, whose plaintext length is recorded
// nowhere: a hostile or corrupt object must be refused with a clear error
// before drpipe allocates for it.

// zstdFCSFrame returns a single-segment zstd frame that declares fcs bytes
// of content and holds one RLE block of rle bytes.
func zstdFCSFrame(fcs uint64, rle int) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0} // magic, single segment, 8-byte content size
	b = binary.LittleEndian.AppendUint64(b, fcs)
	h := uint32(rle)<<3 | 1<<1 | 1 // last RLE block
	return append(b, byte(h), byte(h>>8), byte(h>>16), 'z')
}

// zstdWindowFrame returns a frame without content size declaring a window
// of 2^(10+log) bytes, holding one RLE block of 1 KiB.
func zstdWindowFrame(log byte) []byte {
	h := uint32(1024)<<3 | 1<<1 | 1
	return []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, log << 3, byte(h), byte(h >> 8), byte(h >> 16), 'w'}
}

// minAllocated returns the least that three runs of fn allocated: the
// heap metric counts every goroutine's allocations, and background work
// (GC, goroutines other tests left behind) only ever adds to it.
func minAllocated(fn func()) uint64 {
	least := allocated(fn)
	for range 2 {
		least = min(least, allocated(fn))
	}
	return least
}

// bombs are authenticated zstd envelopes that claim or expand to more
// than MaxBlobSize, or that declare what they cannot hold.
var bombs = []struct {
	name  string
	env   func() []byte
	large bool // refused as larger than the limit (ErrTooLarge)
}{
	{"expands past the limit, no content size", func() []byte {
		return append([]byte{compZstd}, zstdRLEFrame(MaxBlobSize/(128<<10)+1)...)
	}, true},
	{"exactly the limit, then one byte more in a second frame", func() []byte {
		env := append([]byte{compZstd}, zstdRLEFrame(MaxBlobSize/(128<<10))...)
		return append(env, zstdFCSFrame(1, 1)...)
	}, true},
	{"two frames of 40 MiB", func() []byte {
		env := append([]byte{compZstd}, zstdRLEFrame(320)...)
		return append(env, zstdRLEFrame(320)...)
	}, true},
	{"declares 1 TiB", func() []byte { return append([]byte{compZstd}, zstdFCSFrame(1<<40, 1)...) }, true},
	{"declares 2^64-1 bytes", func() []byte { return append([]byte{compZstd}, zstdFCSFrame(^uint64(0), 1)...) }, true},
	{"declares the limit, holds 128 KiB", func() []byte { return append([]byte{compZstd}, zstdFCSFrame(MaxBlobSize, 128<<10)...) }, false},
	{"declares a 2 TiB window", func() []byte { return append([]byte{compZstd}, zstdWindowFrame(31)...) }, true},
	{"declares a 128 MiB window", func() []byte { return append([]byte{compZstd}, zstdWindowFrame(17)...) }, true},
	{"skippable frame longer than the object", func() []byte {
		return []byte{compZstd, 0x50, 0x2a, 0x4d, 0x18, 0xff, 0xff, 0xff, 0xff}
	}, false},
}

// refusedAlloc bounds what refusing a bomb may allocate: the sealed object
// is a few KiB, and the bound is read from the frame headers before any
// buffer for the content exists. The documented bound per object (the
// plaintext limit plus about twice the stored size) is far above.
const refusedAlloc = 4 << 20

// TestMetadataObjectZstdBombs stores each bomb as a sealed index,
// snapshot, tombstone and session object and reads it the way drpipe
// does: every read fails with an error naming the object, without
// allocating more than refusedAlloc (and, generously, 2×MaxBlobSize).
func TestMetadataObjectZstdBombs(t *testing.T) {
	ctx := context.Background()
	r := newFuzzRepo(t, t.TempDir())
	defer r.Close()
	type load func(x id.ID) error
	kinds := []struct {
		typ  tiers.Type
		load load
	}{
		{tiers.TypeIndex, func(x id.ID) error { _, err := r.LoadIndexFile(ctx, x); return err }},
		{tiers.TypeSnapshot, func(x id.ID) error { _, err := r.LoadSnapshot(ctx, x); return err }},
		{tiers.TypeTombstone, func(id.ID) error { _, err := r.loadTombstones(ctx); return err }},
		{tiers.TypeSession, func(id.ID) error { _, err := r.liveSessions(ctx, true, ""); return err }},
	}
	for _, k := range kinds {
		for _, b := range bombs {
			t.Run(string(k.typ)+"/"+b.name, func(t *testing.T) {
				sealed := r.key.sealAs(objectKind(k.typ), nil, b.env())
				x := id.Hash(sealed)
				h := tiers.Handle{Type: k.typ, Name: x.String()}
				if err := tiers.PutBytes(ctx, r.be, h, sealed); err != nil {
					t.Fatal(err)
				}
				defer func() { _ = r.be.Remove(ctx, h) }()
				var err error
				alloc := minAllocated(func() { err = k.load(x) })
				t.Logf("%d-byte object: %d KiB allocated: %v", len(sealed), alloc>>10, err)
				if err == nil {
					t.Fatal("bomb accepted")
				}
				if !strings.Contains(err.Error(), h.String()) {
					t.Errorf("error does not name %s: %v", h, err)
				}
				if b.large && !errors.Is(err, ErrTooLarge) {
					t.Errorf("error does not wrap ErrTooLarge: %v", err)
				}
				hint := objectHint(k.typ)
				if k.typ == tiers.TypeSession {
					hint = "remove " + h.String() + " and prune again"
				}
				if !strings.Contains(err.Error(), hint) {
					t.Errorf("error does not say what to do: %v", err)
				}
				if alloc >= 2*MaxBlobSize {
					t.Fatalf("allocated %d bytes, more than 2×MaxBlobSize", alloc)
				}
				if alloc > refusedAlloc {
					t.Errorf("allocated %d KiB to refuse a %d-byte object", alloc>>10, len(sealed))
				}
			})
		}
	}
}

// TestDecodeObjectLimit: content of exactly the limit decodes, allocating
// about the content and no more; one byte more is refused.
func TestDecodeObjectLimit(t *testing.T) {
	r := newFuzzRepo(t, t.TempDir())
	defer r.Close()
	codecs()
	exact := r.key.Seal(nil, append([]byte{compZstd}, zstdRLEFrame(MaxBlobSize/(128<<10))...))
	var out []byte
	var err error
	alloc := minAllocated(func() { out, err = r.decodeObject(kindBlob, exact, MaxBlobSize) })
	if err != nil || len(out) != MaxBlobSize {
		t.Fatalf("exactly MaxBlobSize: %d bytes, %v", len(out), err)
	}
	if alloc > MaxBlobSize+refusedAlloc {
		t.Errorf("decoding %d bytes allocated %d", len(out), alloc)
	}
	for _, tc := range []struct {
		name  string
		env   []byte
		limit int
		ok    bool
	}{
		{"raw at limit", append([]byte{compNone}, make([]byte, 100)...), 100, true},
		{"raw over limit", append([]byte{compNone}, make([]byte, 101)...), 100, false},
		{"zstd at limit", append([]byte{compZstd}, zstdRLEFrame(2)...), 256 << 10, true},
		{"zstd over limit", append([]byte{compZstd}, zstdRLEFrame(2)...), 256<<10 - 1, false},
		{"declared size at limit", append([]byte{compZstd}, zstdFCSFrame(1000, 1000)...), 1000, true},
		{"declared size over limit", append([]byte{compZstd}, zstdFCSFrame(1001, 1001)...), 1000, false},
	} {
		out, err := r.decodeObject(kindBlob, r.key.Seal(nil, tc.env), tc.limit)
		if tc.ok && (err != nil || len(out) > tc.limit) {
			t.Errorf("%s: %d bytes, %v", tc.name, len(out), err)
		}
		if !tc.ok && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: got %d bytes, %v; want ErrTooLarge", tc.name, len(out), err)
		}
	}
}

// TestZstdBoundOfOwnFrames: for what drpipe writes, the bound is the
// exact length (the encoder records the size of content of 256 bytes or
// more) or, for smaller content, its 1 KiB window; so decoding a metadata
// object allocates about its plaintext and nothing more.
func TestZstdBoundOfOwnFrames(t *testing.T) {
	r := newFuzzRepo(t, t.TempDir())
	defer r.Close()
	codecs()
	for _, n := range []int{64, 100, 255, 256, 1024, 1025, 4096, 200 << 10, 3 << 20} {
		for name, p := range map[string][]byte{
			"text":   bytes.Repeat([]byte("{\"packs\":[\"0123\"]} "), n/19+1)[:n],
			"zeros":  make([]byte, n),
			"random": randBytesSeeded(n),
		} {
			for _, c := range []Compression{CompressAuto, CompressFastest, CompressMax} {
				sealed, _ := r.key.encodeBlob(kindBlob, nil, nil, p, c)
				env, err := r.key.Open(nil, sealed)
				if err != nil {
					t.Fatal(err)
				}
				if env[0] != compZstd {
					continue
				}
				bound, slack, err := zstdBound(env[1:], MaxBlobSize)
				exact := bound == n || n < 256 && bound >= n && bound <= 1024
				if err != nil || !exact || slack > min(max(2*n, 1024), zstdMaxBlock) {
					t.Errorf("%s, %d bytes, compression %d: bound %d, slack %d, %v", name, n, c, bound, slack, err)
				}
				out, err := r.decodeObject(kindBlob, sealed, MaxBlobSize)
				if err != nil || !bytes.Equal(out, p) || cap(out) != bound+slack {
					t.Errorf("%s, %d bytes, compression %d: decoded %d bytes (cap %d), %v", name, n, c, len(out), cap(out), err)
				}
			}
		}
	}
}

// TestZstdBound covers the frame walker's refusals and sums.
func TestZstdBound(t *testing.T) {
	rle := zstdRLEFrame(3) // 384 KiB, no content size
	h10 := uint32(10)<<3 | 1<<1 | 1
	// Single segment with a checksum, content size 10: one RLE block, checksum.
	withCRC := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x24, 10, byte(h10), byte(h10 >> 8), byte(h10 >> 16), 'z', 1, 2, 3, 4}
	raw := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 5<<3 | 1, 0, 0, 'h', 'e', 'l', 'l', 'o'} // raw last block
	// One compressed block of 4 bytes in a 1 KiB, 128 KiB and 1 MiB window.
	compressed := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 4<<3 | 2<<1 | 1, 0, 0, 0, 0, 0, 0}
	compressed128K := append([]byte{}, compressed...)
	compressed128K[5] = 7 << 3
	compressed1M := append([]byte{}, compressed...)
	compressed1M[5] = 10 << 3
	skippable := []byte{0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'a', 'b', 'c'}
	for _, tc := range []struct {
		name  string
		src   []byte
		limit int
		want  int // -1: error
		large bool
	}{
		{"rle frames", rle, MaxBlobSize, 384 << 10, false},
		{"rle frames at limit", rle, 384 << 10, 384 << 10, false},
		{"rle frames over limit", rle, 384<<10 - 1, -1, true},
		{"two frames", append(append([]byte{}, rle...), raw...), MaxBlobSize, 384<<10 + 5, false},
		{"raw block", raw, 5, 5, false},
		{"compressed block counts its window", compressed, MaxBlobSize, 1 << 10, false},
		{"compressed block counts its 128 KiB window", compressed128K, MaxBlobSize, 128 << 10, false},
		{"compressed block counts at most 128 KiB", compressed1M, MaxBlobSize, 128 << 10, false},
		{"compressed block over a small limit", compressed, 1000, -1, true},
		{"skippable frame", append(append([]byte{}, skippable...), raw...), 5, 5, false},
		{"only a skippable frame", skippable, 0, 0, false},
		{"checksum", withCRC, 100, 10, false},
		{"empty", nil, 100, -1, false},
		{"trailing byte", append(append([]byte{}, raw...), 0), 100, -1, false},
		{"trailing magic", append(append([]byte{}, raw...), 0x28, 0xb5, 0x2f, 0xfd), 100, -1, false},
		{"truncated block", raw[:len(raw)-1], 100, -1, false},
		{"truncated block header", raw[:8], 100, -1, false},
		{"no last block", raw[:6], 100, -1, false},
		{"truncated checksum", withCRC[:len(withCRC)-1], 1 << 20, -1, false},
		{"reserved block type", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 3<<1 | 1, 0, 0}, 100, -1, false},
		{"oversized block", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0xf2, 0xff, 0xff, 'z'}, MaxBlobSize, -1, false},
		{"dictionary", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x01, 0x00, 7, 1, 0, 0}, 100, -1, false},
		{"not zstd", []byte("{\"version\":1}"), 100, -1, false},
		{"skippable longer than input", skippable[:9], 100, -1, false},
		{"declares more than its blocks", zstdFCSFrame(2000, 1000), MaxBlobSize, -1, false},
		{"declares less than its blocks", zstdFCSFrame(10, 1000), MaxBlobSize, 10, false},
		{"declares over limit", zstdFCSFrame(1<<40, 1), MaxBlobSize, -1, true},
		{"window at MaxBlobSize", zstdWindowFrame(16), MaxBlobSize, 1024, false},
		{"window over MaxBlobSize", zstdWindowFrame(17), MaxBlobSize, -1, true},
	} {
		got, _, err := zstdBound(tc.src, tc.limit)
		switch {
		case tc.want < 0 && err == nil:
			t.Errorf("%s: bound %d, want an error", tc.name, got)
		case tc.want >= 0 && (err != nil || got != tc.want):
			t.Errorf("%s: bound %d, %v; want %d", tc.name, got, err, tc.want)
		case err != nil && errors.Is(err, ErrTooLarge) != tc.large:
			t.Errorf("%s: %v; wraps ErrTooLarge: want %v", tc.name, err, tc.large)
		}
	}
}

// lyingFrame returns a real zstd frame of n (≥ 256) compressible bytes,
// one in stride of them random-ish, whose content size field says fcs
// instead (fcs must fit the field the encoder chose: 2 bytes for n <
// 65792, holding fcs-256, else 4 bytes).
func lyingFrame(tb testing.TB, n, stride int, c Compression, fcs uint32) []byte {
	tb.Helper()
	codecs()
	unit := []byte(`{"name":"disk.vhdx","size":1234567} `)
	p := bytes.Repeat(unit, n/len(unit)+1)[:n]
	for i := 0; i < len(p); i += stride {
		p[i] = byte(i >> 7) // some entropy, so blocks are compressed
	}
	fr := zstdFrame(p, c)
	off := 5
	if fr[4]&(1<<5) == 0 {
		off++ // window descriptor
	}
	switch fr[4] >> 6 {
	case 1:
		binary.LittleEndian.PutUint16(fr[off:], uint16(fcs-256))
	case 2:
		binary.LittleEndian.PutUint32(fr[off:], fcs)
	default:
		tb.Fatalf("frame header %x: unexpected content size field", fr[:6])
	}
	return fr
}

// TestZstdLyingContentSize: a frame whose blocks hold more than its
// recorded content size is refused without the decoder growing its buffer
// beyond the bound and slack zstdBound gave.
func TestZstdLyingContentSize(t *testing.T) {
	r := newFuzzRepo(t, t.TempDir())
	defer r.Close()
	for _, c := range []Compression{CompressAuto, CompressFastest, CompressMax} {
		for _, tc := range []struct {
			n, stride int
			fcs       uint32
		}{
			{300 << 10, 97, 300<<10 - 1}, {300 << 10, 97, 200 << 10}, {300 << 10, 97, 65792}, {300 << 10, 97, 1},
			{300 << 10, 997, 300<<10 - 1}, {20000, 97, 19999}, {20000, 997, 4096}, {20000, 97, 256},
		} {
			fr := lyingFrame(t, tc.n, tc.stride, c, tc.fcs)
			bound, slack, err := zstdBound(fr, MaxBlobSize)
			if err != nil {
				continue // refused from the headers alone
			}
			buf := make([]byte, 0, bound+slack)
			out, err := sizedDecoder.DecodeAll(fr, buf)
			if err == nil || out != nil && cap(out) != bound+slack {
				t.Errorf("compression %d, %d bytes declared as %d: %d bytes (cap %d, bound %d+%d), %v", c, tc.n, tc.fcs, len(out), cap(out), bound, slack, err)
			}
			if _, err := r.decodeObject(kindBlob, r.key.Seal(nil, append([]byte{compZstd}, fr...)), MaxBlobSize); err == nil {
				t.Errorf("compression %d, %d bytes declared as %d: accepted", c, tc.n, tc.fcs)
			}
		}
	}
}

// FuzzZstdBound checks that the bound read from the headers holds: what
// the decoder produces from input the walker accepts is never longer, and
// decoding into a buffer of exactly the bound never reallocates it.
func FuzzZstdBound(f *testing.F) {
	codecs()
	for _, p := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("tree json "), 500), randBytesSeeded(3000)} {
		for _, c := range []Compression{CompressAuto, CompressFastest, CompressMax} {
			f.Add(zstdFrame(p, c), uint32(1<<20))
		}
	}
	f.Add(lyingFrame(f, 20000, 997, CompressFastest, 4096), uint32(1<<20))
	f.Add(lyingFrame(f, 20000, 997, CompressAuto, 19999), uint32(1<<20))
	f.Add(zstdFrame(bytes.Repeat([]byte("x"), 100), CompressAuto), uint32(1000))
	f.Add(zstdRLEFrame(2), uint32(1<<20))
	f.Add(zstdRLEFrame(2), uint32(200<<10))
	f.Add(zstdFCSFrame(100, 100), uint32(1000))
	f.Add(zstdFCSFrame(100, 50), uint32(1000))
	f.Add(zstdWindowFrame(31), uint32(1<<20))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 5<<3 | 1, 0, 0, 'h', 'e', 'l', 'l', 'o', 0x5a, 0x2a, 0x4d, 0x18, 1, 0, 0, 0, 'a'}, uint32(100))
	ref, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(4<<20))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(ref.Close)
	f.Fuzz(func(t *testing.T, src []byte, limit uint32) {
		limit %= 2 << 20
		bound, slack, err := zstdBound(src, int(limit))
		if err != nil {
			return
		}
		if bound < 0 || bound > int(limit) || slack < 0 || slack > zstdMaxBlock {
			t.Fatalf("bound %d, slack %d outside [0, %d], [0, %d]", bound, slack, limit, zstdMaxBlock)
		}
		// The reference decoder (no output limit below 4 MiB) never
		// produces more.
		if out, err := ref.DecodeAll(src, nil); err == nil && len(out) > bound {
			t.Fatalf("decoded %d bytes, bound %d", len(out), bound)
		}
		// The bounded decode path stays in its buffer, without growing it.
		buf := make([]byte, 0, bound+slack)
		out, err := sizedDecoder.DecodeAll(src, buf)
		if len(out) > bound+slack || out != nil && cap(out) != bound+slack {
			t.Fatalf("bounded decode: %d bytes, cap %d, bound %d+%d, %v", len(out), cap(out), bound, slack, err)
		}
		if err == nil && len(out) > bound {
			t.Fatalf("bounded decode: %d bytes accepted, bound %d", len(out), bound)
		}
	})
}

// TestSplitIndex: an index too large for one object is split into whole
// packs, each part within the limit, superseding only in the last part.
func TestSplitIndex(t *testing.T) {
	var f IndexFile
	for i := range 40 {
		p := IndexPack{PackInfo: PackInfo{ID: id.ID{byte(i)}, Length: 100, ShardSize: 50, K: 2, M: 1}}
		for j := range i % 7 {
			p.Blobs = append(p.Blobs, BlobEntry{Type: DataBlob, ID: id.ID{byte(i), byte(j)}, Offset: uint32(j), Length: 1, RawLength: 1})
		}
		f.Packs = append(f.Packs, p)
	}
	f.Supersedes = []id.ID{{1}, {2}, {3}}
	whole := len(encodeIndex(&f))
	largest := indexPackFixed + 6*indexBlobSize
	supersOnly := false
	for _, limit := range []int{whole, whole - 1, 1000, 500, 16 + 96 + largest, 16 + largest} {
		parts, err := splitIndex(&f, limit)
		if err != nil {
			t.Fatalf("limit %d: %v", limit, err)
		}
		if (limit >= whole) != (len(parts) == 1) {
			t.Errorf("limit %d (whole %d): %d parts", limit, whole, len(parts))
		}
		var packs []IndexPack
		for i, p := range parts {
			if n := len(encodeIndex(p)); n > limit {
				t.Errorf("limit %d: part %d encodes to %d bytes", limit, i, n)
			}
			if (len(p.Supersedes) > 0) != (i == len(parts)-1) {
				t.Errorf("limit %d: part %d of %d supersedes %d objects", limit, i, len(parts), len(p.Supersedes))
			}
			if len(p.Packs) == 0 {
				supersOnly = true
			}
			packs = append(packs, p.Packs...)
		}
		if len(packs) != len(f.Packs) {
			t.Fatalf("limit %d: %d packs in the parts, want %d", limit, len(packs), len(f.Packs))
		}
		for i := range packs {
			if packs[i].ID != f.Packs[i].ID || len(packs[i].Blobs) != len(f.Packs[i].Blobs) {
				t.Fatalf("limit %d: pack %d differs", limit, i)
			}
		}
	}
	if !supersOnly {
		t.Error("no limit made Supersedes go to a part of its own")
	}
	if _, err := splitIndex(&f, 16+largest-1); err == nil {
		t.Error("a pack larger than the limit was accepted")
	}
	if _, err := splitIndex(&IndexFile{Supersedes: f.Supersedes}, 16+95); err == nil {
		t.Error("supersedes larger than the limit accepted")
	}
}

// TestReadLimited: reading stops one byte past the limit, and what it
// allocates stays near twice the limit.
func TestReadLimited(t *testing.T) {
	const limit = 1 << 20
	for _, n := range []int{0, 1, 32 << 10, limit - 1, limit, limit + 1, 10 * limit} {
		src := bytes.Repeat([]byte{'a'}, n)
		for _, reader := range []func() io.Reader{
			func() io.Reader { return bytes.NewReader(src) },
			func() io.Reader { return iotest.OneByteReader(bytes.NewReader(src)) },
			func() io.Reader { return iotest.DataErrReader(bytes.NewReader(src)) },
		} {
			var b []byte
			var err error
			alloc := minAllocated(func() { b, err = readLimited(reader(), limit) })
			if n <= limit && (err != nil || !bytes.Equal(b, src)) {
				t.Errorf("%d bytes: read %d, %v", n, len(b), err)
			}
			if n > limit && !errors.Is(err, ErrTooLarge) {
				t.Errorf("%d bytes: read %d, %v; want ErrTooLarge", n, len(b), err)
			}
			// The doubling costs 2×limit; the margin covers the
			// metric's granularity (io.ReadAll would cost about 5×).
			if alloc > 5*limit/2 {
				t.Errorf("%d bytes: allocated %d", n, alloc)
			}
		}
	}
	// Config and key slots are bounded as well.
	ctx := context.Background()
	be := tierstest.NewMemory()
	if err := tiers.PutBytes(ctx, be, configHandle, bytes.Repeat([]byte(" "), maxSmallObject+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadConfig(ctx, be); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), be.Location()) {
		t.Errorf("oversized config: %v", err)
	}
}
