package tape

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// holdChanger wraps a changer: the first open of a drive ("open"), the
// first rewind ("rewind") or the first unload ("unload"), whichever op
// names, sends the drive's index on held and waits until release is
// closed. Every cartridge the changer moves into a drive is reported on
// loaded, with the drive's index.
type holdChanger struct {
	Changer
	op      string
	first   atomic.Bool
	held    chan int
	release chan struct{}
	loaded  chan int
}

func newHoldChanger(ch Changer, op string) *holdChanger {
	return &holdChanger{Changer: ch, op: op, held: make(chan int, 1), release: make(chan struct{}), loaded: make(chan int, 16)}
}

// hold waits for release if this is the first op on any drive.
func (c *holdChanger) hold(op string, i int) {
	if op != c.op || !c.first.CompareAndSwap(false, true) {
		return
	}
	c.held <- i
	<-c.release
}

func (c *holdChanger) Move(ctx context.Context, from, to Element) error {
	if err := c.Changer.Move(ctx, from, to); err != nil {
		return err
	}
	if to.Kind == ElemDrive {
		c.loaded <- to.Index
	}
	return nil
}

func (c *holdChanger) OpenDrive(ctx context.Context, i int) (Drive, error) {
	c.hold("open", i)
	d, err := c.Changer.OpenDrive(ctx, i)
	if err != nil {
		return nil, err
	}
	return &holdDrive{Drive: d, c: c, i: i}, nil
}

type holdDrive struct {
	Drive
	c *holdChanger
	i int
}

func (d *holdDrive) Rewind(ctx context.Context) error {
	d.c.hold("rewind", d.i)
	return d.Drive.Rewind(ctx)
}

func (d *holdDrive) Unload(ctx context.Context) error {
	d.c.hold("unload", d.i)
	return d.Drive.Unload(ctx)
}

type writeOutcome struct {
	res *WriteResult
	err error
}

// TestWriterMountsOutsideTheChangerLock: a set of three columns is
// written with two drives. While one drive's first open, first rewind
// or first unload is held by the test, the writer goes on with the
// other drive: it loads the second column's tape, writes it, puts it
// away and loads the third column's tape, all of which takes the
// changer lock. Opening, rewinding and unloading a drive therefore do
// not hold the lock, and the drive being held is not handed to another
// tape meanwhile.
func TestWriterMountsOutsideTheChangerLock(t *testing.T) {
	for _, op := range []string{"open", "rewind", "unload"} {
		t.Run(op, func(t *testing.T) { testWriterHolds(t, op) })
	}
}

