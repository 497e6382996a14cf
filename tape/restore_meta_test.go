package tape_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tape"
)

// cutMetaFile rewrites the cartridge bc so that its metadata file (file
// 2) ends halfway through its first record, without its end entry: what a
// tape whose metadata file was cut short reads as.
func (w *world) cutMetaFile(bc string) {
	w.t.Helper()
	ctx := context.Background()
	inv, err := w.lib.Inventory(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	at, ok := inv.Find(bc)
	if !ok {
		w.t.Fatalf("tape %s is not in the library", bc)
	}
	if err := w.lib.Move(ctx, at, tape.Element{Kind: tape.ElemDrive}); err != nil {
		w.t.Fatal(err)
	}
	d, err := w.lib.OpenDrive(ctx, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	// Every block of the tape; nil is a filemark.
	var blocks [][]byte
	buf := make([]byte, tape.MaxRecordSize)
	for {
		n, err := d.ReadRecord(ctx, buf)
		if errors.Is(err, tape.ErrEndOfData) {
			break
		}
		if errors.Is(err, tape.ErrFilemark) {
			blocks = append(blocks, nil)
			continue
		}
		if err != nil {
			w.t.Fatal(err)
		}
		blocks = append(blocks, append([]byte(nil), buf[:n]...))
	}
	if err := d.Rewind(ctx); err != nil {
		w.t.Fatal(err)
	}
	file, cut := 0, false
	for _, b := range blocks {
		if b == nil {
			file++
			if err := d.WriteFilemarks(ctx, 1); err != nil {
				w.t.Fatal(err)
			}
			continue
		}
		if file == 2 {
			if cut {
				continue // the rest of the file is gone
			}
			h, p, err := tape.ParseRecord(b)
			if err != nil {
				w.t.Fatal(err)
			}
			b = tape.RecordSeqForTest(h.Kind, h.Seq, p[:len(p)/2])
			cut = true
		}
		if _, err := d.WriteRecord(ctx, b); err != nil {
			w.t.Fatal(err)
		}
	}
	if !cut {
		w.t.Fatalf("tape %s has no metadata file", bc)
	}
	if err := d.Unload(ctx); err != nil {
		w.t.Fatal(err)
	}
	if err := w.lib.Move(ctx, tape.Element{Kind: tape.ElemDrive}, at); err != nil {
		w.t.Fatal(err)
	}
}

// TestRestoreRefusesCutMetadataFile: a tape whose metadata file is cut
// short (its end entry missing) fails like a damaged tape, and the
// restore takes the repository's metadata from another tape of the set,
// instead of restoring part of it without a word.
func TestRestoreRefusesCutMetadataFile(t *testing.T) {
	w := newWorld(t, erasure.Params{K: 2, M: 1}, tape.VirtualConfig{Generation: tape.LTO9, Slots: 6, Drives: 1, MailSlots: 1}, 20, 1<<20)
	pool := tape.DefaultPool("daily")
	w.label(pool, 4)
	w.write(pool, 1, time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC))
	plan, err := w.restore("latest")
	if err != nil {
		t.Fatal(err)
	}
	victim := plan.Tapes[0].Barcode
	if !plan.Tapes[0].Meta {
		t.Fatalf("the plan reads the metadata from %v, not its first tape", plan.Tapes)
	}
	w.cutMetaFile(victim)
	if _, err := w.restore("latest"); err != nil {
		t.Fatalf("restore with the metadata file of tape %s cut short: %v", victim, err)
	}
	if _, ok := w.failed[victim]; !ok || len(w.failed) != 1 {
		t.Errorf("failed tapes %v, want just %s (its metadata file is cut short)", w.failed, victim)
	}
}

// TestRestoreRefusesObjectLargerThanItsCatalog: a tape object larger than
// the size its tape catalog recorded fails that tape as corrupt before
// anything of it is stored (a rebuild loads stored shards whole, so the
// catalog's sizes are what bounds its memory), and the restore plans
// around the tape.
func TestRestoreRefusesObjectLargerThanItsCatalog(t *testing.T) {
	w := newWorld(t, erasure.Params{K: 2, M: 1}, tape.VirtualConfig{Generation: tape.LTO9, Slots: 6, Drives: 1, MailSlots: 1}, 20, 1<<20)
	pool := tape.DefaultPool("daily")
	w.label(pool, 4)
	res := w.write(pool, 1, time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC))
	plan, err := w.restore("latest")
	if err != nil {
		t.Fatal(err)
	}
	pt := plan.Tapes[0]
	if len(pt.Objects) == 0 {
		t.Fatalf("the plan reads no objects from %s", pt.Barcode)
	}
	tc, err := w.cat.TapeCatalog(res.Set.ID, pt.Column, pt.ColumnSeq)
	if err != nil {
		t.Fatal(err)
	}
	shrunk := false
	for i, e := range tc.Entries {
		if e.Name == pt.Objects[0].Name {
			tc.Entries[i].Size = e.Size / 2
			shrunk = true
		}
	}
	if !shrunk {
		t.Fatalf("tape %s's catalog does not list %s", pt.Barcode, pt.Objects[0].Name)
	}
	if err := w.cat.PutTapeCatalog(res.Set.ID, tc); err != nil {
		t.Fatal(err)
	}
	if _, err := w.restore("latest"); err != nil {
		t.Fatalf("restore with tape %s holding a larger %s than its catalog records: %v", pt.Barcode, pt.Objects[0].Name, err)
	}
	if why, ok := w.failed[pt.Barcode]; !ok || len(w.failed) != 1 || !strings.Contains(why, "catalog recorded") {
		t.Errorf("failed tapes %v, want just %s, for the size its catalog recorded", w.failed, pt.Barcode)
	}
}
