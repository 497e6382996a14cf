package repo

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// stuckPuts is a storage that does not answer: a data object's Put waits
// until release is closed, whatever its context (a write hung on a dead
// network file system).
type stuckPuts struct {
	tiers.Backend
	release chan struct{}
}

func (b *stuckPuts) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if h.Type == tiers.TypeData {
		<-b.release
	}
	return b.Backend.Put(ctx, h, rd, size)
}

// TestIndexStoredStuckUpload: an interrupted backup indexes what it
// stored within the time its context gives, even while an upload hangs
// on a storage that does not answer, instead of holding up Ctrl-C until
// that upload ends.
func TestIndexStoredStuckUpload(t *testing.T) {
	ctx := context.Background()
	be := &stuckPuts{Backend: tierstest.NewMemory(), release: make(chan struct{})}
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	defer close(be.release)
	rng := rand.New(rand.NewPCG(3, 3))
	for range 40 { // more than a pack: one upload starts, and hangs
		if _, _, err := r.SaveBlob(ctx, DataBlob, randBytes(rng, 30000), id.ID{}); err != nil {
			t.Fatal(err)
		}
	}
	ictx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.IndexStored(ictx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("IndexStored with an upload hung: %v, want the deadline exceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("IndexStored waited for an upload that does not end, past its context's deadline")
	}
}
