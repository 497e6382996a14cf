//go:build linux

package tape_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tape/tapetest"
)

// fakeST models the Linux st driver at the system-call boundary:
// variable-block records, filemarks, MTIOCGET status bits, ENOSPC after
// the early warning (alternating with successful retries) and at the
// physical end, ENOMEM for a record larger than the read buffer, EIO at
// the end of data, EROFS when opening a write-protected tape read-write.
type fakeST struct {
	blocks   [][]byte // nil = filemark
	pos      int
	fileno   int32
	blkno    int32
	capacity int64
	ew       int64
	wp       bool
	loaded   bool
	noImmed  bool
	enospc   bool // the next write fails with ENOSPC (early-warning zone)
	eof      bool // the last block passed was a filemark (GMT_EOF)
	ops      []string
}

func (f *fakeST) used() int64 {
	var n int64
	for _, b := range f.blocks {
		n += int64(len(b))
	}
	return n
}

func (f *fakeST) Open(path string, flags int) (int, error) {
	if !f.loaded {
		return -1, unix.ENOMEDIUM
	}
	if f.wp && flags&unix.O_ACCMODE != unix.O_RDONLY {
		return -1, unix.EROFS
	}
	f.ops = append(f.ops, fmt.Sprintf("open %d", flags&unix.O_ACCMODE))
	return 7, nil
}

func (f *fakeST) Close(fd int) error { return nil }

func (f *fakeST) Write(fd int, p []byte) (int, error) {
	if !f.loaded {
		return -1, unix.ENOMEDIUM
	}
	if f.enospc {
		f.enospc = false
		return -1, unix.ENOSPC
	}
	// Writing discards what follows; capacity counts what stays.
	kept := f.blocks[:f.pos]
	var used int64
	for _, b := range kept {
		used += int64(len(b))
	}
	if used+int64(len(p)) > f.capacity {
		return -1, unix.ENOSPC
	}
	f.blocks = append(kept, append([]byte(nil), p...))
	f.pos++
	f.blkno++
	if used+int64(len(p)) > f.capacity-f.ew {
		// st: once past the early warning every other write fails.
		f.enospc = true
	}
	return len(p), nil
}

func (f *fakeST) Read(fd int, p []byte) (int, error) {
	if !f.loaded {
		return -1, unix.ENOMEDIUM
	}
	if f.pos >= len(f.blocks) {
		return -1, unix.EIO
	}
	b := f.blocks[f.pos]
	f.pos++
	f.eof = b == nil
	if b == nil {
		f.fileno++
		f.blkno = 0
		return 0, nil
	}
	f.blkno++
	if len(b) > len(p) {
		return -1, unix.ENOMEM
	}
	return copy(p, b), nil
}

func (f *fakeST) Op(fd int, op *tape.MTOp) error {
	f.ops = append(f.ops, fmt.Sprintf("op %d %d", op.Op, op.Count))
	f.eof = op.Op == tape.MTFSF
	if !f.loaded {
		return unix.ENOMEDIUM
	}
	switch op.Op {
	case tape.MTSETBLK:
		if op.Count != 0 {
			return unix.EINVAL
		}
	case tape.MTREW:
		f.pos, f.fileno, f.blkno, f.enospc = 0, 0, 0, false
	case tape.MTWEOFI, tape.MTWEOF:
		if op.Op == tape.MTWEOFI && f.noImmed {
			return unix.EINVAL
		}
		if f.wp {
			return unix.EROFS
		}
		for i := 0; i < int(op.Count); i++ {
			f.blocks = append(f.blocks[:f.pos], nil)
			f.pos++
			f.fileno++
			f.blkno = 0
		}
	case tape.MTFSF:
		for n := int(op.Count); n > 0; {
			if f.pos >= len(f.blocks) {
				return unix.EIO
			}
			b := f.blocks[f.pos]
			f.pos++
			if b == nil {
				f.fileno++
				f.blkno = 0
				n--
			} else {
				f.blkno++
			}
		}
	case tape.MTBSR:
		f.pos--
		f.blkno--
	case tape.MTEOM:
		for f.pos < len(f.blocks) {
			if f.blocks[f.pos] == nil {
				f.fileno++
				f.blkno = 0
			} else {
				f.blkno++
			}
			f.pos++
		}
	case tape.MTOFFL:
		f.pos, f.fileno, f.blkno = 0, 0, 0
		f.loaded = false
	default:
		return unix.EINVAL
	}
	return nil
}

