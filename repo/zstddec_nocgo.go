//go:build !cgo

package repo

// ZstdDecoder names the implementation that decompresses blobs, for
// `drpipe --version`.
const ZstdDecoder = "klauspost/compress (pure Go)"

// decompressZstd always declines without cgo: the Go decoder decodes
// every frame (see zstddec_cgo.go).
func decompressZstd(dst, src []byte, room int) (out []byte, ok bool) {
	return dst, false
}
