package tiers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// scrubRepo is a local directory holding a fake repository of three
// 4+2 packs; it returns the backend, the objects and the pack IDs in
// the order Scrub reports them.
func scrubRepo(t *testing.T) (tiers.Backend, map[tiers.Handle][]byte, []id.ID) {
	t.Helper()
	be, err := tiers.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	objs := fakeRepo(t, be, 3, 41)
	var packs []id.ID
	for h := range objs {
		if h.Type == tiers.TypeData {
			pid, _, _ := erasure.ParseShardName(h.Name)
			if !slices.Contains(packs, pid) {
				packs = append(packs, pid)
			}
		}
	}
	slices.SortFunc(packs, func(a, b id.ID) int { return bytes.Compare(a[:], b[:]) })
	return be, objs, packs
}

func shard(p id.ID, i int) tiers.Handle {
	return tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(p, i)}
}

// damage flips a byte of the stored object h.
func damage(t *testing.T, be tiers.Backend, objs map[tiers.Handle][]byte, h tiers.Handle) {
	t.Helper()
	b := bytes.Clone(objs[h])
	b[len(b)/2] ^= 0x40
	if err := tiers.PutBytes(t.Context(), be, h, b); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, be tiers.Backend, h tiers.Handle) {
	t.Helper()
	if err := be.Remove(t.Context(), h); err != nil {
		t.Fatal(err)
	}
}

func TestScrubCleanRepository(t *testing.T) {
	be, objs, _ := scrubRepo(t)
	var n int
	var b int64
	rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{Progress: func(o int, x int64) { n += o; b += x }, Workers: 1})
	if err != nil || !rep.Clean() {
		t.Fatalf("scrub of an intact repository: %v, %+v", err, rep)
	}
	if rep.Packs != 3 || rep.Shards != 18 || rep.Objects != 5 || rep.PacksRebuilt != 0 {
		t.Errorf("report %+v, want 3 packs, 18 shards and 5 other objects (the config is not verified)", rep)
	}
	if n != 23 || b != rep.Bytes || b == 0 {
		t.Errorf("progress reported %d objects, %d bytes; report says %d bytes", n, b, rep.Bytes)
	}
	equalContent(t, be, objs)
}

