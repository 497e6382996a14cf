package tape_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
)

// The tape tier is read-only, and tiers/tierstest.Run creates with Put
// everything it then reads (and demands an empty backend to start
// from), so it cannot run against the tier. TestTierReadConformance
// holds the tier to the read side of the same contract instead, with
// checks named after the suite's, against a tape set written through
// the file-backed library. Suite checks that need Put to succeed do not
// apply: Names, Overwrite, Remove, SizeMismatch, ReaderError,
// AtomicVisibility, ConcurrentPuts, ConcurrentSameName (writers), the
// Put and Remove halves of Empty and ContextCanceled (the tier refuses
// every Put and Remove; ReadOnly checks that it does), and the cleanup
// that removes what a subtest stored.

// readLoad reads the range through Load, without tiers.LoadAll's length
// check, and reports how often fn was called.
func readLoad(ctx context.Context, be tiers.Backend, h tiers.Handle, off, n int64) ([]byte, int, error) {
	var out []byte
	calls := 0
	err := be.Load(ctx, h, off, n, func(r io.Reader) error {
		calls++
		b, err := io.ReadAll(r)
		out = b
		return err
	})
	return out, calls, err
}

// listed returns name → size for the objects of typ the tier lists,
// failing on another type or a name listed twice.
func listed(t *testing.T, be tiers.Backend, typ tiers.Type) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := be.List(t.Context(), typ, func(oi tiers.ObjectInfo) error {
		if oi.Handle.Type != typ {
			t.Errorf("List %s reports %s, of another type", typ, oi.Handle)
		}
		if _, dup := out[oi.Handle.Name]; dup {
			t.Errorf("List %s reports %s twice", typ, oi.Handle.Name)
		}
		out[oi.Handle.Name] = oi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List %s: %v", typ, err)
	}
	return out
}

// readBadHandles are handles every method must refuse with
// tiers.ErrInvalidHandle (a selection of tierstest's).
var readBadHandles = []tiers.Handle{
	{Type: tiers.TypeData, Name: "../x"},
	{Type: tiers.TypeData, Name: ".."},
	{Type: tiers.TypeData, Name: "a/b"},
	{Type: tiers.TypeData, Name: ""},
	{Type: tiers.TypeData, Name: ".hidden"},
	{Type: tiers.TypeData, Name: "nul\x00byte"},
	{Type: tiers.TypeData, Name: strings.Repeat("a", 129)},
	{Type: tiers.TypeIndex, Name: "../data/ab/abc"},
	{Type: tiers.TypeConfig, Name: "other"},
	{Type: "", Name: "abc"},
	{Type: "tmp", Name: "abc"},
	{Type: "../data", Name: "abc"},
	{Type: "Data", Name: "abc"},
}

