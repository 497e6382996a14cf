package repo

// New blobs are compressed by compressZstd, which has two implementations
// producing standard zstd frames that every drpipe reads the same way
// (blobs of known length through decompressZstd, the C library in cgo
// builds, everything else through klauspost/compress, see codecs):
//
//   - zstdenc_cgo.go, the default wherever a C compiler is present: the
//     reference C library, bundled with github.com/DataDog/zstd. On log-like
//     text it compresses about 1.5 times as fast as the pure-Go encoder at a
//     slightly better ratio (level 3 against SpeedDefault).
//   - zstdenc_nocgo.go, for CGO_ENABLED=0 builds: klauspost/compress.
//
// Both bound concurrent compressions to cpus.N(), so callers with more
// workers than CPUs queue for an encoder instead of oversubscribing them.

// maxZstdLevel is the highest level zstdLevel returns; the C encoder sizes
// its fixed workspaces for it.
const maxZstdLevel = 7

// autoSmallBlob is the blob size up to which "auto" uses level 2 instead
// of 3. The C library picks its parameters by level and input size, and
// for inputs up to 128 KiB (whole small files) level 3 switches to a
// slower match finder. At that size level 2 was about 25% faster on the
// benchmark tree's text and 5-19% faster on source and documentation
// files, for about 3% more bytes; on very repetitive logs it gains nothing
// and stores 8% more. From 128 KiB on, level 2 is no faster (128-256 KiB)
// or loses 5% of the ratio (larger chunks), so those stay at level 3.
// BenchmarkCompressZstdAuto measures both sides.
const autoSmallBlob = 128 << 10

// zstdLevel is the C library level a setting uses for a blob of n bytes;
// the pure-Go encoder picks its nearest preset per setting.
func zstdLevel(c Compression, n int) int {
	switch c {
	case CompressFastest:
		return 1
	case CompressMax:
		return maxZstdLevel
	}
	if n <= autoSmallBlob {
		return 2
	}
	return 3
}
