package repo

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// One truncated index object must not make the repository unusable: Open
// leaves it out and reports it, snapshots whose blobs other index objects
// list stay readable, prune refuses, and repair replaces it.
func TestDamagedIndexObjectIsSkippedAndRepaired(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	save := func(content string) (id.ID, id.ID) {
		return r.BlobID([]byte(content)), snapOf(t, r, [][]byte{[]byte(content)})
	}
	indexNames := func() map[string]bool {
		out := map[string]bool{}
		be.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error { out[oi.Handle.Name] = true; return nil })
		return out
	}
	first, _ := save("first backup")
	before := indexNames()
	second, _ := save("second backup")
	var victim string
	for n := range indexNames() {
		if !before[n] {
			victim = n
		}
	}
	if victim == "" {
		t.Fatal("second backup wrote no index object")
	}
	h := tiers.Handle{Type: tiers.TypeIndex, Name: victim}
	raw, err := tiers.LoadAll(ctx, be, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tiers.PutBytes(ctx, be, h, raw[:len(raw)/2]); err != nil { // truncated
		t.Fatal(err)
	}

	r2, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatalf("open with one truncated index object: %v", err)
	}
	defer r2.Close()
	dmg := r2.DamagedIndexes()
	if len(dmg) != 1 || dmg[mustParse(t, victim)] == nil {
		t.Fatalf("damaged indexes %v, want %s", dmg, victim)
	}
	if b, err := r2.LoadBlob(ctx, DataBlob, first, nil); err != nil || !bytes.Equal(b, []byte("first backup")) {
		t.Fatalf("blob of the first backup: %q, %v", b, err)
	}
	if _, err := r2.Prune(ctx, PruneOptions{}); !errors.Is(err, ErrPruneUnsafe) {
		t.Fatalf("prune with a damaged index object: %v, want ErrPruneUnsafe", err)
	}
	rep, err := r2.Repair(ctx, CheckOptions{})
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	if rep.IndexesReplaced != 1 || len(r2.DamagedIndexes()) != 0 {
		t.Fatalf("repair replaced %d index objects, still damaged %v", rep.IndexesReplaced, r2.DamagedIndexes())
	}
	if b, err := r2.LoadBlob(ctx, DataBlob, second, nil); err != nil || !bytes.Equal(b, []byte("second backup")) {
		t.Fatalf("blob of the second backup after repair: %q, %v", b, err)
	}
	if _, err := r2.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check after repair: %v", err)
	}
}

func mustParse(t *testing.T, s string) id.ID {
	t.Helper()
	x, err := id.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestIndexOfNewerCompressionIsNotDamage: an index object that opens but
// names a compression this drpipe does not know may have been written by
// a newer drpipe. It is not damage: Open fails instead of leaving it out,
// and repair, which removes damaged index objects, leaves it in place.
func TestIndexOfNewerCompressionIsNotDamage(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	snapOf(t, r, [][]byte{[]byte("some data")})
	sealed := r.key.sealAs(kindIndex, nil, []byte{0x7f, 'n', 'e', 'w'})
	x := id.Hash(sealed)
	h := tiers.Handle{Type: tiers.TypeIndex, Name: x.String()}
	if err := tiers.PutBytes(ctx, be, h, sealed); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadIndexFile(ctx, x); err == nil || errors.Is(err, ErrIndexDamaged) {
		t.Fatalf("index object with an unknown compression: %v, want an error that is not ErrIndexDamaged", err)
	}
	if _, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir()}); err == nil {
		t.Fatal("Open left out an index object a newer drpipe may have written")
	}
	c, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), SkipUnreadableIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Repair(ctx, CheckOptions{})
	if _, err := be.Stat(ctx, h); err != nil {
		t.Fatalf("repair removed an index object a newer drpipe may have written: %v", err)
	}
}
