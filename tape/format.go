package tape

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// FormatVersion is the on-tape format version this drpipe writes and the
// newest it reads (docs/TAPE-FORMAT.md). Versions are never reused.
const FormatVersion = 1

// formatName marks drpipe labels.
const formatName = "drpipe-tape"

// Record layout (docs/TAPE-FORMAT.md, "Records"): every tape block starts
// with a 24-byte header.
const (
	recordMagic      = "DRPR"
	recordHeaderSize = 24
	recordVersion    = 1
	// MinRecordSize and MaxRecordSize bound the record size (header
	// included) of data files.
	MinRecordSize = 256 << 10
	MaxRecordSize = 1 << 20
	// DefaultRecordSize is the record size used unless configured.
	DefaultRecordSize = MaxRecordSize
	// maxLabelRecord bounds label and set-label records.
	maxLabelRecord = 64 << 10
)

// Kind is the kind of a tape file, carried in every record header.
type Kind uint8

// File kinds. Numbers are written on tape and never reused.
const (
	KindVolumeLabel Kind = 1 // file 0: the volume label
	KindSetLabel    Kind = 2 // file 1: the media-set label
	KindMeta        Kind = 3 // repository metadata objects and the set manifest
	KindData        Kind = 4 // pack shard objects
	KindCatalog     Kind = 5 // the tape's own catalog (last file)
)

func (k Kind) valid() bool { return k >= KindVolumeLabel && k <= KindCatalog }

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindVolumeLabel:
		return "volume-label"
	case KindSetLabel:
		return "set-label"
	case KindMeta:
		return "metadata"
	case KindData:
		return "data"
	case KindCatalog:
		return "catalog"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// RecordHeader is the decoded header of one tape record.
type RecordHeader struct {
	Kind   Kind
	Seq    uint32 // record number inside its file, from 0
	Length uint32 // payload bytes
	CRC    uint32 // CRC-32C of the payload
}

// appendRecord appends the header and payload of one record to dst.
func appendRecord(dst []byte, k Kind, seq uint32, payload []byte) []byte {
	var h [recordHeaderSize]byte
	copy(h[:4], recordMagic)
	h[4] = recordVersion
	h[5] = byte(k)
	binary.LittleEndian.PutUint32(h[8:], seq)
	binary.LittleEndian.PutUint32(h[12:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[16:], crc(payload))
	binary.LittleEndian.PutUint32(h[20:], crc(h[:20]))
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// ParseRecord verifies one tape record (a whole block as read from the
// drive) and returns its header and payload (aliasing b). A block that
// does not start with the record magic wraps ErrForeignTape; a newer
// record version wraps ErrUnsupportedVersion; checksum and length errors
// wrap ErrCorrupt.
func ParseRecord(b []byte) (RecordHeader, []byte, error) {
	if len(b) < recordHeaderSize || string(b[:4]) != recordMagic {
		return RecordHeader{}, nil, fmt.Errorf("%w: a %d-byte block without the drpipe record magic", ErrForeignTape, len(b))
	}
	if crc(b[:20]) != binary.LittleEndian.Uint32(b[20:24]) {
		return RecordHeader{}, nil, fmt.Errorf("%w: record header checksum mismatch", ErrCorrupt)
	}
	if b[4] != recordVersion {
		return RecordHeader{}, nil, fmt.Errorf("%w: record version %d, this drpipe reads %d; use a newer drpipe", ErrUnsupportedVersion, b[4], recordVersion)
	}
	h := RecordHeader{Kind: Kind(b[5]), Seq: binary.LittleEndian.Uint32(b[8:]), Length: binary.LittleEndian.Uint32(b[12:]), CRC: binary.LittleEndian.Uint32(b[16:])}
	if !h.Kind.valid() || b[6] != 0 || b[7] != 0 {
		return RecordHeader{}, nil, fmt.Errorf("%w: record of unknown kind %d or with reserved bits set", ErrCorrupt, b[5])
	}
	if uint64(h.Length) != uint64(len(b)-recordHeaderSize) {
		return RecordHeader{}, nil, fmt.Errorf("%w: record says %d payload bytes, block holds %d", ErrCorrupt, h.Length, len(b)-recordHeaderSize)
	}
	p := b[recordHeaderSize:]
	if crc(p) != h.CRC {
		return RecordHeader{}, nil, fmt.Errorf("%w: record %d payload checksum mismatch", ErrCorrupt, h.Seq)
	}
	return h, p, nil
}

// VolumeLabel is file 0 of every drpipe tape, written by `tape label`.
type VolumeLabel struct {
	Format  string    `json:"format"`  // "drpipe-tape"
	Version int       `json:"version"` // FormatVersion
	Barcode string    `json:"barcode"`
	UUID    string    `json:"uuid"` // random volume id, new at every labelling
	Pool    string    `json:"pool"`
	Labeled time.Time `json:"labeled"`
	WORM    bool      `json:"worm,omitempty"`
}

// SetLabel is file 1 of a tape that belongs to a media set.
type SetLabel struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	SetID   string    `json:"set_id"`
	Pool    string    `json:"pool"`
	Barcode string    `json:"barcode"`
	UUID    string    `json:"uuid"` // the volume label's UUID
	Created time.Time `json:"created"`
	Level   Level     `json:"level"`
	Expires time.Time `json:"expires"`
	// Layout of the set (see Layout).
	Columns int `json:"columns"`
	Parity  int `json:"parity"`
	PerTape int `json:"per_tape"`
	// Column and ColumnSeq place this tape: the ColumnSeq'th tape of
	// column Column, both from 0.
	Column    int `json:"column"`
	ColumnSeq int `json:"column_seq"`
}

// MarshalLabel encodes a volume or set label as one record.
func MarshalLabel(k Kind, v any) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(j)+recordHeaderSize > maxLabelRecord {
		return nil, fmt.Errorf("tape label of %d bytes exceeds %d", len(j), maxLabelRecord)
	}
	return appendRecord(nil, k, 0, j), nil
}

