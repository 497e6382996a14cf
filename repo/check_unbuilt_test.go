package repo

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// oneBlobFiles stores n files of one blob each (blob i in file fi) in one
// snapshot and returns their extents.
func oneBlobFiles(t *testing.T, r *Repository, n, size int) []Extent {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	var ext []Extent
	tr := &Tree{}
	for i := 0; i < n; i++ {
		b := randBytes(rng, size)
		x, _, err := r.SaveBlob(ctx, DataBlob, b, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		e := Extent{ID: x, Len: int64(size)}
		ext = append(ext, e)
		nd := &Node{Name: fmt.Sprintf("f%02d", i), Type: NodeFile, Size: int64(size)}
		if err := r.SetContent(ctx, nd, []Extent{e}); err != nil {
			t.Fatal(err)
		}
		tr.Nodes = append(tr.Nodes, nd)
	}
	tree, err := r.SaveTree(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tree, Host: "h", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return ext
}

// onlyDamage reloads r's index, runs check --read-data and returns the
// damage of the one damaged pack it must find.
func onlyDamage(t *testing.T, r *Repository) PackDamage {
	t.Helper()
	ctx := context.Background()
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	rep, _ := r.Check(ctx, CheckOptions{ReadData: true})
	if len(rep.Damaged) != 1 {
		t.Fatalf("damaged %+v", rep.Damaged)
	}
	return rep.Damaged[0]
}

// flipAt flips the byte at offset packOff of pack p in its data shard.
func flipAt(t *testing.T, be tiers.Backend, p PackInfo, packOff int64) {
	t.Helper()
	ctx := context.Background()
	sp, err := p.header().Locate(packOff, 1)
	if err != nil {
		t.Fatal(err)
	}
	h := p.ShardHandle(sp[0].Shard)
	b, err := tiers.LoadAll(ctx, be, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b[sp[0].ObjOffset] ^= 0xff
	if err := tiers.PutBytes(ctx, be, h, b); err != nil {
		t.Fatal(err)
	}
}

// A pack that does not rebuild but whose blobs all read intact from the
// data shards: check says so and names no files.
func TestCheckUnbuiltPackIntactBlobsNameNoFiles(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20})
	ext := oneBlobFiles(t, r, 20, 20000)
	p := r.Lookup(ext[0].ID)[0].Pack
	be.Remove(ctx, p.ShardHandle(3))
	be.Remove(ctx, p.ShardHandle(4))
	flipAt(t, be, p, p.Length-2) // in the pack trailer: no blob lies there
	d := onlyDamage(t, r)
	if !d.BlobsRead || d.BadBlobs != 0 || len(d.Files) != 0 {
		t.Errorf("pack without parity and a flipped trailer byte: blobs read %v, %d lost, files named %v; want every blob read intact and no file named (details %q)", d.BlobsRead, d.BadBlobs, d.Files, d.Details)
	}
}

// A missing data shard loses only the blobs with bytes in it: check counts
// exactly the blobs that do not read on their own, although it reads the
// pack in ranges that span several shards.
func TestCheckUnbuiltPackMissingDataShard(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20})
	ext := oneBlobFiles(t, r, 20, 20000)
	p := r.Lookup(ext[0].ID)[0].Pack
	for _, i := range []int{2, 3, 4} {
		be.Remove(ctx, p.ShardHandle(i))
	}
	d := onlyDamage(t, r)
	readable := 0
	for _, e := range ext {
		l := r.Lookup(e.ID)[0]
		if err := r.LoadBlobs(ctx, l.Pack, []BlobEntry{l.Entry}, func(BlobEntry, []byte) error { return nil }); err == nil {
			readable++
		}
	}
	if readable == 0 || readable == len(ext) {
		t.Fatalf("%d of %d blobs read on their own; the test needs some of each", readable, len(ext))
	}
	if d.BadBlobs != len(ext)-readable || len(d.Files) != len(ext)-readable {
		t.Errorf("check counts %d blobs lost and names %d files, but %d of %d blobs fail to read on their own", d.BadBlobs, len(d.Files), len(ext)-readable, len(ext))
	}
}

