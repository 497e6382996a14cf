package erasure

import (
	"math/rand/v2"
	"testing"
)

const benchPackSize = 16 << 20

func benchPack(b *testing.B) []byte {
	return randBytes(rand.New(rand.NewPCG(1, 2)), benchPackSize)
}

// BenchmarkEncode encodes a 16 MiB pack as 4+2; MB/s are of pack bytes.
func BenchmarkEncode(b *testing.B) {
	pack := benchPack(b)
	b.SetBytes(int64(len(pack)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Encode(DefaultParams, pack); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconstruct rebuilds a 16 MiB 4+2 pack from its shards: "intact"
// with all six present (verify and reassemble), "lost2" with two data
// shards missing (verify, decode, check and reassemble).
func BenchmarkReconstruct(b *testing.B) {
	pack := benchPack(b)
	pid, shards, err := Encode(DefaultParams, pack)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		lose []int
	}{{"intact", nil}, {"lost2", []int{0, 2}}} {
		b.Run(c.name, func(b *testing.B) {
			in := append([][]byte(nil), shards...)
			for _, i := range c.lose {
				in[i] = nil
			}
			b.SetBytes(int64(len(pack)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Reconstruct(pid, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
