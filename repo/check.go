package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// CheckOptions select how deep Check looks.
type CheckOptions struct {
	// ReadData reads and verifies every shard and decrypts every blob.
	// Without it Check verifies metadata and shard presence and sizes.
	ReadData bool
	// Subset, with ReadData, limits the packs read to one part of them
	// (ParseSubset): the rest are checked as without ReadData.
	Subset *Subset
	// Workers bounds concurrent pack reads (default 2).
	Workers int
	// Progress, if set, is called after each pack is read (ReadData).
	Progress func(done, total int)
}

// PackDamage describes a pack with missing or corrupt shards.
type PackDamage struct {
	Pack    id.ID `json:"pack"`
	K       int   `json:"k"`
	M       int   `json:"m"`
	Missing []int `json:"missing_shards"`
	Corrupt []int `json:"corrupt_shards"`
	// Details says what is wrong with each corrupt shard.
	Details []string `json:"details"`
	// Repairable is true while at least K shards are intact, or, with
	// ReadData, while the pack rebuilds from its shards (the bytes of a
	// shard object before an excess count as intact).
	Repairable bool `json:"repairable"`
	// BadBlobs counts blobs that failed to decrypt even after rebuild,
	// or, for a pack that cannot be rebuilt (BlobsRead), that cannot be
	// read from its data shards either.
	BadBlobs int `json:"bad_blobs,omitempty"`
	// BlobsRead is true when the pack could not be rebuilt and check read
	// every blob the index lists for it from the data shards, as a
	// restore does (LoadBlobs): blobs the damage missed still read intact.
	BlobsRead bool `json:"blobs_read,omitempty"`
	// Files and Snapshots are what the damage touches: every file with
	// data in the pack, or, once check --read-data found blobs lost
	// (BadBlobs), only the files with data in those blobs. A pack that
	// cannot be repaired leaves out the blobs another pack holds
	// readable.
	// Each list stops at 1000 entries; MoreFiles and MoreSnapshots say
	// that the damage touches more than are listed.
	Files         []string `json:"files"`
	Snapshots     []string `json:"snapshots"`
	MoreFiles     bool     `json:"more_files,omitempty"`
	MoreSnapshots bool     `json:"more_snapshots,omitempty"`
	// Unusable is true when reading the pack failed although enough
	// shards may be intact: the shards do not rebuild a consistent pack,
	// or the pack's header does not open (Details say which). Repair
	// cannot fix such a pack.
	Unusable bool `json:"unusable,omitempty"`

	// lostBlobs names the blobs BadBlobs counts, for repair to remove
	// from the index.
	lostBlobs []id.ID
	// rebuilt is true when check --read-data rebuilt the pack from its
	// shards: every other shard can be rewritten from them.
	rebuilt bool
}

// CheckReport is the outcome of Check.
type CheckReport struct {
	Snapshots  int   `json:"snapshots"`
	Trees      int   `json:"trees"`
	IndexFiles int   `json:"index_files"`
	Packs      int   `json:"packs"`
	Shards     int   `json:"shards"`
	Blobs      int   `json:"blobs"`
	ReadData   bool  `json:"read_data"`
	BytesRead  int64 `json:"bytes_read"`
	// ReadSubset names the part of the packs read ("2/7", "10%"), and
	// PacksRead how many that was; empty and all with ReadData alone.
	ReadSubset string `json:"read_data_subset,omitempty"`
	PacksRead  int    `json:"packs_read"`
	// Errors are problems that make the repository unhealthy. Files
	// referencing blobs in no index are named up to 1000 times, and the
	// others counted in one more entry.
	Errors []string `json:"errors"`
	// Damaged lists packs with missing or corrupt shards.
	Damaged []PackDamage `json:"damaged_packs"`
	// Unreferenced lists packs present in storage but in no index:
	// leftovers of interrupted backups, harmless.
	Unreferenced []id.ID `json:"unreferenced_packs"`
	// MissingBlobs counts blobs referenced by snapshots but not indexed.
	MissingBlobs int `json:"missing_blobs,omitempty"`
	// DamagedIndexes lists index objects whose stored bytes are damaged
	// (they do not match their name, do not authenticate or do not
	// decode: ErrIndexDamaged). Their packs are among Unreferenced;
	// repair indexes them again and removes these objects. Index objects
	// unreadable for other reasons (a newer format or compression, a
	// storage error) are reported in Errors only and left alone.
	DamagedIndexes []id.ID `json:"damaged_indexes"`
	// UnreadableIndexes counts all index objects that could not be read.
	UnreadableIndexes int `json:"unreadable_indexes,omitempty"`
}

