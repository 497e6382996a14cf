package repo

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestCheckReportsDamagedKeySlot: a key slot whose bytes no longer match
// its name no longer opens the repository with its password (a recovery
// key kept for the DR site, say); check must say so rather than call the
// repository healthy because the slot it was opened with is intact.
func TestCheckReportsDamagedKeySlot(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	smallSnapshot(t, r)
	k2, err := r.AddKey(ctx, []byte("recovery"), "recovery")
	if err != nil {
		t.Fatal(err)
	}
	h := tiers.Handle{Type: tiers.TypeKey, Name: k2.String()}
	b, err := tiers.LoadAll(ctx, be, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := tiers.PutBytes(ctx, be, h, b); err != nil {
		t.Fatal(err)
	}
	for _, readData := range []bool{false, true} {
		rep, err := r.Check(ctx, CheckOptions{ReadData: readData})
		if !errors.Is(err, ErrCheckFailed) {
			t.Fatalf("check (read data %v) with a damaged key slot: err %v, errors %q; want ErrCheckFailed", readData, err, rep.Errors)
		}
		if !strings.Contains(strings.Join(rep.Errors, "\n"), k2.Short()) {
			t.Errorf("check (read data %v): errors %q do not name key slot %s", readData, rep.Errors, k2.Short())
		}
	}
}

// removeListedKey removes one key slot once a listing of the key slots
// has passed its name: what a drpipe key remove does beside the listing.
type removeListedKey struct {
	tiers.Backend
	name string
}

func (b *removeListedKey) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	return b.Backend.List(ctx, t, func(oi tiers.ObjectInfo) error {
		if t == tiers.TypeKey && oi.Handle.Name == b.name {
			if err := b.Backend.Remove(ctx, oi.Handle); err != nil {
				return err
			}
		}
		return fn(oi)
	})
}

// TestCheckBesideKeyRemove: a key slot removed (drpipe key remove) after
// check listed the slots and before it read that one is gone, not
// damage: check must not report the repository unhealthy for it.
func TestCheckBesideKeyRemove(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	be := &removeListedKey{Backend: mem}
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	smallSnapshot(t, r)
	k2, err := r.AddKey(ctx, []byte("recovery"), "recovery")
	if err != nil {
		t.Fatal(err)
	}
	be.name = k2.String()
	rep, err := r.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatalf("check beside a key remove: %v, errors %q", err, rep.Errors)
	}
}

// TestRemoveKeySlotTooLarge: a key slot object larger than any slot is
// damaged, as check and key list say; drpipe key remove, which check
// tells the operator to run, must remove it rather than fail reading it.
func TestRemoveKeySlotTooLarge(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	k2, err := r.AddKey(ctx, []byte("recovery"), "recovery")
	if err != nil {
		t.Fatal(err)
	}
	h := tiers.Handle{Type: tiers.TypeKey, Name: k2.String()}
	if err := tiers.PutBytes(ctx, be, h, make([]byte, maxSmallObject+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Check(ctx, CheckOptions{}); !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("check with a key slot too large: %v, want ErrCheckFailed", err)
	}
	if err := r.RemoveKey(ctx, k2); err != nil {
		t.Fatalf("remove the damaged key slot %s: %v", k2.Short(), err)
	}
	if _, err := be.Stat(ctx, h); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("key slot %s still stored after its removal: %v", k2.Short(), err)
	}
	if rep, err := r.Check(ctx, CheckOptions{}); err != nil {
		t.Errorf("check after the damaged key slot was removed: %v, errors %q", err, rep.Errors)
	}
}
