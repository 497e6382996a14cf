package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// condemnedFixture stores a snapshot of the chunks plain (forgotten, its
// packs condemned by a prune at the returned mark) and a second, unrelated
// snapshot that stays; the repository clock then stands two hours after
// the mark, so the next prune with sweepOpts sweeps.
func condemnedFixture(t *testing.T, be tiers.Backend) (r *Repository, clock *time.Time, plain [][]byte, ids []id.ID) {
	t.Helper()
	ctx := context.Background()
	r, clock = clockedRepo(t, be)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 40; i++ {
		plain = append(plain, randBytes(rng, 30000))
	}
	s1 := snapOf(t, r, plain)
	snapOf(t, r, [][]byte{randBytes(rng, 30000)})
	for _, b := range plain {
		ids = append(ids, r.BlobID(b))
	}
	if err := r.ForgetSnapshot(ctx, s1); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Prune(ctx, sweepOpts)
	if err != nil || rep.Condemned == 0 || rep.Removed != 0 {
		t.Fatalf("fixture mark: %+v, %v", rep, err)
	}
	*clock = clock.Add(2 * time.Hour)
	return r, clock, plain, ids
}

// openWriter opens the repository in be as a writer on host hv02 with the
// clock, and begins its session; both end with the test.
func openWriter(t *testing.T, be tiers.Backend, clock *time.Time) (*Repository, *Session) {
	t.Helper()
	ctx := context.Background()
	b, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), Now: func() time.Time { return *clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	sess, err := b.BeginSession(ctx, "hv02")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.End(ctx) })
	return b, sess
}

