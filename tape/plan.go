package tape

import (
	"context"
	"fmt"
	"sort"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// BuildPlan lists what a tape set must hold so that each of snaps can be
// restored from the set alone: the repository config, every key slot and
// index object, the snapshot objects, and every pack (tree and data) the
// snapshots reference. It walks the snapshots' trees with the repository
// key; the tapes themselves carry only the stored objects.
func BuildPlan(ctx context.Context, r *repo.Repository, snaps []*repo.Snapshot) (*WritePlan, error) {
	be := r.Backend()
	plan := &WritePlan{Manifest: Manifest{Repository: r.Config().ID}}
	add := func(t tiers.Type, want func(string) bool) error {
		var objs []PlanObject
		err := be.List(ctx, t, func(oi tiers.ObjectInfo) error {
			if want == nil || want(oi.Handle.Name) {
				objs = append(objs, PlanObject{Handle: oi.Handle, Size: oi.Size})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list %s in %s: %w", t, be.Location(), err)
		}
		sort.Slice(objs, func(i, j int) bool { return objs[i].Handle.Name < objs[j].Handle.Name })
		plan.Meta = append(plan.Meta, objs...)
		return nil
	}
	snapSet := map[string]bool{}
	for _, s := range snaps {
		snapSet[s.ID().String()] = true
	}
	for _, step := range []struct {
		t    tiers.Type
		want func(string) bool
	}{{tiers.TypeConfig, nil}, {tiers.TypeKey, nil}, {tiers.TypeIndex, nil}, {tiers.TypeSnapshot, func(n string) bool { return snapSet[n] }}} {
		if err := add(step.t, step.want); err != nil {
			return nil, err
		}
	}
	packIdx := map[id.ID]int{}
	w := r.NewPackWalker()
	for _, s := range snaps {
		packs, err := w.SnapshotPacks(ctx, s)
		if err != nil {
			return nil, err
		}
		ms := ManifestSnapshot{ID: s.ID(), Time: s.Time.UTC()}
		for _, p := range packs {
			i, ok := packIdx[p.ID]
			if !ok {
				i = len(plan.Packs)
				packIdx[p.ID] = i
				hs := erasure.HeaderSize(p.Params())
				plan.Packs = append(plan.Packs, PlanPack{ID: p.ID, K: int(p.K), M: int(p.M), ShardSize: int64(hs) + int64(p.ShardSize)})
				plan.Manifest.Packs = append(plan.Manifest.Packs, ManifestPack{ID: p.ID, K: int(p.K), M: int(p.M)})
			}
			ms.Packs = append(ms.Packs, i)
		}
		sort.Ints(ms.Packs)
		plan.Manifest.Snapshots = append(plan.Manifest.Snapshots, ms)
	}
	return plan, nil
}
