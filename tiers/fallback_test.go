package tiers_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

func TestFallbackConformance(t *testing.T) {
	// A Fallback whose first tier is empty and writable behaves like a
	// backend (writes and reads hit the first tier).
	tierstest.Run(t, func(t *testing.T) tiers.Backend {
		f, err := tiers.NewFallback([]tiers.Backend{tierstest.NewMemory(), tierstest.NewMemory()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	})
}

func TestFallbackServesFromLaterTiers(t *testing.T) {
	ctx := context.Background()
	hot, dr, cloud := tierstest.NewMemory(), tierstest.NewMemory(), tierstest.NewMemory()
	h1 := tiers.Handle{Type: tiers.TypeIndex, Name: "a"}
	h2 := tiers.Handle{Type: tiers.TypeIndex, Name: "b"}
	h3 := tiers.Handle{Type: tiers.TypeIndex, Name: "c"}
	tiers.PutBytes(ctx, hot, h1, []byte("hot-a"))
	tiers.PutBytes(ctx, dr, h1, []byte("dr-a"))
	tiers.PutBytes(ctx, dr, h2, []byte("dr-b"))
	tiers.PutBytes(ctx, cloud, h3, []byte("cloud-c"))
	f, _ := tiers.NewFallback([]tiers.Backend{hot, dr, cloud}, []string{"hot", "dr", "cloud"})
	for h, want := range map[tiers.Handle]string{h1: "hot-a", h2: "dr-b", h3: "cloud-c"} {
		got, err := tiers.LoadAll(ctx, f, h, 0, 0)
		if err != nil || string(got) != want {
			t.Errorf("load %s = %q, %v; want %q", h, got, err, want)
		}
	}
	u := f.Usage()
	if u[0].Objects != 1 || u[1].Objects != 1 || u[2].Objects != 1 || u[2].Bytes != 7 {
		t.Errorf("usage %+v, want one object from each tier", u)
	}
	if _, err := tiers.LoadAll(ctx, f, tiers.Handle{Type: tiers.TypeIndex, Name: "zz"}, 0, 0); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("missing everywhere: %v, want ErrNotFound", err)
	}
	var names []string
	f.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error { names = append(names, oi.Handle.Name); return nil })
	if len(names) != 3 {
		t.Errorf("union listing %v, want a b c once each", names)
	}
	// A tier that is not ready (archive class) makes the error say so.
	faulty := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	tiers.PutBytes(ctx, faulty, h3, []byte("x"))
	faulty.Inject(tierstest.Fault{Op: tierstest.OpLoad, Kind: tierstest.FailBefore, Err: tiers.ErrNotReady})
	f2, _ := tiers.NewFallback([]tiers.Backend{hot, faulty}, nil)
	if _, err := tiers.LoadAll(ctx, f2, h3, 0, 0); !errors.Is(err, tiers.ErrNotReady) {
		t.Errorf("only an archived copy: %v, want ErrNotReady", err)
	}
}

func TestFallbackSkipsCorruptCopies(t *testing.T) {
	ctx := context.Background()
	hot, dr := tierstest.NewMemory(), tierstest.NewMemory()
	good := []byte("index object bytes")
	h := tiers.Handle{Type: tiers.TypeIndex, Name: sha256hex(good)}
	tiers.PutBytes(ctx, hot, h, []byte("index object bytez")) // damaged in the hot tier
	tiers.PutBytes(ctx, dr, h, good)
	f, _ := tiers.NewFallback([]tiers.Backend{hot, dr}, []string{"hot", "dr"})
	f.Verify = true
	got, err := tiers.LoadAll(ctx, f, h, 0, 0)
	if err != nil || string(got) != string(good) {
		t.Fatalf("load = %q, %v; want the intact DR copy", got, err)
	}
	if u := f.Usage(); u[0].Misses != 1 || u[1].Objects != 1 {
		t.Errorf("usage %+v, want a miss on hot and a hit on dr", u)
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestFallbackStatDoesNotCallAnUnansweredObjectMissing: a tier that
// fails to answer (an I/O error, a timeout) may hold the object, so when
// the next tier does not have it, Stat returns the first tier's error,
// not ErrNotFound: callers take ErrNotFound for "the object is gone".
func TestFallbackStatDoesNotCallAnUnansweredObjectMissing(t *testing.T) {
	ctx := context.Background()
	h := tiers.Handle{Type: tiers.TypeIndex, Name: sha256hex([]byte("x"))}
	hot := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	tiers.PutBytes(ctx, hot, h, []byte("x"))
	broken := errors.New("disk read error")
	hot.Inject(tierstest.Fault{Op: tierstest.OpStat, Kind: tierstest.FailBefore, Err: broken})
	f, _ := tiers.NewFallback([]tiers.Backend{hot, tierstest.NewMemory()}, nil)
	if _, err := f.Stat(ctx, h); !errors.Is(err, broken) || errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("stat with the first tier failing and the second lacking it: %v, want the first tier's error", err)
	}
	f2, _ := tiers.NewFallback([]tiers.Backend{tierstest.NewMemory(), tierstest.NewMemory()}, nil)
	if _, err := f2.Stat(ctx, h); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("stat of an object no tier has: %v, want ErrNotFound", err)
	}
}
