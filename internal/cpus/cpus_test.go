package cpus

import (
	"runtime"
	"testing"
)

// TestOversubscribeKeepsN checks that raising the processors leaves the
// pool size alone, and that an explicit GOMAXPROCS is respected.
func TestOversubscribeKeepsN(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	base := N()
	t.Setenv("GOMAXPROCS", "")
	Oversubscribe()
	if got := runtime.GOMAXPROCS(0); got != 2*base {
		t.Fatalf("GOMAXPROCS %d after Oversubscribe, want %d", got, 2*base)
	}
	if N() != base {
		t.Fatalf("N changed from %d to %d", base, N())
	}
	runtime.GOMAXPROCS(base)
	t.Setenv("GOMAXPROCS", "1")
	Oversubscribe()
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Fatalf("GOMAXPROCS %d with the variable set, want it left at %d", got, base)
	}
}
