package repo

import (
	"context"
	"errors"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestOpenReplicaUnlocksWithTheSourceKeySlots: a replica that holds the
// config but not (yet) the key slot the password opens is opened with
// the source's slots; a wrong password, or a source of another
// repository, still does not open it.
func TestOpenReplicaUnlocksWithTheSourceKeySlots(t *testing.T) {
	ctx := context.Background()
	src, dst, other := tierstest.NewMemory(), tierstest.NewMemory(), tierstest.NewMemory()
	for _, be := range []tiers.Backend{src, other} {
		r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}}, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	cfg, err := tiers.LoadAll(ctx, src, configHandle, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tiers.PutBytes(ctx, dst, configHandle, cfg); err != nil {
		t.Fatal(err)
	}
	o := Options{Password: []byte("pw"), CacheDir: t.TempDir()}
	if r, err := Open(ctx, dst, o); err == nil {
		r.Close()
		t.Fatal("fixture: the replica without key slots opens")
	}
	r, err := OpenReplica(ctx, dst, src, o)
	if err != nil {
		t.Fatalf("replica without key slots, the source's open it: %v", err)
	}
	r.Close()
	if _, err := OpenReplica(ctx, dst, src, Options{Password: []byte("wrong"), CacheDir: t.TempDir()}); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("wrong password: %v, want ErrWrongPassword", err)
	}
	if _, err := OpenReplica(ctx, dst, other, o); err == nil {
		t.Error("the key slots of another repository opened the replica")
	}
	// An empty location, about to become the replica, opens with the
	// source's config and key slots.
	srcCfg, err := ReadConfig(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	r, err = OpenReplica(ctx, tierstest.NewMemory(), src, o)
	if err != nil {
		t.Fatalf("empty location: %v", err)
	}
	if r.Config().ID != srcCfg.ID {
		t.Errorf("empty location opened as repository %s, the source is %s", r.Config().ID, srcCfg.ID)
	}
	r.Close()
}

// TestOpenReplicaOfAnotherRepositorySaysSo: a location that holds
// another repository than src is no replica of it. It is not opened, not
// even where the password opens its own key slots (a copy announced
// there would write into a repository it then refuses to copy into), and
// where it does not, the error says that it holds another repository,
// not that its config is damaged or tampered with (src's key does not
// open it).
func TestOpenReplicaOfAnotherRepositorySaysSo(t *testing.T) {
	ctx := context.Background()
	for _, otherPW := range []string{"pw", "other"} {
		src, other := tierstest.NewMemory(), tierstest.NewMemory()
		for be, pw := range map[tiers.Backend]string{src: "pw", other: otherPW} {
			r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}}, Options{Password: []byte(pw), CacheDir: t.TempDir(), KDF: testKDF})
			if err != nil {
				t.Fatal(err)
			}
			r.Close()
		}
		r, err := OpenReplica(ctx, other, src, Options{Password: []byte("pw"), CacheDir: t.TempDir()})
		if err == nil {
			r.Close()
			t.Errorf("another repository (password %q) opened as a replica of the source", otherPW)
			continue
		}
		if !errors.Is(err, tiers.ErrDifferentRepository) {
			t.Errorf("another repository (password %q): %v, want it to say that it holds a different repository", otherPW, err)
		}
	}
}
