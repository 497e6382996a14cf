package tape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/cpus"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/internal/workpool"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// ErrNoSnapshot: no set in the catalog holds the snapshot.
var ErrNoSnapshot = errors.New("tape: no tape set holds that snapshot")

// SnapshotRef is a snapshot found in the catalog.
type SnapshotRef struct {
	Set      *SetInfo
	Manifest *Manifest
	Snapshot ManifestSnapshot
}

// FindSnapshots returns every set that holds the snapshot named by ref (a
// full id, a unique id prefix, or "latest": the newest snapshot on tape),
// newest set first. setID limits the search to one set.
func FindSnapshots(cat *Catalog, ref, setID string) ([]SnapshotRef, error) {
	sets, err := cat.Sets()
	if err != nil {
		return nil, err
	}
	ref = strings.ToLower(strings.TrimSpace(ref))
	if ref == "" {
		return nil, fmt.Errorf("%w: it is empty; give an id, a unique id prefix, or latest", repo.ErrBadSnapshotRef)
	}
	if ref != "latest" && strings.Trim(ref, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%w %q: it is neither latest nor a hex id prefix", repo.ErrBadSnapshotRef, ref)
	}
	if len(ref) > 2*len(id.ID{}) {
		return nil, fmt.Errorf("%w %q: longer than a snapshot id (%d hex digits)", repo.ErrBadSnapshotRef, ref, 2*len(id.ID{}))
	}
	var all []SnapshotRef
	matchIDs := map[id.ID]bool{}
	var newest *SnapshotRef
	for i := len(sets) - 1; i >= 0; i-- {
		s := sets[i]
		if setID != "" && !strings.HasPrefix(s.ID, setID) {
			continue
		}
		m, err := cat.Manifest(s.ID)
		if err != nil {
			continue
		}
		for _, sn := range m.Snapshots {
			r := SnapshotRef{Set: s, Manifest: m, Snapshot: sn}
			if ref == "latest" {
				if newest == nil || sn.Time.After(newest.Snapshot.Time) {
					nr := r
					newest = &nr
				}
				all = append(all, r)
				continue
			}
			if strings.HasPrefix(sn.ID.String(), ref) {
				all = append(all, r)
				matchIDs[sn.ID] = true
			}
		}
	}
	if ref == "latest" {
		if newest == nil {
			return nil, fmt.Errorf("%w: the tape catalog holds no snapshots (rebuild it with 'drpipe tape catalog rebuild' if it was lost)", ErrNoSnapshot)
		}
		var out []SnapshotRef
		for _, r := range all {
			if r.Snapshot.ID == newest.Snapshot.ID {
				out = append(out, r)
			}
		}
		return out, nil
	}
	switch len(matchIDs) {
	case 0:
		return nil, fmt.Errorf("%w: no snapshot id on tape starts with %q", ErrNoSnapshot, ref)
	case 1:
		return all, nil
	}
	return nil, fmt.Errorf("%w: prefix %q matches %d snapshots on tape; give more digits", repo.ErrBadSnapshotRef, ref, len(matchIDs))
}

// PlannedTape is one tape to mount for a restore and what to read from it.
type PlannedTape struct {
	SetTape
	// Meta: read the metadata file (config, keys, indexes, snapshots).
	Meta bool
	// Objects to read, in tape order.
	Objects []CatalogEntry
}

// RestorePlan is the tapes to mount, in order, to restore one snapshot.
type RestorePlan struct {
	Ref   SnapshotRef
	Tapes []PlannedTape
	// Unavailable lists the set's tapes that are not in the library.
	Unavailable []string
	// Packs is the number of packs the snapshot needs; Degraded counts
	// those that will be rebuilt from parity shards.
	Packs    int
	Degraded int
}

type shardLoc struct {
	tape  int // index into set tapes
	index int // shard index
	entry CatalogEntry
}

