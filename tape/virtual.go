package tape

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/drpipe/drpipe/internal/atomicfile"
)

// The virtual library (docs/TAPE-FORMAT.md, "Virtual library") is one
// directory:
//
//	library.json     generation, capacity, slots, drives, mail slots
//	library.lock     held (flock) by the process using the library
//	<BARCODE>.tape   one file per cartridge, named after its barcode
//	catalog/         the catalog database (by default)
//
// A cartridge file in the directory that no slot, drive or mail slot
// holds is outside the library (on the shelf or offsite); deleting a
// cartridge file loses that tape. Cartridge file layout: a 64-byte header
// (magic "DRPVCART", version, generation, capacity, early-warning size,
// flags write-protect and WORM, CRC-32C) followed by blocks, each an
// 8-byte header (kind 1 = record, 2 = filemark; 3 reserved bytes; payload
// length u32) and the payload. The end of the file is the end of
// recorded data. Capacity counts record payload bytes.

const (
	libStateFile      = "library.json"
	libLockFile       = "library.lock"
	cartSuffix        = ".tape"
	cartMagic         = "DRPVCART"
	cartHeaderSize    = 64
	cartVersion       = 1
	blockHeaderSize   = 8
	blockRecord       = 1
	blockFilemark     = 2
	flagWriteProtect  = 1
	flagWORM          = 2
	libFormatName     = "drpipe-virtual-library"
	maxVirtualRecord  = 16 << 20
	defaultEWFraction = 50 // early warning 2% before the end
)

// VirtualConfig describes a new virtual library.
type VirtualConfig struct {
	Generation Generation
	Slots      int
	Drives     int
	MailSlots  int
	// Cartridges is how many blank cartridges to create in the first
	// slots (default: every slot).
	Cartridges int
	// WORM makes the last WORM of those cartridges write-once.
	WORM int
	// Capacity overrides the generation's native capacity (for tests and
	// demos); EarlyWarning is the size of the early-warning zone before
	// the end (default 2% of the capacity).
	Capacity     int64
	EarlyWarning int64
	// Prefix starts every barcode (default "DRP"); barcodes are the
	// prefix, a number and the generation's media suffix: DRP001L9.
	Prefix string
}

type libState struct {
	Format       string     `json:"format"`
	Version      int        `json:"version"`
	Generation   Generation `json:"generation"`
	Capacity     int64      `json:"capacity"`
	EarlyWarning int64      `json:"early_warning"`
	Slots        []string   `json:"slots"`
	Drives       []string   `json:"drives"`
	MailSlots    []string   `json:"mailslots"`
	// Home remembers the slot a cartridge in a drive came from.
	Home map[string]int `json:"home,omitempty"`
	// HomeMail remembers the mail slot a cartridge in a drive came from
	// (an exported tape waiting for the courier, read meanwhile).
	HomeMail map[string]int `json:"home_mail,omitempty"`
}

// InitVirtual creates a virtual library in dir (which must not hold one)
// with blank cartridges, and returns the barcodes created.
func InitVirtual(dir string, c VirtualConfig) ([]string, error) {
	if _, ok := generations[c.Generation]; !ok {
		return nil, fmt.Errorf("virtual library: unknown generation %d", c.Generation)
	}
	if c.Slots < 1 || c.Slots > 10000 || c.Drives < 1 || c.Drives > 64 || c.MailSlots < 0 || c.MailSlots > 256 {
		return nil, fmt.Errorf("virtual library: want 1..10000 slots, 1..64 drives, 0..256 mail slots (got %d, %d, %d)", c.Slots, c.Drives, c.MailSlots)
	}
	if c.Cartridges == 0 {
		c.Cartridges = c.Slots
	}
	if c.Cartridges < 0 || c.Cartridges > c.Slots || c.WORM < 0 || c.WORM > c.Cartridges {
		return nil, fmt.Errorf("virtual library: %d cartridges (%d WORM) do not fit %d slots", c.Cartridges, c.WORM, c.Slots)
	}
	if c.Capacity == 0 {
		c.Capacity = c.Generation.NativeCapacity()
	}
	if c.EarlyWarning == 0 {
		c.EarlyWarning = c.Capacity / defaultEWFraction
	}
	if c.Capacity < 4096 || c.EarlyWarning < 0 || c.EarlyWarning >= c.Capacity {
		return nil, fmt.Errorf("virtual library: capacity %d with early warning %d is implausible (capacity at least 4 KiB)", c.Capacity, c.EarlyWarning)
	}
	if c.Prefix == "" {
		c.Prefix = "DRP"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create library directory: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, libStateFile)); err == nil {
		return nil, fmt.Errorf("%s already holds a virtual library; refusing to overwrite it", dir)
	}
	st := libState{Format: libFormatName, Version: 1, Generation: c.Generation, Capacity: c.Capacity, EarlyWarning: c.EarlyWarning,
		Slots: make([]string, c.Slots), Drives: make([]string, c.Drives), MailSlots: make([]string, c.MailSlots)}
	var made []string
	for i := 0; i < c.Cartridges; i++ {
		worm := i >= c.Cartridges-c.WORM
		bc := fmt.Sprintf("%s%03d%s", c.Prefix, i+1, c.Generation.MediaSuffix(worm))
		if err := validBarcode(bc); err != nil {
			return nil, err
		}
		if err := CreateCartridge(dir, bc, c.Generation, c.Capacity, c.EarlyWarning, worm); err != nil {
			return nil, err
		}
		st.Slots[i] = bc
		made = append(made, bc)
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(dir, libStateFile), append(b, '\n'), 0o600); err != nil {
		return nil, err
	}
	return made, nil
}