// indexDamaged reports whether err, from reading an index object, says
// that its stored bytes are damaged, so that it can be replaced by an
// index rebuilt from the packs. A newer format, an unknown compression
// or a storage error is not damage: the object may be fine.
func indexDamaged(err error) bool {
	return errors.Is(err, ErrIndexDamaged)
}

// OK reports whether the repository is healthy.
func (c *CheckReport) OK() bool {
	return len(c.Errors) == 0 && len(c.Damaged) == 0 && c.MissingBlobs == 0
}

// Lost returns the damaged packs that cannot be repaired.
func (c *CheckReport) Lost() []PackDamage {
	var out []PackDamage
	for _, d := range c.Damaged {
		if !d.Repairable || d.BadBlobs > 0 {
			out = append(out, d)
		}
	}
	return out
}

// ErrCheckFailed is returned by Check when it found problems.
var ErrCheckFailed = errors.New("check found problems")

type packState struct {
	info    PackInfo
	present map[int]int64 // shard index -> size
	blobs   int           // distinct blobs the (first) index listing the pack names in it
}

// Check verifies the repository: index objects, snapshots and trees, that
// every referenced blob is indexed, and that every pack has all its shards
// (with ReadData: that every shard's bytes match its hash and every blob
// decrypts). Damage is reported with the files and snapshots it affects.
// It returns the report and ErrCheckFailed when anything is wrong.
func (r *Repository) Check(ctx context.Context, o CheckOptions) (*CheckReport, error) {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	rep := &CheckReport{ReadData: o.ReadData}
	// Snapshots first, then the index: a backup writes its index objects
	// before its snapshot, so every snapshot listed here finds its blobs
	// in the index read after it, also one a backup running beside the
	// check wrote after the repository was opened (no false "blob is
	// not in any index").
	sids, err := r.ListSnapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.LoadIndex(ctx); err != nil {
		return nil, fmt.Errorf("read the index of %s: %w", r.be.Location(), err)
	}
	packs, unref, err := r.scanPacks(ctx, rep)
	if err != nil {
		return nil, err
	}
	rep.Unreferenced = unref
	// Tombstones: one that cannot be read stops every backup (it must
	// not deduplicate against packs it may condemn) and every prune.
	err = r.be.List(ctx, tiers.TypeTombstone, func(oi tiers.ObjectInfo) error {
		x, perr := id.Parse(oi.Handle.Name)
		if perr != nil {
			return nil
		}
		if _, lerr := r.loadTombstone(ctx, x); lerr != nil && !errors.Is(lerr, tiers.ErrNotFound) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rep.Errors = append(rep.Errors, fmt.Sprintf("%v (until then backups store no data and prune refuses)", lerr))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tombstones in %s: %w", r.be.Location(), err)
	}
	// Key slots: a damaged one no longer opens the repository with its
	// password, although the slot this check was opened with does.
	keys, err := r.ListKeys(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rep.Errors = append(rep.Errors, fmt.Sprintf("key slots: %v", err))
	}
	for _, k := range keys {
		switch {
		case k.Damaged == "":
		case k.ID == (id.ID{}):
			rep.Errors = append(rep.Errors, fmt.Sprintf("key slot: %s", k.Damaged))
		default:
			rep.Errors = append(rep.Errors, fmt.Sprintf("key slot %s is damaged: %s (its password no longer opens the repository: add it again with drpipe key add, then drpipe key remove %s)", k.ID.Short(), k.Damaged, k.ID.Short()))
		}
	}

	damaged := map[id.ID]*PackDamage{}
	badBlob := map[packBlob]bool{}
	for pid, ps := range packs {
		n := int(ps.info.K) + int(ps.info.M)
		want := int64(erasure.HeaderSize(ps.info.Params())) + int64(ps.info.ShardSize)
		d := &PackDamage{Pack: pid, K: int(ps.info.K), M: int(ps.info.M)}
		found := len(ps.present)
		for i := 0; i < n; i++ {
			sz, ok := ps.present[i]
			if !ok {
				// Not listed: a backup may have stored it after the
				// listing passed its name, and then the index object
				// that lists its pack, before the index was read.
				if oi, err := r.be.Stat(ctx, ps.info.ShardHandle(i)); err == nil {
					sz, ok = oi.Size, true
					found++
				} else if ctx.Err() != nil {
					return nil, ctx.Err()
				}
			}
			switch {
			case !ok:
				d.Missing = append(d.Missing, i)
			case sz > want && !o.ReadData:
				// Bytes after the payload: the payload before them may be
				// intact, which only reading it tells (repair uses it).
				d.Corrupt = append(d.Corrupt, i)
				d.Details = append(d.Details, fmt.Sprintf("shard %d is %d bytes, want %d (longer: check --read-data tells whether its first %d bytes are intact, and repair rebuilds from them if they are)", i, sz, want, want))
			case sz != want:
				d.Corrupt = append(d.Corrupt, i)
				d.Details = append(d.Details, fmt.Sprintf("shard %d is %d bytes, want %d", i, sz, want))
			}
		}
		rep.Shards += found
		if len(d.Missing)+len(d.Corrupt) > 0 {
			damaged[pid] = d
		}
	}

	if o.ReadData {
		if err := r.readAllPacks(ctx, o, packs, damaged, badBlob, rep); err != nil {
			return nil, err
		}
	}
	for _, d := range damaged {
		d.Repairable = (len(d.Missing)+len(d.Corrupt) <= d.M || d.rebuilt) && d.BadBlobs == 0 && !d.Unusable
	}

	// Which files and snapshots does the damage touch? Where every blob
	// of a pack was read and some were lost, the others are not touched.
	// A blob that a pack which cannot be repaired loses is not touched
	// either while another pack holds it readable: a restore reads it
	// from there. Only copies of the blob's own type count: a restore
	// reads no other (see blobHit).
	readable := func(x id.ID, l BlobLocation) bool {
		d := damaged[l.Pack.ID]
		return d == nil || d.Repairable || d.BlobsRead && !badBlob[packBlob{l.Pack.ID, x}]
	}
	damagedPack := func(x id.ID, t BlobType) (id.ID, bool) {
		locs := slices.DeleteFunc(r.Lookup(x), func(l BlobLocation) bool { return l.Entry.Type != t })
		for _, l := range locs {
			// A pack whose blobs were each decoded (rebuilt, or read one
			// by one) touches only the files of the blobs it lost there.
			d := damaged[l.Pack.ID]
			if d == nil || !(!d.BlobsRead && d.BadBlobs == 0 || badBlob[packBlob{l.Pack.ID, x}]) {
				continue
			}
			if !d.Repairable && slices.ContainsFunc(locs, func(o BlobLocation) bool { return readable(x, o) }) {
				continue
			}
			return l.Pack.ID, true
		}
		return id.ID{}, false
	}

	w := &treeWalker{r: r, memo: map[id.ID]*treeHits{}, damagedPack: damagedPack, rep: rep}
	// The entries listed so far, per pack: each list holds at most
	// maxListed, so these do too.
	listedFiles, listedSnapshots := map[packName]bool{}, map[packName]bool{}
	// Files referencing blobs in no index are named up to maxListed,
	// the rest counted: a lost index object leaves every file of every
	// snapshot that uses its blobs so.
	unindexed := 0
	for _, sid := range sids {
		sn, err := r.LoadSnapshot(ctx, sid)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("snapshot %s: %v", sid.Short(), err))
			continue
		}
		rep.Snapshots++
		th, err := w.walk(ctx, sn.Tree)
		if err != nil {
			return nil, err
		}
		short := sid.String()[:8]
		missing := map[string]bool{}
		th.each("/", func(h hit) {
			if h.missing {
				if !missing[h.path] {
					missing[h.path] = true
					if unindexed++; unindexed <= maxListed {
						rep.Errors = append(rep.Errors, fmt.Sprintf("snapshot %s: %s: blob %s is not in any index", sid.Short(), h.path, h.blob.Short()))
					}
				}
				return
			}
			d := damaged[h.pack]
			if d == nil {
				return
			}
			d.Files = appendUnique(d.Files, listedFiles, packName{h.pack, h.path}, &d.MoreFiles)
			d.Snapshots = appendUnique(d.Snapshots, listedSnapshots, packName{h.pack, short}, &d.MoreSnapshots)
		})
	}
	if n := unindexed - maxListed; n > 0 {
		rep.Errors = append(rep.Errors, fmt.Sprintf("and %d more files in snapshots reference blobs in no index (the first %d are listed above)", n, maxListed))
	}
	for k := range badBlob {
		if d := damaged[k.pack]; d != nil {
			d.lostBlobs = append(d.lostBlobs, k.blob)
		}
	}
	for _, d := range damaged {
		sort.Strings(d.Files)
		sort.Strings(d.Snapshots)
		rep.Damaged = append(rep.Damaged, *d)
	}
	sort.Slice(rep.Damaged, func(i, j int) bool { return rep.Damaged[i].Pack.Less(rep.Damaged[j].Pack) })
	if !rep.OK() {
		return rep, ErrCheckFailed
	}
	return rep, nil
}

