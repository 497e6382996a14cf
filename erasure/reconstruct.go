package erasure

import (
	"fmt"
	"math"

	"github.com/drpipe/drpipe/internal/id"
)

// Result is the outcome of Reconstruct.
type Result struct {
	// Pack is the reassembled pack, exactly PackLen bytes.
	Pack []byte
	// Rebuilt holds, for every slot that was missing or corrupt, the
	// rebuilt complete shard object (header and payload), byte-identical
	// to what Encode produced; writing them back repairs the pack.
	Rebuilt map[int][]byte
	// Missing lists the slots that were nil, in ascending order.
	Missing []int
	// Corrupt lists the slots whose object failed VerifyShard, in
	// ascending order.
	Corrupt []int
	// Damage maps every index in Corrupt to the VerifyShard error saying
	// what is wrong with it.
	Damage map[int]error
}

// Reconstruct rebuilds the pack packID from its shard objects. shards has
// one slot per shard, K+M in all, holding the complete object of shard i in
// slot i, or nil if it is missing. Every present object is verified with
// VerifyShard; corrupt ones are treated as missing and reported in Corrupt
// and Damage. The caller's slices are not modified.
//
// With at least K intact shards it returns the pack and the rebuilt objects
// of all missing and corrupt slots. Otherwise it returns an error wrapping
// ErrTooFewShards that lists the missing and corrupt indexes; in that case
// (and on any other error) the returned Result, if not nil, still carries
// Missing, Corrupt and Damage but no Pack or Rebuilt.
//
// Rebuilt payloads are checked against the table hashes, so shards that are
// individually intact but not consistent with each other (parity computed
// from different data) yield an error wrapping ErrCorrupt rather than a
// wrong pack.
func Reconstruct(packID id.ID, shards [][]byte) (*Result, error) {
	n := len(shards)
	if n > MaxShards {
		return nil, fmt.Errorf("erasure: reconstruct pack %s: %d shard slots, a pack has at most %d", packID.Short(), n, MaxShards)
	}

	// Verify every present shard, in parallel: this is mostly hashing.
	headers := make([]Header, n)
	errs := make([]error, n)
	var work int64
	for _, obj := range shards {
		work += int64(len(obj))
	}
	parallel(n, work, func(i int) {
		if shards[i] != nil {
			headers[i], errs[i] = VerifyShard(packID, i, shards[i])
		}
	})

	res := &Result{Damage: map[int]error{}}
	good := -1 // a slot with an intact shard
	nGood := 0
	for i := range shards {
		switch {
		case shards[i] == nil:
			res.Missing = append(res.Missing, i)
		case errs[i] != nil:
			res.Corrupt = append(res.Corrupt, i)
			res.Damage[i] = errs[i]
		default:
			nGood++
			if good < 0 {
				good = i
			}
		}
	}
	if good < 0 {
		return res, fmt.Errorf("%w: pack %s: none of %d slots holds an intact shard (missing %v, corrupt %v)",
			ErrTooFewShards, packID.Short(), n, fmtList(res.Missing), fmtList(res.Corrupt))
	}
	h := headers[good]
	k, total := h.K, h.K+h.M
	if n != total {
		return res, fmt.Errorf("erasure: reconstruct pack %s: %d shard slots given, but the pack has %s=%d shards", packID.Short(), n, h.Params(), total)
	}
	if nGood < k {
		return res, fmt.Errorf("%w: pack %s (%s) needs %d intact shards, has %d: missing %v, corrupt %v",
			ErrTooFewShards, packID.Short(), h.Params(), k, nGood, fmtList(res.Missing), fmtList(res.Corrupt))
	}

	// Intact objects are exactly ObjectSize bytes, so the sizes below are
	// bounded by memory the caller already holds.
	hs, s := h.Size(), h.ShardSize
	objSize := hs + s
	bad := make([]int, 0, len(res.Missing)+len(res.Corrupt))
	for i := range shards {
		if shards[i] == nil || errs[i] != nil {
			bad = append(bad, i)
		}
	}

	if len(bad) > 0 && objSize > math.MaxInt/len(bad) || h.PackLen > math.MaxInt {
		// Only reachable where int is 32 bits.
		return res, fmt.Errorf("erasure: reconstruct pack %s (%s): %d-byte pack with %d-byte shards is too large for this platform", packID.Short(), h.Params(), h.PackLen, s)
	}

	payloads := make([][]byte, n)
	res.Rebuilt = make(map[int][]byte, len(bad))
	buf := make([]byte, len(bad)*objSize)
	for i := range shards {
		if errs[i] == nil && shards[i] != nil {
			payloads[i] = shards[i][hs:objSize:objSize]
		}
	}
	for j, i := range bad {
		obj := buf[j*objSize : (j+1)*objSize : (j+1)*objSize]
		h.putHeader(obj, i)
		payloads[i] = obj[hs:hs:objSize] // empty with capacity: filled in place
		res.Rebuilt[i] = obj
	}

	if len(bad) > 0 {
		enc, err := encoder(h.Params())
		if err != nil {
			return res, err
		}
		if err := enc.Reconstruct(payloads); err != nil {
			return res, fmt.Errorf("erasure: reconstruct pack %s (%s): %w", packID.Short(), h.Params(), err)
		}
		mismatch := make([]bool, len(bad))
		parallel(len(bad), int64(len(bad))*int64(s), func(j int) {
			i := bad[j]
			mismatch[j] = h.PayloadHash(payloads[i]) != h.Hashes[i]
		})
		for j, m := range mismatch {
			if m {
				res.Rebuilt = nil
				return res, fmt.Errorf("%w: pack %s (%s): rebuilt shard %d does not match its table hash: the intact shards are inconsistent with each other",
					ErrCorrupt, packID.Short(), h.Params(), bad[j])
			}
		}
	}

	l := int(h.PackLen) // <= k*s, which fits in memory
	res.Pack = make([]byte, l)
	for i := 0; i < k && i*s < l; i++ {
		copy(res.Pack[i*s:], payloads[i])
	}
	return res, nil
}

// fmtList renders a list of indexes for messages, "none" if empty.
func fmtList(xs []int) string {
	if len(xs) == 0 {
		return "none"
	}
	return fmt.Sprint(xs)
}
