package tape_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/drpipe/drpipe/tape"
)

// FuzzVirtualCartridge feeds arbitrary cartridge files to a drive of the
// virtual library: the header (kept valid when the input has none of its
// own, so that the blocks behind it are reached) and the blocks a drive
// reads, spaces over and seeks past. Loading, reading, spacing and
// seeking must never panic or hang, every failure must be one a caller
// can tell apart, and every record read must be the bytes its block
// holds.
func FuzzVirtualCartridge(f *testing.F) {
	// Every operation saves the library state durably: use tmpfs when
	// there is one so that fuzzing is not bound by the disk.
	dir, err := os.MkdirTemp("/dev/shm", "drpipe-fuzz-vcart-")
	if err != nil {
		dir = f.TempDir()
	} else {
		f.Cleanup(func() { os.RemoveAll(dir) })
	}
	made, err := tape.InitVirtual(dir, tape.VirtualConfig{Generation: tape.LTO9, Slots: 1, Drives: 1, Capacity: 1 << 20, EarlyWarning: 1 << 10})
	if err != nil {
		f.Fatal(err)
	}
	cart := filepath.Join(dir, made[0]+".tape")
	blank, err := os.ReadFile(cart)
	if err != nil {
		f.Fatal(err)
	}
	lib, err := tape.OpenVirtual(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { lib.Close() })
	ctx := context.Background()
	slot, drive := tape.Element{Kind: tape.ElemSlot}, tape.Element{Kind: tape.ElemDrive}

	// Seeds: a cartridge written by the drive itself (two files of
	// records), and damaged forms of it.
	if err := lib.Move(ctx, slot, drive); err != nil {
		f.Fatal(err)
	}
	d, err := lib.OpenDrive(ctx, 0)
	if err != nil {
		f.Fatal(err)
	}
	for _, rec := range [][]byte{[]byte("label"), nil, bytes.Repeat([]byte("data"), 100), []byte("x"), nil} {
		if rec == nil {
			err = d.WriteFilemarks(ctx, 1)
		} else {
			_, err = d.WriteRecord(ctx, rec)
		}
		if err != nil {
			f.Fatal(err)
		}
	}
	if err := d.Unload(ctx); err != nil {
		f.Fatal(err)
	}
	if err := lib.Move(ctx, drive, slot); err != nil {
		f.Fatal(err)
	}
	written, err := os.ReadFile(cart)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(written)
	f.Add(written[len(blank):])
	f.Add(written[:len(written)-3])
	huge := append([]byte(nil), written[len(blank):]...)
	binary.LittleEndian.PutUint32(huge[4:], 1<<31)
	f.Add(huge)
	f.Add(blank)

	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		file := b
		if !bytes.HasPrefix(b, []byte("DRPVCART")) {
			file = append(append([]byte(nil), blank...), b...)
		}
		if err := os.WriteFile(cart, file, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := lib.Move(ctx, slot, drive); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if d, err := lib.OpenDrive(ctx, 0); err == nil {
				d.Unload(ctx)
			}
			if err := lib.Move(ctx, drive, slot); err != nil {
				t.Fatal(err)
			}
		}()
		d, err := lib.OpenDrive(ctx, 0)
		if err != nil {
			return // a header the drive refuses to load
		}
		classified := func(err error) bool {
			for _, e := range []error{tape.ErrFilemark, tape.ErrEndOfData, tape.ErrCorrupt, tape.ErrRecordTooLarge} {
				if errors.Is(err, e) {
					return true
				}
			}
			return false
		}
		buf := make([]byte, 1<<20)
		off := len(blank) // the blocks start after the 64-byte header
		for range len(file) + 1 {
			n, err := d.ReadRecord(ctx, buf)
			if err != nil {
				if errors.Is(err, tape.ErrFilemark) {
					off += 8
					continue
				}
				if !classified(err) {
					t.Fatalf("read: unclassified error %v", err)
				}
				break
			}
			if n == 0 || off+8+n > len(file) || !bytes.Equal(buf[:n], file[off+8:off+8+n]) {
				t.Fatalf("read a %d-byte record that is not the block at %d", n, off)
			}
			off += 8 + n
		}
		for _, op := range []func() error{
			func() error { return d.Rewind(ctx) },
			func() error { return d.SpaceFilemarks(ctx, 1) },
			func() error { return d.SeekEOD(ctx) },
		} {
			if err := op(); err != nil && !classified(err) {
				t.Fatalf("unclassified error %v", err)
			}
		}
		if _, err := d.Status(ctx); err != nil {
			t.Fatalf("status: %v", err)
		}
	})
}