// maxListed bounds the files and the snapshots a PackDamage lists.
const maxListed = 1000

// packName is a file or snapshot listed in a pack's damage.
type packName struct {
	pack id.ID
	name string
}

// appendUnique appends k.name to xs, the list of pack k.pack, unless
// listed, which holds what every such list holds, says it is there. A list
// of maxListed entries is not extended: more is set instead.
func appendUnique(xs []string, listed map[packName]bool, k packName, more *bool) []string {
	if listed[k] {
		return xs
	}
	if len(xs) >= maxListed {
		*more = true
		return xs
	}
	listed[k] = true
	return append(xs, k.name)
}

// scanPacks reads every index object and lists the data shards. It
// returns indexed packs with their present shards, and the packs found in
// storage but in no index.
func (r *Repository) scanPacks(ctx context.Context, rep *CheckReport) (map[id.ID]*packState, []id.ID, error) {
	present := map[id.ID]map[int]int64{}
	err := r.be.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		pid, i, err := erasure.ParseShardName(oi.Handle.Name)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("data/%s: not a shard name: %v", oi.Handle.Name, err))
			return nil
		}
		if present[pid] == nil {
			present[pid] = map[int]int64{}
		}
		present[pid][i] = oi.Size
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list data in %s: %w", r.be.Location(), err)
	}
	var ixIDs []id.ID
	err = r.be.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error {
		x, err := id.Parse(oi.Handle.Name)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("index/%s: not an id", oi.Handle.Name))
			return nil
		}
		ixIDs = append(ixIDs, x)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list index in %s: %w", r.be.Location(), err)
	}
	packs := map[id.ID]*packState{}
	for _, x := range ixIDs {
		f, err := r.LoadIndexFile(ctx, x)
		if errors.Is(err, tiers.ErrNotFound) {
			continue // superseded and removed by a concurrent prune
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			rep.UnreadableIndexes++
			if indexDamaged(err) {
				rep.DamagedIndexes = append(rep.DamagedIndexes, x)
				rep.Errors = append(rep.Errors, fmt.Sprintf("index %s unreadable: %v (run drpipe repair: it indexes the packs again and removes the object)", x.Short(), err))
			} else {
				rep.Errors = append(rep.Errors, fmt.Sprintf("index %s unreadable: %v (repair leaves it in place: it is not damaged, or may not be)", x.Short(), err))
			}
			continue
		}
		rep.IndexFiles++
		for _, p := range f.Packs {
			if _, ok := packs[p.ID]; !ok {
				ids := map[id.ID]bool{}
				for _, e := range p.Blobs {
					ids[e.ID] = true
				}
				packs[p.ID] = &packState{info: p.PackInfo, present: present[p.ID], blobs: len(ids)}
			}
		}
	}
	rep.Packs = len(packs)
	// Unique blobs from the sorted index cache (no per-blob memory).
	var last id.ID
	first := true
	_ = r.EachBlob(func(_ PackInfo, e BlobEntry) error {
		if first || e.ID != last {
			rep.Blobs++
		}
		first, last = false, e.ID
		return nil
	})
	var unref []id.ID
	for pid := range present {
		if _, ok := packs[pid]; !ok {
			unref = append(unref, pid)
		}
	}
	sort.Slice(unref, func(i, j int) bool { return unref[i].Less(unref[j]) })
	return packs, unref, nil
}

