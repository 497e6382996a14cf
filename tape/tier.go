package tape

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/drpipe/drpipe/tiers"
)

// Tier is a tape pool as the last, read-only tier of a restore through
// several tiers (tiers.Fallback): Stat and List answer from the catalog
// database, and Load mounts a tape that holds the object through the
// changer, spaces to the object's file, reads up to its offset (both from
// the tape's catalog) and reads the object. Before an object is served it
// is checked three ways: its on-tape SHA-256 trailer, the SHA-256 the
// catalog recorded, and its name (tiers.ObjectVerifier, as for every
// tier). Verified objects are staged in a local directory until Close, so
// the many ranged reads a restore makes of one shard cost one tape read.
//
// Objects are read in the order they are asked for. Tapes stay mounted,
// one per drive (the least recently used is unloaded when a tape needs a
// drive), reads continue forward while they can and going back rewinds.
// After each object the tier reads ahead: the objects that follow it on
// the tape, up to ReadAhead bytes, are staged too, since a restore asks
// for the shards of the following packs next and a mount costs far more
// than streaming. It is the tier of last resort; to restore a whole
// snapshot from tape alone, Restore (drpipe tape restore) plans the
// fewest tapes and reads them in one pass.
//
// Only complete sets count, newest first; a tape that is not in the
// library (offsite, in transit) is skipped, and an object held only by
// such tapes fails with an error wrapping tiers.ErrNotReady and
// ErrMissingTapes that names them. Writes are refused. A Tier is safe for
// concurrent use; tape access is serialised.
type Tier struct {
	o TierOptions

	mu       sync.Mutex
	opened   bool
	openErr  error
	ch       Changer
	cat      *Catalog
	closeLib func() error
	stage    string
	ownStage bool
	objs     map[tiers.Handle][]tierLoc
	onTape   map[string][]tierLoc // by set id + barcode, in tape order
	staged   map[tiers.Handle]stagedObj
	stagedN  int64 // bytes in staged
	mounts   []*tierMount
	tick     uint64
	use      map[string]*TapeUse
	useOrder []string
	closed   bool
}

// TierOptions configures a Tier.
type TierOptions struct {
	// Name labels the tier in messages (default "tape").
	Name string
	// Pool limits the tier to the sets of one media pool ("" = all).
	Pool string
	// Open opens the library's changer and its catalog on first use; the
	// returned function releases them (at Close).
	Open func(ctx context.Context) (Changer, *Catalog, func() error, error)
	// Catalog, when set, opens the catalog alone: List, Stat and a
	// restore that never reaches tape then neither open nor lock the
	// library, and Open is called on the first read off tape (a failure
	// there is retried on the next read).
	Catalog func(ctx context.Context) (*Catalog, error)
	// StageDir holds the objects read off tape until Close; "" makes a
	// temporary directory, removed at Close.
	StageDir string
	// ReadAhead bounds the bytes staged after each object read off tape
	// (0: DefaultReadAhead; negative: none).
	ReadAhead int64
	// StageLimit bounds the staged bytes: past it, the objects asked for
	// least recently are dropped (and read off tape again if asked for
	// once more). 0: the larger of 4×ReadAhead and 1 GiB.
	StageLimit int64
	// Report, when set, receives one line per tape mounted and, at Close,
	// one per tape that served objects.
	Report func(line string)
}

// DefaultReadAhead is the default of TierOptions.ReadAhead.
const DefaultReadAhead = 256 << 20

// TapeUse is what one tape served through a Tier.
type TapeUse struct {
	Barcode string `json:"barcode"`
	SetID   string `json:"set_id"`
	Mounts  int    `json:"mounts"`
	// Objects and Bytes count what was read off the tape and staged
	// (asked for or read ahead); Served counts the reads (whole or
	// ranged) answered with the tape's objects.
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
	Served  int64 `json:"served"`
}

type stagedObj struct {
	size    int64
	barcode string
	used    uint64 // t.tick when last asked for
}

