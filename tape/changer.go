package tape

import (
	"context"
	"errors"
	"fmt"
)

// ElementKind is the kind of a changer element.
type ElementKind string

// Element kinds.
const (
	ElemSlot     ElementKind = "slot"     // storage slot
	ElemDrive    ElementKind = "drive"    // data transfer element
	ElemMailSlot ElementKind = "mailslot" // import/export element
)

// Element addresses one place a cartridge can be.
type Element struct {
	Kind  ElementKind `json:"kind"`
	Index int         `json:"index"`
}

// String renders "slot 3".
func (e Element) String() string { return fmt.Sprintf("%s %d", e.Kind, e.Index) }

// ElementStatus is one element in an inventory.
type ElementStatus struct {
	Element
	Full    bool   `json:"full"`
	Barcode string `json:"barcode,omitempty"`
	// Source is, for a drive, the element its cartridge was loaded from
	// when the changer knows it (SCSI's source element address).
	Source *Element `json:"source,omitempty"`
}

// Inventory is what a changer holds, element by element.
type Inventory struct {
	Slots     []ElementStatus `json:"slots"`
	Drives    []ElementStatus `json:"drives"`
	MailSlots []ElementStatus `json:"mailslots"`
}

// Find returns the element holding barcode.
func (inv *Inventory) Find(barcode string) (Element, bool) {
	for _, l := range [][]ElementStatus{inv.Drives, inv.Slots, inv.MailSlots} {
		for _, e := range l {
			if e.Full && e.Barcode == barcode {
				return e.Element, true
			}
		}
	}
	return Element{}, false
}

// empty reports whether element e exists and holds no cartridge.
func (inv *Inventory) empty(e Element) bool {
	var l []ElementStatus
	switch e.Kind {
	case ElemSlot:
		l = inv.Slots
	case ElemMailSlot:
		l = inv.MailSlots
	case ElemDrive:
		l = inv.Drives
	}
	return e.Index >= 0 && e.Index < len(l) && !l[e.Index].Full
}

// FreeSlot returns the first empty storage slot.
func (inv *Inventory) FreeSlot() (Element, bool) { return firstFree(inv.Slots) }

// FreeMailSlot returns the first empty mail slot.
func (inv *Inventory) FreeMailSlot() (Element, bool) { return firstFree(inv.MailSlots) }

func firstFree(l []ElementStatus) (Element, bool) {
	for _, e := range l {
		if !e.Full {
			return e.Element, true
		}
	}
	return Element{}, false
}

// Barcodes lists the barcodes in storage slots, drives and mail slots.
func (inv *Inventory) Barcodes() []string {
	var out []string
	for _, l := range [][]ElementStatus{inv.Slots, inv.Drives, inv.MailSlots} {
		for _, e := range l {
			if e.Full && e.Barcode != "" {
				out = append(out, e.Barcode)
			}
		}
	}
	return out
}

// Changer is a tape library's robot: storage slots, drives and
// import/export mail slots, addressed by Element, with barcodes read by
// its scanner. Inventory and Move are not safe for concurrent use: the
// writer and the restore serialise them with their own lock. OpenDrive
// and the drives it returns must work while another goroutine
// inventories the changer or moves cartridges between other elements:
// the writer and the restore open, rewind and unload drives (tens of
// seconds each on real hardware) outside that lock.
//
// Contract: Move fails with ErrElementEmpty when from holds nothing and
// ErrElementFull when to is occupied; moving out of a drive requires the
// drive to have unloaded the cartridge first (Drive.Unload).
type Changer interface {
	// Inventory reports every element.
	Inventory(ctx context.Context) (*Inventory, error)
	// Move carries a cartridge from one element to another.
	Move(ctx context.Context, from, to Element) error
	// OpenDrive returns drive i (0-based) for I/O on its cartridge.
	OpenDrive(ctx context.Context, i int) (Drive, error)
}

// Changer errors.
var (
	ErrElementEmpty = errors.New("tape: changer element is empty")
	ErrElementFull  = errors.New("tape: changer element is occupied")
)

// mount loads barcode into a drive and returns the open drive and its
// index. It prefers a drive that already holds the cartridge, then an
// empty drive; busy lists drives in use by other goroutines.
func mount(ctx context.Context, ch Changer, barcode string, busy map[int]bool) (Drive, int, error) {
	di, err := place(ctx, ch, barcode, busy)
	if err != nil {
		return nil, 0, err
	}
	d, err := openPlaced(ctx, ch, di, barcode)
	if err != nil {
		return nil, 0, err
	}
	return d, di, nil
}

// place moves barcode into a drive (the one holding it, else an empty
// one, else an idle one it unloads) and returns the drive's index.
func place(ctx context.Context, ch Changer, barcode string, busy map[int]bool) (int, error) {
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return 0, err
	}
	at, di, evict, err := pick(inv, barcode, busy)
	if err != nil {
		return 0, err
	}
	if evict {
		if err := unmountIndex(ctx, ch, di); err != nil {
			return 0, err
		}
	}
	if at.Kind != ElemDrive {
		if err := loadInto(ctx, ch, barcode, at, di); err != nil {
			return 0, err
		}
	}
	return di, nil
}

