package repo

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/restic/chunker"

	"github.com/drpipe/drpipe/chunking"
	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
)

// FormatVersion is the repository format version this drpipe writes and the
// newest it reads. Versions are never reused; see docs/REPOSITORY-FORMAT.md.
// Version 2 stores shards of version 2 (BLAKE3 payload hashes); version 3
// also seals every metadata object with its kind as associated data
// (MasterKey.kindAD). Version 1 and 2 repositories are read and written as
// before, so an older drpipe can still use them.
const FormatVersion = 3

// ShardVersion is the erasure shard format version a repository of this
// format version writes.
func (c *Config) ShardVersion() int {
	if c.Version == 1 {
		return 1
	}
	return erasure.Version
}

// formatName marks a drpipe repository config.
const formatName = "drpipe-repository"

// ErrUnsupportedVersion is wrapped when an object carries a format version
// this drpipe does not know.
var ErrUnsupportedVersion = errors.New("unsupported format version")

// ErrNotRepository is wrapped when a location holds no drpipe repository.
var ErrNotRepository = errors.New("not a drpipe repository")

// DefaultPackSize is the target size of a pack before erasure coding.
const DefaultPackSize = 16 << 20

// MinPackSize and MaxPackSize bound the pack size a config may record.
const (
	MinPackSize = 1 << 20
	MaxPackSize = 1 << 30
)

// Config is the repository's configuration, stored as the object
// "config". Fields outside Sealed are readable without the key so that a
// DR site, scrubber or tape reader can identify the repository and its
// erasure parameters; the chunker polynomial is only in the sealed part,
// and the sealed part repeats every public field so tampering is detected.
type Config struct {
	Format   string         `json:"format"`
	Version  int            `json:"version"`
	ID       id.ID          `json:"id"`
	Created  time.Time      `json:"created"`
	EC       erasure.Params `json:"ec"`
	PackSize int            `json:"pack_size"`
	// Chunks holds the content-defined chunking sizes; a config without
	// it (written before they were recorded) uses restic's sizes.
	Chunks *ChunkSizes `json:"chunks,omitempty"`
	// Sealed is the secret part (configSecret JSON), sealed with the
	// master key.
	Sealed []byte `json:"sealed"`

	// ChunkerPolynomial is filled from the sealed part after unlocking.
	ChunkerPolynomial chunker.Pol `json:"-"`
}

// ChunkSizes are a repository's content-defined chunking sizes: chunks
// are cut with probability 2^-AverageBits per byte after Min bytes, and
// at Max bytes at the latest.
type ChunkSizes struct {
	Min         uint `json:"min"`
	Max         uint `json:"max"`
	AverageBits int  `json:"average_bits"`
}

// DefaultChunkSizes are the sizes new repositories record unless init is
// told otherwise: 256 KiB to 4 MiB, 768 KiB on average.
func DefaultChunkSizes() *ChunkSizes {
	return &ChunkSizes{Min: chunking.DefaultMinSize, Max: chunking.DefaultMaxSize, AverageBits: chunking.DefaultAverageBits}
}

// ResticChunkSizes are restic's sizes, which repositories that record none
// use: 512 KiB to 8 MiB, 1.5 MiB on average.
func ResticChunkSizes() *ChunkSizes {
	return &ChunkSizes{Min: chunking.LegacyMinSize, Max: chunking.LegacyMaxSize, AverageBits: chunking.LegacyAverageBits}
}

// Bounds on the chunk sizes a new repository may record: below 64 KiB the
// per-chunk index and pack overhead dominates; above 8 MiB one chunk
// would not fit the backup's small-segment buffers (chunks never cross
// segments, so the limit is also what a segment buffer must hold).
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 8 << 20
)

// Average is the expected chunk size: Min plus the mean distance to a cut.
func (s ChunkSizes) Average() uint { return s.Min + 1<<s.AverageBits }

// String formats the sizes as init's --chunk-sizes takes them.
func (s ChunkSizes) String() string {
	return fmt.Sprintf("%s:%s:%s", sizeString(uint64(s.Min)), sizeString(uint64(s.Average())), sizeString(uint64(s.Max)))
}

// sizeString writes n in the largest binary unit that divides it.
func sizeString(n uint64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%d", n)
}

// ErrChunkSizes is wrapped by the errors ChunkSizes.Validate returns.
var ErrChunkSizes = errors.New("invalid chunk sizes")

