package tape

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of drives, changers and the tape format. Implementations
// wrap them with %w so callers use errors.Is.
var (
	// ErrFilemark: ReadRecord met a filemark; the drive is positioned just
	// after it (at the start of the next file).
	ErrFilemark = errors.New("tape: filemark")
	// ErrEndOfData: there is nothing recorded beyond this point (blank
	// tape, or past the last file written).
	ErrEndOfData = errors.New("tape: end of recorded data")
	// ErrEndOfMedia: the physical end of the medium was reached; the
	// record was not written.
	ErrEndOfMedia = errors.New("tape: end of medium")
	// ErrWriteProtected: the cartridge's write-protect tab is set.
	ErrWriteProtected = errors.New("tape: cartridge is write-protected")
	// ErrWORM: a write-once cartridge refuses to overwrite recorded data.
	ErrWORM = errors.New("tape: WORM cartridge cannot overwrite recorded data")
	// ErrNoMedia: no cartridge is loaded in the drive.
	ErrNoMedia = errors.New("tape: no cartridge loaded")
	// ErrRecordTooLarge: the record does not fit the read buffer or
	// exceeds the drive's maximum block size.
	ErrRecordTooLarge = errors.New("tape: record larger than buffer")
	// ErrBlankTape: the tape has no volume label (nothing recorded).
	ErrBlankTape = errors.New("tape: blank tape (no volume label)")
	// ErrForeignTape: the tape holds data not written by drpipe.
	ErrForeignTape = errors.New("tape: foreign tape (not written by drpipe)")
	// ErrUnsupportedVersion: the tape was written in a newer format.
	ErrUnsupportedVersion = errors.New("tape: unsupported tape format version")
	// ErrCorrupt: a label, record or catalog failed its checksum or is
	// malformed.
	ErrCorrupt = errors.New("tape: corrupted data on tape")
	// ErrWrongTape: the loaded tape is not the one asked for.
	ErrWrongTape = errors.New("tape: wrong tape loaded")
	// ErrMissingTapes: a restore needs tapes that are not in the library.
	ErrMissingTapes = errors.New("tape: tapes needed are not available")
)

// Position is where a drive's head is: FileNo filemarks from the beginning
// of the tape, Block records into that file.
type Position struct {
	FileNo int64
	Block  int64
}

// String renders "file F block B".
func (p Position) String() string { return fmt.Sprintf("file %d block %d", p.FileNo, p.Block) }

// Status is a drive's state as the drive reports it.
type Status struct {
	Loaded         bool
	BOT            bool // at the beginning of the tape
	EOD            bool // at the end of recorded data
	EarlyWarning   bool // past the early-warning point near the end of the medium
	WriteProtected bool
	WORM           bool
	Position       Position
	// Generation and Capacity are reported by virtual drives; a real
	// drive reports the density code in Density.
	Generation Generation
	Capacity   int64
	Density    int
}

// Drive is one tape drive, the sequential seam between the tape format and
// the hardware. A Drive is not safe for concurrent use.
//
// Contract (the virtual drive, the in-memory drive of package tapetest and
// the Linux st driver all follow it; tapetest.DriveSuite checks it):
//   - Records are written and read whole: WriteRecord writes p as one
//     tape block; ReadRecord returns one block, or ErrRecordTooLarge if p
//     is too short for it (the drive then stays before the block).
//   - Writing at a position discards everything recorded after it (tape
//     semantics); WORM cartridges refuse that with ErrWORM and only
//     append at the end of data.
//   - WriteRecord reports earlyWarning = true once the record was written
//     past the early-warning point: the caller should finish what it is
//     writing and change tapes. A record that does not fit before the
//     physical end is not written and returns ErrEndOfMedia.
//   - WriteFilemarks does not flush the drive's buffer (it is cheap);
//     Sync flushes everything written so far to the medium. Data is
//     durable only after Sync returns nil: writers end with Sync (Finish)
//     or abandon the file (Abort) and readers treat an unterminated file
//     as incomplete.
//   - ReadRecord returns ErrFilemark when it crosses a filemark (positioned
//     after it) and ErrEndOfData at the end of recorded data.
//   - SpaceFilemarks(n) with n > 0 skips forward over n filemarks; it
//     returns ErrEndOfData if fewer exist.
type Drive interface {
	// Name identifies the drive in messages ("/dev/nst0", "drive 0").
	Name() string
	// Status reports the drive and cartridge state.
	Status(ctx context.Context) (Status, error)
	// Rewind positions the tape at its beginning.
	Rewind(ctx context.Context) error
	// WriteRecord writes p as one record at the current position.
	WriteRecord(ctx context.Context, p []byte) (earlyWarning bool, err error)
	// WriteFilemarks writes n filemarks without flushing.
	WriteFilemarks(ctx context.Context, n int) error
	// Sync flushes the drive's buffer to the medium.
	Sync(ctx context.Context) error
	// SpaceFilemarks moves forward over n filemarks.
	SpaceFilemarks(ctx context.Context, n int) error
	// SeekEOD moves to the end of recorded data (to append).
	SeekEOD(ctx context.Context) error
	// ReadRecord reads the next record into p and returns its length.
	ReadRecord(ctx context.Context, p []byte) (int, error)
	// Position returns the current file and block number.
	Position(ctx context.Context) (Position, error)
	// Unload rewinds and ejects the cartridge (the changer then moves it).
	Unload(ctx context.Context) error
	// Close releases the device.
	Close() error
}

// Generation is an LTO generation.
type Generation int

// The LTO generations drpipe knows. Native capacities are the LTO
// consortium's figures.
const (
	LTO6  Generation = 6
	LTO7  Generation = 7
	LTO8  Generation = 8
	LTO9  Generation = 9
	LTO10 Generation = 10
)

type genInfo struct {
	capacity int64 // native bytes
	rate     int64 // native bytes per second
	data     string
	worm     string
}

var generations = map[Generation]genInfo{
	LTO6:  {2_500_000_000_000, 160_000_000, "L6", "LW"},
	LTO7:  {6_000_000_000_000, 300_000_000, "L7", "LX"},
	LTO8:  {12_000_000_000_000, 360_000_000, "L8", "LY"},
	LTO9:  {18_000_000_000_000, 400_000_000, "L9", "LZ"},
	LTO10: {30_000_000_000_000, 400_000_000, "LA", "LB"},
}

// ParseGeneration parses "LTO-9", "lto9" or "9".
func ParseGeneration(s string) (Generation, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimPrefix(strings.TrimPrefix(t, "LTO"), "-")
	var n int
	if _, err := fmt.Sscanf(t, "%d", &n); err == nil && fmt.Sprint(n) == t {
		if _, ok := generations[Generation(n)]; ok {
			return Generation(n), nil
		}
	}
	return 0, fmt.Errorf("unknown tape generation %q: want one of LTO-6, LTO-7, LTO-8, LTO-9, LTO-10", s)
}

// String renders "LTO-9".
func (g Generation) String() string { return fmt.Sprintf("LTO-%d", int(g)) }

// NativeCapacity is the generation's native (uncompressed) capacity.
func (g Generation) NativeCapacity() int64 { return generations[g].capacity }

// NativeRate is the generation's native transfer rate in bytes per second.
func (g Generation) NativeRate() int64 { return generations[g].rate }

// MediaSuffix is the two-character media identifier ending a barcode
// ("L9" for LTO-9 data cartridges, "LZ" for LTO-9 WORM).
func (g Generation) MediaSuffix(worm bool) string {
	if worm {
		return generations[g].worm
	}
	return generations[g].data
}
