package tape

import (
	"context"
	"fmt"
	"sync"
)

// mounter shares one changer between goroutines that each work one tape
// at a time in a drive of their own: the tapes of a restore (ReadPlan)
// and the columns of a set being written (WriteSet). mu serialises the
// changer's own work (Inventory, Move) and guards busy and evicting;
// opening, rewinding and unloading a drive (tens of seconds each on a
// real library) happen outside it, so a tape being unloaded does not
// hold up the mounts of the others. A drive is in busy from the moment a
// mount chooses it until its cartridge is back in a slot (or the mount
// failed): no mount is handed a drive that is still unloading.
type mounter struct {
	ch   Changer
	mu   sync.Mutex
	busy map[int]bool
	// evicting holds the drives in busy whose idle cartridge is being
	// unloaded to make room for a mount. A mount that wants that very
	// cartridge waits until it is in a slot instead of failing because
	// its drive is busy.
	evicting map[int]bool
	// evicted is closed, and replaced, whenever a drive leaves evicting.
	evicted chan struct{}
}

func newMounter(ch Changer) *mounter {
	return &mounter{ch: ch, busy: map[int]bool{}, evicting: map[int]bool{}, evicted: make(chan struct{})}
}

// inventory reports what the changer holds, taken under the lock so that
// it does not run beside a move.
func (m *mounter) inventory(ctx context.Context) (*Inventory, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ch.Inventory(ctx)
}

// mount puts barcode into a drive and returns the drive, open and
// rewound, and its index.
func (m *mounter) mount(ctx context.Context, barcode string) (Drive, int, error) {
	di, evict, err := m.claim(ctx, barcode)
	if err != nil {
		return nil, 0, err
	}
	if evict {
		err = m.evict(ctx, barcode, di)
	}
	var d Drive
	if err == nil {
		d, err = openPlaced(ctx, m.ch, di, barcode)
	}
	if err != nil {
		m.release(di)
		return nil, 0, err
	}
	return d, di, nil
}

// claim chooses a drive for barcode and marks it busy, under the lock.
// Unless the drive holds an idle cartridge that must go first (evict),
// it also moves barcode into it. When barcode is itself the idle
// cartridge another mount is evicting, claim waits for it to reach its
// slot and chooses again.
func (m *mounter) claim(ctx context.Context, barcode string) (di int, evict bool, err error) {
	for {
		di, evict, wait, err := m.tryClaim(ctx, barcode)
		if wait == nil {
			return di, evict, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, false, fmt.Errorf("mount tape %s, waiting for it to be put away from the drive another tape needs: %w", barcode, ctx.Err())
		}
	}
}

// tryClaim is one attempt of claim; it returns a channel to wait on when
// barcode is being evicted from its drive.
func (m *mounter) tryClaim(ctx context.Context, barcode string) (di int, evict bool, wait <-chan struct{}, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	inv, err := m.ch.Inventory(ctx)
	if err != nil {
		return 0, false, nil, err
	}
	if at, ok := inv.Find(barcode); ok && at.Kind == ElemDrive && m.evicting[at.Index] {
		return 0, false, m.evicted, nil
	}
	at, di, evict, err := pick(inv, barcode, m.busy)
	if err != nil {
		return 0, false, nil, err
	}
	if !evict && at.Kind != ElemDrive {
		if err := loadInto(ctx, m.ch, barcode, at, di); err != nil {
			return 0, false, nil, err
		}
	}
	m.busy[di] = true
	if evict {
		m.evicting[di] = true
	}
	return di, evict, nil, nil
}

// evict empties drive di, claimed by this mount but holding an idle
// cartridge, and loads barcode into it: the unload outside the lock, the
// changer's moves under it.
func (m *mounter) evict(ctx context.Context, barcode string, di int) error {
	if err := unloadDrive(ctx, m.ch, di); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := stow(ctx, m.ch, di); err != nil {
		return err
	}
	m.evictedFrom(di)
	inv, err := m.ch.Inventory(ctx)
	if err != nil {
		return err
	}
	at, ok := inv.Find(barcode)
	switch {
	case !ok:
		return fmt.Errorf("%w: tape %s is not in the library", ErrMissingTapes, barcode)
	case at.Kind == ElemDrive:
		return fmt.Errorf("tape %s is in drive %d, which is busy", barcode, at.Index)
	}
	return loadInto(ctx, m.ch, barcode, at, di)
}

// evictedFrom ends an eviction from drive di, if one is under way, and
// wakes the mounts waiting for its cartridge. Caller holds mu.
func (m *mounter) evictedFrom(di int) {
	if !m.evicting[di] {
		return
	}
	delete(m.evicting, di)
	close(m.evicted)
	m.evicted = make(chan struct{})
}

// unmount unloads d (drive di) outside the lock, then, under it, has the
// changer put the cartridge back into a slot and frees the drive. When
// the unload fails the cartridge stays in the drive, which is freed all
// the same: the next mount that needs the drive unloads it again.
func (m *mounter) unmount(ctx context.Context, d Drive, di int) error {
	err := unloadOpen(ctx, d, di)
	m.mu.Lock()
	defer m.mu.Unlock()
	defer delete(m.busy, di)
	if err != nil {
		return err
	}
	return stow(ctx, m.ch, di)
}

// release frees drive di after a failed mount.
func (m *mounter) release(di int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.busy, di)
	m.evictedFrom(di)
}
