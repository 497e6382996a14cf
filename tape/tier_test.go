package tape_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
)

func (w *world) tier(pool string, lines *[]string) *tape.Tier {
	return tape.NewTier(tape.TierOptions{
		Name: "vault",
		Pool: pool,
		Open: func(context.Context) (tape.Changer, *tape.Catalog, func() error, error) {
			return w.lib, w.cat, func() error { return nil }, nil
		},
		StageDir: w.t.TempDir(),
		Report: func(l string) {
			if lines != nil {
				*lines = append(*lines, l)
			}
		},
	})
}

// allObjects reads every object of the repository backend.
func allObjects(t *testing.T, be tiers.Backend) map[tiers.Handle][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[tiers.Handle][]byte{}
	for _, typ := range []tiers.Type{tiers.TypeConfig, tiers.TypeKey, tiers.TypeData, tiers.TypeIndex, tiers.TypeSnapshot} {
		err := be.List(ctx, typ, func(oi tiers.ObjectInfo) error {
			b, err := tiers.LoadAll(ctx, be, oi.Handle, 0, 0)
			out[oi.Handle] = b
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestTierFallbackRestore restores a snapshot through a Fallback whose
// first tier lost its data: every shard comes off tape, byte-identical.
// Then every object is read through the tier, ranged reads are served
// from the staged copy, a tape outside the library makes its objects
// "not ready" (naming it), and a damaged tape never yields wrong bytes.
func TestTierFallbackRestore(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, erasure.Params{K: 4, M: 2}, tape.VirtualConfig{Generation: tape.LTO9, Slots: 10, Drives: 2, MailSlots: 2}, 60, 6<<20)
	pool := tape.DefaultPool("vault")
	w.label(pool, 6)
	res := w.write(pool, 1, time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC))
	if len(res.Set.Tapes) != 3 {
		t.Fatalf("set of %d tapes, want 3", len(res.Set.Tapes))
	}
	orig := allObjects(t, w.r.Backend())
	repoDir := filepath.Join(w.dir, "repo")
	if err := os.RemoveAll(filepath.Join(repoDir, "data")); err != nil {
		t.Fatal(err)
	}
	hot, err := tiers.OpenLocal(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	tt := w.tier("vault", &lines)
	fb, err := tiers.NewFallback([]tiers.Backend{hot, tt}, []string{"hot", "vault"})
	if err != nil {
		t.Fatal(err)
	}
	fb.Verify = true
	r, err := repo.Open(ctx, fb, repo.Options{Password: w.pw, CacheDir: filepath.Join(w.dir, "cache-tier")})
	if err != nil {
		t.Fatal(err)
	}
	sn, err := r.FindSnapshot(ctx, "latest", "")
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(w.dir, "restore-tier")
	start := time.Now()
	if _, err := pipeline.Restore(ctx, r, sn, pipeline.RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	sameTree(t, w.src, filepath.Join(target, w.src))
	r.Close()
	var vault tiers.TierUse
	for _, u := range fb.Usage() {
		if u.Tier == "vault" {
			vault = u
		}
	}
	if vault.Objects == 0 {
		t.Errorf("the tape tier served nothing: %+v", fb.Usage())
	}
	var served, read int64
	mounts := 0
	for _, u := range tt.Usage() {
		served += u.Served
		read += u.Objects
		mounts += u.Mounts
		if u.Mounts > 1 {
			t.Errorf("tape %s mounted %d times, want once", u.Barcode, u.Mounts)
		}
		if u.SetID != res.Set.ID {
			t.Errorf("tape %s served for set %s, want %s", u.Barcode, u.SetID, res.Set.ID)
		}
	}
	t.Logf("restore through the tape tier in %v: fallback %+v; tapes %+v", el.Round(time.Millisecond), fb.Usage(), tt.Usage())
	if served != vault.Objects {
		t.Errorf("the tapes served %d reads, the fallback counted %d", served, vault.Objects)
	}
	// Objects are staged: none is read off tape twice. The objects the
	// head streams past and those that follow (within ReadAhead, which
	// covers this small set) are staged with the first one asked for, so
	// each tape is mounted at most once although there are fewer drives.
	// Which shards a pack is rebuilt from depends on which reads finish
	// first, so a set with one parity tape may need only two of its three.
	if read > int64(len(orig)) {
		t.Errorf("%d objects read off tape, the set has %d", read, len(orig))
	}
	if mounts < len(res.Set.Tapes)-1 || mounts > len(res.Set.Tapes) {
		t.Errorf("%d mounts for a set of %d tapes (one parity) and 2 drives, want %d or %d", mounts, len(res.Set.Tapes), len(res.Set.Tapes)-1, len(res.Set.Tapes))
	}
	if err := tt.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "served") || !strings.Contains(strings.Join(lines, "\n"), "mounted in drive") {
		t.Errorf("reports lack mounts or a summary: %q", lines)
	}
	if _, err := os.Stat(filepath.Join(w.libDir, "library.json")); err != nil {
		t.Fatal(err)
	}

	// Every object through a new tier: whole, ranged, Stat and List.
	tt = w.tier("vault", nil)
	listed := map[tiers.Handle]bool{}
	for _, typ := range []tiers.Type{tiers.TypeConfig, tiers.TypeKey, tiers.TypeData, tiers.TypeIndex, tiers.TypeSnapshot} {
		if err := tt.List(ctx, typ, func(oi tiers.ObjectInfo) error { listed[oi.Handle] = true; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if len(listed) != len(orig) {
		t.Errorf("tier lists %d objects, the repository had %d", len(listed), len(orig))
	}
	for h, want := range orig {
		got, err := tiers.LoadAll(ctx, tt, h, 0, 0)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s off tape: %d bytes, err %v; want %d bytes", h, len(got), err, len(want))
		}
		oi, err := tt.Stat(ctx, h)
		if err != nil || oi.Size != int64(len(want)) {
			t.Errorf("stat %s: %+v %v", h, oi, err)
		}
		if h.Type == tiers.TypeData && len(want) > 100 {
			part, err := tiers.LoadAll(ctx, tt, h, 17, 50)
			if err != nil || !bytes.Equal(part, want[17:67]) {
				t.Errorf("ranged read of %s: %v", h, err)
			}
			if _, err := tiers.LoadAll(ctx, tt, h, int64(len(want))-10, 20); !errors.Is(err, tiers.ErrShortRead) {
				t.Errorf("read past the end of %s: %v, want ErrShortRead", h, err)
			}
		}
	}
	if _, err := tt.Stat(ctx, tiers.Handle{Type: tiers.TypeSnapshot, Name: strings.Repeat("ab", 32)}); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("stat of an unknown object: %v, want ErrNotFound", err)
	}
	if err := tiers.PutBytes(ctx, tt, tiers.Handle{Type: tiers.TypeSnapshot, Name: strings.Repeat("ab", 32)}, []byte("x")); !errors.Is(err, tape.ErrReadOnly) {
		t.Errorf("put: %v, want ErrReadOnly", err)
	}
	var total int64
	for _, u := range tt.Usage() {
		total += u.Objects
	}
	if total != int64(len(orig)) {
		t.Errorf("%d objects read off tape for %d distinct objects", total, len(orig))
	}
	tt.Close()

	// A staging limit below one object: every object is dropped once the
	// next is asked for, read off tape again when asked for once more,
	// and never returned wrong; the staging directory stays bounded.
	// With Catalog set, listing and stat open only the catalog; the
	// library is opened on the first read off tape.
	stageDir := t.TempDir()
	libOpens := 0
	small := tape.NewTier(tape.TierOptions{
		Name: "vault", Pool: "vault", StageDir: stageDir, ReadAhead: -1, StageLimit: 1,
		Catalog: func(context.Context) (*tape.Catalog, error) { return w.cat, nil },
		Open: func(context.Context) (tape.Changer, *tape.Catalog, func() error, error) {
			libOpens++
			return w.lib, w.cat, func() error { return nil }, nil
		},
	})
	for h := range orig {
		if _, err := small.Stat(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := small.List(ctx, tiers.TypeData, func(tiers.ObjectInfo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if libOpens != 0 {
		t.Errorf("Stat and List opened the library %d times, want only the catalog", libOpens)
	}
	for round := 0; round < 2; round++ {
		for h, want := range orig {
			got, err := tiers.LoadAll(ctx, small, h, 0, 0)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("round %d: %s off tape with a 1-byte staging limit: %d bytes, err %v; want %d bytes", round, h, len(got), err, len(want))
			}
			if ents, _ := os.ReadDir(stageDir); len(ents) > 1 {
				t.Fatalf("round %d: %d staged files with a 1-byte staging limit, want at most 1", round, len(ents))
			}
		}
	}
	total = 0
	for _, u := range small.Usage() {
		total += u.Objects
	}
	if total < int64(2*len(orig))-1 {
		t.Errorf("%d objects read off tape in two rounds over %d objects with nothing kept staged", total, len(orig))
	}
	if libOpens != 1 {
		t.Errorf("library opened %d times, want once", libOpens)
	}
	small.Close()
	if ents, _ := os.ReadDir(stageDir); len(ents) != 0 {
		t.Errorf("%d staged files left after Close", len(ents))
	}

	// Another pool's tier holds nothing.
	other := w.tier("other", nil)
	if _, err := tiers.LoadAll(ctx, other, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("config from another pool: %v, want ErrNotFound", err)
	}
	other.Close()

	// A tape outside the library: its shards are "not ready" and named;
	// metadata (on every tape) still comes from the others.
	gone := res.Set.Tapes[1].Barcode
	if err := os.Rename(filepath.Join(w.libDir, gone+".tape"), filepath.Join(w.dir, gone+".tape")); err != nil {
		t.Fatal(err)
	}
	tc, err := w.cat.TapeCatalog(res.Set.ID, res.Set.Tapes[1].Column, res.Set.Tapes[1].ColumnSeq)
	if err != nil {
		t.Fatal(err)
	}
	var shard tiers.Handle
	for _, e := range tc.Entries {
		if e.Type == tiers.TypeData {
			shard = e.Handle()
			break
		}
	}
	tt = w.tier("", nil)
	_, err = tiers.LoadAll(ctx, tt, shard, 0, 0)
	if !errors.Is(err, tiers.ErrNotReady) || !errors.Is(err, tape.ErrMissingTapes) || !strings.Contains(err.Error(), gone) {
		t.Errorf("shard on a tape outside the library: %v; want ErrNotReady naming %s", err, gone)
	}
	if b, err := tiers.LoadAll(ctx, tt, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0); err != nil || !bytes.Equal(b, orig[tiers.Handle{Type: tiers.TypeConfig, Name: "config"}]) {
		t.Errorf("config with tape %s away: %v", gone, err)
	}
	tt.Close()
	if err := os.Rename(filepath.Join(w.dir, gone+".tape"), filepath.Join(w.libDir, gone+".tape")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.lib.Insert(gone); err != nil {
		t.Fatal(err)
	}
	if _, err := tape.Import(ctx, w.lib, w.cat, time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}

	// A damaged tape: every object is right or an error, never wrong.
	victim := res.Set.Tapes[0].Barcode
	p := filepath.Join(w.libDir, victim+".tape")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []int{len(b) / 3, len(b) / 2, 2 * len(b) / 3} {
		b[at] ^= 0x40
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	tt = w.tier("vault", nil)
	failed := 0
	for h, want := range orig {
		got, err := tiers.LoadAll(ctx, tt, h, 0, 0)
		if err != nil {
			failed++
			continue
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s read off a damaged tape differs and was served", h)
		}
	}
	tt.Close()
	if failed == 0 {
		t.Errorf("no object failed on damaged tape %s: the test damaged nothing", victim)
	}
	t.Logf("damaged tape %s: %d of %d objects refused, the rest byte-identical", victim, failed, len(orig))
}