type tierLoc struct {
	set  *SetInfo
	tape SetTape
	e    CatalogEntry
}

// tierMount is the tape in the drive and where its head is: at the start
// of file `file` (rr nil) or inside it, rr.consumed stream bytes in.
type tierMount struct {
	barcode string
	setID   string
	setUUID UUID
	volUUID UUID
	d       Drive
	di      int
	file    uint32
	rr      *recordReader
	buf     []byte
	used    uint64
}

// ErrReadOnly is returned by a Tier's Put and Remove.
var ErrReadOnly = errors.New("tape: the tape tier is read-only; write sets with 'drpipe tape write' or 'drpipe tier run'")

// NewTier returns a Tier; nothing is opened until it is first used.
func NewTier(o TierOptions) *Tier {
	if o.Name == "" {
		o.Name = "tape"
	}
	if o.ReadAhead == 0 {
		o.ReadAhead = DefaultReadAhead
	}
	if o.StageLimit <= 0 {
		o.StageLimit = max(4*o.ReadAhead, 1<<30)
	}
	return &Tier{o: o, use: map[string]*TapeUse{}, staged: map[tiers.Handle]stagedObj{}}
}

// Location names the tier.
func (t *Tier) Location() string {
	if t.o.Pool != "" {
		return "tape:" + t.o.Name + "/pool " + t.o.Pool
	}
	return "tape:" + t.o.Name
}

func (t *Tier) report(format string, args ...any) {
	if t.o.Report != nil {
		t.o.Report(fmt.Sprintf(format, args...))
	}
}

// init opens the library and indexes the catalog once; t.mu is held.
func (t *Tier) init(ctx context.Context) error {
	if t.closed {
		return errors.New("tape tier used after Close")
	}
	if t.opened {
		return t.openErr
	}
	t.opened = true
	t.openErr = t.open(ctx)
	return t.openErr
}

func (t *Tier) open(ctx context.Context) error {
	if t.o.Open == nil {
		return errors.New("tape tier without a library")
	}
	var ch Changer
	var cat *Catalog
	closeLib := func() error { return nil }
	var err error
	if t.o.Catalog != nil {
		cat, err = t.o.Catalog(ctx)
	} else {
		ch, cat, closeLib, err = t.o.Open(ctx)
	}
	if err != nil {
		return err
	}
	sets, err := cat.Sets()
	if err != nil {
		closeLib()
		return err
	}
	objs := map[tiers.Handle][]tierLoc{}
	onTape := map[string][]tierLoc{}
	for i := len(sets) - 1; i >= 0; i-- { // newest first
		s := sets[i]
		if !s.Complete || (t.o.Pool != "" && s.Pool != t.o.Pool) {
			continue
		}
		for _, st := range s.Tapes {
			tc, err := cat.TapeCatalog(s.ID, st.Column, st.ColumnSeq)
			if err != nil {
				t.report("set %s tape %s: %v (skipped)", s.ID[:8], st.Barcode, err)
				continue
			}
			for _, e := range tc.Entries {
				if e.Type == TypeManifest {
					continue
				}
				h := e.Handle()
				l := tierLoc{set: s, tape: st, e: e}
				objs[h] = append(objs[h], l)
				onTape[s.ID+st.Barcode] = append(onTape[s.ID+st.Barcode], l)
			}
		}
	}
	for _, ls := range onTape {
		sort.Slice(ls, func(i, j int) bool {
			if ls[i].e.File != ls[j].e.File {
				return ls[i].e.File < ls[j].e.File
			}
			return ls[i].e.Offset < ls[j].e.Offset
		})
	}
	stage := t.o.StageDir
	own := false
	if stage == "" {
		if stage, err = os.MkdirTemp("", "drpipe-tape-stage-"); err != nil {
			closeLib()
			return err
		}
		own = true
	} else if err := os.MkdirAll(stage, 0o700); err != nil {
		closeLib()
		return err
	}
	t.ch, t.cat, t.closeLib, t.objs, t.onTape, t.stage, t.ownStage = ch, cat, closeLib, objs, onTape, stage, own
	return nil
}

