package policy

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/retention"
)

// Snap describes one snapshot for planning.
type Snap struct {
	ID    id.ID     `json:"id"`
	Time  time.Time `json:"time"`
	Host  string    `json:"host"`
	Tags  []string  `json:"tags,omitempty"`
	Paths []string  `json:"paths"`
	// Packs lists the packs the snapshot needs (nil if unknown).
	Packs []id.ID `json:"-"`
}

// Shard is one stored shard object of a pack.
type Shard struct {
	Name string
	Size int64
}

// PackMeta describes a pack as stored at the primary.
type PackMeta struct {
	Shards []Shard
	Blobs  int
	// Trees is set for packs of tree blobs (directory listings, content
	// lists). Prune, plans and restores read them first, so transitions
	// keep them out of archive classes.
	Trees bool
}

// Bytes is the stored size of all shards.
func (p PackMeta) Bytes() int64 {
	var n int64
	for _, s := range p.Shards {
		n += s.Size
	}
	return n
}

// Catalog is the primary repository as planning sees it.
type Catalog struct {
	Snaps     []Snap
	Packs     map[id.ID]PackMeta
	SnapBytes map[id.ID]int64 // size of each snapshot object
}

// TierState is what a tier holds now.
type TierState struct {
	Snaps []Snap
	// Shards present, by name, with their storage class ("" if none).
	Shards map[string]ShardState
	// Packs whose data the tier holds in full by other means (tape sets).
	Packs map[id.ID]bool
	// Indexed lists the packs the tier's index objects describe (nil when
	// the tier cannot tell, e.g. a DR site that holds no key).
	Indexed map[id.ID]bool
	// Unreachable is set when the tier could not be inspected; nothing is
	// planned for it.
	Unreachable string
}

// ShardState is a shard object present at a tier.
type ShardState struct {
	Size  int64
	Class string
}

// Plan is what a run will do, per tier.
type Plan struct {
	Time  time.Time  `json:"time"`
	Tiers []TierPlan `json:"tiers"`
}

// TierPlan is the plan for one tier.
type TierPlan struct {
	Name     string `json:"name"`
	Kind     Kind   `json:"kind"`
	Location string `json:"location,omitempty"`
	// Holds is how many snapshots the tier holds now.
	Holds int `json:"holds"`
	// Keep are the snapshots the policy wants at this tier.
	Keep []SnapRef `json:"keep"`
	// Copy are snapshots to send; CopyShards/CopyBytes what must move
	// (shards the tier lacks, snapshot objects, a new index object).
	Copy       []SnapRef `json:"copy"`
	CopyShards int       `json:"copy_shards"`
	CopyBytes  int64     `json:"copy_bytes"`
	// Forget are snapshots the tier holds but should not.
	Forget []SnapRef `json:"forget"`
	// Transitions move shards to colder storage classes.
	Transitions []ClassMove `json:"transitions,omitempty"`
	// After is the tier's stored data once the plan ran and unreferenced
	// data was pruned, by storage class (or tier kind).
	After       map[string]int64 `json:"bytes_after"`
	MonthlyCost float64          `json:"monthly_cost"`
	Notes       []string         `json:"notes,omitempty"`
	Unreachable string           `json:"unreachable,omitempty"`

	copyPacks map[id.ID]bool
	moves     map[string]string // shard name -> target class
}

// SnapRef names a snapshot in a plan.
type SnapRef struct {
	ID      id.ID     `json:"id"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Reasons []string  `json:"reasons,omitempty"`
}

// ClassMove is a storage-class transition of some shards.
type ClassMove struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Shards int    `json:"shards"`
	Bytes  int64  `json:"bytes"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	for _, t := range p.Tiers {
		if len(t.Copy) > 0 || t.CopyShards > 0 || len(t.Forget) > 0 || len(t.Transitions) > 0 {
			return false
		}
	}
	return true
}