// Up to M lost shards of a pack, missing or damaged, are rewritten
// byte-identical; more are reported, and with RemoveDamaged the damaged
// ones (never the intact ones) go, so a copy sends them again.
func TestScrubRebuildsAndReportsLostPacks(t *testing.T) {
	be, objs, packs := scrubRepo(t)
	remove(t, be, shard(packs[0], 0))
	damage(t, be, objs, shard(packs[0], 5))
	// Pack 1: three shards gone (two missing, one damaged).
	remove(t, be, shard(packs[1], 1))
	remove(t, be, shard(packs[1], 2))
	damage(t, be, objs, shard(packs[1], 3))
	var ix tiers.Handle
	for h := range objs {
		if h.Type == tiers.TypeIndex {
			ix = h
			break
		}
	}
	damage(t, be, objs, ix)

	// A dry run reports and changes nothing.
	dry, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{DryRun: true, RemoveDamaged: true, MinAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if dry.PacksRebuilt != 1 || dry.ShardsRebuilt != 2 || dry.PacksLost != 1 || dry.Damaged != 1 || dry.Removed != 0 {
		t.Fatalf("dry run: %+v", dry)
	}
	if _, err := be.Stat(t.Context(), shard(packs[0], 0)); !errors.Is(err, tiers.ErrNotFound) {
		t.Fatalf("dry run rewrote a shard (%v)", err)
	}

	rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{RemoveDamaged: true, MinAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Clean() {
		t.Fatalf("scrub with a lost pack and a damaged index reports clean: %+v", rep)
	}
	if rep.PacksRebuilt != 1 || len(rep.Rebuilt) != 1 || rep.Rebuilt[0].Pack != packs[0] || !slices.Equal(rep.Rebuilt[0].Rebuilt, []int{0, 5}) {
		t.Errorf("rebuilt: %+v, want shards 0 and 5 of pack %s", rep.Rebuilt, packs[0].Short())
	}
	for _, i := range []int{0, 5} {
		got, err := tiers.LoadAll(t.Context(), be, shard(packs[0], i), 0, 0)
		if err != nil || !bytes.Equal(got, objs[shard(packs[0], i)]) {
			t.Errorf("shard %d after scrub: %v, same bytes %v", i, err, bytes.Equal(got, objs[shard(packs[0], i)]))
		}
	}
	if rep.PacksLost != 1 || len(rep.Lost) != 1 {
		t.Fatalf("lost: %+v", rep.Lost)
	}
	l := rep.Lost[0]
	if l.Pack != packs[1] || !slices.Equal(l.Missing, []int{1, 2}) || !slices.Equal(l.Corrupt, []int{3}) || !slices.Equal(l.Removed, []int{3}) || l.Error == "" {
		t.Errorf("lost pack: %+v, want pack %s missing 1,2, damaged and removed 3", l, packs[1].Short())
	}
	for _, i := range []int{0, 4, 5} {
		if _, err := be.Stat(t.Context(), shard(packs[1], i)); err != nil {
			t.Errorf("intact shard %d of the lost pack: %v", i, err)
		}
	}
	if _, err := be.Stat(t.Context(), shard(packs[1], 3)); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("damaged shard 3 of the lost pack is still there (%v)", err)
	}
	if rep.Damaged != 1 || len(rep.DamagedObjects) != 1 || rep.DamagedObjects[0].Object != ix.String() || !rep.DamagedObjects[0].Removed {
		t.Errorf("damaged objects: %+v, want %s removed", rep.DamagedObjects, ix)
	}
	if rep.Removed != 2 {
		t.Errorf("removed %d objects, want 2", rep.Removed)
	}

	// Copying the lost objects back from an intact copy makes it whole.
	for h, b := range objs {
		if h == shard(packs[1], 1) || h == shard(packs[1], 2) || h == shard(packs[1], 3) || h == ix {
			if err := tiers.PutBytes(t.Context(), be, h, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	again, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{})
	if err != nil || !again.Clean() || again.PacksRebuilt != 0 {
		t.Fatalf("scrub after the copy: %v, %+v", err, again)
	}
	equalContent(t, be, objs)
}

// Shards storage fails to deliver are neither rewritten nor removed, and
// the pack is reported unread; a pack short of shards, none damaged, and
// written moments ago is taken for one being written.
func TestScrubUnreadAndYoungPacks(t *testing.T) {
	local, objs, packs := scrubRepo(t)
	be := tierstest.NewFaulty(local, 1)
	// Pack 0: three shards storage fails on (not missing, not damaged).
	for _, i := range []int{0, 1, 2} {
		be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeData, Name: erasure.ShardName(packs[0], i)})
	}
	// Pack 2: one shard unreadable, one missing: rebuilt, but not the
	// unreadable one.
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeData, Name: erasure.ShardName(packs[2], 4)})
	damage(t, local, objs, shard(packs[2], 1))
	// Pack 1: three shards missing, the rest just written.
	for _, i := range []int{0, 1, 2} {
		remove(t, local, shard(packs[1], i))
	}
	rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{RemoveDamaged: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksUnread != 2 || rep.PacksLost != 0 || rep.Young != 1 || rep.Removed != 0 || rep.Clean() {
		t.Fatalf("report %+v: want packs 0 and 2 unread, pack 1 young, nothing removed, not clean", rep)
	}
	if rep.PacksRebuilt != 1 || !slices.Equal(rep.Rebuilt[0].Rebuilt, []int{1}) || !slices.Equal(rep.Rebuilt[0].Unread, []int{4}) {
		t.Errorf("rebuilt %+v, want shard 1 of pack 2 only", rep.Rebuilt)
	}
	for _, i := range []int{0, 1, 2, 3, 4, 5} {
		got, err := tiers.LoadAll(t.Context(), local, shard(packs[0], i), 0, 0)
		if err != nil || !bytes.Equal(got, objs[shard(packs[0], i)]) {
			t.Errorf("shard %d of the unread pack changed (%v)", i, err)
		}
	}
	if got, _ := tiers.LoadAll(t.Context(), local, shard(packs[2], 1), 0, 0); !bytes.Equal(got, objs[shard(packs[2], 1)]) {
		t.Errorf("damaged shard 1 of pack 2 was not rewritten")
	}
	// The same pack, no longer young: lost, and nothing intact removed.
	be.Reset()
	rep, err = tiers.Scrub(t.Context(), be, tiers.ScrubOptions{RemoveDamaged: true, MinAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksLost != 1 || rep.Lost[0].Pack != packs[1] || rep.Removed != 0 || rep.PacksUnread != 0 {
		t.Errorf("report %+v: want pack 1 lost and nothing removed", rep)
	}
}

// A data object not named like a shard, and a shard listed larger than
// any pack, are reported without being read into memory.
func TestScrubStrayObjects(t *testing.T) {
	be, objs, packs := scrubRepo(t)
	if err := tiers.PutBytes(t.Context(), be, tiers.Handle{Type: tiers.TypeData, Name: "notashard"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	// A shard index beyond the pack's K+M.
	if err := tiers.PutBytes(t.Context(), be, shard(packs[2], 9), objs[shard(packs[2], 0)]); err != nil {
		t.Fatal(err)
	}
	rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{MinAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	stray := shard(packs[2], 9).String()
	var names []string
	for _, o := range rep.DamagedObjects {
		names = append(names, o.Object)
	}
	slices.Sort(names)
	if rep.Damaged != 2 || !slices.Equal(names, []string{stray, "data/notashard"}) || rep.Clean() {
		t.Errorf("damaged objects %+v, want data/notashard and %s, and the scrub not clean", rep.DamagedObjects, stray)
	}
	if rep.PacksLost != 0 || rep.PacksRebuilt != 0 {
		t.Errorf("a stray shard beyond K+M made the pack look damaged: %+v", rep)
	}
	// Removed on request, the pack's own shards untouched.
	rep, err = tiers.Scrub(t.Context(), be, tiers.ScrubOptions{MinAge: time.Nanosecond, RemoveDamaged: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.Stat(t.Context(), shard(packs[2], 9)); !errors.Is(err, tiers.ErrNotFound) || rep.Removed != 1 {
		t.Errorf("stray shard after --remove-damaged: %v, %d removed", err, rep.Removed)
	}
	// A data object not named like a shard is not drpipe's: it stays.
	if _, err := be.Stat(t.Context(), tiers.Handle{Type: tiers.TypeData, Name: "notashard"}); err != nil {
		t.Errorf("data/notashard was removed (%v)", err)
	}
	remove(t, be, tiers.Handle{Type: tiers.TypeData, Name: "notashard"})
	if rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{}); err != nil || !rep.Clean() {
		t.Errorf("scrub after the removal: %v, %+v", err, rep)
	}
	equalContent(t, be, objs)
}

// Storage that hands over some shards short, or with a bit flipped, but
// reports no error makes an intact pack look lost: the shards read
// wrong once are read again before they are removed, and those that
// verify then stay.
func TestScrubKeepsShardsReadWrongOnce(t *testing.T) {
	local, objs, packs := scrubRepo(t)
	be := tierstest.NewFaulty(local, 1)
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeData, Name: erasure.ShardName(packs[1], 0), Kind: tierstest.Truncate, Times: 1})
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeData, Name: erasure.ShardName(packs[1], 1), Kind: tierstest.Truncate, Times: 1})
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeData, Name: erasure.ShardName(packs[1], 2), Kind: tierstest.Corrupt, Times: 1})
	var ix tiers.Handle
	for h := range objs {
		if h.Type == tiers.TypeIndex {
			ix = h
			break
		}
	}
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeIndex, Name: ix.Name, Kind: tierstest.Corrupt, Times: 1})
	rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{RemoveDamaged: true, MinAge: time.Nanosecond, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 0 || rep.PacksLost != 0 || rep.Damaged != 0 || rep.Clean() {
		t.Errorf("report %+v: want nothing removed or lost, the pack and the index unread", rep)
	}
	equalContent(t, local, objs)
}

