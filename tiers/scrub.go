package tiers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/internal/workpool"
)

// MaxScrubList bounds each list of a ScrubReport; the counts go on.
const MaxScrubList = 1000

// maxShardObject is the largest shard object a repository writes: a pack
// is at most 1 GiB (repo.MaxPackSize), its largest shard the whole of it
// at K=1. A listed shard larger than that is damaged and is not read into
// memory to find out.
const maxShardObject = erasure.MaxHeaderSize + 1<<30

// ScrubOptions tunes Scrub.
type ScrubOptions struct {
	// Workers is the number of packs verified at once (0: 2). Each holds
	// one pack's shards in memory, about 1.5 times the pack size at 4+2.
	Workers int
	// DryRun only reports: nothing is rewritten or removed.
	DryRun bool
	// RemoveDamaged removes the objects that fail verification and cannot
	// be rebuilt here (shards of a pack with more than M lost, damaged
	// index, snapshot, key and tombstone objects), so that the next copy,
	// replicate or tier run, which send what a tier lacks, sends them
	// again from a tier that holds them intact. Without it they stay; an
	// object under retention (ErrLocked) stays too, and its entry in the
	// report says so.
	RemoveDamaged bool
	// MinAge spares packs being written: a pack missing shards, none of
	// them damaged, whose shards are all younger than MinAge is counted
	// in Young rather than as lost (0: one hour). Writers store a pack's
	// shards one after another, so a scrub beside a running backup sees
	// packs half-stored.
	MinAge time.Duration
	// Progress, if set, is called with the objects and bytes verified
	// since the last call, from several goroutines.
	Progress func(objects int, bytes int64)
	// Planned, if set, is called once the objects have been listed, with
	// their count and bytes.
	Planned func(objects int, bytes int64)
}

// ScrubPack is a pack Scrub found short of shards.
type ScrubPack struct {
	Pack id.ID `json:"pack"`
	// Missing and Corrupt list the shard indexes absent and failing
	// verification; Unread those storage failed to deliver.
	Missing []int `json:"missing,omitempty"`
	Corrupt []int `json:"corrupt,omitempty"`
	Unread  []int `json:"unread,omitempty"`
	// Rebuilt lists the shards rewritten from the others (or, with
	// DryRun, that would be); Removed the damaged ones removed.
	Rebuilt []int `json:"rebuilt,omitempty"`
	Removed []int `json:"removed,omitempty"`
	// NotStored lists rebuilt shards that still read damaged after they
	// were stored (storage kept the damaged object: one under retention
	// that cannot be replaced).
	NotStored []int `json:"not_stored,omitempty"`
	// Error says what is wrong, for a pack that was not rebuilt (or not
	// stored).
	Error string `json:"error,omitempty"`
}

// ScrubObject is an object other than a shard (or a data object not
// named like one) that failed verification or could not be read.
type ScrubObject struct {
	Object  string `json:"object"`
	Error   string `json:"error"`
	Removed bool   `json:"removed,omitempty"`
}

// ScrubReport is what Scrub found and did.
type ScrubReport struct {
	Location string `json:"location"`
	DryRun   bool   `json:"dry_run"`
	// Packs and Shards count the data verified, Objects the other
	// objects; Bytes is what was read.
	Packs   int   `json:"packs"`
	Shards  int   `json:"shards"`
	Objects int   `json:"objects"`
	Bytes   int64 `json:"bytes"`
	// PacksRebuilt counts packs whose lost shards were rewritten from
	// the others (ShardsRebuilt the shards); Rebuilt lists them.
	PacksRebuilt  int         `json:"packs_rebuilt"`
	ShardsRebuilt int         `json:"shards_rebuilt"`
	Rebuilt       []ScrubPack `json:"rebuilt"`
	// ShardsNotStored counts rebuilt shards that still read damaged once
	// stored (their entries in Rebuilt say which).
	ShardsNotStored int `json:"shards_not_stored"`
	// PacksLost counts packs with fewer than K intact shards here; Lost
	// lists them.
	PacksLost int         `json:"packs_lost"`
	Lost      []ScrubPack `json:"lost"`
	// PacksUnread counts packs that could not be verified because storage
	// failed to deliver shards (a time-out, an I/O error): run again.
	PacksUnread int         `json:"packs_unread"`
	Unread      []ScrubPack `json:"unread"`
	// Damaged counts objects other than shards that fail verification;
	// DamagedObjects lists them, and those that could not be read.
	Damaged        int           `json:"damaged"`
	ObjectsUnread  int           `json:"objects_unread"`
	DamagedObjects []ScrubObject `json:"damaged_objects"`
	// Removed counts the objects removed (RemoveDamaged).
	Removed int `json:"removed"`
	// Young counts packs missing shards that are still being written.
	Young int `json:"young"`
	// Vanished counts packs removed (by a prune) while the scrub ran.
	Vanished int     `json:"vanished"`
	Duration float64 `json:"duration_s"`
}