func testWriterHolds(t *testing.T, op string) {
	ctx := context.Background()
	dir := t.TempDir()
	libDir := filepath.Join(dir, "library")
	if _, err := InitVirtual(libDir, VirtualConfig{Generation: LTO9, Slots: 4, Drives: 2, Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	lib, err := OpenVirtual(libDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	cat, err := OpenCatalog(filepath.Join(dir, "catalog"))
	if err != nil {
		t.Fatal(err)
	}
	pool := DefaultPool("daily")
	if _, err := LabelTapes(ctx, lib, cat, LabelOptions{Pool: pool, Count: 3}); err != nil {
		t.Fatal(err)
	}
	src, err := tiers.NewLocal(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := tiers.Handle{Type: tiers.TypeConfig, Name: "config"}
	if err := tiers.PutBytes(ctx, src, cfg, []byte("repository config")); err != nil {
		t.Fatal(err)
	}
	// Metadata alone, with parity 2: three columns of one tape each.
	plan := &WritePlan{Meta: []PlanObject{{Handle: cfg, Size: int64(len("repository config"))}}}
	hc := newHoldChanger(lib, op)
	wait := 10 * time.Second // only ever reached when the code under test is wrong

	done := make(chan writeOutcome, 1)
	go func() {
		res, err := WriteSet(ctx, hc, cat, src, plan, WriteOptions{Pool: pool, Level: LevelDaily, Parity: 2,
			Now: func() time.Time { return time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC) }})
		done <- writeOutcome{res, err}
	}()
	var released bool
	release := func() {
		if !released {
			released = true
			close(hc.release)
		}
	}
	fail := func(format string, args ...any) {
		t.Helper()
		release()
		<-done
		t.Fatalf(format, args...)
	}

	var held int
	select {
	case held = <-hc.held:
	case r := <-done:
		t.Fatalf("the write ended (%v) before any drive's %s", r.err, op)
	case <-time.After(wait):
		fail("the write never came to a drive's %s", op)
	}
	// Three tapes go into drives: the held one's, then, while it is held,
	// the second column's and the third column's.
	for loads := 0; loads < 3; {
		select {
		case di := <-hc.loaded:
			loads++
			if loads == 3 && di == held {
				fail("the third column's tape went into drive %d while that drive's %s was held", di, op)
			}
		case r := <-done:
			t.Fatalf("the write ended (%v) while drive %d's %s was held", r.err, held, op)
		case <-time.After(wait):
			fail("while drive %d's %s was held, the writer loaded %d of its 3 tapes and waited %v for the next: the %s holds the changer lock",
				held, op, loads, wait, op)
		}
	}
	release()
	r := <-done
	if r.err != nil {
		t.Fatalf("write: %v", r.err)
	}
	if !r.res.Set.Complete || len(r.res.Set.Tapes) != 3 {
		t.Fatalf("set: complete %v, %d tapes; want complete, 3 tapes", r.res.Set.Complete, len(r.res.Set.Tapes))
	}
	var bcs []string
	for _, st := range r.res.Set.Tapes {
		bcs = append(bcs, st.Barcode)
	}
	for i, e := range where(t, lib, bcs...) {
		if e.Kind != ElemSlot {
			t.Errorf("tape %s ends in %s, want a slot", bcs[i], e)
		}
	}
	for _, bc := range bcs {
		m, err := cat.Media(bc)
		if err != nil {
			t.Fatal(err)
		}
		if m == nil || m.State != StateFull || m.SetID != r.res.Set.ID {
			t.Errorf("catalog media %s: %+v; want full, in set %s", bc, m, r.res.Set.ID[:8])
		}
	}
}

// invChanger reports every Inventory call on calls.
type invChanger struct {
	Changer
	calls chan struct{}
}

func (c *invChanger) Inventory(ctx context.Context) (*Inventory, error) {
	inv, err := c.Changer.Inventory(ctx)
	c.calls <- struct{}{}
	return inv, err
}

// TestMounterWaitsForAnEvictedTape: every drive holds an idle tape; a
// mount evicts the one in drive 0 (its unload held by the test), and
// meanwhile another mount asks for that very tape. It waits for the
// tape to reach its slot and mounts it in the other drive, instead of
// failing because the tape is in a busy drive.
func TestMounterWaitsForAnEvictedTape(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bcs, err := InitVirtual(dir, VirtualConfig{Generation: LTO9, Slots: 4, Drives: 2, Capacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	lib, err := OpenVirtual(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	ta, tc, td := bcs[0], bcs[2], bcs[3]
	for i, bc := range []string{tc, td} {
		if err := lib.Move(ctx, where(t, lib, bc)[0], Element{Kind: ElemDrive, Index: i}); err != nil {
			t.Fatal(err)
		}
	}
	gc := &gateChanger{VirtualLibrary: lib, gated: -1}
	ic := &invChanger{Changer: gc, calls: make(chan struct{}, 16)}
	m := newMounter(ic)
	wait := 10 * time.Second // only ever reached when the code under test is wrong

	gc.gate(0)
	mountA := make(chan mountResult, 1)
	go func() {
		d, di, err := m.mount(ctx, ta)
		mountA <- mountResult{d, di, err}
	}()
	select {
	case <-gc.started:
	case r := <-mountA:
		t.Fatalf("mount of tape %s returned (drive %d, %v) without evicting idle tape %s from drive 0", ta, r.di, r.err, tc)
	case <-time.After(wait):
		t.Fatalf("mount of tape %s never began unloading drive 0", ta)
	}
	for len(ic.calls) > 0 {
		<-ic.calls
	}
	mountC := make(chan mountResult, 1)
	go func() {
		d, di, err := m.mount(ctx, tc)
		mountC <- mountResult{d, di, err}
	}()
	// Once the mount of tc has read the inventory and let go of the lock,
	// it has decided what to do about tc being in drive 0.
	select {
	case <-ic.calls:
	case <-time.After(wait):
		close(gc.release)
		t.Fatalf("mount of tape %s never read the inventory", tc)
	}
	m.mu.Lock()
	claimed := m.busy[0] && m.evicting[0]
	m.mu.Unlock()
	if !claimed {
		close(gc.release)
		t.Fatalf("while its idle tape is being evicted drive 0 is not claimed (busy %v, evicting %v)", m.busy, m.evicting)
	}
	close(gc.release)
	var ra, rc mountResult
	for _, w := range []struct {
		ch chan mountResult
		r  *mountResult
		bc string
	}{{mountA, &ra, ta}, {mountC, &rc, tc}} {
		select {
		case *w.r = <-w.ch:
		case <-time.After(wait):
			t.Fatalf("mount of tape %s did not return", w.bc)
		}
		if w.r.err != nil {
			t.Fatalf("mount tape %s: %v", w.bc, w.r.err)
		}
	}
	if ra.di != 0 || rc.di != 1 {
		t.Errorf("tape %s in drive %d, tape %s in drive %d; want drives 0 and 1", ta, ra.di, tc, rc.di)
	}
	at := where(t, lib, ta, tc, td)
	if at[0] != (Element{Kind: ElemDrive, Index: 0}) || at[1] != (Element{Kind: ElemDrive, Index: 1}) || at[2].Kind != ElemSlot {
		t.Fatalf("%s in %s, %s in %s, %s in %s; want drive 0, drive 1, a slot", ta, at[0], tc, at[1], td, at[2])
	}
	for _, r := range []mountResult{ra, rc} {
		if err := m.unmount(ctx, r.d, r.di); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.busy) != 0 || len(m.evicting) != 0 {
		t.Errorf("busy drives %v, evicting %v after every tape was unmounted; want none", m.busy, m.evicting)
	}
}
