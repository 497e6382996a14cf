package tape

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// hintRecorder is a source that records the objects hinted to it.
type hintRecorder struct {
	tiers.Backend
	hints chan int
}

func (r *hintRecorder) Prefetch(h tiers.Handle) {
	i, _ := strconv.Atoi(h.Name[len("obj"):])
	r.hints <- i
}

// TestPrefetchStaysAWindowAhead: the tape writer hints the objects to the
// source in order, never more than prefetchWindow bytes beyond the object
// being read, and skips the ones the producer has already passed.
func TestPrefetchStaysAWindowAhead(t *testing.T) {
	const size = 4 << 20
	objs := make([]PlanObject, 100)
	for i := range objs {
		objs[i] = PlanObject{Handle: tiers.Handle{Type: tiers.TypeData, Name: fmt.Sprintf("obj%d", i)}, Size: size}
	}
	rec := &hintRecorder{hints: make(chan int, len(objs))}
	w := &setWriter{src: rec}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const start = 3
	at := w.startPrefetch(ctx, objs, start)
	if at == nil {
		t.Fatal("a source with Prefetch got no hints")
	}
	ahead := prefetchWindow / size
	next := start
	expectUpTo := func(last int) {
		t.Helper()
		for ; next <= last; next++ {
			select {
			case i := <-rec.hints:
				if i != next {
					t.Fatalf("hinted object %d, want %d (in order)", i, next)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("object %d was never hinted", next)
			}
		}
		select {
		case i := <-rec.hints:
			t.Fatalf("object %d hinted more than the window ahead (last allowed %d)", i, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
	expectUpTo(start + ahead)
	at <- start + 10
	expectUpTo(start + 10 + ahead)
	// The producer overtakes the hints: they resume at its object.
	at <- 80
	next = 80
	expectUpTo(80 + ahead)
	at <- 90
	expectUpTo(len(objs) - 1)
	close(at)
	if (&setWriter{src: tiers.Backend(nil)}).startPrefetch(ctx, objs, 0) != nil {
		t.Error("a source without Prefetch got a hinter")
	}
}