// ParseVolumeLabel decodes file 0's record. A blank or foreign tape, an
// unknown version and a damaged label (one whose uuid is not 32 hex
// digits included) each get their own error.
func ParseVolumeLabel(b []byte) (*VolumeLabel, error) {
	var l VolumeLabel
	if err := parseLabel(b, KindVolumeLabel, &l, &l.Format, &l.Version); err != nil {
		return nil, err
	}
	if l.Barcode == "" || len(l.Barcode) > 32 || l.UUID == "" || l.Pool == "" {
		return nil, fmt.Errorf("%w: volume label lacks barcode, uuid or pool", ErrCorrupt)
	}
	if _, err := ParseUUID(l.UUID); err != nil {
		return nil, fmt.Errorf("%w: volume label: %v", ErrCorrupt, err)
	}
	return &l, nil
}

// ParseSetLabel decodes file 1's record; a set or volume id that is not
// 32 hex digits is damage (ErrCorrupt).
func ParseSetLabel(b []byte) (*SetLabel, error) {
	var l SetLabel
	if err := parseLabel(b, KindSetLabel, &l, &l.Format, &l.Version); err != nil {
		return nil, err
	}
	if l.SetID == "" || l.Columns < 1 || l.Columns > 255 || l.Column < 0 || l.Column >= l.Columns || l.ColumnSeq < 0 || l.Parity < 0 || l.PerTape < 1 {
		return nil, fmt.Errorf("%w: set label has an implausible layout (column %d of %d, parity %d)", ErrCorrupt, l.Column, l.Columns, l.Parity)
	}
	if !l.Level.valid() {
		return nil, fmt.Errorf("%w: set label has unknown level %q", ErrCorrupt, l.Level)
	}
	// Both ids name catalog directories and are compared with the
	// catalog's: anything but 32 hex digits is damage.
	if _, err := ParseUUID(l.SetID); err != nil {
		return nil, fmt.Errorf("%w: set label: set id: %v", ErrCorrupt, err)
	}
	if _, err := ParseUUID(l.UUID); err != nil {
		return nil, fmt.Errorf("%w: set label: volume %v", ErrCorrupt, err)
	}
	return &l, nil
}

