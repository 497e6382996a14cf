package repo

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestRepairUsesShardWithTrailingBytes: a shard object with bytes
// appended after its payload still holds the intact shard in its first
// bytes. With a data shard lost beside it, it is one of the K survivors:
// check must find the pack repairable rather than lost, and repair must
// rebuild both shards byte-identical instead of removing the lost data
// shard's blobs from the index.
func TestRepairUsesShardWithTrailingBytes(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	ext := smallSnapshot(t, r)
	p := r.Lookup(ext[0].ID)[0].Pack
	orig := map[int][]byte{}
	for i := 0; i < 3; i++ {
		b, err := tiers.LoadAll(ctx, be, p.ShardHandle(i), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		orig[i] = b
	}
	if err := tiers.PutBytes(ctx, be, p.ShardHandle(0), append(bytes.Clone(orig[0]), "trailing"...)); err != nil {
		t.Fatal(err)
	}
	if err := be.Remove(ctx, p.ShardHandle(1)); err != nil {
		t.Fatal(err)
	}
	// Without reading, check cannot tell the long shard's payload is
	// intact: it says so, and that --read-data tells.
	plain, _ := r.Check(ctx, CheckOptions{})
	if len(plain.Damaged) != 1 || !strings.Contains(strings.Join(plain.Damaged[0].Details, "; "), "check --read-data tells whether its first") {
		t.Errorf("check without --read-data: damage %+v; want the long shard named with the advice to read it", plain.Damaged)
	}
	d := onlyDamage(t, r)
	if !d.Repairable || d.BadBlobs != 0 || len(d.Corrupt) != 1 || len(d.Missing) != 1 {
		t.Fatalf("shard 0 with trailing bytes, shard 1 missing: repairable %v, %d blobs lost, missing %v, corrupt %v (details %q); want it repairable from shard 0's payload and shard 2",
			d.Repairable, d.BadBlobs, d.Missing, d.Corrupt, d.Details)
	}
	rep, err := r.Repair(ctx, CheckOptions{})
	if err != nil {
		t.Fatalf("repair: %v (blobs dropped %d)", err, rep.BlobsDropped)
	}
	for i := 0; i < 2; i++ {
		b, err := tiers.LoadAll(ctx, be, p.ShardHandle(i), 0, 0)
		if err != nil || !bytes.Equal(b, orig[i]) {
			t.Errorf("shard %d after repair: %d bytes (%v), not the %d it was stored with", i, len(b), err, len(orig[i]))
		}
	}
	if chk, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Errorf("check --read-data after repair: %v, damaged %+v", err, chk.Damaged)
	}
}
