package tierstest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

func TestMemoryConformance(t *testing.T) {
	tierstest.Run(t, func(*testing.T) tiers.Backend { return tierstest.NewMemory() })
}

func TestFaultyWithoutFaultsConformance(t *testing.T) {
	tierstest.Run(t, func(*testing.T) tiers.Backend { return tierstest.NewFaulty(tierstest.NewMemory(), 1) })
}

func TestCountingConformance(t *testing.T) {
	tierstest.Run(t, func(t *testing.T) tiers.Backend {
		l, err := tiers.NewLocal(filepath.Join(t.TempDir(), "repo"))
		if err != nil {
			t.Fatal(err)
		}
		return tierstest.NewCounting(l)
	})
}

// readOnly refuses writes to the backend it wraps and leaves it open at
// Close, as a read-only view of a shared store does.
type readOnly struct{ tiers.Backend }

func (r readOnly) Put(_ context.Context, h tiers.Handle, _ io.Reader, _ int64) error {
	if err := h.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("put %s: %w", h, tiers.ErrReadOnly)
}

func (r readOnly) Remove(_ context.Context, h tiers.Handle) error {
	if err := h.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("remove %s: %w", h, tiers.ErrReadOnly)
}

func (r readOnly) Close() error { return nil }

func TestMemoryReadOnlyConformance(t *testing.T) {
	mem := tierstest.NewMemory()
	want := map[tiers.Handle][]byte{
		{Type: tiers.TypeConfig, Name: "config"}:   []byte("config"),
		{Type: tiers.TypeData, Name: "d1"}:         bytes.Repeat([]byte("0123456789"), 1000),
		{Type: tiers.TypeData, Name: "d2"}:         []byte("a short shard"),
		{Type: tiers.TypeIndex, Name: "i1"}:        bytes.Repeat([]byte("index "), 40),
		{Type: tiers.TypeSnapshot, Name: "s1"}:     []byte("s"),
		{Type: tiers.TypeTombstone, Name: "t1"}:    []byte("tombstone"),
		{Type: tiers.TypeKey, Name: "k1"}:          bytes.Repeat([]byte{0xff}, 417),
		{Type: tiers.TypeData, Name: "d3.partial"}: []byte("0123456789abcdef0123"),
	}
	for h, b := range want {
		if err := tiers.PutBytes(t.Context(), mem, h, b); err != nil {
			t.Fatal(err)
		}
	}
	tierstest.RunReadOnly(t, func(*testing.T) tiers.Backend { return readOnly{mem} }, want)
}

func TestEmptyReadOnlyConformance(t *testing.T) {
	tierstest.RunReadOnly(t, func(*testing.T) tiers.Backend { return readOnly{tierstest.NewMemory()} }, nil)
}

var (
	h1 = tiers.Handle{Type: tiers.TypeData, Name: "aa01"}
	h2 = tiers.Handle{Type: tiers.TypeIndex, Name: "bb02"}
)

func loadAll(t *testing.T, be tiers.Backend, h tiers.Handle) ([]byte, error) {
	t.Helper()
	var out []byte
	err := be.Load(t.Context(), h, 0, 0, func(rd io.Reader) error {
		b, err := io.ReadAll(rd)
		out = b
		return err
	})
	return out, err
}

func TestFaultyFailBeforeAfter(t *testing.T) {
	ctx := t.Context()
	mem := tierstest.NewMemory()
	f := tierstest.NewFaulty(mem, 42)
	perm := errors.New("permanent")
	f.Inject(tierstest.Fault{Op: tierstest.OpPut, Name: h1.Name, Times: 1})
	f.Inject(tierstest.Fault{Op: tierstest.OpPut, Type: tiers.TypeIndex, Kind: tierstest.FailAfter, Err: perm, Times: 1})

	err := tiers.PutBytes(ctx, f, h1, []byte("one"))
	if !errors.Is(err, tierstest.ErrInjected) || !tiers.IsRetriable(err) {
		t.Errorf("FailBefore: %v (retriable %v)", err, tiers.IsRetriable(err))
	}
	if _, err := mem.Stat(ctx, h1); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("FailBefore reached the backend: %v", err)
	}
	if err := tiers.PutBytes(ctx, f, h1, []byte("one")); err != nil {
		t.Errorf("fault fired beyond Times: %v", err)
	}
	err = tiers.PutBytes(ctx, f, h2, []byte("two"))
	if !errors.Is(err, perm) || tiers.IsRetriable(err) {
		t.Errorf("FailAfter: %v", err)
	}
	if b, err := tiers.LoadAll(ctx, mem, h2, 0, 0); err != nil || string(b) != "two" {
		t.Errorf("FailAfter did not store: %q, %v", b, err)
	}
	if f.Fired() != 2 {
		t.Errorf("Fired = %d, want 2", f.Fired())
	}
	// Other operations.
	f.Inject(tierstest.Fault{Op: tierstest.OpStat})
	f.Inject(tierstest.Fault{Op: tierstest.OpRemove, Kind: tierstest.FailAfter})
	if _, err := f.Stat(ctx, h1); !errors.Is(err, tierstest.ErrInjected) {
		t.Errorf("Stat: %v", err)
	}
	if err := f.Remove(ctx, h1); !errors.Is(err, tierstest.ErrInjected) {
		t.Errorf("Remove: %v", err)
	}
	if _, err := mem.Stat(ctx, h1); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Remove with FailAfter did not remove: %v", err)
	}
	f.Reset()
	if _, err := f.Stat(ctx, h2); err != nil {
		t.Errorf("Stat after Reset: %v", err)
	}
}