// CreateCartridge makes a blank cartridge file outside the library's
// slots (insert it with VirtualLibrary.Insert).
func CreateCartridge(dir, barcode string, g Generation, capacity, ew int64, worm bool) error {
	if err := validBarcode(barcode); err != nil {
		return err
	}
	p := filepath.Join(dir, barcode+cartSuffix)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("create cartridge %s: %w", barcode, err)
	}
	h := cartHeader{Generation: g, Capacity: capacity, EarlyWarning: ew, WORM: worm}
	_, err = f.Write(h.marshal())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

type cartHeader struct {
	Generation     Generation
	Capacity       int64
	EarlyWarning   int64
	WriteProtected bool
	WORM           bool
}

func (h cartHeader) marshal() []byte {
	b := make([]byte, cartHeaderSize)
	copy(b, cartMagic)
	binary.LittleEndian.PutUint32(b[8:], cartVersion)
	binary.LittleEndian.PutUint32(b[12:], uint32(h.Generation))
	binary.LittleEndian.PutUint64(b[16:], uint64(h.Capacity))
	binary.LittleEndian.PutUint64(b[24:], uint64(h.EarlyWarning))
	var fl uint32
	if h.WriteProtected {
		fl |= flagWriteProtect
	}
	if h.WORM {
		fl |= flagWORM
	}
	binary.LittleEndian.PutUint32(b[32:], fl)
	binary.LittleEndian.PutUint32(b[60:], crc(b[:60]))
	return b
}

