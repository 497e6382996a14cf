package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// RepairReport says what Repair did.
type RepairReport struct {
	// ShardsRewritten counts shard objects rebuilt from parity and stored.
	ShardsRewritten int `json:"shards_rewritten"`
	// PacksRepaired lists packs brought back to full redundancy.
	PacksRepaired []id.ID `json:"packs_repaired,omitempty"`
	// PacksReindexed counts packs found in storage but in no readable
	// index and added to a new index object.
	PacksReindexed int `json:"packs_reindexed"`
	// IndexesReplaced counts unreadable index objects removed after their
	// packs were re-indexed.
	IndexesReplaced int `json:"indexes_replaced"`
	// Lost lists packs that have fewer than K intact shards; their blobs
	// (and the files in Files) cannot be recovered from this repository.
	Lost []PackDamage `json:"lost,omitempty"`
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
// before the index objects that make them reachable. It returns
// ErrUnrepairable (with a report) when packs are beyond repair.
func (r *Repository) Repair(ctx context.Context, o CheckOptions) (*RepairReport, error) {
	o.ReadData = true
	chk, err := r.Check(ctx, o)
	if err != nil && !errors.Is(err, ErrCheckFailed) {
		return nil, err
	}
	rep := &RepairReport{Check: chk}
	for _, d := range chk.Damaged {
		if !d.Repairable {
			rep.Lost = append(rep.Lost, d)
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
	if err := r.LoadIndex(ctx); err != nil {
		return rep, err
	}
	if len(rep.Lost) > 0 {
		return rep, ErrUnrepairable
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
			return rep, fmt.Errorf("%w: %d problems outside the packs remain, e.g. %s (drpipe check lists them; restore what they touch from another tier)", ErrUnrepairable, len(after.Errors), after.Errors[0])
		}
		if err != nil && !errors.Is(err, ErrCheckFailed) {
			return rep, fmt.Errorf("check after repair: %w", err)
		}
	}
	return rep, nil
}

// rewriteShards stores the rebuilt shard objects of pack p and counts
// them, and the pack when there were any, in rep.
func (r *Repository) rewriteShards(ctx context.Context, p PackInfo, rebuilt map[int][]byte, rep *RepairReport) error {
	if len(rebuilt) == 0 {
		return nil
	}
	for i, obj := range rebuilt {
		if err := r.be.Put(ctx, p.ShardHandle(i), bytes.NewReader(obj), int64(len(obj))); err != nil {
			return fmt.Errorf("rewrite shard %d of pack %s: %w", i, p.ID.Short(), err)
		}
		rep.ShardsRewritten++
	}
	rep.PacksRepaired = append(rep.PacksRepaired, p.ID)
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
		h := tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, i)}
		b, err := tiers.LoadAll(ctx, r.be, h, 0, 0)
		if err != nil {
			continue
		}
		hdr, err := erasure.VerifyShard(pid, i, b)
		if err != nil {
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
	return &IndexPack{PackInfo: *info, Blobs: entries}, res.Rebuilt, nil
}