func parseLabel(b []byte, k Kind, v any, format *string, version *int) error {
	if len(b) > maxLabelRecord {
		return fmt.Errorf("%w: a %d-byte first block is no drpipe label", ErrForeignTape, len(b))
	}
	h, p, err := ParseRecord(b)
	if err != nil {
		return fmt.Errorf("%s: %w", k, err)
	}
	if h.Kind != k || h.Seq != 0 {
		return fmt.Errorf("%w: expected a %s record, found %s record %d", ErrCorrupt, k, h.Kind, h.Seq)
	}
	// Read format and version first so a newer label with other fields
	// gives a version error, not a decoding error.
	var head struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(p, &head); err != nil {
		return fmt.Errorf("%w: %s is not valid JSON: %v", ErrCorrupt, k, err)
	}
	if head.Format != formatName {
		return fmt.Errorf("%w: %s has format %q", ErrForeignTape, k, head.Format)
	}
	if head.Version < 1 || head.Version > FormatVersion {
		return fmt.Errorf("%w: %s says format version %d, this drpipe reads 1..%d; use a newer drpipe", ErrUnsupportedVersion, k, head.Version, FormatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
	}
	*format, *version = head.Format, head.Version
	return nil
}

// Object type codes on tape (docs/TAPE-FORMAT.md). Never reused.
const (
	codeConfig    = 1
	codeKey       = 2
	codeData      = 3
	codeIndex     = 4
	codeSnapshot  = 5
	codeTombstone = 6
	codeManifest  = 100 // the set manifest (tape-only object)
)

// TypeManifest is the pseudo object type of the set manifest, a tape-only
// object listing the set's snapshots and the packs each needs.
const TypeManifest tiers.Type = "manifest"

var typeCodes = map[tiers.Type]uint8{
	tiers.TypeConfig: codeConfig, tiers.TypeKey: codeKey, tiers.TypeData: codeData, tiers.TypeIndex: codeIndex,
	tiers.TypeSnapshot: codeSnapshot, tiers.TypeTombstone: codeTombstone, TypeManifest: codeManifest,
}

func typeOfCode(c uint8) (tiers.Type, bool) {
	for t, k := range typeCodes {
		if k == c {
			return t, true
		}
	}
	return "", false
}

// Stream entries inside a metadata or data file (docs/TAPE-FORMAT.md,
// "Object files").
const (
	fileHeaderMagic = "DRPF"
	fileHeaderSize  = 4 + 1 + 1 + 2 + 16 + 16 + 4 + 4
	objMagic        = "DRPO"
	objFixed        = 4 + 1 + 1 + 2 + 8 + 4 // + name
	objTrailerMagic = "DRPT"
	objTrailerSize  = 4 + 32
	endMagic        = "DRPE"
	endSize         = 4 + 4 + 8 + 8 + 4
	maxObjectSize   = 1 << 40
)

// FileHeader starts the byte stream of every metadata and data file.
type FileHeader struct {
	Kind   Kind
	SetID  [16]byte
	Volume [16]byte
	FileNo uint32
}

func (h FileHeader) append(dst []byte) []byte {
	var b [fileHeaderSize]byte
	copy(b[:4], fileHeaderMagic)
	b[4] = FormatVersion
	b[5] = byte(h.Kind)
	copy(b[8:24], h.SetID[:])
	copy(b[24:40], h.Volume[:])
	binary.LittleEndian.PutUint32(b[40:], h.FileNo)
	binary.LittleEndian.PutUint32(b[44:], crc(b[:44]))
	return append(dst, b[:]...)
}

// ParseFileHeader decodes the first fileHeaderSize bytes of a file stream.
func ParseFileHeader(b []byte) (FileHeader, error) {
	if len(b) < fileHeaderSize || string(b[:4]) != fileHeaderMagic {
		return FileHeader{}, fmt.Errorf("%w: file does not start with a drpipe file header", ErrCorrupt)
	}
	if crc(b[:44]) != binary.LittleEndian.Uint32(b[44:48]) {
		return FileHeader{}, fmt.Errorf("%w: file header checksum mismatch", ErrCorrupt)
	}
	if b[4] < 1 || b[4] > FormatVersion {
		return FileHeader{}, fmt.Errorf("%w: file header version %d", ErrUnsupportedVersion, b[4])
	}
	h := FileHeader{Kind: Kind(b[5]), FileNo: binary.LittleEndian.Uint32(b[40:])}
	copy(h.SetID[:], b[8:24])
	copy(h.Volume[:], b[24:40])
	if h.Kind != KindMeta && h.Kind != KindData {
		return FileHeader{}, fmt.Errorf("%w: file header of kind %s", ErrCorrupt, h.Kind)
	}
	return h, nil
}

// ObjectHeader precedes every object in a file stream.
type ObjectHeader struct {
	Type tiers.Type
	Name string
	Size int64
}

// encodedLen is the size of the header on tape.
func (o ObjectHeader) encodedLen() int { return objFixed + len(o.Name) }

func (o ObjectHeader) append(dst []byte) ([]byte, error) {
	code, ok := typeCodes[o.Type]
	if !ok {
		return nil, fmt.Errorf("tape: object type %q cannot be written to tape", o.Type)
	}
	if len(o.Name) == 0 || len(o.Name) > 255 || o.Size < 0 || o.Size > maxObjectSize {
		return nil, fmt.Errorf("tape: object %s/%s of %d bytes cannot be written to tape", o.Type, o.Name, o.Size)
	}
	start := len(dst)
	dst = append(dst, objMagic...)
	dst = append(dst, code, byte(len(o.Name)), 0, 0)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(o.Size))
	dst = append(dst, o.Name...)
	c := crc(dst[start:])
	return binary.LittleEndian.AppendUint32(dst, c), nil
}