// Stat answers from the catalog.
func (t *Tier) Stat(ctx context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	if err := h.Validate(); err != nil {
		return tiers.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return tiers.ObjectInfo{}, fmt.Errorf("stat %s on %s: %w", h, t.Location(), err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.init(ctx); err != nil {
		return tiers.ObjectInfo{}, err
	}
	locs := t.objs[h]
	if len(locs) == 0 {
		return tiers.ObjectInfo{}, t.notFound(h)
	}
	return tiers.ObjectInfo{Handle: h, Size: locs[0].e.Size, ModTime: locs[0].set.Created}, nil
}

func (t *Tier) notFound(h tiers.Handle) error {
	if t.o.Pool != "" {
		return fmt.Errorf("%s: %w on the tapes of pool %s", h, tiers.ErrNotFound, t.o.Pool)
	}
	return fmt.Errorf("%s: %w on tape", h, tiers.ErrNotFound)
}

// List lists the objects of type typ the catalog places on tape.
func (t *Tier) List(ctx context.Context, typ tiers.Type, fn func(tiers.ObjectInfo) error) error {
	if !typ.Valid() {
		return fmt.Errorf("%w: unknown object type %q", tiers.ErrInvalidHandle, typ)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s on %s: %w", typ, t.Location(), err)
	}
	t.mu.Lock()
	if err := t.init(ctx); err != nil {
		t.mu.Unlock()
		return err
	}
	var out []tiers.ObjectInfo
	for h, locs := range t.objs {
		if h.Type == typ {
			out = append(out, tiers.ObjectInfo{Handle: h, Size: locs[0].e.Size, ModTime: locs[0].set.Created})
		}
	}
	t.mu.Unlock()
	for _, oi := range out {
		if err := fn(oi); err != nil {
			return err
		}
	}
	return nil
}

// Load reads the object off tape (once; it is staged) and hands fn the
// requested range.
func (t *Tier) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(io.Reader) error) error {
	if err := h.Validate(); err != nil {
		return err
	}
	if offset < 0 || length < 0 {
		return fmt.Errorf("%s: negative offset or length", h)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("load %s from %s: %w", h, t.Location(), err)
	}
	t.mu.Lock()
	if err := t.init(ctx); err != nil {
		t.mu.Unlock()
		return err
	}
	so, ok := t.staged[h]
	if !ok {
		if err := t.fetch(ctx, h); err != nil {
			t.mu.Unlock()
			return err
		}
		so = t.staged[h]
	}
	t.tick++
	so.used = t.tick
	t.staged[h] = so
	// Opened under the lock: eviction may remove the name, not the file.
	f, err := os.Open(t.stagePath(h))
	t.evict(h)
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: staged copy: %w", h, err)
	}
	defer f.Close()
	size := so.size
	if length == 0 {
		length = size - offset
	}
	if offset > size || length < 0 || length > size-offset {
		return fmt.Errorf("%w: %s is %d bytes, asked for %d at %d", tiers.ErrShortRead, h, size, length, offset)
	}
	if err := fn(io.NewSectionReader(f, offset, length)); err != nil {
		return err
	}
	t.mu.Lock()
	t.use[so.barcode].Served++
	t.mu.Unlock()
	return nil
}

// evict drops the least recently asked-for staged objects other than
// keep until the staged bytes fit StageLimit; t.mu is held.
func (t *Tier) evict(keep tiers.Handle) {
	for t.stagedN > t.o.StageLimit {
		var victim tiers.Handle
		var oldest uint64
		found := false
		for h, so := range t.staged {
			if h != keep && (!found || so.used < oldest) {
				victim, oldest, found = h, so.used, true
			}
		}
		if !found {
			return
		}
		os.Remove(t.stagePath(victim))
		t.stagedN -= t.staged[victim].size
		delete(t.staged, victim)
	}
}

