package erasure

import (
	"fmt"
	"strconv"
	"strings"
)

// Limits of the coding parameters in format version 1.
const (
	MaxK      = 128 // largest number of data shards
	MaxM      = 127 // largest number of parity shards
	MaxShards = 255 // largest K+M
)

// Default coding parameters: 4 data + 2 parity shards survive the loss of
// any two shards for 50% storage overhead.
const (
	DefaultK = 4 // default number of data shards
	DefaultM = 2 // default number of parity shards
)

// DefaultParams is the default coding scheme, DefaultK+DefaultM.
var DefaultParams = Params{K: DefaultK, M: DefaultM}

// Params are the Reed-Solomon coding parameters of a pack: K data shards, of
// which any K out of the K+M shards are enough to rebuild the pack.
type Params struct {
	K int // data shards, 1..MaxK
	M int // parity shards, 0..MaxM
}

// Validate reports whether p can be stored in a version 1 shard header:
// 1 <= K <= 128, 0 <= M <= 127 and K+M <= 255.
func (p Params) Validate() error {
	switch {
	case p.K < 1 || p.K > MaxK:
		return fmt.Errorf("erasure: invalid parameters %s: K=%d, want 1..%d data shards", p, p.K, MaxK)
	case p.M < 0 || p.M > MaxM:
		return fmt.Errorf("erasure: invalid parameters %s: M=%d, want 0..%d parity shards", p, p.M, MaxM)
	case p.K+p.M > MaxShards:
		return fmt.Errorf("erasure: invalid parameters %s: %d shards in total, want at most %d", p, p.K+p.M, MaxShards)
	}
	return nil
}

// String renders p as "K+M", e.g. "4+2"; ParseParams reads it back.
func (p Params) String() string { return strconv.Itoa(p.K) + "+" + strconv.Itoa(p.M) }

// Shards returns K+M, the total number of shards of a pack.
func (p Params) Shards() int { return p.K + p.M }

// ParseParams parses "K+M" (decimal digits only, e.g. "4+2" or "10+4") and
// validates the result.
func ParseParams(s string) (Params, error) {
	ks, ms, ok := strings.Cut(s, "+")
	if !ok {
		return Params{}, fmt.Errorf("erasure: parameters %q: want \"K+M\", e.g. %q", clip(s), DefaultParams.String())
	}
	k, okK := smallUint(ks)
	m, okM := smallUint(ms)
	if !okK || !okM {
		return Params{}, fmt.Errorf("erasure: parameters %q: K and M must be decimal numbers, e.g. %q", clip(s), DefaultParams.String())
	}
	p := Params{K: k, M: m}
	if err := p.Validate(); err != nil {
		return Params{}, err
	}
	return p, nil
}

// smallUint parses 1 to 3 ASCII decimal digits (no sign, no spaces).
func smallUint(s string) (int, bool) {
	if len(s) == 0 || len(s) > 3 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// clip shortens untrusted strings before they are quoted in messages.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
