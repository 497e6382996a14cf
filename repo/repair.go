package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// RepairReport says what Repair did.
type RepairReport struct {
	// ShardsRewritten counts shard objects rebuilt from parity and stored.
	ShardsRewritten int `json:"shards_rewritten"`
	// PacksRepaired lists packs brought back to full redundancy.
	PacksRepaired []id.ID `json:"packs_repaired"`
	// PacksReindexed counts packs found in storage but in no readable
	// index and added to a new index object.
	PacksReindexed int `json:"packs_reindexed"`
	// IndexesReplaced counts unreadable index objects removed after their
	// packs were re-indexed.
	IndexesReplaced int `json:"indexes_replaced"`
	// BlobsDropped counts the blobs of packs beyond repair that do not
	// read and that were removed from the index, so that a new backup of
	// the files they belong to stores them again.
	BlobsDropped int `json:"blobs_dropped"`
	// Lost lists packs that have fewer than K intact shards, or that
	// cannot be rebuilt: their blobs that do not read (and the files in
	// Files) cannot be recovered from this repository. Repair removes
	// those blobs from the index (BlobsDropped).
	Lost []PackDamage `json:"lost"`
	// Held lists packs beyond repair whose blobs stayed in the index
	// because storage failed to read some of their shards (rather than
	// finding them missing or damaged): they may read another time.
	Held []id.ID `json:"held"`
	// NotStored lists rebuilt shards ("<pack id>-<i>") that still read
	// damaged once stored: storage kept the damaged object (one under
	// retention it will not replace). Their packs are not in
	// PacksRepaired, and Repair returns ErrUnrepairable.
	NotStored []string `json:"not_stored"`
	// Check is the check report the repair worked from.
	Check *CheckReport `json:"check"`
}

// ErrUnrepairable is returned when some damage could not be repaired.
var ErrUnrepairable = errors.New("some damage cannot be repaired from this repository")