// PlanRestore chooses the fewest tapes of the set that together hold at
// least K shards of every pack the snapshot needs (preferring data shards,
// which need no rebuild), among those for which available returns true.
// When no choice covers every pack it returns an error wrapping
// ErrMissingTapes naming the unavailable tapes that hold the missing
// shards.
func PlanRestore(cat *Catalog, ref SnapshotRef, available func(barcode string) bool) (*RestorePlan, error) {
	s := ref.Set
	plan := &RestorePlan{Ref: ref, Packs: len(ref.Snapshot.Packs)}
	need := map[id.ID]int{}
	kOf := map[id.ID]int{}
	for _, pi := range ref.Snapshot.Packs {
		p := ref.Manifest.Packs[pi]
		need[p.ID] = p.K
		kOf[p.ID] = p.K
	}
	// Where every shard is, on every tape of the set (present or not).
	locs := map[id.ID][]shardLoc{}
	avail := make([]bool, len(s.Tapes))
	var anyAvail = -1
	for ti, t := range s.Tapes {
		avail[ti] = available(t.Barcode)
		if !avail[ti] {
			plan.Unavailable = append(plan.Unavailable, t.Barcode)
		} else if anyAvail < 0 {
			anyAvail = ti
		}
		tc, err := cat.TapeCatalog(s.ID, t.Column, t.ColumnSeq)
		if err != nil {
			return nil, err
		}
		for _, e := range tc.Entries {
			if e.Type != tiers.TypeData {
				continue
			}
			pid, idx, err := erasure.ParseShardName(e.Name)
			if err != nil {
				continue
			}
			if _, ok := need[pid]; ok {
				locs[pid] = append(locs[pid], shardLoc{tape: ti, index: idx, entry: e})
			}
		}
	}
	if len(s.Tapes) == 0 {
		// A write stopped before its first tape was finished: the
		// catalog has the set's manifest and no tape holding it.
		return nil, fmt.Errorf("%w: set %s has no tape written (its write stopped before the first tape was finished); restore from an earlier set with --set ID ('drpipe tape inventory' lists the sets on cartridges)", ErrMissingTapes, s.ID[:8])
	}
	if anyAvail < 0 {
		return nil, fmt.Errorf("%w: none of the %d tapes of set %s is in the library: %s; import them with 'drpipe tape import'", ErrMissingTapes, len(s.Tapes), s.ID[:8], strings.Join(plan.Unavailable, ", "))
	}
	chosen := map[int][]CatalogEntry{}
	picked := map[int]bool{}
	taken := map[id.ID]map[int]bool{}
	for pid := range need {
		taken[pid] = map[int]bool{}
	}
	for {
		best, bestGain, bestData := -1, 0, 0
		for ti := range s.Tapes {
			if !avail[ti] || picked[ti] {
				continue
			}
			gain, data := 0, 0
			for pid, n := range need {
				if n == 0 {
					continue
				}
				c, cd := 0, 0
				for _, l := range locs[pid] {
					if l.tape == ti && !taken[pid][l.index] {
						c++
						if l.index < kOf[pid] {
							cd++
						}
					}
				}
				gain += min(c, n)
				data += min(cd, n)
			}
			if gain > bestGain || gain == bestGain && gain > 0 && data > bestData {
				best, bestGain, bestData = ti, gain, data
			}
		}
		if best < 0 {
			break
		}
		picked[best] = true
		for pid, n := range need {
			if n == 0 {
				continue
			}
			ls := locs[pid]
			sort.Slice(ls, func(i, j int) bool { return ls[i].index < ls[j].index })
			for _, l := range ls {
				if n == 0 {
					break
				}
				if l.tape == best && !taken[pid][l.index] {
					taken[pid][l.index] = true
					chosen[best] = append(chosen[best], l.entry)
					n--
				}
			}
			need[pid] = n
		}
	}
	// Anything still needed cannot be had from the tapes present.
	var short []id.ID
	for pid, n := range need {
		if n > 0 {
			short = append(short, pid)
		}
	}
	if len(short) > 0 {
		sort.Slice(short, func(i, j int) bool { return short[i].Less(short[j]) })
		holders := map[string]bool{}
		most := 0
		for _, pid := range short {
			most = max(most, need[pid])
			for _, l := range locs[pid] {
				if !avail[l.tape] {
					holders[s.Tapes[l.tape].Barcode] = true
				}
			}
		}
		var hl []string
		for b := range holders {
			hl = append(hl, b)
		}
		sort.Strings(hl)
		return nil, fmt.Errorf("%w: snapshot %s cannot be restored from set %s: %d of its %d packs have fewer than K shards on the tapes in the library "+
			"(set parity %d; %d tapes missing: %s). Missing tapes that hold the lost shards: %s — import them with 'drpipe tape import' (at least %d more needed)",
			ErrMissingTapes, ref.Snapshot.ID.Short(), s.ID[:8], len(short), len(need), s.Parity, len(plan.Unavailable), strings.Join(plan.Unavailable, ", "), strings.Join(hl, ", "), most)
	}
	var order []int
	for ti := range picked {
		order = append(order, ti)
	}
	if len(order) == 0 {
		order = append(order, anyAvail)
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := s.Tapes[order[i]], s.Tapes[order[j]]
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		return a.ColumnSeq < b.ColumnSeq
	})
	for i, ti := range order {
		es := chosen[ti]
		sort.Slice(es, func(a, b int) bool {
			if es[a].File != es[b].File {
				return es[a].File < es[b].File
			}
			return es[a].Offset < es[b].Offset
		})
		plan.Tapes = append(plan.Tapes, PlannedTape{SetTape: s.Tapes[ti], Meta: i == 0, Objects: es})
	}
	for pid := range taken {
		for idx := range taken[pid] {
			if idx >= kOf[pid] {
				plan.Degraded++
				break
			}
		}
	}
	return plan, nil
}

