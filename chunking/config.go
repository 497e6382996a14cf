package chunking

import (
	"errors"
	"fmt"

	"github.com/restic/chunker"
)

// Defaults used by DefaultConfig.
const (
	// DefaultMinSize is the smallest chunk CDC produces. Half restic's:
	// with DefaultAverageBits, a small in-place rewrite of a disk image
	// costs about half as many new bytes as with restic's sizes.
	DefaultMinSize = 256 << 10
	// DefaultMaxSize is the largest chunk CDC produces.
	DefaultMaxSize = 4 << 20
	// DefaultAverageBits makes CDC cut with probability 2^-19 per byte
	// after MinSize: chunks average MinSize + 512 KiB = 768 KiB.
	DefaultAverageBits = 19

	// LegacyMinSize, LegacyMaxSize and LegacyAverageBits are restic's
	// sizes (512 KiB to 8 MiB, about 1.5 MiB on average), which
	// repositories whose config names no chunk sizes use.
	LegacyMinSize     = chunker.MinSize
	LegacyMaxSize     = chunker.MaxSize
	LegacyAverageBits = 20
	// MinAverageBits and MaxAverageBits bound Config.AverageBits.
	MinAverageBits, MaxAverageBits = 12, 30
	// DefaultSegmentSize is the distance between fixed segment boundaries.
	DefaultSegmentSize = 32 << 20
	// DefaultZeroBlock is the granularity of zero detection.
	DefaultZeroBlock = 64 << 10

	// MaxSegmentSize bounds Config.SegmentSize (a worker holds one
	// segment-sized buffer).
	MaxSegmentSize = 1 << 30
	// MinZeroBlock bounds Config.ZeroBlock from below.
	MinZeroBlock = 512

	// windowSize is restic's Rabin window; MinSize must not be below it.
	windowSize = 64
)

// Config controls chunking. All backups whose chunks should deduplicate
// against each other must use the same Config; changing any field changes
// chunk boundaries.
type Config struct {
	// Pol is the Rabin polynomial (degree 53, irreducible), normally
	// random per repository and stored with its keys.
	Pol chunker.Pol
	// MinSize and MaxSize bound CDC chunk sizes. Chunks may be shorter
	// than MinSize at the end of a segment, before a zero region and at
	// the end of the input.
	MinSize, MaxSize uint
	// AverageBits sets the cut probability after MinSize to
	// 2^-AverageBits per byte.
	AverageBits int
	// SegmentSize is the distance between fixed segment boundaries; it
	// must be a multiple of ZeroBlock.
	SegmentSize int64
	// ZeroBlock is the size of the file-offset-aligned blocks that are
	// tested for being entirely zero.
	ZeroBlock int
}

// DefaultConfig returns the default configuration for polynomial pol:
// chunks of 256 KiB to 4 MiB, 768 KiB on average, 32 MiB segments and
// 64 KiB zero blocks.
func DefaultConfig(pol chunker.Pol) Config {
	return Config{
		Pol:         pol,
		MinSize:     DefaultMinSize,
		MaxSize:     DefaultMaxSize,
		AverageBits: DefaultAverageBits,
		SegmentSize: DefaultSegmentSize,
		ZeroBlock:   DefaultZeroBlock,
	}
}

// LegacyConfig is DefaultConfig with restic's chunk sizes, for
// repositories created before chunk sizes were recorded in their config.
func LegacyConfig(pol chunker.Pol) Config {
	c := DefaultConfig(pol)
	c.MinSize, c.MaxSize, c.AverageBits = LegacyMinSize, LegacyMaxSize, LegacyAverageBits
	return c
}

// ErrConfig is wrapped by the errors Validate returns.
var ErrConfig = errors.New("chunking: invalid config")

// Validate reports whether c is usable, explaining the first problem found.
func (c Config) Validate() error {
	switch {
	case c.Pol.Deg() != 53:
		return fmt.Errorf("%w: polynomial %v has degree %d, want 53", ErrConfig, c.Pol, c.Pol.Deg())
	case !c.Pol.Irreducible():
		return fmt.Errorf("%w: polynomial %v is reducible", ErrConfig, c.Pol)
	case c.MinSize < windowSize:
		return fmt.Errorf("%w: MinSize %d is below the %d-byte Rabin window", ErrConfig, c.MinSize, windowSize)
	case c.MaxSize < c.MinSize:
		return fmt.Errorf("%w: MaxSize %d is below MinSize %d", ErrConfig, c.MaxSize, c.MinSize)
	case c.AverageBits < MinAverageBits || c.AverageBits > MaxAverageBits:
		return fmt.Errorf("%w: AverageBits %d is outside [%d, %d]", ErrConfig, c.AverageBits, MinAverageBits, MaxAverageBits)
	case c.ZeroBlock < MinZeroBlock:
		return fmt.Errorf("%w: ZeroBlock %d is below %d", ErrConfig, c.ZeroBlock, MinZeroBlock)
	case c.SegmentSize < int64(c.ZeroBlock) || c.SegmentSize > MaxSegmentSize:
		return fmt.Errorf("%w: SegmentSize %d is outside [ZeroBlock=%d, %d]", ErrConfig, c.SegmentSize, c.ZeroBlock, MaxSegmentSize)
	case c.SegmentSize%int64(c.ZeroBlock) != 0:
		return fmt.Errorf("%w: SegmentSize %d is not a multiple of ZeroBlock %d", ErrConfig, c.SegmentSize, c.ZeroBlock)
	}
	return nil
}