// parseObjectHeader decodes an object header from the start of b. It
// returns the header and its encoded length; need > 0 asks for more bytes.
func parseObjectHeader(b []byte) (ObjectHeader, int, error) {
	if len(b) < 8 {
		return ObjectHeader{}, 0, errShort
	}
	if string(b[:4]) != objMagic {
		return ObjectHeader{}, 0, fmt.Errorf("%w: expected an object header", ErrCorrupt)
	}
	n := objFixed + int(b[5])
	if len(b) < n {
		return ObjectHeader{}, 0, errShort
	}
	name := string(b[16 : 16+int(b[5])])
	if crc(b[:n-4]) != binary.LittleEndian.Uint32(b[n-4:n]) {
		return ObjectHeader{}, 0, fmt.Errorf("%w: object header checksum mismatch", ErrCorrupt)
	}
	t, ok := typeOfCode(b[4])
	if !ok || b[5] == 0 || b[6] != 0 || b[7] != 0 {
		return ObjectHeader{}, 0, fmt.Errorf("%w: object header with unknown type %d", ErrCorrupt, b[4])
	}
	size := binary.LittleEndian.Uint64(b[8:16])
	if size > maxObjectSize {
		return ObjectHeader{}, 0, fmt.Errorf("%w: object %s of implausible size %d", ErrCorrupt, name, size)
	}
	if t != TypeManifest {
		if err := (tiers.Handle{Type: t, Name: name}).Validate(); err != nil {
			return ObjectHeader{}, 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	} else if name != "manifest" {
		return ObjectHeader{}, 0, fmt.Errorf("%w: manifest object named %q", ErrCorrupt, name)
	}
	return ObjectHeader{Type: t, Name: name, Size: int64(size)}, n, nil
}

var errShort = fmt.Errorf("%w: truncated", ErrCorrupt)

func appendEnd(dst []byte, count, bytes uint64) []byte {
	start := len(dst)
	dst = append(dst, endMagic...)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint64(dst, count)
	dst = binary.LittleEndian.AppendUint64(dst, bytes)
	return binary.LittleEndian.AppendUint32(dst, crc(dst[start:]))
}