// Repair restores full redundancy: it reads every pack (like check
// --read-data), rewrites missing or corrupt shards from the survivors,
// re-indexes packs that no readable index lists (rewriting their missing
// or corrupt shards as well), and removes unreadable
// index objects once their packs are indexed again. Shards are written
// before the index objects that make them reachable. Of packs beyond
// repair it removes from the index the blobs that do not read (keeping
// those that do), so that a new backup of their files stores them again
// rather than deduplicating against them, which also makes the older
// snapshots that refer to them whole again. It returns ErrUnrepairable
// (with a report) when packs are beyond repair.
func (r *Repository) Repair(ctx context.Context, o CheckOptions) (*RepairReport, error) {
	sess, err := r.announceRepair(ctx)
	if err != nil {
		return nil, err
	}
	defer sess.End(context.WithoutCancel(ctx))
	o.ReadData = true
	chk, err := r.Check(ctx, o)
	if err != nil && !errors.Is(err, ErrCheckFailed) {
		return nil, err
	}
	rep := &RepairReport{Check: chk}
	var beyond []PackDamage // packs check found beyond repair
	for _, d := range chk.Damaged {
		if !d.Repairable {
			rep.Lost = append(rep.Lost, d)
			beyond = append(beyond, d)
			continue
		}
		var info *PackInfo
		for _, l := range r.packLocations(d.Pack) {
			info = &l
			break
		}
		if info == nil {
			continue
		}
		res, err := r.ReconstructPack(ctx, *info)
		if err != nil {
			rep.Lost = append(rep.Lost, d)
			continue
		}
		if err := r.rewriteShards(ctx, *info, res.Rebuilt, rep); err != nil {
			return rep, err
		}
	}

	// Re-index packs that are in storage but in no readable index, and
	// replace the index objects that check found damaged (and that are
	// still damaged: never one that reads now, or that is unreadable for
	// another reason, such as a newer format or a storage error).
	var badIndexes []id.ID
	for _, x := range chk.DamagedIndexes {
		_, lerr := r.LoadIndexFile(ctx, x)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if lerr != nil && indexDamaged(lerr) {
			badIndexes = append(badIndexes, x)
		}
	}
	present := map[id.ID][]int{}
	if len(chk.Unreferenced) > 0 {
		err = r.be.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
			if pid, i, perr := erasure.ParseShardName(oi.Handle.Name); perr == nil {
				present[pid] = append(present[pid], i)
			}
			return nil
		})
		if err != nil {
			return rep, err
		}
	}
	var reindex []IndexPack
	for _, pid := range chk.Unreferenced {
		ip, rebuilt, err := r.indexPackFromStorage(ctx, pid, present[pid])
		if err != nil {
			continue // an interrupted upload: not enough shards to read it
		}
		// Its missing or corrupt shards are stored before the index
		// object that makes the pack reachable again.
		if err := r.rewriteShards(ctx, ip.PackInfo, rebuilt, rep); err != nil {
			return rep, err
		}
		reindex = append(reindex, *ip)
	}
	if len(reindex) > 0 {
		if err := sess.Check(); err != nil {
			return rep, err
		}
		if _, err := r.SaveIndexFile(ctx, &IndexFile{Packs: reindex, Supersedes: badIndexes}); err != nil {
			return rep, err
		}
		rep.PacksReindexed = len(reindex)
	}
	for _, x := range badIndexes {
		if err := r.be.Remove(ctx, tiers.Handle{Type: tiers.TypeIndex, Name: x.String()}); err != nil {
			return rep, fmt.Errorf("remove unreadable index %s: %w", x.Short(), err)
		}
		rep.IndexesReplaced++
	}
	if err := r.dropUnreadable(ctx, sess, beyond, rep); err != nil {
		return rep, err
	}
	if err := r.LoadIndex(ctx); err != nil {
		return rep, err
	}
	if len(rep.Lost) > 0 {
		return rep, ErrUnrepairable
	}
	if n := len(rep.NotStored); n > 0 {
		return rep, fmt.Errorf("%w: %d rebuilt shards still read damaged once stored, e.g. data/%s: the storage kept the damaged objects (under retention?); remove them when it allows, and run repair again",
			ErrUnrepairable, n, rep.NotStored[0])
	}
	if n := chk.UnreadableIndexes - rep.IndexesReplaced; n > 0 {
		return rep, fmt.Errorf("%d unreadable index objects left in place, because they may not be damaged (drpipe check says why: upgrade drpipe if a newer one wrote them, retry after a storage error)", n)
	}
	// Damage outside the packs (a snapshot whose tree does not load, a
	// chunk in no index) is not fixed by rewriting shards, though the
	// re-indexing may have: check again, without reading the data.
	if len(chk.Errors) > 0 || chk.MissingBlobs > 0 {
		after, err := r.Check(ctx, CheckOptions{Workers: o.Workers})
		if errors.Is(err, ErrCheckFailed) && len(after.Errors) > 0 {
			return rep, fmt.Errorf("%w: %d problems outside the packs remain, e.g. %s (drpipe check lists them; back up the files they name again, which stores the chunks in no index anew, or restore them from another tier)", ErrUnrepairable, len(after.Errors), after.Errors[0])
		}
		if err != nil && !errors.Is(err, ErrCheckFailed) {
			return rep, fmt.Errorf("check after repair: %w", err)
		}
	}
	return rep, nil
}

