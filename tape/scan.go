package tape

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/drpipe/drpipe/tiers"
)

// TapeScan is what scanning one tape found.
type TapeScan struct {
	Barcode string
	Label   *VolumeLabel
	// Set is nil for a labelled tape that holds no set.
	Set *SetLabel
	// Catalog lists the whole objects on the tape; Manifest is the set
	// manifest from the metadata file.
	Catalog  *TapeCatalog
	Manifest []byte
	// FromCatalogFile is true when the tape's own catalog file was used;
	// false when the data files were scanned object by object.
	FromCatalogFile bool
	// Incomplete lists files cut short (by the end of the medium or a
	// crash); their whole objects are in Catalog.
	Incomplete []uint32
}

// ScanOptions tune ScanTape.
type ScanOptions struct {
	// ReadData scans every data file and verifies every object even when
	// the tape's catalog file is present, and checks that they agree.
	ReadData bool
	// Visit, when set, is called for every whole object found while
	// scanning (only with ReadData or when the catalog file is missing).
	Visit func(barcode string, v *ObjectVisit) error
}

// ScanTape reads the labels, the metadata file and the catalog of the
// tape in d. Without the tape's catalog file (cut by the end of the
// medium) or with o.ReadData it reads every data file and builds the
// catalog from the objects it finds.
func ScanTape(ctx context.Context, d Drive, barcode string, o ScanOptions) (*TapeScan, error) {
	label, err := VerifyLabel(ctx, d, barcode, nil)
	if err != nil {
		return nil, err
	}
	ts := &TapeScan{Barcode: barcode, Label: label}
	buf := make([]byte, MaxRecordSize)
	n, err := d.ReadRecord(ctx, buf)
	if errors.Is(err, ErrEndOfData) {
		return ts, nil // labelled, no set
	}
	if err != nil {
		return nil, fmt.Errorf("tape %s: read set label: %w", barcode, err)
	}
	sl, err := ParseSetLabel(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("tape %s: %w", barcode, err)
	}
	if sl.UUID != label.UUID || sl.Barcode != barcode {
		return nil, fmt.Errorf("tape %s: %w: set label belongs to volume %s (%s)", barcode, ErrCorrupt, sl.UUID, sl.Barcode)
	}
	ts.Set = sl
	if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, ErrFilemark) {
		return nil, fmt.Errorf("tape %s: %w: no filemark after the set label (%v)", barcode, ErrCorrupt, err)
	}
	setID, _ := ParseUUID(sl.SetID)
	vol, _ := ParseUUID(label.UUID)
	scanned := &TapeCatalog{SetID: setID, Volume: vol, Barcode: barcode, Column: sl.Column, ColumnSeq: sl.ColumnSeq}
	// The writer puts no more objects on a tape than its catalog file
	// can list (catalogLimit): a tape holding more (a hostile or foreign
	// one) is refused before the catalog built here outgrows that.
	catLen := scanned.encodedLen()
	visit := func(v *ObjectVisit, file uint32) error {
		if catLen += catalogEntryLen(v.Header.Name); catLen > catalogLimit {
			return fmt.Errorf("%w: the tape holds more objects than its catalog file can list (%d bytes at most)", ErrCorrupt, catalogLimit)
		}
		h := sha256.New()
		var keep *bytes.Buffer
		if v.Header.Type == TypeManifest {
			// The manifest is held in memory: one longer than the
			// catalog reads back (a hostile or foreign tape) is
			// refused before its bytes are gathered.
			if v.Header.Size > maxCatalogLen {
				return fmt.Errorf("%w: set manifest of %d bytes is longer than any drpipe reads (%d)", ErrCorrupt, v.Header.Size, int64(maxCatalogLen))
			}
			keep = &bytes.Buffer{}
		}
		body := io.TeeReader(v.Body, h)
		if keep != nil {
			body = io.TeeReader(body, keep)
		}
		if o.Visit != nil {
			if err := o.Visit(barcode, &ObjectVisit{Header: v.Header, Offset: v.Offset, Body: body}); err != nil {
				return err
			}
		}
		if _, err := io.Copy(io.Discard, body); err != nil {
			return err
		}
		if keep != nil {
			ts.Manifest = keep.Bytes()
		}
		scanned.Entries = append(scanned.Entries, CatalogEntry{Type: v.Header.Type, Name: v.Header.Name, File: file, Offset: v.Offset, Size: v.Header.Size, SHA256: [32]byte(h.Sum(nil))})
		return nil
	}
	// Files from 2 on: metadata, data..., catalog.
	var fromFile *TapeCatalog