func parseCartHeader(b []byte) (cartHeader, error) {
	if len(b) < cartHeaderSize || string(b[:8]) != cartMagic {
		return cartHeader{}, errors.New("not a virtual cartridge file")
	}
	if crc(b[:60]) != binary.LittleEndian.Uint32(b[60:64]) {
		return cartHeader{}, errors.New("cartridge header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != cartVersion {
		return cartHeader{}, fmt.Errorf("cartridge file version %d", v)
	}
	fl := binary.LittleEndian.Uint32(b[32:])
	h := cartHeader{Generation: Generation(binary.LittleEndian.Uint32(b[12:])), Capacity: int64(binary.LittleEndian.Uint64(b[16:])),
		EarlyWarning: int64(binary.LittleEndian.Uint64(b[24:])), WriteProtected: fl&flagWriteProtect != 0, WORM: fl&flagWORM != 0}
	if h.Capacity <= 0 || h.EarlyWarning < 0 || h.EarlyWarning >= h.Capacity {
		return cartHeader{}, errors.New("cartridge header has implausible capacity")
	}
	return h, nil
}

// VirtualLibrary is a file-backed tape library with faithful semantics
// (see the comment at the top of this file). It implements Changer. The
// process that opens it holds an exclusive lock until Close; methods are
// safe for concurrent use (the writer drives several virtual drives at
// once).
type VirtualLibrary struct {
	dir  string
	lock *os.File
	mu   sync.Mutex
	st   libState
	open map[int]*virtualDrive
}

// ErrInLibrary: the cartridge to insert is already in the library.
var ErrInLibrary = errors.New("tape: cartridge is already in the library")

// check reports what in a library state read from disk InitVirtual and
// the library never write: element counts or a capacity InitVirtual
// refuses, a cartridge that is no barcode (its file would lie outside
// the directory) or held twice (two drives would write one file), a
// drive's cartridge said to come from an element that does not exist.
func (st *libState) check() error {
	if _, ok := generations[st.Generation]; !ok {
		return fmt.Errorf("unknown generation %d", st.Generation)
	}
	if len(st.Slots) < 1 || len(st.Slots) > 10000 || len(st.Drives) < 1 || len(st.Drives) > 64 || len(st.MailSlots) > 256 {
		return fmt.Errorf("%d slots, %d drives, %d mail slots (want 1..10000, 1..64, 0..256)", len(st.Slots), len(st.Drives), len(st.MailSlots))
	}
	if st.Capacity < 4096 || st.EarlyWarning < 0 || st.EarlyWarning >= st.Capacity {
		return fmt.Errorf("capacity %d with early warning %d", st.Capacity, st.EarlyWarning)
	}
	held := map[string]bool{}
	for _, lst := range [][]string{st.Slots, st.Drives, st.MailSlots} {
		for _, bc := range lst {
			if bc == "" {
				continue
			}
			if err := validBarcode(bc); err != nil {
				return err
			}
			if held[bc] {
				return fmt.Errorf("tape %s is held by two elements", bc)
			}
			held[bc] = true
		}
	}
	for _, home := range []struct {
		m     map[string]int
		n     int
		where string
	}{{st.Home, len(st.Slots), "slot"}, {st.HomeMail, len(st.MailSlots), "mail slot"}} {
		for bc, i := range home.m {
			if i < 0 || i >= home.n {
				return fmt.Errorf("tape %s came from %s %d, which the library does not have", bc, home.where, i)
			}
		}
	}
	return nil
}

// ErrNotLibrary: the directory holds no virtual library.
var ErrNotLibrary = errors.New("tape: not a virtual tape library")

// OpenVirtual opens the virtual library in dir and locks it. The state
// is read under the lock: read before, it could predate the moves of a
// process that held the lock meanwhile, which saving it would undo.
func OpenVirtual(dir string) (*VirtualLibrary, error) {
	if _, err := os.Stat(filepath.Join(dir, libStateFile)); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s (create one with 'drpipe tape library init --library %s')", ErrNotLibrary, dir, libStateFile, dir)
	}
	lf, err := os.OpenFile(filepath.Join(dir, libLockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock tape library %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("tape library %s is in use by another drpipe process; wait for it to finish", dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, libStateFile))
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("open tape library %s: %w", dir, err)
	}
	var st libState
	if err := json.Unmarshal(b, &st); err != nil || st.Format != libFormatName {
		lf.Close()
		return nil, fmt.Errorf("%w: %s/%s is damaged or foreign", ErrNotLibrary, dir, libStateFile)
	}
	if st.Version != 1 {
		lf.Close()
		return nil, fmt.Errorf("%w: virtual library version %d", ErrUnsupportedVersion, st.Version)
	}
	if err := st.check(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%w: %s/%s is damaged: %v; correct it by hand (it lists the cartridge each slot, drive and mail slot holds)", ErrNotLibrary, dir, libStateFile, err)
	}
	if st.Home == nil {
		st.Home = map[string]int{}
	}
	if st.HomeMail == nil {
		st.HomeMail = map[string]int{}
	}
	return &VirtualLibrary{dir: dir, lock: lf, st: st, open: map[int]*virtualDrive{}}, nil
}

// Dir returns the library directory.
func (l *VirtualLibrary) Dir() string { return l.dir }

// Generation returns the library's LTO generation.
func (l *VirtualLibrary) Generation() Generation { return l.st.Generation }

// Capacity returns the capacity of new cartridges.
func (l *VirtualLibrary) Capacity() (capacity, earlyWarning int64) {
	return l.st.Capacity, l.st.EarlyWarning
}

// Close releases the lock.
func (l *VirtualLibrary) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.open {
		d.closeFile()
	}
	return l.lock.Close()
}

func (l *VirtualLibrary) cartPath(bc string) string { return filepath.Join(l.dir, bc+cartSuffix) }

func (l *VirtualLibrary) save() error {
	b, _ := json.MarshalIndent(l.st, "", "  ")
	return atomicfile.WriteFile(filepath.Join(l.dir, libStateFile), append(b, '\n'), 0o600)
}

