package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// Pruning is two-phase and takes no lock, so it is safe beside backups
// running on other hosts:
//
//  1. Mark: packs that no snapshot references (and packs in no index) are
//     listed in a tombstone object. Nothing is deleted. New backups load
//     tombstones and do not deduplicate against condemned packs.
//  2. Sweep (a later run, once the tombstone is older than the grace
//     period and no backup session that started before the mark is still
//     running): liveness is recomputed from the snapshots that exist now;
//     condemned packs that became referenced (a backup that started before
//     the mark deduplicated against them) are kept, the rest are removed —
//     index objects are rewritten first, then shards. Objects under
//     retention (object lock) are kept and retried on the next run.

// DefaultGrace is the default prune grace period.
const DefaultGrace = 24 * time.Hour

// tombstoneVersion is the format version of tombstone objects.
const tombstoneVersion = 1

type tombstone struct {
	Version int       `json:"version"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Packs   []id.ID   `json:"packs"`

	name id.ID
}

// PruneOptions control Prune.
type PruneOptions struct {
	// Grace is how old a tombstone must be before its packs are removed
	// (default DefaultGrace; 0 allowed for tests and emergencies: then the
	// packs condemned by this run are swept in the same run, still subject
	// to the session rule).
	Grace time.Duration
	// GraceSet marks Grace as explicitly chosen (so 0 is honoured).
	GraceSet bool
	// DryRun computes everything and changes nothing.
	DryRun bool
	// RepackBelow: packs whose used bytes are a smaller fraction than this
	// have their used blobs copied into new packs and are then condemned
	// (default 0.5; negative disables repacking).
	RepackBelow    float64
	RepackBelowSet bool
	// ClockSkew is the tolerated clock difference between hosts (default
	// ClockSkew); a backup session that started before a tombstone's time
	// plus this margin blocks its sweep.
	ClockSkew    time.Duration
	ClockSkewSet bool
	// Ended names session objects (sessions/<name>) of writers that
	// this process ran and ended but could not remove (an S3 bucket with
	// object lock keeps them): the sweep does not wait for them. A tier
	// run prunes a tier right after copying into it, and would otherwise
	// wait for its own copy on every run.
	Ended []string
	// Forgotten names snapshots that a dry run counts as gone: forget
	// --dry-run --prune shows what removing them would free. A run that
	// is not dry ignores it and goes by the snapshots there are.
	Forgotten []id.ID
}

// PruneReport says what Prune did.
type PruneReport struct {
	Snapshots      int      `json:"snapshots"`
	Packs          int      `json:"packs"`
	UnusedPacks    int      `json:"unused_packs"`
	Condemned      int      `json:"condemned_now"`
	Removed        int      `json:"packs_removed"`
	BytesFreed     int64    `json:"bytes_freed"`
	Resurrected    int      `json:"resurrected"`
	Postponed      int      `json:"postponed"`
	WaitingFor     []string `json:"waiting_for"`
	Locked         []string `json:"locked"`
	IndexRewritten int      `json:"index_objects_rewritten"`
	Repacked       int      `json:"packs_repacked"`
	// TempRemoved and TempBytes count the temporary files of interrupted
	// writes that were removed (see StaleTempAge).
	TempRemoved int   `json:"temp_files_removed"`
	TempBytes   int64 `json:"temp_bytes_removed"`
	DryRun      bool  `json:"dry_run"`
}

// StaleTempAge is how long a temporary file of an interrupted write must
// have been left alone before prune removes it. A write in progress keeps
// its file's modification time current, and none pauses this long.
const StaleTempAge = time.Hour

// tempSweeper is a backend that can remove the temporary files writes
// interrupted by a crash left behind (tiers.Local).
type tempSweeper interface {
	RemoveStaleTemp(ctx context.Context, before time.Time) (int, int64, error)
}

// ErrPruneUnsafe is returned when prune cannot establish which data is in
// use (unreadable snapshots or trees, referenced blobs missing from the
// index); it then removes nothing.
var ErrPruneUnsafe = errors.New("prune refused: cannot establish which data is in use")

// Prune marks unreferenced packs and sweeps packs condemned earlier. It
// refuses with an error wrapping ErrPruneUnsafe, changing nothing, while
// the repository holds a session object it cannot understand (a session
// version it does not know, written by a newer drpipe, or one it cannot
// read); the error names the object.
func (r *Repository) Prune(ctx context.Context, o PruneOptions) (*PruneReport, error) {
	if !o.GraceSet {
		o.Grace = DefaultGrace
	}
	if !o.ClockSkewSet {
		o.ClockSkew = ClockSkew
	}
	if !o.RepackBelowSet {
		o.RepackBelow = 0.5
	}
	rep := &PruneReport{DryRun: o.DryRun}
	// A prune announces itself before it lists sessions: of two prunes
	// started at once, at least one sees the other and stops. Two at
	// once could each rewrite the same index object from what it read,
	// and the later one put back packs the earlier removed, or remove
	// the other's repacked copies as orphans before they were indexed.
	var own string
	// stillAlone fails once this prune's session lapsed: another prune
	// may then have taken it for a crashed one and be running too. It is
	// asked before each step that changes the repository.
	stillAlone := func() error { return nil }
	if !o.DryRun {
		host, _ := os.Hostname()
		sess, err := r.beginSession(ctx, host, sessionPrune)
		if err != nil {
			return nil, err
		}
		defer sess.End(context.WithoutCancel(ctx))
		own = sess.h.Name
		stillAlone = sess.Check
	}
	stones, err := r.loadTombstones(ctx)
	if err != nil {
		return nil, err
	}
	condemned := map[id.ID]bool{}
	for _, ts := range stones {
		for _, p := range ts.Packs {
			condemned[p] = true
		}
	}
	// Sessions are listed before liveness is computed: a backup missing
	// from this list finished earlier, so its snapshot is already visible
	// to the walk below.
	sessions, err := r.liveSessions(ctx, !o.DryRun, own)
	if err != nil {
		return nil, err
	}
	if sessions, err = r.othersThanPrune(sessions, own); err != nil {
		return nil, err
	}
	sessions = withoutEnded(sessions, o.Ended)
	// Snapshots are listed before the index is loaded: every listed
	// snapshot's blobs were indexed before it was written.
	sids, err := r.ListSnapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	if o.DryRun && len(o.Forgotten) > 0 {
		gone := map[id.ID]bool{}
		for _, x := range o.Forgotten {
			gone[x] = true
		}
		sids = slices.DeleteFunc(sids, func(x id.ID) bool { return gone[x] })
	}
	if err := r.loadCompleteIndex(ctx); err != nil {
		return nil, err
	}
	// The shards are listed after the index is loaded: every pack it
	// lists was stored before, so one missing here is lost, not new.
	orphans, shards, err := r.orphanPacks(ctx)
	if err != nil {
		return nil, err
	}
	live, err := r.liveSet(ctx, rep, condemned, shards, sids)
	if err != nil {
		return nil, err
	}
	defer func() { live.release() }()
	now := r.now()

	// Phase 2 for old tombstones.
	var due []*tombstone
	for _, ts := range stones {
		if now.Sub(ts.Time) >= o.Grace {
			due = append(due, ts)
		}
	}

	// Phase 1: condemn what is unused and not condemned yet.
	dead := live.deadPacks()
	var fresh []id.ID
	sweepFresh := false
	for _, p := range append(dead, orphans...) {
		if !condemned[p] {
			fresh = append(fresh, p)
			condemned[p] = true
		}
	}
	// Repack sparse packs: copy their used blobs into new packs (durable
	// and indexed before the old pack is condemned), then condemn them.
	if o.RepackBelow > 0 && !o.DryRun {
		if err := stillAlone(); err != nil {
			return rep, err
		}
		sparse := live.sparsePacks(o.RepackBelow)
		n, err := r.repack(ctx, sparse)
		if err != nil {
			return rep, err
		}
		rep.Repacked = n
		for p := range sparse {
			if !condemned[p] {
				fresh = append(fresh, p)
				condemned[p] = true
			}
		}
	}
	rep.UnusedPacks = len(dead) + len(orphans)
	rep.Condemned = len(fresh)
	if len(fresh) > 0 && !o.DryRun {
		if err := stillAlone(); err != nil {
			return rep, err
		}
		ts, err := r.saveTombstones(ctx, fresh)
		if err != nil {
			return rep, err
		}
		if o.Grace == 0 {
			due = append(due, ts...)
			sweepFresh = true
		}
	} else if len(fresh) > 0 && o.DryRun && o.Grace == 0 {
		// A dry run counts what the run would condemn and sweep at once.
		due = append(due, &tombstone{Version: tombstoneVersion, Time: now.UTC(), Packs: fresh})
	}
	if (rep.Repacked > 0 || sweepFresh) && len(due) > 0 {
		// Liveness must be recomputed: repacked copies are indexed now (so
		// the old packs count as unused), and a tombstone written in this
		// run needs the session list taken after it became durable — a
		// backup that started before it could have deduplicated against
		// its packs — and the snapshots listed after that.
		if sessions, err = r.liveSessions(ctx, false, own); err != nil {
			return rep, err
		}
		if sessions, err = r.othersThanPrune(sessions, own); err != nil {
			return rep, err
		}
		sessions = withoutEnded(sessions, o.Ended)
		if sids, err = r.ListSnapshotIDs(ctx); err != nil {
			return rep, err
		}
		if err := r.loadCompleteIndex(ctx); err != nil {
			return rep, err
		}
		if _, shards, err = r.orphanPacks(ctx); err != nil {
			return rep, err
		}
		live.release()
		if live, err = r.liveSet(ctx, &PruneReport{}, condemned, shards, sids); err != nil {
			return rep, err
		}
	}
	for _, ts := range due {
		if err := stillAlone(); err != nil {
			return rep, err
		}
		if err := r.sweep(ctx, ts, live, sessions, shards, o, rep); err != nil {
			return rep, err
		}
	}
	if !o.DryRun {
		if ts, ok := r.be.(tempSweeper); ok {
			// Real time, not the repository clock: file times are real.
			n, size, err := ts.RemoveStaleTemp(ctx, time.Now().Add(-StaleTempAge))
			rep.TempRemoved, rep.TempBytes = n, size
			if err != nil {
				return rep, err
			}
		}
		if err := r.LoadIndex(ctx); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// othersThanPrune drops this prune's own session (named own) from
// sessions and fails, changing nothing, when another prune is running.
func (r *Repository) othersThanPrune(sessions []sessionRecord, own string) ([]sessionRecord, error) {
	out := sessions[:0:0]
	for _, s := range sessions {
		switch {
		case own != "" && s.name == own:
			continue
		case s.Kind == sessionPrune:
			return nil, fmt.Errorf("%w: another prune (or a repair) is running against %s (host %s, pid %d, since %s; session object sessions/%s): "+
				"run prune again once it has finished. If none is running, one was killed: its record expires %s after %s, or remove that object",
				ErrPruneUnsafe, r.be.Location(), s.Host, s.PID, s.Started.Format(time.RFC3339), s.name,
				SessionTTL+ClockSkew, s.Refreshed.Format(time.RFC3339))
		}
		out = append(out, s)
	}
	return out, nil
}

// loadCompleteIndex loads the index and refuses, wrapping ErrPruneUnsafe,
// while an index object is damaged: the packs only it lists would look
// unused.
func (r *Repository) loadCompleteIndex(ctx context.Context) error {
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	for x, err := range r.DamagedIndexes() {
		return fmt.Errorf("%w: index object %s is damaged (%v); run drpipe repair first", ErrPruneUnsafe, x.Short(), err)
	}
	return nil
}

// withoutEnded drops the sessions named in ended (PruneOptions.Ended).
func withoutEnded(sessions []sessionRecord, ended []string) []sessionRecord {
	if len(ended) == 0 {
		return sessions
	}
	out := sessions[:0:0]
	for _, s := range sessions {
		if !slices.Contains(ended, s.name) {
			out = append(out, s)
		}
	}
	return out
}

// sweep removes the packs of one due tombstone that are still unused.
func (r *Repository) sweep(ctx context.Context, ts *tombstone, live *liveSet, sessions []sessionRecord, shards map[id.ID][]shardInfo, o PruneOptions, rep *PruneReport) error {
	var blockers []string
	now := r.now()
	for _, s := range sessions {
		switch {
		case s.Refreshed.After(now.Add(o.ClockSkew)):
			// The writer's clock is ahead of this one by more than the
			// tolerated skew: its start time cannot be compared with the
			// tombstone's, it may have begun before the mark.
			what := "backup on"
			if s.Kind == sessionCopy {
				what = "copy into this repository from"
			}
			blockers = append(blockers, fmt.Sprintf("%s %s (pid %d), whose clock is at least %s ahead of this host's (more than the tolerated %s): "+
				"the sweep waits until it ends; synchronise the clocks (NTP)", what, s.Host, s.PID, s.Refreshed.Sub(now).Round(time.Second), o.ClockSkew))
		case s.Kind == sessionCopy:
			// A copy skips the packs already here, condemned ones too,
			// and then writes snapshots naming them, whenever it began.
			blockers = append(blockers, fmt.Sprintf("copy into this repository from %s (pid %d) running since %s", s.Host, s.PID, s.Started.Format(time.RFC3339)))
		case s.Started.Before(ts.Time.Add(o.ClockSkew)):
			b := fmt.Sprintf("backup on %s (pid %d) running since %s", s.Host, s.PID, s.Started.Format(time.RFC3339))
			if s.behind > 0 {
				b += fmt.Sprintf(" by its clock, which is about %s behind this host's (its session is kept fresh in storage): synchronise the clocks (NTP)", s.behind.Round(time.Minute))
			}
			blockers = append(blockers, b)
		}
	}
	if len(blockers) > 0 {
		rep.Postponed += len(ts.Packs)
		rep.WaitingFor = append(rep.WaitingFor, blockers...)
		return nil
	}
	var remove, keep []id.ID
	for _, p := range ts.Packs {
		if live.packLive(p) {
			rep.Resurrected++
			continue
		}
		remove = append(remove, p)
	}
	if o.DryRun {
		// Counted as the sweep below counts them: a pack whose shards
		// are gone already, or that another tombstone listed, once.
		for _, p := range remove {
			if len(shards[p]) == 0 {
				continue
			}
			rep.Removed++
			for _, sh := range shards[p] {
				rep.BytesFreed += sh.size
			}
			delete(shards, p)
		}
		return nil
	}
	gone := map[id.ID]bool{}
	for _, p := range remove {
		gone[p] = true
	}
	// Index objects first: rewrite those that list removed packs.
	n, pinned, err := r.rewriteIndexWithout(ctx, gone)
	if err != nil {
		return err
	}
	rep.IndexRewritten += n
	for _, p := range remove {
		if why, ok := pinned[p]; ok {
			// An index object that could not be removed still lists
			// the pack: removing its shards would leave the index
			// advertising blobs that are gone.
			rep.Locked = append(rep.Locked, fmt.Sprintf("pack %s: still listed by %s", p.Short(), why))
			keep = append(keep, p)
			continue
		}
		freed, locked, err := r.removePack(ctx, p, shards[p])
		if err != nil {
			return err
		}
		if locked != "" {
			rep.Locked = append(rep.Locked, fmt.Sprintf("pack %s: %s", p.Short(), locked))
			keep = append(keep, p)
			continue
		}
		if len(shards[p]) == 0 {
			continue // removed by an earlier sweep whose tombstone stayed
		}
		delete(shards, p) // gone, also for another tombstone listing it
		rep.Removed++
		rep.BytesFreed += freed
	}
	// Replace the tombstone by one for what is left (locked packs). It is
	// removed first: should it be under retention too, it stays and
	// still lists those packs, and a replacement for it would only be
	// one more object every sweep adds until the lock expires. Should the
	// prune stop in between, the packs left are in no tombstone for a
	// while, which is safe: no snapshot uses them, and the next prune
	// condemns them again (they are unused, or in no index).
	h := tiers.Handle{Type: tiers.TypeTombstone, Name: ts.name.String()}
	if err := r.be.Remove(ctx, h); err != nil {
		if !errors.Is(err, tiers.ErrLocked) {
			return err
		}
		rep.Locked = append(rep.Locked, fmt.Sprintf("tombstone %s: %v", ts.name.Short(), err))
		return nil
	}
	if len(keep) > 0 {
		if _, err := r.saveTombstones(ctx, keep); err != nil {
			return err
		}
	}
	return nil
}

// removePack deletes the given shards of a pack. A shard under retention
// stops the removal of that pack and is reported.
func (r *Repository) removePack(ctx context.Context, pid id.ID, shards []shardInfo) (int64, string, error) {
	var freed int64
	for _, s := range shards {
		h := tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, s.index)}
		if err := r.be.Remove(ctx, h); err != nil {
			if errors.Is(err, tiers.ErrLocked) {
				return freed, err.Error(), nil
			}
			return freed, "", fmt.Errorf("remove %s: %w", h, err)
		}
		freed += s.size
	}
	return freed, "", nil
}

// rewriteIndexWithout replaces every index object that lists a pack in
// gone by one without those packs. It returns how many were replaced and,
// for the packs in gone still listed by an index object that could not be
// removed (under retention), why: those packs must stay. It stops, before
// changing an object, once a session begun on r lapsed.
func (r *Repository) rewriteIndexWithout(ctx context.Context, gone map[id.ID]bool) (int, map[id.ID]string, error) {
	ids, err := r.listIDs(ctx, tiers.TypeIndex)
	if err != nil {
		return 0, nil, err
	}
	n := 0
	pinned := map[id.ID]string{}
	for _, x := range ids {
		f, err := r.LoadIndexFile(ctx, x)
		if errors.Is(err, tiers.ErrNotFound) {
			// Another prune (or a repair) replaced it meanwhile; what
			// replaced it may list packs this sweep would remove.
			return n, pinned, fmt.Errorf("%w: index object %s vanished while this prune rewrote the index: another prune or a repair is running against %s; "+
				"nothing was removed, run prune again once it has finished", ErrPruneUnsafe, x.Short(), r.be.Location())
		}
		if err != nil {
			return n, pinned, fmt.Errorf("%w: %v (run drpipe repair)", ErrPruneUnsafe, err)
		}
		var keep []IndexPack
		for _, p := range f.Packs {
			if !gone[p.ID] {
				keep = append(keep, p)
			}
		}
		if len(keep) == len(f.Packs) {
			continue
		}
		// Suspended since the sweep began, this prune may have been
		// taken for a crashed one: another may have removed packs that
		// f, read before, still lists.
		if err := r.checkSessions(); err != nil {
			return n, pinned, err
		}
		var replacement id.ID
		if len(keep) > 0 {
			if replacement, err = r.SaveIndexFile(ctx, &IndexFile{Packs: keep, Supersedes: []id.ID{x}}); err != nil {
				return n, pinned, err
			}
		}
		if err := r.be.Remove(ctx, tiers.Handle{Type: tiers.TypeIndex, Name: x.String()}); err != nil {
			if !errors.Is(err, tiers.ErrLocked) {
				return n, pinned, err
			}
			// The original stays and lists everything the replacement
			// does: drop the replacement, or every sweep until the lock
			// expires would add one more (best effort: on a bucket that
			// locks every new object it stays, which is harmless).
			if !replacement.IsNull() {
				_ = r.be.Remove(ctx, tiers.Handle{Type: tiers.TypeIndex, Name: replacement.String()})
			}
			for _, p := range f.Packs {
				if gone[p.ID] {
					pinned[p.ID] = fmt.Sprintf("index object %s (%v)", x.Short(), err)
				}
			}
			continue
		}
		n++
	}
	return n, pinned, nil
}

// tombstoneMaxPacks bounds the packs one tombstone object lists: at 67
// bytes of JSON each, about 33 MB, within the maxObjectPlain readers
// take. More packs are condemned in several tombstones.
const tombstoneMaxPacks = 500_000

// saveTombstones condemns packs in tombstone objects of at most
// tombstoneMaxPacks packs each and returns them.
func (r *Repository) saveTombstones(ctx context.Context, packs []id.ID) ([]*tombstone, error) {
	sort.Slice(packs, func(i, j int) bool { return packs[i].Less(packs[j]) })
	host, _ := os.Hostname()
	var out []*tombstone
	for len(packs) > 0 {
		n := min(len(packs), tombstoneMaxPacks)
		ts := &tombstone{Version: tombstoneVersion, Time: r.now().UTC(), Host: host, Packs: packs[:n]}
		b, err := json.Marshal(ts)
		if err != nil {
			return out, err
		}
		x, err := r.saveObject(ctx, tiers.TypeTombstone, b)
		if err != nil {
			return out, err
		}
		ts.name = x
		out = append(out, ts)
		packs = packs[n:]
	}
	return out, nil
}

// loadTombstones reads every tombstone object.
func (r *Repository) loadTombstones(ctx context.Context) ([]*tombstone, error) {
	var out []*tombstone
	var names []id.ID
	err := r.be.List(ctx, tiers.TypeTombstone, func(oi tiers.ObjectInfo) error {
		if x, err := id.Parse(oi.Handle.Name); err == nil {
			names = append(names, x)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tombstones in %s: %w", r.be.Location(), err)
	}
	for _, x := range names {
		ts, err := r.loadTombstone(ctx, x)
		if errors.Is(err, tiers.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ts)
	}
	return out, nil
}

// loadTombstone reads one tombstone object. The error for one that is
// damaged (its bytes do not match its name, do not open or do not parse)
// says how to get rid of it: nothing else does, and while it stays every
// backup refuses to store data and every prune fails.
func (r *Repository) loadTombstone(ctx context.Context, x id.ID) (*tombstone, error) {
	h := tiers.Handle{Type: tiers.TypeTombstone, Name: x.String()}
	damaged := func(err error) error {
		return fmt.Errorf("tombstone %s is damaged: %w; once no prune is running, remove the object %s from %s: "+
			"that is safe, the next prune condemns the unused packs it listed again", x.Short(), err, h, r.be.Location())
	}
	b, err := r.loadObject(ctx, tiers.TypeTombstone, x, maxObjectPlain)
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrDecrypt) {
		return nil, damaged(err)
	}
	if err != nil {
		return nil, err
	}
	var ts tombstone
	if err := json.Unmarshal(b, &ts); err != nil {
		return nil, damaged(fmt.Errorf("malformed: %w", err))
	}
	if ts.Version != tombstoneVersion {
		return nil, fmt.Errorf("tombstone %s: %w: version %d (written by a newer drpipe: use that one)", x.Short(), ErrUnsupportedVersion, ts.Version)
	}
	ts.name = x
	return &ts, nil
}

// loadCondemned returns the packs listed in tombstones. When they cannot
// all be read it returns the error: a writer must then not deduplicate
// against indexed packs, since some may be condemned and swept while it
// runs (its session, started after the mark, does not hold the sweep
// back).
func (r *Repository) loadCondemned(ctx context.Context) (map[id.ID]bool, error) {
	stones, err := r.loadTombstones(ctx)
	if err != nil {
		return nil, err
	}
	m := map[id.ID]bool{}
	for _, ts := range stones {
		for _, p := range ts.Packs {
			m[p] = true
		}
	}
	return m, nil
}

type shardInfo struct {
	index    int
	size     int64
	archived bool // in an archive storage class: read only after a restore
}

// readableShards counts the shards that can be read without a restore.
func readableShards(shards []shardInfo) int {
	n := 0
	for _, s := range shards {
		if !s.archived {
			n++
		}
	}
	return n
}

// orphanPacks lists packs that have shards in storage but are in no index,
// and returns the shards present for every pack.
func (r *Repository) orphanPacks(ctx context.Context) ([]id.ID, map[id.ID][]shardInfo, error) {
	shards := map[id.ID][]shardInfo{}
	err := r.be.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		if pid, i, err := erasure.ParseShardName(oi.Handle.Name); err == nil {
			shards[pid] = append(shards[pid], shardInfo{i, oi.Size, tiers.ArchiveClass(oi.StorageClass)})
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list data in %s: %w", r.be.Location(), err)
	}
	indexed := map[id.ID]bool{}
	_ = r.EachPack(func(p PackInfo) error { indexed[p.ID] = true; return nil })
	var out []id.ID
	for pid := range shards {
		if !indexed[pid] {
			out = append(out, pid)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out, shards, nil
}

// repack stores fresh copies of the given blobs (grouped by their current
// pack) and makes them durable and indexed. It returns the number of packs
// whose blobs were copied.
func (r *Repository) repack(ctx context.Context, packs map[id.ID][]BlobEntry) (int, error) {
	n := 0
	for pid, entries := range packs {
		locs := r.packLocations(pid)
		if len(locs) == 0 {
			continue
		}
		err := r.LoadBlobs(ctx, locs[0], entries, func(e BlobEntry, plain []byte) error {
			return r.saveBlobCopy(ctx, e.Type, plain, e.ID)
		})
		if err != nil {
			return n, fmt.Errorf("repack pack %s: %w", pid.Short(), err)
		}
		n++
	}
	if n > 0 {
		if err := r.Flush(ctx); err != nil {
			return n, err
		}
	}
	return n, nil
}
