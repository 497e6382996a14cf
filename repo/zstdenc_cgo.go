//go:build cgo

package repo

import (
	"runtime"
	"sync"

	ddzstd "github.com/DataDog/zstd"
)

// ZstdEncoder names the implementation that compresses new blobs, for
// `drpipe --version` and benchmark reports.
const ZstdEncoder = "libzstd 1.5.7 (C, cgo)"

var (
	cctxOnce sync.Once
	cctxs    chan ddzstd.Ctx
)

// compressZstd appends one zstd frame holding src, compressed at c's
// level, to dst. ok is false only if the library failed (out of memory);
// the caller then stores the blob uncompressed.
func compressZstd(dst, src []byte, c Compression) (out []byte, ok bool) {
	cctxOnce.Do(func() {
		n := runtime.GOMAXPROCS(0) // as at the first compression
		cctxs = make(chan ddzstd.Ctx, n)
		for range n {
			cctxs <- ddzstd.NewCtx() // C workspace is allocated on first use
		}
	})
	cc := <-cctxs
	defer func() { cctxs <- cc }()
	bound := ddzstd.CompressBound(len(src))
	if cap(dst)-len(dst) < bound {
		grown := make([]byte, len(dst), len(dst)+bound)
		copy(grown, dst)
		dst = grown
	}
	frame, err := cc.CompressLevel(dst[len(dst):len(dst)+bound], src, zstdLevel(c))
	if err != nil {
		return dst, false
	}
	if len(frame) > 0 && &frame[0] != &dst[:len(dst)+1][len(dst)] {
		return append(dst, frame...), true // not written in place after all
	}
	return dst[:len(dst)+len(frame)], true
}