func TestFaultySkipAndProbability(t *testing.T) {
	ctx := t.Context()
	pattern := func(seed uint64) []bool {
		f := tierstest.NewFaulty(tierstest.NewMemory(), seed)
		f.Inject(tierstest.Fault{Op: tierstest.OpStat, Skip: 2, Probability: 0.5})
		var out []bool
		for range 40 {
			_, err := f.Stat(ctx, h1)
			out = append(out, errors.Is(err, tierstest.ErrInjected))
		}
		return out
	}
	a, b, c := pattern(7), pattern(7), pattern(8)
	if !slices.Equal(a, b) {
		t.Error("same seed, different fault pattern")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds, same fault pattern")
	}
	if a[0] || a[1] {
		t.Error("Skip not honoured")
	}
	n := 0
	for _, x := range a {
		if x {
			n++
		}
	}
	if n < 5 || n > 35 {
		t.Errorf("probability 0.5 fired %d of 38 times", n)
	}
}

func TestFaultyStreams(t *testing.T) {
	ctx := t.Context()
	data := bytes.Repeat([]byte("0123456789"), 100)
	mem := tierstest.NewMemory()
	if err := tiers.PutBytes(ctx, mem, h1, data); err != nil {
		t.Fatal(err)
	}
	f := tierstest.NewFaulty(mem, 3)

	// FailStream on Put: the backend sees a failing reader.
	f.Inject(tierstest.Fault{Op: tierstest.OpPut, Kind: tierstest.FailStream, Offset: 10, Times: 1})
	if err := tiers.PutBytes(ctx, f, h2, data); !errors.Is(err, tierstest.ErrInjected) {
		t.Errorf("Put FailStream: %v", err)
	}
	if _, err := mem.Stat(ctx, h2); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Put FailStream stored: %v", err)
	}

	// FailStream on Load: fn's reader fails after Offset bytes.
	f.Inject(tierstest.Fault{Op: tierstest.OpLoad, Kind: tierstest.FailStream, Offset: 100, Times: 1})
	got, err := loadAll(t, f, h1)
	if !errors.Is(err, tierstest.ErrInjected) || len(got) != 100 {
		t.Errorf("Load FailStream: %d bytes, %v", len(got), err)
	}

	// Truncate on Load (default half) and explicit.
	f.Inject(tierstest.Fault{Op: tierstest.OpLoad, Kind: tierstest.Truncate, Times: 1})
	got, err = loadAll(t, f, h1)
	if err != nil || !bytes.Equal(got, data[:500]) {
		t.Errorf("Load Truncate: %d bytes, %v", len(got), err)
	}
	f.Inject(tierstest.Fault{Op: tierstest.OpLoad, Kind: tierstest.Truncate, Offset: 7, Times: 1})
	if _, err := tiers.LoadAll(ctx, f, h1, 0, 100); !errors.Is(err, tiers.ErrShortRead) {
		t.Errorf("LoadAll of truncated range: %v", err)
	}

	// Corrupt on Load: exactly one bit differs.
	f.Inject(tierstest.Fault{Op: tierstest.OpLoad, Kind: tierstest.Corrupt, Times: 1})
	got, err = loadAll(t, f, h1)
	if err != nil || bitDiff(got, data) != 1 {
		t.Errorf("Load Corrupt: %v, %d bits differ", err, bitDiff(got, data))
	}
	f.Inject(tierstest.Fault{Op: tierstest.OpLoad, Kind: tierstest.Corrupt, Offset: 1, Times: 1})
	got, _ = loadAll(t, f, h1)
	if got[0] == data[0] || !bytes.Equal(got[1:], data[1:]) {
		t.Error("Load Corrupt with Offset 1 did not flip the first byte")
	}

	// Corrupt and Truncate on Put store mangled objects silently.
	f.Inject(tierstest.Fault{Op: tierstest.OpPut, Name: h2.Name, Kind: tierstest.Corrupt, Times: 1})
	if err := tiers.PutBytes(ctx, f, h2, data); err != nil {
		t.Fatal(err)
	}
	got, _ = tiers.LoadAll(ctx, mem, h2, 0, 0)
	if bitDiff(got, data) != 1 {
		t.Errorf("Put Corrupt: %d bits differ", bitDiff(got, data))
	}
	f.Inject(tierstest.Fault{Op: tierstest.OpPut, Name: h2.Name, Kind: tierstest.Truncate, Offset: 10, Times: 1})
	if err := tiers.PutBytes(ctx, f, h2, data); err != nil {
		t.Fatal(err)
	}
	if oi, err := mem.Stat(ctx, h2); err != nil || oi.Size != 10 {
		t.Errorf("Put Truncate: %+v, %v", oi, err)
	}
	if f.Fired() != 8 {
		t.Errorf("Fired = %d, want 8", f.Fired())
	}
}

