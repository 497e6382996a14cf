package repo

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// TestCheckReadDataComparesIndexWithPack: an index object whose
// entries do not say where the pack holds its blobs (two entries' offsets
// swapped, as a faulty repack would write them) makes every restore of
// those blobs fail; check --read-data must not call the repository
// healthy because the pack itself decodes.
func TestCheckReadDataComparesIndexWithPack(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t, nil, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(3, 4))
	var ext []Extent
	for i := 0; i < 2; i++ {
		b := randBytes(rng, 5000)
		x, _, err := r.SaveBlob(ctx, DataBlob, b, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		ext = append(ext, Extent{ID: x, Len: int64(len(b))})
	}
	tree, _ := r.SaveTree(ctx, &Tree{Nodes: []*Node{{Name: "f", Type: NodeFile, Size: 10000, Content: ext}}})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tree, Host: "h", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var old []id.ID
	r.be.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error {
		x, _ := id.Parse(oi.Handle.Name)
		old = append(old, x)
		return nil
	})
	data := r.Lookup(ext[0].ID)[0].Pack.ID
	var f IndexFile
	for _, x := range old {
		g, err := r.LoadIndexFile(ctx, x)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range g.Packs {
			if p.ID == data {
				var a, b *BlobEntry
				for i := range p.Blobs {
					switch p.Blobs[i].ID {
					case ext[0].ID:
						a = &p.Blobs[i]
					case ext[1].ID:
						b = &p.Blobs[i]
					}
				}
				a.Offset, b.Offset = b.Offset, a.Offset
			}
			f.Packs = append(f.Packs, p)
		}
	}
	f.Supersedes = old
	if _, err := r.SaveIndexFile(ctx, &f); err != nil {
		t.Fatal(err)
	}
	for _, x := range old {
		r.be.Remove(ctx, tiers.Handle{Type: tiers.TypeIndex, Name: x.String()})
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadBlob(ctx, DataBlob, ext[0].ID, nil); err == nil {
		t.Fatal("test set-up: the blob still reads through the swapped index entry")
	}
	rep, err := r.Check(ctx, CheckOptions{ReadData: true})
	if !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("check --read-data with index entries that do not match the pack: %v, report %+v", err, rep)
	}
	t.Logf("check: %q", rep.Errors)
}