// readAllPacks verifies every shard and blob.
func (r *Repository) readAllPacks(ctx context.Context, o CheckOptions, packs map[id.ID]*packState, damaged map[id.ID]*PackDamage, badBlob map[packBlob]bool, rep *CheckReport) error {
	ids := make([]id.ID, 0, len(packs))
	for pid := range packs {
		if o.Subset.Holds(pid) {
			ids = append(ids, pid)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].Less(ids[j]) })
	rep.PacksRead = len(ids)
	if o.Subset != nil {
		rep.ReadSubset = o.Subset.String()
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan id.ID)
	done := 0
	var unbuilt []id.ID // packs that did not rebuild: their blobs are read from the data shards
	for i := 0; i < o.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pid := range work {
				ps := packs[pid]
				res, err := r.ReconstructPack(ctx, ps.info)
				var bad []id.ID
				var read int64
				var disagree []string
				if res != nil && res.Pack != nil {
					read = int64(len(res.Pack))
					entries, perr := r.ParsePack(res.Pack)
					if perr != nil {
						err = perr
					} else {
						for _, e := range entries {
							end := int64(e.Offset) + int64(e.Length)
							if _, derr := r.decodeBlob(nil, res.Pack[e.Offset:end], int(e.RawLength), e.ID); derr != nil {
								bad = append(bad, e.ID)
							}
						}
						disagree = r.indexDisagrees(pid, entries, ps.blobs)
					}
				}
				mu.Lock()
				rep.BytesRead += read
				rep.Errors = append(rep.Errors, disagree...)
				if res != nil && (len(res.Missing)+len(res.Corrupt) > 0) || err != nil || len(bad) > 0 {
					d := damaged[pid]
					if d == nil {
						d = &PackDamage{Pack: pid, K: int(ps.info.K), M: int(ps.info.M)}
						damaged[pid] = d
					}
					if res != nil {
						d.rebuilt = res.Pack != nil
						d.Missing = mergeInts(d.Missing, res.Missing)
						d.Corrupt = mergeInts(d.Corrupt, res.Corrupt)
						for _, i := range res.Corrupt {
							d.Details = append(d.Details, fmt.Sprintf("shard %d: %v", i, res.Damage[i]))
						}
					}
					if err != nil && ctx.Err() == nil {
						d.Details = append(d.Details, err.Error())
						if res == nil || res.Pack != nil || d.K+d.M-len(d.Missing)-len(d.Corrupt) >= d.K {
							d.Unusable = true
						}
						if res != nil && res.Pack == nil {
							unbuilt = append(unbuilt, pid)
						}
					}
					d.BadBlobs += len(bad)
					for _, b := range bad {
						badBlob[packBlob{pid, b}] = true
					}
				}
				done++
				if o.Progress != nil {
					o.Progress(done, len(ids))
				}
				mu.Unlock()
			}
		}()
	}
	for _, pid := range ids {
		select {
		case work <- pid:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return r.readUnbuilt(ctx, unbuilt, packs, damaged, badBlob)
}

// readUnbuilt reads from the data shards every blob the index lists in the
// packs that could not be rebuilt, as a restore reads them (LoadBlobs,
// which reads the blobs of each shard on their own when a range fails),
// and counts those that do not read intact as lost (BadBlobs, badBlob).
// The damage of such a pack often spares most of its blobs: a missing
// data shard loses only the blobs stored in it, a flipped byte only the
// blob it lies in.
func (r *Repository) readUnbuilt(ctx context.Context, unbuilt []id.ID, packs map[id.ID]*packState, damaged map[id.ID]*PackDamage, badBlob map[packBlob]bool) error {
	if len(unbuilt) == 0 {
		return nil
	}
	entries := map[id.ID][]BlobEntry{}
	for _, pid := range unbuilt {
		entries[pid] = nil
	}
	if err := r.EachBlob(func(p PackInfo, e BlobEntry) error {
		if es, ok := entries[p.ID]; ok {
			entries[p.ID] = append(es, e)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, pid := range unbuilt {
		intact := map[id.ID]bool{}
		// Its error names the blobs that did not read; every blob not
		// delivered is counted below.
		_ = r.LoadBlobs(ctx, packs[pid].info, entries[pid], func(e BlobEntry, _ []byte) error {
			intact[e.ID] = true
			return nil
		})
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		d := damaged[pid]
		d.BlobsRead = true
		blobs := map[id.ID]bool{} // a pack listed by two index objects lists its blobs twice
		for _, e := range entries[pid] {
			blobs[e.ID] = true
			if k := (packBlob{pid, e.ID}); !intact[e.ID] && !badBlob[k] {
				badBlob[k] = true
				d.BadBlobs++
			}
		}
		if d.BadBlobs == 0 {
			d.Details = append(d.Details, fmt.Sprintf("all %d blobs still read intact from the data shards", len(blobs)))
		} else {
			d.Details = append(d.Details, fmt.Sprintf("%d of %d blobs cannot be read from the data shards either", d.BadBlobs, len(blobs)))
		}
	}
	return nil
}

// indexDisagrees compares what the index says pack pid holds with the
// blobs the pack's own header lists (entries). Restore reads a blob where
// the index says, so an index entry that does not match the pack fails
// every read of that blob although the pack is intact.
func (r *Repository) indexDisagrees(pid id.ID, entries []BlobEntry, indexed int) []string {
	inPack := map[id.ID][]BlobEntry{}
	for _, e := range entries {
		inPack[e.ID] = append(inPack[e.ID], e)
	}
	var out []string
	found := 0
	for x, es := range inPack {
		listed := false
		for _, l := range r.Lookup(x) {
			if l.Pack.ID != pid {
				continue
			}
			listed = true
			if !slices.Contains(es, l.Entry) {
				out = append(out, fmt.Sprintf("pack %s: the index places %s blob %s at offset %d (%d bytes, %d plain), the pack holds it at offset %d (%d bytes, %d plain): reading it fails although the pack is intact (an index object is wrong, not the pack; repair does not rewrite index objects: restore the files using it from another tier)",
					pid.Short(), l.Entry.Type, x.Short(), l.Entry.Offset, l.Entry.Length, l.Entry.RawLength, es[0].Offset, es[0].Length, es[0].RawLength))
			}
		}
		if listed {
			found++
		}
	}
	// found == 0: the index loaded when the repository was opened does
	// not know the pack yet (a backup running beside the check wrote it).
	if found > 0 && found < indexed {
		out = append(out, fmt.Sprintf("pack %s: the index lists %d blobs in it, the pack holds only %d of them: reading the others fails", pid.Short(), indexed, found))
	}
	return out
}

// packBlob is one blob in one pack: a blob stored in several packs may be
// lost in one and intact in another.
type packBlob struct{ pack, blob id.ID }

func mergeInts(a, b []int) []int {
	m := map[int]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		m[x] = true
	}
	out := make([]int, 0, len(m))
	for x := range m {
		out = append(out, x)
	}
	sort.Ints(out)
	return out
}

type hit struct {
	path    string
	blob    id.ID
	pack    id.ID
	missing bool
}

// treeHits is what one tree holds of the damage, in the order of its
// entries: its own hits (paths "/name", "/" for the tree itself) and the
// subtrees holding any, whose hits lie below the entry's name. A subtree
// is shared by every tree holding it, so memory follows the distinct
// trees, not the snapshots times their files.
type treeHits struct {
	items []treeItem
}

// treeItem is a hit, or, with sub set, the hits of directory name.
type treeItem struct {
	hit
	name string
	sub  *treeHits
}

// each calls fn with every hit of t (none for nil), its path below
// prefix.
func (t *treeHits) each(prefix string, fn func(hit)) {
	if t == nil {
		return
	}
	for _, it := range t.items {
		if it.sub != nil {
			it.sub.each(path.Join(prefix, it.name), fn)
			continue
		}
		h := it.hit
		h.path = path.Join(prefix, h.path)
		fn(h)
	}
}

// treeWalker finds, per tree, the files whose blobs are missing or lie in
// damaged packs. Results are memoised by tree id, so shared subtrees are
// visited once across snapshots.
type treeWalker struct {
	r           *Repository
	memo        map[id.ID]*treeHits
	damagedPack func(id.ID, BlobType) (id.ID, bool)
	rep         *CheckReport
}

// walk returns what tree x holds of the damage, nil for nothing.
func (w *treeWalker) walk(ctx context.Context, x id.ID) (*treeHits, error) {
	if th, ok := w.memo[x]; ok {
		return th, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w.rep.Trees++
	var out []treeItem
	// Keep one hit per (path, pack) so reports stay small.
	type key struct {
		path    string
		pack    id.ID
		missing bool
	}
	seen := map[key]bool{}
	add := func(h hit) {
		if k := (key{h.path, h.pack, h.missing}); !seen[k] {
			seen[k] = true
			out = append(out, treeItem{hit: h})
		}
	}
	// A blob counts as indexed only as its own type: LoadBlob reads it
	// so, and a chunk indexed only as a tree (the same bytes as a
	// directory listing) does not restore as file content.
	blobHit := func(p string, b id.ID, t BlobType) {
		if !slices.ContainsFunc(w.r.Lookup(b), func(l BlobLocation) bool { return l.Entry.Type == t }) {
			w.rep.MissingBlobs++
			add(hit{path: p, blob: b, missing: true})
			return
		}
		if pk, ok := w.damagedPack(b, t); ok {
			add(hit{path: p, blob: b, pack: pk})
		}
	}
	done := func() *treeHits {
		var th *treeHits
		if len(out) > 0 {
			th = &treeHits{items: out}
		}
		w.memo[x] = th
		return th
	}
	if pk, ok := w.damagedPack(x, TreeBlob); ok {
		add(hit{path: "/", blob: x, pack: pk})
	}
	t, err := w.r.LoadTree(ctx, x)
	if err != nil {
		w.rep.Errors = append(w.rep.Errors, fmt.Sprintf("tree %s: %v", x.Short(), err))
		return done(), nil
	}
	for _, px := range t.Parts {
		if pk, ok := w.damagedPack(px, TreeBlob); ok {
			add(hit{path: "/", blob: px, pack: pk})
		}
	}
	for _, n := range t.Nodes {
		for _, x := range n.Refs {
			blobHit("/"+n.Name, x, TreeBlob)
		}
		switch n.Type {
		case NodeDir:
			if n.Subtree == nil {
				continue
			}
			sub, err := w.walk(ctx, *n.Subtree)
			if err != nil {
				return nil, err
			}
			if sub != nil {
				out = append(out, treeItem{name: n.Name, sub: sub})
			}
		case NodeFile:
			p := "/" + n.Name
			for _, cl := range n.ContentLists {
				blobHit(p, cl, TreeBlob)
			}
			err := w.r.EachExtent(ctx, n, func(e Extent) error {
				if !e.Zero {
					blobHit(p, e.ID, DataBlob)
				}
				return nil
			})
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				w.rep.Errors = append(w.rep.Errors, fmt.Sprintf("file %s: %v", n.Name, err))
			}
		}
	}
	return done(), nil
}

// Subset is a part of a repository's packs for check --read-data-subset:
// the N-th of T parts by pack id (N/T; the T parts together are every
// pack, so T nightly runs read all), or a random Percent of them.
type Subset struct {
	N, T    uint32
	Percent float64
	// seed varies the random choice between runs.
	seed uint64
}

// ParseSubset reads "N/T" (1 ≤ N ≤ T ≤ 65536) or "P%" (0 < P ≤ 100).
func ParseSubset(s string) (*Subset, error) {
	bad := fmt.Errorf("read-data subset %q: give N/T (the N-th of T parts, 1 ≤ N ≤ T ≤ 65536, e.g. 3/7) or a percentage (e.g. 10%%)", s)
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(f > 0 && f <= 100) {
			return nil, bad
		}
		return &Subset{Percent: f, seed: rand.Uint64()}, nil
	}
	ns, ts, ok := strings.Cut(s, "/")
	if !ok {
		return nil, bad
	}
	n, err1 := strconv.ParseUint(strings.TrimSpace(ns), 10, 32)
	t, err2 := strconv.ParseUint(strings.TrimSpace(ts), 10, 32)
	if err1 != nil || err2 != nil || n < 1 || t > 1<<16 || n > t {
		return nil, bad
	}
	return &Subset{N: uint32(n), T: uint32(t)}, nil
}

// Holds reports whether pack p is in the subset (every pack for nil).
func (s *Subset) Holds(p id.ID) bool {
	switch {
	case s == nil:
		return true
	case s.T > 0:
		return binary.BigEndian.Uint32(p[:4])%s.T == s.N-1
	}
	// A hash of the id and the run's seed, uniform in [0, 1).
	h := binary.BigEndian.Uint64(p[8:16]) ^ s.seed
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return float64(h>>11)/(1<<53) < s.Percent/100
}

// String gives the subset as ParseSubset reads it.
func (s *Subset) String() string {
	if s.T > 0 {
		return fmt.Sprintf("%d/%d", s.N, s.T)
	}
	return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
}
