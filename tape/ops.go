package tape

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// LocMissing: the catalog expected the tape in the library but it is not
// there (taken out without an export).
const LocMissing Location = "missing"

// LabelOptions tune LabelTapes.
type LabelOptions struct {
	Pool Pool
	// Count labels up to this many blank cartridges (default 1) unless
	// Barcodes names them.
	Count    int
	Barcodes []string
	// Force relabels foreign tapes and drpipe tapes the catalog does not
	// know. Tapes holding unexpired sets are never relabelled.
	Force bool
	Now   func() time.Time
}

// LabelResult lists what LabelTapes did.
type LabelResult struct {
	Labeled []string          `json:"labeled"`
	Skipped map[string]string `json:"skipped"` // barcode → reason
}

// LabelTapes writes volume labels for pool o.Pool on blank cartridges in
// the library (or the named ones) and records them as scratch tapes.
func LabelTapes(ctx context.Context, ch Changer, cat *Catalog, o LabelOptions) (*LabelResult, error) {
	if err := o.Pool.Validate(); err != nil {
		return nil, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Count <= 0 {
		o.Count = 1
	}
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	res := &LabelResult{Skipped: map[string]string{}}
	cands := o.Barcodes
	explicit := len(cands) > 0
	if !explicit {
		for _, s := range inv.Slots {
			if !s.Full {
				continue
			}
			if m, err := cat.Media(s.Barcode); err == nil && m == nil {
				cands = append(cands, s.Barcode)
			}
		}
	}
	for _, bc := range cands {
		if !explicit && len(res.Labeled) >= o.Count {
			break
		}
		reason, err := labelOne(ctx, ch, cat, bc, o)
		if err != nil {
			if explicit {
				return res, err
			}
			res.Skipped[bc] = err.Error()
			continue
		}
		if reason != "" {
			res.Skipped[bc] = reason
			continue
		}
		res.Labeled = append(res.Labeled, bc)
	}
	if !explicit && len(res.Labeled) < o.Count {
		return res, fmt.Errorf("labelled %d of %d tapes for pool %s: not enough blank cartridges in the library (%d skipped)", len(res.Labeled), o.Count, o.Pool.Name, len(res.Skipped))
	}
	return res, nil
}

func labelOne(ctx context.Context, ch Changer, cat *Catalog, bc string, o LabelOptions) (string, error) {
	old, err := cat.Media(bc)
	if err != nil {
		return "", err
	}
	if old != nil && old.SetID != "" {
		s, err := cat.Set(old.SetID)
		if err != nil {
			return "", err
		}
		if s != nil && (!s.Expired(o.Now()) || old.WORM) {
			return "", fmt.Errorf("tape %s holds set %s (%s, expires %s); refusing to relabel it", bc, s.ID[:8], s.Level, s.Expires.Format("2006-01-02"))
		}
	}
	// A new cartridge put in through a mail slot joins the library: it is
	// recorded there as a scratch tape, and a cartridge goes back to the
	// element it was loaded from, where writes would not look for it.
	if inv, err := ch.Inventory(ctx); err != nil {
		return "", err
	} else if at, _ := inv.Find(bc); at.Kind == ElemMailSlot {
		slot, ok := inv.FreeSlot()
		if !ok {
			return "", fmt.Errorf("tape %s is in a mail slot and no storage slot is free to take it in: free a slot (export a tape) and label it again; nothing was written", bc)
		}
		if err := ch.Move(ctx, at, slot); err != nil {
			return "", fmt.Errorf("take tape %s from its mail slot into the library: %w; nothing was written", bc, err)
		}
	}
	d, di, err := mount(ctx, ch, bc, nil)
	if err != nil {
		return "", err
	}
	defer unmount(context.WithoutCancel(ctx), ch, d, di)
	st, err := d.Status(ctx)
	if err != nil {
		return "", err
	}
	if st.WriteProtected {
		return "", fmt.Errorf("tape %s: %w; nothing was written", bc, ErrWriteProtected)
	}
	if st.WORM != o.Pool.WORM {
		if st.WORM {
			return fmt.Sprintf("WORM cartridge, pool %s is not a WORM pool", o.Pool.Name), nil
		}
		return fmt.Sprintf("rewritable cartridge, pool %s is a WORM pool", o.Pool.Name), nil
	}
	// What is on it now?
	buf := make([]byte, MaxRecordSize)
	n, rerr := d.ReadRecord(ctx, buf)
	switch {
	case errors.Is(rerr, ErrEndOfData):
		// blank: fine
	case rerr == nil || errors.Is(rerr, ErrRecordTooLarge) || errors.Is(rerr, ErrFilemark):
		if st.WORM {
			return "", fmt.Errorf("tape %s is a WORM cartridge that already holds data; it cannot be labelled again", bc)
		}
		l, perr := ParseVolumeLabel(buf[:n])
		if perr == nil && rerr == nil && (old == nil || old.UUID != l.UUID) {
			// The catalog does not know this volume (lost, or stale):
			// the tape's own set label says whether it holds a set
			// that has not expired, which even --force never overwrites.
			if sl := setLabelAfter(ctx, d, buf); sl != nil && sl.UUID == l.UUID && o.Now().Before(sl.Expires) {
				return "", fmt.Errorf("tape %s holds set %s (pool %s, %s, expires %s) that the catalog does not know; refusing to relabel it, even with --force — run 'drpipe tape catalog rebuild' to bring it back into the catalog; nothing was written",
					bc, sl.SetID[:min(8, len(sl.SetID))], sl.Pool, sl.Level, sl.Expires.Format("2006-01-02"))
			}
		}
		switch {
		case perr == nil && old != nil && old.UUID == l.UUID:
			if old.SetID == "" {
				return fmt.Sprintf("already labelled for pool %s", old.Pool), nil
			}
		case perr == nil && !o.Force:
			return "", fmt.Errorf("tape %s carries a drpipe label (pool %s) that the catalog does not know; run 'drpipe tape catalog rebuild' first, or give --force to relabel it — nothing was written", bc, l.Pool)
		case perr != nil && !o.Force:
			return "", fmt.Errorf("tape %s is not blank (%v); give --force to overwrite it — nothing was written", bc, perr)
		}
	default:
		return "", fmt.Errorf("tape %s: %w", bc, rerr)
	}
	u, err := NewUUID()
	if err != nil {
		return "", err
	}
	now := o.Now().UTC()
	l := VolumeLabel{Format: formatName, Version: FormatVersion, Barcode: bc, UUID: u.String(), Pool: o.Pool.Name, Labeled: now, WORM: st.WORM}
	rec, err := MarshalLabel(KindVolumeLabel, l)
	if err != nil {
		return "", err
	}
	if err := d.Rewind(ctx); err != nil {
		return "", err
	}
	if _, err := d.WriteRecord(ctx, rec); err != nil {
		return "", fmt.Errorf("label tape %s: %w", bc, err)
	}
	if err := d.WriteFilemarks(ctx, 1); err != nil {
		return "", fmt.Errorf("label tape %s: %w", bc, err)
	}
	if err := d.Sync(ctx); err != nil {
		return "", fmt.Errorf("label tape %s: %w", bc, err)
	}
	if old != nil && old.SetID != "" {
		(&setWriter{cat: cat, set: &SetInfo{}}).releaseOld(old)
	}
	return "", cat.PutMedia(&Media{Barcode: bc, UUID: l.UUID, Pool: l.Pool, WORM: l.WORM, Labeled: now, State: StateScratch, Location: LocLibrary})
}

// setLabelAfter reads the set label that follows a volume label just
// read from d (file 1), or returns nil when there is none or it cannot
// be read.
func setLabelAfter(ctx context.Context, d Drive, buf []byte) *SetLabel {
	if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, ErrFilemark) {
		return nil
	}
	n, err := d.ReadRecord(ctx, buf)
	if err != nil {
		return nil
	}
	sl, err := ParseSetLabel(buf[:n])
	if err != nil {
		return nil
	}
	return sl
}