func (l *VirtualLibrary) list(k ElementKind) *[]string {
	switch k {
	case ElemSlot:
		return &l.st.Slots
	case ElemDrive:
		return &l.st.Drives
	case ElemMailSlot:
		return &l.st.MailSlots
	}
	return nil
}

// reconcile drops cartridges whose files were removed by the operator
// and records that.
func (l *VirtualLibrary) reconcile() {
	changed := false
	for _, lst := range []*[]string{&l.st.Slots, &l.st.Drives, &l.st.MailSlots} {
		for i, bc := range *lst {
			if bc == "" {
				continue
			}
			if _, err := os.Stat(l.cartPath(bc)); errors.Is(err, os.ErrNotExist) {
				(*lst)[i] = ""
				changed = true
			}
		}
	}
	if changed {
		l.save()
	}
}

// Inventory implements Changer. Cartridges whose files were removed are
// gone from the library.
func (l *VirtualLibrary) Inventory(ctx context.Context) (*Inventory, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reconcile()
	inv := &Inventory{}
	conv := func(k ElementKind, s []string) []ElementStatus {
		out := make([]ElementStatus, len(s))
		for i, bc := range s {
			out[i] = ElementStatus{Element: Element{Kind: k, Index: i}, Full: bc != "", Barcode: bc}
		}
		return out
	}
	inv.Slots = conv(ElemSlot, l.st.Slots)
	inv.Drives = conv(ElemDrive, l.st.Drives)
	inv.MailSlots = conv(ElemMailSlot, l.st.MailSlots)
	for i := range inv.Drives {
		d := &inv.Drives[i]
		if i, ok := l.st.HomeMail[d.Barcode]; ok && d.Full {
			d.Source = &Element{Kind: ElemMailSlot, Index: i}
		} else if i, ok := l.st.Home[d.Barcode]; ok && d.Full {
			d.Source = &Element{Kind: ElemSlot, Index: i}
		}
	}
	return inv, nil
}

// Move implements Changer.
func (l *VirtualLibrary) Move(ctx context.Context, from, to Element) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reconcile()
	fl, tl := l.list(from.Kind), l.list(to.Kind)
	if fl == nil || tl == nil || from.Index < 0 || from.Index >= len(*fl) || to.Index < 0 || to.Index >= len(*tl) {
		return fmt.Errorf("move %s → %s: no such element", from, to)
	}
	bc := (*fl)[from.Index]
	if bc == "" {
		return fmt.Errorf("move %s → %s: %w", from, to, ErrElementEmpty)
	}
	if (*tl)[to.Index] != "" {
		return fmt.Errorf("move %s → %s: %w (holds %s)", from, to, ErrElementFull, (*tl)[to.Index])
	}
	if from.Kind == ElemDrive {
		if d := l.open[from.Index]; d != nil && d.f != nil && !d.unloaded {
			return fmt.Errorf("move %s → %s: the drive has not unloaded tape %s", from, to, bc)
		}
		delete(l.open, from.Index)
		delete(l.st.Home, bc)
		delete(l.st.HomeMail, bc)
	}
	if to.Kind == ElemDrive && from.Kind == ElemSlot {
		l.st.Home[bc] = from.Index
	}
	if to.Kind == ElemDrive && from.Kind == ElemMailSlot {
		l.st.HomeMail[bc] = from.Index
	}
	(*fl)[from.Index] = ""
	(*tl)[to.Index] = bc
	return l.save()
}

// OpenDrive implements Changer. The drive stays valid until the cartridge
// is moved out.
func (l *VirtualLibrary) OpenDrive(ctx context.Context, i int) (Drive, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < 0 || i >= len(l.st.Drives) {
		return nil, fmt.Errorf("virtual library has no drive %d", i)
	}
	if d := l.open[i]; d != nil {
		return d, nil
	}
	d := &virtualDrive{lib: l, idx: i}
	if bc := l.st.Drives[i]; bc != "" {
		if err := d.load(bc); err != nil {
			return nil, err
		}
	}
	l.open[i] = d
	return d, nil
}

