package repo

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
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

// TestSnapshotPacksGoByBlobType: a snapshot holding an empty directory
// and a file whose content is exactly that directory's listing needs the
// tree blob and the data blob of one id, stored in two packs; the packs
// a copy or a tape set takes for it include both.
func TestSnapshotPacksGoByBlobType(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	r := testRepo(t, mem, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	plain, err := encodeTree(&Tree{Version: TreeVersion, Nodes: []*Node{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, save := range []func() error{
		func() error { _, err := r.SaveTree(ctx, &Tree{Version: TreeVersion, Nodes: []*Node{}}); return err },
		func() error { _, _, err := r.SaveBlob(ctx, DataBlob, plain, id.ID{}); return err },
	} {
		if err := save(); err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	x := r.BlobID(plain)
	now := time.Now()
	root, err := r.SaveTree(ctx, &Tree{Version: TreeVersion, Nodes: []*Node{
		{Name: "empty", Type: NodeDir, Mode: 0o755, ModTime: now, Subtree: &x},
		{Name: "f", Type: NodeFile, Mode: 0o644, ModTime: now, Size: int64(len(plain)), Content: []Extent{{ID: x, Len: int64(len(plain))}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &Snapshot{Time: now, Host: "h", Paths: []string{"/"}, Tree: root}
	if _, err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	r = reopen(t, mem)
	want := map[id.ID]BlobType{}
	for _, l := range r.Lookup(x) {
		want[l.Pack.ID] = l.Entry.Type
	}
	if len(want) != 2 {
		t.Fatalf("the listing and the file's content are in %d packs, want 2 (one of each type): %v", len(want), want)
	}
	packs, err := r.NewPackWalker().SnapshotPacks(ctx, sn)
	if err != nil {
		t.Fatal(err)
	}
	got := map[id.ID]bool{}
	for _, p := range packs {
		got[p.ID] = true
	}
	for p, typ := range want {
		if !got[p] {
			t.Errorf("the packs the snapshot needs leave out pack %s, which holds the %s copy", p.Short(), typ)
		}
	}
}

// TestCheckDamageGoesByBlobType: a file whose chunk's only data copy lies
// in a lost pack does not restore, though a directory listing with the
// same bytes lies in an intact pack, so check names the file among those
// the lost pack touches.
func TestCheckDamageGoesByBlobType(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	r := testRepo(t, mem, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	plain, err := encodeTree(&Tree{Version: TreeVersion, Nodes: []*Node{}})
	if err != nil {
		t.Fatal(err)
	}
	x := r.BlobID(plain)
	for _, save := range []func() error{
		func() error { _, err := r.SaveTree(ctx, &Tree{Version: TreeVersion, Nodes: []*Node{}}); return err },
		func() error { _, _, err := r.SaveBlob(ctx, DataBlob, plain, x); return err },
	} {
		if err := save(); err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	root, err := r.SaveTree(ctx, &Tree{Version: TreeVersion, Nodes: []*Node{
		{Name: "f", Type: NodeFile, Mode: 0o644, ModTime: now, Size: int64(len(plain)), Content: []Extent{{ID: x, Len: int64(len(plain))}}},
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
	r = reopen(t, mem)
	var lost PackInfo
	for _, l := range r.Lookup(x) {
		if l.Entry.Type == DataBlob {
			lost = l.Pack
		}
	}
	if lost.ID.IsNull() {
		t.Fatal("the file's chunk is in no pack as a data blob")
	}
	for i := range 2 {
		if err := mem.Remove(ctx, lost.ShardHandle(i)); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := r.Check(ctx, CheckOptions{})
	if !errors.Is(err, ErrCheckFailed) || rep == nil {
		t.Fatalf("check: %v, want it to fail", err)
	}
	for _, d := range rep.Damaged {
		if d.Pack == lost.ID {
			if !slices.Contains(d.Files, "/f") {
				t.Fatalf("the lost pack %s touches files %v, want /f, whose only data copy it held", lost.ID.Short(), d.Files)
			}
			return
		}
	}
	t.Fatalf("the lost pack %s is not reported: %+v", lost.ID.Short(), rep.Damaged)
}
