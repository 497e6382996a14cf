package repo

import (
	"context"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// A pack that only a damaged index object lists and that lost a shard
// too: one repair indexes it again and rewrites the shard, so that check
// --read-data finds nothing left to do.
func TestRepairRebuildsShardsOfReindexedPack(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	ext := smallSnapshot(t, r)
	p := r.Lookup(ext[0].ID)[0].Pack
	for n := range indexIDs(t, be) {
		h := tiers.Handle{Type: tiers.TypeIndex, Name: n}
		raw, err := tiers.LoadAll(ctx, be, h, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := tiers.PutBytes(ctx, be, h, raw[:len(raw)/2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := be.Remove(ctx, p.ShardHandle(1)); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, SkipUnreadableIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	rep, err := r2.Repair(ctx, CheckOptions{})
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	if rep.PacksReindexed == 0 {
		t.Fatalf("repair re-indexed no pack: %+v", rep)
	}
	if _, err := be.Stat(ctx, p.ShardHandle(1)); err != nil {
		t.Errorf("repair re-indexed pack %s but left its shard 1 missing: %v", p.ID.Short(), err)
	}
	if chk, err := r2.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Errorf("check --read-data after repair: %v, damaged %+v, errors %q", err, chk.Damaged, chk.Errors)
	}
}