// Insert puts a cartridge that is outside the library (its file is in the
// directory but no element holds it) into a free mail slot, as an
// operator does before an import.
func (l *VirtualLibrary) Insert(barcode string) (Element, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reconcile()
	if err := validBarcode(barcode); err != nil {
		return Element{}, err
	}
	if _, err := os.Stat(l.cartPath(barcode)); err != nil {
		return Element{}, fmt.Errorf("insert tape %s: no cartridge file %s", barcode, l.cartPath(barcode))
	}
	for _, lst := range [][]string{l.st.Slots, l.st.Drives, l.st.MailSlots} {
		for _, bc := range lst {
			if bc == barcode {
				return Element{}, fmt.Errorf("insert tape %s: %w", barcode, ErrInLibrary)
			}
		}
	}
	for i, bc := range l.st.MailSlots {
		if bc == "" {
			l.st.MailSlots[i] = barcode
			return Element{Kind: ElemMailSlot, Index: i}, l.save()
		}
	}
	return Element{}, fmt.Errorf("insert tape %s: every mail slot is full; import or take out what is there first", barcode)
}

// TakeMailSlots empties the mail slots (the courier takes the exported
// tapes) and returns the barcodes taken out.
func (l *VirtualLibrary) TakeMailSlots() ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reconcile()
	var out []string
	for i, bc := range l.st.MailSlots {
		if bc != "" {
			out = append(out, bc)
			l.st.MailSlots[i] = ""
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, l.save()
}

// Outside lists cartridge files in the directory that no element holds.
func (l *VirtualLibrary) Outside() ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reconcile()
	in := map[string]bool{}
	for _, lst := range [][]string{l.st.Slots, l.st.Drives, l.st.MailSlots} {
		for _, bc := range lst {
			in[bc] = true
		}
	}
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if bc, ok := strings.CutSuffix(n, cartSuffix); ok && !in[bc] && validBarcode(bc) == nil {
			out = append(out, bc)
		}
	}
	sort.Strings(out)
	return out, nil
}

// SetWriteProtect sets or clears a cartridge's write-protect tab. The
// cartridge must not be in a drive.
func (l *VirtualLibrary) SetWriteProtect(barcode string, on bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, bc := range l.st.Drives {
		if bc == barcode {
			return fmt.Errorf("tape %s is in a drive; unload it before changing its write-protect tab", barcode)
		}
	}
	f, err := os.OpenFile(l.cartPath(barcode), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("tape %s: %w", barcode, err)
	}
	defer f.Close()
	hb := make([]byte, cartHeaderSize)
	if _, err := io.ReadFull(f, hb); err != nil {
		return fmt.Errorf("tape %s: read cartridge header: %w", barcode, err)
	}
	h, err := parseCartHeader(hb)
	if err != nil {
		return fmt.Errorf("tape %s: %w", barcode, err)
	}
	h.WriteProtected = on
	if _, err := f.WriteAt(h.marshal(), 0); err != nil {
		return err
	}
	return f.Sync()
}

// CartridgeInfo describes a cartridge file.
type CartridgeInfo struct {
	Barcode        string     `json:"barcode"`
	Generation     Generation `json:"generation"`
	Capacity       int64      `json:"capacity"`
	Used           int64      `json:"used"`
	WriteProtected bool       `json:"write_protected"`
	WORM           bool       `json:"worm"`
}

// Cartridge reports a cartridge's header and the bytes recorded on it.
func (l *VirtualLibrary) Cartridge(barcode string) (*CartridgeInfo, error) {
	f, err := os.Open(l.cartPath(barcode))
	if err != nil {
		return nil, fmt.Errorf("tape %s: %w", barcode, err)
	}
	defer f.Close()
	hb := make([]byte, cartHeaderSize)
	if _, err := io.ReadFull(f, hb); err != nil {
		return nil, fmt.Errorf("tape %s: read cartridge header: %w", barcode, err)
	}
	h, err := parseCartHeader(hb)
	if err != nil {
		return nil, fmt.Errorf("tape %s: %w", barcode, err)
	}
	used, err := usedBytes(f)
	if err != nil {
		return nil, fmt.Errorf("tape %s: %w", barcode, err)
	}
	return &CartridgeInfo{Barcode: barcode, Generation: h.Generation, Capacity: h.Capacity, Used: used, WriteProtected: h.WriteProtected, WORM: h.WORM}, nil
}

func usedBytes(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	var used int64
	var bh [blockHeaderSize]byte
	for off := int64(cartHeaderSize); off < fi.Size(); {
		if _, err := f.ReadAt(bh[:], off); err != nil {
			return 0, fmt.Errorf("cartridge block at %d: %w", off, err)
		}
		n := int64(binary.LittleEndian.Uint32(bh[4:]))
		if bh[0] == blockRecord {
			used += n
		}
		off += blockHeaderSize + n
	}
	return used, nil
}

