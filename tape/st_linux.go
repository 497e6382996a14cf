//go:build linux

package tape

import (
	"context"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Linux SCSI tape (st) driver interface, from <linux/mtio.h>.
const (
	mtFSF     = 1  // forward space over filemarks
	mtBSR     = 4  // backward space records
	mtWEOF    = 5  // write filemarks (flushes the buffer)
	mtREW     = 6  // rewind
	mtOFFL    = 7  // rewind and unload
	mtEOM     = 12 // go to the end of recorded data
	mtSETBLK  = 20 // set block size (0 = variable)
	mtWEOFI   = 35 // write filemarks without flushing (IMMED)
	gmtEOF    = 0x80000000
	gmtBOT    = 0x40000000
	gmtEOT    = 0x20000000 // early warning: end of tape zone
	gmtEOD    = 0x08000000
	gmtWRPROT = 0x04000000
	gmtONLINE = 0x01000000
	gmtDROPEN = 0x00040000 // door open: no tape
)

// mtop is struct mtop.
type mtop struct {
	Op    int16
	_     int16
	Count int32
}

// mtget is struct mtget: five C longs (Go int has the size of a C long on
// Linux) and two daddr_t (int).
type mtget struct {
	Type, Resid, Dsreg, Gstat, Erreg int
	Fileno, Blkno                    int32
}

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | 'm'<<8 | nr }

var (
	mtIOCTOP = ioc(1, 1, unsafe.Sizeof(mtop{}))  // _IOW('m', 1, struct mtop)
	mtIOCGET = ioc(2, 2, unsafe.Sizeof(mtget{})) // _IOR('m', 2, struct mtget)
)

// stSys is the system-call boundary of the st driver; the tests replace
// it with a model of the kernel driver.
type stSys interface {
	Open(path string, flags int) (int, error)
	Close(fd int) error
	Read(fd int, p []byte) (int, error)
	Write(fd int, p []byte) (int, error)
	Op(fd int, op *mtop) error
	Get(fd int, st *mtget) error
}

type realSys struct{}

func (realSys) Open(path string, flags int) (int, error) {
	return unix.Open(path, flags|unix.O_CLOEXEC, 0)
}
func (realSys) Close(fd int) error                  { return unix.Close(fd) }
func (realSys) Read(fd int, p []byte) (int, error)  { return unix.Read(fd, p) }
func (realSys) Write(fd int, p []byte) (int, error) { return unix.Write(fd, p) }
func (realSys) Op(fd int, op *mtop) error {
	return ioctl(fd, mtIOCTOP, unsafe.Pointer(op))
}
func (realSys) Get(fd int, st *mtget) error { return ioctl(fd, mtIOCGET, unsafe.Pointer(st)) }

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// STDrive is a tape drive behind the Linux st driver, opened through its
// no-rewind device (/dev/nstN) in variable block mode. It implements
// Drive. Not safe for concurrent use.
//
// End of medium: the st driver finishes the write that crosses the early
// warning and fails the next one with ENOSPC; a retried write is allowed
// (to write trailers), and ENOSPC twice in a row is the physical end.
// WriteRecord retries once and reports earlyWarning, or ErrEndOfMedia.
type STDrive struct {
	path     string
	fd       int
	sys      stSys
	readOnly bool // opened O_RDONLY because the tape is write-protected
	ew       bool
	noImmed  bool // the drive rejected MTWEOFI: use MTWEOF
}

// OpenST opens a no-rewind st device such as /dev/nst0 and sets variable
// block mode.
func OpenST(path string) (*STDrive, error) { return openST(path, realSys{}) }

func openST(path string, sys stSys) (*STDrive, error) {
	d := &STDrive{path: path, sys: sys}
	fd, err := sys.Open(path, unix.O_RDWR)
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) {
		fd, err = sys.Open(path, unix.O_RDONLY)
		d.readOnly = true
	}
	if err != nil {
		if errors.Is(err, unix.ENOMEDIUM) {
			return nil, fmt.Errorf("open %s: %w", path, ErrNoMedia)
		}
		return nil, fmt.Errorf("open tape drive %s: %w", path, err)
	}
	d.fd = fd
	if err := d.op(mtSETBLK, 0); err != nil {
		sys.Close(fd)
		return nil, fmt.Errorf("%s: set variable block mode: %w", path, err)
	}
	return d, nil
}

func (d *STDrive) op(code int16, count int32) error {
	return d.sys.Op(d.fd, &mtop{Op: code, Count: count})
}

func (d *STDrive) get() (mtget, error) {
	var g mtget
	err := d.sys.Get(d.fd, &g)
	return g, err
}

// Name implements Drive.
func (d *STDrive) Name() string { return d.path }

// Status implements Drive.
func (d *STDrive) Status(ctx context.Context) (Status, error) {
	g, err := d.get()
	if err != nil {
		return Status{}, fmt.Errorf("%s: MTIOCGET: %w", d.path, err)
	}
	gs := uint32(g.Gstat)
	st := Status{
		Loaded:         gs&gmtONLINE != 0 && gs&gmtDROPEN == 0,
		BOT:            gs&gmtBOT != 0,
		EOD:            gs&gmtEOD != 0,
		EarlyWarning:   gs&gmtEOT != 0 || d.ew,
		WriteProtected: gs&gmtWRPROT != 0 || d.readOnly,
		Position:       Position{FileNo: int64(g.Fileno), Block: int64(g.Blkno)},
		Density:        int((g.Dsreg >> 24) & 0xff),
	}
	return st, nil
}