// ReadPlan mounts the plan's tapes and stores what it reads into dst:
// every metadata object from the first tape and the planned shard
// objects from all. Tapes are read in parallel, one per drive (as many
// at once as the library has drives), so a restore from a set written
// across several drives reads at the drives' combined rate. Every object
// is verified against its SHA-256 as it is read. The first tape that
// fails stops the others and is returned as a *TapeError; an object read
// whole that dst fails to store stops them too, and that error is
// returned as it is: it is not the tape's.
func ReadPlan(ctx context.Context, ch Changer, plan *RestorePlan, dst tiers.Backend, progress Progress) error {
	if progress == nil {
		progress = NoProgress{}
	}
	if len(plan.Tapes) == 0 {
		return nil
	}
	inv, err := ch.Inventory(ctx)
	if err != nil {
		return err
	}
	par := max(min(len(inv.Drives), len(plan.Tapes)), 1)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m := newMounter(ch)
	errs := make([]error, len(plan.Tapes))
	workpool.Feed(ctx, par, len(plan.Tapes), func(i int) {
		if err := ctx.Err(); err != nil {
			errs[i] = err // a tape failed: mount no more
			return
		}
		if err := readTape(ctx, m, plan.Ref.Set, plan.Tapes[i], dst, progress); err != nil {
			errs[i] = err
			cancel()
		}
	})
	if err := parent.Err(); err != nil {
		return err
	}
	// Storing what a tape yielded failed: no tape is at fault, and
	// planning around one would only read the others to fail the same.
	for _, err := range errs {
		var se *storeError
		if errors.As(err, &se) {
			return se
		}
	}
	// Report the tape that failed, not the ones stopped because of it.
	for i, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return &TapeError{Barcode: plan.Tapes[i].Barcode, Err: err}
		}
	}
	for i, err := range errs {
		if err != nil {
			return &TapeError{Barcode: plan.Tapes[i].Barcode, Err: err}
		}
	}
	return nil
}

// storeError is a failure to store an object a tape yielded whole: the
// destination's, not the tape's.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }

func (e *storeError) Unwrap() error { return e.err }

// tapeBody records the first error reading an object off tape gave (but
// io.EOF at its end), so that a failed Put can be told to be the tape's
// or the destination's.
type tapeBody struct {
	r   io.Reader
	err error
}

