// Package cpus owns how many CPUs drpipe sizes its worker pools and codec
// contexts for, and how many Go processors a restore runs with.
package cpus

import (
	"os"
	"runtime"
)

// n is GOMAXPROCS as the process started: the CPUs it may use (the CPU
// count, or the cgroup's CPU limit). It is not updated later: pools sized
// from it keep their size when the runtime follows a changed cgroup limit,
// and Oversubscribe, like any explicit GOMAXPROCS, turns those updates off
// for the rest of the process.
var n = runtime.GOMAXPROCS(0)

// N is the number of CPUs worker pools and codec contexts are sized for.
// It stays what GOMAXPROCS was at start when Oversubscribe raises it, so
// that raising it adds no workers.
func N() int { return n }

// Oversubscribe runs Go code on twice N processors, unless the GOMAXPROCS
// environment variable chose a number. A goroutine blocked in a read or
// write of a file, or running a C codec, keeps its processor until the
// runtime's monitor takes it back, at least 20 µs and up to 10 ms later;
// with only N processors the other workers wait meanwhile although a CPU
// is free. With twice as many, the kernel schedules the runnable threads
// instead. On the 2-CPU benchmark machine this made a file-tree restore
// about 10% faster for the same CPU time (README, "Benchmarks").
// `drpipe restore` calls it. Backup does not: it was about 6% faster too,
// but per-processor caches (sync.Pool buffers among them) raised the image
// backup's peak RSS from about 400 MiB to the 512 MiB bound.
func Oversubscribe() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(2 * n)
}