// snapOf stores the chunks as one file and a snapshot of it; the file
// starts with the already stored blobs shared (as 1-byte extents).
func snapOf(t *testing.T, r *Repository, chunks [][]byte, shared ...id.ID) id.ID {
	t.Helper()
	ctx := context.Background()
	node := &Node{Name: "f", Type: NodeFile, Size: int64(len(shared))}
	var ext []Extent
	for _, x := range shared {
		ext = append(ext, Extent{ID: x, Len: 1})
	}
	for _, b := range chunks {
		x, _, err := r.SaveBlob(ctx, DataBlob, b, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		ext = append(ext, Extent{ID: x, Len: int64(len(b))})
		node.Size += int64(len(b))
	}
	return fileSnapshot(t, r, node, ext)
}

// fileSnapshot gives node the content ext (blobs already saved), stores a
// tree of it, flushes and stores a snapshot of that tree.
func fileSnapshot(t *testing.T, r *Repository, node *Node, ext []Extent) id.ID {
	t.Helper()
	ctx := context.Background()
	if err := r.SetContent(ctx, node, ext); err != nil {
		t.Fatal(err)
	}
	tree, err := r.SaveTree(ctx, &Tree{Nodes: []*Node{node}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sid, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tree, Host: "h", Time: r.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return sid
}

// mustCheck fails the test unless check finds the repository healthy.
func mustCheck(t *testing.T, r *Repository, what string) {
	t.Helper()
	if err := r.LoadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Check(context.Background(), CheckOptions{})
	if err != nil || len(rep.Errors) > 0 || len(rep.Damaged) > 0 {
		t.Fatalf("%s: check: %v %v %+v", what, err, rep.Errors, rep.Damaged)
	}
}

// TestSweepKeepsPacksOfLockedIndex: when an index object listing condemned
// packs cannot be removed (object lock: rewritten index objects are locked
// longer than the packs they list), the sweep must not remove those packs:
// the surviving index object would keep advertising their blobs, and the
// next backup would deduplicate against data that is gone.
func TestSweepKeepsPacksOfLockedIndex(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	r, _, plain, ids := condemnedFixture(t, be)
	be.Inject(tierstest.Fault{Op: tierstest.OpRemove, Type: tiers.TypeIndex,
		Err: fmt.Errorf("%w (compliance) until 2027-01-01T00:00:00Z", tiers.ErrLocked)})
	rep, err := r.Prune(ctx, sweepOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sweep under an index lock: %+v", rep)
	if rep.Removed != 0 || len(rep.Locked) == 0 {
		t.Errorf("sweep under an index lock removed %d packs, reported locked %v; want 0 and the packs", rep.Removed, rep.Locked)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for _, x := range ids {
		if !r.Has(DataBlob, x) {
			continue
		}
		if _, err := r.LoadBlob(ctx, DataBlob, x, nil); err != nil {
			t.Fatalf("blob %s is advertised by the index but unreadable: %v", x.Short(), err)
		}
	}
	// A backup deduplicating against what the index advertises leaves a
	// healthy repository.
	snapOf(t, r, plain)
	mustCheck(t, r, "backup after a sweep under index lock")
	// Once the lock is gone, prune works through the kept tombstone.
	be.Reset()
	if _, err := r.Prune(ctx, sweepOpts); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, r, "prune after the lock expired")
}

// TestBackupDoesNotDedupeWhenTombstonesUnreadable: a backup that cannot
// read the prune tombstones (a transient error) must not deduplicate
// against every indexed pack: its session started after the mark, so it
// does not hold back the sweep, which removes condemned packs the backup
// used, and its snapshot then references missing data.
func TestBackupDoesNotDedupeWhenTombstonesUnreadable(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	pruner, clock, plain, _ := condemnedFixture(t, be)
	// A backup on another host starts after the mark (plus the skew).
	b, _ := openWriter(t, be, clock)
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeTombstone, Times: 1,
		Err: fmt.Errorf("connection reset by peer")})
	loadErr := b.LoadIndex(ctx)
	// The backup saves its data (or fails); meanwhile prune sweeps.
	node := &Node{Name: "f", Type: NodeFile}
	var ext []Extent
	var saveErr error
	for _, p := range plain {
		x, _, err := b.SaveBlob(ctx, DataBlob, p, id.ID{})
		if err != nil {
			saveErr = err
			break
		}
		ext = append(ext, Extent{ID: x, Len: int64(len(p))})
		node.Size += int64(len(p))
	}
	if rep, err := pruner.Prune(ctx, sweepOpts); err != nil || rep.Removed == 0 {
		t.Fatalf("sweep beside a backup that started after the mark: %+v, %v", rep, err)
	}
	if loadErr != nil || saveErr != nil {
		t.Logf("backup refused: load %v, save %v", loadErr, saveErr)
		return
	}
	fileSnapshot(t, b, node, ext)
	mustCheck(t, pruner, "snapshot of a backup that could not read the tombstones")
}

// TestSessionLapse: a writer whose session went unrefreshed for longer
// than SessionTTL (process suspended, storage unreachable) may have been
// taken for a crashed one: prune removed its session and swept packs it
// deduplicated against. The writer must learn this before it writes a
// snapshot, also after a later refresh succeeded again.
func TestSessionLapse(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	pruner, clock, _, _ := condemnedFixture(t, be)
	// A backup that started before the mark holds the sweep back while
	// its session is fresh.
	*clock = clock.Add(-2 * time.Hour).Add(-time.Minute)
	_, sess := openWriter(t, be, clock)
	if err := sess.Check(); err != nil {
		t.Fatalf("fresh session: %v", err)
	}
	*clock = clock.Add(2*time.Hour + time.Minute)
	// The backup is suspended: prune sees a stale session and sweeps.
	rep, err := pruner.Prune(ctx, sweepOpts)
	if err != nil || rep.Removed == 0 {
		t.Fatalf("sweep beside a stale session: %+v, %v", rep, err)
	}
	if err := sess.Check(); err == nil {
		t.Fatal("lapsed session: Check passed; the backup would write a snapshot referencing swept packs")
	} else {
		t.Log(err)
	}
	// A refresh after the gap does not make the session whole again.
	sess.rec.Refreshed = *clock
	if err := sess.put(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Check(); err == nil {
		t.Fatal("session refreshed after a lapse: Check passed")
	}
}

// TestSweepIndexVanished: an index object that disappears while the sweep
// rewrites the index was replaced by a concurrent prune; the error says
// so instead of sending the operator to repair a healthy repository.
func TestSweepIndexVanished(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	r, _, _, _ := condemnedFixture(t, be)
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeIndex, Times: 1,
		Err: fmt.Errorf("superseded: %w", tiers.ErrNotFound)})
	_, err := r.Prune(ctx, sweepOpts)
	if err == nil || strings.Contains(err.Error(), "run drpipe repair") || !strings.Contains(err.Error(), "another prune") {
		t.Fatalf("sweep whose index object vanished: %v", err)
	}
	be.Reset()
	if rep, err := r.Prune(ctx, sweepOpts); err != nil || rep.Removed == 0 {
		t.Fatalf("prune again: %+v, %v", rep, err)
	}
	mustCheck(t, r, "after the retried sweep")
}

type putHook struct {
	tiers.Backend
	before func(h tiers.Handle)
}

func (p *putHook) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if p.before != nil {
		p.before(h)
	}
	return p.Backend.Put(ctx, h, rd, size)
}