// A shard that is listed but gone when read is being removed by a prune:
// the pack is left to it, not given back the shards it removed.
func TestScrubLeavesAPackBeingPruned(t *testing.T) {
	local, _, packs := scrubRepo(t)
	remove(t, local, shard(packs[0], 0)) // by a prune, after the listing
	rep, err := tiers.Scrub(t.Context(), scrubListing{local, shard(packs[0], 0)}, tiers.ScrubOptions{MinAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Vanished != 1 || rep.PacksRebuilt != 0 {
		t.Errorf("report %+v: want the pack being pruned left alone", rep)
	}
	if _, err := local.Stat(t.Context(), shard(packs[0], 0)); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("the pruned shard was stored again (%v)", err)
	}
}

// scrubListing lists extra as a data object, as a listing taken before a
// prune removed it does.
type scrubListing struct {
	tiers.Backend
	extra tiers.Handle
}

func (s scrubListing) List(ctx context.Context, typ tiers.Type, fn func(tiers.ObjectInfo) error) error {
	if typ == s.extra.Type {
		if err := fn(tiers.ObjectInfo{Handle: s.extra, Size: 100, ModTime: time.Now().Add(-time.Hour)}); err != nil {
			return err
		}
	}
	return s.Backend.List(ctx, typ, fn)
}

// An object under retention cannot be removed: scrub says so and goes on
// verifying the rest rather than stop at it.
func TestScrubGoesOnPastARetainedObject(t *testing.T) {
	local, objs, packs := scrubRepo(t)
	be := tierstest.NewFaulty(local, 1)
	be.Inject(tierstest.Fault{Op: tierstest.OpRemove, Err: fmt.Errorf("retained until tomorrow: %w", tiers.ErrLocked)})
	for _, i := range []int{0, 1, 2} {
		damage(t, local, objs, shard(packs[0], i))
	}
	remove(t, local, shard(packs[2], 0))
	rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{RemoveDamaged: true, MinAge: time.Nanosecond, Workers: 1})
	if err != nil {
		t.Fatalf("scrub stopped at an object under retention: %v", err)
	}
	if rep.PacksLost != 1 || rep.Removed != 0 || len(rep.Lost[0].Removed) != 0 || !strings.Contains(rep.Lost[0].Error, "retention") || rep.PacksRebuilt != 1 || rep.Packs != 3 {
		t.Errorf("report %+v: want pack 0 lost with its damaged shards kept under retention, pack 2 rebuilt", rep)
	}
}