// Reconcile brings the catalog's locations in line with the changer's
// inventory: tapes found in the library are there, tapes exported and
// no longer in a mail slot are offsite, other tapes that vanished are
// missing.
func Reconcile(ctx context.Context, ch Changer, cat *Catalog) error {
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return err
	}
	all, err := cat.AllMedia()
	if err != nil {
		return err
	}
	for _, m := range all {
		at, in := inv.Find(m.Barcode)
		loc := m.Location
		switch {
		case in && m.Location == LocTransit && at.Kind == ElemMailSlot:
		case in && m.Location == LocTransit:
			loc = LocLibrary // put back from the mail slot
		case in:
			if at.Kind != ElemMailSlot {
				loc = LocLibrary
			}
		case m.Location == LocTransit || m.Location == LocOffsite:
			loc = LocOffsite
		default:
			loc = LocMissing
		}
		if loc != m.Location {
			m.Location = loc
			if err := cat.PutMedia(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// ExportResult is the courier list.
type ExportResult struct {
	// Exported were moved to mail slots now; Waiting are due but found
	// no free mail slot; InTransit were exported before and still wait
	// in mail slots.
	Exported  []CourierItem `json:"exported"`
	Waiting   []CourierItem `json:"waiting"`
	InTransit []CourierItem `json:"in_transit"`
	// Recall lists offsite tapes whose set expired: bring them back.
	Recall []CourierItem `json:"recall"`
}

// CourierItem is one line of the courier list.
type CourierItem struct {
	Barcode string    `json:"barcode"`
	Pool    string    `json:"pool"`
	SetID   string    `json:"set_id"`
	Level   Level     `json:"level"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// DueForExport lists the tapes the rotation sends offsite now: tapes of
// complete, unexpired sets whose level the pool sends offsite and that are
// still in the library.
func DueForExport(cat *Catalog, pools func(string) (Pool, error), now time.Time) ([]CourierItem, error) {
	all, err := cat.AllMedia()
	if err != nil {
		return nil, err
	}
	var out []CourierItem
	sets := map[string]*SetInfo{}
	for _, m := range all {
		if m.Location != LocLibrary || m.State != StateFull || m.SetID == "" {
			continue
		}
		s, ok := sets[m.SetID]
		if !ok {
			s, err = cat.Set(m.SetID)
			if err != nil {
				return nil, err
			}
			sets[m.SetID] = s
		}
		if s == nil || !s.Complete || s.Expired(now) {
			continue
		}
		p, err := pools(s.Pool)
		if err != nil {
			return nil, err
		}
		if p.GoesOffsite(s.Level) {
			out = append(out, CourierItem{Barcode: m.Barcode, Pool: s.Pool, SetID: s.ID, Level: s.Level, Created: s.Created, Expires: s.Expires})
		}
	}
	return out, nil
}

// DueForRecall lists offsite tapes whose set has expired (or that hold
// no set): the vault should send them back.
func DueForRecall(cat *Catalog, now time.Time) ([]CourierItem, error) {
	all, err := cat.AllMedia()
	if err != nil {
		return nil, err
	}
	var out []CourierItem
	for _, m := range all {
		if m.Location != LocOffsite {
			continue
		}
		it := CourierItem{Barcode: m.Barcode, Pool: m.Pool, SetID: m.SetID}
		if m.SetID != "" {
			s, err := cat.Set(m.SetID)
			if err != nil {
				return nil, err
			}
			if s != nil {
				if !s.Expired(now) {
					continue
				}
				it.Level, it.Created, it.Expires = s.Level, s.Created, s.Expires
			}
		}
		out = append(out, it)
	}
	return out, nil
}

// Export moves the tapes due offsite into free mail slots and marks them
// in transit. It returns the courier list.
func Export(ctx context.Context, ch Changer, cat *Catalog, pools func(string) (Pool, error), now time.Time) (*ExportResult, error) {
	if err := Reconcile(ctx, ch, cat); err != nil {
		return nil, err
	}
	due, err := DueForExport(cat, pools, now)
	if err != nil {
		return nil, err
	}
	res := &ExportResult{}
	for _, it := range due {
		inv, err := ch.Inventory(ctx)
		if err != nil {
			return res, err
		}
		ms, ok := inv.FreeMailSlot()
		if !ok {
			res.Waiting = append(res.Waiting, it)
			continue
		}
		at, ok := inv.Find(it.Barcode)
		if !ok {
			continue
		}
		if at.Kind == ElemDrive {
			if err := unmountIndex(ctx, ch, at.Index); err != nil {
				return res, err
			}
			inv, _ = ch.Inventory(ctx)
			at, _ = inv.Find(it.Barcode)
		}
		if err := ch.Move(ctx, at, ms); err != nil {
			return res, fmt.Errorf("export tape %s: %w", it.Barcode, err)
		}
		m, err := cat.Media(it.Barcode)
		if err != nil || m == nil {
			return res, fmt.Errorf("export tape %s: catalog record: %v", it.Barcode, err)
		}
		m.Location, m.Exported = LocTransit, now.UTC()
		if err := cat.PutMedia(m); err != nil {
			return res, err
		}
		res.Exported = append(res.Exported, it)
	}
	all, err := cat.AllMedia()
	if err != nil {
		return res, err
	}
	exported := map[string]bool{}
	for _, it := range res.Exported {
		exported[it.Barcode] = true
	}
	for _, m := range all {
		if m.Location == LocTransit && !exported[m.Barcode] {
			it := CourierItem{Barcode: m.Barcode, Pool: m.Pool, SetID: m.SetID}
			if s, _ := cat.Set(m.SetID); s != nil {
				it.Level, it.Created, it.Expires = s.Level, s.Created, s.Expires
			}
			res.InTransit = append(res.InTransit, it)
		}
	}
	res.Recall, err = DueForRecall(cat, now)
	return res, err
}

// ImportResult lists imported tapes.
type ImportResult struct {
	// Scratch were imported and are writable again (their set expired);
	// Kept still hold unexpired sets; Retired are expired WORM tapes.
	Scratch []string `json:"scratch"`
	Kept    []string `json:"kept"`
	Retired []string `json:"retired"`
	Unknown []string `json:"unknown"` // not in the catalog: label or rebuild
}

// Import moves every cartridge waiting in a mail slot (other than tapes
// being exported) into a free storage slot and updates the catalog:
// tapes whose set expired become scratch (WORM ones retired).
func Import(ctx context.Context, ch Changer, cat *Catalog, now time.Time) (*ImportResult, error) {
	if err := Reconcile(ctx, ch, cat); err != nil {
		return nil, err
	}
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	res := &ImportResult{}
	for _, ms := range inv.MailSlots {
		if !ms.Full {
			continue
		}
		m, err := cat.Media(ms.Barcode)
		if err != nil {
			return res, err
		}
		if m != nil && m.Location == LocTransit {
			continue // waiting for the courier
		}
		inv2, err := ch.Inventory(ctx)
		if err != nil {
			return res, err
		}
		slot, ok := inv2.FreeSlot()
		if !ok {
			return res, fmt.Errorf("import tape %s: no free storage slot; export or remove tapes first", ms.Barcode)
		}
		if err := ch.Move(ctx, ms.Element, slot); err != nil {
			return res, fmt.Errorf("import tape %s: %w", ms.Barcode, err)
		}
		if m == nil {
			res.Unknown = append(res.Unknown, ms.Barcode)
			continue
		}
		m.Location = LocLibrary
		m.Exported = time.Time{}
		var s *SetInfo
		if m.SetID != "" {
			if s, err = cat.Set(m.SetID); err != nil {
				return res, err
			}
		}
		switch {
		case s != nil && !s.Expired(now):
			res.Kept = append(res.Kept, m.Barcode)
		case m.WORM && m.SetID != "":
			m.State = StateRetired
			res.Retired = append(res.Retired, m.Barcode)
		default:
			if m.State == StateFull {
				m.State = StateScratch
			}
			res.Scratch = append(res.Scratch, m.Barcode)
		}
		if err := cat.PutMedia(m); err != nil {
			return res, err
		}
	}
	return res, nil
}

// CheckReport is the outcome of CheckCatalog.
type CheckReport struct {
	Sets    int      `json:"sets"`
	Tapes   int      `json:"tapes"`
	Objects int      `json:"objects"`
	Read    int      `json:"tapes_read"`
	Errors  []string `json:"errors"`
	// Warnings are not damage: incomplete sets, tapes offsite.
	Warnings []string `json:"warnings"`
}

// OK reports whether no error was found.
func (r *CheckReport) OK() bool { return len(r.Errors) == 0 }

// CheckOptions tune CheckCatalog.
type CheckOptions struct {
	// ReadData mounts every tape in the library and compares what is on
	// it (every object's SHA-256) with the catalog.
	ReadData bool
	Progress Progress
}

// CheckCatalog verifies the catalog database: every set's manifest and
// tape catalogs parse and verify; every pack of every snapshot has all
// its K+M shards on the set's tapes (complete sets) or at least K; no
// column holds more shards of a pack than the set's parity allows; every
// tape carries the metadata; media records agree with sets. With
// ReadData it reads the tapes in the library and compares.
func CheckCatalog(ctx context.Context, ch Changer, cat *Catalog, o CheckOptions) (*CheckReport, error) {
	rep := &CheckReport{}
	sets, err := cat.Sets()
	if err != nil {
		return nil, err
	}
	errf := func(format string, args ...any) { rep.Errors = append(rep.Errors, fmt.Sprintf(format, args...)) }
	media, err := cat.AllMedia()
	if err != nil {
		return nil, err
	}
	byBarcode := map[string]*Media{}
	for _, m := range media {
		byBarcode[m.Barcode] = m
	}
	var inv *Inventory
	if ch != nil {
		if inv, err = ch.Inventory(ctx); err != nil {
			return nil, err
		}
	}
	for _, s := range sets {
		rep.Sets++
		reuse := "the pool reuses them when it has no scratch or expired tape left"
		if s.worm(byBarcode) {
			reuse = "they are WORM and are never reused"
		}
		switch {
		case !s.Complete && s.Aborted != "":
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("set %s (%s, %s) is incomplete: its write stopped (%s); only what is on its tapes can be restored, and %s", s.ID[:8], s.Level, s.Created.Format("2006-01-02"), s.Aborted, reuse))
		case !s.Complete && s.WriterGone():
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("set %s (%s, %s) is incomplete: its writer (%s) is gone, killed or stopped by a restart; only what is on its tapes can be restored, and %s", s.ID[:8], s.Level, s.Created.Format("2006-01-02"), s.Writer, reuse))
		case !s.Complete:
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("set %s (%s, %s) is incomplete: its write did not finish (still running, or killed); only what is on its tapes can be restored", s.ID[:8], s.Level, s.Created.Format("2006-01-02")))
		}
		short := 0 // packs of an incomplete set without K shards on tape
		mf, err := cat.Manifest(s.ID)
		if err != nil {
			errf("set %s: %v", s.ID[:8], err)
			continue
		}
		shards := map[id.ID]map[int]int{} // pack → shard → column
		perCol := map[id.ID]map[int]int{}
		var meta []byte
		for _, t := range s.Tapes {
			rep.Tapes++
			tc, err := cat.TapeCatalog(s.ID, t.Column, t.ColumnSeq)
			if err != nil {
				errf("set %s tape %s: %v", s.ID[:8], t.Barcode, err)
				continue
			}
			if tc.Barcode != t.Barcode || tc.Volume.String() != t.UUID {
				errf("set %s: tape catalog %d.%d names tape %s/%s, the set says %s/%s", s.ID[:8], t.Column, t.ColumnSeq, tc.Barcode, tc.Volume.String()[:8], t.Barcode, t.UUID[:8])
			}
			if m := byBarcode[t.Barcode]; m == nil || (m.SetID != s.ID && m.UUID == t.UUID) {
				errf("tape %s: the media record does not name set %s", t.Barcode, s.ID[:8])
			}
			var tm []byte
			for _, e := range tc.Entries {
				rep.Objects++
				if e.Type != tiers.TypeData {
					tm = append(tm, e.Name...)
					tm = append(tm, 0)
					continue
				}
				pid, idx, err := erasure.ParseShardName(e.Name)
				if err != nil {
					errf("tape %s: object %s: %v", t.Barcode, e.Name, err)
					continue
				}
				if shards[pid] == nil {
					shards[pid], perCol[pid] = map[int]int{}, map[int]int{}
				}
				if c, dup := shards[pid][idx]; dup {
					errf("pack %s shard %d is on two tapes (columns %d and %d)", pid.Short(), idx, c, t.Column)
				}
				shards[pid][idx] = t.Column
				perCol[pid][t.Column]++
			}
			if meta == nil {
				meta = tm
			} else if !bytes.Equal(meta, tm) {
				errf("set %s: tape %s carries different metadata objects than the set's first tape", s.ID[:8], t.Barcode)
			}
			if inv != nil {
				if _, ok := inv.Find(t.Barcode); !ok {
					rep.Warnings = append(rep.Warnings, fmt.Sprintf("tape %s of set %s is not in the library", t.Barcode, s.ID[:8]))
				}
			}
		}
		for _, sn := range mf.Snapshots {
			for _, pi := range sn.Packs {
				p := mf.Packs[pi]
				have := len(shards[p.ID])
				switch {
				case have < p.K && !s.Complete:
					short++ // what an unfinished write leaves: not damage
				case have < p.K:
					errf("set %s: snapshot %s: pack %s has %d of %d shards on tape, needs %d", s.ID[:8], sn.ID.Short(), p.ID.Short(), have, p.K+p.M, p.K)
				case s.Complete && have < p.K+p.M:
					errf("set %s: pack %s has %d of %d shards on tape (complete set)", s.ID[:8], p.ID.Short(), have, p.K+p.M)
				}
				for c, n := range perCol[p.ID] {
					if n > s.PerTape {
						errf("set %s: pack %s has %d shards in column %d, the layout allows %d (parity %d broken)", s.ID[:8], p.ID.Short(), n, c, s.PerTape, s.Parity)
					}
				}
			}
		}
		if short > 0 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("set %s is incomplete: %d pack references of its snapshots lack enough shards on its tapes to be restored from it", s.ID[:8], short))
		}
	}
	if o.ReadData && ch != nil {
		for _, bc := range inv.Barcodes() {
			m := byBarcode[bc]
			if m == nil || m.SetID == "" {
				continue
			}
			if at, _ := inv.Find(bc); at.Kind == ElemMailSlot {
				// Mounting it would leave it in a storage slot: an
				// exported tape would miss its courier.
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("tape %s is in a mail slot (exported, or not yet imported); not read: import it to check it", bc))
				continue
			}
			if m.State == StateWriting {
				// The tape an unfinished write was on: its catalog was
				// never written, and there is nothing to compare.
				if s, _ := cat.Set(m.SetID); s == nil || !s.Complete {
					rep.Warnings = append(rep.Warnings, fmt.Sprintf("tape %s was being written when the write of set %s stopped; not read", bc, m.SetID[:8]))
					continue
				}
			}
			d, di, err := mount(ctx, ch, bc, nil)
			if err != nil {
				errf("tape %s: %v", bc, err)
				continue
			}
			if o.Progress != nil {
				o.Progress.Tape(bc, m.Column, m.ColumnSeq)
			}
			ts, err := ScanTape(ctx, d, bc, ScanOptions{ReadData: true})
			unmount(context.WithoutCancel(ctx), ch, d, di)
			rep.Read++
			if err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				errf("%v", err)
				continue
			}
			if ts.Set == nil || ts.Set.SetID != m.SetID {
				errf("tape %s: the catalog says it holds set %s, the tape does not", bc, m.SetID[:8])
				continue
			}
			want, err := cat.TapeCatalog(m.SetID, m.Column, m.ColumnSeq)
			if err != nil {
				errf("tape %s: %v", bc, err)
				continue
			}
			ts.Catalog.Last = want.Last
			if !bytes.Equal(want.Marshal(), ts.Catalog.Marshal()) {
				errf("tape %s: its objects do not match the catalog (%d on tape, %d in the catalog)", bc, len(ts.Catalog.Entries), len(want.Entries))
			}
		}
	}
	sort.Strings(rep.Errors)
	return rep, nil
}

// worm reports whether the set's tapes are WORM cartridges (byBarcode:
// the catalog's media).
func (s *SetInfo) worm(byBarcode map[string]*Media) bool {
	for _, t := range s.Tapes {
		if m := byBarcode[t.Barcode]; m != nil {
			return m.WORM
		}
	}
	for _, m := range byBarcode {
		if m.SetID == s.ID {
			return m.WORM
		}
	}
	return false
}
