//go:build cgo

package repo

/*
#include <stdlib.h>

// The reference library is compiled into the binary by
// github.com/DataDog/zstd (imported below); drpipe calls these exported
// entry points of it directly, to give each context a fixed workspace.
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
ZSTD_CCtx* ZSTD_initStaticCCtx(void* workspace, size_t workspaceSize);
size_t ZSTD_estimateCCtxSize(int compressionLevel);
size_t ZSTD_compressCCtx(ZSTD_CCtx* cctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize, int compressionLevel);
unsigned ZSTD_isError(size_t code);
size_t ZSTD_compressBound(size_t srcSize);
*/
import "C"

import (
	"sync"
	"unsafe"

	_ "github.com/DataDog/zstd" // links the C library the declarations above name

	"github.com/drpipe/drpipe/internal/cpus"
)

// ZstdEncoder names the implementation that compresses new blobs, for
// `drpipe --version` and benchmark reports.
const ZstdEncoder = "libzstd 1.5.7 (C, cgo)"

var (
	cctxOnce sync.Once
	// cctxs holds cpus.N() compression contexts, each in a workspace
	// allocated once and never resized or freed. A context the library
	// manages itself frees and reallocates its workspace whenever the
	// input size class changes for long enough (small files after large
	// chunks and back): hundreds of fresh multi-MiB allocations per
	// backup, each paid again in page faults. A static context cannot
	// resize, so its workspace is sized for the largest level drpipe uses
	// at any input size (ZSTD_estimateCCtxSize) and a static context
	// never counts as oversized.
	cctxs chan *C.ZSTD_CCtx
)

// initCCtxs fills cctxs. A nil context makes compressZstd report
// failure: the blob is stored raw.
func initCCtxs() {
	all := staticContexts(C.ZSTD_estimateCCtxSize(maxZstdLevel), func(ws unsafe.Pointer, size C.size_t) unsafe.Pointer {
		return unsafe.Pointer(C.ZSTD_initStaticCCtx(ws, size))
	})
	cctxs = make(chan *C.ZSTD_CCtx, len(all))
	for _, c := range all {
		cctxs <- (*C.ZSTD_CCtx)(c)
	}
}

// staticContexts returns cpus.N() library contexts, each made by init in
// a workspace of size bytes allocated once (16-aligned) and kept for the
// life of the process. An entry is nil where the allocation failed or the
// library refused the workspace (which is then freed).
func staticContexts(size C.size_t, init func(ws unsafe.Pointer, size C.size_t) unsafe.Pointer) []unsafe.Pointer {
	all := make([]unsafe.Pointer, cpus.N())
	for i := range all {
		if ws := C.malloc(size); ws != nil {
			if all[i] = init(ws, size); all[i] == nil {
				C.free(ws)
			}
		}
	}
	return all
}

// compressZstd appends one zstd frame holding src, compressed at the
// level c gives for its size (zstdLevel), to dst. ok is false only if the
// library failed (no memory for a context); the caller then stores the
// blob uncompressed.
func compressZstd(dst, src []byte, c Compression) (out []byte, ok bool) {
	return compressZstdLevel(dst, src, zstdLevel(c, len(src)))
}

// compressZstdLevel is compressZstd at an explicit C library level, at
// most maxZstdLevel.
func compressZstdLevel(dst, src []byte, level int) (out []byte, ok bool) {
	cctxOnce.Do(initCCtxs)
	cc := <-cctxs
	defer func() { cctxs <- cc }()
	if cc == nil {
		return dst, false
	}
	bound := int(C.ZSTD_compressBound(C.size_t(len(src))))
	if cap(dst)-len(dst) < bound {
		grown := make([]byte, len(dst), len(dst)+bound)
		copy(grown, dst)
		dst = grown
	}
	out = dst[len(dst) : len(dst)+bound]
	var srcPtr unsafe.Pointer
	if len(src) > 0 {
		srcPtr = unsafe.Pointer(&src[0])
	}
	n := C.ZSTD_compressCCtx(cc, unsafe.Pointer(&out[0]), C.size_t(bound), srcPtr, C.size_t(len(src)), C.int(level))
	if C.ZSTD_isError(n) != 0 {
		return dst, false
	}
	return dst[:len(dst)+int(n)], true
}