// dropUnreadable removes from the index the blobs of the packs in lost
// (packs check found beyond repair) that do not read: those check found
// lost, or, of a pack whose blobs check did not read one by one, those
// that do not read now, each read again to tell damage from a storage
// error (which keeps the pack's blobs, Held). Blobs that read stay
// indexed. Every index object
// that lists such a pack is replaced by one new object holding all their
// packs less those blobs (a pack left without blobs drops out), which
// supersedes them; they are removed only once it is stored, so an
// interruption leaves the blobs indexed as before.
func (r *Repository) dropUnreadable(ctx context.Context, sess *Session, lost []PackDamage, rep *RepairReport) error {
	entries := map[id.ID][]BlobEntry{} // of the packs with blobs that may not read
	for _, d := range lost {
		if d.BadBlobs > 0 || !d.BlobsRead {
			entries[d.Pack] = nil
		}
	}
	infos := map[id.ID]PackInfo{}
	if len(entries) > 0 {
		seen := map[BlobEntry]bool{} // a pack listed by two index objects lists its blobs twice
		if err := r.EachBlob(func(p PackInfo, e BlobEntry) error {
			if es, ok := entries[p.ID]; ok && !seen[e] {
				seen[e] = true
				infos[p.ID] = p
				entries[p.ID] = append(es, e)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	drop := map[id.ID]map[id.ID]bool{}
	for _, d := range lost {
		// Only damage that storage confirms: a shard that failed to read
		// (a time-out, an unreachable bucket) may read another time, and
		// blobs dropped for it would be gone from the index, their pack
		// removed by prune once no index lists it.
		res, held, err := r.readFailed(ctx, d.Pack)
		if err != nil {
			return err
		}
		es := entries[d.Pack]
		if held || len(es) == 0 {
			if held {
				rep.Held = append(rep.Held, d.Pack)
			}
			continue
		}
		var cands []BlobEntry // blobs that did not read
		if d.BadBlobs > 0 {
			bad := map[id.ID]bool{}
			for _, x := range d.lostBlobs {
				bad[x] = true
			}
			for _, e := range es {
				if bad[e.ID] {
					cands = append(cands, e)
				}
			}
		} else {
			intact := map[id.ID]bool{}
			// Its error names the blobs that did not read; every blob
			// not delivered is read again below.
			_ = r.LoadBlobs(ctx, infos[d.Pack], es, func(e BlobEntry, _ []byte) error {
				intact[e.ID] = true
				return nil
			})
			if err := ctx.Err(); err != nil {
				return err
			}
			for _, e := range es {
				if !intact[e.ID] {
					cands = append(cands, e)
				}
			}
		}
		gone, held, err := r.unreadable(ctx, infos[d.Pack], res, cands)
		if err != nil {
			return err
		}
		if held {
			rep.Held = append(rep.Held, d.Pack)
			continue
		}
		if len(gone) > 0 {
			drop[d.Pack] = gone
		}
	}
	if len(drop) == 0 {
		return nil
	}

	ids, err := r.listIDs(ctx, tiers.TypeIndex)
	if err != nil {
		return err
	}
	var supersede []id.ID
	var packs []IndexPack
	at := map[PackInfo]int{}
	type packEntry struct {
		pack id.ID
		e    BlobEntry
	}
	kept := map[packEntry]bool{}
	dropped := map[packBlob]bool{}
	for _, x := range ids {
		f, err := r.LoadIndexFile(ctx, x)
		if errors.Is(err, tiers.ErrNotFound) || err != nil && indexDamaged(err) {
			continue // not in the index this repair works from
		}
		if err != nil {
			return fmt.Errorf("read index %s to remove the blobs that do not read: %w (nothing was changed; run drpipe repair again)", x.Short(), err)
		}
		if !slices.ContainsFunc(f.Packs, func(p IndexPack) bool { return drop[p.ID] != nil }) {
			continue
		}
		supersede = append(supersede, x)
		for _, p := range f.Packs {
			i, ok := at[p.PackInfo]
			if !ok {
				i = len(packs)
				at[p.PackInfo] = i
				packs = append(packs, IndexPack{PackInfo: p.PackInfo})
			}
			for _, e := range p.Blobs {
				if drop[p.ID][e.ID] {
					dropped[packBlob{p.ID, e.ID}] = true
					continue
				}
				if k := (packEntry{p.ID, e}); !kept[k] {
					kept[k] = true
					packs[i].Blobs = append(packs[i].Blobs, e)
				}
			}
		}
	}
	if len(dropped) == 0 {
		return nil
	}
	packs = slices.DeleteFunc(packs, func(p IndexPack) bool { return len(p.Blobs) == 0 && drop[p.ID] != nil })
	if err := sess.Check(); err != nil {
		return err
	}
	if len(packs) > 0 {
		if _, err := r.SaveIndexFile(ctx, &IndexFile{Packs: packs, Supersedes: supersede}); err != nil {
			return err
		}
	}
	for _, x := range supersede {
		if err := r.be.Remove(ctx, tiers.Handle{Type: tiers.TypeIndex, Name: x.String()}); err != nil {
			return fmt.Errorf("remove index %s, which an index object without the blobs that do not read replaces: %w (until it is removed they stay indexed and backups store them no more; run drpipe repair again)", x.Short(), err)
		}
	}
	rep.BlobsDropped = len(dropped)
	return nil
}

// readFailed reads pack pid's shards again and reports whether storage
// failed to read any of them (as opposed to finding it missing or
// damaged), or whether the pack is in no index to read it by. Otherwise
// it returns what reading them found.
func (r *Repository) readFailed(ctx context.Context, pid id.ID) (*erasure.Result, bool, error) {
	locs := r.packLocations(pid)
	if len(locs) == 0 {
		return nil, true, nil
	}
	res, _ := r.ReconstructPack(ctx, locs[0])
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if res == nil {
		return nil, true, nil
	}
	for _, d := range res.Damage {
		if errors.Is(d, errShardUnreadable) {
			return nil, true, nil
		}
	}
	return res, false, nil
}

// unreadable reads again the blobs es of pack p, which an earlier read
// did not deliver, and returns those that do not read because their
// bytes are gone or damaged: res, what reading every shard of p just
// found (readFailed), says which shards are missing or corrupt. When one
// of them reads now, or fails to read from shards that are intact, the
// earlier read failed for storage and may succeed another time: held is
// true and nothing is to be dropped.
func (r *Repository) unreadable(ctx context.Context, p PackInfo, res *erasure.Result, es []BlobEntry) (lost map[id.ID]bool, held bool, err error) {
	lost = map[id.ID]bool{}
	for _, e := range es {
		var raw []byte
		if res.Pack != nil {
			end := int64(e.Offset) + int64(e.Length)
			if end > int64(len(res.Pack)) {
				lost[e.ID] = true
				continue
			}
			raw = res.Pack[e.Offset:end]
		} else {
			spans, err := p.header().Locate(int64(e.Offset), int64(e.Length))
			if err != nil {
				lost[e.ID] = true
				continue
			}
			in := func(shards []int) bool {
				return slices.ContainsFunc(spans, func(s erasure.Span) bool { return slices.Contains(shards, s.Shard) })
			}
			if in(res.Missing) {
				lost[e.ID] = true
				continue
			}
			b, _, err := r.readPackRange(ctx, p, int64(e.Offset), int64(e.Length), nil)
			if cerr := ctx.Err(); cerr != nil {
				return nil, false, cerr
			}
			if err != nil {
				if in(res.Corrupt) {
					lost[e.ID] = true
					continue
				}
				return nil, true, nil
			}
			raw = b
		}
		if _, err := r.decodeBlob(nil, raw, int(e.RawLength), e.ID); err == nil {
			return nil, true, nil
		}
		lost[e.ID] = true
	}
	return lost, false, nil
}

// announceRepair announces a repair as a prune does, and fails while a
// prune (or another repair) runs. A prune rewrites the index objects too,
// each from what it read: of two at once, the later one would put back
// what the other left out, a pack the prune then removes among them (or
// index a pack again that the prune is removing as an orphan). Announced
// as a prune, a repair is seen by a prune that starts after, and sees one
// that started before.
func (r *Repository) announceRepair(ctx context.Context) (*Session, error) {
	host, _ := os.Hostname()
	sess, err := r.beginSession(ctx, host, sessionPrune)
	if err != nil {
		return nil, err
	}
	sessions, err := r.liveSessions(ctx, false, sess.h.Name)
	if err != nil {
		sess.End(context.WithoutCancel(ctx))
		return nil, err
	}
	for _, s := range sessions {
		if s.Kind == sessionPrune && s.name != sess.h.Name {
			sess.End(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("a prune (or another repair) is running against %s (host %s, pid %d, since %s; session object sessions/%s): "+
				"repair rewrites the index, as it does; nothing was changed: run drpipe repair again once it has finished. "+
				"If none is running, one was killed: its record expires %s after %s, or remove that object",
				r.be.Location(), s.Host, s.PID, s.Started.Format(time.RFC3339), s.name, SessionTTL+ClockSkew, s.Refreshed.Format(time.RFC3339))
		}
	}
	return sess, nil
}

// rewriteShards stores the rebuilt shard objects of pack p and counts
// them, and the pack when there were any, in rep.
func (r *Repository) rewriteShards(ctx context.Context, p PackInfo, rebuilt map[int][]byte, rep *RepairReport) error {
	if len(rebuilt) == 0 {
		return nil
	}
	whole := true
	for i, obj := range rebuilt {
		h := p.ShardHandle(i)
		if err := r.be.Put(ctx, h, bytes.NewReader(obj), int64(len(obj))); err != nil {
			return fmt.Errorf("rewrite shard %d of pack %s: %w", i, p.ID.Short(), err)
		}
		// Read back: a store that keeps an object already there (under
		// retention, of the same size) reports success. What it keeps
		// may be any size: no more than the shard is read.
		if b, err := loadLimited(ctx, r.be, h, int64(len(obj))); err != nil || !bytes.Equal(b, obj) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rep.NotStored = append(rep.NotStored, h.Name)
			whole = false
			continue
		}
		rep.ShardsRewritten++
	}
	if whole {
		rep.PacksRepaired = append(rep.PacksRepaired, p.ID)
	}
	return nil
}

// packLocations returns the PackInfo records for pack pid.
func (r *Repository) packLocations(pid id.ID) []PackInfo {
	var out []PackInfo
	_ = r.EachPack(func(p PackInfo) error {
		if p.ID == pid {
			out = append(out, p)
			return errStop
		}
		return nil
	})
	return out
}

// indexPackFromStorage reads a pack's shard headers and content to build
// its index entry. shards lists the shard indexes present in storage. It
// also returns the rebuilt objects of the pack's missing or corrupt
// shards (erasure.Result.Rebuilt).
func (r *Repository) indexPackFromStorage(ctx context.Context, pid id.ID, shards []int) (*IndexPack, map[int][]byte, error) {
	var info *PackInfo
	for _, i := range shards {
		// The header alone gives the pack's parameters, and
		// ReconstructPack verifies every shard: an object named like a
		// shard may be of any size, and is not read whole here.
		h := tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, i)}
		var b []byte
		err := r.be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
			b = make([]byte, erasure.MaxHeaderSize)
			m, err := io.ReadFull(rd, b)
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				err = nil
			}
			b = b[:m]
			return err
		})
		if err != nil {
			continue
		}
		hdr, err := erasure.ParseHeader(b)
		if err != nil || hdr.Index != i || hdr.PackID() != pid {
			continue
		}
		// The header is not authenticated (anyone who can write the
		// storage can make one), and ReconstructPack allocates the shard
		// size it gives for every shard present before reading: only a
		// pack this repository could have written is read.
		if hdr.Params() != r.cfg.EC || hdr.PackLen > maxPackLen(r.cfg) {
			continue
		}
		info = &PackInfo{ID: pid, Length: hdr.PackLen, ShardSize: uint32(hdr.ShardSize), K: uint8(hdr.K), M: uint8(hdr.M)}
		break
	}
	if info == nil {
		return nil, nil, fmt.Errorf("pack %s: no readable shard", pid.Short())
	}
	res, err := r.ReconstructPack(ctx, *info)
	if err != nil {
		return nil, nil, err
	}
	entries, err := r.ParsePack(res.Pack)
	if err != nil {
		return nil, nil, err
	}
	// Only the blobs that decode are indexed again: a blob an earlier
	// repair dropped for not reading must not come back for backups to
	// deduplicate against.
	var buf []byte
	good := entries[:0]
	for _, e := range entries {
		end := int64(e.Offset) + int64(e.Length)
		if end > int64(len(res.Pack)) {
			continue
		}
		out, err := r.decodeBlob(buf[:0], res.Pack[e.Offset:end], int(e.RawLength), e.ID)
		if err != nil {
			continue
		}
		buf = out
		good = append(good, e)
	}
	if len(good) == 0 {
		return nil, nil, fmt.Errorf("pack %s: no blob of it decodes", pid.Short())
	}
	return &IndexPack{PackInfo: *info, Blobs: good}, res.Rebuilt, nil
}
