package tape

import (
	"fmt"

	"github.com/drpipe/drpipe/internal/id"
)

// Layout is how a set spreads pack shards over tapes.
//
// The repository already stores every pack as K data + M parity shards,
// any K of which rebuild it. A set has Columns columns; a column is a
// chain of tapes (normally one). Shards of a pack are cut into groups of
// PerTape consecutive shards and group g goes to column (g + r) mod
// Columns, where r is the pack id's first byte: every column holds at
// most PerTape shards of any pack, and the rotation evens out the columns
// when K+M is not a multiple of PerTape. Each tape belongs to one column,
// so losing any Parity tapes loses at most Parity×PerTape ≤ M shards of
// any pack, and every pack stays readable.
//
// With parity p ≥ 1: PerTape = ⌊M/p⌋ and Columns = ⌈(K+M)/PerTape⌉. A
// 4+2 repository gives 3 tapes per set for p = 1 and 6 for p = 2. With
// p = 0 the set has one column and shards simply fill tapes in order. p
// cannot exceed M: drpipe reuses the repository's parity instead of
// adding a second, tape-level code, so the tapes carry exactly the
// repository's objects, byte for byte (see docs/TAPE-FORMAT.md).
type Layout struct {
	Columns int `json:"columns"`
	Parity  int `json:"parity"`
	PerTape int `json:"per_tape"`
}

// PlanLayout chooses the layout for packs of k+m shards and the wanted
// tape parity.
func PlanLayout(k, m, parity int) (Layout, error) {
	if k < 1 || m < 0 || k+m > 255 {
		return Layout{}, fmt.Errorf("tape layout: erasure coding %d+%d is invalid", k, m)
	}
	if parity < 0 {
		return Layout{}, fmt.Errorf("tape layout: parity %d is negative", parity)
	}
	if parity == 0 {
		return Layout{Columns: 1, Parity: 0, PerTape: k + m}, nil
	}
	if parity > m {
		return Layout{}, fmt.Errorf("--parity %d exceeds the repository's erasure coding %d+%d: a tape set can lose at most %d tapes; "+
			"lower --parity or create a repository with more parity shards (drpipe init --ec %d+%d)", parity, k, m, m, k, parity)
	}
	per := m / parity
	return Layout{Columns: (k + m + per - 1) / per, Parity: parity, PerTape: per}, nil
}

// ColumnOf returns the column of shard i of pack p.
func (l Layout) ColumnOf(p id.ID, i int) int {
	if l.Columns <= 1 {
		return 0
	}
	return (i/l.PerTape + int(p[0])) % l.Columns
}

// Fits reports whether packs of k+m shards keep the layout's promise.
func (l Layout) Fits(k, m int) error {
	groups := (k + m + l.PerTape - 1) / l.PerTape
	if l.Columns > 1 && groups > l.Columns {
		return fmt.Errorf("a %d+%d pack needs %d columns, the set has %d", k, m, groups, l.Columns)
	}
	if l.Parity*l.PerTape > m {
		return fmt.Errorf("a %d+%d pack cannot lose %d shards (%d tapes of %d)", k, m, l.Parity*l.PerTape, l.Parity, l.PerTape)
	}
	return nil
}
