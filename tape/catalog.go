package tape

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/drpipe/drpipe/internal/atomicfile"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// UUID is a random 16-byte identifier of a volume or media set.
type UUID [16]byte

// NewUUID returns a random UUID.
func NewUUID() (UUID, error) {
	var u UUID
	if _, err := rand.Read(u[:]); err != nil {
		return u, fmt.Errorf("generate uuid: %w", err)
	}
	return u, nil
}

// ParseUUID decodes 32 hex digits.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) != 32 {
		return u, fmt.Errorf("uuid %q: want 32 hex digits", s)
	}
	if _, err := hex.Decode(u[:], []byte(s)); err != nil {
		return u, fmt.Errorf("uuid %q: %w", s, err)
	}
	return u, nil
}

// String is the 32-digit hex form.
func (u UUID) String() string { return hex.EncodeToString(u[:]) }

// CatalogEntry locates one object on one tape.
type CatalogEntry struct {
	Type   tiers.Type `json:"type"`
	Name   string     `json:"name"`
	File   uint32     `json:"file"`   // tape file number
	Offset int64      `json:"offset"` // stream offset of the object header in the file
	Size   int64      `json:"size"`
	SHA256 [32]byte   `json:"-"`
}

// Handle returns the object's handle.
func (e CatalogEntry) Handle() tiers.Handle { return tiers.Handle{Type: e.Type, Name: e.Name} }

// TapeCatalog is the list of whole objects on one tape of a set. It is
// written as the tape's last file and kept byte for byte in the catalog
// database.
type TapeCatalog struct {
	SetID     UUID
	Volume    UUID
	Barcode   string
	Column    int
	ColumnSeq int
	// Last is true on the last tape of its column.
	Last    bool
	Entries []CatalogEntry
}

const (
	catalogMagic   = "DRPC"
	catalogVersion = 1
	maxCatalogLen  = 4 << 30
)

// catalogLimit is the longest catalog file the writer makes: a tape
// takes no more objects once the next one's entry would not fit, and the
// column goes on to another tape, so every catalog it writes can be read
// back (tests lower it).
var catalogLimit int64 = maxCatalogLen

// catalogEntryLen is how many bytes an entry for an object named name
// takes in a catalog file.
func catalogEntryLen(name string) int64 { return 2 + int64(len(name)) + 4 + 8 + 8 + 32 }

// encodedLen is the length of c.Marshal(), without encoding it.
func (c *TapeCatalog) encodedLen() int64 {
	n := int64(8 + 32 + 4 + 1 + len(c.Barcode) + 4 + 32)
	for _, e := range c.Entries {
		n += catalogEntryLen(e.Name)
	}
	return n
}

// readCatalogBytes reads a catalog file's bytes from rd, refusing one
// longer than limit (maxCatalogLen: longer than any catalog drpipe
// writes) before holding more: a damaged tape or another program's file
// must not fill the memory.
func readCatalogBytes(rd io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(rd, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: catalog file longer than %d bytes", ErrCorrupt, limit)
	}
	return b, nil
}

// Marshal encodes the catalog (docs/TAPE-FORMAT.md, "Catalog file").
func (c *TapeCatalog) Marshal() []byte {
	b := make([]byte, 0, 64+len(c.Entries)*120)
	b = append(b, catalogMagic...)
	flags := byte(0)
	if c.Last {
		flags = 1
	}
	b = append(b, catalogVersion, flags, 0, 0)
	b = append(b, c.SetID[:]...)
	b = append(b, c.Volume[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(c.Column))
	b = binary.LittleEndian.AppendUint16(b, uint16(c.ColumnSeq))
	b = append(b, byte(len(c.Barcode)))
	b = append(b, c.Barcode...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.Entries)))
	for _, e := range c.Entries {
		b = append(b, typeCodes[e.Type], byte(len(e.Name)))
		b = append(b, e.Name...)
		b = binary.LittleEndian.AppendUint32(b, e.File)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Offset))
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Size))
		b = append(b, e.SHA256[:]...)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// ParseTapeCatalog decodes and verifies a catalog.