func bitDiff(a, b []byte) int {
	if len(a) != len(b) {
		return -1
	}
	n := 0
	for i := range a {
		for x := a[i] ^ b[i]; x != 0; x &= x - 1 {
			n++
		}
	}
	return n
}

func TestFaultyList(t *testing.T) {
	ctx := t.Context()
	mem := tierstest.NewMemory()
	for _, n := range []string{"a1", "a2", "a3"} {
		if err := tiers.PutBytes(ctx, mem, tiers.Handle{Type: tiers.TypeSnapshot, Name: n}, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	f := tierstest.NewFaulty(mem, 1)
	f.Inject(tierstest.Fault{Op: tierstest.OpList, Type: tiers.TypeSnapshot, Kind: tierstest.FailStream, Offset: 2})
	n := 0
	err := f.List(ctx, tiers.TypeSnapshot, func(tiers.ObjectInfo) error { n++; return nil })
	if !errors.Is(err, tierstest.ErrInjected) || n != 2 {
		t.Errorf("List FailStream: %d objects, %v", n, err)
	}
	// Other types are not affected.
	if err := f.List(ctx, tiers.TypeData, func(tiers.ObjectInfo) error { return nil }); err != nil {
		t.Errorf("List data: %v", err)
	}
}

func TestCounting(t *testing.T) {
	ctx := t.Context()
	c := tierstest.NewCounting(tierstest.NewMemory())
	data := bytes.Repeat([]byte("x"), 1000)
	if err := tiers.PutBytes(ctx, c, h1, data); err != nil {
		t.Fatal(err)
	}
	if err := tiers.PutBytes(ctx, c, h2, data[:10]); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, h2, bytes.NewReader(data[:5]), 10); err == nil {
		t.Fatal("short put succeeded")
	}
	if _, err := tiers.LoadAll(ctx, c, h1, 100, 200); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Stat(ctx, h1)
	_ = c.List(ctx, tiers.TypeData, func(tiers.ObjectInfo) error { return nil })
	_ = c.Remove(ctx, h2)

	want := tierstest.Counts{Puts: 1, Loads: 1, Stats: 1, Lists: 1, BytesPut: 1000, BytesLoaded: 200}
	if got := c.Counts(tiers.TypeData); got != want {
		t.Errorf("data counts %+v, want %+v", got, want)
	}
	want = tierstest.Counts{Puts: 2, Removes: 1, BytesPut: 15}
	if got := c.Counts(tiers.TypeIndex); got != want {
		t.Errorf("index counts %+v, want %+v", got, want)
	}
	if got := c.Total(); got.Puts != 3 || got.BytesPut != 1015 {
		t.Errorf("total %+v", got)
	}
	if got := c.Stored(); !slices.Equal(got, []tiers.Handle{h1, h2}) {
		t.Errorf("Stored = %v", got)
	}
	c.Reset()
	if got := c.Total(); got != (tierstest.Counts{}) || len(c.Stored()) != 0 {
		t.Errorf("after Reset: %+v, %v", got, c.Stored())
	}
}
