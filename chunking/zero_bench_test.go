package chunking

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// isZeroWords ORs eight words per check (isZero does sixteen).
func isZeroWords(b []byte) bool {
	var acc uint64
	for len(b) >= 64 {
		acc |= binary.LittleEndian.Uint64(b[0:]) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:]) |
			binary.LittleEndian.Uint64(b[32:]) | binary.LittleEndian.Uint64(b[40:]) |
			binary.LittleEndian.Uint64(b[48:]) | binary.LittleEndian.Uint64(b[56:])
		if acc != 0 {
			return false
		}
		b = b[64:]
	}
	for _, c := range b {
		acc |= uint64(c)
	}
	return acc == 0
}

var zeroBlock [DefaultZeroBlock]byte

// isZeroEqual compares against a static zero block with bytes.Equal.
func isZeroEqual(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// BenchmarkZeroCheck measures the worst case (an all-zero block must be read
// completely) over a buffer larger than the caches, so the figure is the
// memory-bandwidth rate; "cached" repeats one 64 KiB block.
func BenchmarkZeroCheck(b *testing.B) {
	big := make([]byte, 256<<20)
	for i := range big { // fault in real pages, not the shared zero page
		big[i] = 1
	}
	clear(big)
	for _, impl := range []struct {
		name string
		f    func([]byte) bool
	}{{"isZero", isZero}, {"bytesEqual", isZeroEqual}, {"words8", isZeroWords}, {"byteLoop", isZeroBytes}} {
		b.Run(impl.name+"/cached", func(b *testing.B) {
			blk := big[:DefaultZeroBlock]
			b.SetBytes(int64(len(blk)))
			for b.Loop() {
				if !impl.f(blk) {
					b.Fatal("not zero")
				}
			}
		})
		b.Run(impl.name+"/256MiB", func(b *testing.B) {
			b.SetBytes(int64(len(big)))
			for b.Loop() {
				for off := 0; off < len(big); off += DefaultZeroBlock {
					if !impl.f(big[off : off+DefaultZeroBlock]) {
						b.Fatal("not zero")
					}
				}
			}
		})
	}
}