func ParseTapeCatalog(b []byte) (*TapeCatalog, error) {
	if len(b) < 4 || string(b[:4]) != catalogMagic {
		return nil, fmt.Errorf("%w: catalog does not start with %q", ErrCorrupt, catalogMagic)
	}
	if len(b) < 8+32+4+1+4+32 || len(b) > maxCatalogLen {
		return nil, fmt.Errorf("%w: catalog of %d bytes", ErrCorrupt, len(b))
	}
	body, sum := b[:len(b)-32], b[len(b)-32:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return nil, fmt.Errorf("%w: catalog checksum mismatch", ErrCorrupt)
	}
	if body[4] < 1 || body[4] > catalogVersion {
		return nil, fmt.Errorf("%w: catalog version %d", ErrUnsupportedVersion, body[4])
	}
	if body[5] > 1 || body[6] != 0 || body[7] != 0 {
		return nil, fmt.Errorf("%w: catalog flags", ErrCorrupt)
	}
	c := &TapeCatalog{Last: body[5] == 1}
	p := body[8:]
	copy(c.SetID[:], p[:16])
	copy(c.Volume[:], p[16:32])
	c.Column = int(binary.LittleEndian.Uint16(p[32:]))
	c.ColumnSeq = int(binary.LittleEndian.Uint16(p[34:]))
	bl := int(p[36])
	p = p[37:]
	if len(p) < bl+4 {
		return nil, fmt.Errorf("%w: catalog truncated in barcode", ErrCorrupt)
	}
	c.Barcode = string(p[:bl])
	n := binary.LittleEndian.Uint32(p[bl:])
	p = p[bl+4:]
	const minEntry = 2 + 1 + 4 + 8 + 8 + 32
	if uint64(n)*minEntry > uint64(len(p)) {
		return nil, fmt.Errorf("%w: catalog claims %d entries in %d bytes", ErrCorrupt, n, len(p))
	}
	c.Entries = make([]CatalogEntry, 0, n)
	for i := uint32(0); i < n; i++ {
		if len(p) < 2 {
			return nil, fmt.Errorf("%w: catalog entry %d truncated", ErrCorrupt, i)
		}
		t, ok := typeOfCode(p[0])
		nl := int(p[1])
		if !ok || nl == 0 || len(p) < 2+nl+52 {
			return nil, fmt.Errorf("%w: catalog entry %d malformed", ErrCorrupt, i)
		}
		e := CatalogEntry{Type: t, Name: string(p[2 : 2+nl])}
		q := p[2+nl:]
		e.File = binary.LittleEndian.Uint32(q)
		e.Offset = int64(binary.LittleEndian.Uint64(q[4:]))
		e.Size = int64(binary.LittleEndian.Uint64(q[12:]))
		copy(e.SHA256[:], q[20:52])
		if e.Offset < 0 || e.Size < 0 || e.Size > maxObjectSize {
			return nil, fmt.Errorf("%w: catalog entry %d has implausible offset or size", ErrCorrupt, i)
		}
		if t != TypeManifest {
			if err := e.Handle().Validate(); err != nil {
				return nil, fmt.Errorf("%w: catalog entry %d: %v", ErrCorrupt, i, err)
			}
		}
		c.Entries = append(c.Entries, e)
		p = q[52:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes in catalog", ErrCorrupt, len(p))
	}
	return c, nil
}

// Manifest is the set's tape-only object: the snapshots a set holds and
// the packs each needs, so a restore can plan which tapes to mount before
// reading any. It holds object ids and times only (no names, no content).
type Manifest struct {
	Version    int                `json:"version"`
	SetID      string             `json:"set_id"`
	Repository id.ID              `json:"repository"`
	Snapshots  []ManifestSnapshot `json:"snapshots"`
	Packs      []ManifestPack     `json:"packs"`
}

// ManifestSnapshot is one snapshot of a set.
type ManifestSnapshot struct {
	ID   id.ID     `json:"id"`
	Time time.Time `json:"time"`
	// Packs are indexes into Manifest.Packs.
	Packs []int `json:"packs"`
}

// ManifestPack is one pack of the set with its erasure parameters.
type ManifestPack struct {
	ID id.ID `json:"id"`
	K  int   `json:"k"`
	M  int   `json:"m"`
}

// ParseManifest decodes and checks a manifest.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: set manifest: %v", ErrCorrupt, err)
	}
	if m.Version < 1 || m.Version > FormatVersion {
		return nil, fmt.Errorf("%w: set manifest version %d", ErrUnsupportedVersion, m.Version)
	}
	for _, p := range m.Packs {
		if p.K < 1 || p.M < 0 || p.K+p.M > 255 {
			return nil, fmt.Errorf("%w: set manifest: pack %s has erasure %d+%d", ErrCorrupt, p.ID.Short(), p.K, p.M)
		}
	}
	for _, s := range m.Snapshots {
		for _, i := range s.Packs {
			if i < 0 || i >= len(m.Packs) {
				return nil, fmt.Errorf("%w: set manifest: snapshot %s refers to pack %d of %d", ErrCorrupt, s.ID.Short(), i, len(m.Packs))
			}
		}
	}
	return &m, nil
}

