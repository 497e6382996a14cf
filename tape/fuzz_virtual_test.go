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