// MakePlan computes what each tier needs. states maps tier name to its
// state; the primary's state is the catalog itself.
func MakePlan(cfg *Config, cat *Catalog, states map[string]*TierState, now time.Time) (*Plan, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pl := &Plan{Time: now.UTC()}
	primary := map[id.ID]Snap{}
	for _, s := range cat.Snaps {
		primary[s.ID] = s
	}
	// created: when a pack's data was first backed up (oldest referencing
	// snapshot), for storage-class ages. Deterministic under a test clock.
	created := map[id.ID]time.Time{}
	note := func(s Snap) {
		for _, p := range s.Packs {
			if c, ok := created[p]; !ok || s.Time.Before(c) {
				created[p] = s.Time
			}
		}
	}
	for _, s := range cat.Snaps {
		note(s)
	}
	for _, st := range states {
		for _, s := range st.Snaps {
			note(s)
		}
	}
	// A snapshot a tier lists by id and time alone (a tape pool's sets)
	// belongs to the group and periods of its own record, which a tier
	// that read it with the key holds: its host, paths, tags, and time
	// in its host's zone.
	recorded := map[id.ID]Snap{}
	for _, name := range sortedKeys(states) {
		for _, s := range states[name].Snaps {
			if _, ok := recorded[s.ID]; !ok && (s.Host != "" || len(s.Paths) > 0) {
				recorded[s.ID] = s
			}
		}
	}
	for _, t := range cfg.Tiers {
		tp := TierPlan{Name: t.Name, Kind: t.Kind, Location: t.Location, After: map[string]int64{}}
		if t.Kind == KindTape {
			tp.Location = t.Library + " pool " + t.Pool
		}
		st := states[t.Name]
		if t.Kind == KindPrimary {
			st = &TierState{Snaps: cat.Snaps}
		}
		if st == nil || st.Unreachable != "" {
			tp.Unreachable = "not inspected"
			if st != nil {
				tp.Unreachable = st.Unreachable
			}
			tp.Notes = append(tp.Notes, "tier could not be inspected; nothing planned for it")
			pl.Tiers = append(pl.Tiers, tp)
			continue
		}
		here := map[id.ID]Snap{}
		for _, s := range st.Snaps {
			if r, ok := recorded[s.ID]; ok && s.Host == "" && len(s.Paths) == 0 {
				s.Time, s.Host, s.Tags, s.Paths = r.Time, r.Host, r.Tags, r.Paths
			}
			here[s.ID] = s
		}
		tp.Holds = len(here)
		// The union of what the primary and this tier have.
		union := map[id.ID]Snap{}
		for k, v := range here {
			union[k] = v
		}
		if t.Kind != KindPrimary {
			for k, v := range primary {
				union[k] = v
			}
		}
		keep, err := keepSet(t, union, here, now)
		if err != nil {
			return nil, fmt.Errorf("tier %s: %w", t.Name, err)
		}
		var keepIDs []id.ID
		for x := range keep {
			keepIDs = append(keepIDs, x)
		}
		sortByTime(keepIDs, union)
		for _, x := range keepIDs {
			tp.Keep = append(tp.Keep, ref(union[x], keep[x]))
			if _, ok := here[x]; !ok {
				tp.Copy = append(tp.Copy, ref(union[x], keep[x]))
			}
		}
		var forget []id.ID
		for x := range here {
			if _, ok := keep[x]; !ok {
				forget = append(forget, x)
			}
		}
		sortByTime(forget, union)
		for _, x := range forget {
			tp.Forget = append(tp.Forget, ref(union[x], nil))
		}
		switch t.Kind {
		case KindSite:
			if len(forget) > 0 {
				tp.Notes = append(tp.Notes, "the DR site never deletes on request from a primary: run drpipe forget --prune at the site to apply its retention")
			}
		case KindTape:
			if len(forget) > 0 {
				tp.Notes = append(tp.Notes, "tape retention follows the pool's rotation: expired tapes are recycled by drpipe tape import")
			}
		}

		// What must move, and what the tier stores afterwards.
		tp.copyPacks = map[id.ID]bool{}
		tp.moves = map[string]string{}
		for _, c := range tp.Copy {
			s := primary[c.ID]
			for _, p := range s.Packs {
				// A tape set must restore on its own: it gets every pack.
				if t.Kind == KindTape || t.Kind != KindPrimary && (!packPresent(st, cat.Packs[p], p) || (st.Indexed != nil && !st.Indexed[p] && !st.Packs[p])) {
					tp.copyPacks[p] = true
				}
			}
			tp.CopyBytes += cat.SnapBytes[c.ID]
		}
		// A snapshot the tier holds and keeps must still restore from it:
		// a pack its index lists whose shards it lost since is copied
		// again while the primary has it, before the primary's own
		// retention may let it go. (A pack the tier's index does not
		// list is not looked for: the primary may have repacked the
		// snapshot's data since it was copied, and the tier holds it in
		// the packs it got then. A tier that keeps no index the
		// primary can read, a DR site, cannot tell.)
		if t.Kind != KindTape && t.Kind != KindPrimary && st.Indexed != nil {
			healed := 0
			for _, x := range keepIDs {
				s, ok := primary[x]
				if _, held := here[x]; !ok || !held {
					continue
				}
				for _, p := range s.Packs {
					if tp.copyPacks[p] {
						continue
					}
					if st.Indexed[p] && !packPresent(st, cat.Packs[p], p) {
						tp.copyPacks[p] = true
						healed++
					}
				}
			}
			if healed > 0 {
				tp.Notes = append(tp.Notes, fmt.Sprintf("%d packs of snapshots the tier holds lack shards there: copied again from the primary", healed))
			}
		}
		for p := range tp.copyPacks {
			pm := cat.Packs[p]
			for _, s := range pm.Shards {
				if _, ok := st.Shards[s.Name]; !ok {
					tp.CopyShards++
					tp.CopyBytes += s.Size
				}
			}
		}
		if len(tp.copyPacks) > 0 {
			blobs := 0
			for p := range tp.copyPacks {
				blobs += cat.Packs[p].Blobs
			}
			tp.CopyBytes += int64(60 + 8 + 50*len(tp.copyPacks) + 45*blobs) // index object, estimated
		}
		needed := map[id.ID]bool{}
		for _, x := range keepIDs {
			for _, p := range union[x].Packs {
				needed[p] = true
			}
		}
		moves := map[[2]string]*ClassMove{}
		var stuck int // archived shards a transition cannot move
		for p := range needed {
			pm, ok := cat.Packs[p]
			if !ok {
				continue // tier-only data whose size the primary no longer knows
			}
			for _, s := range pm.Shards {
				key := string(t.Kind)
				if t.Kind == KindS3 {
					cur := t.storageClass()
					ss, held := st.Shards[s.Name]
					if held && ss.Class != "" {
						cur = ss.Class
					}
					want := t.classAt(created[p], now)
					if pm.Trees && archiveClass(want) {
						want = t.readableClassAt(created[p], now)
					}
					switch {
					case !held && !tp.copyPacks[p]:
						// Neither at the tier nor copied there: the
						// tier holds this data in other packs (the
						// primary or the tier's own prune repacked it),
						// and there is no object of this name to move.
					case classRank(want) > classRank(cur) && archiveClass(cur):
						// A class change is a copy onto itself, and S3
						// refuses to copy an archived object (it would
						// need a restore first): it stays where it is.
						stuck++
					case classRank(want) > classRank(cur):
						m := moves[[2]string{cur, want}]
						if m == nil {
							m = &ClassMove{From: cur, To: want}
							moves[[2]string{cur, want}] = m
						}
						m.Shards++
						m.Bytes += s.Size
						tp.moves[s.Name] = want
						cur = want
					}
					key = cur
				}
				tp.After[key] += s.Size
			}
		}
		if stuck > 0 {
			tp.Notes = append(tp.Notes, fmt.Sprintf("%d shards are in an archive class (GLACIER) already: S3 cannot move archived objects by copy; "+
				"use a bucket lifecycle rule for that transition", stuck))
		}
		for _, k := range sortedMoveKeys(moves) {
			tp.Transitions = append(tp.Transitions, *moves[k])
		}
		for class, n := range tp.After {
			tp.MonthlyCost += float64(n) / (1 << 30) * cfg.price(class)
		}
		pl.Tiers = append(pl.Tiers, tp)
	}
	// Run forgets at the primary only once every tier got its copies.
	var unreachable []string
	for _, tp := range pl.Tiers {
		if tp.Kind != KindPrimary && tp.Unreachable != "" {
			unreachable = append(unreachable, tp.Name)
		}
	}
	for i := range pl.Tiers {
		if tp := &pl.Tiers[i]; tp.Kind == KindPrimary && len(tp.Forget) > 0 && len(unreachable) > 0 {
			tp.Notes = append(tp.Notes, fmt.Sprintf("tier run forgets none of these while %s cannot be inspected: the primary keeps its snapshots until every tier has its copies", strings.Join(unreachable, ", ")))
		}
	}
	return pl, nil
}

