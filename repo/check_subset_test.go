package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestCheckReadDataSubset: --read-data-subset N/T reads the N-th of T
// parts of the packs; the T parts are disjoint and together every pack,
// so damage is found by exactly one of the T runs. A percentage reads
// about that share, 100% all of them.
func TestCheckReadDataSubset(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(3, 3))
	var ext []Extent
	for i := 0; i < 24; i++ {
		b := make([]byte, 200<<10)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		x, _, err := r.SaveBlob(ctx, DataBlob, b, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		ext = append(ext, Extent{ID: x, Len: int64(len(b))})
	}
	fileSnapshot(t, r, &Node{Name: "f", Type: NodeFile, Size: int64(len(ext)) * 200 << 10}, ext)

	// Damage one shard of one data pack.
	var victim tiers.Handle
	if err := be.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		if _, i, err := erasure.ParseShardName(oi.Handle.Name); err == nil && i == 0 && victim.Name == "" {
			victim = oi.Handle
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b, err := tiers.LoadAll(ctx, be, victim, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-10] ^= 0xff
	if err := tiers.PutBytes(ctx, be, victim, b); err != nil {
		t.Fatal(err)
	}

	full, err := r.Check(ctx, CheckOptions{ReadData: true})
	if !errors.Is(err, ErrCheckFailed) || len(full.Damaged) != 1 {
		t.Fatalf("full read: err %v, damaged %v; want the one damaged pack", err, full.Damaged)
	}
	if full.PacksRead != full.Packs || full.Packs < 10 {
		t.Fatalf("full read read %d of %d packs", full.PacksRead, full.Packs)
	}
	const parts = 3
	read, found := 0, 0
	for n := 1; n <= parts; n++ {
		sub, err := ParseSubset(fmt.Sprintf("%d/%d", n, parts))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := r.Check(ctx, CheckOptions{ReadData: true, Subset: sub})
		if rep.ReadSubset != sub.String() || rep.PacksRead == rep.Packs {
			t.Errorf("subset %s: report says subset %q, %d of %d packs read", sub, rep.ReadSubset, rep.PacksRead, rep.Packs)
		}
		read += rep.PacksRead
		if len(rep.Damaged) > 0 {
			found++
			if !errors.Is(err, ErrCheckFailed) || rep.Damaged[0].Pack != full.Damaged[0].Pack {
				t.Errorf("subset %s: err %v, damaged %v", sub, err, rep.Damaged)
			}
		} else if err != nil {
			t.Errorf("subset %s without the damaged pack: %v", sub, err)
		}
	}
	if read != full.Packs || found != 1 {
		t.Errorf("the %d parts read %d packs of %d and found the damage %d times; want every pack once, the damage once", parts, read, full.Packs, found)
	}
	all, _ := ParseSubset("100%")
	if rep, _ := r.Check(ctx, CheckOptions{ReadData: true, Subset: all}); rep.PacksRead != full.Packs || len(rep.Damaged) != 1 {
		t.Errorf("100%%: read %d of %d packs, damaged %v", rep.PacksRead, full.Packs, rep.Damaged)
	}
	some, _ := ParseSubset("50%")
	if rep, _ := r.Check(ctx, CheckOptions{ReadData: true, Subset: some}); rep.PacksRead == 0 || rep.PacksRead == full.Packs {
		t.Errorf("50%%: read %d of %d packs", rep.PacksRead, full.Packs)
	}
}

func TestParseSubset(t *testing.T) {
	for _, s := range []string{"1/1", "3/7", "7/7", "65536/65536", "10%", "0.5%", "100%", " 2 / 3 "} {
		if _, err := ParseSubset(s); err != nil {
			t.Errorf("ParseSubset(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "0/3", "4/3", "1/0", "1/65537", "0%", "101%", "-5%", "x/y", "3", "1/2/3", "NaN%"} {
		if _, err := ParseSubset(s); err == nil {
			t.Errorf("ParseSubset(%q) accepted", s)
		}
	}
}