// TestConcurrentPrunesRewriteSameIndex: a prune started while another is
// rewriting the index stops without changing anything. (Before prunes
// announced themselves, each rewrote the same index object from what it
// had read, and the later one put back a pack the earlier had removed.)
func TestConcurrentPrunesRewriteSameIndex(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	c := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return c }
	hookA := &putHook{Backend: mem}
	a, err := Init(ctx, hookA, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	var trees []id.ID
	for _, n := range []int{35, 35, 5} { // packs P1, P2, Q in one index object
		node := &Node{Name: "f", Type: NodeFile}
		var ext []Extent
		for i := 0; i < n; i++ {
			b := randBytes(rng, 30000)
			x, _, _ := a.SaveBlob(ctx, DataBlob, b, id.ID{})
			ext = append(ext, Extent{ID: x, Len: int64(len(b))})
			node.Size += int64(len(b))
		}
		a.SetContent(ctx, node, ext)
		tr, _ := a.SaveTree(ctx, &Tree{Nodes: []*Node{node}})
		trees = append(trees, tr)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var sids []id.ID
	for _, tr := range trees {
		s, err := a.SaveSnapshot(ctx, &Snapshot{Tree: tr, Host: "h", Time: c})
		if err != nil {
			t.Fatal(err)
		}
		sids = append(sids, s)
	}
	a.ForgetSnapshot(ctx, sids[0])
	if rep, err := a.Prune(ctx, sweepOpts); err != nil || rep.Condemned == 0 {
		t.Fatalf("mark: %+v %v", rep, err)
	}
	c = c.Add(2 * time.Hour)
	a.ForgetSnapshot(ctx, sids[1])
	b, err := Open(ctx, mem, Options{Password: []byte("pw"), CacheDir: t.TempDir(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	reached, resume := make(chan struct{}), make(chan struct{})
	hookA.before = func(h tiers.Handle) {
		if h.Type == tiers.TypeIndex {
			hookA.before = nil
			close(reached)
			<-resume
		}
	}
	done := make(chan error)
	go func() { _, err := a.Prune(ctx, sweepOpts); done <- err }()
	<-reached
	_, errB := b.Prune(ctx, PruneOptions{Grace: 0, GraceSet: true, RepackBelow: -1, RepackBelowSet: true})
	close(resume)
	if err := <-done; err != nil {
		t.Fatalf("prune A: %v", err)
	}
	if !errors.Is(errB, ErrPruneUnsafe) || !strings.Contains(errB.Error(), "another prune (or a repair) is running") {
		t.Fatalf("prune B beside a running prune: %v, want it to stop with ErrPruneUnsafe", errB)
	}
	mustCheck(t, b, "after two concurrent prunes")
	// With A finished, B runs.
	if _, err := b.Prune(ctx, sweepOpts); err != nil {
		t.Fatalf("prune after the other finished: %v", err)
	}
	mustCheck(t, b, "after the second prune")
}

// TestPruneRemovesStaleTemp: prune removes the temporary files that
// interrupted writes left in a local repository once they are an hour
// old; a dry run and recent ones leave them.
func TestPruneRemovesStaleTemp(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	be, err := tiers.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Init(ctx, be, InitOptions{EC: erasure.Params{K: 2, M: 1}}, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	plant := func(rel string, age time.Duration) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, 1000), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stale := plant("data/ab/.ab01.tmp-killed", StaleTempAge+time.Minute)
	recent := plant("index/.cd02.tmp-writing", time.Minute)
	if rep, err := r.Prune(ctx, PruneOptions{DryRun: true}); err != nil || rep.TempRemoved != 0 {
		t.Fatalf("dry run: %+v, %v", rep, err)
	}
	rep, err := r.Prune(ctx, sweepOpts)
	if err != nil || rep.TempRemoved != 1 || rep.TempBytes != 1000 {
		t.Fatalf("prune: %+v, %v; want 1 temporary file of 1000 bytes removed", rep, err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("recent temporary file: %v", err)
	}
}

// TestDamagedTombstone: a tombstone whose bytes rotted stops every backup
// (which must not deduplicate without the tombstones) and every prune.
// Check must report it, and the errors must say how to get rid of it;
// removing it lets backups and prunes run again.
func TestDamagedTombstone(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r, _, _, _ := condemnedFixture(t, be)
	var stone tiers.Handle
	be.List(ctx, tiers.TypeTombstone, func(oi tiers.ObjectInfo) error { stone = oi.Handle; return nil })
	raw, err := tiers.LoadAll(ctx, be, stone, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x40
	be.Remove(ctx, stone)
	if err := tiers.PutBytes(ctx, be, stone, raw); err != nil {
		t.Fatal(err)
	}
	w, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, _, err = w.SaveBlob(ctx, DataBlob, []byte("new data"), id.ID{})
	if err == nil || !strings.Contains(err.Error(), "drpipe check") {
		t.Fatalf("backup beside a damaged tombstone: %v, want a refusal that points to drpipe check", err)
	}
	rep, err := w.Check(ctx, CheckOptions{})
	if err == nil || rep.OK() {
		t.Fatalf("check with a damaged tombstone: %v, %+v", err, rep)
	}
	found := false
	for _, e := range rep.Errors {
		if strings.Contains(e, stone.Name[:8]) && strings.Contains(e, "remove the object "+stone.String()) {
			found = true
		}
	}
	if !found {
		t.Fatalf("check does not name the damaged tombstone and its remedy: %q", rep.Errors)
	}
	if _, err := r.Prune(ctx, sweepOpts); err == nil || !strings.Contains(err.Error(), "remove the object "+stone.String()) {
		t.Fatalf("prune with a damaged tombstone: %v", err)
	}
	// Doing what the message says makes the repository usable again.
	be.Remove(ctx, stone)
	if err := w.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.SaveBlob(ctx, DataBlob, []byte("new data"), id.ID{}); err != nil {
		t.Fatalf("backup after removing the tombstone: %v", err)
	}
	if _, err := r.Prune(ctx, sweepOpts); err != nil {
		t.Fatalf("prune after removing the tombstone: %v", err)
	}
	mustCheck(t, r, "after removing a damaged tombstone")
}

// listHook runs before each List.
type listHook struct {
	tiers.Backend
	before func(t tiers.Type)
}

func (b *listHook) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	if f := b.before; f != nil {
		f(t)
	}
	return b.Backend.List(ctx, t, fn)
}

// TestPruneSessionLapse: a prune whose own session lapsed (the process
// was suspended longer than SessionTTL) may have been taken for a crashed
// one by another prune, which then ran beside it. It must stop before it
// changes the repository instead of sweeping from what it read before.
func TestPruneSessionLapse(t *testing.T) {
	ctx := context.Background()
	be := &listHook{Backend: tierstest.NewMemory()}
	r, clock, _, _ := condemnedFixture(t, be)
	be.before = func(typ tiers.Type) {
		if typ == tiers.TypeSnapshot {
			be.before = nil
			*clock = clock.Add(SessionTTL + ClockSkew + time.Minute) // suspended
		}
	}
	rep, err := r.Prune(ctx, sweepOpts)
	if !errors.Is(err, ErrPruneUnsafe) || !strings.Contains(err.Error(), "lapsed") {
		t.Fatalf("prune whose session lapsed: %v, want it to stop", err)
	}
	if rep != nil && (rep.Removed != 0 || rep.IndexRewritten != 0) {
		t.Fatalf("prune whose session lapsed changed the repository: %+v", rep)
	}
	if rep, err := r.Prune(ctx, sweepOpts); err != nil || rep.Removed == 0 {
		t.Fatalf("prune again: %+v, %v", rep, err)
	}
	mustCheck(t, r, "after the prune whose session lapsed")
}

// TestLockedIndexRewriteAddsNothing: an index object under retention that
// lists live and dead packs is rewritten by every sweep, and the removal
// of the original fails; the redundant replacement must go again, or the
// index objects would grow by one per sweep until the lock expires.
func TestLockedIndexRewriteAddsNothing(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	r, clock := clockedRepo(t, be)
	rng := rand.New(rand.NewPCG(4, 4))
	// Two files, one index object: the first file's packs die below.
	save := func(n int) *Node {
		node := &Node{Name: "f", Type: NodeFile}
		var ext []Extent
		for i := 0; i < n; i++ {
			b := randBytes(rng, 30000)
			x, _, err := r.SaveBlob(ctx, DataBlob, b, id.ID{})
			if err != nil {
				t.Fatal(err)
			}
			ext = append(ext, Extent{ID: x, Len: int64(len(b))})
			node.Size += int64(len(b))
		}
		if err := r.SetContent(ctx, node, ext); err != nil {
			t.Fatal(err)
		}
		return node
	}
	dead, live := save(40), save(40)
	var sids []id.ID
	for _, n := range []*Node{dead, live} {
		tree, err := r.SaveTree(ctx, &Tree{Nodes: []*Node{n}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		sid, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tree, Host: "h", Time: r.Now()})
		if err != nil {
			t.Fatal(err)
		}
		sids = append(sids, sid)
	}
	if err := r.ForgetSnapshot(ctx, sids[0]); err != nil {
		t.Fatal(err)
	}
	if rep, err := r.Prune(ctx, sweepOpts); err != nil || rep.Condemned == 0 {
		t.Fatalf("mark: %+v, %v", rep, err)
	}
	countIndex := func() int {
		n := 0
		be.List(ctx, tiers.TypeIndex, func(tiers.ObjectInfo) error { n++; return nil })
		return n
	}
	before := countIndex()
	// The index objects written so far are under retention; new ones not.
	be.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error {
		be.Inject(tierstest.Fault{Op: tierstest.OpRemove, Type: tiers.TypeIndex, Name: oi.Handle.Name,
			Err: fmt.Errorf("%w (compliance) until 2027-01-01T00:00:00Z", tiers.ErrLocked)})
		return nil
	})
	for i := 0; i < 3; i++ {
		*clock = clock.Add(2 * time.Hour)
		rep, err := r.Prune(ctx, sweepOpts)
		if err != nil || rep.Removed != 0 || len(rep.Locked) == 0 {
			t.Fatalf("sweep %d under an index lock: %+v, %v", i, rep, err)
		}
		if n := countIndex(); n != before {
			t.Fatalf("sweep %d under an index lock: %d index objects, %d before", i, n, before)
		}
	}
	mustCheck(t, r, "after sweeps under an index lock")
}

// TestSweepUnderTombstoneLock: a tombstone under retention (a bucket
// that locks every object it keeps) cannot be removed after its sweep.
// The prune reports it as kept, as it does locked packs and index objects,
// instead of failing, and later sweeps do not count the packs it removed
// as removed again.
func TestSweepUnderTombstoneLock(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	r, clock, _, _ := condemnedFixture(t, be)
	be.Inject(tierstest.Fault{Op: tierstest.OpRemove, Type: tiers.TypeTombstone,
		Err: fmt.Errorf("%w (compliance) until 2027-01-01T00:00:00Z", tiers.ErrLocked)})
	// One pack is locked for this sweep only: it is kept for the next.
	be.Inject(tierstest.Fault{Op: tierstest.OpRemove, Type: tiers.TypeData, Times: 1,
		Err: fmt.Errorf("%w (compliance) until 2026-01-01T03:00:00Z", tiers.ErrLocked)})
	countStones := func() int {
		n := 0
		be.List(ctx, tiers.TypeTombstone, func(tiers.ObjectInfo) error { n++; return nil })
		return n
	}
	before := countStones()
	rep, err := r.Prune(ctx, sweepOpts)
	if err != nil {
		t.Fatalf("sweep under a tombstone lock: %v", err)
	}
	if rep.Removed == 0 || len(rep.Locked) != 2 || !strings.Contains(strings.Join(rep.Locked, "; "), "tombstone") {
		t.Errorf("sweep under a tombstone lock: removed %d packs, reported locked %q; want the packs removed, one kept and the tombstone named", rep.Removed, rep.Locked)
	}
	later := 0
	for i := 0; i < 2; i++ {
		*clock = clock.Add(2 * time.Hour)
		rep, err = r.Prune(ctx, sweepOpts)
		if err != nil {
			t.Fatalf("sweep %d after: %v", i, err)
		}
		later += rep.Removed
	}
	if later != 1 {
		t.Errorf("the sweeps after removed %d packs, want 1 (the one that was locked), not again those the first removed", later)
	}
	if n := countStones(); n != before {
		t.Errorf("%d tombstones after sweeps under a tombstone lock, %d before", n, before)
	}
	mustCheck(t, r, "after sweeps under a tombstone lock")
}

// TestLargeTombstoneReadsBack: a prune that condemns more packs than one
// tombstone object may list (over a million IDs of 67 bytes of JSON each
// exceed the 64 MiB an object may have) stores tombstones that backups
// and the next prune can read.
func TestLargeTombstoneReadsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("stores over a million pack IDs")
	}
	ctx := context.Background()
	r := testRepo(t, nil, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	packs := make([]id.ID, maxObjectPlain/67+1000)
	for i := range packs {
		packs[i] = id.Hash(fmt.Appendf(nil, "pack %d", i))
	}
	if _, err := r.saveTombstones(ctx, packs); err != nil {
		t.Fatal(err)
	}
	cond, err := r.loadCondemned(ctx)
	if err != nil {
		t.Fatalf("tombstones of %d packs: %v", len(packs), err)
	}
	if len(cond) != len(packs) {
		t.Fatalf("tombstones list %d packs, want %d", len(cond), len(packs))
	}
}