// virtualDrive is a drive of a VirtualLibrary operating on a cartridge
// file with tape semantics.
type virtualDrive struct {
	lib      *VirtualLibrary
	idx      int
	f        *os.File
	barcode  string
	hdr      cartHeader
	off      int64 // file offset of the head
	eod      int64 // file size = end of recorded data
	used     int64 // payload bytes before the head
	fileNo   int64
	blk      int64
	ew       bool
	unloaded bool
	trunc    bool // the file must be truncated at off before the next write
	bh       [blockHeaderSize]byte
}

func (d *virtualDrive) load(bc string) error {
	f, err := os.OpenFile(d.lib.cartPath(bc), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("load tape %s into drive %d: %w", bc, d.idx, err)
	}
	hb := make([]byte, cartHeaderSize)
	if _, err := io.ReadFull(f, hb); err != nil {
		f.Close()
		return fmt.Errorf("load tape %s: read cartridge header: %w", bc, err)
	}
	h, err := parseCartHeader(hb)
	if err != nil {
		f.Close()
		return fmt.Errorf("load tape %s: %w", bc, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	d.f, d.barcode, d.hdr, d.eod = f, bc, h, fi.Size()
	d.rewind()
	return nil
}

func (d *virtualDrive) closeFile() {
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
}

func (d *virtualDrive) rewind() {
	d.off, d.used, d.fileNo, d.blk, d.ew, d.trunc = cartHeaderSize, 0, 0, 0, false, false
}

func (d *virtualDrive) Name() string {
	if d.barcode != "" {
		return fmt.Sprintf("virtual drive %d (tape %s)", d.idx, d.barcode)
	}
	return fmt.Sprintf("virtual drive %d", d.idx)
}

func (d *virtualDrive) ready() error {
	if d.f == nil || d.unloaded {
		return fmt.Errorf("%s: %w", d.Name(), ErrNoMedia)
	}
	return nil
}

func (d *virtualDrive) Status(ctx context.Context) (Status, error) {
	if d.f == nil || d.unloaded {
		return Status{}, nil
	}
	return Status{Loaded: true, BOT: d.off == cartHeaderSize, EOD: d.off == d.eod, EarlyWarning: d.ew || d.used > d.hdr.Capacity-d.hdr.EarlyWarning,
		WriteProtected: d.hdr.WriteProtected, WORM: d.hdr.WORM, Position: Position{d.fileNo, d.blk},
		Generation: d.hdr.Generation, Capacity: d.hdr.Capacity}, nil
}

func (d *virtualDrive) Rewind(ctx context.Context) error {
	if err := d.ready(); err != nil {
		return err
	}
	d.rewind()
	return nil
}

func (d *virtualDrive) checkWrite() error {
	if err := d.ready(); err != nil {
		return err
	}
	if d.hdr.WriteProtected {
		return fmt.Errorf("%s: %w", d.Name(), ErrWriteProtected)
	}
	if d.hdr.WORM && d.off != d.eod {
		return fmt.Errorf("%s at %s: %w", d.Name(), Position{d.fileNo, d.blk}, ErrWORM)
	}
	return nil
}

func (d *virtualDrive) writeBlock(kind byte, p []byte) error {
	if d.off < d.eod {
		// Writing in the middle discards everything after the head.
		if err := d.f.Truncate(d.off); err != nil {
			return fmt.Errorf("%s: %w", d.Name(), err)
		}
		d.eod = d.off
	}
	d.bh = [blockHeaderSize]byte{kind}
	binary.LittleEndian.PutUint32(d.bh[4:], uint32(len(p)))
	if _, err := d.f.WriteAt(d.bh[:], d.off); err != nil {
		return fmt.Errorf("%s: %w", d.Name(), err)
	}
	if len(p) > 0 {
		if _, err := d.f.WriteAt(p, d.off+blockHeaderSize); err != nil {
			return fmt.Errorf("%s: %w", d.Name(), err)
		}
	}
	d.off += blockHeaderSize + int64(len(p))
	d.eod = d.off
	return nil
}

func (d *virtualDrive) WriteRecord(ctx context.Context, p []byte) (bool, error) {
	if err := d.checkWrite(); err != nil {
		return false, err
	}
	if len(p) == 0 || len(p) > maxVirtualRecord {
		return false, fmt.Errorf("%s: record of %d bytes: %w", d.Name(), len(p), ErrRecordTooLarge)
	}
	if d.used+int64(len(p)) > d.hdr.Capacity {
		return false, fmt.Errorf("%s at %s: %w", d.Name(), Position{d.fileNo, d.blk}, ErrEndOfMedia)
	}
	if err := d.writeBlock(blockRecord, p); err != nil {
		return false, err
	}
	d.used += int64(len(p))
	d.blk++
	if d.used > d.hdr.Capacity-d.hdr.EarlyWarning {
		d.ew = true
	}
	return d.ew, nil
}

func (d *virtualDrive) WriteFilemarks(ctx context.Context, n int) error {
	if err := d.checkWrite(); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := d.writeBlock(blockFilemark, nil); err != nil {
			return err
		}
		d.fileNo++
		d.blk = 0
	}
	return nil
}

func (d *virtualDrive) Sync(ctx context.Context) error {
	if err := d.ready(); err != nil {
		return err
	}
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("%s: flush: %w", d.Name(), err)
	}
	return nil
}

