package tape

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// PlanObject is one repository object to write.
type PlanObject struct {
	Handle tiers.Handle
	Size   int64
}

// PlanPack is one pack whose shards the set carries.
type PlanPack struct {
	ID        id.ID
	K, M      int
	ShardSize int64 // size of each shard object (header included)
}

// WritePlan is what one set will hold: metadata objects (copied to every
// tape), the packs whose shards are spread over the columns, and the
// manifest naming the snapshots.
type WritePlan struct {
	Meta     []PlanObject
	Packs    []PlanPack
	Manifest Manifest
}

// Progress receives the writer's and reader's progress. Implementations
// must be safe for concurrent use.
type Progress interface {
	// Tape is called when a tape is mounted for writing or reading.
	Tape(barcode string, column, seq int)
	// Bytes adds object bytes moved to or from tape.
	Bytes(n int64)
}

// NoProgress discards progress.
type NoProgress struct{}

// Tape implements Progress.
func (NoProgress) Tape(string, int, int) {}

// Bytes implements Progress.
func (NoProgress) Bytes(int64) {}

// WriteOptions tune WriteSet.
type WriteOptions struct {
	Pool   Pool
	Level  Level
	Parity int
	// RecordSize is the tape record size, 256 KiB..1 MiB (default 1 MiB).
	RecordSize int
	// FileSize ends a data file after this many bytes (default 16 GiB).
	FileSize int64
	// BufferSize bounds the read-ahead per column (default 256 MiB).
	BufferSize int64
	Now        func() time.Time
	Progress   Progress
	// SetID is the new set's id (default random).
	SetID UUID
}

// WriteResult reports a written set.
type WriteResult struct {
	Set *SetInfo
	// ObjectBytes counts object bytes written, metadata copies included.
	ObjectBytes int64
	Objects     int64
	Duration    time.Duration
	// Starved is the time drives waited for data after their first
	// record (summed over drives): the read side could not keep up.
	Starved time.Duration
	// Rewritten counts objects cut by the end of a medium and written
	// again whole on the next tape.
	Rewritten int
	// NoCatalog lists tapes whose on-tape catalog did not fit (the
	// database has it; a rebuild scans those tapes).
	NoCatalog []string
}

