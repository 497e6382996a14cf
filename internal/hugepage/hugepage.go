// Package hugepage owns drpipe's use of transparent huge pages: the large
// buffers of the backup and restore pipelines (segment, pack, shard and
// pack-read buffers) and the key-derivation work area are placed in memory
// the kernel may back with 2 MiB pages.
//
// Every first touch of a 4 KiB page is a page fault. On virtual machines a
// fault can cost 10 µs and more, so filling a 32 MiB buffer costs 8,192 of
// them; argon2's 64 MiB work area, touched in random order, also suffers
// TLB misses. Marking a region MADV_HUGEPAGE lets one fault bring in 2 MiB.
// Where transparent huge pages are set to "madvise" (the usual default) a
// Go program gets them only this way; with "never", or on systems other
// than Linux, everything here still works and only the advice is skipped.
package hugepage

import "runtime"

// Size is the huge page size advice is aligned to (x86-64, and arm64 with
// 4 KiB base pages).
const Size = 2 << 20

// Make returns a zeroed byte slice of length n whose page-aligned interior
// is advised for huge pages. Use it for buffers of several MiB that are
// filled completely and reused; smaller ones are left alone.
//
// Advice only helps pages not yet touched: a fresh allocation from the
// operating system. Memory the Go heap reuses has been zeroed, and so
// touched, before Make sees it.
func Make(n int) []byte {
	b := make([]byte, n)
	advise(b)
	return b
}

// MakeCap is Make with length 0 and capacity n.
func MakeCap(n int) []byte { return Make(n)[:0] }

// Prime makes the next large allocation of up to n bytes likely to land on
// huge pages, for code that allocates internally and cannot use Make (the
// argon2 key derivation's work area). It allocates an advised region of
// n bytes and some slack, touches each page, and returns it to the Go heap
// with a garbage collection; the heap hands the lowest free addresses out
// first, which is that region. The cost is one collection of a heap that
// is still small, and a few dozen 2 MiB page faults instead of thousands
// of 4 KiB ones. Prime reports whether it did so: not for n under two huge
// pages (where it would gain nothing), nor where advice is unsupported.
func Prime(n int) bool {
	if !supported || n < 2*Size {
		return false
	}
	b := Make(n + 2*Size)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	runtime.KeepAlive(b)
	b = nil
	runtime.GC()
	return true
}