// A rebuilt shard is read back once stored: storage that reports success
// but keeps a damaged object (one under retention it cannot replace, or a
// write it cut short) leaves the scrub not clean, the shard named.
func TestScrubReadsBackRebuiltShards(t *testing.T) {
	local, objs, packs := scrubRepo(t)
	damage(t, local, objs, shard(packs[0], 2))
	be := tierstest.NewFaulty(local, 3)
	be.Inject(tierstest.Fault{Op: tierstest.OpPut, Type: tiers.TypeData, Kind: tierstest.Truncate})
	rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Clean() || rep.ShardsNotStored != 1 || rep.ShardsRebuilt != 0 || len(rep.Rebuilt) != 1 || !slices.Equal(rep.Rebuilt[0].NotStored, []int{2}) || rep.Rebuilt[0].Error == "" {
		t.Errorf("report %+v: want shard 2 of pack %s not stored, the scrub not clean", rep, packs[0].Short())
	}
	be.Reset()
	if rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{}); err != nil || rep.ShardsRebuilt != 1 || !rep.Clean() {
		t.Errorf("scrub once storage stores again: %v, %+v", err, rep)
	}
}

// Only shards that can be the pack's are read whole: one of another size
// than its shards is damaged on its header's word (and read again,
// streamed, before it is removed), and one listed beyond its K+M is
// verified streamed as an object of its own, so a listing of garbage
// cannot make scrub hold more than one pack's shards.
func TestScrubReadsOnlyShardsThatFit(t *testing.T) {
	local, objs, packs := scrubRepo(t)
	garbage := randBytes(99, 4<<20)
	for _, h := range []tiers.Handle{shard(packs[1], 7), shard(packs[1], 3)} {
		if err := tiers.PutBytes(t.Context(), local, h, garbage); err != nil {
			t.Fatal(err)
		}
	}
	be := tierstest.NewCounting(local)
	rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := be.Counts(tiers.TypeData).BytesLoaded; got > 5<<20 {
		t.Errorf("scrub read %d bytes of data objects, want the packs' shards and headers and the stray shard streamed once (under 5 MiB)", got)
	}
	if rep.PacksRebuilt != 1 || !slices.Equal(rep.Rebuilt[0].Rebuilt, []int{3}) || !slices.Equal(rep.Rebuilt[0].Corrupt, []int{3}) || len(rep.Rebuilt[0].Missing) != 0 {
		t.Errorf("report %+v: want shard 3 of pack %s rebuilt and damaged, none missing", rep, packs[1].Short())
	}
	if rep.Damaged != 1 || rep.DamagedObjects[0].Object != shard(packs[1], 7).String() {
		t.Errorf("damaged objects %+v, want the stray shard 7", rep.DamagedObjects)
	}
	if got, _ := tiers.LoadAll(t.Context(), local, shard(packs[1], 3), 0, 0); !bytes.Equal(got, objs[shard(packs[1], 3)]) {
		t.Errorf("shard 3 not rebuilt")
	}
}

