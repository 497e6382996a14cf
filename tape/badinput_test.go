package tape_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

type badWorld struct {
	t      *testing.T
	libDir string
	lib    *tape.VirtualLibrary
	cat    *tape.Catalog
	pool   tape.Pool
	now    time.Time
	be     *tierstest.Memory
	run    int
}

func newBadWorld(t *testing.T) *badWorld {
	dir := t.TempDir()
	w := &badWorld{t: t, libDir: filepath.Join(dir, "lib"), pool: tape.DefaultPool("p"), now: time.Date(2026, 5, 4, 22, 0, 0, 0, time.UTC), be: tierstest.NewMemory()}
	if _, err := tape.InitVirtual(w.libDir, tape.VirtualConfig{Generation: tape.LTO7, Slots: 4, Drives: 1, MailSlots: 1, Capacity: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	var err error
	if w.lib, err = tape.OpenVirtual(w.libDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.lib.Close() })
	if w.cat, err = tape.OpenCatalog(filepath.Join(w.libDir, "catalog")); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *badWorld) cart(bc string) string { return filepath.Join(w.libDir, bc+".tape") }

func (w *badWorld) read(bc string) []byte {
	b, err := os.ReadFile(w.cart(bc))
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

func (w *badWorld) write() (*tape.WriteResult, error) {
	w.run++
	return tape.WriteSet(context.Background(), w.lib, w.cat, w.be, fakePlan(w.t, w.be, w.run), tape.WriteOptions{Pool: w.pool, Level: tape.LevelDaily, Now: func() time.Time { return w.now }, Parity: 0})
}

// raw writes records and a filemark to a cartridge through a drive.
func (w *badWorld) raw(bc string, recs ...[]byte) {
	ctx := context.Background()
	inv, _ := w.lib.Inventory(ctx)
	at, _ := inv.Find(bc)
	if err := w.lib.Move(ctx, at, tape.Element{Kind: tape.ElemDrive}); err != nil {
		w.t.Fatal(err)
	}
	d, _ := w.lib.OpenDrive(ctx, 0)
	for _, r := range recs {
		if _, err := d.WriteRecord(ctx, r); err != nil {
			w.t.Fatal(err)
		}
	}
	d.WriteFilemarks(ctx, 1)
	d.Unload(ctx)
	if err := w.lib.Move(ctx, tape.Element{Kind: tape.ElemDrive}, at); err != nil {
		w.t.Fatal(err)
	}
}

func (w *badWorld) label(bcs ...string) {
	if _, err := tape.LabelTapes(context.Background(), w.lib, w.cat, tape.LabelOptions{Pool: w.pool, Barcodes: bcs, Now: func() time.Time { return w.now }}); err != nil {
		w.t.Fatal(err)
	}
}

// expectRefusal runs a write that must fail with want and leave every
// cartridge file untouched.
func (w *badWorld) expectRefusal(want error, words ...string) {
	w.t.Helper()
	before := map[string][]byte{}
	for _, bc := range []string{"DRP001L7", "DRP002L7", "DRP003L7", "DRP004L7"} {
		before[bc] = w.read(bc)
	}
	_, err := w.write()
	if !errors.Is(err, want) {
		w.t.Fatalf("write: got %v, want %v", err, want)
	}
	for _, s := range words {
		if !strings.Contains(err.Error(), s) {
			w.t.Errorf("error %q does not mention %q", err, s)
		}
	}
	for bc, b := range before {
		if !bytes.Equal(b, w.read(bc)) {
			w.t.Errorf("cartridge %s was modified by the refused write", bc)
		}
	}
}

func TestBadTapes(t *testing.T) {
	t.Run("WrongTapeLoaded", func(t *testing.T) {
		w := newBadWorld(t)
		w.label("DRP001L7", "DRP002L7")
		if _, err := w.write(); err != nil { // fills DRP001L7 with an unexpired set
			t.Fatal(err)
		}
		// The cartridge in DRP002L7's slot really is a copy of DRP001L7.
		os.WriteFile(w.cart("DRP002L7"), w.read("DRP001L7"), 0o644)
		w.expectRefusal(tape.ErrWrongTape, "DRP002L7", "DRP001L7")
	})
	t.Run("BlankWhereLabelled", func(t *testing.T) {
		w := newBadWorld(t)
		w.label("DRP001L7")
		os.Remove(w.cart("DRP001L7"))
		tape.CreateCartridge(w.libDir, "DRP001L7", tape.LTO7, 32<<20, 1<<20, false)
		w.expectRefusal(tape.ErrBlankTape, "DRP001L7", "relabel")
	})
	t.Run("Foreign", func(t *testing.T) {
		w := newBadWorld(t)
		w.label("DRP001L7")
		// Someone wrote a tar archive over it.
		os.Remove(w.cart("DRP001L7"))
		tape.CreateCartridge(w.libDir, "DRP001L7", tape.LTO7, 32<<20, 1<<20, false)
		w.raw("DRP001L7", bytes.Repeat([]byte("ustar\x00"), 1000))
		w.expectRefusal(tape.ErrForeignTape, "DRP001L7")
		// Labelling refuses it too without --force.
		before := w.read("DRP001L7")
		_, err := tape.LabelTapes(context.Background(), w.lib, w.cat, tape.LabelOptions{Pool: w.pool, Barcodes: []string{"DRP001L7"}, Now: func() time.Time { return w.now }})
		if err == nil || !strings.Contains(err.Error(), "--force") {
			t.Errorf("label of a foreign tape: got %v, want a refusal mentioning --force", err)
		}
		if !bytes.Equal(before, w.read("DRP001L7")) {
			t.Errorf("refused label modified the tape")
		}
	})
	t.Run("WriteProtected", func(t *testing.T) {
		w := newBadWorld(t)
		w.label("DRP001L7")
		if err := w.lib.SetWriteProtect("DRP001L7", true); err != nil {
			t.Fatal(err)
		}
		w.expectRefusal(tape.ErrWriteProtected, "DRP001L7")
	})
	t.Run("UnknownVersion", func(t *testing.T) {
		w := newBadWorld(t)
		w.label("DRP001L7")
		m, _ := w.cat.Media("DRP001L7")
		os.Remove(w.cart("DRP001L7"))
		tape.CreateCartridge(w.libDir, "DRP001L7", tape.LTO7, 32<<20, 1<<20, false)
		rec, _ := tape.MarshalLabel(tape.KindVolumeLabel, map[string]any{"format": "drpipe-tape", "version": 99, "barcode": "DRP001L7", "uuid": m.UUID, "pool": "p", "hologram": true})
		w.raw("DRP001L7", rec)
		w.expectRefusal(tape.ErrUnsupportedVersion, "version 99", "newer drpipe")
	})
	t.Run("CorruptedLabel", func(t *testing.T) {
		w := newBadWorld(t)
		w.label("DRP001L7")
		b := w.read("DRP001L7")
		i := bytes.Index(b, []byte(`"pool"`))
		b[i+2] ^= 0x20
		os.WriteFile(w.cart("DRP001L7"), b, 0o644)
		w.expectRefusal(tape.ErrCorrupt, "DRP001L7", "checksum")
	})
	t.Run("NoWritableTape", func(t *testing.T) {
		w := newBadWorld(t)
		w.label("DRP001L7")
		if _, err := w.write(); err != nil {
			t.Fatal(err)
		}
		// The only tape holds an unexpired set: nothing may be written.
		before := w.read("DRP001L7")
		_, err := w.write()
		if err == nil || !strings.Contains(err.Error(), "no writable tape") {
			t.Fatalf("got %v, want 'no writable tape'", err)
		}
		if !bytes.Equal(before, w.read("DRP001L7")) {
			t.Errorf("tape with an unexpired set was modified")
		}
		// After expiry it is reused.
		w.now = w.now.AddDate(0, 0, 8)
		if _, err := w.write(); err != nil {
			t.Errorf("write after expiry: %v", err)
		}
	})
}

// abortedWrite writes a set whose source loses a pack shard after the
// plan was made, so the write fails on the tape, after reaching it; the
// returned func puts the shard back.
func (w *badWorld) abortedWrite() (*tape.WriteResult, func()) {
	w.t.Helper()
	ctx := context.Background()
	w.run++
	plan := fakePlan(w.t, w.be, w.run)
	shard := tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(plan.Packs[0].ID, 0)}
	data, err := tiers.LoadAll(ctx, w.be, shard, 0, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	w.be.Remove(ctx, shard)
	res, err := tape.WriteSet(ctx, w.lib, w.cat, w.be, plan, tape.WriteOptions{Pool: w.pool, Level: tape.LevelDaily, Now: func() time.Time { return w.now }})
	if err == nil {
		w.t.Fatal("write with a lost source object succeeded")
	}
	return res, func() { tiers.PutBytes(ctx, w.be, shard, data) }
}

// TestAbortedSetTapesReused: a write that stops after reaching a tape (a
// source object that cannot be read, or Ctrl-C) records its set as
// aborted, and the pool takes that tape back when it has nothing else,
// instead of refusing every write until the set expires. Scratch tapes
// still go first.
func TestAbortedSetTapesReused(t *testing.T) {
	ctx := context.Background()
	w := newBadWorld(t)
	w.label("DRP001L7")
	res, restoreSource := w.abortedWrite()
	aborted, _ := w.cat.Set(res.Set.ID)
	if aborted == nil || aborted.Complete || aborted.Aborted == "" {
		t.Fatalf("aborted set in the catalog: %+v, want incomplete with the reason", aborted)
	}
	// Not damage: tape check passes, and warns that the set is
	// incomplete, which packs it cannot give, and that the tape being
	// written then was not read.
	rep, err := tape.CheckCatalog(ctx, w.lib, w.cat, tape.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("tape check after the aborted write: err %v, errors %q", err, rep.Errors)
	}
	for _, want := range []string{"its write stopped", "lack enough shards", "was being written when the write of set"} {
		if !strings.Contains(strings.Join(rep.Warnings, "\n"), want) {
			t.Errorf("check warnings %q: want one saying %q", rep.Warnings, want)
		}
	}

	// A scratch tape labelled meanwhile is taken before the aborted set's.
	restoreSource()
	w.label("DRP002L7")
	res2, err := w.write()
	if err != nil {
		t.Fatal(err)
	}
	if len(res2.Set.Tapes) != 1 || res2.Set.Tapes[0].Barcode != "DRP002L7" {
		t.Fatalf("second write used %+v, want the scratch tape DRP002L7", res2.Set.Tapes)
	}
	// With only the aborted set's tape left, the pool reuses it.
	res3, err := w.write()
	if err != nil {
		t.Fatalf("write with only the aborted set's tape left: %v", err)
	}
	if len(res3.Set.Tapes) != 1 || res3.Set.Tapes[0].Barcode != "DRP001L7" || !res3.Set.Complete {
		t.Fatalf("third write: %+v, want a complete set on DRP001L7", res3.Set)
	}
	if s, _ := w.cat.Set(res.Set.ID); s != nil && len(s.Tapes) != 0 {
		t.Errorf("the aborted set still lists tapes: %+v", s.Tapes)
	}
	// A complete, unexpired set's tape is never taken.
	if _, err := w.write(); err == nil || !strings.Contains(err.Error(), "no writable tape") {
		t.Errorf("write with every tape holding a live set: %v, want no writable tape", err)
	}
}

// rawFiles has write write to a cartridge from its start through a
// drive.
func (w *badWorld) rawFiles(bc string, write func(ctx context.Context, d tape.Drive)) {
	ctx := context.Background()
	inv, _ := w.lib.Inventory(ctx)
	at, _ := inv.Find(bc)
	if err := w.lib.Move(ctx, at, tape.Element{Kind: tape.ElemDrive}); err != nil {
		w.t.Fatal(err)
	}
	d, _ := w.lib.OpenDrive(ctx, 0)
	write(ctx, d)
	d.Unload(ctx)
	if err := w.lib.Move(ctx, tape.Element{Kind: tape.ElemDrive}, at); err != nil {
		w.t.Fatal(err)
	}
}

// TestLabelIDsNotUUIDs: a label whose checksums hold but whose volume or
// set id is not a 32-digit hex id (another program's, or damaged before
// its checksum was computed) is refused as damaged: a write does not
// panic on it, and a catalog rebuild does not take its set id as a
// directory name, writing outside the catalog.
func TestLabelIDsNotUUIDs(t *testing.T) {
	t.Run("VolumeUUID", func(t *testing.T) {
		w := newBadWorld(t)
		w.label("DRP001L7")
		os.Remove(w.cart("DRP001L7"))
		tape.CreateCartridge(w.libDir, "DRP001L7", tape.LTO7, 32<<20, 1<<20, false)
		rec, _ := tape.MarshalLabel(tape.KindVolumeLabel, tape.VolumeLabel{Format: "drpipe-tape", Version: 1, Barcode: "DRP001L7", UUID: "x", Pool: "p", Labeled: w.now})
		w.raw("DRP001L7", rec)
		w.expectRefusal(tape.ErrCorrupt, "DRP001L7", "uuid")
	})
	t.Run("SetID", func(t *testing.T) {
		w := newBadWorld(t)
		w.label("DRP001L7")
		m, _ := w.cat.Media("DRP001L7")
		os.Remove(w.cart("DRP001L7"))
		tape.CreateCartridge(w.libDir, "DRP001L7", tape.LTO7, 32<<20, 1<<20, false)
		w.rawFiles("DRP001L7", func(ctx context.Context, d tape.Drive) {
			vl, _ := tape.MarshalLabel(tape.KindVolumeLabel, tape.VolumeLabel{Format: "drpipe-tape", Version: 1, Barcode: "DRP001L7", UUID: m.UUID, Pool: "p", Labeled: w.now})
			sl, _ := tape.MarshalLabel(tape.KindSetLabel, tape.SetLabel{Format: "drpipe-tape", Version: 1, SetID: "../../escaped", Pool: "p", Barcode: "DRP001L7", UUID: m.UUID,
				Created: w.now, Level: tape.LevelDaily, Expires: w.now.AddDate(0, 0, 7), Columns: 1, PerTape: 1})
			for _, r := range [][]byte{vl, sl} {
				d.WriteRecord(ctx, r)
				d.WriteFilemarks(ctx, 1)
			}
			mf, _ := json.Marshal(tape.Manifest{Version: 1, SetID: "../../escaped"})
			if err := tape.WriteObjectFileForTest(ctx, d, tiers.Handle{Type: tape.TypeManifest, Name: "manifest"}, mf); err != nil {
				t.Fatal(err)
			}
		})
		res, err := tape.Rebuild(context.Background(), w.lib, w.cat, tape.ScanOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(w.libDir, "escaped")); err == nil {
			t.Errorf("the rebuild wrote %s, outside the catalog", filepath.Join(w.libDir, "escaped"))
		}
		if res.Sets != 0 || len(res.Errors) != 1 || !strings.Contains(strings.Join(res.Errors, "\n"), "set id") {
			t.Errorf("rebuild: %d sets, errors %q; want none, and the tape's set label reported as damaged", res.Sets, res.Errors)
		}
	})
}
