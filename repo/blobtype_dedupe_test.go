package repo

import (
	"bytes"
	"context"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestSaveBlobDedupesByType: a blob is deduplicated only against a blob of
// its own type. A file holding exactly a directory's listing has the same
// id as that directory's tree blob; before, whichever came second was
// taken as stored, and reading it as its own type (the snapshot's tree,
// or the file's content) failed as "indexed only with another type".
func TestSaveBlobDedupesByType(t *testing.T) {
	ctx := context.Background()
	plain, err := encodeTree(&Tree{Nodes: []*Node{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, flush := range []bool{false, true} {
		mem := tierstest.NewMemory()
		r := testRepo(t, mem, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
		if _, _, err := r.SaveBlob(ctx, DataBlob, plain, id.ID{}); err != nil {
			t.Fatal(err)
		}
		if flush {
			if err := r.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			r = reopen(t, mem)
		}
		x, err := r.SaveTree(ctx, &Tree{Nodes: []*Node{}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		rr := reopen(t, mem)
		if _, err := rr.LoadTree(ctx, x); err != nil {
			t.Errorf("data blob indexed before (flushed %v): the tree: %v", flush, err)
		}
		if got, err := rr.LoadBlob(ctx, DataBlob, x, nil); err != nil || !bytes.Equal(got, plain) {
			t.Errorf("data blob indexed before (flushed %v): the data blob: %v", flush, err)
		}
	}
}