// A shard listed at another size than the pack's (cut short when listed)
// that replication stored again since is read before it is removed: the
// scrub must not remove the intact shards a session just delivered.
func TestScrubReadsUnfitShardsAgainBeforeRemoving(t *testing.T) {
	local, objs, packs := scrubRepo(t)
	listed := map[tiers.Handle]int64{}
	for _, i := range []int{0, 1, 2, 3} {
		listed[shard(packs[1], i)] = 100 // as listed before replication sent them again
	}
	rep, err := tiers.Scrub(t.Context(), scrubSizes{local, listed}, tiers.ScrubOptions{RemoveDamaged: true, MinAge: time.Nanosecond, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 0 || rep.PacksLost != 0 || rep.PacksUnread != 1 {
		t.Errorf("report %+v: want nothing removed, pack %s unread", rep, packs[1].Short())
	}
	equalContent(t, local, objs)
}

// scrubSizes lists the objects of size with that size, as a listing taken
// before they were stored again does.
type scrubSizes struct {
	tiers.Backend
	size map[tiers.Handle]int64
}

func (s scrubSizes) List(ctx context.Context, typ tiers.Type, fn func(tiers.ObjectInfo) error) error {
	return s.Backend.List(ctx, typ, func(oi tiers.ObjectInfo) error {
		if n, ok := s.size[oi.Handle]; ok {
			oi.Size = n
		}
		return fn(oi)
	})
}

// A pack none of whose shards has a header of the pack is read no
// further than its headers: nothing of it can be rebuilt, and a listing of
// garbage under its name cannot make scrub hold it.
func TestScrubReadsNoShardWithoutAHeaderOfThePack(t *testing.T) {
	local, objs, packs := scrubRepo(t)
	for i := range 6 {
		if err := tiers.PutBytes(t.Context(), local, shard(packs[1], i), randBytes(uint64(i), 4<<20)); err != nil {
			t.Fatal(err)
		}
	}
	be := tierstest.NewCounting(local)
	rep, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{Workers: 1, MinAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := be.Counts(tiers.TypeData).BytesLoaded; got > 1<<20 {
		t.Errorf("scrub read %d bytes of data objects, want the packs' shards and headers only (under 1 MiB)", got)
	}
	if rep.PacksLost != 1 || !slices.Equal(rep.Lost[0].Corrupt, []int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("report %+v: want pack %s lost, its 6 shards damaged", rep, packs[1].Short())
	}
	for i := range 6 {
		delete(objs, shard(packs[1], i))
	}
	rep, err = tiers.Scrub(t.Context(), local, tiers.ScrubOptions{Workers: 1, MinAge: time.Nanosecond, RemoveDamaged: true})
	if err != nil || rep.Removed != 6 {
		t.Errorf("scrub --remove-damaged: %v, %+v: want the 6 shards removed", err, rep)
	}
	equalContent(t, local, objs)
}

// A shard object with bytes after its payload still holds the intact
// shard in its first bytes: as check --read-data and repair count it, it
// is one of the K survivors, so a pack with it and M other shards missing
// is rebuilt, the long shard rewritten with its own first bytes, and not
// reported lost (or, with RemoveDamaged, stripped of its shards).
func TestScrubUsesShardWithTrailingBytes(t *testing.T) {
	local, objs, packs := scrubRepo(t)
	h := shard(packs[0], 0)
	if err := tiers.PutBytes(t.Context(), local, h, append(bytes.Clone(objs[h]), "trailing"...)); err != nil {
		t.Fatal(err)
	}
	remove(t, local, shard(packs[0], 1))
	remove(t, local, shard(packs[0], 2))
	be := tierstest.NewCounting(local)
	dry, err := tiers.Scrub(t.Context(), be, tiers.ScrubOptions{DryRun: true, RemoveDamaged: true, MinAge: time.Nanosecond, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if dry.PacksLost != 0 || dry.PacksRebuilt != 1 || !slices.Equal(dry.Rebuilt[0].Rebuilt, []int{0, 1, 2}) ||
		!slices.Equal(dry.Rebuilt[0].Corrupt, []int{0}) || !slices.Equal(dry.Rebuilt[0].Missing, []int{1, 2}) {
		t.Fatalf("dry run %+v: want pack %s rebuildable, shard 0 damaged and 1, 2 missing", dry, packs[0].Short())
	}
	if got := be.Counts(tiers.TypeData).BytesLoaded; got > 5<<20 {
		t.Errorf("scrub read %d bytes of data objects, want no more of the long shard than a shard (under 5 MiB)", got)
	}
	rep, err := tiers.Scrub(t.Context(), local, tiers.ScrubOptions{RemoveDamaged: true, MinAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || rep.PacksLost != 0 || rep.Removed != 0 || rep.ShardsRebuilt != 3 {
		t.Fatalf("report %+v: want shards 0, 1 and 2 of pack %s rewritten, nothing lost or removed", rep, packs[0].Short())
	}
	equalContent(t, local, objs)
}
