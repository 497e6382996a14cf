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
	w := &packWalker{r: r, trees: map[id.ID]map[id.ID]repo.PackInfo{}}
	for _, s := range snaps {
		packs, err := w.snapshotPacks(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", s.ID().Short(), err)
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

type packWalker struct {
	r     *repo.Repository
	trees map[id.ID]map[id.ID]repo.PackInfo // tree → packs below it
}

func (w *packWalker) snapshotPacks(ctx context.Context, s *repo.Snapshot) ([]repo.PackInfo, error) {
	packs, err := w.tree(ctx, s.Tree)
	if err != nil {
		return nil, err
	}
	var out []repo.PackInfo
	for _, p := range packs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID.Less(out[j].ID) })
	return out, nil
}

func (w *packWalker) blob(x id.ID, into map[id.ID]repo.PackInfo) error {
	locs := w.r.Lookup(x)
	if len(locs) == 0 {
		return fmt.Errorf("blob %s is in no index: run 'drpipe check' on the repository", x.Short())
	}
	into[locs[0].Pack.ID] = locs[0].Pack
	return nil
}

func (w *packWalker) tree(ctx context.Context, x id.ID) (map[id.ID]repo.PackInfo, error) {
	if p, ok := w.trees[x]; ok {
		return p, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[id.ID]repo.PackInfo{}
	if err := w.blob(x, out); err != nil {
		return nil, err
	}
	t, err := w.r.LoadTree(ctx, x)
	if err != nil {
		return nil, err
	}
	for _, n := range t.Nodes {
		switch n.Type {
		case repo.NodeDir:
			if n.Subtree == nil {
				continue
			}
			sub, err := w.tree(ctx, *n.Subtree)
			if err != nil {
				return nil, err
			}
			for k, v := range sub {
				out[k] = v
			}
		case repo.NodeFile:
			for _, cl := range n.ContentLists {
				if err := w.blob(cl, out); err != nil {
					return nil, err
				}
			}
			err := w.r.EachExtent(ctx, n, func(e repo.Extent) error {
				if e.Zero {
					return nil
				}
				return w.blob(e.ID, out)
			})
			if err != nil {
				return nil, fmt.Errorf("file %s: %w", n.Name, err)
			}
		}
	}
	w.trees[x] = out
	return out, nil
}
