package chunking

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/restic/chunker"
)

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig(testPol)
	mod := func(f func(*Config)) Config { c := ok; f(&c); return c }
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"default", ok, false},
		{"small segments", smallConfig(), false},
		{"zero polynomial", mod(func(c *Config) { c.Pol = 0 }), true},
		{"degree 52", mod(func(c *Config) { c.Pol = 1<<52 | 3 }), true},
		{"reducible", mod(func(c *Config) { c.Pol = 1<<53 | 1<<1 }), true}, // x^53+x = x(x^52+1)
		{"min below window", mod(func(c *Config) { c.MinSize = 63 }), true},
		{"min at window", mod(func(c *Config) { c.MinSize = 64 }), false},
		{"max below min", mod(func(c *Config) { c.MaxSize = c.MinSize - 1 }), true},
		{"max equals min", mod(func(c *Config) { c.MaxSize = c.MinSize }), false},
		{"average bits unset", mod(func(c *Config) { c.AverageBits = 0 }), true},
		{"average bits too large", mod(func(c *Config) { c.AverageBits = 31 }), true},
		{"zero block too small", mod(func(c *Config) { c.ZeroBlock = 256 }), true},
		{"segment not multiple of zero block", mod(func(c *Config) { c.SegmentSize = 3 << 20; c.ZeroBlock = 40 << 10 }), true},
		{"segment smaller than zero block", mod(func(c *Config) { c.SegmentSize = 512; c.ZeroBlock = 1024 }), true},
		{"segment too large", mod(func(c *Config) { c.SegmentSize = 2 << 30 }), true},
		{"segment zero", mod(func(c *Config) { c.SegmentSize = 0 }), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v, want it to wrap ErrConfig", err)
			}
			if _, err2 := NewChunker(tt.cfg); (err2 != nil) != tt.wantErr {
				t.Fatalf("NewChunker: got error %v, want error %v", err2, tt.wantErr)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	cfg := Config{SegmentSize: 100}
	tests := []struct {
		name string
		size int64
		data []Range
		want []Segment
	}{
		{"empty", 0, []Range{{0, 10}}, nil},
		{"all hole", 250, nil, []Segment{{0, 100, nil}, {100, 100, nil}, {200, 50, nil}}},
		{"whole file", 200, []Range{{0, 200}}, []Segment{{0, 100, []Range{{0, 100}}}, {100, 100, []Range{{100, 100}}}}},
		{"crossing ranges", 250, []Range{{90, 20}, {150, 100}}, []Segment{
			{0, 100, []Range{{90, 10}}},
			{100, 100, []Range{{100, 10}, {150, 50}}},
			{200, 50, []Range{{200, 50}}},
		}},
		{"unsorted overlapping adjacent", 120, []Range{{50, 10}, {10, 20}, {25, 10}, {35, 5}, {0, 0}}, []Segment{
			{0, 100, []Range{{10, 30}, {50, 10}}},
			{100, 20, nil},
		}},
		{"clipped", 120, []Range{{-5, 10}, {110, 100}, {500, 1}, {-10, 5}}, []Segment{
			{0, 100, []Range{{0, 5}}},
			{100, 20, []Range{{110, 10}}},
		}},
		{"huge length", 50, []Range{{10, 1<<63 - 1}}, []Segment{{0, 50, []Range{{10, 40}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cfg.Plan(tt.size, tt.data)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i, s := range got {
				if cap(s.Data) != len(s.Data) {
					t.Errorf("segment %d: got cap %d, want capped at len %d", i, cap(s.Data), len(s.Data))
				}
			}
		})
	}
}

// PlanData gives Plan's segments that hold data, and nothing for holes:
// a file of 2^62 bytes with two data ranges is two segments.
func TestPlanData(t *testing.T) {
	cfg := Config{SegmentSize: 100}
	data := []Range{{90, 20}, {150, 100}, {420, 5}}
	var want []Segment
	for _, s := range cfg.Plan(500, data) {
		if len(s.Data) > 0 {
			want = append(want, s)
		}
	}
	if got := cfg.PlanData(500, data); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	const huge = 1 << 62
	cfg.SegmentSize = 128
	got := cfg.PlanData(huge, []Range{{huge / 2, 10}, {huge - 1, 1}})
	want = []Segment{{huge / 2, 128, []Range{{huge / 2, 10}}}, {huge - 128, 128, []Range{{huge - 1, 1}}}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := cfg.PlanData(huge, nil); len(got) != 0 {
		t.Errorf("all hole: got %v, want no segments", got)
	}
}

// fillReaderAt reads as a file of size bytes that are all b.
type fillReaderAt struct {
	size int64
	b    byte
}

func (f fillReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	for i := range p[:n] {
		p[i] = f.b
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// A sparse file may be as large as the kernel allows, 2^63-1 bytes (any
// user can make one on tmpfs, for one): data in its last segment
// must be planned without computing that segment's end past MaxInt64,
// which wrapped negative and made PlanData loop, appending pieces, until
// memory ran out. The last segment then chunks to the end of the file.
func TestPlanDataAtMaxFileSize(t *testing.T) {
	cfg := DefaultConfig(testPol)
	const size = math.MaxInt64
	ss := cfg.SegmentSize
	last := size / ss * ss
	// The failure is a loop that eats memory: end the test binary rather
	// than let it run on beside the other tests.
	watchdog := time.AfterFunc(5*time.Second, func() { panic("PlanData of a 2^63-1-byte file still running after 5 s") })
	got := cfg.PlanData(size, []Range{{last - 10, 20}, {size - 1, 1}})
	watchdog.Stop()
	want := []Segment{
		{last - ss, ss, []Range{{last - 10, 10}}},
		{last, size - last, []Range{{last, 10}, {size - 1, 1}}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	ext, err := mustChunker(t, cfg).ChunkSegment(t.Context(), fillReaderAt{size, 0xee}, got[1], make([]byte, ss))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ext); n == 0 {
		t.Fatal("last segment: no extents")
	} else if ext[0].Off != last || ext[n-1].End() != size || ext[n-1].Zero {
		t.Fatalf("last segment: got %d extents, first at %v, last ending at %v; want them to run from %d to a data extent ending at %d", n, ext[0].Off, ext[n-1].End(), last, int64(size))
	}
}

// zeroRuns returns random data of size n with the given ranges zeroed.
func zeroRuns(seed uint64, n int, zs ...Range) []byte {
	b := randBytes(seed, n)
	for _, z := range zs {
		clear(b[z.Off:z.End()])
	}
	return b
}

func TestChunkCoverage(t *testing.T) {
	const K, M = 1 << 10, 1 << 20
	small := smallConfig()
	tight := smallConfig()
	tight.MinSize, tight.MaxSize = 64*K, 256*K // most cuts are forced by MaxSize
	alternating := randBytes(5, 3*M)
	for b := 0; b < len(alternating); b += 128 * K {
		clear(alternating[b : b+64*K])
	}
	tests := []struct {
		name      string
		cfg       Config
		content   []byte
		wantZeros int // minimum number of zero extents
	}{
		{"empty", small, nil, 0},
		{"one byte", small, []byte{7}, 0},
		{"one zero byte", small, []byte{0}, 1},
		{"random 10MiB+123", small, randBytes(1, 10*M+123), 0},
		{"random two full segments", small, randBytes(2, 8*M), 0},
		{"random tight bounds", tight, randBytes(3, 9*M+5), 0},
		{"all zero 9MiB+17", small, make([]byte, 9*M+17), 3},
		{"zero runs", small, zeroRuns(4, 13*M+999,
			Range{0, 200 * K},          // at start
			Range{1 * M, 64 * K},       // exactly one aligned block
			Range{2 * M, 64*K - 1},     // one byte short of a block: not zero
			Range{3*M + 100, 200 * K},  // unaligned, covers two whole blocks
			Range{5 * M, 4 * M},        // large, across a segment boundary (two extents)
			Range{12*M - 64*K, 64 * K}, // last block of a segment
			Range{13 * M, 999},         // partial tail block at EOF
		), 7},
		{"alternating zero blocks", small, alternating, 20},
		{"default config random", DefaultConfig(testPol), randBytes(6, 40*M), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := int64(len(tt.content))
			r := &countingReaderAt{r: bytes.NewReader(tt.content)}
			got := chunkAll(t, tt.cfg, r, size, []Range{{0, size}})
			checkExtents(t, tt.cfg, got, tt.content)
			if r.n.Load() != size {
				t.Errorf("got %d bytes read, want %d", r.n.Load(), size)
			}
			zeros := 0
			for _, e := range got {
				if e.Zero {
					zeros++
				}
			}
			if zeros < tt.wantZeros {
				t.Errorf("got %d zero extents, want at least %d", zeros, tt.wantZeros)
			}

			// Same bytes as a stream, read in irregular pieces.
			stream := chunkStream(t, tt.cfg, &chunkedReader{r: bytes.NewReader(tt.content)})
			sameExtents(t, "stream vs segments", stream, got)

			// Same data again: identical boundaries.
			again := chunkAll(t, tt.cfg, bytes.NewReader(tt.content), size, []Range{{0, size}})
			sameExtents(t, "second run", again, got)
		})
	}
}

// TestChunkerReuse checks that a reused Chunker carries no state between
// segments: chunking segments in a different order gives the same result.
func TestChunkerReuse(t *testing.T) {
	cfg := smallConfig()
	content := zeroRuns(7, 12*1<<20, Range{3 << 20, 1 << 20})
	size := int64(len(content))
	want := chunkAll(t, cfg, bytes.NewReader(content), size, []Range{{0, size}})

	ch := mustChunker(t, cfg)
	segs := cfg.Plan(size, []Range{{0, size}})
	results := make([][]Extent, len(segs))
	for i := len(segs) - 1; i >= 0; i-- {
		var err error
		results[i], err = ch.ChunkSegment(context.Background(), bytes.NewReader(content), segs[i], make([]byte, cfg.SegmentSize))
		if err != nil {
			t.Fatal(err)
		}
	}
	var got []Extent
	for _, r := range results {
		got = append(got, r...)
	}
	sameExtents(t, "reversed order", got, want)

	// AppendSegment appends after existing extents.
	pre := []Extent{{Off: -1}}
	out, err := ch.AppendSegment(context.Background(), pre, bytes.NewReader(content), segs[0], make([]byte, cfg.SegmentSize))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1+len(results[0]) || out[0].Off != -1 {
		t.Fatalf("AppendSegment: got %d extents starting %+v, want %d after the existing one", len(out), out[0], 1+len(results[0]))
	}
}

// bigSize is the image size for the stability tests (smaller with -short).
func bigSize() int {
	if testing.Short() {
		return 64 << 20
	}
	return 200 << 20
}

// TestInPlaceOverwrite: rewriting 1 MiB in the middle of a 200 MiB image
// must change only the chunks around it.
func TestInPlaceOverwrite(t *testing.T) {
	cfg := DefaultConfig(testPol)
	h := NewHasher([32]byte{1})
	orig := randBytes(8, bigSize())
	size := int64(len(orig))
	before := chunkIDs(h, chunkAll(t, cfg, bytes.NewReader(orig), size, []Range{{0, size}}))

	mod := bytes.Clone(orig)
	copy(mod[len(mod)/2+12345:], randBytes(9, 1<<20))
	after := chunkIDs(h, chunkAll(t, cfg, bytes.NewReader(mod), size, []Range{{0, size}}))

	old := make(map[[32]byte]bool)
	for _, i := range before {
		old[i] = true
	}
	fresh := 0
	for _, i := range after {
		if !old[i] {
			fresh++
		}
	}
	t.Logf("%d chunks before, %d after, %d new", len(before), len(after), fresh)
	if fresh < 1 || fresh > 4 {
		t.Fatalf("got %d new chunk IDs after a 1 MiB overwrite, want 1..4", fresh)
	}
}

// TestInsertAtStart: inserting bytes shifts content against the fixed
// segment grid. CDC resynchronises inside every segment, so only the first
// and last chunk of each segment (plus the chunk holding the insertion)
// may change.
func TestInsertAtStart(t *testing.T) {
	cfg := DefaultConfig(testPol)
	h := NewHasher([32]byte{2})
	orig := randBytes(10, bigSize())
	before := chunkIDs(h, chunkAll(t, cfg, bytes.NewReader(orig), int64(len(orig)), []Range{{0, int64(len(orig))}}))

	mod := append(randBytes(11, 1000), orig...)
	size := int64(len(mod))
	exts := chunkAll(t, cfg, bytes.NewReader(mod), size, []Range{{0, size}})
	old := make(map[[32]byte]bool)
	for _, i := range before {
		old[i] = true
	}
	fresh, total := 0, 0
	for i, e := range exts {
		total++
		if old[h.ID(e.Data)] {
			continue
		}
		fresh++
		firstInSeg := e.Off%cfg.SegmentSize == 0
		lastInSeg := e.End()%cfg.SegmentSize == 0 || e.End() == size
		if !firstInSeg && !lastInSeg {
			t.Errorf("chunk %d [%d,%d) changed but is neither first nor last in its segment", i, e.Off, e.End())
		}
	}
	nseg := len(cfg.Plan(size, nil))
	t.Logf("%d chunks, %d new, %d segments", total, fresh, nseg)
	if fresh < 1 || fresh > 2*nseg {
		t.Fatalf("got %d new chunk IDs after inserting 1000 bytes, want 1..%d", fresh, 2*nseg)
	}
}

// failingReaderAt fails at or after failAt with err; it serves data
// otherwise and ends (io.EOF) at len(data).
type failingReaderAt struct {
	data   []byte
	failAt int64
	err    error
}

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt {
		n := max(0, f.failAt-off)
		copy(p, f.data[off:off+n])
		return int(n), f.err
	}
	return bytes.NewReader(f.data).ReadAt(p, off)
}

func TestChunkSegmentErrors(t *testing.T) {
	cfg := smallConfig()
	ss := cfg.SegmentSize
	content := randBytes(12, int(2*ss))
	errDisk := errors.New("disk on fire")
	good := Segment{Off: ss, Len: ss, Data: []Range{{ss, ss}}}
	tests := []struct {
		name    string
		r       io.ReaderAt
		seg     Segment
		buf     []byte
		wantIs  error
		wantMsg string
	}{
		{"short read", failingReaderAt{content, ss + 5<<20/2, io.EOF}, good, make([]byte, ss), ErrShortRead, "offset 6815744"},
		{"read error", failingReaderAt{content, ss + 123456, errDisk}, good, make([]byte, ss), errDisk, "offset 4317760"},
		{"file ends before segment", bytes.NewReader(content[:ss]), good, make([]byte, ss), ErrShortRead, "offset 4194304"},
		{"no progress", failingReaderAt{content, ss + 10, nil}, good, make([]byte, ss), io.ErrNoProgress, "offset 4194314"},
		{"small buffer", bytes.NewReader(content), good, make([]byte, ss-1), nil, "buffer"},
		{"unaligned segment", bytes.NewReader(content), Segment{Off: 4096, Len: 10, Data: []Range{{4096, 10}}}, make([]byte, ss), nil, "aligned"},
		{"oversized segment", bytes.NewReader(content), Segment{Off: 0, Len: ss + 1}, nil, nil, "aligned"},
		{"negative length", bytes.NewReader(content), Segment{Off: 0, Len: -1}, nil, nil, "aligned"},
		{"data outside", bytes.NewReader(content), Segment{Off: 0, Len: 100, Data: []Range{{50, 51}}}, make([]byte, ss), nil, "outside"},
		{"data unsorted", bytes.NewReader(content), Segment{Off: 0, Len: 100, Data: []Range{{50, 10}, {0, 10}}}, make([]byte, ss), nil, "unsorted"},
		{"data empty", bytes.NewReader(content), Segment{Off: 0, Len: 100, Data: []Range{{50, 0}}}, make([]byte, ss), nil, "empty"},
		{"overflowing segment", bytes.NewReader(content), Segment{Off: (1<<63 - 1) / ss * ss, Len: ss}, nil, nil, "aligned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := mustChunker(t, cfg)
			got, err := ch.ChunkSegment(context.Background(), tt.r, tt.seg, tt.buf)
			if err == nil {
				t.Fatalf("got %d extents and no error, want error", len(got))
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("got %v, want it to wrap %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestChunkSegmentNoData(t *testing.T) {
	ch := mustChunker(t, smallConfig())
	seg := Segment{Off: 8 << 20, Len: 3 << 20}
	got, err := ch.ChunkSegment(context.Background(), failingReaderAt{err: errors.New("must not read")}, seg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{Off: 8 << 20, Len: 3 << 20, Zero: true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestCancel(t *testing.T) {
	cfg := smallConfig()
	content := randBytes(13, int(cfg.SegmentSize))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ch := mustChunker(t, cfg)
	seg := Segment{Off: 0, Len: cfg.SegmentSize, Data: []Range{{0, cfg.SegmentSize}}}
	if _, err := ch.ChunkSegment(ctx, bytes.NewReader(content), seg, content); !errors.Is(err, context.Canceled) {
		t.Errorf("ChunkSegment: got %v, want context.Canceled", err)
	}
	err := ch.ChunkStream(ctx, bytes.NewReader(content), func(Extent) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ChunkStream: got %v, want context.Canceled", err)
	}
}

// errAfterReader serves data, then fails with err instead of io.EOF.
type errAfterReader struct {
	r   io.Reader
	err error
}

func (e *errAfterReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		err = e.err
	}
	return n, err
}

func TestChunkStreamErrors(t *testing.T) {
	cfg := smallConfig()
	content := randBytes(14, int(cfg.SegmentSize)+1000)
	errPipe := errors.New("broken pipe")
	ch := mustChunker(t, cfg)

	var n int
	err := ch.ChunkStream(context.Background(), &errAfterReader{bytes.NewReader(content), errPipe}, func(Extent) error { n++; return nil })
	if !errors.Is(err, errPipe) || !strings.Contains(err.Error(), "offset 4195304") {
		t.Errorf("read error: got %v, want it to wrap %v and mention offset 4195304", err, errPipe)
	}
	if n == 0 {
		t.Errorf("got no extents before the error, want the first segment's")
	}

	errStop := errors.New("stop")
	calls := 0
	err = ch.ChunkStream(context.Background(), bytes.NewReader(content), func(Extent) error { calls++; return errStop })
	if err != errStop || calls != 1 {
		t.Errorf("callback error: got %v after %d calls, want %v after 1", err, calls, errStop)
	}

	calls = 0
	err = ch.ChunkStream(context.Background(), bytes.NewReader(nil), func(Extent) error { calls++; return nil })
	if err != nil || calls != 0 {
		t.Errorf("empty stream: got %v and %d extents, want nil and 0", err, calls)
	}
}

// TestCDCMatchesRestic checks that a random run inside one segment is cut
// exactly where restic's own streaming chunker cuts it, with the default
// and with the legacy (restic's) chunk sizes.
func TestCDCMatchesRestic(t *testing.T) {
	for _, cfg := range []Config{DefaultConfig(testPol), LegacyConfig(testPol)} {
		content := randBytes(15, int(cfg.SegmentSize))
		got := chunkAll(t, cfg, bytes.NewReader(content), int64(len(content)), []Range{{0, int64(len(content))}})

		rc := chunker.New(bytes.NewReader(content), testPol, chunker.WithBoundaries(cfg.MinSize, cfg.MaxSize), chunker.WithAverageBits(cfg.AverageBits))
		var want []int64
		for {
			c, err := rc.Next(nil)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, int64(c.Start))
		}
		var gotOffs []int64
		for _, e := range got {
			gotOffs = append(gotOffs, e.Off)
		}
		if fmt.Sprint(gotOffs) != fmt.Sprint(want) {
			t.Fatalf("min %d avg bits %d: got chunk starts %v, want %v", cfg.MinSize, cfg.AverageBits, gotOffs, want)
		}
		if len(want) < 4 {
			t.Fatalf("min %d avg bits %d: only %d chunks in %d bytes", cfg.MinSize, cfg.AverageBits, len(want), len(content))
		}
	}
}

// TestChunkStreamTruncatedInput: a reader that reports its input cut
// short with io.ErrUnexpectedEOF (compress/gzip of a truncated file,
// for one) fails the stream, instead of ending it as if the input were
// complete, which stored the truncated stream as a whole one.
func TestChunkStreamTruncatedInput(t *testing.T) {
	cfg := smallConfig()
	content := randBytes(16, int(cfg.SegmentSize)+5000)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(z.Bytes()[:z.Len()-100]))
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	err = mustChunker(t, cfg).ChunkStream(context.Background(), zr, func(e Extent) error { got += e.Len; return nil })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated gzip input: got %v after %d of %d bytes, want an error wrapping io.ErrUnexpectedEOF", err, got, len(content))
	}
}