func (f *fakeST) Get(fd int, g *tape.MTGet) error {
	*g = tape.MTGet{Fileno: f.fileno, Blkno: f.blkno}
	var s uint32
	if f.loaded {
		s |= tape.GMTONLINE
	} else {
		s |= tape.GMTDROPEN
	}
	if f.pos == 0 {
		s |= tape.GMTBOT
	}
	if f.pos >= len(f.blocks) {
		s |= tape.GMTEOD
	}
	if f.wp {
		s |= tape.GMTWRPROT
	}
	if f.eof {
		s |= tape.GMTEOF
	}
	var used int64
	for _, b := range f.blocks[:f.pos] {
		used += int64(len(b))
	}
	if used > f.capacity-f.ew {
		s |= tape.GMTEOT
	}
	g.Gstat = int(s)
	return nil
}

func TestSTDriverConformance(t *testing.T) {
	tapetest.DriveSuite(t, func(t *testing.T, c tapetest.Cartridge) tape.Drive {
		f := &fakeST{capacity: c.Capacity, ew: c.EarlyWarning, wp: c.WriteProtected, loaded: true}
		d, err := tape.OpenSTWith("/dev/nst0", f)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

func TestSTDriverIoctlBoundary(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) == 8 {
		if *tape.MTIOCTOP != 0x40086d01 || *tape.MTIOCGET != 0x80306d02 {
			t.Errorf("ioctl numbers MTIOCTOP %#x MTIOCGET %#x, want 0x40086d01 and 0x80306d02 (linux/mtio.h on 64-bit)", *tape.MTIOCTOP, *tape.MTIOCGET)
		}
	}
	ctx := context.Background()
	f := &fakeST{capacity: 1 << 20, ew: 1 << 10, loaded: true, noImmed: true}
	d, err := tape.OpenSTWith("/dev/nst0", f)
	if err != nil {
		t.Fatal(err)
	}
	if f.ops[0] != fmt.Sprintf("open %d", unix.O_RDWR) || f.ops[1] != fmt.Sprintf("op %d 0", tape.MTSETBLK) {
		t.Errorf("open sequence %v: want O_RDWR then MTSETBLK 0 (variable block mode)", f.ops)
	}
	f.ops = nil
	d.WriteRecord(ctx, []byte("x"))
	if err := d.WriteFilemarks(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("op %d 2", tape.MTWEOFI), fmt.Sprintf("op %d 2", tape.MTWEOF), fmt.Sprintf("op %d 0", tape.MTWEOF)}
	if fmt.Sprint(f.ops) != fmt.Sprint(want) {
		t.Errorf("filemark ops %v, want %v (MTWEOFI, fallback MTWEOF, flush by MTWEOF 0)", f.ops, want)
	}
	if f.fileno != 2 {
		t.Errorf("wrote %d filemarks, want 2 (the rejected MTWEOFI must not count)", f.fileno)
	}
	// Drives that take MTWEOFI never flush on a filemark.
	f2 := &fakeST{capacity: 1 << 20, ew: 1 << 10, loaded: true}
	d2, _ := tape.OpenSTWith("/dev/nst1", f2)
	f2.ops = nil
	d2.WriteFilemarks(ctx, 1)
	if fmt.Sprint(f2.ops) != fmt.Sprint([]string{fmt.Sprintf("op %d 1", tape.MTWEOFI)}) {
		t.Errorf("filemark ops %v, want MTWEOFI only", f2.ops)
	}
	// A write-protected tape opens read-only and refuses writes.
	wp := &fakeST{capacity: 1 << 20, loaded: true, wp: true}
	d3, err := tape.OpenSTWith("/dev/nst2", wp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d3.WriteRecord(ctx, []byte("x")); !errors.Is(err, tape.ErrWriteProtected) {
		t.Errorf("write on write-protected tape: %v", err)
	}
	// No tape.
	if _, err := tape.OpenSTWith("/dev/nst3", &fakeST{}); !errors.Is(err, tape.ErrNoMedia) {
		t.Errorf("open without a tape: got %v, want ErrNoMedia", err)
	}
}