// archiveClass reports whether objects of class c must be restored before
// S3 reads or copies them.
func archiveClass(c string) bool { return c == "GLACIER" || c == "DEEP_ARCHIVE" }

// packPresent reports whether the tier holds every shard of a pack.
func packPresent(st *TierState, pm PackMeta, p id.ID) bool {
	if st.Packs[p] {
		return true
	}
	if len(pm.Shards) == 0 {
		return false
	}
	for _, s := range pm.Shards {
		if _, ok := st.Shards[s.Name]; !ok {
			return false
		}
	}
	return true
}

// keepSet applies the tier's rules to snaps and returns the kept ids with
// their reasons. Rules that keep nothing of a group the tier holds
// snapshots of (held) are refused where the run forgets them, as drpipe
// forget refuses them.
func keepSet(t Tier, snaps, held map[id.ID]Snap, now time.Time) (map[id.ID][]string, error) {
	p, err := t.Keep.policy()
	if err != nil {
		return nil, err
	}
	gb := t.GroupBy
	if gb == "" {
		gb = "host,paths"
	}
	g, err := retention.ParseGroupBy(gb)
	if err != nil {
		return nil, err
	}
	var items []retention.Item
	for _, s := range snaps {
		items = append(items, retention.Item{ID: s.ID.String(), Time: s.Time, Host: s.Host, Tags: s.Tags, Paths: s.Paths})
	}
	groups := retention.Group(items, g, p, now)
	out := map[id.ID][]string{}
	// The decisions that matter for what the tier holds: a group keeps
	// something, or loses every snapshot of it the tier holds.
	forgets := map[string][]retention.Decision{}
	for grp, ds := range groups {
		for _, d := range ds {
			x, _ := id.Parse(d.Item.ID)
			if d.Keep {
				out[x] = d.Reasons
			}
			if _, ok := held[x]; ok || d.Keep {
				forgets[grp] = append(forgets[grp], d)
			}
		}
	}
	if t.Kind != KindSite && t.Kind != KindTape {
		if emptied := retention.KeepsNothing(forgets); len(emptied) > 0 {
			return nil, fmt.Errorf("the keep rules keep nothing of a group: refusing to forget %s, which the tier holds; "+
				"check the names in keep.tags, add a rule such as last: 1, or forget those snapshots by id (drpipe forget ID... with the tier's repository) to remove them all",
				strings.Join(emptied, ", "))
		}
	}
	return out, nil
}

