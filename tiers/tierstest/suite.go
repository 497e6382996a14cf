// Package tierstest is test support for tiers.Backend implementations and
// their users; it is not used by production code.
//
// Run is the conformance suite: every backend (local directory, S3, DR
// site) and every wrapper calls it from its tests, and it checks each point
// of the tiers.Backend contract through the interface only. RunReadOnly is
// its read side for read-only backends (the tape tier), which cannot store
// the objects Run reads back: it runs the same checks against objects the
// backend already holds, and checks that writes are refused. Faulty wraps a
// backend to inject errors, truncation and corruption deterministically;
// CountingBackend counts calls and bytes per object type so tests can
// assert what was transferred.
package tierstest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// Run runs the conformance suite against backends made by newBackend.
//
// newBackend is called once per subtest and must return an empty backend
// (a fresh directory, a fresh bucket prefix); Run fails the subtest if any
// object is already listed. Run removes everything the subtest stored and
// closes the backend in a t.Cleanup registered after newBackend returns, so
// resources newBackend releases with its own t.Cleanup are still available
// then. Subtests run in parallel with each other; Run returns when all have
// finished. The suite uses nothing but the tiers.Backend interface.
func Run(t *testing.T, newBackend func(t *testing.T) tiers.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, be tiers.Backend)
	}{
		{"Empty", testEmpty},
		{"RoundTrip", testRoundTrip},
		{"Names", testNames},
		{"RangedLoad", testRangedLoad},
		{"ShortRead", testShortRead},
		{"InvalidRange", testInvalidRange},
		{"List", testList},
		{"ListCallbackError", testListCallbackError},
		{"TypesAreSeparate", testTypesAreSeparate},
		{"Overwrite", testOverwrite},
		{"Remove", testRemove},
		{"InvalidHandle", testInvalidHandle},
		{"SizeMismatch", testSizeMismatch},
		{"ReaderError", testReaderError},
		{"AtomicVisibility", testAtomicVisibility},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ConcurrentSameName", testConcurrentSameName},
		{"LoadCallback", testLoadCallback},
		{"ContextCanceled", testContextCanceled},
	}
	t.Run("conformance", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				be := subtestBackend(t, newBackend, removeAll)
				if got := listAll(t, be); len(got) != 0 {
					t.Fatalf("newBackend must return an empty backend; %s holds %v", be.Location(), got)
				}
				tc.fn(t, be)
			})
		}
	})
}

// --- helpers ---

