package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
)

// TestSnapshotOverLimitRefused: a snapshot record larger than readers
// accept (an enormous VM inventory) is refused when it is saved, not
// stored as a snapshot that no reader can open.
func TestSnapshotOverLimitRefused(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t, nil, InitOptions{})
	tree, err := r.SaveTree(ctx, &Tree{Nodes: []*Node{{Name: "x", Type: NodeFile}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	inv := append(append([]byte{'"'}, bytes.Repeat([]byte{'a'}, maxObjectPlain)...), '"')
	x, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tree, Host: "h", Time: r.Now(), Inventory: json.RawMessage(inv)})
	if !errors.Is(err, ErrTooLarge) {
		if err == nil {
			_, lerr := r.LoadSnapshot(ctx, x)
			t.Fatalf("saved a snapshot of more than %d bytes as %s, which reads back as: %v", maxObjectPlain, x.Short(), lerr)
		}
		t.Fatalf("SaveSnapshot of an oversized record: %v, want an error wrapping ErrTooLarge", err)
	}
	ids, err := r.ListSnapshotIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 0 {
		t.Errorf("snapshots stored: %v, want none", ids)
	}
}