// readBlockHeader reads the block header at the head.
func (d *virtualDrive) readBlockHeader() (kind byte, n int64, err error) {
	if d.off >= d.eod {
		return 0, 0, fmt.Errorf("%s at %s: %w", d.Name(), Position{d.fileNo, d.blk}, ErrEndOfData)
	}
	if _, err := d.f.ReadAt(d.bh[:], d.off); err != nil {
		return 0, 0, fmt.Errorf("%s: %w: block header: %v", d.Name(), ErrCorrupt, err)
	}
	kind, n = d.bh[0], int64(binary.LittleEndian.Uint32(d.bh[4:]))
	// A filemark holds no bytes and a record at least one (WriteRecord
	// writes no empty record): anything else is damage.
	if (kind != blockRecord && kind != blockFilemark) || d.off+blockHeaderSize+n > d.eod || (kind == blockFilemark) != (n == 0) {
		return 0, 0, fmt.Errorf("%s at %s: %w: unreadable block", d.Name(), Position{d.fileNo, d.blk}, ErrCorrupt)
	}
	return kind, n, nil
}

func (d *virtualDrive) SpaceFilemarks(ctx context.Context, n int) error {
	if err := d.ready(); err != nil {
		return err
	}
	for n > 0 {
		kind, l, err := d.readBlockHeader()
		if err != nil {
			return err
		}
		d.off += blockHeaderSize + l
		if kind == blockFilemark {
			d.fileNo++
			d.blk = 0
			n--
		} else {
			d.used += l
			d.blk++
		}
	}
	return nil
}

func (d *virtualDrive) SeekEOD(ctx context.Context) error {
	if err := d.ready(); err != nil {
		return err
	}
	for d.off < d.eod {
		if err := d.SpaceFilemarks(ctx, 1); err != nil {
			if errors.Is(err, ErrEndOfData) {
				return nil
			}
			return err
		}
	}
	return nil
}

func (d *virtualDrive) ReadRecord(ctx context.Context, p []byte) (int, error) {
	if err := d.ready(); err != nil {
		return 0, err
	}
	kind, n, err := d.readBlockHeader()
	if err != nil {
		return 0, err
	}
	if kind == blockFilemark {
		d.off += blockHeaderSize
		d.fileNo++
		d.blk = 0
		return 0, ErrFilemark
	}
	if n > int64(len(p)) {
		return 0, fmt.Errorf("%s: %d-byte record: %w of %d bytes", d.Name(), n, ErrRecordTooLarge, len(p))
	}
	if _, err := d.f.ReadAt(p[:n], d.off+blockHeaderSize); err != nil {
		return 0, fmt.Errorf("%s: read record: %w", d.Name(), err)
	}
	d.off += blockHeaderSize + n
	d.used += n
	d.blk++
	return int(n), nil
}

func (d *virtualDrive) Position(ctx context.Context) (Position, error) {
	if err := d.ready(); err != nil {
		return Position{}, err
	}
	return Position{d.fileNo, d.blk}, nil
}

func (d *virtualDrive) Unload(ctx context.Context) error {
	if err := d.ready(); err != nil {
		return err
	}
	d.rewind()
	d.unloaded = true
	d.closeFile()
	return nil
}

// Close does not unload: the cartridge stays in the drive.
func (d *virtualDrive) Close() error { return nil }