func (b *tapeBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// TapeError is a failure to read one tape; a restore can plan around it
// with the set's parity.
type TapeError struct {
	Barcode string
	Err     error
}

// Error implements error.
func (e *TapeError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *TapeError) Unwrap() error { return e.Err }

// RestoreResult reports Restore.
type RestoreResult struct {
	Plan    *RestorePlan
	Failed  map[string]string // tapes that could not be read → why
	Rebuilt int               // packs rebuilt from parity shards
	// ReadTime is the time spent reading tapes (mounts included, every
	// attempt); RebuildTime the time spent rebuilding packs from parity.
	ReadTime, RebuildTime time.Duration
}

// Restore reads what the snapshot needs from the tapes of one of refs
// into dst: it plans the fewest tapes, reads them, and when a tape fails
// (unreadable, damaged, swapped) plans again without it, as long as the
// set's parity allows. Packs missing data shards are then rebuilt.
func Restore(ctx context.Context, ch Changer, cat *Catalog, refs []SnapshotRef, available func(string) bool, dst tiers.Backend, progress Progress) (*RestoreResult, error) {
	res := &RestoreResult{Failed: map[string]string{}}
	var firstErr error
	for _, ref := range refs {
		for {
			avail := func(bc string) bool { _, bad := res.Failed[bc]; return !bad && available(bc) }
			plan, err := PlanRestore(cat, ref, avail)
			if err != nil {
				if len(res.Failed) > 0 {
					var why []string
					for bc, e := range res.Failed {
						why = append(why, bc+": "+e)
					}
					sort.Strings(why)
					err = fmt.Errorf("%w (tapes that failed while reading: %s)", err, strings.Join(why, "; "))
				}
				if firstErr == nil {
					firstErr = err
				}
				break
			}
			res.Plan = plan
			t0 := time.Now()
			err = ReadPlan(ctx, ch, plan, dst, progress)
			res.ReadTime += time.Since(t0)
			var te *TapeError
			if errors.As(err, &te) {
				res.Failed[te.Barcode] = te.Err.Error()
				continue
			}
			if err != nil {
				return res, err
			}
			t0 = time.Now()
			n, err := CompletePacks(ctx, dst, ref)
			res.Rebuilt = n
			res.RebuildTime = time.Since(t0)
			return res, err
		}
	}
	return res, firstErr
}

func readTape(ctx context.Context, m *mounter, set *SetInfo, pt PlannedTape, dst tiers.Backend, progress Progress) error {
	d, di, err := m.mount(ctx, pt.Barcode)
	if err != nil {
		return err
	}
	// An unmount error is not this tape's: what it yielded is stored, and
	// a drive left loaded is unloaded by the next mount that needs it.
	defer m.unmount(context.WithoutCancel(ctx), d, di)
	progress.Tape(pt.Barcode, pt.Column, pt.ColumnSeq)
	label, err := VerifyLabel(ctx, d, pt.Barcode, nil)
	if err != nil {
		return err
	}
	if label.UUID != pt.UUID {
		return fmt.Errorf("%w: tape %s carries volume %s, set %s was written to volume %s; the tape was relabelled or swapped", ErrWrongTape, pt.Barcode, label.UUID[:8], set.ID[:8], pt.UUID[:8])
	}
	buf := make([]byte, MaxRecordSize)
	n, err := d.ReadRecord(ctx, buf)
	if err != nil {
		return fmt.Errorf("tape %s: read set label: %w", pt.Barcode, err)
	}
	sl, err := ParseSetLabel(buf[:n])
	if err != nil {
		return fmt.Errorf("tape %s: %w", pt.Barcode, err)
	}
	if sl.SetID != set.ID {
		return fmt.Errorf("%w: tape %s now holds set %s, not set %s (it was overwritten after that set expired)", ErrWrongTape, pt.Barcode, sl.SetID[:8], set.ID[:8])
	}
	if _, err := d.ReadRecord(ctx, buf); !errors.Is(err, ErrFilemark) {
		return fmt.Errorf("tape %s: %w: no filemark after the set label", pt.Barcode, ErrCorrupt)
	}
	// The objects to read, by file, and the size the catalog recorded
	// for each.
	want := map[uint32]map[string]int64{}
	left := 0
	for _, e := range pt.Objects {
		if want[e.File] == nil {
			want[e.File] = map[string]int64{}
		}
		want[e.File][e.Name] = e.Size
		left++
	}
	if pt.Meta {
		want[2] = nil // everything
	}
	var files []uint32
	for f := range want {
		files = append(files, f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i] < files[j] })
	pos := uint32(2)
	for _, f := range files {
		if f > pos {
			if err := d.SpaceFilemarks(ctx, int(f-pos)); err != nil {
				return fmt.Errorf("tape %s: space to file %d: %w", pt.Barcode, f, err)
			}
		}
		names := want[f]
		fs, err := ScanFile(ctx, d, buf, func(v *ObjectVisit) error {
			h := v.Header.handle()
			if names == nil {
				if v.Header.Type == TypeManifest {
					return nil
				}
			} else if size, ok := names[h.Name]; v.Header.Type != tiers.TypeData || !ok {
				return nil
			} else if v.Header.Size != size {
				// What is stored is later loaded whole to rebuild its
				// pack: the catalog's size bounds it.
				return fmt.Errorf("%w: file %d: %s is %d bytes on tape, its catalog recorded %d; the tape does not hold what was written to it", ErrCorrupt, f, h, v.Header.Size, size)
			}
			body := &tapeBody{r: v.Body}
			if err := dst.Put(ctx, h, body, v.Header.Size); err != nil {
				if body.err == nil && ctx.Err() == nil {
					// The tape yielded the object whole: storing it
					// failed, which no other tape would change.
					return &storeError{fmt.Errorf("%s, read whole from tape %s, could not be stored in %s, the restore's work directory: %w; make room there (or give another work directory) and restore again", h, pt.Barcode, dst.Location(), err)}
				}
				return fmt.Errorf("tape %s file %d: %s: %w", pt.Barcode, f, h, err)
			}
			progress.Bytes(v.Header.Size)
			if names != nil {
				delete(names, h.Name)
				left--
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("tape %s: %w", pt.Barcode, err)
		}
		if names == nil && !fs.Complete {
			// Every tape carries the whole metadata file: one cut short
			// holds only part of the repository's metadata.
			return fmt.Errorf("%w: tape %s: its metadata file ends after %d objects, without its end entry: it was cut short and holds only part of the repository's metadata (every tape of the set carries a copy)", ErrCorrupt, pt.Barcode, fs.Objects)
		}
		if len(names) > 0 {
			var miss []string
			for n := range names {
				miss = append(miss, n)
			}
			sort.Strings(miss)
			return fmt.Errorf("%w: tape %s file %d lacks %d objects its catalog lists (first %s)", ErrCorrupt, pt.Barcode, f, len(miss), miss[0])
		}
		pos = f + 1
	}
	return nil
}

// CompletePacks makes every pack the snapshot needs readable in dst: packs
// whose data shards were not all read are rebuilt from the shards that
// were (erasure.Reconstruct) and their missing shards stored. It returns
// the number of packs rebuilt.
func CompletePacks(ctx context.Context, dst tiers.Backend, ref SnapshotRef) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		rebuilt  atomic.Int64
		mu       sync.Mutex
		firstErr error
	)
	// Rebuilding is CPU work (Reed-Solomon, one pack in memory per
	// worker): one worker per core, at most four (packs may be large).
	workpool.Feed(ctx, min(cpus.N(), 4), len(ref.Snapshot.Packs), func(j int) {
		done, err := completePack(ctx, dst, ref.Manifest.Packs[ref.Snapshot.Packs[j]])
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			cancel()
			return
		}
		if done {
			rebuilt.Add(1)
		}
	})
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return int(rebuilt.Load()), firstErr
}

