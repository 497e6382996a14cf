package pipeline

import (
	"context"
	"testing"

	"github.com/drpipe/drpipe/repo"
)

// TestContentKnownGoesByBlobType: a parent's file whose chunk id is
// indexed only as a tree blob (the same plaintext as a directory listing,
// which older versions deduplicated across types) is not known content:
// its chunk cannot be read as data, so the next backup must read the file
// again rather than refer to it once more.
func TestContentKnownGoesByBlobType(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	x, err := r.SaveTree(ctx, &repo.Tree{Version: repo.TreeVersion, Nodes: []*repo.Node{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b := &backup{r: r, ctx: ctx}
	n := &repo.Node{Type: repo.NodeFile, Size: 26, Content: []repo.Extent{{ID: x, Len: 26}}}
	if b.contentKnown(n) {
		t.Fatal("a chunk indexed only as a tree blob counts as the file's known content")
	}
	plain, err := r.LoadBlob(ctx, repo.TreeBlob, x, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.SaveBlob(ctx, repo.DataBlob, plain, x); err != nil {
		t.Fatal(err)
	}
	if !b.contentKnown(n) {
		t.Fatal("stored as data too, the chunk still does not count as known")
	}
}
