package repo

import (
	"context"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// A lost pack that touches more files than check lists says so: the
// operator restores the listed files from another tier and must know that
// the list is not all of them.
func TestCheckSaysWhenTheFileListIsCut(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	ext := oneBlobFiles(t, r, maxListed+1, 64)
	p := r.Lookup(ext[0].ID)[0].Pack
	for _, e := range ext {
		if r.Lookup(e.ID)[0].Pack.ID != p.ID {
			t.Fatal("test set-up: the blobs are in more than one pack")
		}
	}
	be.Remove(ctx, p.ShardHandle(0))
	be.Remove(ctx, p.ShardHandle(1))
	rep, _ := r.Check(ctx, CheckOptions{})
	if len(rep.Damaged) != 1 {
		t.Fatalf("damaged %+v", rep.Damaged)
	}
	d := rep.Damaged[0]
	if len(d.Files) != maxListed || !d.MoreFiles {
		t.Errorf("a lost pack of %d files: %d files listed, more files %v; want %d listed and more files reported", maxListed+1, len(d.Files), d.MoreFiles, maxListed)
	}
}
