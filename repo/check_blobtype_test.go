package repo

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestCheckMissesAChunkIndexedAsAnotherType: a file whose chunk is
// indexed only as a tree blob (the same bytes as a directory listing, as
// versions that deduplicated across types left it) cannot be restored,
// so check reports the chunk missing and fails, instead of passing a
// snapshot whose restore then fails.
func TestCheckMissesAChunkIndexedAsAnotherType(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t, tierstest.NewMemory(), InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	listing, err := r.SaveTree(ctx, &Tree{Version: TreeVersion, Nodes: []*Node{}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	root, err := r.SaveTree(ctx, &Tree{Version: TreeVersion, Nodes: []*Node{
		{Name: "f", Type: NodeFile, Mode: 0o644, ModTime: now, Size: 26, Content: []Extent{{ID: listing, Len: 26}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveSnapshot(ctx, &Snapshot{Time: now, Host: "h", Paths: []string{"/"}, Tree: root}); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Check(ctx, CheckOptions{})
	if !errors.Is(err, ErrCheckFailed) || rep == nil || rep.MissingBlobs != 1 {
		var missing int
		if rep != nil {
			missing = rep.MissingBlobs
		}
		t.Fatalf("check: %v, %d missing blobs; want the file's chunk missing", err, missing)
	}
}
