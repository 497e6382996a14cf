package tapetest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/drpipe/drpipe/tape"
)

// Cartridge describes the blank cartridge DriveSuite asks for.
type Cartridge struct {
	Capacity, EarlyWarning int64
	WriteProtected, WORM   bool
}

// NewDriveFunc returns a drive loaded with a blank cartridge as described.
type NewDriveFunc func(t *testing.T, c Cartridge) tape.Drive

// DriveSuite checks the tape.Drive contract on drives made by newDrive.
func DriveSuite(t *testing.T, newDrive NewDriveFunc) {
	ctx := context.Background()
	rec := func(i, n int) []byte { return bytes.Repeat([]byte{byte(i)}, n) }
	t.Run("RecordsAndFilemarks", func(t *testing.T) {
		d := newDrive(t, Cartridge{Capacity: 1 << 20, EarlyWarning: 1 << 10})
		buf := make([]byte, 4096)
		if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, tape.ErrEndOfData) {
			t.Fatalf("read on blank tape: got %v, want ErrEndOfData", err)
		}
		d.Rewind(ctx)
		// file 0: 2 records; file 1: 1 record; then EOD.
		for i, n := range []int{100, 200} {
			if ew, err := d.WriteRecord(ctx, rec(i, n)); err != nil || ew {
				t.Fatalf("write record %d: ew %v err %v", i, ew, err)
			}
		}
		if err := d.WriteFilemarks(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteRecord(ctx, rec(7, 300)); err != nil {
			t.Fatal(err)
		}
		if err := d.WriteFilemarks(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if p, _ := d.Position(ctx); p != (tape.Position{FileNo: 2}) {
			t.Errorf("position after writing: got %v, want file 2 block 0", p)
		}
		if err := d.Rewind(ctx); err != nil {
			t.Fatal(err)
		}
		for i, n := range []int{100, 200} {
			got, err := d.ReadRecord(ctx, buf)
			if err != nil || !bytes.Equal(buf[:got], rec(i, n)) {
				t.Fatalf("read record %d: got %d bytes, err %v", i, got, err)
			}
		}
		if p, _ := d.Position(ctx); p != (tape.Position{FileNo: 0, Block: 2}) {
			t.Errorf("position: got %v, want file 0 block 2", p)
		}
		if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, tape.ErrFilemark) {
			t.Fatalf("got %v, want ErrFilemark", err)
		}
		if p, _ := d.Position(ctx); p != (tape.Position{FileNo: 1}) {
			t.Errorf("position after filemark: got %v, want file 1 block 0", p)
		}
		// Too small a buffer leaves the head before the record.
		if _, err := d.ReadRecord(ctx, buf[:10]); !errors.Is(err, tape.ErrRecordTooLarge) {
			t.Fatalf("short buffer: got %v, want ErrRecordTooLarge", err)
		}
		if n, err := d.ReadRecord(ctx, buf); err != nil || n != 300 {
			t.Fatalf("read after short buffer: %d, %v", n, err)
		}
		if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, tape.ErrFilemark) {
			t.Fatalf("got %v, want ErrFilemark", err)
		}
		if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, tape.ErrEndOfData) {
			t.Fatalf("got %v, want ErrEndOfData", err)
		}
		// Space over filemarks.
		d.Rewind(ctx)
		if err := d.SpaceFilemarks(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if n, _ := d.ReadRecord(ctx, buf); n != 300 {
			t.Errorf("after spacing 1 filemark read %d bytes, want the 300-byte record", n)
		}
		d.Rewind(ctx)
		if err := d.SpaceFilemarks(ctx, 3); !errors.Is(err, tape.ErrEndOfData) {
			t.Errorf("spacing past the last filemark: got %v, want ErrEndOfData", err)
		}
		if err := d.SeekEOD(ctx); err != nil {
			t.Fatal(err)
		}
		if st, _ := d.Status(ctx); !st.EOD {
			t.Errorf("after SeekEOD the drive does not report EOD: %+v", st)
		}
	})
	t.Run("OverwriteTruncates", func(t *testing.T) {
		d := newDrive(t, Cartridge{Capacity: 1 << 20, EarlyWarning: 1 << 10})
		for i := 0; i < 3; i++ {
			d.WriteRecord(ctx, rec(i, 50))
			d.WriteFilemarks(ctx, 1)
		}
		d.Rewind(ctx)
		d.SpaceFilemarks(ctx, 1)
		if _, err := d.WriteRecord(ctx, rec(9, 60)); err != nil {
			t.Fatal(err)
		}
		d.WriteFilemarks(ctx, 1)
		d.Rewind(ctx)
		if err := d.SpaceFilemarks(ctx, 1); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		if n, _ := d.ReadRecord(ctx, buf); n != 60 || buf[0] != 9 {
			t.Errorf("file 1 after overwrite: %d bytes starting %d, want 60 bytes of 9", n, buf[0])
		}
		d.ReadRecord(ctx, buf) // filemark
		if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, tape.ErrEndOfData) {
			t.Errorf("old file 2 still readable after overwriting file 1: %v", err)
		}
	})
	t.Run("EarlyWarningThenEndOfMedia", func(t *testing.T) {
		d := newDrive(t, Cartridge{Capacity: 10000, EarlyWarning: 2500})
		var sawEW bool
		var written int
		for i := 0; i < 20; i++ {
			ew, err := d.WriteRecord(ctx, rec(i, 1000))
			if errors.Is(err, tape.ErrEndOfMedia) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			written++
			if ew && !sawEW {
				sawEW = true
				if written != 8 {
					t.Errorf("early warning after %d records of 1000 bytes, want 8 (capacity 10000, warning zone 2500)", written)
				}
			}
		}
		if !sawEW || written != 10 {
			t.Errorf("wrote %d records (early warning seen %v), want 10 and a warning", written, sawEW)
		}
		// Filemarks still fit at the end of the medium.
		if err := d.WriteFilemarks(ctx, 1); err != nil {
			t.Errorf("filemark after end of medium: %v", err)
		}
		d.Rewind(ctx)
		buf := make([]byte, 2000)
		for i := 0; i < 10; i++ {
			if n, err := d.ReadRecord(ctx, buf); err != nil || n != 1000 || buf[0] != byte(i) {
				t.Fatalf("record %d after end of medium: %d %v", i, n, err)
			}
		}
	})
	t.Run("WriteProtected", func(t *testing.T) {
		d := newDrive(t, Cartridge{Capacity: 1 << 20, EarlyWarning: 1 << 10, WriteProtected: true})
		if _, err := d.WriteRecord(ctx, rec(1, 10)); !errors.Is(err, tape.ErrWriteProtected) {
			t.Errorf("write: got %v, want ErrWriteProtected", err)
		}
		if err := d.WriteFilemarks(ctx, 1); !errors.Is(err, tape.ErrWriteProtected) {
			t.Errorf("filemark: got %v, want ErrWriteProtected", err)
		}
		if st, _ := d.Status(ctx); !st.WriteProtected {
			t.Errorf("status does not report write protection")
		}
	})
	t.Run("WORM", func(t *testing.T) {
		d := newDrive(t, Cartridge{Capacity: 1 << 20, EarlyWarning: 1 << 10, WORM: true})
		if st, _ := d.Status(ctx); !st.WORM {
			t.Skip("this drive cannot report WORM media")
		}
		if _, err := d.WriteRecord(ctx, rec(1, 10)); err != nil {
			t.Fatal(err)
		}
		d.WriteFilemarks(ctx, 1)
		d.Rewind(ctx)
		if _, err := d.WriteRecord(ctx, rec(2, 10)); !errors.Is(err, tape.ErrWORM) {
			t.Errorf("overwrite on WORM: got %v, want ErrWORM", err)
		}
		if err := d.SeekEOD(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteRecord(ctx, rec(3, 10)); err != nil {
			t.Errorf("append on WORM: %v", err)
		}
	})
	t.Run("Unload", func(t *testing.T) {
		d := newDrive(t, Cartridge{Capacity: 1 << 20, EarlyWarning: 1 << 10})
		if err := d.Unload(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteRecord(ctx, rec(1, 10)); !errors.Is(err, tape.ErrNoMedia) {
			t.Errorf("write after unload: got %v, want ErrNoMedia", err)
		}
	})
}
