package repo

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestFlushTakesBlobsOnTheirWayIntoAPack: a writer whose SaveBlob found
// its blob already being saved by another writer (still sealing it, not
// yet in a pack) and that then flushes gets a Flush that makes that blob
// durable too, as Flush promises for every blob saved before the call.
// Before, Flush found the blob in no pack, returned, and a snapshot the
// writer saved next named a blob that no index listed.
func TestFlushTakesBlobsOnTheirWayIntoAPack(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	o := Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF}
	r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20}, o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := randBytes(rand.New(rand.NewPCG(5, 6)), 4096)
	x := r.BlobID(data)

	// Writer A registers the blob, then is held before it reaches the
	// packer (it counts the blob in the statistics first).
	r.statsMu.Lock()
	held := true
	release := func() {
		if held {
			held = false
			r.statsMu.Unlock()
		}
	}
	defer release()
	aDone := make(chan error, 1)
	go func() { _, _, err := r.SaveBlob(ctx, DataBlob, data, x); aDone <- err }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		r.idxMu.RLock()
		_, ok := r.pending[blobKey{DataBlob, x}]
		r.idxMu.RUnlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writer A never registered its blob")
		}
	}
	// Writer B saves the same blob: it is A's, and B flushes.
	if _, isNew, err := r.SaveBlob(ctx, DataBlob, data, x); err != nil || isNew {
		t.Fatalf("second save of the blob: new %v, %v; want it taken as being saved", isNew, err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- r.Flush(ctx) }()
	select {
	case err := <-flushed:
		release()
		if err != nil {
			t.Fatal(err)
		}
		if err := <-aDone; err != nil {
			t.Fatal(err)
		}
	case <-time.After(300 * time.Millisecond):
		// Flush waits for A, as it should; let A go on.
		release()
		if err := <-flushed; err != nil {
			t.Fatal(err)
		}
		if err := <-aDone; err != nil {
			t.Fatal(err)
		}
	}
	r2, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if !r2.Has(DataBlob, x) {
		t.Fatal("a blob saved before Flush is in no index after Flush returned")
	}
}
