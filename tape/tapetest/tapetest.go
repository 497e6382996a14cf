// Package tapetest provides an in-memory tape drive with the semantics of
// tape.Drive (records, filemarks, early warning, end of medium,
// write-protect, WORM) and DriveSuite, the conformance test every Drive
// implementation runs.
package tapetest

import (
	"context"
	"fmt"
	"sync"

	"github.com/drpipe/drpipe/tape"
)

// Drive is an in-memory tape drive holding one cartridge. It is safe for
// concurrent use (calls are serialised).
type Drive struct {
	mu sync.Mutex
	// Capacity and EarlyWarning in payload bytes.
	Capacity, EarlyWarning int64
	// WriteProtected and WORM emulate the cartridge's tab and media type.
	WriteProtected, WORM bool
	// FailWrite, when set, is returned by the next WriteRecord (and then
	// cleared): a way to inject an I/O error.
	FailWrite error

	blocks []block // recorded data
	pos    int     // index of the next block
	fileNo int64
	blk    int64
	used   int64
	ew     bool
	loaded bool
	syncs  int
}

type block struct {
	fm   bool
	data []byte
}

// NewDrive returns a loaded drive with a blank cartridge.
func NewDrive(capacity, earlyWarning int64) *Drive {
	return &Drive{Capacity: capacity, EarlyWarning: earlyWarning, loaded: true}
}

// Syncs counts Sync calls.
func (d *Drive) Syncs() int { d.mu.Lock(); defer d.mu.Unlock(); return d.syncs }

// Blocks returns the number of recorded blocks (records and filemarks).
func (d *Drive) Blocks() int { d.mu.Lock(); defer d.mu.Unlock(); return len(d.blocks) }

// Name implements tape.Drive.
func (d *Drive) Name() string { return "memory drive" }

func (d *Drive) ready() error {
	if !d.loaded {
		return tape.ErrNoMedia
	}
	return nil
}

// Status implements tape.Drive.
func (d *Drive) Status(ctx context.Context) (tape.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return tape.Status{Loaded: d.loaded, BOT: d.pos == 0, EOD: d.pos == len(d.blocks), EarlyWarning: d.ew,
		WriteProtected: d.WriteProtected, WORM: d.WORM, Position: tape.Position{FileNo: d.fileNo, Block: d.blk}, Capacity: d.Capacity}, nil
}

// Rewind implements tape.Drive.
func (d *Drive) Rewind(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	d.pos, d.fileNo, d.blk, d.used, d.ew = 0, 0, 0, 0, false
	return nil
}

func (d *Drive) checkWrite() error {
	if err := d.ready(); err != nil {
		return err
	}
	if d.WriteProtected {
		return tape.ErrWriteProtected
	}
	if d.WORM && d.pos != len(d.blocks) {
		return tape.ErrWORM
	}
	return nil
}

// WriteRecord implements tape.Drive.
func (d *Drive) WriteRecord(ctx context.Context, p []byte) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkWrite(); err != nil {
		return false, err
	}
	if d.FailWrite != nil {
		err := d.FailWrite
		d.FailWrite = nil
		return false, err
	}
	if len(p) == 0 {
		return false, fmt.Errorf("empty record: %w", tape.ErrRecordTooLarge)
	}
	if d.used+int64(len(p)) > d.Capacity {
		return false, tape.ErrEndOfMedia
	}
	d.blocks = append(d.blocks[:d.pos], block{data: append([]byte(nil), p...)})
	d.pos++
	d.blk++
	d.used += int64(len(p))
	if d.used > d.Capacity-d.EarlyWarning {
		d.ew = true
	}
	return d.ew, nil
}

// WriteFilemarks implements tape.Drive.
func (d *Drive) WriteFilemarks(ctx context.Context, n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkWrite(); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		d.blocks = append(d.blocks[:d.pos], block{fm: true})
		d.pos++
		d.fileNo++
		d.blk = 0
	}
	return nil
}

// Sync implements tape.Drive.
func (d *Drive) Sync(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.syncs++
	return d.ready()
}

func (d *Drive) step() (block, error) {
	if d.pos >= len(d.blocks) {
		return block{}, tape.ErrEndOfData
	}
	b := d.blocks[d.pos]
	d.pos++
	if b.fm {
		d.fileNo++
		d.blk = 0
	} else {
		d.blk++
		d.used += int64(len(b.data))
	}
	return b, nil
}

// SpaceFilemarks implements tape.Drive.
func (d *Drive) SpaceFilemarks(ctx context.Context, n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	for n > 0 {
		b, err := d.step()
		if err != nil {
			return err
		}
		if b.fm {
			n--
		}
	}
	return nil
}

// SeekEOD implements tape.Drive.
func (d *Drive) SeekEOD(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	for d.pos < len(d.blocks) {
		d.step()
	}
	return nil
}

// ReadRecord implements tape.Drive.
func (d *Drive) ReadRecord(ctx context.Context, p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return 0, err
	}
	if d.pos < len(d.blocks) && !d.blocks[d.pos].fm && len(d.blocks[d.pos].data) > len(p) {
		return 0, tape.ErrRecordTooLarge
	}
	b, err := d.step()
	if err != nil {
		return 0, err
	}
	if b.fm {
		return 0, tape.ErrFilemark
	}
	return copy(p, b.data), nil
}

// Position implements tape.Drive.
func (d *Drive) Position(ctx context.Context) (tape.Position, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return tape.Position{}, err
	}
	return tape.Position{FileNo: d.fileNo, Block: d.blk}, nil
}

// Unload implements tape.Drive; Load puts the cartridge back.
func (d *Drive) Unload(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	d.loaded = false
	d.pos, d.fileNo, d.blk, d.used, d.ew = 0, 0, 0, 0, false
	return nil
}

// Load reloads the cartridge after Unload.
func (d *Drive) Load() { d.mu.Lock(); d.loaded = true; d.mu.Unlock() }

// Close implements tape.Drive.
func (d *Drive) Close() error { return nil }