// FuzzVirtualLibraryState feeds arbitrary library.json files (the state
// of a virtual library: its slots, drives, mail slots and where a
// cartridge in a drive came from) to OpenVirtual. A state it accepts must
// never make the library panic, hold a cartridge twice, or name a
// cartridge whose file would lie outside the library directory; the
// drives' cartridges go back where the inventory says they came from.
func FuzzVirtualLibraryState(f *testing.F) {
	base, err := os.MkdirTemp("/dev/shm", "drpipe-fuzz-vlib-")
	if err != nil {
		base = f.TempDir()
	} else {
		f.Cleanup(func() { os.RemoveAll(base) })
	}
	dir := filepath.Join(base, "lib")
	made, err := tape.InitVirtual(dir, tape.VirtualConfig{Generation: tape.LTO9, Slots: 3, Drives: 2, MailSlots: 1, Cartridges: 2, Capacity: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	// A cartridge file outside the library directory, which no state may
	// make the library use.
	blank, err := os.ReadFile(filepath.Join(dir, made[0]+".tape"))
	if err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "OUT001L9.tape"), blank, 0o644); err != nil {
		f.Fatal(err)
	}
	state := filepath.Join(dir, "library.json")
	// Seeds: the states the library writes itself: as created, with a
	// tape in a drive from its slot, and with one from the mail slot.
	seed := func() {
		b, err := os.ReadFile(state)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed()
	ctx := context.Background()
	lib, err := tape.OpenVirtual(dir)
	if err != nil {
		f.Fatal(err)
	}
	if err := lib.Move(ctx, tape.Element{Kind: tape.ElemSlot, Index: 1}, tape.Element{Kind: tape.ElemDrive, Index: 1}); err != nil {
		f.Fatal(err)
	}
	seed()
	if err := lib.Move(ctx, tape.Element{Kind: tape.ElemSlot, Index: 0}, tape.Element{Kind: tape.ElemMailSlot}); err != nil {
		f.Fatal(err)
	}
	if err := lib.Move(ctx, tape.Element{Kind: tape.ElemMailSlot}, tape.Element{Kind: tape.ElemDrive}); err != nil {
		f.Fatal(err)
	}
	seed()
	lib.Close()
	f.Add([]byte(`{"format":"drpipe-virtual-library","version":1,"generation":9,"capacity":1048576,"slots":["DRP001L9","DRP001L9"],"drives":[""],"mailslots":[]}`))
	f.Add([]byte(`{"format":"drpipe-virtual-library","version":1,"generation":9,"capacity":1048576,"slots":[""],"drives":["DRP002L9"],"mailslots":[],"home":{"DRP002L9":7}}`))
	f.Add([]byte(`{"format":"drpipe-virtual-library","version":1,"slots":["../OUT001L9"],"drives":[],"mailslots":null}`))
	f.Add([]byte(`{"format":"drpipe-virtual-library","version":1,"generation":9,"capacity":1048576,"slots":[""],"drives":["../OUT001L9"],"mailslots":[]}`))

	valid := func(bc string) bool {
		if bc == "" || len(bc) > 32 {
			return false
		}
		for _, c := range bc {
			if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
		return true
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(state, b, 0o600); err != nil {
			t.Fatal(err)
		}
		lib, err := tape.OpenVirtual(dir)
		if err != nil {
			if !errors.Is(err, tape.ErrNotLibrary) && !errors.Is(err, tape.ErrUnsupportedVersion) {
				t.Fatalf("open: unclassified error %v", err)
			}
			return
		}
		defer lib.Close()
		inv, err := lib.Inventory(ctx)
		if err != nil {
			t.Fatalf("inventory: %v", err)
		}
		held := map[string]bool{}
		for _, l := range [][]tape.ElementStatus{inv.Slots, inv.Drives, inv.MailSlots} {
			for _, e := range l {
				if !e.Full {
					continue
				}
				if !valid(e.Barcode) {
					t.Fatalf("%s holds %q, which is no barcode", e.Element, e.Barcode)
				}
				if held[e.Barcode] {
					t.Fatalf("tape %s is held twice", e.Barcode)
				}
				held[e.Barcode] = true
			}
		}
		lib.Outside()
		for i, d := range inv.Drives {
			if !d.Full {
				continue
			}
			if dr, err := lib.OpenDrive(ctx, i); err == nil {
				dr.Status(ctx)
				dr.Unload(ctx)
			}
			if d.Source != nil {
				if err := lib.Move(ctx, d.Element, *d.Source); err != nil && !errors.Is(err, tape.ErrElementFull) {
					t.Fatalf("move %s back to %s, where it came from: %v", d.Element, *d.Source, err)
				}
			}
		}
	})
}
