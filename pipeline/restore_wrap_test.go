package pipeline

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/drpipe/drpipe/repo"
)

// TestRestoreRefusesOverflowingExtents: a file whose extent lengths add
// up past the largest offset and wrap around to its size is not
// restored as if they covered it. The sum wrapped in the check, and the
// restore wrote the last extent over the first and reported success.
func TestRestoreRefusesOverflowingExtents(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	a, b := bytes.Repeat([]byte{'a'}, 5), bytes.Repeat([]byte{'b'}, 7)
	xa, _, err := r.SaveBlob(ctx, repo.DataBlob, a, [32]byte{})
	if err != nil {
		t.Fatal(err)
	}
	xb, _, err := r.SaveBlob(ctx, repo.DataBlob, b, [32]byte{})
	if err != nil {
		t.Fatal(err)
	}
	n := &repo.Node{Name: "wrapped", Type: repo.NodeFile, Mode: 0o644, Size: 10, Content: []repo.Extent{
		{ID: xa, Len: 5}, {Zero: true, Len: math.MaxInt64}, {Zero: true, Len: math.MaxInt64}, {ID: xb, Len: 7}}}
	tree, err := r.SaveTree(ctx, &repo.Tree{Nodes: []*repo.Node{n}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	res, err := Restore(ctx, r, &repo.Snapshot{Tree: tree, Host: "h"}, RestoreOptions{Target: dst})
	got, _ := os.ReadFile(filepath.Join(dst, "wrapped"))
	if err == nil && (res == nil || len(res.Failed) == 0) {
		t.Fatalf("restored a file whose extents wrap around its size (content %q), want it failed", got)
	}
}