func TestTierReadConformance(t *testing.T) {
	w := newWorld(t, erasure.Params{K: 2, M: 1}, tape.VirtualConfig{Generation: tape.LTO9, Slots: 6, Drives: 2, MailSlots: 1}, 30, 3<<20)
	pool := tape.DefaultPool("vault")
	w.label(pool, 4)
	res := w.write(pool, 1, time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC))
	if !res.Set.Complete || len(res.Set.Tapes) < 2 {
		t.Fatalf("set: complete %v, %d tapes; want a complete set of at least 2", res.Set.Complete, len(res.Set.Tapes))
	}
	want := allObjects(t, w.r.Backend())
	// A fresh tier per check, as the suite gives each its own backend.
	// Checks run one after another: tiers sharing a library do not
	// coordinate their drives.
	newTier := func(t *testing.T, pool string) tiers.Backend {
		tt := w.tier(pool, nil)
		t.Cleanup(func() {
			if err := tt.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return tt
	}
	byType := map[tiers.Type][]tiers.Handle{}
	for h := range want {
		byType[h.Type] = append(byType[h.Type], h)
	}
	for _, typ := range []tiers.Type{tiers.TypeConfig, tiers.TypeKey, tiers.TypeData, tiers.TypeIndex, tiers.TypeSnapshot} {
		if len(byType[typ]) == 0 {
			t.Fatalf("the repository has no %s object: nothing to read back", typ)
		}
		sort.Slice(byType[typ], func(i, j int) bool { return byType[typ][i].Name < byType[typ][j].Name })
	}
	t.Logf("set %s: %d tapes holding %d objects (%d data shards)", res.Set.ID[:8], len(res.Set.Tapes), len(want), len(byType[tiers.TypeData]))
	largest := func(typ tiers.Type) tiers.Handle {
		var best tiers.Handle
		for _, h := range byType[typ] {
			if len(want[h]) > len(want[best]) {
				best = h
			}
		}
		return best
	}
	missing := func(typ tiers.Type) tiers.Handle {
		if typ == tiers.TypeConfig {
			return tiers.Handle{} // every set holds the config
		}
		return tiers.Handle{Type: typ, Name: strings.Repeat("e0", 32)}
	}

	t.Run("Location", func(t *testing.T) {
		if newTier(t, "vault").Location() == "" {
			t.Error("Location() is empty")
		}
	})

	// Empty: what is not on tape is not found, by Stat, Load (without
	// calling fn) and List; a pool without sets holds nothing.
	notThere := func(t *testing.T, be tiers.Backend, h tiers.Handle) {
		t.Helper()
		if oi, err := be.Stat(t.Context(), h); !errors.Is(err, tiers.ErrNotFound) {
			t.Errorf("Stat %s: got (%+v, %v), want ErrNotFound", h, oi, err)
		}
		if _, calls, err := readLoad(t.Context(), be, h, 0, 0); !errors.Is(err, tiers.ErrNotFound) || calls != 0 {
			t.Errorf("Load %s: got %v with %d callback calls, want ErrNotFound and none", h, err, calls)
		}
		if _, ok := listed(t, be, h.Type)[h.Name]; ok {
			t.Errorf("List %s reports %s, which is not on tape", h.Type, h.Name)
		}
	}
	t.Run("Empty", func(t *testing.T) {
		be := newTier(t, "vault")
		for _, typ := range tiers.AllTypes {
			if typ != tiers.TypeConfig {
				notThere(t, be, missing(typ))
			}
		}
		notThere(t, be, tiers.Handle{Type: tiers.TypeData, Name: "a"})
		other := newTier(t, "other")
		for _, typ := range tiers.AllTypes {
			if got := listed(t, other, typ); len(got) != 0 {
				t.Errorf("a pool without sets lists %d %s objects", len(got), typ)
			}
		}
		for _, h := range []tiers.Handle{{Type: tiers.TypeConfig, Name: "config"}, largest(tiers.TypeData), byType[tiers.TypeSnapshot][0]} {
			notThere(t, other, h)
		}
	})

	// RoundTrip, read side: every object of the repository, whole,
	// through LoadAll with its length, Stat, and a range in the middle of
	// the largest.
	t.Run("RoundTrip", func(t *testing.T) {
		be := newTier(t, "vault")
		ctx := t.Context()
		for h, b := range want {
			oi, err := be.Stat(ctx, h)
			if err != nil || oi.Handle != h || oi.Size != int64(len(b)) {
				t.Errorf("Stat %s: got (%s, %d bytes, %v), want %d bytes", h, oi.Handle, oi.Size, err, len(b))
			}
			got, calls, err := readLoad(ctx, be, h, 0, 0)
			if err != nil || calls < 1 || !bytes.Equal(got, b) {
				t.Fatalf("Load %s: %d bytes (%d calls), %v; want %d bytes", h, len(got), calls, err, len(b))
			}
			got, err = tiers.LoadAll(ctx, be, h, 0, int64(len(b)))
			if err != nil || !bytes.Equal(got, b) {
				t.Errorf("LoadAll %s (0, %d): %d bytes, %v", h, len(b), len(got), err)
			}
		}
		h := largest(tiers.TypeData)
		b := want[h]
		off, n := int64(len(b)/3), int64(len(b)/3+7)
		if got, _, err := readLoad(ctx, be, h, off, n); err != nil || !bytes.Equal(got, b[off:off+n]) {
			t.Errorf("Load %s (%d, %d): %d bytes, %v", h, off, n, len(got), err)
		}
	})

	t.Run("RangedLoad", func(t *testing.T) {
		be := newTier(t, "vault")
		ctx := t.Context()
		h := largest(tiers.TypeData)
		b := want[h]
		size := int64(len(b))
		if size < 200 {
			t.Fatalf("largest shard is %d bytes, too small for the ranges", size)
		}
		for _, c := range []struct{ off, n int64 }{
			{0, 0}, {0, size}, {0, 1}, {1, 0}, {100, 50}, {size / 2, size / 2},
			{size - 10, 10}, {size - 10, 0}, {size - 1, 1}, {size - 1, 0}, {size, 0},
		} {
			wantB := b[c.off:]
			if c.n > 0 {
				wantB = b[c.off : c.off+c.n]
			}
			got, calls, err := readLoad(ctx, be, h, c.off, c.n)
			if err != nil || calls < 1 || !bytes.Equal(got, wantB) {
				t.Errorf("Load(%d, %d): %d bytes (%d calls), %v; want %d bytes", c.off, c.n, len(got), calls, err, len(wantB))
			}
			got, err = tiers.LoadAll(ctx, be, h, c.off, c.n)
			if err != nil || !bytes.Equal(got, wantB) {
				t.Errorf("LoadAll(%d, %d): %d bytes, %v; want %d bytes", c.off, c.n, len(got), err, len(wantB))
			}
		}
	})

	t.Run("ShortRead", func(t *testing.T) {
		be := newTier(t, "vault")
		ctx := t.Context()
		h := largest(tiers.TypeIndex)
		size := int64(len(want[h]))
		if size < 11 {
			t.Fatalf("largest index is %d bytes, too small for the ranges", size)
		}
		for _, c := range []struct{ off, n int64 }{
			{0, size + 1}, {size - 10, 11}, {size, 1}, {size + 1, 0}, {size + 100, 5}, {1 << 40, 1},
		} {
			if _, _, err := readLoad(ctx, be, h, c.off, c.n); !errors.Is(err, tiers.ErrShortRead) {
				t.Errorf("Load(%d, %d) of a %d-byte object: got %v, want ErrShortRead", c.off, c.n, size, err)
			}
			if _, err := tiers.LoadAll(ctx, be, h, c.off, c.n); !errors.Is(err, tiers.ErrShortRead) {
				t.Errorf("LoadAll(%d, %d) of a %d-byte object: got %v, want ErrShortRead", c.off, c.n, size, err)
			}
		}
		if got, err := tiers.LoadAll(ctx, be, h, 0, 0); err != nil || !bytes.Equal(got, want[h]) {
			t.Errorf("Load %s after the short reads: %d bytes, %v", h, len(got), err)
		}
	})

	t.Run("InvalidRange", func(t *testing.T) {
		be := newTier(t, "vault")
		h := byType[tiers.TypeData][0]
		for _, c := range []struct{ off, n int64 }{{-1, 0}, {0, -1}, {-5, 10}} {
			if _, calls, err := readLoad(t.Context(), be, h, c.off, c.n); err == nil || calls != 0 {
				t.Errorf("Load(%d, %d): got %v with %d callback calls, want an error and none", c.off, c.n, err, calls)
			}
		}
	})

	// List (and TypesAreSeparate): each type lists exactly its objects
	// on tape, with their sizes; types never on tape list nothing.
	t.Run("List", func(t *testing.T) {
		be := newTier(t, "vault")
		for _, typ := range tiers.AllTypes {
			got := listed(t, be, typ)
			if len(got) != len(byType[typ]) {
				t.Errorf("List %s: %d objects, want %d", typ, len(got), len(byType[typ]))
			}
			for _, h := range byType[typ] {
				if n, ok := got[h.Name]; !ok {
					t.Errorf("List %s: %s missing", typ, h.Name)
				} else if n != int64(len(want[h])) {
					t.Errorf("List %s: %s has size %d, want %d", typ, h.Name, n, len(want[h]))
				}
			}
		}
	})

	t.Run("ListCallbackError", func(t *testing.T) {
		be := newTier(t, "vault")
		stop := errors.New("stop listing")
		calls := 0
		err := be.List(t.Context(), tiers.TypeData, func(tiers.ObjectInfo) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("List with a failing callback: got %v after %d calls, want the callback's error after 1", err, calls)
		}
	})

	t.Run("InvalidHandle", func(t *testing.T) {
		be := newTier(t, "vault")
		ctx := t.Context()
		for _, h := range readBadHandles {
			if _, calls, err := readLoad(ctx, be, h, 0, 0); !errors.Is(err, tiers.ErrInvalidHandle) || calls != 0 {
				t.Errorf("Load %q: got %v with %d callback calls, want ErrInvalidHandle", h.String(), err, calls)
			}
			if _, err := be.Stat(ctx, h); !errors.Is(err, tiers.ErrInvalidHandle) {
				t.Errorf("Stat %q: got %v, want ErrInvalidHandle", h.String(), err)
			}
			if err := tiers.PutBytes(ctx, be, h, []byte("x")); !errors.Is(err, tiers.ErrInvalidHandle) {
				t.Errorf("Put %q: got %v, want ErrInvalidHandle (checked before the read-only refusal)", h.String(), err)
			}
			if err := be.Remove(ctx, h); !errors.Is(err, tiers.ErrInvalidHandle) {
				t.Errorf("Remove %q: got %v, want ErrInvalidHandle (checked before the read-only refusal)", h.String(), err)
			}
		}
		for _, typ := range []tiers.Type{"", "tmp", "../data", "data/", "Data", "."} {
			called := false
			err := be.List(ctx, typ, func(tiers.ObjectInfo) error { called = true; return nil })
			if !errors.Is(err, tiers.ErrInvalidHandle) || called {
				t.Errorf("List %q: got %v (callback called: %v), want ErrInvalidHandle", typ, err, called)
			}
		}
	})

	t.Run("LoadCallback", func(t *testing.T) {
		be := newTier(t, "vault")
		ctx := t.Context()
		h := byType[tiers.TypeIndex][0]
		fail := errors.New("callback failed")
		calls := 0
		err := be.Load(ctx, h, 0, 0, func(r io.Reader) error {
			calls++
			if _, err := io.Copy(io.Discard, r); err != nil {
				return err
			}
			return fail
		})
		if !errors.Is(err, fail) || calls < 1 {
			t.Errorf("Load: got %v after %d calls, want the callback's error", err, calls)
		}
		if err := be.Load(ctx, h, 1, 2, func(io.Reader) error { return fail }); !errors.Is(err, fail) {
			t.Errorf("Load with a callback not reading: got %v, want the callback's error", err)
		}
		if got, err := tiers.LoadAll(ctx, be, h, 0, 0); err != nil || !bytes.Equal(got, want[h]) {
			t.Errorf("Load %s after failing callbacks: %d bytes, %v", h, len(got), err)
		}
	})

	// ContextCanceled, read side: before anything is read off tape, and
	// for an object already staged.
	t.Run("ContextCanceled", func(t *testing.T) {
		be := newTier(t, "vault")
		h := largest(tiers.TypeData)
		done, cancel := context.WithCancel(t.Context())
		cancel()
		check := func(when string) {
			t.Helper()
			if _, calls, err := readLoad(done, be, h, 0, 0); !errors.Is(err, context.Canceled) || calls != 0 {
				t.Errorf("Load %s with a cancelled context: got %v with %d callback calls, want context.Canceled", when, err, calls)
			}
			if _, err := be.Stat(done, h); !errors.Is(err, context.Canceled) {
				t.Errorf("Stat %s with a cancelled context: got %v, want context.Canceled", when, err)
			}
			called := false
			if err := be.List(done, tiers.TypeData, func(tiers.ObjectInfo) error { called = true; return nil }); !errors.Is(err, context.Canceled) || called {
				t.Errorf("List %s with a cancelled context: got %v (callback called: %v), want context.Canceled", when, err, called)
			}
		}
		check("before any read")
		if got, err := tiers.LoadAll(t.Context(), be, h, 0, 0); err != nil || !bytes.Equal(got, want[h]) {
			t.Fatalf("Load %s: %d bytes, %v", h, len(got), err)
		}
		check("once staged")
	})

	// Read side of ConcurrentSameName and ConcurrentPuts: the tier is
	// safe for concurrent use, every reader gets the right bytes.
	t.Run("ConcurrentLoads", func(t *testing.T) {
		be := newTier(t, "vault")
		ctx := t.Context()
		var hs []tiers.Handle
		for h := range want {
			hs = append(hs, h)
		}
		sort.Slice(hs, func(i, j int) bool { return hs[i].String() < hs[j].String() })
		const readers = 6
		errs := make(chan error, readers*len(hs)*2)
		var wg sync.WaitGroup
		for r := range readers {
			wg.Go(func() {
				for i := range hs {
					k := (i + r*len(hs)/readers) % len(hs) // each reader its own order
					if r%2 == 1 {
						k = len(hs) - 1 - k
					}
					h := hs[k]
					b := want[h]
					got, err := tiers.LoadAll(ctx, be, h, 0, 0)
					if err != nil || !bytes.Equal(got, b) {
						errs <- fmt.Errorf("reader %d: Load %s: %d bytes, %v; want %d bytes", r, h, len(got), err, len(b))
					}
					if len(b) > 20 {
						got, err = tiers.LoadAll(ctx, be, h, 10, 10)
						if err != nil || !bytes.Equal(got, b[10:20]) {
							errs <- fmt.Errorf("reader %d: Load %s (10, 10): %d bytes, %v", r, h, len(got), err)
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
	})

	// ReadOnly: Put and Remove are refused (tiers.ErrReadOnly and
	// tape.ErrReadOnly) and change nothing.
	t.Run("ReadOnly", func(t *testing.T) {
		be := newTier(t, "vault")
		ctx := t.Context()
		h := byType[tiers.TypeSnapshot][0]
		for _, x := range []tiers.Handle{h, missing(tiers.TypeSnapshot)} {
			if err := tiers.PutBytes(ctx, be, x, []byte("x")); !errors.Is(err, tiers.ErrReadOnly) || !errors.Is(err, tape.ErrReadOnly) {
				t.Errorf("Put %s: got %v, want ErrReadOnly", x, err)
			}
			if err := be.Remove(ctx, x); !errors.Is(err, tiers.ErrReadOnly) || !errors.Is(err, tape.ErrReadOnly) {
				t.Errorf("Remove %s: got %v, want ErrReadOnly", x, err)
			}
		}
		notThere(t, be, missing(tiers.TypeSnapshot))
		if got, err := tiers.LoadAll(ctx, be, h, 0, 0); err != nil || !bytes.Equal(got, want[h]) {
			t.Errorf("Load %s after a refused Put and Remove: %d bytes, %v", h, len(got), err)
		}
	})
}
