package tierstest

import (
	"errors"
	"testing"

	"github.com/drpipe/drpipe/tiers"
)

// RunReadOnly runs the read side of the conformance suite against
// read-only backends made by newBackend, each of which must already hold
// exactly the objects in want (handle → content) and refuse writes.
//
// The checks are Run's, applied to the objects in want instead of objects
// the suite stores, under the same subtest names: Empty (handles not in
// want are not found), RoundTrip (every object whole and ranged, and its
// Stat), RangedLoad, ShortRead, InvalidRange, List (every type lists
// exactly its objects of want, with their sizes), ListCallbackError,
// InvalidHandle (every method, Put and Remove included, refuses a bad
// handle with tiers.ErrInvalidHandle before the read-only refusal),
// LoadCallback, ContextCanceled (reads with a cancelled context fail
// without calling fn, before and after the object was loaded) and
// ConcurrentLoads. ReadOnly checks what Run cannot: Put and Remove, of a
// stored and of a missing object, fail with an error wrapping
// tiers.ErrReadOnly and change nothing. Run's checks that need a Put to
// succeed do not apply. Checks that need an object are skipped when want
// is empty, so an empty read-only backend can run the suite too; ranges
// that do not fit in the objects of want are left out (RangedLoad uses
// every one of its ranges on an object of 150 bytes or more).
//
// newBackend is called once per subtest, so each check starts from a
// backend that has read nothing yet (a caching backend is checked cold,
// and a failure in one check does not carry over); RunReadOnly closes the
// backend in a t.Cleanup registered after newBackend returns. Unlike Run's,
// the subtests run one after another, not in parallel: the backends share
// their objects, and what holds them may not allow several backends at
// once (a tape library's drives). Each backend must be safe for concurrent
// use itself; ConcurrentLoads checks that. RunReadOnly does not modify
// want, and neither writes nor removes anything itself.
func RunReadOnly(t *testing.T, newBackend func(t *testing.T) tiers.Backend, want map[tiers.Handle][]byte) {
	t.Helper()
	for h := range want {
		if err := h.Validate(); err != nil {
			t.Fatalf("RunReadOnly: want holds %q: %v", h.String(), err)
		}
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte)
	}{
		{"Empty", testReadOnlyEmpty},
		{"RoundTrip", testReadOnlyRoundTrip},
		{"RangedLoad", func(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
			h := largest(t, want)
			checkRanges(t, be, h, want[h])
		}},
		{"ShortRead", func(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
			h := smallest(t, want)
			checkShortReads(t, be, h, want[h])
		}},
		{"InvalidRange", func(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
			checkInvalidRanges(t, be, smallest(t, want))
		}},
		{"List", func(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
			checkListing(t, be, sizes(want))
		}},
		{"ListCallbackError", testReadOnlyListCallbackError},
		{"InvalidHandle", func(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
			checkInvalidHandles(t, be)
			checkListing(t, be, sizes(want))
		}},
		{"LoadCallback", func(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
			h := smallest(t, want)
			checkLoadCallback(t, be, h, want[h])
		}},
		{"ContextCanceled", func(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
			h := largest(t, want)
			checkCanceledReads(t, be, h, want[h])
		}},
		{"ConcurrentLoads", func(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
			checkConcurrentLoads(t, be, want)
		}},
		{"ReadOnly", testReadOnly},
	}
	t.Run("conformance", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				tc.fn(t, subtestBackend(t, newBackend, nil), want)
			})
		}
	})
}

// largest returns the handle of the largest object of want (the first in
// sortedHandles order among equals); it skips the test if want is empty.
func largest(t *testing.T, want map[tiers.Handle][]byte) tiers.Handle {
	t.Helper()
	return pick(t, want, func(a, b []byte) bool { return len(a) > len(b) })
}

// smallest is largest for the smallest object.
func smallest(t *testing.T, want map[tiers.Handle][]byte) tiers.Handle {
	t.Helper()
	return pick(t, want, func(a, b []byte) bool { return len(a) < len(b) })
}

func pick(t *testing.T, want map[tiers.Handle][]byte, better func(a, b []byte) bool) tiers.Handle {
	t.Helper()
	hs := sortedHandles(want)
	if len(hs) == 0 {
		t.Skip("the backend holds no object to read")
	}
	best := hs[0]
	for _, h := range hs[1:] {
		if better(want[h], want[best]) {
			best = h
		}
	}
	return best
}

// sizes returns handle → size for the objects of want.
func sizes(want map[tiers.Handle][]byte) map[tiers.Handle]int64 {
	m := make(map[tiers.Handle]int64, len(want))
	for h, b := range want {
		m[h] = int64(len(b))
	}
	return m
}

func testReadOnlyEmpty(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
	for _, h := range absentHandles(want) {
		mustNotExist(t, be, h)
	}
}

func testReadOnlyRoundTrip(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
	for _, h := range sortedHandles(want) {
		checkObject(t, be, h, want[h])
	}
}

// testReadOnlyListCallbackError lists the type with the most objects, so
// that a List going on after the callback failed is seen.
func testReadOnlyListCallbackError(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
	count := make(map[tiers.Type]int)
	for h := range want {
		count[h.Type]++
	}
	var typ tiers.Type
	for _, x := range tiers.AllTypes {
		if count[x] > count[typ] {
			typ = x
		}
	}
	if typ == "" {
		t.Skip("the backend holds no object to list")
	}
	checkListCallbackError(t, be, typ)
}

func testReadOnly(t *testing.T, be tiers.Backend, want map[tiers.Handle][]byte) {
	ctx := t.Context()
	nb := payload("read-only put", 100)
	nh := handleFor(tiers.TypeSnapshot, nb)
	type attempt struct {
		h tiers.Handle
		b []byte
	}
	puts := []attempt{{nh, nb}}
	removes := []tiers.Handle{nh}
	var h tiers.Handle
	if len(want) > 0 {
		// A stored object: its bytes again, other bytes over it, removal.
		h = smallest(t, want)
		puts = append(puts, attempt{h, want[h]}, attempt{h, nb})
		removes = append(removes, h)
	}
	for _, p := range puts {
		if err := tiers.PutBytes(ctx, be, p.h, p.b); !errors.Is(err, tiers.ErrReadOnly) {
			t.Errorf("Put %v (%d bytes): got %v, want ErrReadOnly", p.h, len(p.b), err)
		}
	}
	for _, x := range removes {
		if err := be.Remove(ctx, x); !errors.Is(err, tiers.ErrReadOnly) {
			t.Errorf("Remove %v: got %v, want ErrReadOnly", x, err)
		}
	}
	// Nothing changed.
	mustNotExist(t, be, nh)
	checkListing(t, be, sizes(want))
	if len(want) > 0 {
		mustLoad(t, be, h, want[h])
	}
}
