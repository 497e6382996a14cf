package tiers_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestSubsetReadOnlyConformance runs the read-only conformance suite on a
// Subset: allowed objects of the source, in-memory extras (one replacing
// a source object of the same name), config and keys are visible; the
// rest of the source is not.
func TestSubsetReadOnlyConformance(t *testing.T) {
	ctx := context.Background()
	src := tierstest.NewMemory()
	obj := func(typ tiers.Type, name string, n int) (tiers.Handle, []byte) {
		return tiers.Handle{Type: typ, Name: name}, bytes.Repeat([]byte(name[:1]), n)
	}
	want := map[tiers.Handle][]byte{}
	allow := map[tiers.Handle]bool{}
	extra := map[tiers.Handle][]byte{}
	for _, o := range []struct {
		typ          tiers.Type
		name         string
		n            int
		allow, extra bool
	}{
		{tiers.TypeConfig, "config", 300, false, false},
		{tiers.TypeKey, strings.Repeat("a", 64), 200, false, false},
		{tiers.TypeData, strings.Repeat("b", 64) + "-0", 4000, true, false},
		{tiers.TypeData, strings.Repeat("b", 64) + "-1", 4000, true, false},
		{tiers.TypeData, strings.Repeat("c", 64) + "-0", 4000, false, false}, // hidden
		{tiers.TypeSnapshot, strings.Repeat("d", 64), 500, true, false},
		{tiers.TypeSnapshot, strings.Repeat("e", 64), 500, false, false}, // hidden
		{tiers.TypeIndex, strings.Repeat("f", 64), 100, false, false},    // hidden, replaced by the extra
	} {
		h, b := obj(o.typ, o.name, o.n)
		if err := tiers.PutBytes(ctx, src, h, b); err != nil {
			t.Fatal(err)
		}
		if o.allow {
			allow[h] = true
		}
		if o.allow || o.typ == tiers.TypeConfig || o.typ == tiers.TypeKey {
			want[h] = b
		}
	}
	ih, ib := obj(tiers.TypeIndex, strings.Repeat("f", 64), 777)
	extra[ih], want[ih] = ib, ib
	tierstest.RunReadOnly(t, func(t *testing.T) tiers.Backend { return tiers.NewSubset(src, allow, extra) }, want)
}

// A range whose end lies past the largest offset (offset+length
// overflows) is a short read of an extra object, not a panic.
func TestSubsetExtraRangeOverflow(t *testing.T) {
	h := tiers.Handle{Type: tiers.TypeIndex, Name: strings.Repeat("f", 64)}
	s := tiers.NewSubset(tierstest.NewMemory(), nil, map[tiers.Handle][]byte{h: []byte("index object")})
	_, err := tiers.LoadAll(context.Background(), s, h, 1, math.MaxInt64)
	if !errors.Is(err, tiers.ErrShortRead) {
		t.Errorf("Load (1, MaxInt64) of a 12-byte extra object: %v, want ErrShortRead", err)
	}
}
