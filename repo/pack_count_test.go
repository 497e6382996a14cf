package repo

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestPackBlobCountBounded: a pack is closed once it holds the most blobs
// a pack header may list, however much room its size leaves. Before,
// large packs of small blobs listed more, and check --read-data and
// repair refused their headers as damaged.
func TestPackBlobCountBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("saves a million blobs")
	}
	ctx := context.Background()
	r := testRepo(t, tierstest.NewMemory(), InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 64 << 20})
	var plain [8]byte
	const n = maxBlobsPerPack + 1
	for i := range n {
		binary.LittleEndian.PutUint64(plain[:], uint64(i))
		if _, _, err := r.SaveBlob(ctx, DataBlob, plain[:], id.ID{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	blobs := 0
	err := r.EachPack(func(p PackInfo) error {
		res, err := r.ReconstructPack(ctx, p)
		if err != nil {
			return err
		}
		entries, err := r.ParsePack(res.Pack)
		if err != nil {
			return err
		}
		blobs += len(entries)
		return nil
	})
	if err != nil {
		t.Fatalf("a pack of small blobs does not parse: %v", err)
	}
	if blobs != n {
		t.Fatalf("the packs list %d blobs, want %d", blobs, n)
	}
}
