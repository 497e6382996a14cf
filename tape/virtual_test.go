package tape_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tape/tapetest"
)

func TestVirtualDriveConformance(t *testing.T) {
	tapetest.DriveSuite(t, func(t *testing.T, c tapetest.Cartridge) tape.Drive {
		dir := t.TempDir()
		worm := 0
		if c.WORM {
			worm = 1
		}
		if _, err := tape.InitVirtual(dir, tape.VirtualConfig{Generation: tape.LTO9, Slots: 1, Drives: 1, Capacity: c.Capacity, EarlyWarning: c.EarlyWarning, WORM: worm}); err != nil {
			t.Fatal(err)
		}
		lib, err := tape.OpenVirtual(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lib.Close() })
		ctx := context.Background()
		inv, _ := lib.Inventory(ctx)
		if c.WriteProtected {
			if err := lib.SetWriteProtect(inv.Slots[0].Barcode, true); err != nil {
				t.Fatal(err)
			}
		}
		if err := lib.Move(ctx, inv.Slots[0].Element, tape.Element{Kind: tape.ElemDrive}); err != nil {
			t.Fatal(err)
		}
		d, err := lib.OpenDrive(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

func TestVirtualLibraryLayout(t *testing.T) {
	dir := t.TempDir()
	made, err := tape.InitVirtual(dir, tape.VirtualConfig{Generation: tape.LTO9, Slots: 4, Drives: 2, MailSlots: 2, Cartridges: 3, WORM: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"DRP001L9", "DRP002L9", "DRP003LZ"}
	for i, bc := range want {
		if made[i] != bc {
			t.Errorf("cartridge %d: got %s, want %s", i, made[i], bc)
		}
		if _, err := os.Stat(filepath.Join(dir, bc+".tape")); err != nil {
			t.Errorf("cartridge file: %v", err)
		}
	}
	if _, err := tape.InitVirtual(dir, tape.VirtualConfig{Generation: tape.LTO9, Slots: 1, Drives: 1}); err == nil {
		t.Errorf("init over an existing library succeeded")
	}
	lib, err := tape.OpenVirtual(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tape.OpenVirtual(dir); err == nil {
		t.Errorf("second open of a locked library succeeded")
	}
	ctx := context.Background()
	ci, err := lib.Cartridge("DRP003LZ")
	if err != nil || !ci.WORM || ci.Capacity != tape.LTO9.NativeCapacity() {
		t.Errorf("cartridge info %+v %v", ci, err)
	}
	// An operator removes a cartridge file: the library loses it.
	os.Remove(filepath.Join(dir, "DRP002L9.tape"))
	inv, _ := lib.Inventory(ctx)
	if inv.Slots[1].Full {
		t.Errorf("removed cartridge still in slot 1")
	}
	// Mail slots: export and import.
	if err := lib.Move(ctx, inv.Slots[0].Element, tape.Element{Kind: tape.ElemMailSlot, Index: 0}); err != nil {
		t.Fatal(err)
	}
	out, _ := lib.TakeMailSlots()
	if len(out) != 1 || out[0] != "DRP001L9" {
		t.Errorf("taken out: %v", out)
	}
	if o, _ := lib.Outside(); len(o) != 1 || o[0] != "DRP001L9" {
		t.Errorf("outside: %v", o)
	}
	if _, err := lib.Insert("DRP001L9"); err != nil {
		t.Fatal(err)
	}
	inv, _ = lib.Inventory(ctx)
	if !inv.MailSlots[0].Full {
		t.Errorf("inserted cartridge not in mail slot 0")
	}
	lib.Close()
	if lib2, err := tape.OpenVirtual(dir); err != nil {
		t.Errorf("reopen after close: %v", err)
	} else {
		inv, _ := lib2.Inventory(ctx)
		if inv.MailSlots[0].Barcode != "DRP001L9" {
			t.Errorf("state not persisted: %+v", inv.MailSlots)
		}
		lib2.Close()
	}
}

// TestOpenVirtualReadsStateUnderTheLock: a process that opens the library
// just as another one, having moved a cartridge, lets go of it sees the
// state on disk, not the one from before that move (which its own saves
// would then write back).
func TestOpenVirtualReadsStateUnderTheLock(t *testing.T) {
	dir := t.TempDir()
	if _, err := tape.InitVirtual(dir, tape.VirtualConfig{Generation: tape.LTO9, Slots: 2, Drives: 1, Cartridges: 1, Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stop := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(stop) {
			l, err := tape.OpenVirtual(dir)
			if err != nil {
				continue
			}
			inv, _ := l.Inventory(ctx)
			from, to := tape.Element{Kind: tape.ElemSlot, Index: 0}, tape.Element{Kind: tape.ElemSlot, Index: 1}
			if !inv.Slots[0].Full {
				from, to = to, from
			}
			l.Move(ctx, from, to)
			l.Close()
		}
	}()
	stale := 0
	for time.Now().Before(stop) {
		l, err := tape.OpenVirtual(dir)
		if err != nil {
			continue
		}
		inv, _ := l.Inventory(ctx)
		b, _ := os.ReadFile(filepath.Join(dir, "library.json"))
		var st struct{ Slots []string }
		json.Unmarshal(b, &st)
		if (st.Slots[0] != "") != inv.Slots[0].Full {
			stale++
		}
		l.Close()
	}
	wg.Wait()
	if stale > 0 {
		t.Errorf("%d opens saw a library state other than the one on disk", stale)
	}
}

// TestVirtualEmptyRecordBlockIsCorrupt: a record block of no bytes in a
// cartridge file (no drive writes one: a record holds at least a byte)
// is damage, not an empty record that the label reader would take for
// another program's tape.
func TestVirtualEmptyRecordBlockIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	made, err := tape.InitVirtual(dir, tape.VirtualConfig{Generation: tape.LTO9, Slots: 1, Drives: 1, Capacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cart := filepath.Join(dir, made[0]+".tape")
	f, err := os.OpenFile(cart, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil { // kind record, 0 bytes
		t.Fatal(err)
	}
	f.Close()
	lib, err := tape.OpenVirtual(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	ctx := context.Background()
	if err := lib.Move(ctx, tape.Element{Kind: tape.ElemSlot}, tape.Element{Kind: tape.ElemDrive}); err != nil {
		t.Fatal(err)
	}
	d, err := lib.OpenDrive(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := d.ReadRecord(ctx, make([]byte, 1<<20)); !errors.Is(err, tape.ErrCorrupt) {
		t.Fatalf("read of an empty record block: %d bytes, %v; want ErrCorrupt", n, err)
	}
	if _, err := tape.VerifyLabel(ctx, d, made[0], nil); errors.Is(err, tape.ErrForeignTape) || !errors.Is(err, tape.ErrCorrupt) {
		t.Fatalf("label of a cartridge whose first block is empty: %v; want ErrCorrupt, not a foreign tape", err)
	}
}