// subtestBackend returns a backend made by newBackend for one subtest and
// checks its Location. A t.Cleanup runs cleanup (if not nil), then closes
// the backend.
func subtestBackend(t *testing.T, newBackend func(t *testing.T) tiers.Backend, cleanup func(t *testing.T, be tiers.Backend)) tiers.Backend {
	t.Helper()
	be := newBackend(t)
	if be == nil {
		t.Fatal("newBackend returned nil")
	}
	t.Cleanup(func() {
		if cleanup != nil {
			cleanup(t, be)
		}
		if err := be.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if be.Location() == "" {
		t.Error("Location() is empty")
	}
	return be
}

// payload returns n deterministic pseudo-random bytes derived from seed.
func payload(seed string, n int) []byte {
	s := sha256.Sum256([]byte(seed))
	r := rand.NewChaCha8(s)
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

// hashName returns the content-hash name of b, as the repository uses.
func hashName(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func handleFor(t tiers.Type, b []byte) tiers.Handle {
	if t == tiers.TypeConfig {
		return tiers.Handle{Type: t, Name: "config"}
	}
	return tiers.Handle{Type: t, Name: hashName(b)}
}

func put(t *testing.T, be tiers.Backend, h tiers.Handle, b []byte) {
	t.Helper()
	if err := tiers.PutBytes(t.Context(), be, h, b); err != nil {
		t.Fatalf("Put %v (%d bytes): %v", h, len(b), err)
	}
}

// load reads the given range through Load, without the length check of
// tiers.LoadAll, and reports how often fn was called.
func load(ctx context.Context, be tiers.Backend, h tiers.Handle, offset, length int64) ([]byte, int, error) {
	var buf []byte
	calls := 0
	err := be.Load(ctx, h, offset, length, func(rd io.Reader) error {
		calls++
		b, err := io.ReadAll(rd)
		buf = b
		return err
	})
	return buf, calls, err
}

func mustLoad(t *testing.T, be tiers.Backend, h tiers.Handle, want []byte) {
	t.Helper()
	got, _, err := load(t.Context(), be, h, 0, 0)
	if err != nil {
		t.Fatalf("Load %v: %v", h, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Load %v: got %d bytes %s, want %d bytes %s", h, len(got), digest(got), len(want), digest(want))
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:6])
}

func mustNotExist(t *testing.T, be tiers.Backend, h tiers.Handle) {
	t.Helper()
	ctx := t.Context()
	if oi, err := be.Stat(ctx, h); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Stat %v: got (%+v, %v), want ErrNotFound", h, oi, err)
	}
	if _, calls, err := load(ctx, be, h, 0, 0); !errors.Is(err, tiers.ErrNotFound) || calls != 0 {
		t.Errorf("Load %v: got %v with %d callback calls, want ErrNotFound and none", h, err, calls)
	}
	for _, n := range listNames(t, be, h.Type) {
		if n == h.Name {
			t.Errorf("List %s reports %v, which should not exist", h.Type, h)
		}
	}
}

// listType returns name -> size for type typ.
func listType(t *testing.T, be tiers.Backend, typ tiers.Type) map[string]int64 {
	t.Helper()
	m := make(map[string]int64)
	err := be.List(t.Context(), typ, func(oi tiers.ObjectInfo) error {
		if oi.Handle.Type != typ {
			t.Errorf("List %s reports %v of another type", typ, oi.Handle)
		}
		if _, dup := m[oi.Handle.Name]; dup {
			t.Errorf("List %s reports %s twice", typ, oi.Handle.Name)
		}
		m[oi.Handle.Name] = oi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List %s: %v", typ, err)
	}
	return m
}

func listNames(t *testing.T, be tiers.Backend, typ tiers.Type) []string {
	t.Helper()
	var names []string
	for n := range listType(t, be, typ) {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func listAll(t *testing.T, be tiers.Backend) []tiers.Handle {
	t.Helper()
	var hs []tiers.Handle
	for _, typ := range tiers.AllTypes {
		for _, n := range listNames(t, be, typ) {
			hs = append(hs, tiers.Handle{Type: typ, Name: n})
		}
	}
	return hs
}

func mustBeEmpty(t *testing.T, be tiers.Backend) {
	t.Helper()
	if hs := listAll(t, be); len(hs) != 0 {
		t.Errorf("backend should hold no objects, lists %v", hs)
	}
}

// removeAll removes every listed object; it runs in t.Cleanup, after
// t.Context is cancelled.
func removeAll(t *testing.T, be tiers.Backend) {
	ctx := context.Background()
	for _, typ := range tiers.AllTypes {
		var hs []tiers.Handle
		err := be.List(ctx, typ, func(oi tiers.ObjectInfo) error {
			hs = append(hs, oi.Handle)
			return nil
		})
		if err != nil {
			t.Errorf("cleanup: List %s: %v", typ, err)
			continue
		}
		for _, h := range hs {
			if err := be.Remove(ctx, h); err != nil {
				t.Errorf("cleanup: Remove %v: %v", h, err)
			}
		}
	}
}

// --- subtests ---

func testEmpty(t *testing.T, be tiers.Backend) {
	for _, h := range absentHandles(nil) {
		mustNotExist(t, be, h)
		if err := be.Remove(t.Context(), h); err != nil {
			t.Errorf("Remove of missing %v: %v, want nil", h, err)
		}
	}
}

func testRoundTrip(t *testing.T, be tiers.Backend) {
	sizes := map[tiers.Type][]int{
		tiers.TypeConfig:    {1},
		tiers.TypeKey:       {1, 417},
		tiers.TypeData:      {1, 1000, 5<<20 + 3},
		tiers.TypeIndex:     {1, 4096},
		tiers.TypeSnapshot:  {1, 333},
		tiers.TypeTombstone: {1, 64},
	}
	stored := make(map[tiers.Handle]int64)
	for _, typ := range tiers.AllTypes {
		for _, n := range sizes[typ] {
			b := payload(fmt.Sprintf("roundtrip %s %d", typ, n), n)
			h := handleFor(typ, b)
			put(t, be, h, b)
			checkObject(t, be, h, b)
			stored[h] = int64(n)
		}
	}
	// Every object put is listed with its size.
	checkListing(t, be, stored)
}

func testNames(t *testing.T, be tiers.Backend) {
	names := []string{
		"a", "Z", "0", "ab", "a.b", "a-b_c.d", "x.", "A-Za-z0-9._-",
		strings.Repeat("f", 128),
		strings.Repeat("0123456789abcdef", 8)[:127] + ".",
	}
	for _, typ := range []tiers.Type{tiers.TypeData, tiers.TypeIndex} {
		for _, n := range names {
			h := tiers.Handle{Type: typ, Name: n}
			b := payload("names "+h.String(), 10+len(n))
			put(t, be, h, b)
			mustLoad(t, be, h, b)
		}
		got := listNames(t, be, typ)
		want := slices.Clone(names)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("List %s: got %q, want %q", typ, got, want)
		}
	}
}

func testRangedLoad(t *testing.T, be tiers.Backend) {
	// A small object, and one large enough for the local tier's direct
	// reads (ranges of 1 MiB and more), with an unaligned size.
	for _, size := range []int{4099, 2<<20 + 4099} {
		b := payload(fmt.Sprintf("ranged %d", size), size)
		h := handleFor(tiers.TypeData, b)
		put(t, be, h, b)
		checkRanges(t, be, h, b)
	}
}

func testShortRead(t *testing.T, be tiers.Backend) {
	b := payload("short", 1000)
	h := handleFor(tiers.TypeIndex, b)
	put(t, be, h, b)
	checkShortReads(t, be, h, b)
}

func testInvalidRange(t *testing.T, be tiers.Backend) {
	b := payload("invalid range", 100)
	h := handleFor(tiers.TypeData, b)
	put(t, be, h, b)
	checkInvalidRanges(t, be, h)
}

func testList(t *testing.T, be tiers.Backend) {
	want := make(map[tiers.Handle]int64)
	for i, typ := range tiers.AllTypes {
		n := 5
		if typ == tiers.TypeConfig {
			n = 1
		}
		for j := range n {
			b := payload(fmt.Sprintf("list %s %d", typ, j), 1+100*i+j)
			h := handleFor(typ, b)
			put(t, be, h, b)
			want[h] = int64(len(b))
		}
	}
	checkListing(t, be, want)
}

func testListCallbackError(t *testing.T, be tiers.Backend) {
	for i := range 5 {
		b := payload(fmt.Sprint("listerr ", i), 10)
		put(t, be, handleFor(tiers.TypeSnapshot, b), b)
	}
	checkListCallbackError(t, be, tiers.TypeSnapshot)
}

func testTypesAreSeparate(t *testing.T, be tiers.Backend) {
	ctx := t.Context()
	const name = "0123456789abcdef"
	var hs []tiers.Handle
	for _, typ := range tiers.AllTypes {
		if typ == tiers.TypeConfig {
			continue
		}
		h := tiers.Handle{Type: typ, Name: name}
		put(t, be, h, []byte("object of type "+string(typ)))
		hs = append(hs, h)
	}
	for _, h := range hs {
		mustLoad(t, be, h, []byte("object of type "+string(h.Type)))
		if got := listNames(t, be, h.Type); !slices.Equal(got, []string{name}) {
			t.Errorf("List %s: got %q, want [%s]", h.Type, got, name)
		}
	}
	if got := listNames(t, be, tiers.TypeConfig); len(got) != 0 {
		t.Errorf("List config: got %q, want nothing", got)
	}
	// Removing one leaves the others.
	if err := be.Remove(ctx, hs[0]); err != nil {
		t.Fatalf("Remove %v: %v", hs[0], err)
	}
	mustNotExist(t, be, hs[0])
	for _, h := range hs[1:] {
		mustLoad(t, be, h, []byte("object of type "+string(h.Type)))
	}
}

func testOverwrite(t *testing.T, be tiers.Backend) {
	ctx := t.Context()
	// Content-addressed objects: putting the same bytes again is a no-op.
	b := payload("overwrite", 3000)
	h := handleFor(tiers.TypeData, b)
	put(t, be, h, b)
	put(t, be, h, b)
	mustLoad(t, be, h, b)
	if got := listNames(t, be, tiers.TypeData); !slices.Equal(got, []string{h.Name}) {
		t.Errorf("List data after overwrite: %q", got)
	}
	// The config object is replaced by different bytes of another size.
	ch := tiers.Handle{Type: tiers.TypeConfig, Name: "config"}
	put(t, be, ch, []byte("config version 1, somewhat longer"))
	put(t, be, ch, []byte("config v2"))
	mustLoad(t, be, ch, []byte("config v2"))
	if oi, err := be.Stat(ctx, ch); err != nil || oi.Size != 9 {
		t.Errorf("Stat config after replace: %+v, %v; want size 9", oi, err)
	}
	if got := listType(t, be, tiers.TypeConfig); len(got) != 1 || got["config"] != 9 {
		t.Errorf("List config after replace: %v", got)
	}
}

func testRemove(t *testing.T, be tiers.Backend) {
	ctx := t.Context()
	var hs []tiers.Handle
	for _, typ := range tiers.AllTypes {
		b := payload("remove "+string(typ), 200)
		h := handleFor(typ, b)
		put(t, be, h, b)
		hs = append(hs, h)
	}
	keep := payload("remove keep", 50)
	kh := handleFor(tiers.TypeData, keep)
	put(t, be, kh, keep)
	for _, h := range hs {
		if err := be.Remove(ctx, h); err != nil {
			t.Fatalf("Remove %v: %v", h, err)
		}
		mustNotExist(t, be, h)
		if err := be.Remove(ctx, h); err != nil {
			t.Errorf("second Remove %v: %v, want nil", h, err)
		}
	}
	mustLoad(t, be, kh, keep)
	if got := listNames(t, be, tiers.TypeData); !slices.Equal(got, []string{kh.Name}) {
		t.Errorf("List data after removals: %q, want [%s]", got, kh.Name)
	}
	// Put after Remove works.
	put(t, be, hs[0], payload("remove "+string(hs[0].Type), 200))
	mustLoad(t, be, hs[0], payload("remove "+string(hs[0].Type), 200))
}

// badHandles are handles every method must reject with ErrInvalidHandle.
var badHandles = []tiers.Handle{
	{Type: tiers.TypeData, Name: "../x"},
	{Type: tiers.TypeData, Name: ".."},
	{Type: tiers.TypeData, Name: "."},
	{Type: tiers.TypeData, Name: "a/b"},
	{Type: tiers.TypeData, Name: `a\b`},
	{Type: tiers.TypeData, Name: "/abs"},
	{Type: tiers.TypeData, Name: ""},
	{Type: tiers.TypeData, Name: ".hidden"},
	{Type: tiers.TypeData, Name: "nul\x00byte"},
	{Type: tiers.TypeData, Name: "new\nline"},
	{Type: tiers.TypeData, Name: "sp ace"},
	{Type: tiers.TypeData, Name: "a..b"},
	{Type: tiers.TypeData, Name: "ü"},
	{Type: tiers.TypeData, Name: strings.Repeat("a", 129)},
	{Type: tiers.TypeIndex, Name: "../data/ab/abc"},
	{Type: tiers.TypeKey, Name: "x/../../etc"},
	{Type: tiers.TypeConfig, Name: "other"},
	{Type: tiers.TypeConfig, Name: ""},
	{Type: "", Name: "abc"},
	{Type: "tmp", Name: "abc"},
	{Type: "../data", Name: "abc"},
	{Type: "data/", Name: "abc"},
	{Type: "Data", Name: "abc"},
}

func testInvalidHandle(t *testing.T, be tiers.Backend) {
	checkInvalidHandles(t, be)
	mustBeEmpty(t, be)
}

// checkInvalidHandles checks that every method refuses the bad handles
// and types with ErrInvalidHandle, Load and List without calling fn.
func checkInvalidHandles(t *testing.T, be tiers.Backend) {
	t.Helper()
	ctx := t.Context()
	for _, h := range badHandles {
		if err := tiers.PutBytes(ctx, be, h, []byte("x")); !errors.Is(err, tiers.ErrInvalidHandle) {
			t.Errorf("Put %q: got %v, want ErrInvalidHandle", h.String(), err)
		}
		if _, calls, err := load(ctx, be, h, 0, 0); !errors.Is(err, tiers.ErrInvalidHandle) || calls != 0 {
			t.Errorf("Load %q: got %v with %d callback calls, want ErrInvalidHandle", h.String(), err, calls)
		}
		if _, err := be.Stat(ctx, h); !errors.Is(err, tiers.ErrInvalidHandle) {
			t.Errorf("Stat %q: got %v, want ErrInvalidHandle", h.String(), err)
		}
		if err := be.Remove(ctx, h); !errors.Is(err, tiers.ErrInvalidHandle) {
			t.Errorf("Remove %q: got %v, want ErrInvalidHandle", h.String(), err)
		}
	}
	for _, typ := range []tiers.Type{"", "tmp", "../data", "data/", "Data", "."} {
		called := false
		err := be.List(ctx, typ, func(tiers.ObjectInfo) error { called = true; return nil })
		if !errors.Is(err, tiers.ErrInvalidHandle) || called {
			t.Errorf("List %q: got %v (callback called: %v), want ErrInvalidHandle", typ, err, called)
		}
	}
}

// sizedReader yields the given bytes; it is not an io.Seeker or WriterTo so
// backends cannot learn the real length other than by reading.
type sizedReader struct{ r *bytes.Reader }

func (s *sizedReader) Read(p []byte) (int, error) { return s.r.Read(p) }

func newReader(b []byte) io.Reader { return &sizedReader{bytes.NewReader(b)} }

func testSizeMismatch(t *testing.T, be tiers.Backend) {
	ctx := t.Context()
	for _, n := range []int{10, 1 << 20} {
		b := payload(fmt.Sprint("mismatch ", n), n)
		h := handleFor(tiers.TypeData, b)
		if err := be.Put(ctx, h, newReader(b[:n-1]), int64(n)); err == nil {
			t.Errorf("Put of %d bytes announced as %d succeeded", n-1, n)
		}
		mustNotExist(t, be, h)
		if err := be.Put(ctx, h, newReader(b), int64(n-1)); err == nil {
			t.Errorf("Put of %d bytes announced as %d succeeded", n, n-1)
		}
		mustNotExist(t, be, h)
		if err := be.Put(ctx, h, newReader(nil), int64(n)); err == nil {
			t.Errorf("Put of 0 bytes announced as %d succeeded", n)
		}
		mustNotExist(t, be, h)
	}
	mustBeEmpty(t, be)

	// A failed overwrite leaves the existing object intact.
	ch := tiers.Handle{Type: tiers.TypeConfig, Name: "config"}
	put(t, be, ch, []byte("good config"))
	if err := be.Put(ctx, ch, newReader([]byte("bad")), 11); err == nil {
		t.Error("short overwrite of config succeeded")
	}
	mustLoad(t, be, ch, []byte("good config"))
}

// failingReader yields n bytes of b, then fails with err.
type failingReader struct {
	b   []byte
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	k := copy(p[:min(len(p), f.n)], f.b)
	f.b, f.n = f.b[k:], f.n-k
	return k, nil
}

func testReaderError(t *testing.T, be tiers.Backend) {
	ctx := t.Context()
	boom := errors.New("reader exploded")
	b := payload("reader error", 256<<10)
	h := handleFor(tiers.TypeData, b)
	for _, at := range []int{0, 1, 100 << 10, len(b)} {
		err := be.Put(ctx, h, &failingReader{b: b, n: at, err: boom}, int64(len(b)))
		if !errors.Is(err, boom) {
			t.Errorf("Put with reader failing after %d bytes: got %v, want an error wrapping the reader's", at, err)
		}
		mustNotExist(t, be, h)
	}
	mustBeEmpty(t, be)
}

// gateReader yields b, pausing after half of it until release is closed.
type gateReader struct {
	b       []byte
	half    int
	pos     int
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gateReader) Read(p []byte) (int, error) {
	if g.pos == g.half {
		g.once.Do(func() { close(g.reached) })
		<-g.release
	}
	if g.pos == len(g.b) {
		return 0, io.EOF
	}
	end := len(g.b)
	if g.pos < g.half {
		end = g.half
	}
	k := copy(p, g.b[g.pos:end])
	g.pos += k
	return k, nil
}

func testAtomicVisibility(t *testing.T, be tiers.Backend) {
	ctx := t.Context()
	b := payload("atomic", 512<<10)
	h := handleFor(tiers.TypeData, b)
	g := &gateReader{b: b, half: len(b) / 2, reached: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- be.Put(ctx, h, g, int64(len(b))) }()
	select {
	case <-g.reached:
	case err := <-done:
		t.Fatalf("Put returned before reading the whole body: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Put did not read half of the body within 30s")
	}
	// Half the body is with the backend: the object must not be visible.
	if oi, err := be.Stat(ctx, h); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Stat during Put: got (%+v, %v), want ErrNotFound", oi, err)
	}
	if got, _, err := load(ctx, be, h, 0, 0); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Load during Put: got %d bytes, %v; want ErrNotFound", len(got), err)
	}
	if got := listNames(t, be, tiers.TypeData); len(got) != 0 {
		t.Errorf("List during Put: %q, want nothing", got)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatalf("Put: %v", err)
	}
	mustLoad(t, be, h, b)
}

func testConcurrentPuts(t *testing.T, be tiers.Backend) {
	ctx := t.Context()
	const workers, each = 16, 8
	types := []tiers.Type{tiers.TypeData, tiers.TypeIndex, tiers.TypeSnapshot, tiers.TypeKey}
	objs := make([][]tiers.Handle, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				b := payload(fmt.Sprintf("concurrent %d %d", w, i), 1+(w*each+i)*997%(64<<10))
				h := handleFor(types[(w+i)%len(types)], b)
				if err := tiers.PutBytes(ctx, be, h, b); err != nil {
					errs <- fmt.Errorf("Put %v: %w", h, err)
					continue
				}
				objs[w] = append(objs[w], h)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := make(map[tiers.Type][]string)
	stored := make(map[tiers.Handle][]byte)
	for w := range workers {
		for i, h := range objs[w] {
			want[h.Type] = append(want[h.Type], h.Name)
			stored[h] = payload(fmt.Sprintf("concurrent %d %d", w, i), 1+(w*each+i)*997%(64<<10))
		}
	}
	checkConcurrentLoads(t, be, stored)
	for _, typ := range types {
		slices.Sort(want[typ])
		if got := listNames(t, be, typ); !slices.Equal(got, want[typ]) {
			t.Errorf("List %s: %d objects, want %d", typ, len(got), len(want[typ]))
		}
	}
}

func testConcurrentSameName(t *testing.T, be tiers.Backend) {
	ctx := t.Context()
	b := payload("same name", 256<<10)
	h := handleFor(tiers.TypeData, b)
	const writers, readers = 12, 4
	var (
		wg      sync.WaitGroup
		writing atomic.Int32
		errs    = make(chan error, writers+readers*1000)
	)
	writing.Store(writers)
	for range writers {
		wg.Go(func() {
			defer writing.Add(-1)
			if err := tiers.PutBytes(ctx, be, h, b); err != nil {
				errs <- fmt.Errorf("concurrent Put: %w", err)
			}
		})
	}
	for range readers {
		wg.Go(func() {
			for i := 0; writing.Load() > 0 && i < 1000; i++ {
				got, _, err := load(ctx, be, h, 0, 0)
				switch {
				case errors.Is(err, tiers.ErrNotFound):
				case err != nil:
					errs <- fmt.Errorf("Load during concurrent Puts: %w", err)
				case !bytes.Equal(got, b):
					errs <- fmt.Errorf("Load during concurrent Puts saw %d bytes %s, want %d bytes %s", len(got), digest(got), len(b), digest(b))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mustLoad(t, be, h, b)
	if got := listNames(t, be, tiers.TypeData); !slices.Equal(got, []string{h.Name}) {
		t.Errorf("List data: %q, want [%s]", got, h.Name)
	}
}

func testLoadCallback(t *testing.T, be tiers.Backend) {
	b := payload("callback", 5000)
	h := handleFor(tiers.TypeIndex, b)
	put(t, be, h, b)
	checkLoadCallback(t, be, h, b)
}

// cancelReader yields b and cancels ctx after n bytes.
type cancelReader struct {
	b      []byte
	n      int
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	if c.n <= 0 {
		c.cancel() // and keep yielding data: the backend must notice
	} else if len(p) > c.n {
		p = p[:c.n]
	}
	k := copy(p, c.b)
	c.b = c.b[k:]
	c.n -= k
	return k, nil
}

func testContextCanceled(t *testing.T, be tiers.Backend) {
	b := payload("cancel", 1<<20)
	h := handleFor(tiers.TypeData, b)
	put(t, be, h, b)
	checkCanceledReads(t, be, h, b)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	other := payload("cancel other", 100)
	oh := handleFor(tiers.TypeData, other)
	if err := tiers.PutBytes(ctx, be, oh, other); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with cancelled context: got %v, want context.Canceled", err)
	}
	mustNotExist(t, be, oh)
	if err := be.Remove(ctx, oh); !errors.Is(err, context.Canceled) {
		t.Errorf("Remove of missing object with cancelled context: got %v, want context.Canceled", err)
	}
	mustLoad(t, be, h, b)

	// Cancelled while the body is being sent: Put fails and stores nothing.
	big := payload("cancel midway", 2<<20)
	bh := handleFor(tiers.TypeData, big)
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	err := be.Put(ctx, bh, &cancelReader{b: big, n: len(big) / 2, cancel: cancel}, int64(len(big)))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put cancelled midway: got %v, want context.Canceled", err)
	}
	mustNotExist(t, be, bh)
}

// --- read-side checks, shared by Run and RunReadOnly ---
//
// Each checks objects the backend already holds, through reads only, and
// leaves them as they are.

// absentHandles returns the handles the Empty checks expect to find
// missing: one of each type and a data object with a one-byte name (the
// shortest fan-out prefix), less those in present.
func absentHandles(present map[tiers.Handle][]byte) []tiers.Handle {
	var hs []tiers.Handle
	for _, typ := range tiers.AllTypes {
		hs = append(hs, handleFor(typ, []byte("missing "+string(typ))))
	}
	hs = append(hs, tiers.Handle{Type: tiers.TypeData, Name: "a"})
	return slices.DeleteFunc(hs, func(h tiers.Handle) bool {
		_, ok := present[h]
		return ok
	})
}

// checkObject checks that be holds b under h: Stat reports h and its size,
// and Load, LoadAll with the exact length and a range in the middle (across
// buffer boundaries of a large object) yield b.
func checkObject(t *testing.T, be tiers.Backend, h tiers.Handle, b []byte) {
	t.Helper()
	ctx := t.Context()
	n := int64(len(b))
	oi, err := be.Stat(ctx, h)
	if err != nil {
		t.Fatalf("Stat %v: %v", h, err)
	}
	if oi.Handle != h || oi.Size != n {
		t.Errorf("Stat %v: got handle %v size %d, want size %d", h, oi.Handle, oi.Size, n)
	}
	mustLoad(t, be, h, b)
	got, err := tiers.LoadAll(ctx, be, h, 0, n)
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("LoadAll %v (0, %d): got %d bytes %s, %v; want %d bytes %s", h, n, len(got), digest(got), err, n, digest(b))
	}
	if n >= 3 {
		off, ln := n/3, n/3+1
		got, _, err := load(ctx, be, h, off, ln)
		if err != nil || !bytes.Equal(got, b[off:off+ln]) {
			t.Errorf("Load %v (%d, %d): got %d bytes %s, %v; want %d bytes %s", h, off, ln, len(got), digest(got), err, ln, digest(b[off:off+ln]))
		}
	}
}

// checkListing checks that List reports, for every type, exactly the
// objects in want with their sizes.
func checkListing(t *testing.T, be tiers.Backend, want map[tiers.Handle]int64) {
	t.Helper()
	for _, typ := range tiers.AllTypes {
		got := listType(t, be, typ)
		n := 0
		for h, sz := range want {
			if h.Type != typ {
				continue
			}
			n++
			if g, ok := got[h.Name]; !ok {
				t.Errorf("List %s: %s missing", typ, h.Name)
			} else if g != sz {
				t.Errorf("List %s: %s has size %d, want %d", typ, h.Name, g, sz)
			}
		}
		for name := range got {
			if _, ok := want[tiers.Handle{Type: typ, Name: name}]; !ok {
				t.Errorf("List %s: unexpected %s", typ, name)
			}
		}
		if len(got) != n {
			t.Errorf("List %s: %d objects, want %d", typ, len(got), n)
		}
	}
}

// checkRanges checks ranged loads of h, which holds b: at the start, in
// the middle and at the very end, with and without a length. Ranges that do
// not fit in a small object are left out.
func checkRanges(t *testing.T, be tiers.Backend, h tiers.Handle, b []byte) {
	t.Helper()
	ctx := t.Context()
	size := int64(len(b))
	cases := []struct{ off, ln int64 }{
		{0, 0}, {0, size}, {0, 1}, {1, 0}, {100, 50}, {size / 2, size / 2},
		{size - 10, 10}, {size - 10, 0}, {size - 1, 1}, {size - 1, 0},
		{size, 0}, // empty range at the very end
	}
	for _, c := range cases {
		if c.off < 0 || c.off+c.ln > size {
			continue
		}
		want := b[c.off:]
		if c.ln > 0 {
			want = b[c.off : c.off+c.ln]
		}
		got, calls, err := load(ctx, be, h, c.off, c.ln)
		if err != nil {
			t.Errorf("Load %v (%d, %d): %v", h, c.off, c.ln, err)
			continue
		}
		if calls < 1 {
			t.Errorf("Load %v (%d, %d): callback not called", h, c.off, c.ln)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("Load %v (%d, %d): got %d bytes %s, want %d bytes %s", h, c.off, c.ln, len(got), digest(got), len(want), digest(want))
		}
		got, err = tiers.LoadAll(ctx, be, h, c.off, c.ln)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("LoadAll %v (%d, %d): got %d bytes %s, %v; want %d bytes %s", h, c.off, c.ln, len(got), digest(got), err, len(want), digest(want))
		}
	}
}

// checkShortReads checks that ranges reaching past the end of h, which
// holds b, fail with ErrShortRead and leave the object unharmed.
func checkShortReads(t *testing.T, be tiers.Backend, h tiers.Handle, b []byte) {
	t.Helper()
	ctx := t.Context()
	size := int64(len(b))
	cases := []struct{ off, ln int64 }{
		{0, size + 1}, {size - 10, 11}, {size, 1}, {size + 1, 0}, {size + 100, 5}, {1 << 40, 1},
	}
	for _, c := range cases {
		if c.off < 0 {
			continue // {size-10, 11} of an object under 10 bytes
		}
		if _, _, err := load(ctx, be, h, c.off, c.ln); !errors.Is(err, tiers.ErrShortRead) {
			t.Errorf("Load %v (%d, %d) of a %d-byte object: got %v, want ErrShortRead", h, c.off, c.ln, size, err)
		}
		if _, err := tiers.LoadAll(ctx, be, h, c.off, c.ln); !errors.Is(err, tiers.ErrShortRead) {
			t.Errorf("LoadAll %v (%d, %d) of a %d-byte object: got %v, want ErrShortRead", h, c.off, c.ln, size, err)
		}
	}
	mustLoad(t, be, h, b)
}

// checkInvalidRanges checks that negative offsets and lengths fail
// without calling fn.
func checkInvalidRanges(t *testing.T, be tiers.Backend, h tiers.Handle) {
	t.Helper()
	for _, c := range []struct{ off, ln int64 }{{-1, 0}, {0, -1}, {-5, 10}} {
		_, calls, err := load(t.Context(), be, h, c.off, c.ln)
		if err == nil || calls != 0 {
			t.Errorf("Load %v (%d, %d): got %v with %d callback calls, want an error and none", h, c.off, c.ln, err, calls)
		}
	}
}

// checkListCallbackError checks that List of typ, which must hold an
// object, stops at the callback's first error and returns it.
func checkListCallbackError(t *testing.T, be tiers.Backend, typ tiers.Type) {
	t.Helper()
	stop := errors.New("stop listing")
	calls := 0
	err := be.List(t.Context(), typ, func(tiers.ObjectInfo) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Errorf("List %s with failing callback: got %v, want the callback's error", typ, err)
	}
	if calls != 1 {
		t.Errorf("List %s went on after the callback failed: %d calls", typ, calls)
	}
}

// checkLoadCallback checks that Load of h, which holds b, returns the
// callback's error, whether the callback read everything or nothing, and
// that the object is unharmed.
func checkLoadCallback(t *testing.T, be tiers.Backend, h tiers.Handle, b []byte) {
	t.Helper()
	ctx := t.Context()
	fail := errors.New("callback failed")
	calls := 0
	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		calls++
		if _, err := io.Copy(io.Discard, rd); err != nil {
			return err
		}
		return fail
	})
	if !errors.Is(err, fail) {
		t.Errorf("Load %v: got %v, want the callback's error", h, err)
	}
	if calls < 1 {
		t.Errorf("Load %v did not call the callback", h)
	}
	// A callback failing before reading anything, on a range.
	size := int64(len(b))
	off, ln := size/2, min(20, size-size/2)
	err = be.Load(ctx, h, off, ln, func(io.Reader) error { return fail })
	if !errors.Is(err, fail) {
		t.Errorf("Load %v (%d, %d) with callback not reading: got %v, want the callback's error", h, off, ln, err)
	}
	// The object is unharmed and a successful callback yields nil.
	mustLoad(t, be, h, b)
}

// checkCanceledReads checks that Load, Stat and List with a cancelled
// context fail with context.Canceled without calling fn, both before h
// (which holds b) was loaded and after: a backend that caches must not
// serve a cached object to a cancelled caller.
func checkCanceledReads(t *testing.T, be tiers.Backend, h tiers.Handle, b []byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(when string) {
		t.Helper()
		if _, calls, err := load(ctx, be, h, 0, 0); !errors.Is(err, context.Canceled) || calls != 0 {
			t.Errorf("Load %v %s with cancelled context: got %v with %d callback calls, want context.Canceled and none", h, when, err, calls)
		}
		if _, err := be.Stat(ctx, h); !errors.Is(err, context.Canceled) {
			t.Errorf("Stat %v %s with cancelled context: got %v, want context.Canceled", h, when, err)
		}
		called := false
		err := be.List(ctx, h.Type, func(tiers.ObjectInfo) error { called = true; return nil })
		if !errors.Is(err, context.Canceled) || called {
			t.Errorf("List %s %s with cancelled context: got %v (callback called: %v), want context.Canceled", h.Type, when, err, called)
		}
	}
	check("before any load")
	mustLoad(t, be, h, b)
	check("once loaded")
}

// checkConcurrentLoads checks that readers loading every object of objs
// at once, each in its own order, whole and ranged, all get the right
// bytes.
func checkConcurrentLoads(t *testing.T, be tiers.Backend, objs map[tiers.Handle][]byte) {
	t.Helper()
	ctx := t.Context()
	hs := sortedHandles(objs)
	const readers = 6
	errs := make(chan error, readers*len(hs)*2)
	var wg sync.WaitGroup
	for r := range readers {
		wg.Go(func() {
			for i := range hs {
				k := (i + r*len(hs)/readers) % len(hs)
				if r%2 == 1 {
					k = len(hs) - 1 - k
				}
				h, b := hs[k], objs[hs[k]]
				got, err := tiers.LoadAll(ctx, be, h, 0, 0)
				if err != nil || !bytes.Equal(got, b) {
					errs <- fmt.Errorf("reader %d: LoadAll %v: got %d bytes %s, %v; want %d bytes %s", r, h, len(got), digest(got), err, len(b), digest(b))
				}
				if len(b) > 20 {
					got, err = tiers.LoadAll(ctx, be, h, 10, 10)
					if err != nil || !bytes.Equal(got, b[10:20]) {
						errs <- fmt.Errorf("reader %d: LoadAll %v (10, 10): got %d bytes %s, %v; want 10 bytes %s", r, h, len(got), digest(got), err, digest(b[10:20]))
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// sortedHandles returns the handles of objs in the order of
// tiers.AllTypes, then by name.
func sortedHandles(objs map[tiers.Handle][]byte) []tiers.Handle {
	hs := slices.Collect(maps.Keys(objs))
	slices.SortFunc(hs, func(a, b tiers.Handle) int {
		if c := cmp.Compare(slices.Index(tiers.AllTypes, a.Type), slices.Index(tiers.AllTypes, b.Type)); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return hs
}
