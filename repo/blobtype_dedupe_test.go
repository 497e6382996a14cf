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

// TestSessionKeepsBothTypesOfOneID: a data blob and a tree blob of one
// id stored in one session are both known to it until it ends: each reads
// back, neither is stored a second time, and both packs count as the
// session's own.
func TestSessionKeepsBothTypesOfOneID(t *testing.T) {
	ctx := context.Background()
	plain, err := encodeTree(&Tree{Nodes: []*Node{}})
	if err != nil {
		t.Fatal(err)
	}
	r := testRepo(t, tierstest.NewMemory(), InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	x, _, err := r.SaveBlob(ctx, DataBlob, plain, id.ID{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveTree(ctx, &Tree{Nodes: []*Node{}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []BlobType{DataBlob, TreeBlob} {
		if got, err := r.LoadBlob(ctx, typ, x, nil); err != nil || !bytes.Equal(got, plain) {
			t.Errorf("the %s blob does not read back in the session that stored it: %v", typ, err)
		}
	}
	packs := 0
	_ = r.EachPack(func(PackInfo) error { packs++; return nil })
	if packs != 2 {
		t.Errorf("EachPack lists %d packs of the session, want 2 (one of each type)", packs)
	}
	for _, typ := range []BlobType{DataBlob, TreeBlob} {
		if _, isNew, err := r.SaveBlob(ctx, typ, plain, x); err != nil || isNew {
			t.Errorf("the %s blob is stored again in the session that stored it (err %v)", typ, err)
		}
	}
}