func (t *Tier) stagePath(h tiers.Handle) string {
	return filepath.Join(t.stage, string(h.Type)+"-"+h.Name)
}

// openLib opens the library when only the catalog was opened; t.mu is
// held.
func (t *Tier) openLib(ctx context.Context) error {
	if t.ch != nil {
		return nil
	}
	ch, _, closeLib, err := t.o.Open(ctx)
	if err != nil {
		return fmt.Errorf("tape tier %s: open the library: %w", t.o.Name, err)
	}
	t.ch, t.closeLib = ch, closeLib
	return nil
}

// fetch reads h from the first tape that yields it intact, preferring
// the mounted tape, then newer sets; t.mu is held.
func (t *Tier) fetch(ctx context.Context, h tiers.Handle) error {
	if len(t.objs[h]) > 0 {
		if err := t.openLib(ctx); err != nil {
			return err
		}
	}
	locs := append([]tierLoc(nil), t.objs[h]...)
	if len(locs) == 0 {
		return t.notFound(h)
	}
	sort.SliceStable(locs, func(i, j int) bool {
		return t.mounted(locs[i].tape.Barcode) != nil && t.mounted(locs[j].tape.Barcode) == nil
	})
	inv, err := t.ch.Inventory(ctx)
	if err != nil {
		return err
	}
	var errs []error
	var away []string
	for _, l := range locs {
		if _, in := inv.Find(l.tape.Barcode); !in {
			away = append(away, l.tape.Barcode)
			continue
		}
		t.readPassed(ctx, l)
		err := t.readFrom(ctx, l, h)
		if err == nil {
			t.readAhead(ctx, l)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, fmt.Errorf("tape %s: %w", l.tape.Barcode, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("%s: %w: %w: only on tapes not in the library (%s); bring them back with 'drpipe tape import'",
			h, tiers.ErrNotReady, ErrMissingTapes, strings.Join(away, ", "))
	}
	if len(away) > 0 {
		errs = append(errs, fmt.Errorf("%w: also on tapes not in the library: %s", ErrMissingTapes, strings.Join(away, ", ")))
	}
	return fmt.Errorf("%s: no tape could serve it: %w", h, errors.Join(errs...))
}

// readFrom reads h at l into the staging directory.
func (t *Tier) readFrom(ctx context.Context, l tierLoc, h tiers.Handle) error {
	m, err := t.mountFor(ctx, l)
	if err != nil {
		return err
	}
	if err := t.readObject(ctx, m, l, h); err != nil {
		// The head is somewhere unknown: start over on the next read.
		m.rr = nil
		if rerr := m.d.Rewind(context.WithoutCancel(ctx)); rerr != nil {
			t.unmount(ctx, m)
		} else {
			m.file = 0
		}
		return err
	}
	t.tick++
	t.staged[h] = stagedObj{size: l.e.Size, barcode: l.tape.Barcode, used: t.tick}
	t.stagedN += l.e.Size
	u := t.useOf(l)
	u.Objects++
	u.Bytes += l.e.Size
	return nil
}

// readPassed stages the objects the head will stream past on its way to
// l (those between its position, or the start of l's file, and l), if
// they fit in ReadAhead: reading them costs no tape motion.
func (t *Tier) readPassed(ctx context.Context, l tierLoc) {
	m := t.mounted(l.tape.Barcode)
	var from int64
	switch {
	case m == nil || m.rr == nil || m.file != l.e.File:
	case m.rr.consumed <= l.e.Offset:
		from = m.rr.consumed
	}
	ls := t.onTape[l.set.ID+l.tape.Barcode]
	var passed []tierLoc
	var n int64
	for _, x := range ls {
		if x.e.File != l.e.File || x.e.Offset < from || x.e.Offset >= l.e.Offset {
			continue
		}
		if _, ok := t.staged[x.e.Handle()]; !ok {
			passed = append(passed, x)
			n += x.e.Size
		}
	}
	if len(passed) == 0 || n > t.o.ReadAhead {
		return
	}
	for _, x := range passed {
		if err := t.readFrom(ctx, x, x.e.Handle()); err != nil {
			return
		}
	}
}

// readAhead stages the objects that follow l on its tape, up to
// ReadAhead bytes, stopping at the first one already staged or failing.
func (t *Tier) readAhead(ctx context.Context, l tierLoc) {
	ls := t.onTape[l.set.ID+l.tape.Barcode]
	i := sort.Search(len(ls), func(i int) bool {
		return ls[i].e.File > l.e.File || ls[i].e.File == l.e.File && ls[i].e.Offset > l.e.Offset
	})
	budget := t.o.ReadAhead
	for ; i < len(ls) && budget > 0 && ctx.Err() == nil; i++ {
		n := ls[i]
		h := n.e.Handle()
		if _, ok := t.staged[h]; ok {
			return
		}
		if err := t.readFrom(ctx, n, h); err != nil {
			return // whoever asks for it will see the error
		}
		budget -= n.e.Size
	}
}

func (t *Tier) mounted(barcode string) *tierMount {
	for _, m := range t.mounts {
		if m.barcode == barcode {
			return m
		}
	}
	return nil
}

func (t *Tier) useOf(l tierLoc) *TapeUse {
	u := t.use[l.tape.Barcode]
	if u == nil {
		u = &TapeUse{Barcode: l.tape.Barcode, SetID: l.set.ID}
		t.use[l.tape.Barcode] = u
		t.useOrder = append(t.useOrder, l.tape.Barcode)
	}
	return u
}

// mountFor returns the mounted tape of l, mounting it (and checking its
// volume and set labels) if it is not in one of the tier's drives. (A
// mounted tape's files are checked against the set as they are read.)
func (t *Tier) mountFor(ctx context.Context, l tierLoc) (*tierMount, error) {
	t.tick++
	if m := t.mounted(l.tape.Barcode); m != nil {
		m.used = t.tick
		return m, nil
	}
	inv, err := t.ch.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	for len(t.mounts) > 0 && len(t.mounts) >= len(inv.Drives) {
		lru := t.mounts[0]
		for _, m := range t.mounts {
			if m.used < lru.used {
				lru = m
			}
		}
		t.unmount(ctx, lru)
	}
	busy := map[int]bool{}
	for _, m := range t.mounts {
		busy[m.di] = true
	}
	setUUID, err := ParseUUID(l.set.ID)
	if err != nil {
		return nil, err
	}
	volUUID, err := ParseUUID(l.tape.UUID)
	if err != nil {
		return nil, err
	}
	d, di, err := mount(ctx, t.ch, l.tape.Barcode, busy)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*tierMount, error) {
		unmount(context.WithoutCancel(ctx), t.ch, d, di)
		return nil, err
	}
	label, err := VerifyLabel(ctx, d, l.tape.Barcode, nil)
	if err != nil {
		return fail(err)
	}
	if label.UUID != l.tape.UUID {
		return fail(fmt.Errorf("%w: tape %s carries volume %s, set %s was written to volume %s; the tape was relabelled or swapped", ErrWrongTape, l.tape.Barcode, label.UUID[:8], l.set.ID[:8], l.tape.UUID[:8]))
	}
	buf := make([]byte, MaxRecordSize)
	n, err := d.ReadRecord(ctx, buf)
	if err != nil {
		return fail(fmt.Errorf("tape %s: read set label: %w", l.tape.Barcode, err))
	}
	sl, err := ParseSetLabel(buf[:n])
	if err != nil {
		return fail(fmt.Errorf("tape %s: %w", l.tape.Barcode, err))
	}
	if sl.SetID != l.set.ID {
		return fail(fmt.Errorf("%w: tape %s now holds set %s, not set %s (it was overwritten after that set expired)", ErrWrongTape, l.tape.Barcode, sl.SetID[:8], l.set.ID[:8]))
	}
	if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, ErrFilemark) {
		return fail(fmt.Errorf("tape %s: %w: no filemark after the set label", l.tape.Barcode, ErrCorrupt))
	}
	m := &tierMount{barcode: l.tape.Barcode, setID: l.set.ID, setUUID: setUUID, volUUID: volUUID, d: d, di: di, file: 2, buf: buf, used: t.tick}
	t.mounts = append(t.mounts, m)
	t.useOf(l).Mounts++
	t.report("tape %s (set %s, column %d.%d) mounted in drive %d", l.tape.Barcode, l.set.ID[:8], l.tape.Column, l.tape.ColumnSeq, di)
	return m, nil
}

