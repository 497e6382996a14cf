package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// heapAtSnapshots records the live heap each time a snapshot object is
// loaded: check loads one snapshot after walking the one before.
type heapAtSnapshots struct {
	tiers.Backend
	heap []uint64
}

func (b *heapAtSnapshots) Load(ctx context.Context, h tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	if h.Type == tiers.TypeSnapshot {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.heap = append(b.heap, ms.HeapAlloc)
	}
	return b.Backend.Load(ctx, h, off, n, fn)
}

// A damaged pack touching many files, in a directory every snapshot
// holds under its own root, costs check memory for the files it lists,
// not for every file in every snapshot: what the walk learnt of one
// snapshot's trees is not kept flattened per root for the whole run.
func TestCheckMemoryDoesNotGrowWithSnapshotsOfDamagedFiles(t *testing.T) {
	ctx := context.Background()
	be := &heapAtSnapshots{Backend: tierstest.NewMemory()}
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	const files, snapshots = 2000, 100
	x, _, err := r.SaveBlob(ctx, DataBlob, []byte("one blob every file holds"), id.ID{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	dir := &Tree{}
	for i := range files {
		nd := &Node{Name: fmt.Sprintf("f%04d", i), Type: NodeFile, Size: 25}
		if err := r.SetContent(ctx, nd, []Extent{{ID: x, Len: 25}}); err != nil {
			t.Fatal(err)
		}
		dir.Nodes = append(dir.Nodes, nd)
	}
	sub, err := r.SaveTree(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range snapshots {
		root, err := r.SaveTree(ctx, &Tree{Nodes: []*Node{
			{Name: "d", Type: NodeDir, Subtree: &sub},
			{Name: fmt.Sprintf("changed%03d", i), Type: NodeDir},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r.SaveSnapshot(ctx, &Snapshot{Tree: root, Host: "h", Time: time.Unix(int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	p := r.Lookup(x)[0].Pack
	if err := be.Remove(ctx, p.ShardHandle(0)); err != nil {
		t.Fatal(err)
	}
	be.heap = nil
	rep, _ := r.Check(ctx, CheckOptions{})
	if len(rep.Damaged) != 1 {
		t.Fatalf("damaged %+v", rep.Damaged)
	}
	d := rep.Damaged[0]
	if len(d.Files) != maxListed || !d.MoreFiles || d.Files[0] != "/d/f0000" || len(d.Snapshots) != snapshots || d.MoreSnapshots {
		t.Errorf("damage %d files (first %q, more %v), %d snapshots (more %v); want %d files and more, from /d/f0000, and the %d snapshots",
			len(d.Files), d.Files[0], d.MoreFiles, len(d.Snapshots), d.MoreSnapshots, maxListed, snapshots)
	}
	if len(be.heap) != snapshots {
		t.Fatalf("%d snapshot loads seen, want %d", len(be.heap), snapshots)
	}
	if grown := int64(be.heap[snapshots-1]) - int64(be.heap[1]); grown > 4<<20 {
		t.Errorf("the live heap grew by %d MiB over %d snapshots of the same %d damaged files, want under 4 MiB", grown>>20, snapshots, files)
	}
}

// Files referencing a blob in no index (an index object lost) are named
// up to the number a damaged pack lists, and the rest counted, rather
// than one error for every such file of every snapshot.
func TestCheckBoundsTheFilesNamedForBlobsInNoIndex(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t, nil, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	const files, snapshots = maxListed + 100, 3
	lost := id.Hash([]byte("a blob whose index object is gone"))
	dir := &Tree{}
	for i := range files {
		nd := &Node{Name: fmt.Sprintf("f%04d", i), Type: NodeFile, Size: 25}
		if err := r.SetContent(ctx, nd, []Extent{{ID: lost, Len: 25}}); err != nil {
			t.Fatal(err)
		}
		dir.Nodes = append(dir.Nodes, nd)
	}
	tree, err := r.SaveTree(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range snapshots {
		if _, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tree, Host: "h", Time: time.Unix(int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := r.Check(ctx, CheckOptions{})
	if !errors.Is(err, ErrCheckFailed) || rep.MissingBlobs == 0 {
		t.Fatalf("check: %v, %d blobs missing; want it failed on them", err, rep.MissingBlobs)
	}
	if len(rep.Errors) != maxListed+1 || !strings.Contains(rep.Errors[maxListed], fmt.Sprint(files*snapshots-maxListed)) {
		last := ""
		if len(rep.Errors) > 0 {
			last = rep.Errors[len(rep.Errors)-1]
		}
		t.Errorf("%d errors for %d files in %d snapshots referencing a blob in no index, the last %q; want %d named and the %d others counted",
			len(rep.Errors), files, snapshots, last, maxListed, files*snapshots-maxListed)
	}
}
