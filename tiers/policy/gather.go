package policy

import (
	"context"
	"errors"
	"fmt"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// CatalogOf describes the primary repository for planning: its snapshots
// with the packs each needs, and every pack's shards.
func CatalogOf(ctx context.Context, r *repo.Repository) (*Catalog, error) {
	sns, err := r.ListSnapshots(ctx)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			// Interrupted: the snapshots not read yet are not damaged.
			return nil, fmt.Errorf("list snapshots of the primary: %w", cerr)
		}
		if len(sns) > 0 || errors.Is(err, repo.ErrCorrupt) {
			// Some loaded, or an object named in the message is damaged:
			// planning from the rest would count that snapshot's data as
			// unneeded.
			return nil, fmt.Errorf("some snapshots of the primary could not be read; refusing to plan from an incomplete list (once 'drpipe check --repo R' confirms a snapshot named here is damaged, forget it by id with 'drpipe forget --repo R ID' and run again): %w", err)
		}
		return nil, fmt.Errorf("list snapshots of the primary: %w", err)
	}
	cat := &Catalog{Packs: map[id.ID]PackMeta{}, SnapBytes: map[id.ID]int64{}}
	w := r.NewPackWalker()
	for _, s := range sns {
		packs, err := w.SnapshotPacks(ctx, s)
		if err != nil {
			return nil, err
		}
		sn := Snap{ID: s.ID(), Time: s.Time, Host: s.Host, Tags: s.Tags, Paths: s.Paths}
		for _, p := range packs {
			sn.Packs = append(sn.Packs, p.ID)
			if _, ok := cat.Packs[p.ID]; !ok {
				cat.Packs[p.ID] = PackMeta{}
			}
		}
		cat.Snaps = append(cat.Snaps, sn)
	}
	be := r.Backend()
	err = be.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		pid, _, err := erasure.ParseShardName(oi.Handle.Name)
		if err != nil {
			return nil
		}
		if pm, ok := cat.Packs[pid]; ok {
			pm.Shards = append(pm.Shards, Shard{Name: oi.Handle.Name, Size: oi.Size})
			cat.Packs[pid] = pm
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list data of the primary: %w", err)
	}
	// Blob counts (for the index estimate) from the index cache.
	_ = r.EachBlob(func(p repo.PackInfo, e repo.BlobEntry) error {
		if pm, ok := cat.Packs[p.ID]; ok {
			pm.Blobs++
			pm.Trees = pm.Trees || e.Type == repo.TreeBlob
			cat.Packs[p.ID] = pm
		}
		return nil
	})
	err = be.List(ctx, tiers.TypeSnapshot, func(oi tiers.ObjectInfo) error {
		if x, err := id.Parse(oi.Handle.Name); err == nil {
			cat.SnapBytes[x] = oi.Size
		}
		return nil
	})
	return cat, err
}

// BackendState inspects a tier that stores a copy of the repository as
// objects (local directory, S3 bucket). open unlocks the tier's copy with
// the repository key; it is called only when the tier holds a repository.
func BackendState(ctx context.Context, be tiers.Backend, cat *Catalog, open func(tiers.Backend) (*repo.Repository, error)) (*TierState, error) {
	st := &TierState{Shards: map[string]ShardState{}, Packs: map[id.ID]bool{}, Indexed: map[id.ID]bool{}}
	if _, err := repo.ReadConfig(ctx, be); err != nil {
		if errors.Is(err, repo.ErrNotRepository) {
			return st, nil // an empty tier: everything is to be copied
		}
		return nil, err
	}
	err := be.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		st.Shards[oi.Handle.Name] = ShardState{Size: oi.Size, Class: oi.StorageClass}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list data in %s: %w", be.Location(), err)
	}
	known := map[id.ID]Snap{}
	for _, s := range cat.Snaps {
		known[s.ID] = s
	}
	var unknown []id.ID
	err = be.List(ctx, tiers.TypeSnapshot, func(oi tiers.ObjectInfo) error {
		x, err := id.Parse(oi.Handle.Name)
		if err != nil {
			return nil
		}
		if s, ok := known[x]; ok {
			st.Snaps = append(st.Snaps, s)
		} else {
			unknown = append(unknown, x)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots in %s: %w", be.Location(), err)
	}
	r, err := open(be)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	_ = r.EachPack(func(p repo.PackInfo) error { st.Indexed[p.ID] = true; return nil })
	// Snapshots only this tier still has: read them with the key.
	w := r.NewPackWalker()
	for _, x := range unknown {
		s, err := r.LoadSnapshot(ctx, x)
		if err != nil {
			return nil, fmt.Errorf("tier %s: %w", be.Location(), err)
		}
		sn := Snap{ID: x, Time: s.Time, Host: s.Host, Tags: s.Tags, Paths: s.Paths}
		if packs, err := w.SnapshotPacks(ctx, s); err == nil {
			for _, p := range packs {
				sn.Packs = append(sn.Packs, p.ID)
			}
		}
		st.Snaps = append(st.Snaps, sn)
	}
	return st, nil
}

// SubsetFor builds the read-only view of the primary that holds exactly
// what a tier needs to receive snaps: their snapshot objects, the shards
// of the packs it lacks (pl.copyPacks) and one new index object for those
// packs.
func SubsetFor(ctx context.Context, r *repo.Repository, cat *Catalog, tp *TierPlan) (*tiers.Subset, error) {
	allow := map[tiers.Handle]bool{}
	for _, s := range tp.Copy {
		allow[tiers.Handle{Type: tiers.TypeSnapshot, Name: s.ID.String()}] = true
	}
	want := map[id.ID]repo.PackInfo{}
	for p := range tp.copyPacks {
		want[p] = repo.PackInfo{ID: p}
		for _, sh := range cat.Packs[p].Shards {
			allow[tiers.Handle{Type: tiers.TypeData, Name: sh.Name}] = true
		}
	}
	extra := map[tiers.Handle][]byte{}
	if len(want) > 0 {
		ips, err := r.IndexPacks(ctx, want)
		if err != nil {
			return nil, err
		}
		f := &repo.IndexFile{}
		for _, p := range sortedIDs(want) {
			f.Packs = append(f.Packs, ips[p])
		}
		name, b := r.SealIndexObject(f)
		extra[tiers.Handle{Type: tiers.TypeIndex, Name: name.String()}] = b
	}
	return tiers.NewSubset(r.Backend(), allow, extra), nil
}

func sortedIDs[V any](m map[id.ID]V) []id.ID {
	out := make([]id.ID, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sortIDs(out)
	return out
}