// unmount unloads m's tape back into a slot.
func (t *Tier) unmount(ctx context.Context, m *tierMount) {
	for i, x := range t.mounts {
		if x == m {
			t.mounts = append(t.mounts[:i], t.mounts[i+1:]...)
			break
		}
	}
	if err := unmount(context.WithoutCancel(ctx), t.ch, m.d, m.di); err != nil {
		t.report("unload tape %s: %v", m.barcode, err)
	}
}

// seek positions m at stream offset off of file f, forward when it can.
func (m *tierMount) seek(ctx context.Context, f uint32, off int64) error {
	switch {
	case m.rr != nil && m.file == f && m.rr.consumed <= off:
		m.rr.ctx = ctx
	case m.rr != nil && m.file < f:
		m.rr.ctx = ctx
		if err := m.rr.skipToEnd(); err != nil {
			return fmt.Errorf("skip to the end of file %d: %w", m.file, err)
		}
		m.file++
		m.rr = nil
	case m.rr != nil || m.file > f:
		if err := m.d.Rewind(ctx); err != nil {
			return fmt.Errorf("rewind: %w", err)
		}
		m.file, m.rr = 0, nil
	}
	if m.rr == nil {
		if f > m.file {
			if err := m.d.SpaceFilemarks(ctx, int(f-m.file)); err != nil {
				return fmt.Errorf("space to file %d: %w", f, err)
			}
			m.file = f
		}
		m.rr = newRecordReader(ctx, m.d, m.buf)
		var hb [fileHeaderSize]byte
		if _, err := io.ReadFull(m.rr, hb[:]); err != nil {
			return streamErr(m.rr, err, "file header")
		}
		fh, err := ParseFileHeader(hb[:])
		if err != nil {
			return fmt.Errorf("file %d: %w", f, err)
		}
		if fh.FileNo != f || fh.SetID != m.setUUID || fh.Volume != m.volUUID {
			return fmt.Errorf("%w: file %d carries the header of file %d of set %x on volume %x", ErrCorrupt, f, fh.FileNo, fh.SetID[:4], fh.Volume[:4])
		}
	}
	if skip := off - m.rr.consumed; skip > 0 {
		if _, err := io.CopyN(io.Discard, m.rr, skip); err != nil {
			return streamErr(m.rr, err, fmt.Sprintf("data before offset %d of file %d", off, f))
		}
	} else if skip < 0 {
		return fmt.Errorf("%w: offset %d of file %d is inside the file header", ErrCorrupt, off, f)
	}
	return nil
}