files:
	for file := uint32(2); ; file++ {
		rr := newRecordReader(ctx, d, buf)
		err := rr.next()
		if err == io.EOF {
			continue // an empty file (an abandoned one)
		}
		if errors.Is(err, errUnterminated) {
			break files // end of recorded data
		}
		if err != nil {
			return nil, fmt.Errorf("tape %s file %d: %w", barcode, file, err)
		}
		switch rr.kind {
		case KindCatalog:
			b, err := readCatalogBytes(rr, maxCatalogLen)
			if err == nil {
				fromFile, err = ParseTapeCatalog(b)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				// A catalog file cut by the end of the medium: scan
				// the data files instead.
				fromFile = nil
				break files
			}
		case KindMeta, KindData:
			if rr.kind == KindData && !o.ReadData {
				// Skip data files: the catalog file at the end says
				// what they hold. Come back if it is missing.
				if err := d.SpaceFilemarks(ctx, 1); err != nil {
					if errors.Is(err, ErrEndOfData) {
						break files
					}
					return nil, fmt.Errorf("tape %s: skip file %d: %w", barcode, file, err)
				}
				continue
			}
			f := file
			fs, err := scanFile(rr, func(v *ObjectVisit) error { return visit(v, f) })
			if err != nil {
				return nil, fmt.Errorf("tape %s file %d: %w", barcode, file, err)
			}
			if fs.Header.FileNo != file {
				return nil, fmt.Errorf("tape %s: %w: file %d says it is file %d", barcode, ErrCorrupt, file, fs.Header.FileNo)
			}
			if !fs.Complete {
				ts.Incomplete = append(ts.Incomplete, file)
			}
			if fs.Unterminated {
				break files
			}
		default:
			return nil, fmt.Errorf("tape %s: %w: unexpected %s file at file %d", barcode, ErrCorrupt, rr.kind, file)
		}
		if fromFile != nil {
			break files
		}
	}
	switch {
	case fromFile != nil && !o.ReadData:
		if fromFile.SetID != setID || fromFile.Volume != vol || fromFile.Barcode != barcode {
			return nil, fmt.Errorf("tape %s: %w: catalog file belongs to another tape or set", barcode, ErrCorrupt)
		}
		ts.Catalog, ts.FromCatalogFile = fromFile, true
	case fromFile == nil && !o.ReadData:
		// No catalog file: scan the data files.
		return ScanTape(ctx, d, barcode, ScanOptions{ReadData: true, Visit: o.Visit})
	default:
		scanned.Last = fromFile != nil && fromFile.Last
		if fromFile != nil && !bytes.Equal(fromFile.Marshal(), scanned.Marshal()) {
			return nil, fmt.Errorf("tape %s: %w: its catalog file does not match the objects found on it (%d listed, %d found)", barcode, ErrCorrupt, len(fromFile.Entries), len(scanned.Entries))
		}
		ts.Catalog = scanned
		ts.FromCatalogFile = false
	}
	if ts.Manifest == nil {
		return nil, fmt.Errorf("tape %s: %w: no set manifest in the metadata file", barcode, ErrCorrupt)
	}
	return ts, nil
}

// RebuildResult reports a catalog rebuild.
type RebuildResult struct {
	Tapes   int      `json:"tapes"`
	Sets    int      `json:"sets"`
	Blank   []string `json:"blank"`
	Foreign []string `json:"foreign"`
	Errors  []string `json:"errors"`
	Scanned []string `json:"scanned"` // tapes without a catalog file
}