func ref(s Snap, reasons []string) SnapRef {
	return SnapRef{ID: s.ID, Time: s.Time.UTC(), Host: s.Host, Reasons: reasons}
}

func sortByTime(xs []id.ID, m map[id.ID]Snap) {
	sort.Slice(xs, func(i, j int) bool {
		a, b := m[xs[i]], m[xs[j]]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		return xs[i].Less(xs[j])
	})
}

func sortedMoveKeys(m map[[2]string]*ClassMove) [][2]string {
	var ks [][2]string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i][0] != ks[j][0] {
			return classRank(ks[i][0]) < classRank(ks[j][0])
		}
		return classRank(ks[i][1]) < classRank(ks[j][1])
	})
	return ks
}

// WriteText renders the plan for operators (and the golden test).
func (p *Plan) WriteText(w io.Writer, currency string) {
	fmt.Fprintf(w, "tier plan at %s\n", p.Time.Format(time.RFC3339))
	for _, t := range p.Tiers {
		fmt.Fprintf(w, "\n%s (%s) %s\n", t.Name, t.Kind, t.Location)
		if t.Unreachable != "" {
			fmt.Fprintf(w, "  UNREACHABLE: %s\n", t.Unreachable)
			continue
		}
		fmt.Fprintf(w, "  holds %d snapshots; policy keeps %d\n", t.Holds, len(t.Keep))
		if len(t.Copy) > 0 || t.CopyShards > 0 {
			fmt.Fprintf(w, "  copy %d snapshots: %d shard objects, %s\n", len(t.Copy), t.CopyShards, mib(t.CopyBytes))
			for _, s := range t.Copy {
				fmt.Fprintf(w, "    + %s %s %s\n", s.Time.Format("2006-01-02 15:04"), s.Host, strings.Join(s.Reasons, ", "))
			}
		}
		if len(t.Forget) > 0 {
			fmt.Fprintf(w, "  forget %d snapshots\n", len(t.Forget))
			for _, s := range t.Forget {
				fmt.Fprintf(w, "    - %s %s\n", s.Time.Format("2006-01-02 15:04"), s.Host)
			}
		}
		for _, m := range t.Transitions {
			fmt.Fprintf(w, "  transition %d shards (%s) %s -> %s\n", m.Shards, mib(m.Bytes), m.From, m.To)
		}
		var parts []string
		for _, k := range sortedKeys(t.After) {
			parts = append(parts, fmt.Sprintf("%s %s", k, mib(t.After[k])))
		}
		fmt.Fprintf(w, "  stored afterwards: %s; estimated %.2f %s per month\n", strings.Join(parts, ", "), t.MonthlyCost, currency)
		for _, n := range t.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func sortIDs(xs []id.ID) { sort.Slice(xs, func(i, j int) bool { return xs[i].Less(xs[j]) }) }
