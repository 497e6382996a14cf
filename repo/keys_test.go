package repo

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// plantKeySlot stores a key slot that no password opens, with KDF
// parameters p, under a name that sorts before every other slot.
func plantKeySlot(t *testing.T, be tiers.Backend, p KDFParams) {
	t.Helper()
	for i := 0; ; i++ {
		kf := keyFile{Version: KeyFileVersion, Label: "planted " + strings.Repeat("x", i), KDF: "argon2id", KDFParams: p,
			Salt: make([]byte, 32), Data: make([]byte, 80)}
		raw, err := json.Marshal(kf)
		if err != nil {
			t.Fatal(err)
		}
		if x := id.Hash(raw); x[0] == 0 {
			if err := tiers.PutBytes(context.Background(), be, tiers.Handle{Type: tiers.TypeKey, Name: x.String()}, raw); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// A key slot planted by someone who can write the repository, with KDF
// parameters more expensive than the genuine slot's, is not run when the
// password opens the genuine slot.
func TestUnlockTriesCheapSlotsFirst(t *testing.T) {
	be := tierstest.NewMemory()
	testRepo(t, be, InitOptions{}).Close()
	plantKeySlot(t, be, KDFParams{Time: 3, MemoryKiB: 256, Threads: 1})

	var mu sync.Mutex
	var ran []uint32
	orig := argon2IDKey
	argon2IDKey = func(pw, salt []byte, time, mem uint32, threads uint8, n uint32) []byte {
		mu.Lock()
		ran = append(ran, mem)
		mu.Unlock()
		return orig(pw, salt, time, mem, threads, n)
	}
	defer func() { argon2IDKey = orig }()

	r, err := Open(context.Background(), be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if len(ran) != 1 || ran[0] != testKDF.MemoryKiB {
		t.Fatalf("KDF ran with memory %v KiB, want only the genuine slot's %d", ran, testKDF.MemoryKiB)
	}
}

// A key slot demanding more than 1 GiB of KDF memory is refused without
// running the KDF.
func TestKeySlotKDFMemoryBound(t *testing.T) {
	mk, err := NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sealKeyFile(mk, []byte("pw"), "t", *testKDF, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	var kf keyFile
	if err := json.Unmarshal(raw, &kf); err != nil {
		t.Fatal(err)
	}
	kf.MemoryKiB = 4 << 20 // 4 GiB
	raw, _ = json.Marshal(kf)
	start := time.Now()
	if _, _, err := openKeyFile(raw, []byte("pw")); err == nil || !strings.Contains(err.Error(), "out-of-range KDF") {
		t.Fatalf("4 GiB KDF memory: err %v, want out-of-range", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusing took %v", d)
	}
}

// A wrong password is reported as such even when a damaged key slot sorts
// after the genuine one.
func TestWrongPasswordBesideDamagedSlot(t *testing.T) {
	be := tierstest.NewMemory()
	testRepo(t, be, InitOptions{}).Close()
	junk := tiers.Handle{Type: tiers.TypeKey, Name: strings.Repeat("f", 64)}
	if err := tiers.PutBytes(context.Background(), be, junk, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), be, Options{Password: []byte("wrong"), CacheDir: t.TempDir(), KDF: testKDF})
	if !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password beside a damaged slot: %v, want ErrWrongPassword", err)
	}
	r, err := Open(context.Background(), be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatalf("right password beside a damaged slot: %v", err)
	}
	r.Close()
}

// A damaged key slot is listed as damaged, beside the intact ones, and can
// be removed: it does not make the listing fail.
func TestListKeysShowsDamagedSlot(t *testing.T) {
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{})
	defer r.Close()
	junk := []byte(`{"version": 1, "label": "trunc`)
	jid := id.Hash(junk)
	if err := tiers.PutBytes(context.Background(), be, tiers.Handle{Type: tiers.TypeKey, Name: jid.String()}, junk); err != nil {
		t.Fatal(err)
	}
	keys, err := r.ListKeys(context.Background())
	if err != nil {
		t.Fatalf("list with a damaged slot: %v", err)
	}
	var found bool
	for _, k := range keys {
		if k.ID == jid {
			found = true
			if k.Damaged == "" {
				t.Fatalf("damaged slot listed as intact: %+v", k)
			}
		} else if k.Damaged != "" || !k.Current {
			t.Fatalf("intact slot listed as %+v", k)
		}
	}
	if !found || len(keys) != 2 {
		t.Fatalf("listed %+v, want the intact and the damaged slot", keys)
	}
	if err := r.RemoveKey(context.Background(), jid); err != nil {
		t.Fatalf("remove the damaged slot: %v", err)
	}
}

// A key slot that cannot be read (the storage fails) may be the one the
// password opens: the password is not called wrong because another slot
// refused it.
func TestUnreadableSlotIsNotWrongPassword(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	r := testRepo(t, mem, InitOptions{})
	genuine := r.KeyID()
	if _, err := r.AddKey(ctx, []byte("other"), "other"); err != nil {
		t.Fatal(err)
	}
	r.Close()
	be := tierstest.NewFaulty(mem, 1)
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeKey, Name: genuine.String()})
	_, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err == nil || errors.Is(err, ErrWrongPassword) || !errors.Is(err, tierstest.ErrInjected) {
		t.Fatalf("right password, its slot unreadable: %v, want the read error and not ErrWrongPassword", err)
	}
	be.Reset()
	if _, err := Open(ctx, be, Options{Password: []byte("wrong"), CacheDir: t.TempDir(), KDF: testKDF}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v, want ErrWrongPassword", err)
	}
}
