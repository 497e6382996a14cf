package hugepage

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const supported = true

// advise marks the Size-aligned interior of b MADV_HUGEPAGE. Errors (a
// kernel built without transparent huge pages) are ignored: the advice
// changes speed, never content.
func advise(b []byte) {
	if len(b) < 2*Size {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	off := int((start+Size-1)&^(Size-1) - start)
	n := (len(b) - off) &^ (Size - 1)
	if n <= 0 {
		return
	}
	_ = unix.Madvise(b[off:off+n], unix.MADV_HUGEPAGE)
}