// completePack rebuilds the missing data shards of one pack from the
// shards present in dst; it reports whether it had to.
func completePack(ctx context.Context, dst tiers.Backend, p ManifestPack) (bool, error) {
	n := p.K + p.M
	size := make([]int64, n)
	allData := true
	for i := 0; i < n; i++ {
		fi, err := dst.Stat(ctx, tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(p.ID, i)})
		if err != nil && !errors.Is(err, tiers.ErrNotFound) {
			return false, fmt.Errorf("pack %s: %w", p.ID.Short(), err)
		}
		if err != nil {
			size[i] = -1
			if i < p.K {
				allData = false
			}
			continue
		}
		size[i] = fi.Size
	}
	if allData {
		return false, nil
	}
	shards := make([][]byte, n)
	for i := 0; i < n; i++ {
		if size[i] < 0 {
			continue
		}
		b, err := tiers.LoadAll(ctx, dst, tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(p.ID, i)}, 0, size[i])
		if err != nil {
			return false, err
		}
		shards[i] = b
	}
	res, err := erasure.Reconstruct(p.ID, shards)
	if err != nil {
		return false, fmt.Errorf("rebuild pack %s from the shards read off tape: %w", p.ID.Short(), err)
	}
	for i, obj := range res.Rebuilt {
		if i >= p.K {
			continue
		}
		if err := tiers.PutBytes(ctx, dst, tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(p.ID, i)}, obj); err != nil {
			return false, err
		}
	}
	return true, nil
}