// readObject reads the object at l on the mounted tape into the staging
// directory, checking it against the tape, the catalog and its name.
func (t *Tier) readObject(ctx context.Context, m *tierMount, l tierLoc, h tiers.Handle) error {
	if err := m.seek(ctx, l.e.File, l.e.Offset); err != nil {
		return err
	}
	head := make([]byte, objFixed-4)
	if _, err := io.ReadFull(m.rr, head); err != nil {
		return streamErr(m.rr, err, "object header")
	}
	if string(head[:4]) != objMagic {
		return fmt.Errorf("%w: no object header at offset %d of file %d (catalog and tape disagree)", ErrCorrupt, l.e.Offset, l.e.File)
	}
	rest := make([]byte, int(head[5])+4)
	if _, err := io.ReadFull(m.rr, rest); err != nil {
		return streamErr(m.rr, err, "object header")
	}
	oh, _, err := parseObjectHeader(append(head, rest...))
	if err != nil {
		return fmt.Errorf("file %d offset %d: %w", l.e.File, l.e.Offset, err)
	}
	if oh.handle() != h || oh.Size != l.e.Size {
		return fmt.Errorf("%w: file %d offset %d holds %s (%d bytes), the catalog says %s (%d bytes)", ErrCorrupt, l.e.File, l.e.Offset, oh.handle(), oh.Size, h, l.e.Size)
	}
	v, err := tiers.NewObjectVerifier(h)
	if err != nil {
		return err
	}
	final := t.stagePath(h)
	tmp, err := os.CreateTemp(t.stage, ".read-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	body := &objectBody{r: m.rr, left: oh.Size, h: sha256.New()}
	n, err := io.Copy(tmp, io.TeeReader(body, v))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s at file %d offset %d: %w", h, l.e.File, l.e.Offset, err)
	}
	if n != oh.Size {
		return fmt.Errorf("%w: %s: read %d of %d bytes", ErrCorrupt, h, n, oh.Size)
	}
	if l.e.SHA256 != ([32]byte{}) && !bytes.Equal(body.h.Sum(nil), l.e.SHA256[:]) {
		return fmt.Errorf("%w: %s does not match the SHA-256 in the catalog", ErrCorrupt, h)
	}
	if err := v.Check(n); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), final)
}

