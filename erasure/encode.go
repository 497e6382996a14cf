package erasure

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/klauspost/reedsolomon"

	"github.com/drpipe/drpipe/internal/cpus"
	"github.com/drpipe/drpipe/internal/id"
)

// encoders caches one reedsolomon.Encoder per Params; encoders are safe for
// concurrent use and building the coding matrix is not free. Their cache of
// inverted matrices, one per set of lost shards ever met, is turned off: it
// would grow without bound in a long-running process (16 KiB a set at
// K=128), and inverting a K×K matrix costs little next to decoding the
// payloads.
var encoders sync.Map // Params -> reedsolomon.Encoder

func encoder(p Params) (reedsolomon.Encoder, error) {
	if e, ok := encoders.Load(p); ok {
		return e.(reedsolomon.Encoder), nil
	}
	e, err := reedsolomon.New(p.K, p.M, reedsolomon.WithInversionCache(false))
	if err != nil {
		return nil, fmt.Errorf("erasure: reedsolomon %s: %w", p, err)
	}
	actual, _ := encoders.LoadOrStore(p, e)
	return actual.(reedsolomon.Encoder), nil
}

// Encode splits pack into the K+M shard objects of parameters p. Each
// returned shard is a complete object (header and payload) to be stored
// under ShardName(packID, i); all of them share one backing buffer. pack
// must hold 1 to K*MaxShardSize bytes; it is not retained.
func Encode(p Params, pack []byte) (packID id.ID, shards [][]byte, err error) {
	return EncodeBuf(p, pack, nil)
}

// EncodedSize returns the total size of the K+M shard objects Encode
// produces for a pack of packLen bytes (0 for invalid input, including a
// pack too large for Encode).
func EncodedSize(p Params, packLen int) int {
	if p.Validate() != nil || packLen <= 0 {
		return 0
	}
	s := (packLen-1)/p.K + 1
	if uint64(s) > MaxShardSize {
		return 0
	}
	objSize := HeaderSize(p) + s
	if objSize > math.MaxInt/p.Shards() {
		return 0
	}
	return p.Shards() * objSize
}

// EncodeBuf is Encode writing the shard objects into buf when its capacity
// is at least EncodedSize(p, len(pack)), so a caller can reuse one buffer
// for many packs; otherwise it allocates. The returned shards alias buf.
func EncodeBuf(p Params, pack []byte, buf []byte) (packID id.ID, shards [][]byte, err error) {
	return EncodeVersion(Version, p, pack, buf)
}

// EncodeVersion is EncodeBuf writing shard format version v
// (MinVersion..Version); repositories of an older format keep writing the
// shard version their readers know.
func EncodeVersion(v int, p Params, pack []byte, buf []byte) (packID id.ID, shards [][]byte, err error) {
	if err := p.Validate(); err != nil {
		return id.ID{}, nil, err
	}
	if v < MinVersion || v > Version {
		return id.ID{}, nil, fmt.Errorf("erasure: encode: shard format version %d, want %d..%d", v, MinVersion, Version)
	}
	l := len(pack)
	if l == 0 {
		return id.ID{}, nil, fmt.Errorf("erasure: encode %s: empty pack, need at least 1 byte", p)
	}
	k, n := p.K, p.Shards()
	s := (l-1)/k + 1
	if uint64(s) > MaxShardSize {
		return id.ID{}, nil, fmt.Errorf("erasure: encode %s: pack of %d bytes is too large (shard size %d, limit %d)", p, l, s, uint64(MaxShardSize))
	}
	hs := HeaderSize(p)
	objSize := hs + s
	if objSize > math.MaxInt/n {
		return id.ID{}, nil, fmt.Errorf("erasure: encode %s: pack of %d bytes is too large for this platform", p, l)
	}

	if cap(buf) >= n*objSize {
		buf = buf[:n*objSize] // data padding is cleared below; the rest is overwritten
	} else {
		buf = make([]byte, n*objSize)
	}
	shards = make([][]byte, n)
	payloads := make([][]byte, n)
	for i := range shards {
		shards[i] = buf[i*objSize : (i+1)*objSize : (i+1)*objSize]
		payloads[i] = shards[i][hs:]
	}

	h := Header{Version: v, K: p.K, M: p.M, PackLen: int64(l), ShardSize: s, Hashes: make([]id.ID, n)}

	// Copy the data shards and hash them while they are hot in the cache,
	// then compute and hash the parity.
	parallel(k, int64(l), func(i int) {
		c := 0
		if off := i * s; off < l {
			c = copy(payloads[i], pack[off:min(off+s, l)])
		}
		clear(payloads[i][c:])
		h.Hashes[i] = h.PayloadHash(payloads[i])
	})
	if p.M > 0 {
		enc, err := encoder(p)
		if err != nil {
			return id.ID{}, nil, err
		}
		if err := enc.Encode(payloads); err != nil {
			return id.ID{}, nil, fmt.Errorf("erasure: encode %s of %d bytes: %w", p, l, err)
		}
		parallel(p.M, int64(p.M)*int64(s), func(j int) {
			h.Hashes[k+j] = h.PayloadHash(payloads[k+j])
		})
	}

	for i, sh := range shards {
		h.putHeader(sh, i)
	}
	return id.Hash(shards[0][:tableSize(n)]), shards, nil
}

// parallelMin is the amount of work (bytes to hash) below which spreading
// it over goroutines does not pay.
const parallelMin = 256 << 10

// parallel calls fn(i) for every i in [0, n), spread over up to cpus.N()
// goroutines when the total work (in bytes) is large enough. It returns
// when all calls are done.
func parallel(n int, work int64, fn func(i int)) {
	workers := min(cpus.N(), n)
	if workers <= 1 || work < parallelMin {
		for i := range n {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}