// Validate reports whether a new repository may record these sizes: Min
// at least MinChunkSize, Max at most MaxChunkSize, and the average strictly
// between them.
func (s ChunkSizes) Validate() error {
	switch {
	case s.Min < MinChunkSize:
		return fmt.Errorf("%w: minimum %s is below %s", ErrChunkSizes, sizeString(uint64(s.Min)), sizeString(MinChunkSize))
	case s.Max > MaxChunkSize:
		return fmt.Errorf("%w: maximum %s is above %s", ErrChunkSizes, sizeString(uint64(s.Max)), sizeString(MaxChunkSize))
	case s.AverageBits < chunking.MinAverageBits || s.AverageBits > chunking.MaxAverageBits:
		return fmt.Errorf("%w: average minus minimum must be a power of two from %s to %s", ErrChunkSizes, sizeString(1<<chunking.MinAverageBits), sizeString(1<<chunking.MaxAverageBits))
	case s.Average() >= s.Max:
		return fmt.Errorf("%w: average %s is not below the maximum %s", ErrChunkSizes, sizeString(uint64(s.Average())), sizeString(uint64(s.Max)))
	}
	return nil
}

// ChunkConfig returns the chunking configuration for backups into a
// repository with this config (restic's sizes if it records none).
func (c *Config) ChunkConfig() chunking.Config {
	cc := chunking.LegacyConfig(c.ChunkerPolynomial)
	if c.Chunks != nil {
		cc.MinSize, cc.MaxSize, cc.AverageBits = c.Chunks.Min, c.Chunks.Max, c.Chunks.AverageBits
	}
	return cc
}

type configSecret struct {
	ID                id.ID          `json:"id"`
	Version           int            `json:"version"`
	EC                erasure.Params `json:"ec"`
	PackSize          int            `json:"pack_size"`
	Chunks            *ChunkSizes    `json:"chunks,omitempty"`
	ChunkerPolynomial chunker.Pol    `json:"chunker_polynomial"`
}

// parseConfigPublic decodes the public part and checks format and version.
// It needs no key.
func parseConfigPublic(raw []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%w: config object is not valid JSON: %v", ErrNotRepository, err)
	}
	if c.Format != formatName {
		return nil, fmt.Errorf("%w: config object has format %q", ErrNotRepository, c.Format)
	}
	if c.Version < 1 {
		// No drpipe writes such a version: a newer one would not help.
		return nil, fmt.Errorf("config object: format version %d is none any drpipe writes (versions start at 1): the config is damaged", c.Version)
	}
	if c.Version > FormatVersion {
		return nil, fmt.Errorf("%w: repository format version %d, this drpipe supports 1..%d; use a newer drpipe", ErrUnsupportedVersion, c.Version, FormatVersion)
	}
	if err := c.EC.Validate(); err != nil {
		return nil, fmt.Errorf("config object: %w", err)
	}
	if c.PackSize < MinPackSize || c.PackSize > MaxPackSize {
		return nil, fmt.Errorf("config object: pack size %d outside 1 MiB..1 GiB", c.PackSize)
	}
	if c.Chunks != nil {
		cc := chunking.DefaultConfig(chunkingCheckPol)
		cc.MinSize, cc.MaxSize, cc.AverageBits = c.Chunks.Min, c.Chunks.Max, c.Chunks.AverageBits
		if err := cc.Validate(); err != nil {
			return nil, fmt.Errorf("config object: chunk sizes: %w", err)
		}
	}
	return &c, nil
}

// openSecret decrypts the sealed part with mk and cross-checks it.
func (c *Config) openSecret(mk *MasterKey) error {
	mk.setFormat(c.Version)
	plain, err := mk.openAs(kindConfig, nil, c.Sealed)
	if err != nil {
		return fmt.Errorf("config object: %w", err)
	}
	var s configSecret
	if err := json.Unmarshal(plain, &s); err != nil {
		return fmt.Errorf("config object: sealed part is malformed: %w", err)
	}
	if s.ID != c.ID || s.Version != c.Version || s.EC != c.EC || s.PackSize != c.PackSize || !sameChunkSizes(s.Chunks, c.Chunks) {
		return errors.New("config object: public fields do not match the sealed copy (tampered with)")
	}
	if s.ChunkerPolynomial == 0 || !s.ChunkerPolynomial.Irreducible() {
		return errors.New("config object: chunker polynomial is not irreducible")
	}
	c.ChunkerPolynomial = s.ChunkerPolynomial
	return nil
}

func (c *Config) seal(mk *MasterKey) ([]byte, error) {
	s := configSecret{ID: c.ID, Version: c.Version, EC: c.EC, PackSize: c.PackSize, Chunks: c.Chunks, ChunkerPolynomial: c.ChunkerPolynomial}
	plain, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	mk.setFormat(c.Version)
	c.Sealed = mk.sealAs(kindConfig, nil, plain)
	return json.MarshalIndent(c, "", "  ")
}

func sameChunkSizes(a, b *ChunkSizes) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// chunkingCheckPol is an irreducible polynomial used only to validate
// recorded chunk sizes before the secret polynomial is known.
const chunkingCheckPol = chunker.Pol(0x3DA3358B4DC173)
