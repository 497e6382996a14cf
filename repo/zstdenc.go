package repo

// New blobs are compressed by compressZstd, which has two implementations
// producing standard zstd frames that every drpipe reads the same way
// (reading always uses klauspost/compress, see codecs):
//
//   - zstdenc_cgo.go, the default wherever a C compiler is present: the
//     reference C library, bundled with github.com/DataDog/zstd. On log-like
//     text it compresses about 1.5 times as fast as the pure-Go encoder at a
//     slightly better ratio (level 3 against SpeedDefault).
//   - zstdenc_nocgo.go, for CGO_ENABLED=0 builds: klauspost/compress.
//
// Both bound concurrent compressions to GOMAXPROCS, so callers with more
// workers than CPUs queue for an encoder instead of oversubscribing them.

// maxZstdLevel is the highest level zstdLevel returns; the C encoder sizes
// its fixed workspaces for it.
const maxZstdLevel = 7

// zstdLevel is the C library level each setting uses; the pure-Go encoder
// picks its nearest preset.
func zstdLevel(c Compression) int {
	switch c {
	case CompressFastest:
		return 1
	case CompressMax:
		return maxZstdLevel
	}
	return 3
}
