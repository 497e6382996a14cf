package tape_test

import (
	"context"
	"testing"

	"github.com/drpipe/drpipe/tape"
)

// TestLabelledMailSlotTapeJoinsTheLibrary: a new cartridge put in
// through a mail slot and labelled by barcode is recorded as a scratch
// tape in the library; it must end up in a storage slot (as before
// cartridges went back to their source element), where a write can use
// it, not back in the mail slot, where writes skip it.
func TestLabelledMailSlotTapeJoinsTheLibrary(t *testing.T) {
	ctx := context.Background()
	w := newBadWorld(t)
	inv, _ := w.lib.Inventory(ctx)
	at, _ := inv.Find("DRP004L7")
	if err := w.lib.Move(ctx, at, tape.Element{Kind: tape.ElemMailSlot}); err != nil {
		t.Fatal(err)
	}
	w.label("DRP004L7")
	inv, _ = w.lib.Inventory(ctx)
	if at, ok := inv.Find("DRP004L7"); !ok || at.Kind != tape.ElemSlot {
		t.Errorf("after labelling, the cartridge inserted through the mail slot is in %v, want a storage slot", at)
	}
	m, _ := w.cat.Media("DRP004L7")
	if m == nil || m.Location != tape.LocLibrary {
		t.Errorf("catalog: %+v, want it in the library", m)
	}
}