// Clean reports whether everything verified, or was rebuilt.
func (r *ScrubReport) Clean() bool {
	return r.PacksLost == 0 && r.PacksUnread == 0 && r.Damaged == 0 && r.ObjectsUnread == 0 && r.ShardsNotStored == 0
}

// scrubTypes are the object classes verified besides data. The config is
// not: only part of it is public, and its name is not a hash.
var scrubTypes = []Type{TypeKey, TypeIndex, TypeSnapshot, TypeTombstone}

// scrubShard is one listed shard object.
type scrubShard struct {
	index int
	size  int64
}

// scrubPackList is the listing of one pack's shards.
type scrubPackList struct {
	id     id.ID
	shards []scrubShard
	oldest time.Time
}

// Scrub verifies every object of be against its name, without the
// repository key: every shard of every pack (header, table hash, payload
// hash), and the index, snapshot, key and tombstone objects (their SHA-256
// is their name). A pack with at least K intact shards gets its missing
// and damaged shards rewritten from them, byte-identical to what the
// writer stored (a shard object with bytes after its payload is damaged,
// and its bytes before them count among the intact) (as repair does, but keyless: at a DR site, a bucket or
// any copy). Packs that cannot be rebuilt here and damaged objects are
// reported, and with o.RemoveDamaged their damaged objects are removed so
// that copying from an intact tier sends them again. An object storage
// fails to deliver is reported as unread and never removed.
//
// Scrub is safe beside writers and copies (a rebuilt shard is the same
// bytes they store) and beside a prune (a pack that vanishes while it is
// verified is left alone). The error is for the scrub itself (the listing
// failed, a rewrite or removal failed, ctx ended); damage is in the report.
func Scrub(ctx context.Context, be Backend, o ScrubOptions) (*ScrubReport, error) {
	start := time.Now()
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.MinAge <= 0 {
		o.MinAge = time.Hour
	}
	rep := &ScrubReport{Location: be.Location(), DryRun: o.DryRun, Rebuilt: []ScrubPack{}, Lost: []ScrubPack{}, Unread: []ScrubPack{}, DamagedObjects: []ScrubObject{}}
	defer func() { rep.Duration = time.Since(start).Seconds() }()

	// List: shards grouped by pack, and the other objects.
	packs := map[id.ID]*scrubPackList{}
	var others []ObjectInfo
	var planned int
	var plannedBytes int64
	err := be.List(ctx, TypeData, func(oi ObjectInfo) error {
		planned++
		plannedBytes += oi.Size
		pid, i, err := erasure.ParseShardName(oi.Handle.Name)
		if err != nil {
			rep.addDamaged(ScrubObject{Object: oi.Handle.String(), Error: fmt.Sprintf("not a shard name: %v", err)}, false)
			return nil
		}
		p := packs[pid]
		if p == nil {
			p = &scrubPackList{id: pid}
			packs[pid] = p
		}
		if slices.ContainsFunc(p.shards, func(s scrubShard) bool { return s.index == i }) {
			return nil // listed twice
		}
		p.shards = append(p.shards, scrubShard{index: i, size: oi.Size})
		if p.oldest.IsZero() || oi.ModTime.Before(p.oldest) {
			p.oldest = oi.ModTime
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("scrub %s: list the pack shards: %w", be.Location(), err)
	}
	for _, t := range scrubTypes {
		err := be.List(ctx, t, func(oi ObjectInfo) error {
			planned++
			plannedBytes += oi.Size
			others = append(others, oi)
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("scrub %s: list the %s objects: %w", be.Location(), t, err)
		}
	}
	if o.Planned != nil {
		o.Planned(planned, plannedBytes)
	}

	order := make([]*scrubPackList, 0, len(packs))
	for _, p := range packs {
		order = append(order, p)
	}
	slices.SortFunc(order, func(a, b *scrubPackList) int { return bytes.Compare(a.id[:], b.id[:]) })

	var mu sync.Mutex // guards rep and firstErr
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workpool.Feed(wctx, o.Workers, len(order), func(j int) {
		if wctx.Err() != nil {
			return
		}
		if err := scrubPack(wctx, be, o, order[j], rep, &mu); err != nil {
			fail(err)
			cancel()
		}
	})
	if firstErr == nil && ctx.Err() == nil {
		workpool.Feed(wctx, o.Workers, len(others), func(j int) {
			if wctx.Err() != nil {
				return
			}
			if err := scrubObject(wctx, be, o, others[j], rep, &mu); err != nil {
				fail(err)
				cancel()
			}
		})
	}
	if firstErr != nil {
		return rep, firstErr
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	return rep, nil
}

// addDamaged records a damaged (or, unread, an unreadable) object other
// than a shard.
func (r *ScrubReport) addDamaged(o ScrubObject, unread bool) {
	if unread {
		r.ObjectsUnread++
	} else {
		r.Damaged++
	}
	if o.Removed {
		r.Removed++
	}
	if len(r.DamagedObjects) < MaxScrubList {
		r.DamagedObjects = append(r.DamagedObjects, o)
	}
}

// scrubPack verifies the shards of one pack and rebuilds or reports what
// it lost. Damage goes to rep; the error is for a failed rewrite or
// removal.
func scrubPack(ctx context.Context, be Backend, o ScrubOptions, pl *scrubPackList, rep *ScrubReport, mu *sync.Mutex) error {
	sp := ScrubPack{Pack: pl.id}
	objs := map[int][]byte{}
	var read int64
	vanished := 0
	// The pack's K+M and shard size come from the first header whose
	// table hashes to the pack ID (all such headers agree: the table is
	// what the ID hashes). Only shards of that index range and size are
	// read whole, so memory stays at one pack's shards whatever the
	// listing says. Without such a header nothing can be rebuilt: the
	// shards whose header was read are damaged, and not read whole.
	var hd *erasure.Header
	foreign := map[int]bool{} // header read, not of the pack
	slices.SortFunc(pl.shards, func(a, b scrubShard) int { return a.index - b.index })
	for _, s := range pl.shards {
		h := Handle{Type: TypeData, Name: erasure.ShardName(pl.id, s.index)}
		b, err := LoadAll(ctx, be, h, 0, min(s.size, erasure.MaxHeaderSize))
		if err != nil || s.size <= 0 {
			continue // read again below, where its error counts
		}
		read += int64(len(b))
		if x, err := erasure.ParseHeader(b); err == nil && x.PackID() == pl.id {
			hd = &x
			break
		}
		foreign[s.index] = true
	}
	var long []int // shards listed longer than the pack's, read no further than one byte past it
	for _, s := range pl.shards {
		h := Handle{Type: TypeData, Name: erasure.ShardName(pl.id, s.index)}
		if hd != nil && s.index < hd.K+hd.M && s.size > hd.ObjectSize() {
			// Bytes after the payload: the first bytes may still be
			// the intact shard, which counts among the survivors, as
			// check and repair count it, and is what the object is
			// rewritten with.
			want := hd.ObjectSize()
			var b []byte
			err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
				b = make([]byte, want+1)
				m, err := io.ReadFull(rd, b)
				if err == io.ErrUnexpectedEOF || err == io.EOF {
					err = nil
				}
				b = b[:m]
				return err
			})
			switch {
			case errors.Is(err, ErrNotFound):
				vanished++
			case err != nil:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				sp.Unread = append(sp.Unread, s.index)
				sp.Error = fmt.Sprintf("shard %d could not be read: %v", s.index, err)
			default:
				read += int64(len(b))
				if int64(len(b)) > want {
					long = append(long, s.index)
					b = b[:want]
				}
				objs[s.index] = b
			}
			continue
		}
		unfit := s.size > maxShardObject || hd != nil && (s.index >= hd.K+hd.M || s.size != hd.ObjectSize()) || hd == nil && foreign[s.index]
		if unfit {
			// Not read whole: gone since the listing is a prune's
			// doing, not damage.
			if _, err := be.Stat(ctx, h); errors.Is(err, ErrNotFound) {
				vanished++
				continue
			}
		}
		switch {
		case s.size > maxShardObject:
			sp.Corrupt = append(sp.Corrupt, s.index)
			sp.Error = fmt.Sprintf("shard %d is %d bytes, larger than any shard drpipe writes", s.index, s.size)
			continue
		case hd != nil && s.index >= hd.K+hd.M:
			sp.Corrupt = append(sp.Corrupt, s.index)
			sp.Error = fmt.Sprintf("shard %d: the pack has %d shards", s.index, hd.K+hd.M)
			continue
		case hd != nil && s.size != hd.ObjectSize():
			sp.Corrupt = append(sp.Corrupt, s.index)
			sp.Error = fmt.Sprintf("shard %d is %d bytes, the pack's are %d", s.index, s.size, hd.ObjectSize())
			continue
		case hd == nil && foreign[s.index]:
			sp.Corrupt = append(sp.Corrupt, s.index)
			continue
		}
		b, err := LoadAll(ctx, be, h, 0, 0)
		switch {
		case errors.Is(err, ErrNotFound):
			vanished++
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			sp.Unread = append(sp.Unread, s.index)
			sp.Error = fmt.Sprintf("shard %d could not be read: %v", s.index, err)
		default:
			objs[s.index] = b
			read += int64(len(b))
		}
	}
	if o.Progress != nil {
		o.Progress(len(pl.shards), read)
	}
	record := func(f func()) {
		mu.Lock()
		defer mu.Unlock()
		rep.Packs++
		rep.Shards += len(pl.shards)
		rep.Bytes += read
		f()
	}
	if vanished == len(pl.shards) {
		record(func() { rep.Vanished++ })
		return nil
	}

	n := 0
	if hd != nil {
		n = hd.K + hd.M
	}
	slots := make([][]byte, n)
	for i, b := range objs {
		if i < n {
			slots[i] = b
		} else {
			sp.Corrupt = append(sp.Corrupt, i) // beyond the pack's K+M, or no intact header at all
		}
	}
	var res *erasure.Result
	err := fmt.Errorf("%w: no shard has a header whose table hashes to the pack ID", erasure.ErrTooFewShards)
	if n > 0 {
		res, err = erasure.Reconstruct(pl.id, slots)
	}
	if res != nil {
		sp.Corrupt = append(sp.Corrupt, res.Corrupt...)
		for _, i := range long {
			// Its first bytes verified: damaged all the same, and
			// rewritten with them.
			if _, bad := res.Damage[i]; !bad {
				sp.Corrupt = append(sp.Corrupt, i)
				if res.Rebuilt != nil {
					res.Rebuilt[i] = slots[i]
				}
			}
		}
		for _, i := range res.Missing {
			// Not read whole is not absent: an unread or unfit shard.
			if !slices.Contains(sp.Unread, i) && !slices.Contains(sp.Corrupt, i) {
				sp.Missing = append(sp.Missing, i)
			}
		}
	}
	slices.Sort(sp.Corrupt)
	sp.Corrupt = slices.Compact(sp.Corrupt)
	unread := func() {
		rep.PacksUnread++
		if len(rep.Unread) < MaxScrubList {
			rep.Unread = append(rep.Unread, sp)
		}
	}

	if err == nil && vanished > 0 {
		// Shards listed a moment ago are gone: a prune is removing
		// the pack, and storing them again would leave them behind.
		record(func() { rep.Vanished++ })
		return nil
	}
	if err == nil {
		// Objects named as shards beyond the pack's K+M belong to no
		// pack: reported (and with RemoveDamaged removed) as damaged
		// objects, the pack itself being whole.
		for _, s := range pl.shards {
			if s.index >= n {
				h := Handle{Type: TypeData, Name: erasure.ShardName(pl.id, s.index)}
				if err := scrubObject(ctx, be, o, ObjectInfo{Handle: h, Size: s.size}, rep, mu); err != nil {
					return err
				}
			}
		}
		sp.Corrupt = slices.DeleteFunc(sp.Corrupt, func(i int) bool { return i >= n })
		// A shard storage failed to deliver is not rewritten: it may be
		// intact, and the storage failing.
		for i := range res.Rebuilt {
			if !slices.Contains(sp.Unread, i) {
				sp.Rebuilt = append(sp.Rebuilt, i)
			}
		}
		slices.Sort(sp.Rebuilt)
		if len(sp.Rebuilt) == 0 {
			record(func() {
				if len(sp.Unread) > 0 {
					unread()
				}
			})
			return nil
		}
		if !o.DryRun {
			// A prune may have removed the pack since it was read:
			// rebuilding shards of it would leave them behind.
			good := -1
			for i, b := range slots {
				if b != nil && !slices.Contains(sp.Corrupt, i) {
					good = i
					break
				}
			}
			if _, err := be.Stat(ctx, Handle{Type: TypeData, Name: erasure.ShardName(pl.id, good)}); errors.Is(err, ErrNotFound) {
				record(func() { rep.Vanished++ })
				return nil
			}
			for _, i := range sp.Rebuilt {
				obj := res.Rebuilt[i]
				h := Handle{Type: TypeData, Name: erasure.ShardName(pl.id, i)}
				if err := be.Put(ctx, h, bytes.NewReader(obj), int64(len(obj))); err != nil {
					return fmt.Errorf("scrub %s: rewrite shard %d of pack %s from the others: %w", be.Location(), i, pl.id.Short(), err)
				}
				// Read back: a store that keeps the object already
				// there (under retention, same size) reports success.
				if bad, err := stillDamaged(ctx, be, h); err != nil || bad {
					sp.NotStored = append(sp.NotStored, i)
				}
			}
		}
		sp.Error = ""
		if len(sp.NotStored) > 0 {
			sp.Error = fmt.Sprintf("shards %v were rewritten but still read damaged (or not at all): storage kept the damaged objects (retention?); replace them by hand, or restore from another copy",
				sp.NotStored)
		}
		record(func() {
			rep.PacksRebuilt++
			rep.ShardsRebuilt += len(sp.Rebuilt) - len(sp.NotStored)
			rep.ShardsNotStored += len(sp.NotStored)
			if len(rep.Rebuilt) < MaxScrubList {
				rep.Rebuilt = append(rep.Rebuilt, sp)
			}
			if len(sp.Unread) > 0 {
				unread()
			}
		})
		return nil
	}

	// Not rebuilt here.
	switch {
	case len(sp.Unread) > 0:
		// Storage failed to deliver some shards: the pack may well be
		// whole. Nothing is removed.
		record(unread)
		return nil
	case vanished > 0:
		// Shards listed a moment ago are gone: a prune is removing
		// the pack.
		record(func() { rep.Vanished++ })
		return nil
	case len(sp.Corrupt) == 0 && time.Since(pl.oldest) < o.MinAge:
		record(func() { rep.Young++ })
		return nil
	}
	if sp.Error == "" || n > 0 {
		sp.Error = err.Error()
	}
	if o.RemoveDamaged && !o.DryRun {
		// Storage that hands over wrong bytes without an error (a
		// short read, a bit flipped on the way) makes intact shards
		// look damaged: each is read again before it is removed, and
		// one that verifies then, or cannot be read, leaves the pack
		// unread, nothing removed. So is one that was not read for its
		// listed size: replication may have stored it again since.
		for _, i := range sp.Corrupt {
			h := Handle{Type: TypeData, Name: erasure.ShardName(pl.id, i)}
			if j := slices.IndexFunc(pl.shards, func(s scrubShard) bool { return s.index == i }); pl.shards[j].size > maxShardObject {
				// Listed larger than any shard: not read, unless it
				// is no longer.
				if oi, err := be.Stat(ctx, h); err == nil && oi.Size > maxShardObject {
					continue
				}
			}
			damaged, err := stillDamaged(ctx, be, h)
			switch {
			case errors.Is(err, ErrNotFound):
				record(func() { rep.Vanished++ })
				return nil
			case err != nil:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				sp.Unread = append(sp.Unread, i)
				sp.Error = fmt.Sprintf("shard %d could not be read again before its removal: %v", i, err)
			case !damaged:
				sp.Unread = append(sp.Unread, i)
				sp.Error = fmt.Sprintf("shard %d failed verification once and verified when read again: storage delivers inconsistent data", i)
			}
		}
		if len(sp.Unread) > 0 {
			record(unread)
			return nil
		}
		for _, i := range sp.Corrupt {
			h := Handle{Type: TypeData, Name: erasure.ShardName(pl.id, i)}
			err := be.Remove(ctx, h)
			if errors.Is(err, ErrLocked) {
				// Kept until its retention date: the rest of the
				// copy is still verified.
				sp.Error = fmt.Sprintf("%s; damaged shard %d cannot be removed: %v", sp.Error, i, err)
				continue
			}
			if err != nil {
				return fmt.Errorf("scrub %s: remove damaged %s: %w", be.Location(), h, err)
			}
			sp.Removed = append(sp.Removed, i)
		}
	}
	record(func() {
		rep.PacksLost++
		rep.Removed += len(sp.Removed)
		if len(rep.Lost) < MaxScrubList {
			rep.Lost = append(rep.Lost, sp)
		}
	})
	return nil
}

// scrubObject streams one index, snapshot, key or tombstone object
// through an ObjectVerifier.
func scrubObject(ctx context.Context, be Backend, o ScrubOptions, oi ObjectInfo, rep *ScrubReport, mu *sync.Mutex) error {
	v, err := NewObjectVerifier(oi.Handle)
	var verdict error
	var written int64
	if err != nil {
		verdict = err
	} else {
		err = be.Load(ctx, oi.Handle, 0, 0, func(rd io.Reader) error {
			v.Reset()
			_, err := io.Copy(v, rd)
			return err
		})
		switch {
		case errors.Is(err, ErrNotFound):
			mu.Lock()
			rep.Objects++
			mu.Unlock()
			return nil // removed meanwhile (forget, prune)
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			mu.Lock()
			rep.Objects++
			rep.addDamaged(ScrubObject{Object: oi.Handle.String(), Error: fmt.Sprintf("could not be read: %v", err)}, true)
			mu.Unlock()
			return nil
		}
		verdict = v.Check(-1)
		written = v.Written()
	}
	if o.Progress != nil {
		o.Progress(1, written)
	}
	mu.Lock()
	rep.Objects++
	rep.Bytes += written
	mu.Unlock()
	if verdict == nil {
		return nil
	}
	so := ScrubObject{Object: oi.Handle.String(), Error: strings.TrimPrefix(verdict.Error(), oi.Handle.String()+": ")}
	if o.RemoveDamaged && !o.DryRun {
		// Read again before it is removed, as a pack's shards are.
		damaged, err := stillDamaged(ctx, be, oi.Handle)
		switch {
		case errors.Is(err, ErrNotFound):
			return nil
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			so.Error = fmt.Sprintf("%s, and could not be read again before its removal: %v", so.Error, err)
		case !damaged:
			so.Error = fmt.Sprintf("%s when read once, verified when read again: storage delivers inconsistent data", so.Error)
		}
		if err != nil || !damaged {
			mu.Lock()
			rep.addDamaged(so, true)
			mu.Unlock()
			return nil
		}
		switch err := be.Remove(ctx, oi.Handle); {
		case errors.Is(err, ErrLocked):
			so.Error = fmt.Sprintf("%s; cannot be removed: %v", so.Error, err)
		case err != nil:
			return fmt.Errorf("scrub %s: remove damaged %s: %w", be.Location(), oi.Handle, err)
		default:
			so.Removed = true
		}
	}
	mu.Lock()
	rep.addDamaged(so, false)
	mu.Unlock()
	return nil
}

// stillDamaged reads h again and reports whether it still fails
// verification; the error is for a failed read.
func stillDamaged(ctx context.Context, be Backend, h Handle) (bool, error) {
	v, err := NewObjectVerifier(h)
	if err != nil {
		return true, nil
	}
	err = be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		v.Reset()
		_, err := io.Copy(v, rd)
		return err
	})
	if err != nil {
		return false, err
	}
	return v.Check(-1) != nil, nil
}
