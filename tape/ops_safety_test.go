package tape_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tape"
)

// TestForceLabelKeepsUnexpiredSet: after the catalog database is
// lost, 'tape label --force' on a tape that still holds an unexpired set
// must refuse, as the label command promises ("tapes holding unexpired
// sets are never relabelled"): the tape itself says what it holds.
func TestForceLabelKeepsUnexpiredSet(t *testing.T) {
	w := newBadWorld(t)
	w.label("DRP001L7")
	res, err := w.write()
	if err != nil {
		t.Fatal(err)
	}
	// The catalog database is lost.
	catDir := filepath.Join(w.libDir, "catalog")
	if err := os.RemoveAll(catDir); err != nil {
		t.Fatal(err)
	}
	if w.cat, err = tape.OpenCatalog(catDir); err != nil {
		t.Fatal(err)
	}
	before := w.read("DRP001L7")
	_, err = tape.LabelTapes(context.Background(), w.lib, w.cat, tape.LabelOptions{Pool: w.pool, Barcodes: []string{"DRP001L7"}, Force: true,
		Now: func() time.Time { return w.now.Add(24 * time.Hour) }})
	if err == nil || !strings.Contains(err.Error(), res.Set.ID[:8]) {
		t.Errorf("label --force of a tape holding unexpired set %s: err %v, want a refusal naming the set", res.Set.ID[:8], err)
	}
	if !bytes.Equal(before, w.read("DRP001L7")) {
		t.Errorf("label --force overwrote tape DRP001L7, which holds set %s expiring %s", res.Set.ID[:8], res.Set.Expires.Format("2006-01-02"))
	}
	// Once the set expired, --force may relabel it.
	if _, err := tape.LabelTapes(context.Background(), w.lib, w.cat, tape.LabelOptions{Pool: w.pool, Barcodes: []string{"DRP001L7"}, Force: true,
		Now: func() time.Time { return res.Set.Expires.Add(time.Hour) }}); err != nil {
		t.Errorf("label --force after the set expired: %v", err)
	}
}

// TestDisabledLevelRefused: a set written at a level the pool keeps
// no sets of (retention 0) expires the moment it is written, so the very
// next write may overwrite it. LevelFor's own error tells the operator to
// force a level with --level; forcing the disabled one must be refused,
// not produce a set that is born expired.
func TestDisabledLevelRefused(t *testing.T) {
	w := newBadWorld(t)
	w.pool = tape.Pool{Name: "p", Weekly: 4, Monthly: 12, WeeklyOn: time.Friday}
	w.label("DRP001L7", "DRP002L7")
	w.run++
	res, err := tape.WriteSet(context.Background(), w.lib, w.cat, w.be, fakePlan(t, w.be, w.run), tape.WriteOptions{Pool: w.pool, Level: tape.LevelDaily, Now: func() time.Time { return w.now }})
	if err == nil {
		t.Fatalf("wrote a daily set into a pool that keeps no daily sets: expires %s, created %s (expired on creation)", res.Set.Expires, res.Set.Created)
	}
	if !strings.Contains(err.Error(), "daily") {
		t.Errorf("error %q does not name the disabled level", err)
	}
}

// TestCheckLeavesExportedTapesInMailSlots: 'tape check --read-data'
// must not carry a tape the export put into a mail slot for the courier
// back into a storage slot: the operator emptying the mail slot would not
// find it, and the catalog would still say it is on its way offsite.
func TestCheckLeavesExportedTapesInMailSlots(t *testing.T) {
	ctx := context.Background()
	w := writtenAndExported(t)
	rep, err := tape.CheckCatalog(ctx, w.lib, w.cat, tape.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %q", err, rep.Errors)
	}
	inv, _ := w.lib.Inventory(ctx)
	if at, ok := inv.Find("DRP001L7"); !ok || at.Kind != tape.ElemMailSlot {
		t.Errorf("after tape check --read-data the exported tape DRP001L7 is in %v, want it still in the mail slot for the courier", at)
	}
}

// TestReadTapeGoesBackToItsMailSlot: a tape read while it waits in a
// mail slot for the courier (a catalog rebuild scans it, a restore may
// read it) goes back to that mail slot, not into the library, where the
// courier would not find it.
func TestReadTapeGoesBackToItsMailSlot(t *testing.T) {
	ctx := context.Background()
	w := writtenAndExported(t)
	cat, err := tape.OpenCatalog(filepath.Join(t.TempDir(), "rebuilt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tape.Rebuild(ctx, w.lib, cat, tape.ScanOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	inv, _ := w.lib.Inventory(ctx)
	if at, ok := inv.Find("DRP001L7"); !ok || at.Kind != tape.ElemMailSlot {
		t.Errorf("after a catalog rebuild read it, the exported tape DRP001L7 is in %v, want it back in its mail slot", at)
	}
}

// writtenAndExported is a library whose one weekly set, on DRP001L7, was
// exported: the tape waits in a mail slot for the courier.
func writtenAndExported(t *testing.T) *badWorld {
	t.Helper()
	ctx := context.Background()
	w := newBadWorld(t)
	w.label("DRP001L7")
	w.run++
	if _, err := tape.WriteSet(ctx, w.lib, w.cat, w.be, fakePlan(t, w.be, w.run), tape.WriteOptions{Pool: w.pool, Level: tape.LevelWeekly, Now: func() time.Time { return w.now }}); err != nil {
		t.Fatal(err)
	}
	if ex, err := tape.Export(ctx, w.lib, w.cat, func(string) (tape.Pool, error) { return w.pool, nil }, w.now); err != nil || len(ex.Exported) != 1 {
		t.Fatalf("export: %v, %+v", err, ex)
	}
	return w
}
