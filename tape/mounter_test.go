package tape

import (
	"context"
	"sync"
	"testing"
	"time"
)

// gateChanger is a virtual library whose drive `gated` does not finish
// an Unload until release is closed; it sends the drive's index on
// started when such an Unload begins. Other drives unload at once.
type gateChanger struct {
	*VirtualLibrary
	mu      sync.Mutex
	gated   int
	started chan int
	release chan struct{}
}

// gate makes the unloads of drive i wait for a new release channel.
func (c *gateChanger) gate(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gated, c.started, c.release = i, make(chan int, 4), make(chan struct{})
}

func (c *gateChanger) OpenDrive(ctx context.Context, i int) (Drive, error) {
	d, err := c.VirtualLibrary.OpenDrive(ctx, i)
	if err != nil {
		return nil, err
	}
	return &gateDrive{Drive: d, c: c, i: i}, nil
}

type gateDrive struct {
	Drive
	c *gateChanger
	i int
}

func (d *gateDrive) Unload(ctx context.Context) error {
	d.c.mu.Lock()
	gated, started, release := d.c.gated == d.i, d.c.started, d.c.release
	d.c.mu.Unlock()
	if gated {
		started <- d.i
		<-release
	}
	return d.Drive.Unload(ctx)
}

// where returns the element holding each barcode.
func where(t *testing.T, ch Changer, bcs ...string) []Element {
	t.Helper()
	inv, err := ch.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]Element, len(bcs))
	for i, bc := range bcs {
		at, ok := inv.Find(bc)
		if !ok {
			t.Fatalf("tape %s is no longer in the library", bc)
		}
		out[i] = at
	}
	return out
}

type mountResult struct {
	d   Drive
	di  int
	err error
}

// TestMounterUnloadsOutsideTheChangerLock: while a drive of a restore
// unloads (held by the test until it lets go), another goroutine of the
// restore mounts a tape, which takes the changer lock and moves
// cartridges: the unload does not hold the lock. The drive being
// unloaded is not handed to that mount, and evicting an idle cartridge
// from a drive to make room also unloads it outside the lock.
func TestMounterUnloadsOutsideTheChangerLock(t *testing.T) {
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
	ta, tb, tc, td := bcs[0], bcs[1], bcs[2], bcs[3]
	gc := &gateChanger{VirtualLibrary: lib, gated: -1}
	m := newMounter(gc)
	wait := 10 * time.Second // only ever reached when the code under test is wrong

	// Tape tc was left in drive 1 by an earlier run; ta goes to drive 0,
	// the empty one.
	if err := lib.Move(ctx, where(t, lib, tc)[0], Element{Kind: ElemDrive, Index: 1}); err != nil {
		t.Fatal(err)
	}
	da, di, err := m.mount(ctx, ta)
	if err != nil {
		t.Fatal(err)
	}
	if di != 0 {
		t.Fatalf("tape %s went to drive %d, want the empty drive 0", ta, di)
	}

	// 1. ta is done and unloads; meanwhile tb is mounted.
	gc.gate(0)
	unmounted := make(chan error, 1)
	go func() { unmounted <- m.unmount(ctx, da, 0) }()
	select {
	case <-gc.started:
	case err := <-unmounted:
		t.Fatalf("unmount of drive 0 returned (%v) without unloading the drive", err)
	case <-time.After(wait):
		t.Fatal("unmount of drive 0 never began unloading it")
	}
	mounted := make(chan mountResult, 1)
	go func() {
		dr, di, err := m.mount(ctx, tb)
		mounted <- mountResult{dr, di, err}
	}()
	var rb mountResult
	select {
	case rb = <-mounted:
	case <-gc.started:
		close(gc.release)
		<-unmounted
		<-mounted
		t.Fatalf("drive 0 was handed to the mount of tape %s while it was still unloading tape %s", tb, ta)
	case <-time.After(wait):
		close(gc.release)
		<-unmounted
		<-mounted
		t.Fatalf("mounting tape %s waited %v for drive 0 to finish unloading: the unload holds the changer lock", tb, wait)
	}
	if rb.err != nil {
		close(gc.release)
		<-unmounted
		t.Fatalf("mount tape %s while drive 0 unloads: %v", tb, rb.err)
	}
	if rb.di != 1 {
		t.Errorf("tape %s went to drive %d while drive 0 was unloading; want drive 1 (its idle tape %s put away)", tb, rb.di, tc)
	}
	close(gc.release)
	if err := <-unmounted; err != nil {
		t.Fatalf("unmount tape %s: %v", ta, err)
	}
	at := where(t, lib, ta, tb, tc)
	if at[0].Kind != ElemSlot || at[1] != (Element{Kind: ElemDrive, Index: 1}) || at[2].Kind != ElemSlot {
		t.Fatalf("after the unmount of %s and the mount of %s: %s in %s, %s in %s, %s in %s; want a slot, drive 1, a slot", ta, tb, ta, at[0], tb, at[1], tc, at[2])
	}
	if len(m.busy) != 1 || !m.busy[1] {
		t.Errorf("busy drives %v, want just drive 1", m.busy)
	}

	// 2. tc is back in drive 0, idle; mounting td must evict it, and the
	// unmount of tb meanwhile must not wait for that unload.
	if err := lib.Move(ctx, where(t, lib, tc)[0], Element{Kind: ElemDrive, Index: 0}); err != nil {
		t.Fatal(err)
	}
	gc.gate(0)
	go func() {
		dr, di, err := m.mount(ctx, td)
		mounted <- mountResult{dr, di, err}
	}()
	select {
	case <-gc.started:
	case r := <-mounted:
		t.Fatalf("mount of tape %s returned (drive %d, %v) without unloading idle drive 0", td, r.di, r.err)
	case <-time.After(wait):
		t.Fatalf("mount of tape %s never began unloading idle drive 0", td)
	}
	go func() { unmounted <- m.unmount(ctx, rb.d, 1) }()
	select {
	case err := <-unmounted:
		if err != nil {
			t.Errorf("unmount tape %s: %v", tb, err)
		}
	case <-time.After(wait):
		close(gc.release)
		<-mounted
		<-unmounted
		t.Fatalf("unmounting tape %s waited %v for drive 0 to unload idle tape %s: the eviction holds the changer lock", tb, wait, tc)
	}
	close(gc.release)
	rd := <-mounted
	if rd.err != nil {
		t.Fatalf("mount tape %s into a drive holding an idle tape: %v", td, rd.err)
	}
	if rd.di != 0 {
		t.Errorf("tape %s went to drive %d, want drive 0 (evicting %s)", td, rd.di, tc)
	}
	at = where(t, lib, tb, tc, td)
	if at[0].Kind != ElemSlot || at[1].Kind != ElemSlot || at[2] != (Element{Kind: ElemDrive, Index: 0}) {
		t.Fatalf("after the eviction: %s in %s, %s in %s, %s in %s; want a slot, a slot, drive 0", tb, at[0], tc, at[1], td, at[2])
	}
	if err := m.unmount(ctx, rd.d, rd.di); err != nil {
		t.Fatal(err)
	}
	if len(m.busy) != 0 {
		t.Errorf("busy drives %v after every tape was unmounted, want none", m.busy)
	}
	for i, e := range where(t, lib, ta, tb, tc, td) {
		if e.Kind != ElemSlot {
			t.Errorf("tape %s ends in %s, want a slot", bcs[i], e)
		}
	}
}