// loadInto has the changer carry barcode from at into empty drive di.
func loadInto(ctx context.Context, ch Changer, barcode string, at Element, di int) error {
	if err := ch.Move(ctx, at, Element{Kind: ElemDrive, Index: di}); err != nil {
		return fmt.Errorf("load tape %s into drive %d: %w", barcode, di, err)
	}
	return nil
}

// pick chooses, from inv, the drive to mount barcode in: the drive
// holding it, else the first empty drive, else the first full one not in
// busy (evict: its cartridge must be unloaded and put away first). at is
// where the cartridge is now; when at is a drive it is drive di and no
// move is needed.
func pick(inv *Inventory, barcode string, busy map[int]bool) (at Element, di int, evict bool, err error) {
	at, ok := inv.Find(barcode)
	if !ok {
		return at, 0, false, fmt.Errorf("%w: tape %s is not in the library", ErrMissingTapes, barcode)
	}
	if at.Kind == ElemDrive {
		if busy[at.Index] {
			return at, 0, false, fmt.Errorf("tape %s is in drive %d, which is busy", barcode, at.Index)
		}
		return at, at.Index, false, nil
	}
	for _, d := range inv.Drives {
		if !d.Full && !busy[d.Index] {
			return at, d.Index, false, nil
		}
	}
	for _, d := range inv.Drives {
		if !busy[d.Index] {
			return at, d.Index, true, nil
		}
	}
	return at, 0, false, fmt.Errorf("no free drive to load tape %s: all %d drives are in use", barcode, len(inv.Drives))
}

// openPlaced opens drive di, which holds barcode, and rewinds it.
func openPlaced(ctx context.Context, ch Changer, di int, barcode string) (Drive, error) {
	d, err := ch.OpenDrive(ctx, di)
	if err != nil {
		return nil, fmt.Errorf("open drive %d for tape %s: %w", di, barcode, err)
	}
	if err := d.Rewind(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("rewind tape %s in %s: %w", barcode, d.Name(), err)
	}
	return d, nil
}

// unmountIndex unloads drive i and puts its cartridge into a free slot.
func unmountIndex(ctx context.Context, ch Changer, i int) error {
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return err
	}
	if i >= len(inv.Drives) || !inv.Drives[i].Full {
		return nil
	}
	if err := unloadDrive(ctx, ch, i); err != nil {
		return err
	}
	return stow(ctx, ch, i)
}

// unloadDrive rewinds and ejects the cartridge in drive i so that the
// changer can take it out. It is the slow part of an unmount (tens of
// seconds on a real drive) and involves the drive alone: callers sharing
// a changer run it outside their changer lock, with the drive marked as
// theirs. An empty drive is not an error.
func unloadDrive(ctx context.Context, ch Changer, i int) error {
	d, err := ch.OpenDrive(ctx, i)
	if err != nil {
		if errors.Is(err, ErrNoMedia) {
			return nil
		}
		return fmt.Errorf("unload drive %d: %w", i, err)
	}
	return unloadOpen(ctx, d, i)
}

// unloadOpen is unloadDrive for drive i already open as d; it closes d.
func unloadOpen(ctx context.Context, d Drive, i int) error {
	name := d.Name()
	err := d.Unload(ctx)
	d.Close()
	if err != nil && !errors.Is(err, ErrNoMedia) {
		return fmt.Errorf("unload drive %d (%s): %w; the tape stays in the drive (see 'drpipe tape library status')", i, name, err)
	}
	return nil
}

// stow has the changer put the cartridge in drive i, which the drive has
// unloaded, into a free storage slot. An empty drive is left alone.
func stow(ctx context.Context, ch Changer, i int) error {
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return err
	}
	if i >= len(inv.Drives) || !inv.Drives[i].Full {
		return nil
	}
	bc := inv.Drives[i].Barcode
	// Back where it came from, when that is still empty: a tape read
	// from a mail slot (exported, waiting for the courier) goes back
	// there, not into the library.
	slot, ok := Element{}, false
	if src := inv.Drives[i].Source; src != nil && inv.empty(*src) {
		slot, ok = *src, true
	}
	if !ok {
		slot, ok = inv.FreeSlot()
	}
	if !ok {
		return fmt.Errorf("no free storage slot to put tape %s from drive %d: free a slot (export a tape) and unload the drive", bc, i)
	}
	if err := ch.Move(ctx, Element{Kind: ElemDrive, Index: i}, slot); err != nil {
		return fmt.Errorf("put tape %s from drive %d back into %s: %w", bc, i, slot, err)
	}
	return nil
}

// unmount unloads d (drive index i) back into a slot.
func unmount(ctx context.Context, ch Changer, d Drive, i int) error {
	if d != nil {
		d.Close()
	}
	return unmountIndex(ctx, ch, i)
}

// UnloadAll returns every cartridge in a drive to a storage slot.
func UnloadAll(ctx context.Context, ch Changer) error {
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return err
	}
	for _, d := range inv.Drives {
		if d.Full {
			if err := unmountIndex(ctx, ch, d.Index); err != nil {
				return err
			}
		}
	}
	return nil
}