// A blob stored in two packs (by two sessions) is lost in both: each pack
// counts it, and neither names the file whose own blob reads intact.
func TestCheckLostBlobInTwoPacks(t *testing.T) {
	ctx := context.Background()
	be, r1, _, _, locs := twoPacksSharingABlob(t)
	// In both packs: parity gone, the shared blob's bytes flipped.
	for _, l := range locs {
		be.Remove(ctx, l.Pack.ShardHandle(3))
		be.Remove(ctx, l.Pack.ShardHandle(4))
		flipAt(t, be, l.Pack, int64(l.Entry.Offset)+int64(l.Entry.Length)/2)
	}
	rep, _ := r1.Check(ctx, CheckOptions{ReadData: true})
	if len(rep.Damaged) != 2 {
		t.Fatalf("%d damaged packs, want 2", len(rep.Damaged))
	}
	named := 0
	for _, d := range rep.Damaged {
		if d.BadBlobs != 1 {
			t.Errorf("pack %s: %d blobs lost, want the shared one", d.Pack.Short(), d.BadBlobs)
		}
		if slices.Contains(d.Files, "/shared") {
			named++ // under the first damaged pack that holds it
		}
		for _, f := range d.Files {
			if f == "/own1" || f == "/own0" {
				t.Errorf("pack %s: check names %s, whose only blob reads intact (BadBlobs %d)", d.Pack.Short(), f, d.BadBlobs)
			}
		}
	}
	if named != 1 {
		t.Errorf("/shared is named by %d damaged packs, want 1", named)
	}
}

// A blob stored in two packs (by two sessions) and lost in one of them
// still restores from the other: check does not name its file.
func TestCheckLostBlobIntactInAnotherPack(t *testing.T) {
	ctx := context.Background()
	be, r1, shared, sharedID, locs := twoPacksSharingABlob(t)
	// In the first pack only: parity gone, the shared blob's bytes flipped.
	l := locs[0]
	be.Remove(ctx, l.Pack.ShardHandle(3))
	be.Remove(ctx, l.Pack.ShardHandle(4))
	flipAt(t, be, l.Pack, int64(l.Entry.Offset)+int64(l.Entry.Length)/2)
	if b, err := r1.LoadBlob(ctx, DataBlob, sharedID, nil); err != nil || !bytes.Equal(b, shared) {
		t.Fatalf("test set-up: the shared blob does not read from its intact copy: %v", err)
	}
	rep, _ := r1.Check(ctx, CheckOptions{ReadData: true})
	if len(rep.Damaged) != 1 || rep.Damaged[0].BadBlobs != 1 {
		t.Fatalf("damaged %+v, want one pack that lost the shared blob", rep.Damaged)
	}
	if d := rep.Damaged[0]; len(d.Files) != 0 {
		t.Errorf("check names %v, but the blob lost in pack %s reads intact from pack %s", d.Files, d.Pack.Short(), locs[1].Pack.ID.Short())
	}
}

// twoPacksSharingABlob stores, from two sessions of one repository, two
// snapshots of files "shared" (the same bytes) and "own0"/"own1": the
// shared blob lies in both sessions' packs. It returns the backend, the
// first session, the shared bytes and the shared blob's two locations.
func twoPacksSharingABlob(t *testing.T) (*tierstest.Memory, *Repository, []byte, id.ID, []BlobLocation) {
	t.Helper()
	ctx := context.Background()
	be := tierstest.NewMemory()
	r1 := testRepo(t, be, InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20})
	r2, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	shared := randBytes(rng, 20000)
	for k, r := range []*Repository{r1, r2} {
		x, _, err := r.SaveBlob(ctx, DataBlob, shared, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		own := randBytes(rng, 20000)
		y, _, err := r.SaveBlob(ctx, DataBlob, own, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		a := &Node{Name: "shared", Type: NodeFile, Size: 20000}
		b := &Node{Name: fmt.Sprintf("own%d", k), Type: NodeFile, Size: 20000}
		r.SetContent(ctx, a, []Extent{{ID: x, Len: 20000}})
		r.SetContent(ctx, b, []Extent{{ID: y, Len: 20000}})
		tr, err := r.SaveTree(ctx, &Tree{Nodes: []*Node{a, b}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tr, Host: "h", Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r1.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	sharedID := r1.BlobID(shared)
	locs := r1.Lookup(sharedID)
	if len(locs) != 2 {
		t.Fatalf("shared blob in %d packs, want 2", len(locs))
	}
	return be, r1, shared, sharedID, locs
}
