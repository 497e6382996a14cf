package chunking

import (
	"sync"
	"testing"

	"github.com/drpipe/drpipe/internal/id"
	"lukechampine.com/blake3"
)

func TestHasher(t *testing.T) {
	k1, k2 := [32]byte{1}, [32]byte{2}
	h1, h1b, h2 := NewHasher(k1), NewHasher(k1), NewHasher(k2)
	data := randBytes(50, 3<<20+17)

	ref := blake3.New(32, k1[:])
	ref.Write(data)
	var want id.ID
	copy(want[:], ref.Sum(nil))

	tests := []struct {
		name      string
		a, b      id.ID
		wantEqual bool
	}{
		{"matches keyed BLAKE3", h1.ID(data), want, true},
		{"same key same ID", h1.ID(data), h1b.ID(data), true},
		{"repeatable (pooled state reset)", h1.ID(data[:100]), h1.ID(data[:100]), true},
		{"different keys", h1.ID(data), h2.ID(data), false},
		{"not the unkeyed hash", h1.ID(data), id.ID(blake3.Sum256(data)), false},
		{"different data", h1.ID(data[:1000]), h1.ID(data[:1001]), false},
		{"empty input keyed", h1.ID(nil), h2.ID(nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if (tt.a == tt.b) != tt.wantEqual {
				t.Fatalf("got %s vs %s equal=%v, want equal=%v", tt.a.Short(), tt.b.Short(), tt.a == tt.b, tt.wantEqual)
			}
		})
	}
	var f IDFunc = h1.ID
	if f(data) != want {
		t.Fatal("IDFunc from method value: got a different ID")
	}
}

func TestHasherConcurrent(t *testing.T) {
	h := NewHasher([32]byte{9})
	inputs := make([][]byte, 16)
	want := make([]id.ID, len(inputs))
	for i := range inputs {
		inputs[i] = randBytes(uint64(60+i), 1+i*37000)
		want[i] = h.ID(inputs[i])
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for round := range 20 {
				i := (g + round) % len(inputs)
				if got := h.ID(inputs[i]); got != want[i] {
					t.Errorf("goroutine %d input %d: got %s, want %s", g, i, got.Short(), want[i].Short())
				}
			}
		})
	}
	wg.Wait()
}
