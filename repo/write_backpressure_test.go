package repo

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// gatedPuts holds every shard Put until gate is closed.
type gatedPuts struct {
	tiers.Backend
	gate chan struct{}
}

func (g *gatedPuts) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if h.Type == tiers.TypeData {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Backend.Put(ctx, h, rd, size)
}

// TestFullPacksWaitForUploads: while the uploads are behind, a full pack
// waits for its upload slot with the packer held, so the other writers
// wait too. Before, each writer that filled a pack set it aside and went
// on filling a new one: up to one pack buffer per backup worker, beside
// those being uploaded.
func TestFullPacksWaitForUploads(t *testing.T) {
	ctx := context.Background()
	g := &gatedPuts{Backend: tierstest.NewMemory()}
	r, err := Init(ctx, g, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, Uploads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	g.gate = make(chan struct{})
	rng := rand.New(rand.NewPCG(3, 4))
	blob := func(n int) []byte { return randBytes(rng, n) }
	a1, a2, b1, b2, c := blob(600<<10), blob(600<<10), blob(600<<10), blob(600<<10), blob(1<<10)
	save := func(b []byte) error { _, _, err := r.SaveBlob(ctx, DataBlob, b, id.ID{}); return err }

	// The first pack takes the only upload slot, and its upload hangs.
	for _, b := range [][]byte{a1, a2} {
		if err := save(b); err != nil {
			t.Fatal(err)
		}
	}
	// The second pack fills and waits for the slot.
	bDone := make(chan error, 1)
	go func() {
		err := save(b1)
		if err == nil {
			err = save(b2)
		}
		bDone <- err
	}()
	b2ID := r.BlobID(b2)
	p := r.packers[DataBlob]
	for {
		r.idxMu.RLock()
		_, saving := r.pending[blobKey{DataBlob, b2ID}]
		r.idxMu.RUnlock()
		if saving {
			if !p.mu.TryLock() {
				break // held by the writer of the full pack
			}
			handedOff := p.buf == nil
			p.mu.Unlock()
			if handedOff {
				break
			}
		}
		time.Sleep(time.Millisecond)
	}
	// A third writer must not start another pack meanwhile.
	cDone := make(chan error, 1)
	go func() { cDone <- save(c) }()
	select {
	case err := <-cDone:
		t.Fatalf("a third pack was started while both the upload and a full pack waited (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(g.gate)
	for _, ch := range []chan error{bDone, cDone} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{a1, a2, b1, b2, c} {
		got, err := r.LoadBlob(ctx, DataBlob, r.BlobID(b), nil)
		if err != nil || string(got) != string(b) {
			t.Fatalf("blob after the uploads: %v", err)
		}
	}
}

// TestFlushStoppedKeepsOpenPack: a Flush whose context ends while it
// waits for an upload slot leaves the open pack's blobs to the next
// Flush. Before, it took them out of the packer and dropped them, while
// they still counted as stored: the next Flush succeeded without them and
// a later SaveBlob deduplicated against blobs no pack holds.
func TestFlushStoppedKeepsOpenPack(t *testing.T) {
	ctx := context.Background()
	g := &gatedPuts{Backend: tierstest.NewMemory()}
	r, err := Init(ctx, g, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, Uploads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	g.gate = make(chan struct{})
	rng := rand.New(rand.NewPCG(5, 6))
	// A full pack takes the only upload slot, and its upload hangs.
	for range 2 {
		if _, _, err := r.SaveBlob(ctx, DataBlob, randBytes(rng, 600<<10), id.ID{}); err != nil {
			t.Fatal(err)
		}
	}
	small := randBytes(rng, 1<<10)
	x, _, err := r.SaveBlob(ctx, DataBlob, small, id.ID{})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := r.Flush(sctx); err == nil {
		t.Fatal("Flush succeeded while the only upload slot was taken and its context ended")
	}
	close(g.gate)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, isNew, err := r.SaveBlob(ctx, DataBlob, small, id.ID{}); err != nil || isNew {
		t.Fatalf("saving the blob again: new %v, err %v", isNew, err)
	}
	got, err := r.LoadBlob(ctx, DataBlob, x, nil)
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("blob saved before the stopped Flush is not stored after the next one: %v", err)
	}
}

// TestConcurrentFlushes: writers that each save blobs and Flush, at once,
// see their Flush return and do not panic. Flush waited on a
// sync.WaitGroup that another writer's upload started again from zero
// meanwhile, which Go refuses ("WaitGroup is reused before previous Wait
// has returned").
func TestConcurrentFlushes(t *testing.T) {
	ctx := context.Background()
	r, err := Init(ctx, tierstest.NewMemory(), InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, IndexEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 21))
			for range 200 {
				if _, _, err := r.SaveBlob(ctx, DataBlob, randBytes(rng, 1000), id.ID{}); err != nil {
					t.Error(err)
					return
				}
				if err := r.Flush(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
