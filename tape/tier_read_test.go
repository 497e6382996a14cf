package tape_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestTierReadConformance holds the tape tier, which is read-only, to the
// read side of the tiers.Backend contract (tierstest.RunReadOnly) against
// a tape set written through the file-backed library: a fresh tier per
// check over the pool holding the set, and the whole suite again over a
// pool without sets, which must hold nothing.
func TestTierReadConformance(t *testing.T) {
	w := newWorld(t, erasure.Params{K: 2, M: 1}, tape.VirtualConfig{Generation: tape.LTO9, Slots: 6, Drives: 2, MailSlots: 1}, 30, 3<<20)
	pool := tape.DefaultPool("vault")
	w.label(pool, 4)
	res := w.write(pool, 1, time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC))
	if !res.Set.Complete || len(res.Set.Tapes) < 2 {
		t.Fatalf("set: complete %v, %d tapes; want a complete set of at least 2", res.Set.Complete, len(res.Set.Tapes))
	}
	want := allObjects(t, w.r.Backend())
	count := map[tiers.Type]int{}
	for h := range want {
		count[h.Type]++
	}
	for _, typ := range []tiers.Type{tiers.TypeConfig, tiers.TypeKey, tiers.TypeData, tiers.TypeIndex, tiers.TypeSnapshot} {
		if count[typ] == 0 {
			t.Fatalf("the repository has no %s object: nothing to read back", typ)
		}
	}
	t.Logf("set %s: %d tapes holding %d objects (%d data shards)", res.Set.ID[:8], len(res.Set.Tapes), len(want), count[tiers.TypeData])
	newTier := func(pool string) func(*testing.T) tiers.Backend {
		return func(*testing.T) tiers.Backend { return w.tier(pool, nil) }
	}

	tierstest.RunReadOnly(t, newTier("vault"), want)
	t.Run("PoolWithoutSets", func(t *testing.T) {
		tierstest.RunReadOnly(t, newTier("other"), nil)
	})

	// Beyond the suite's tiers.ErrReadOnly: the refusals wrap
	// tape.ErrReadOnly too.
	t.Run("TapeErrReadOnly", func(t *testing.T) {
		tt := w.tier("vault", nil)
		defer tt.Close()
		h := tiers.Handle{Type: tiers.TypeSnapshot, Name: strings.Repeat("e0", 32)}
		if err := tiers.PutBytes(t.Context(), tt, h, []byte("x")); !errors.Is(err, tape.ErrReadOnly) {
			t.Errorf("Put %s: got %v, want tape.ErrReadOnly", h, err)
		}
		if err := tt.Remove(t.Context(), h); !errors.Is(err, tape.ErrReadOnly) {
			t.Errorf("Remove %s: got %v, want tape.ErrReadOnly", h, err)
		}
	})
}