func (o *WriteOptions) defaults() error {
	if o.RecordSize == 0 {
		o.RecordSize = DefaultRecordSize
	}
	if o.RecordSize < MinRecordSize || o.RecordSize > MaxRecordSize {
		return fmt.Errorf("tape record size %d outside %d..%d", o.RecordSize, MinRecordSize, MaxRecordSize)
	}
	if o.FileSize <= 0 {
		o.FileSize = 16 << 30
	}
	if o.BufferSize <= 0 {
		o.BufferSize = 256 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Progress == nil {
		o.Progress = NoProgress{}
	}
	if o.SetID == (UUID{}) {
		u, err := NewUUID()
		if err != nil {
			return err
		}
		o.SetID = u
	}
	if !o.Level.valid() {
		return fmt.Errorf("tape write: level %q unknown", o.Level)
	}
	if err := o.Pool.Validate(); err != nil {
		return err
	}
	if o.Pool.retention(o.Level) == 0 {
		// Such a set would expire as it is written: the next write
		// could overwrite it.
		return fmt.Errorf("tape write: pool %s keeps no %s sets (%s retention 0), so a %s set would expire the moment it is written; "+
			"choose a level the pool keeps (--level) or give the pool a %s retention (tape.pools.%s.%s)", o.Pool.Name, o.Level, o.Level, o.Level, o.Level, o.Pool.Name, o.Level)
	}
	return nil
}

type setWriter struct {
	cat  *Catalog
	src  tiers.Backend
	plan *WritePlan
	o    WriteOptions
	lay  Layout
	set  *SetInfo
	meta []metaObject

	// mnt serialises the changer between the columns' goroutines and
	// keeps track of the drives they use. Its lock and mu are never held
	// together.
	mnt      *mounter
	mu       sync.Mutex // guards the catalog, set, used, noCat and touched
	used     map[string]bool
	starved  atomic.Int64
	bytes    atomic.Int64
	objects  atomic.Int64
	rewrites atomic.Int64
	noCat    []string
	touched  bool // a tape was marked as written for this set
}

type metaObject struct {
	h    tiers.Handle
	data []byte
}

// WriteSet writes a new media set of pool o.Pool holding plan, spread by
// the layout for o.Parity, using drives of ch in parallel (one column per
// drive). The catalog is updated as tapes complete; on error the set stays
// recorded as incomplete and its tapes as written, so nothing already on
// tape is reused before it expires.
func WriteSet(ctx context.Context, ch Changer, cat *Catalog, src tiers.Backend, plan *WritePlan, o WriteOptions) (*WriteResult, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if len(plan.Packs) == 0 && len(plan.Meta) == 0 {
		return nil, errors.New("tape write: nothing to write")
	}
	k, m := 1, 0
	for i, p := range plan.Packs {
		if i == 0 || p.K+p.M > k+m {
			k, m = p.K, p.M
		}
	}
	if len(plan.Packs) == 0 {
		k, m = 1, o.Parity
	}
	lay, err := PlanLayout(k, m, o.Parity)
	if err != nil {
		return nil, err
	}
	for _, p := range plan.Packs {
		if err := lay.Fits(p.K, p.M); err != nil {
			return nil, fmt.Errorf("tape write: pack %s: %w", p.ID.Short(), err)
		}
	}
	w := &setWriter{cat: cat, src: src, plan: plan, o: o, lay: lay, mnt: newMounter(ch), used: map[string]bool{}}
	start := time.Now()
	now := o.Now()
	w.set = &SetInfo{ID: o.SetID.String(), Pool: o.Pool.Name, Created: now.UTC(), Level: o.Level, Expires: o.Pool.Expires(o.Level, now).UTC(), Writer: thisWriter(),
		Columns: lay.Columns, Parity: lay.Parity, PerTape: lay.PerTape}
	plan.Manifest.Version = FormatVersion
	plan.Manifest.SetID = w.set.ID
	for _, s := range plan.Manifest.Snapshots {
		w.set.Snaps = append(w.set.Snaps, SnapInfo{ID: s.ID, Time: s.Time.UTC()})
	}
	if err := w.loadMeta(ctx); err != nil {
		return nil, err
	}
	if err := w.metaFitsCatalog(); err != nil {
		return nil, err
	}
	if err := cat.PutSet(w.set); err != nil {
		return nil, err
	}
	if err := cat.PutManifest(w.set.ID, w.meta[len(w.meta)-1].data); err != nil {
		return nil, err
	}

	// Columns: the shard objects each carries, in pack order.
	cols := make([][]PlanObject, lay.Columns)
	for _, p := range plan.Packs {
		for i := 0; i < p.K+p.M; i++ {
			c := lay.ColumnOf(p.ID, i)
			cols[c] = append(cols[c], PlanObject{Handle: tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(p.ID, i)}, Size: p.ShardSize})
		}
	}
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	workers := min(len(inv.Drives), lay.Columns)
	if workers < 1 {
		return nil, errors.New("tape write: the library has no drives")
	}
	queue := make(chan int, lay.Columns)
	for c := range cols {
		queue <- c
	}
	close(queue)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range queue {
				if err := wctx.Err(); err != nil {
					// A column left unwritten: the set is not complete
					// (Ctrl-C between two columns of one drive).
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
				if err := w.writeColumn(wctx, c, cols[c]); err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	res := &WriteResult{Set: w.set, ObjectBytes: w.bytes.Load(), Objects: w.objects.Load(), Duration: time.Since(start),
		Starved: time.Duration(w.starved.Load()), Rewritten: int(w.rewrites.Load()), NoCatalog: w.noCat}
	if firstErr != nil {
		if !w.touched {
			// Nothing reached a tape: forget the set.
			cat.RemoveSet(w.set.ID)
		} else {
			// Keep what reached its tapes for a partial restore, but let
			// the pool take them back when it runs out (allocate).
			w.set.Aborted = firstErr.Error()
			if err := cat.PutSet(w.set); err != nil {
				firstErr = fmt.Errorf("%w (and recording the set as aborted failed: %v)", firstErr, err)
			}
		}
		return res, fmt.Errorf("tape write of set %s: %w", w.set.ID[:8], firstErr)
	}
	w.set.Complete = true
	w.set.Writer = "" // only an incomplete set needs it; a complete one is as rebuilt from its tapes
	if err := cat.PutSet(w.set); err != nil {
		return res, err
	}
	return res, nil
}

// loadMeta reads the metadata objects into memory and appends the
// manifest.
func (w *setWriter) loadMeta(ctx context.Context) error {
	for _, o := range w.plan.Meta {
		b, err := tiers.LoadAll(ctx, w.src, o.Handle, 0, 0)
		if err != nil {
			return fmt.Errorf("tape write: read %s from %s: %w", o.Handle, w.src.Location(), err)
		}
		w.meta = append(w.meta, metaObject{h: o.Handle, data: b})
	}
	mb, err := json.Marshal(w.plan.Manifest)
	if err != nil {
		return err
	}
	w.meta = append(w.meta, metaObject{h: tiers.Handle{Type: TypeManifest, Name: "manifest"}, data: mb})
	return nil
}

// metaFitsCatalog makes sure, before any tape is touched, that every
// tape's catalog file can take the set's metadata and one data object
// with the longest barcode a label may have: each tape then takes at
// least one object, and a column never runs out of tapes for want of
// catalog room.
func (w *setWriter) metaFitsCatalog() error {
	tc := TapeCatalog{Barcode: strings.Repeat("X", 255)}
	for _, mo := range w.meta {
		tc.Entries = append(tc.Entries, CatalogEntry{Name: mo.h.Name})
	}
	var longest string
	for _, p := range w.plan.Packs {
		if n := erasure.ShardName(p.ID, p.K+p.M-1); len(n) > len(longest) {
			longest = n
		}
	}
	if n := tc.encodedLen() + catalogEntryLen(longest); n > catalogLimit {
		return fmt.Errorf("tape write: the set's metadata (%d objects) leaves no room in the %d bytes a tape's catalog file may have; nothing was written: write fewer snapshots per set", len(w.meta), catalogLimit)
	}
	return nil
}

// allocate picks the next writable tape of the pool in the library inv
// and marks it as being written. Scratch tapes go first, then those of
// expired sets (the longest expired first), then those of sets whose
// write was aborted (the oldest first). Caller holds w.mu.
func (w *setWriter) allocate(inv *Inventory, col, seq int) (*Media, error) {
	all, err := w.cat.AllMedia()
	if err != nil {
		return nil, err
	}
	now := w.o.Now()
	type cand struct {
		m       *Media
		rank    int       // 0 scratch, 1 expired set, 2 aborted set
		expires time.Time // of the expired set; the aborted set's creation
	}
	var cands []cand
	var scratch, expired, other int
	for _, m := range all {
		if m.Pool != w.o.Pool.Name || w.used[m.Barcode] {
			continue
		}
		at, ok := inv.Find(m.Barcode)
		if !ok || at.Kind == ElemMailSlot {
			continue
		}
		if m.WORM != w.o.Pool.WORM {
			other++
			continue
		}
		switch m.State {
		case StateScratch:
			scratch++
			cands = append(cands, cand{m: m})
		case StateFull, StateWriting:
			if m.WORM || m.SetID == w.set.ID {
				continue
			}
			s, err := w.cat.Set(m.SetID)
			if err != nil {
				return nil, err
			}
			switch {
			case s == nil || s.Expired(now):
				expired++
				exp := time.Time{}
				if s != nil {
					exp = s.Expires
				}
				cands = append(cands, cand{m: m, rank: 1, expires: exp})
			case !s.Complete && (s.Aborted != "" || s.WriterGone()):
				cands = append(cands, cand{m: m, rank: 2, expires: s.Created})
			}
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("pool %s has no writable tape in the library (needed for column %d, tape %d of set %s); "+
			"label blank tapes with 'drpipe tape label --pool %s' or import expired ones with 'drpipe tape import'", w.o.Pool.Name, col, seq, w.set.ID[:8], w.o.Pool.Name)
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		if !a.expires.Equal(b.expires) {
			return a.expires.Before(b.expires)
		}
		return a.m.Barcode < b.m.Barcode
	})
	m := cands[0].m
	w.used[m.Barcode] = true
	return m, nil
}

// releaseOld drops a reused tape from the expired set it held.
func (w *setWriter) releaseOld(m *Media) error {
	if m.SetID == "" || m.SetID == w.set.ID {
		return nil
	}
	old, err := w.cat.Set(m.SetID)
	if err != nil || old == nil {
		return err
	}
	keep := old.Tapes[:0]
	for _, t := range old.Tapes {
		if t.Barcode != m.Barcode {
			keep = append(keep, t)
		}
	}
	old.Tapes = keep
	old.Complete = false
	if len(keep) == 0 {
		return w.cat.RemoveSet(old.ID)
	}
	return w.cat.PutSet(old)
}

// VerifyLabel reads file 0 of the tape in d and checks it is the drpipe
// volume the catalog knows as m. It leaves the drive after file 0.
func VerifyLabel(ctx context.Context, d Drive, barcode string, m *Media) (*VolumeLabel, error) {
	if err := d.Rewind(ctx); err != nil {
		return nil, fmt.Errorf("rewind tape %s: %w", barcode, err)
	}
	buf := make([]byte, maxLabelRecord)
	n, err := d.ReadRecord(ctx, buf)
	switch {
	case errors.Is(err, ErrEndOfData), errors.Is(err, ErrFilemark):
		if m != nil {
			return nil, fmt.Errorf("tape %s: %w, but the catalog says it was labelled for pool %s; refusing to use it: relabel it with 'drpipe tape label --barcode %s --pool %s'", barcode, ErrBlankTape, m.Pool, barcode, m.Pool)
		}
		return nil, fmt.Errorf("tape %s: %w", barcode, ErrBlankTape)
	case errors.Is(err, ErrRecordTooLarge):
		return nil, fmt.Errorf("tape %s: %w: its first block is larger than any drpipe label", barcode, ErrForeignTape)
	case err != nil:
		return nil, fmt.Errorf("read label of tape %s: %w", barcode, err)
	}
	l, err := ParseVolumeLabel(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("tape %s: %w", barcode, err)
	}
	if l.Barcode != barcode {
		return nil, fmt.Errorf("%w: the cartridge with barcode %s carries the label of tape %s (pool %s); check the barcode stickers — nothing was written", ErrWrongTape, barcode, l.Barcode, l.Pool)
	}
	if m != nil && l.UUID != m.UUID {
		return nil, fmt.Errorf("%w: tape %s carries volume %s, the catalog knows volume %s under that barcode; it was relabelled elsewhere or the catalog is stale (rebuild it with 'drpipe tape catalog rebuild') — nothing was written", ErrWrongTape, barcode, l.UUID[:8], m.UUID[:8])
	}
	if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, ErrFilemark) {
		return nil, fmt.Errorf("tape %s: %w: no filemark after the volume label (%v)", barcode, ErrCorrupt, err)
	}
	return l, nil
}

// writeColumn writes the objects of one column onto as many tapes as
// they need.
func (w *setWriter) writeColumn(ctx context.Context, col int, objs []PlanObject) error {
	next := 0
	for seq := 0; ; seq++ {
		n, last, err := w.writeTape(ctx, col, seq, objs, next)
		if err != nil {
			return err
		}
		if last {
			return nil
		}
		if n == next && next < len(objs) {
			return fmt.Errorf("column %d: tape %d took no object: the cartridges are too small for a %d-byte object", col, seq, objs[next].Size)
		}
		next = n
	}
}

// writeTape writes one tape of a column, starting at object start, and
// returns the index of the first object not on it and whether the tape
// ends the column: it holds the column's last object and a catalog file
// that says so. A rebuild learns that a column is whole only from that
// catalog file, so when the end of the medium cuts the catalog file of
// the tape with the last object, the column goes on to one more tape
// that holds no objects, only the set's metadata and a catalog file.
func (w *setWriter) writeTape(ctx context.Context, col, seq int, objs []PlanObject, start int) (int, bool, error) {
	// The inventory may be stale by the time the tape is chosen, but only
	// by the moves of other columns' tapes, which are in w.used, and by
	// idle cartridges going from drives to slots: it still tells which
	// tapes are in the library and out of the mail slots.
	inv, err := w.mnt.inventory(ctx)
	if err != nil {
		return start, false, err
	}
	w.mu.Lock()
	m, err := w.allocate(inv, col, seq)
	w.mu.Unlock()
	if err != nil {
		return start, false, err
	}
	// Mounting and unmounting hold the changer lock only for the
	// changer's moves: one column's tape rewinding and unloading does not
	// hold up the mounts of the others.
	d, di, err := w.mnt.mount(ctx, m.Barcode)
	if err != nil {
		return start, false, err
	}
	// An unmount error is not the tape's: what it holds is in the
	// catalog, and a drive left loaded is unloaded by the next mount that
	// needs it.
	defer w.mnt.unmount(context.WithoutCancel(ctx), d, di)
	label, err := VerifyLabel(ctx, d, m.Barcode, m)
	if err != nil {
		return start, false, err
	}
	if st, err := d.Status(ctx); err != nil {
		return start, false, err
	} else if st.WriteProtected {
		return start, false, fmt.Errorf("tape %s: %w: slide the tab back or take another tape; nothing was written", m.Barcode, ErrWriteProtected)
	}
	vol, err := ParseUUID(label.UUID)
	if err != nil {
		return start, false, fmt.Errorf("tape %s: %w: volume uuid: %v", m.Barcode, ErrCorrupt, err)
	}
	w.o.Progress.Tape(m.Barcode, col, seq)

	// From here on the tape is being overwritten: record that first.
	w.mu.Lock()
	err = w.releaseOld(m)
	if err == nil {
		m.State, m.SetID, m.Column, m.ColumnSeq = StateWriting, w.set.ID, col, seq
		w.touched = true
		err = w.cat.PutMedia(m)
	}
	w.mu.Unlock()
	if err != nil {
		return start, false, err
	}

	sl := SetLabel{Format: formatName, Version: FormatVersion, SetID: w.set.ID, Pool: w.set.Pool, Barcode: m.Barcode, UUID: label.UUID,
		Created: w.set.Created, Level: w.set.Level, Expires: w.set.Expires, Columns: w.lay.Columns, Parity: w.lay.Parity, PerTape: w.lay.PerTape,
		Column: col, ColumnSeq: seq}
	rec, err := MarshalLabel(KindSetLabel, sl)
	if err != nil {
		return start, false, err
	}
	if _, err := d.WriteRecord(ctx, rec); err != nil {
		return start, false, fmt.Errorf("write set label on tape %s: %w", m.Barcode, err)
	}
	if err := d.WriteFilemarks(ctx, 1); err != nil {
		return start, false, fmt.Errorf("write set label on tape %s: %w", m.Barcode, err)
	}
	setID := o2u(w.set.ID)
	tc := &TapeCatalog{SetID: setID, Volume: vol, Barcode: m.Barcode, Column: col, ColumnSeq: seq}
	fileNo := uint32(2)

	// The metadata file.
	fw := newFileWriter(ctx, d, FileHeader{Kind: KindMeta, SetID: setID, Volume: vol, FileNo: fileNo}, w.o.RecordSize)
	for _, mo := range w.meta {
		off, err := fw.BeginObject(ObjectHeader{Type: mo.h.Type, Name: mo.h.Name, Size: int64(len(mo.data))})
		if err == nil {
			_, err = fw.Write(mo.data)
		}
		if err != nil {
			return start, false, fmt.Errorf("write metadata to tape %s: %w", m.Barcode, err)
		}
		tc.Entries = append(tc.Entries, CatalogEntry{Type: mo.h.Type, Name: mo.h.Name, File: fileNo, Offset: off, Size: int64(len(mo.data)), SHA256: sha256.Sum256(mo.data)})
		w.bytes.Add(int64(len(mo.data)))
		w.objects.Add(1)
	}
	if err := fw.Finish(); err != nil {
		return start, false, fmt.Errorf("write metadata to tape %s (the set's metadata must fit on every tape): %w", m.Barcode, err)
	}
	fileNo++

	next, err := w.writeData(ctx, d, m.Barcode, tc, &fileNo, objs, start)
	if err != nil {
		return start, false, err
	}
	tc.Last = next == len(objs)
	// The tape's catalog as its last file. At the physical end it may not
	// fit: a rebuild then scans the data files, which is slower but finds
	// the same objects. It cannot find that the column ends here, though,
	// so a column whose last catalog file was cut goes on to another tape.
	if err := writeCatalogFile(ctx, d, tc, w.o.RecordSize); err != nil {
		if !errors.Is(err, ErrEndOfMedia) {
			return start, false, fmt.Errorf("write catalog to tape %s: %w", m.Barcode, err)
		}
		if tc.Last && start == len(objs) {
			return start, false, fmt.Errorf("column %d: tape %s: %w before the end of its catalog file, which holds only the set's metadata: the cartridges are too small for this set", col, m.Barcode, err)
		}
		tc.Last = false
		w.mu.Lock()
		w.noCat = append(w.noCat, m.Barcode)
		w.mu.Unlock()
	}
	var objects int
	var bytes int64
	for _, e := range tc.Entries {
		objects++
		bytes += e.Size
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.cat.PutTapeCatalog(w.set.ID, tc); err != nil {
		return start, false, err
	}
	m.State = StateFull
	if err := w.cat.PutMedia(m); err != nil {
		return start, false, err
	}
	w.set.Tapes = append(w.set.Tapes, SetTape{Barcode: m.Barcode, UUID: label.UUID, Column: col, ColumnSeq: seq, Last: tc.Last, Objects: objects, Bytes: bytes})
	if err := w.cat.PutSet(w.set); err != nil {
		return start, false, err
	}
	return next, tc.Last, nil
}

func o2u(s string) UUID { u, _ := ParseUUID(s); return u }

// chunk is one piece of an object in the read-ahead buffer.
type chunk struct {
	obj  int
	buf  []byte
	n    int
	last bool
	err  error
}

// producer reads objects[start:] from the source into the bounded buffer.
type producer struct {
	out    chan chunk
	free   chan []byte
	cancel context.CancelFunc
	done   chan struct{}
}

const chunkSize = 1 << 20

// prefetcher is a source that can start reading an object before it is
// loaded (tiers.Local: a page-cache read-ahead hint).
type prefetcher interface {
	Prefetch(h tiers.Handle)
}

// prefetchWindow is how far ahead of the object being read the producer
// asks the source to read: with one producer per drive on one disk, a
// cold read of each object otherwise stalls its drive.
const prefetchWindow = 64 << 20

// startPrefetch hints objs[start:] to the source, staying at most
// prefetchWindow bytes ahead of the object the producer is reading (sent
// on at); it returns nil if the source takes no hints.
func (w *setWriter) startPrefetch(ctx context.Context, objs []PlanObject, start int) chan<- int {
	pf, ok := w.src.(prefetcher)
	if !ok {
		return nil
	}
	at := make(chan int, 1)
	go func() {
		next, cur := start, start
		var ahead int64 // bytes hinted beyond cur
		for {
			for next < len(objs) && (next <= cur || ahead < prefetchWindow) {
				pf.Prefetch(objs[next].Handle)
				if next > cur {
					ahead += objs[next].Size
				}
				next++
			}
			select {
			case i, ok := <-at:
				if !ok {
					return
				}
				// ahead counts the hinted objects after cur.
				for cur < i {
					cur++
					if cur < next {
						ahead -= objs[cur].Size
					}
				}
				if next < cur {
					next = cur // the producer overtook the hints
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return at
}

func (w *setWriter) startProducer(ctx context.Context, objs []PlanObject, start int, free chan []byte) *producer {
	pctx, cancel := context.WithCancel(ctx)
	p := &producer{out: make(chan chunk, cap(free)), free: free, cancel: cancel, done: make(chan struct{})}
	at := w.startPrefetch(pctx, objs, start)
	go func() {
		defer close(p.done)
		defer close(p.out)
		if at != nil {
			defer close(at)
		}
		for i := start; i < len(objs); i++ {
			if at != nil {
				select {
				case at <- i:
				default: // the hinter is busy; it catches up on the next object
				}
			}
			var sent int64
			err := w.src.Load(pctx, objs[i].Handle, 0, 0, func(rd io.Reader) error {
				var pos int64
				for {
					var buf []byte
					select {
					case buf = <-free:
					case <-pctx.Done():
						return pctx.Err()
					}
					n, err := io.ReadFull(rd, buf)
					if n > 0 && pos+int64(n) > sent {
						// A retried load starts over: skip what was sent.
						skip := max(sent-pos, 0)
						pos += int64(n)
						copy(buf, buf[skip:n])
						select {
						case p.out <- chunk{obj: i, buf: buf, n: n - int(skip)}:
							sent = pos
						case <-pctx.Done():
							return pctx.Err()
						}
					} else {
						pos += int64(n)
						free <- buf
					}
					if err == io.EOF || err == io.ErrUnexpectedEOF {
						return nil
					}
					if err != nil {
						return err
					}
				}
			})
			if err == nil && sent != objs[i].Size {
				err = fmt.Errorf("%s is %d bytes, the plan says %d: the repository changed under the tape write", objs[i].Handle, sent, objs[i].Size)
			}
			c := chunk{obj: i, last: true, err: err}
			if err != nil {
				c.err = fmt.Errorf("read %s from %s: %w", objs[i].Handle, w.src.Location(), err)
			}
			select {
			case p.out <- c:
			case <-pctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return p
}

// stop cancels the producer and returns its buffers to the free list.
func (p *producer) stop() {
	p.cancel()
	for c := range p.out {
		if c.buf != nil {
			p.free <- c.buf
		}
	}
	<-p.done
}

type pendingEntry struct {
	e   CatalogEntry
	idx int
	end int64
}

// writeData streams objects[start:] into data files until the early
// warning or the end of the medium; it returns the first object index
// not wholly on this tape.
func (w *setWriter) writeData(ctx context.Context, d Drive, barcode string, tc *TapeCatalog, fileNo *uint32, objs []PlanObject, start int) (int, error) {
	if start >= len(objs) {
		return start, nil
	}
	catLen := tc.encodedLen()
	nbuf := max(int(w.o.BufferSize/chunkSize), 2)
	free := make(chan []byte, nbuf)
	for i := 0; i < nbuf; i++ {
		free <- make([]byte, chunkSize)
	}
	p := w.startProducer(ctx, objs, start, free)
	defer p.stop()
	var fw *fileWriter
	var fileStart int64
	var pending []pendingEntry
	commit := func() {
		keep := pending[:0]
		for _, pe := range pending {
			if fw != nil && pe.end <= fw.Committed() {
				tc.Entries = append(tc.Entries, pe.e)
			} else {
				keep = append(keep, pe)
			}
		}
		pending = keep
	}
	firstRecord := false
	idx := start
	for idx < len(objs) {
		if fw == nil {
			fw = newFileWriter(ctx, d, FileHeader{Kind: KindData, SetID: tc.SetID, Volume: tc.Volume, FileNo: *fileNo}, w.o.RecordSize)
			fw.onRecord = func(n int) { firstRecord = true; w.o.Progress.Bytes(int64(n)) }
			fileStart = fw.Offset()
		}
		o := objs[idx]
		off, _ := fw.BeginObject(ObjectHeader{Type: o.Handle.Type, Name: o.Handle.Name, Size: o.Size})
		for fw.Err() == nil {
			var c chunk
			var ok bool
			select {
			case c, ok = <-p.out:
			default:
				t0 := time.Now()
				c, ok = <-p.out
				if firstRecord {
					w.starved.Add(int64(time.Since(t0)))
				}
			}
			if !ok {
				if err := ctx.Err(); err != nil {
					return start, err
				}
				return start, errors.New("tape writer: read-ahead ended early")
			}
			if c.err != nil {
				return start, c.err
			}
			if c.obj != idx {
				return start, fmt.Errorf("tape writer: read-ahead out of order (object %d, want %d)", c.obj, idx)
			}
			if c.last {
				break
			}
			fw.Write(c.buf[:c.n])
			free <- c.buf
		}
		if fw.Err() == nil {
			pending = append(pending, pendingEntry{e: CatalogEntry{Type: o.Handle.Type, Name: o.Handle.Name, File: *fileNo, Offset: off, Size: o.Size,
				SHA256: [32]byte(fw.hash.Sum(nil))}, idx: idx, end: fw.Offset()})
			idx++
			commit()
			// A tape whose catalog file could not take the next
			// object's entry ends here, as at the early warning.
			catLen += catalogEntryLen(o.Handle.Name)
			ew := fw.EarlyWarning()
			full := idx < len(objs) && catLen+catalogEntryLen(objs[idx].Handle.Name) > catalogLimit
			if !ew && !full && idx < len(objs) && fw.Offset()-fileStart < w.o.FileSize {
				continue
			}
			if fw.Finish() == nil {
				commit()
				fw = nil
				*fileNo++
				if ew || full {
					break
				}
				continue
			}
		}
		// The file failed: at the end of the medium, objects not wholly
		// recorded go to the next tape; anything else is fatal.
		err := fw.Err()
		if !errors.Is(err, ErrEndOfMedia) {
			return start, fmt.Errorf("tape %s: %w", barcode, err)
		}
		commit()
		fw.Abort()
		if len(pending) > 0 {
			w.rewrites.Add(int64(len(pending)))
			idx = pending[0].idx
		} else {
			w.rewrites.Add(1)
		}
		break
	}
	w.countDone(tc)
	return idx, nil
}

func (w *setWriter) countDone(tc *TapeCatalog) {
	for _, e := range tc.Entries {
		if e.Type == tiers.TypeData {
			w.bytes.Add(e.Size)
			w.objects.Add(1)
		}
	}
}

// writeCatalogFile writes tc as the tape's catalog file.
func writeCatalogFile(ctx context.Context, d Drive, tc *TapeCatalog, recSize int) error {
	blob := tc.Marshal()
	per := recSize - recordHeaderSize
	var rec []byte
	for seq := uint32(0); len(blob) > 0 || seq == 0; seq++ {
		n := min(per, len(blob))
		rec = appendRecord(rec[:0], KindCatalog, seq, blob[:n])
		blob = blob[n:]
		if _, err := d.WriteRecord(ctx, rec); err != nil {
			d.WriteFilemarks(ctx, 1)
			return err
		}
	}
	if err := d.WriteFilemarks(ctx, 1); err != nil {
		return err
	}
	return d.Sync(ctx)
}

// readCatalogFile reads a catalog file at the drive's position.
func readCatalogFile(ctx context.Context, d Drive, buf []byte) (*TapeCatalog, error) {
	rr := newRecordReader(ctx, d, buf)
	b, err := readCatalogBytes(rr, maxCatalogLen)
	if err != nil {
		if errors.Is(err, errUnterminated) {
			return nil, fmt.Errorf("%w: catalog file on %s ends without a filemark", ErrCorrupt, d.Name())
		}
		return nil, err
	}
	if rr.kind != KindCatalog {
		return nil, fmt.Errorf("%w: expected the catalog file on %s, found a %s file", ErrCorrupt, d.Name(), rr.kind)
	}
	return ParseTapeCatalog(b)
}

// thisWriter names this process as a set's writer: host, boot id, pid,
// and the pid namespace that pid belongs to.
func thisWriter() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s %s %d %s", host, bootID(), os.Getpid(), pidNS())
}

// pidNS identifies this process's pid namespace ("" where unknown).
func pidNS() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil || strings.ContainsAny(ns, " \t\n") {
		return ""
	}
	return ns
}

// bootID identifies the running kernel's boot ("" where unknown).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// WriterGone reports whether the process that was writing an incomplete
// set is known to be gone: on this host, the machine was restarted since
// (another boot id) or no process has that pid. A writer on another host,
// or one that cannot be told, is not gone.
func (s *SetInfo) WriterGone() bool {
	f := strings.Fields(s.Writer)
	if len(f) != 3 && len(f) != 4 {
		return false
	}
	host, _ := os.Hostname()
	if f[0] != host {
		return false
	}
	if boot := bootID(); boot != "" && f[1] != boot {
		return true
	}
	// kill answers for the caller's pid namespace only: a writer in
	// another one (a container) cannot be told gone by its pid.
	if len(f) != 4 || f[3] != pidNS() {
		return false
	}
	pid, err := strconv.Atoi(f[2])
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}