// MediaState is where a cartridge is in its life.
type MediaState string

// Media states.
const (
	StateScratch MediaState = "scratch" // labelled, holds no set (or an expired one)
	StateWriting MediaState = "writing" // a set is being written to it
	StateFull    MediaState = "full"    // holds (part of) a set
	StateRetired MediaState = "retired" // WORM tape whose set expired: never written again
)

// Location is where a cartridge physically is, as far as drpipe knows.
type Location string

// Locations.
const (
	LocLibrary Location = "library" // in a slot, drive or mail slot of the library
	LocTransit Location = "transit" // exported to a mail slot, waiting for the courier
	LocOffsite Location = "offsite" // taken out of the library
)

// Media is the catalog's record of one cartridge.
type Media struct {
	Barcode   string     `json:"barcode"`
	UUID      string     `json:"uuid"`
	Pool      string     `json:"pool"`
	WORM      bool       `json:"worm,omitempty"`
	Labeled   time.Time  `json:"labeled"`
	State     MediaState `json:"state"`
	SetID     string     `json:"set_id,omitempty"`
	Column    int        `json:"column"`
	ColumnSeq int        `json:"column_seq"`
	Location  Location   `json:"location"`
	Exported  time.Time  `json:"exported,omitzero"`
}

// SetInfo is the catalog's record of one media set.
type SetInfo struct {
	ID       string    `json:"id"`
	Pool     string    `json:"pool"`
	Created  time.Time `json:"created"`
	Level    Level     `json:"level"`
	Expires  time.Time `json:"expires"`
	Columns  int       `json:"columns"`
	Parity   int       `json:"parity"`
	PerTape  int       `json:"per_tape"`
	Complete bool      `json:"complete"`
	// Aborted, on a set that is not complete, says why its write
	// stopped (an error, or Ctrl-C). Its tapes are reused when the pool
	// has no scratch or expired tape left. An incomplete set without it
	// is being written, or its writer was killed.
	Aborted string `json:"aborted,omitempty"`
	// Writer names the process writing the set (host, boot id, pid),
	// so that a later write can tell that an incomplete set without
	// Aborted has no writer any more (killed, or the machine went
	// down) and treat it as aborted (WriterGone).
	Writer string     `json:"writer,omitempty"`
	Tapes  []SetTape  `json:"tapes"`
	Snaps  []SnapInfo `json:"snapshots"`
}

// SetTape is one tape of a set.
type SetTape struct {
	Barcode   string `json:"barcode"`
	UUID      string `json:"uuid"`
	Column    int    `json:"column"`
	ColumnSeq int    `json:"column_seq"`
	Last      bool   `json:"last"`
	Objects   int    `json:"objects"`
	Bytes     int64  `json:"bytes"`
}

// SnapInfo names a snapshot of a set.
type SnapInfo struct {
	ID   id.ID     `json:"id"`
	Time time.Time `json:"time"`
}

// Expired reports whether the set has expired at now.
func (s *SetInfo) Expired(now time.Time) bool { return !now.Before(s.Expires) }

func (s *SetInfo) sortTapes() {
	sort.Slice(s.Tapes, func(i, j int) bool {
		a, b := s.Tapes[i], s.Tapes[j]
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		return a.ColumnSeq < b.ColumnSeq
	})
}

// Catalog is the catalog database: a directory of small files, each
// replaced atomically (temp file, fsync, rename, fsync of the directory):
//
//	media/<barcode>.json          one Media per cartridge
//	sets/<set id>/set.json        the SetInfo
//	sets/<set id>/manifest.json   the set manifest, as on tape
//	sets/<set id>/<col>-<seq>.cat each tape's catalog, byte for byte as on tape
//
// A Catalog is used by one process at a time (the library lock guards
// it); its methods are not safe for concurrent use without the caller's
// lock.
type Catalog struct {
	dir string
	// Read caches: the process holding the library lock is the only
	// writer, so records read once stay valid until it writes them.
	media    map[string]Media
	allMedia bool
	sets     map[string]SetInfo
}

