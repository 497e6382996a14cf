package repo

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// TestRepairFailsOnDamageItCannotFix: check finds a snapshot whose
// tree is in no index and a file whose chunk is in no index; repair has
// no shards to rebuild for them, but must not exit 0 ("full success")
// and leave the operator believing the repository is whole.
func TestRepairFailsOnDamageItCannotFix(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t, nil, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	lostChunk := id.Hash([]byte("a chunk whose pack was removed"))
	n := &Node{Name: "disk.img", Type: NodeFile, Size: 10, Content: []Extent{{ID: lostChunk, Len: 10}}}
	tree, err := r.SaveTree(ctx, &Tree{Nodes: []*Node{n}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tree, Host: "h", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// A snapshot whose tree's pack was removed with its index entry
	// (SaveSnapshot refuses to write one, so the object is made here).
	b, _ := json.Marshal(&Snapshot{Version: SnapshotVersion, Tree: id.Hash([]byte("a tree in no index")), Host: "h", Time: time.Now()})
	if _, err := r.saveObject(ctx, tiers.TypeSnapshot, b); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Check(ctx, CheckOptions{})
	if !errors.Is(err, ErrCheckFailed) || rep.MissingBlobs != 1 || len(rep.Errors) < 2 {
		t.Fatalf("check: %v, missing blobs %d, errors %q", err, rep.MissingBlobs, rep.Errors)
	}
	if _, err := r.Repair(ctx, CheckOptions{}); err == nil {
		t.Fatal("repair returned success with a snapshot whose tree and a file whose chunk are in no index")
	}
}