// Rebuild scans every cartridge in the library and rewrites the catalog
// database from what is on the tapes: media records, sets, manifests and
// tape catalogs. Tapes outside the library are not known afterwards.
// Tapes that cannot be read are reported, not fatal.
func Rebuild(ctx context.Context, ch Changer, cat *Catalog, o ScanOptions, progress Progress) (*RebuildResult, error) {
	if progress == nil {
		progress = NoProgress{}
	}
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	res := &RebuildResult{}
	var scans []*TapeScan
	bcs := inv.Barcodes()
	sort.Strings(bcs)
	for _, bc := range bcs {
		d, di, err := mount(ctx, ch, bc, nil)
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			continue
		}
		progress.Tape(bc, -1, -1)
		ts, err := ScanTape(ctx, d, bc, o)
		unmount(context.WithoutCancel(ctx), ch, d, di)
		switch {
		case errors.Is(err, ErrBlankTape):
			res.Blank = append(res.Blank, bc)
		case errors.Is(err, ErrForeignTape):
			res.Foreign = append(res.Foreign, bc)
		case err != nil:
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.Errors = append(res.Errors, err.Error())
		default:
			res.Tapes++
			scans = append(scans, ts)
			if ts.Set != nil && !ts.FromCatalogFile {
				res.Scanned = append(res.Scanned, bc)
			}
		}
	}
	sets := map[string]*SetInfo{}
	for _, ts := range scans {
		l := ts.Label
		m := &Media{Barcode: ts.Barcode, UUID: l.UUID, Pool: l.Pool, WORM: l.WORM, Labeled: l.Labeled.UTC(), State: StateScratch, Location: LocLibrary}
		if old, err := cat.Media(ts.Barcode); err == nil && old != nil && old.UUID == l.UUID {
			m.Exported = old.Exported
		}
		if s := ts.Set; s != nil {
			m.State, m.SetID, m.Column, m.ColumnSeq = StateFull, s.SetID, s.Column, s.ColumnSeq
			si := sets[s.SetID]
			if si == nil {
				si = &SetInfo{ID: s.SetID, Pool: s.Pool, Created: s.Created.UTC(), Level: s.Level, Expires: s.Expires.UTC(), Columns: s.Columns, Parity: s.Parity, PerTape: s.PerTape}
				sets[s.SetID] = si
				if mf, err := ParseManifest(ts.Manifest); err == nil {
					for _, sn := range mf.Snapshots {
						si.Snaps = append(si.Snaps, SnapInfo{ID: sn.ID, Time: sn.Time.UTC()})
					}
				} else {
					res.Errors = append(res.Errors, fmt.Sprintf("tape %s: %v", ts.Barcode, err))
				}
				if err := cat.PutManifest(s.SetID, ts.Manifest); err != nil {
					return res, err
				}
			}
			var bytes int64
			for _, e := range ts.Catalog.Entries {
				bytes += e.Size
			}
			si.Tapes = append(si.Tapes, SetTape{Barcode: ts.Barcode, UUID: l.UUID, Column: s.Column, ColumnSeq: s.ColumnSeq, Last: ts.Catalog.Last, Objects: len(ts.Catalog.Entries), Bytes: bytes})
			if err := cat.PutTapeCatalog(s.SetID, ts.Catalog); err != nil {
				return res, err
			}
		}
		if err := cat.PutMedia(m); err != nil {
			return res, err
		}
	}
	for _, si := range sets {
		si.sortTapes()
		si.Complete = setComplete(si)
		if err := cat.PutSet(si); err != nil {
			return res, err
		}
		res.Sets++
	}
	return res, nil
}

// setComplete reports whether every column has an unbroken chain of tapes
// ending with its last one.
func setComplete(s *SetInfo) bool {
	for c := 0; c < s.Columns; c++ {
		want := 0
		last := false
		for _, t := range s.Tapes {
			if t.Column != c {
				continue
			}
			if t.ColumnSeq != want {
				return false
			}
			want++
			last = t.Last
		}
		if !last {
			return false
		}
	}
	return true
}

// handleOf is the tiers handle of a catalog entry.
func handleOf(e CatalogEntry) tiers.Handle { return tiers.Handle{Type: e.Type, Name: e.Name} }
