package repo

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/restic/chunker"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
)

// FormatVersion is the repository format version this drpipe writes and the
// newest it reads. Versions are never reused; see docs/REPOSITORY-FORMAT.md.
const FormatVersion = 1

// formatName marks a drpipe repository config.
const formatName = "drpipe-repository"

// ErrUnsupportedVersion is wrapped when an object carries a format version
// this drpipe does not know.
var ErrUnsupportedVersion = errors.New("unsupported format version")

// ErrNotRepository is wrapped when a location holds no drpipe repository.
var ErrNotRepository = errors.New("not a drpipe repository")

// DefaultPackSize is the target size of a pack before erasure coding.
const DefaultPackSize = 16 << 20

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
	// Sealed is the secret part (configSecret JSON), sealed with the
	// master key.
	Sealed []byte `json:"sealed"`

	// ChunkerPolynomial is filled from the sealed part after unlocking.
	ChunkerPolynomial chunker.Pol `json:"-"`
}

type configSecret struct {
	ID                id.ID          `json:"id"`
	Version           int            `json:"version"`
	EC                erasure.Params `json:"ec"`
	PackSize          int            `json:"pack_size"`
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
	if c.Version > FormatVersion || c.Version < 1 {
		return nil, fmt.Errorf("%w: repository format version %d, this drpipe supports 1..%d; use a newer drpipe", ErrUnsupportedVersion, c.Version, FormatVersion)
	}
	if err := c.EC.Validate(); err != nil {
		return nil, fmt.Errorf("config object: %w", err)
	}
	if c.PackSize < 1<<20 || c.PackSize > 1<<30 {
		return nil, fmt.Errorf("config object: pack size %d outside 1 MiB..1 GiB", c.PackSize)
	}
	return &c, nil
}

// openSecret decrypts the sealed part with mk and cross-checks it.
func (c *Config) openSecret(mk *MasterKey) error {
	plain, err := mk.Open(nil, c.Sealed)
	if err != nil {
		return fmt.Errorf("config object: %w", err)
	}
	var s configSecret
	if err := json.Unmarshal(plain, &s); err != nil {
		return fmt.Errorf("config object: sealed part is malformed: %w", err)
	}
	if s.ID != c.ID || s.Version != c.Version || s.EC != c.EC || s.PackSize != c.PackSize {
		return errors.New("config object: public fields do not match the sealed copy (tampered with)")
	}
	if s.ChunkerPolynomial == 0 || !s.ChunkerPolynomial.Irreducible() {
		return errors.New("config object: chunker polynomial is not irreducible")
	}
	c.ChunkerPolynomial = s.ChunkerPolynomial
	return nil
}

func (c *Config) seal(mk *MasterKey) ([]byte, error) {
	s := configSecret{ID: c.ID, Version: c.Version, EC: c.EC, PackSize: c.PackSize, ChunkerPolynomial: c.ChunkerPolynomial}
	plain, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	c.Sealed = mk.Seal(nil, plain)
	return json.MarshalIndent(c, "", "  ")
}