// Put is refused: the tier is read-only. The error wraps
// tiers.ErrReadOnly and ErrReadOnly, or tiers.ErrInvalidHandle for a bad
// handle.
func (t *Tier) Put(_ context.Context, h tiers.Handle, _ io.Reader, _ int64) error {
	if err := h.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("put %s to %s: %w: %w", h, t.Location(), tiers.ErrReadOnly, ErrReadOnly)
}

// Remove is refused: the tier is read-only. The error wraps
// tiers.ErrReadOnly and ErrReadOnly, or tiers.ErrInvalidHandle for a bad
// handle.
func (t *Tier) Remove(_ context.Context, h tiers.Handle) error {
	if err := h.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("remove %s from %s: %w: %w", h, t.Location(), tiers.ErrReadOnly, ErrReadOnly)
}

// Usage returns what each tape served, in the order first used.
func (t *Tier) Usage() []TapeUse {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]TapeUse, 0, len(t.useOrder))
	for _, bc := range t.useOrder {
		out = append(out, *t.use[bc])
	}
	return out
}

// Close unloads the mounted tape, reports what each tape served, releases
// the library and removes a temporary staging directory.
func (t *Tier) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if !t.opened || t.openErr != nil {
		return nil
	}
	for len(t.mounts) > 0 {
		t.unmount(context.Background(), t.mounts[0])
	}
	for _, bc := range t.useOrder {
		u := t.use[bc]
		mounts := "1 mount"
		if u.Mounts != 1 {
			mounts = fmt.Sprintf("%d mounts", u.Mounts)
		}
		t.report("tape %s (set %s) served %d objects; %d objects (%.1f MiB) read in %s", u.Barcode, u.SetID[:8], u.Served, u.Objects, float64(u.Bytes)/(1<<20), mounts)
	}
	err := t.closeLib()
	if t.ownStage {
		os.RemoveAll(t.stage)
	} else {
		for h := range t.staged {
			os.Remove(t.stagePath(h))
		}
	}
	t.staged, t.stagedN = map[tiers.Handle]stagedObj{}, 0
	return err
}

var _ tiers.Backend = (*Tier)(nil)