// OpenCatalog opens (creating if needed) the catalog database in dir.
func OpenCatalog(dir string) (*Catalog, error) {
	for _, d := range []string{dir, filepath.Join(dir, "media"), filepath.Join(dir, "sets")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open tape catalog %s: %w", dir, err)
		}
	}
	return &Catalog{dir: dir, media: map[string]Media{}, sets: map[string]SetInfo{}}, nil
}

// Dir returns the catalog directory.
func (c *Catalog) Dir() string { return c.dir }

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// maxStateFile bounds the JSON records of the catalog database (a set's
// or a cartridge's record, the pool state): far above what drpipe writes.
const maxStateFile = 64 << 20

// readBounded reads the file at path, refusing one longer than limit
// before holding more (readCatalogBytes).
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := readCatalogBytes(f, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

func readJSON(path string, v any) error {
	b, err := readBounded(path, maxStateFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return damagedFile(path, err)
	}
	return nil
}

// damagedFile is the error for a catalog database file that does not
// hold what drpipe writes there. A rebuild rewrites the records of the
// tapes in the library only: the advice says so, or it would be followed
// in vain for a tape outside it.
func damagedFile(path string, err error) error {
	return fmt.Errorf("catalog file %s is damaged: %w (with the tapes it describes in the library, rebuild the catalog with 'drpipe tape catalog rebuild'; a rebuild rewrites only the records of the tapes it reads, so the record of a tape that is not in the library stays damaged: import the tape first, or move the file out of the catalog if the tape is gone)", path, err)
}

func validBarcode(b string) error {
	if b == "" || len(b) > 32 {
		return fmt.Errorf("barcode %q: want 1..32 characters", b)
	}
	for _, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("barcode %q: only A-Z, 0-9, '-' and '_' are allowed", b)
		}
	}
	return nil
}

// Media returns the record of barcode, or (nil, nil) if unknown.
func (c *Catalog) Media(barcode string) (*Media, error) {
	if err := validBarcode(barcode); err != nil {
		return nil, err
	}
	if m, ok := c.media[barcode]; ok {
		return &m, nil
	}
	if c.allMedia {
		return nil, nil
	}
	var m Media
	p := filepath.Join(c.dir, "media", barcode+".json")
	err := readJSON(p, &m)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// The ids are compared with labels and printed shortened: a record
	// that does not hold them as drpipe writes them is damage.
	switch _, uerr := ParseUUID(m.UUID); {
	case m.Barcode != barcode:
		return nil, damagedFile(p, fmt.Errorf("the record is of tape %q", m.Barcode))
	case uerr != nil:
		return nil, damagedFile(p, fmt.Errorf("volume %w", uerr))
	case m.SetID != "":
		if _, err := ParseUUID(m.SetID); err != nil {
			return nil, damagedFile(p, fmt.Errorf("set id: %w", err))
		}
	}
	c.media[barcode] = m
	return &m, nil
}

// PutMedia stores m.
func (c *Catalog) PutMedia(m *Media) error {
	if err := validBarcode(m.Barcode); err != nil {
		return err
	}
	delete(c.media, m.Barcode)
	if err := writeJSON(filepath.Join(c.dir, "media", m.Barcode+".json"), m); err != nil {
		return err
	}
	c.media[m.Barcode] = *m
	return nil
}

// AllMedia returns every cartridge record, by barcode.
func (c *Catalog) AllMedia() ([]*Media, error) {
	if c.allMedia {
		out := make([]*Media, 0, len(c.media))
		for _, m := range c.media {
			m := m
			out = append(out, &m)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Barcode < out[j].Barcode })
		return out, nil
	}
	ents, err := os.ReadDir(filepath.Join(c.dir, "media"))
	if err != nil {
		return nil, fmt.Errorf("read tape catalog: %w", err)
	}
	var out []*Media
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".json") || strings.HasPrefix(n, ".") {
			continue
		}
		m, err := c.Media(strings.TrimSuffix(n, ".json"))
		if err != nil {
			return nil, err
		}
		if m != nil {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Barcode < out[j].Barcode })
	c.allMedia = true
	return out, nil
}