func (d *STDrive) mapErr(what string, err error) error {
	switch {
	case errors.Is(err, unix.ENOMEDIUM):
		return fmt.Errorf("%s: %s: %w", d.path, what, ErrNoMedia)
	case errors.Is(err, unix.EROFS), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s: %s: %w", d.path, what, ErrWriteProtected)
	}
	return fmt.Errorf("%s: %s: %w", d.path, what, err)
}

// Rewind implements Drive.
func (d *STDrive) Rewind(ctx context.Context) error {
	d.ew = false
	if err := d.op(mtREW, 1); err != nil {
		return d.mapErr("rewind", err)
	}
	return nil
}

// WriteRecord implements Drive.
func (d *STDrive) WriteRecord(ctx context.Context, p []byte) (bool, error) {
	if d.readOnly {
		return false, fmt.Errorf("%s: %w", d.path, ErrWriteProtected)
	}
	for attempt := 0; ; attempt++ {
		n, err := d.sys.Write(d.fd, p)
		switch {
		case err == nil && n == len(p):
			if attempt > 0 {
				d.ew = true
			} else if !d.ew {
				// The write that crosses the early warning succeeds;
				// the status says so.
				if g, err := d.get(); err == nil && uint32(g.Gstat)&gmtEOT != 0 {
					d.ew = true
				}
			}
			return d.ew, nil
		case err == nil:
			return false, fmt.Errorf("%s: short write of %d of %d bytes", d.path, n, len(p))
		case errors.Is(err, unix.ENOSPC) && attempt == 0:
			continue // early warning: the retry goes through until the physical end
		case errors.Is(err, unix.ENOSPC):
			return false, fmt.Errorf("%s: %w", d.path, ErrEndOfMedia)
		case errors.Is(err, unix.EINTR):
			attempt--
			continue
		}
		return false, d.mapErr("write", err)
	}
}

// WriteFilemarks implements Drive: MTWEOFI (no flush), or MTWEOF on
// drives that reject it.
func (d *STDrive) WriteFilemarks(ctx context.Context, n int) error {
	if d.readOnly {
		return fmt.Errorf("%s: %w", d.path, ErrWriteProtected)
	}
	if !d.noImmed {
		err := d.op(mtWEOFI, int32(n))
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			if err != nil {
				return d.mapErr("write filemark", err)
			}
			return nil
		}
		d.noImmed = true
	}
	if err := d.op(mtWEOF, int32(n)); err != nil {
		return d.mapErr("write filemark", err)
	}
	return nil
}

// Sync implements Drive: writing zero filemarks flushes the buffer.
func (d *STDrive) Sync(ctx context.Context) error {
	if d.readOnly {
		return nil
	}
	if err := d.op(mtWEOF, 0); err != nil {
		return d.mapErr("flush", err)
	}
	return nil
}

func (d *STDrive) atEOD() bool {
	g, err := d.get()
	return err == nil && uint32(g.Gstat)&gmtEOD != 0
}

// SpaceFilemarks implements Drive.
func (d *STDrive) SpaceFilemarks(ctx context.Context, n int) error {
	if n <= 0 {
		return nil
	}
	if err := d.op(mtFSF, int32(n)); err != nil {
		if errors.Is(err, unix.EIO) && d.atEOD() {
			return fmt.Errorf("%s: %w", d.path, ErrEndOfData)
		}
		return d.mapErr("space filemarks", err)
	}
	return nil
}

// SeekEOD implements Drive.
func (d *STDrive) SeekEOD(ctx context.Context) error {
	if err := d.op(mtEOM, 1); err != nil {
		return d.mapErr("seek to end of data", err)
	}
	return nil
}

// ReadRecord implements Drive. A zero-byte read is a filemark (the st
// driver positions after it) unless the drive reports the end of data.
func (d *STDrive) ReadRecord(ctx context.Context, p []byte) (int, error) {
	for {
		n, err := d.sys.Read(d.fd, p)
		switch {
		case err == nil && n > 0:
			return n, nil
		case err == nil:
			// A filemark sets GMT_EOF; reading at the end of data
			// returns 0 with GMT_EOD and no GMT_EOF.
			if g, gerr := d.get(); gerr == nil && uint32(g.Gstat)&gmtEOF == 0 && uint32(g.Gstat)&gmtEOD != 0 {
				return 0, fmt.Errorf("%s: %w", d.path, ErrEndOfData)
			}
			return 0, ErrFilemark
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOMEM):
			// Variable block mode: the block is larger than p and
			// was skipped; step back over it.
			if berr := d.op(mtBSR, 1); berr != nil {
				return 0, d.mapErr("step back over a large record", berr)
			}
			return 0, fmt.Errorf("%s: %w of %d bytes", d.path, ErrRecordTooLarge, len(p))
		case errors.Is(err, unix.EIO) && d.atEOD():
			return 0, fmt.Errorf("%s: %w", d.path, ErrEndOfData)
		}
		return 0, d.mapErr("read", err)
	}
}

// Position implements Drive.
func (d *STDrive) Position(ctx context.Context) (Position, error) {
	g, err := d.get()
	if err != nil {
		return Position{}, d.mapErr("MTIOCGET", err)
	}
	return Position{FileNo: int64(g.Fileno), Block: int64(g.Blkno)}, nil
}

// Unload implements Drive (MTOFFL: rewind and eject).
func (d *STDrive) Unload(ctx context.Context) error {
	if err := d.op(mtOFFL, 1); err != nil {
		return d.mapErr("unload", err)
	}
	return nil
}

// Close implements Drive.
func (d *STDrive) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := d.sys.Close(d.fd)
	d.fd = -1
	return err
}