func (c *Catalog) setDir(setID string) string { return filepath.Join(c.dir, "sets", setID) }

// Set returns the record of a set, or (nil, nil) if unknown.
func (c *Catalog) Set(setID string) (*SetInfo, error) {
	if _, err := ParseUUID(setID); err != nil {
		return nil, err
	}
	if s, ok := c.sets[setID]; ok {
		return s.clone(), nil
	}
	var s SetInfo
	p := filepath.Join(c.setDir(setID), "set.json")
	err := readJSON(p, &s)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if s.ID != setID {
		return nil, damagedFile(p, fmt.Errorf("the record is of set %q", s.ID))
	}
	for _, t := range s.Tapes {
		if err := validBarcode(t.Barcode); err != nil {
			return nil, damagedFile(p, err)
		}
		if _, err := ParseUUID(t.UUID); err != nil {
			return nil, damagedFile(p, fmt.Errorf("tape %s: volume %w", t.Barcode, err))
		}
	}
	c.sets[setID] = *s.clone()
	return &s, nil
}

func (s *SetInfo) clone() *SetInfo {
	c := *s
	c.Tapes = append([]SetTape(nil), s.Tapes...)
	c.Snaps = append([]SnapInfo(nil), s.Snaps...)
	return &c
}

// PutSet stores s (tapes sorted by column and sequence).
func (c *Catalog) PutSet(s *SetInfo) error {
	if err := os.MkdirAll(c.setDir(s.ID), 0o755); err != nil {
		return fmt.Errorf("tape catalog: %w", err)
	}
	s.sortTapes()
	delete(c.sets, s.ID)
	if err := writeJSON(filepath.Join(c.setDir(s.ID), "set.json"), s); err != nil {
		return err
	}
	c.sets[s.ID] = *s.clone()
	return nil
}

// Sets returns every set, oldest first.
func (c *Catalog) Sets() ([]*SetInfo, error) {
	ents, err := os.ReadDir(filepath.Join(c.dir, "sets"))
	if err != nil {
		return nil, fmt.Errorf("read tape catalog: %w", err)
	}
	var out []*SetInfo
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := ParseUUID(e.Name()); err != nil {
			continue
		}
		s, err := c.Set(e.Name())
		if err != nil {
			return nil, err
		}
		if s != nil {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// RemoveSet deletes a set's records (when none of its tapes holds it any
// more).
func (c *Catalog) RemoveSet(setID string) error {
	if _, err := ParseUUID(setID); err != nil {
		return err
	}
	delete(c.sets, setID)
	return os.RemoveAll(c.setDir(setID))
}

// PutManifest stores the set manifest bytes as written on tape.
func (c *Catalog) PutManifest(setID string, raw []byte) error {
	if err := os.MkdirAll(c.setDir(setID), 0o755); err != nil {
		return fmt.Errorf("tape catalog: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(c.setDir(setID), "manifest.json"), raw, 0o600)
}

// Manifest returns a set's manifest.
func (c *Catalog) Manifest(setID string) (*Manifest, error) {
	b, err := readBounded(filepath.Join(c.setDir(setID), "manifest.json"), maxCatalogLen)
	if err != nil {
		return nil, fmt.Errorf("tape catalog: manifest of set %s: %w", setID, err)
	}
	return ParseManifest(b)
}

func catName(col, seq int) string { return strconv.Itoa(col) + "-" + strconv.Itoa(seq) + ".cat" }

// PutTapeCatalog stores one tape's catalog.
func (c *Catalog) PutTapeCatalog(setID string, tc *TapeCatalog) error {
	if err := os.MkdirAll(c.setDir(setID), 0o755); err != nil {
		return fmt.Errorf("tape catalog: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(c.setDir(setID), catName(tc.Column, tc.ColumnSeq)), tc.Marshal(), 0o600)
}

// TapeCatalog returns the catalog of tape (col, seq) of a set.
func (c *Catalog) TapeCatalog(setID string, col, seq int) (*TapeCatalog, error) {
	b, err := readBounded(filepath.Join(c.setDir(setID), catName(col, seq)), maxCatalogLen)
	if err != nil {
		return nil, fmt.Errorf("tape catalog of set %s tape %d.%d: %w", setID, col, seq, err)
	}
	return ParseTapeCatalog(b)
}
