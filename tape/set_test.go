package tape_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
)

var testKDF = &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// world is a repository with snapshots and a virtual library.
type world struct {
	t       *testing.T
	dir     string
	src     string
	r       *repo.Repository
	snaps   []*repo.Snapshot
	libDir  string
	lib     *tape.VirtualLibrary
	cat     *tape.Catalog
	pw      []byte
	cacheNo int
	failed  map[string]string
	changer tape.Changer // restores use it instead of lib when set
}

func newWorld(t *testing.T, ec erasure.Params, lib tape.VirtualConfig, files int, bytes int64) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{t: t, dir: t.TempDir(), pw: []byte("pw")}
	be, err := tiers.NewLocal(filepath.Join(w.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	w.r, err = repo.Init(ctx, be, repo.InitOptions{EC: ec, PackSize: 1 << 20}, repo.Options{Password: w.pw, CacheDir: filepath.Join(w.dir, "cache"), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.r.Close() })
	w.src = filepath.Join(w.dir, "src")
	if _, err := sample.Tree(w.src, sample.TreeOptions{Files: files, Bytes: bytes, Seed: 1, BinaryFraction: 0.8}); err != nil {
		t.Fatal(err)
	}
	w.backup()
	w.libDir = filepath.Join(w.dir, "library")
	if _, err := tape.InitVirtual(w.libDir, lib); err != nil {
		t.Fatal(err)
	}
	w.open()
	return w
}

func (w *world) backup() {
	res, err := pipeline.Backup(context.Background(), w.r, pipeline.BackupOptions{Host: "hv01", Paths: []string{w.src}})
	if err != nil {
		w.t.Fatal(err)
	}
	w.snaps = append(w.snaps, res.Snapshot)
}

func (w *world) open() {
	var err error
	if w.lib, err = tape.OpenVirtual(w.libDir); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { w.lib.Close() })
	if w.cat, err = tape.OpenCatalog(filepath.Join(w.libDir, "catalog")); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) label(pool tape.Pool, n int) {
	if _, err := tape.LabelTapes(context.Background(), w.lib, w.cat, tape.LabelOptions{Pool: pool, Count: n}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) write(pool tape.Pool, parity int, now time.Time) *tape.WriteResult {
	w.t.Helper()
	ctx := context.Background()
	plan, err := tape.BuildPlan(ctx, w.r, w.snaps)
	if err != nil {
		w.t.Fatal(err)
	}
	res, err := tape.WriteSet(ctx, w.lib, w.cat, w.r.Backend(), plan, tape.WriteOptions{Pool: pool, Level: tape.LevelDaily, Parity: parity,
		Now: func() time.Time { return now }, BufferSize: 8 << 20})
	if err != nil {
		w.t.Fatal(err)
	}
	return res
}

// restore restores the snapshot from tape alone into a new directory and
// compares it with the source tree.
func (w *world) restore(ref string) (*tape.RestorePlan, error) {
	w.t.Helper()
	ctx := context.Background()
	refs, err := tape.FindSnapshots(w.cat, ref, "")
	if err != nil {
		return nil, err
	}
	inv, _ := w.lib.Inventory(ctx)
	in := map[string]bool{}
	for _, b := range inv.Barcodes() {
		in[b] = true
	}
	w.cacheNo++
	tmp := filepath.Join(w.dir, "tmprepo"+string(rune('a'+w.cacheNo)))
	be, err := tape.NewScratch(tmp)
	if err != nil {
		w.t.Fatal(err)
	}
	defer be.Close()
	var ch tape.Changer = w.lib
	if w.changer != nil {
		ch = w.changer
	}
	res, err := tape.Restore(ctx, ch, w.cat, refs, func(b string) bool { return in[b] }, be, nil)
	if err != nil {
		return nil, err
	}
	plan := res.Plan
	w.failed = res.Failed
	r, err := repo.Open(ctx, be, repo.Options{Password: w.pw, CacheDir: filepath.Join(w.dir, "cache2"+tmp[len(tmp)-1:])})
	if err != nil {
		return plan, err
	}
	defer r.Close()
	sn, err := r.FindSnapshot(ctx, refs[0].Snapshot.ID.String(), "")
	if err != nil {
		return plan, err
	}
	target := filepath.Join(w.dir, "restore"+tmp[len(tmp)-1:])
	if _, err := pipeline.Restore(ctx, r, sn, pipeline.RestoreOptions{Target: target}); err != nil {
		return plan, err
	}
	sameTree(w.t, w.src, filepath.Join(target, w.src))
	return plan, nil
}

func sameTree(t *testing.T, a, b string) {
	t.Helper()
	n := 0
	filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		x, _ := os.ReadFile(p)
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("restored %s differs (%v)", rel, err)
		}
		n++
		return nil
	})
	if n == 0 {
		t.Errorf("no files compared")
	}
}

func setTapes(res *tape.WriteResult) []string {
	var out []string
	for _, t := range res.Set.Tapes {
		out = append(out, t.Barcode)
	}
	return out
}

// overlapChanger counts the drives open at once; a drive's first read
// waits (up to a few seconds) for a second drive to open, so a restore
// that reads its tapes one after another shows as a maximum of one.
type overlapChanger struct {
	tape.Changer
	mu        sync.Mutex
	open, max int
	second    chan struct{}
}

func (c *overlapChanger) OpenDrive(ctx context.Context, i int) (tape.Drive, error) {
	d, err := c.Changer.OpenDrive(ctx, i)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.open++
	c.max = max(c.max, c.open)
	if c.open == 2 {
		close(c.second)
		c.second = make(chan struct{}) // later pairs wait afresh
	}
	wait := c.second
	c.mu.Unlock()
	return &overlapDrive{Drive: d, c: c, wait: wait}, nil
}

type overlapDrive struct {
	tape.Drive
	c      *overlapChanger
	wait   chan struct{}
	waited bool
	closed sync.Once
}

func (d *overlapDrive) ReadRecord(ctx context.Context, p []byte) (int, error) {
	if !d.waited {
		d.waited = true
		select {
		case <-d.wait:
		case <-time.After(3 * time.Second):
		}
	}
	return d.Drive.ReadRecord(ctx, p)
}

func (d *overlapDrive) Close() error {
	d.closed.Do(func() {
		d.c.mu.Lock()
		d.c.open--
		d.c.mu.Unlock()
	})
	return d.Drive.Close()
}

// TestRestoreReadsTapesInParallel: a restore needing several tapes of a
// set reads them at the same time, one per drive, and the result is
// byte-identical.
func TestRestoreReadsTapesInParallel(t *testing.T) {
	w := newWorld(t, erasure.Params{K: 4, M: 2}, tape.VirtualConfig{Generation: tape.LTO9, Slots: 10, Drives: 3, MailSlots: 2}, 60, 6<<20)
	pool := tape.DefaultPool("daily")
	w.label(pool, 4)
	res := w.write(pool, 1, time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC))
	if res.Set.Columns != 3 {
		t.Fatalf("set has %d columns, want 3", res.Set.Columns)
	}
	oc := &overlapChanger{Changer: w.lib, second: make(chan struct{})}
	w.changer = oc
	plan, err := w.restore("latest")
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Tapes) < 2 {
		t.Fatalf("the restore planned %d tapes, want at least 2", len(plan.Tapes))
	}
	if oc.max < 2 {
		t.Errorf("at most %d drive open at once: the %d tapes were read one after another", oc.max, len(plan.Tapes))
	}
}

func TestWriteRestoreWithParityLoss(t *testing.T) {
	w := newWorld(t, erasure.Params{K: 4, M: 2}, tape.VirtualConfig{Generation: tape.LTO9, Slots: 10, Drives: 2, MailSlots: 2}, 60, 6<<20)
	pool := tape.DefaultPool("daily")
	w.label(pool, 8)
	now := time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC)
	res := w.write(pool, 2, now)
	if res.Set.Columns != 6 || len(res.Set.Tapes) != 6 || !res.Set.Complete {
		t.Fatalf("set: %d columns, %d tapes, complete %v; want 6, 6, true", res.Set.Columns, len(res.Set.Tapes), res.Set.Complete)
	}
	rep, err := tape.CheckCatalog(context.Background(), w.lib, w.cat, tape.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %v", err, rep.Errors)
	}
	if _, err := w.restore("latest"); err != nil {
		t.Fatal(err)
	}
	// Lose any two tapes: still restorable.
	tapes := setTapes(res)
	hide := func(bcs ...string) func() {
		for _, b := range bcs {
			os.Rename(filepath.Join(w.libDir, b+".tape"), filepath.Join(w.dir, b+".tape"))
		}
		return func() {
			for _, b := range bcs {
				os.Rename(filepath.Join(w.dir, b+".tape"), filepath.Join(w.libDir, b+".tape"))
				if _, err := w.lib.Insert(b); err != nil {
					t.Fatal(err)
				}
				if _, err := tape.Import(context.Background(), w.lib, w.cat, now); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, pair := range [][2]int{{0, 1}, {2, 5}, {3, 4}} {
		back := hide(tapes[pair[0]], tapes[pair[1]])
		plan, err := w.restore("latest")
		if err != nil {
			t.Fatalf("restore without %s and %s: %v", tapes[pair[0]], tapes[pair[1]], err)
		}
		if len(plan.Tapes) != 4 {
			t.Errorf("restore mounted %d tapes, want 4 (K=4, one shard per tape)", len(plan.Tapes))
		}
		back()
	}
	// A damaged tape is planned around like a missing one.
	plan, err := w.restore("latest")
	if err != nil {
		t.Fatal(err)
	}
	victim := plan.Tapes[1].Barcode
	b, _ := os.ReadFile(filepath.Join(w.libDir, victim+".tape"))
	b[len(b)/2] ^= 0x40
	os.WriteFile(filepath.Join(w.libDir, victim+".tape"), b, 0o644)
	if _, err := w.restore("latest"); err != nil {
		t.Fatalf("restore with tape %s damaged: %v", victim, err)
	}
	if _, ok := w.failed[victim]; !ok || len(w.failed) != 1 {
		t.Errorf("failed tapes %v, want just %s", w.failed, victim)
	}
	b[len(b)/2] ^= 0x40
	os.WriteFile(filepath.Join(w.libDir, victim+".tape"), b, 0o644)
	back := hide(tapes[0], tapes[2], tapes[4])
	_, err = w.restore("latest")
	if !errors.Is(err, tape.ErrMissingTapes) {
		t.Fatalf("restore without 3 tapes: got %v, want ErrMissingTapes", err)
	}
	for _, b := range []string{tapes[0], tapes[2], tapes[4]} {
		if !strings.Contains(err.Error(), b) {
			t.Errorf("error does not name missing tape %s: %v", b, err)
		}
	}
	back()
}

func TestEndOfMediaObjectWrittenWhole(t *testing.T) {
	// Tiny cartridges (6 MiB, 64 KiB early warning) and ~1.3 MiB shards:
	// the end of the medium cuts objects.
	w := newWorld(t, erasure.Params{K: 1, M: 1}, tape.VirtualConfig{Generation: tape.LTO6, Slots: 20, Drives: 1, Capacity: 6 << 20, EarlyWarning: 64 << 10}, 40, 12<<20)
	pool := tape.DefaultPool("p")
	w.label(pool, 20)
	res := w.write(pool, 1, time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC))
	if res.Rewritten == 0 {
		t.Errorf("no object was cut by the end of the medium; the test does not test it")
	}
	if len(res.Set.Tapes) < 4 {
		t.Errorf("set has %d tapes, want several per column", len(res.Set.Tapes))
	}
	// Every object is whole on exactly one tape.
	seen := map[string]string{}
	for _, st := range res.Set.Tapes {
		tc, err := w.cat.TapeCatalog(res.Set.ID, st.Column, st.ColumnSeq)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range tc.Entries {
			if e.Type != tiers.TypeData {
				continue
			}
			if prev, dup := seen[e.Name]; dup {
				t.Errorf("shard %s on %s and %s", e.Name, prev, st.Barcode)
			}
			seen[e.Name] = st.Barcode
		}
	}
	rep, err := tape.CheckCatalog(context.Background(), w.lib, w.cat, tape.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %v", err, rep.Errors)
	}
	if _, err := w.restore("latest"); err != nil {
		t.Fatal(err)
	}
	// Catalog loss: rebuild from the tapes reproduces it.
	before := snapshotDir(t, w.cat.Dir())
	os.RemoveAll(w.cat.Dir())
	cat, err := tape.OpenCatalog(w.cat.Dir())
	if err != nil {
		t.Fatal(err)
	}
	w.cat = cat
	rr, err := tape.Rebuild(context.Background(), w.lib, w.cat, tape.ScanOptions{}, nil)
	if err != nil || len(rr.Errors) > 0 {
		t.Fatalf("rebuild: %v %v", err, rr)
	}
	after := snapshotDir(t, w.cat.Dir())
	compareDirs(t, before, after)
	if _, err := w.restore("latest"); err != nil {
		t.Fatal(err)
	}
}

func TestCutLastCatalogFileAddsClosingTape(t *testing.T) {
	// The end of the medium cuts the catalog file of every tape that
	// holds data. The tape with a column's last object then cannot say
	// that it ends the column, so the writer adds a tape with no objects
	// and a catalog file that does, and a rebuild from the tapes alone
	// finds the set complete.
	w := newWorld(t, erasure.Params{K: 1, M: 1}, tape.VirtualConfig{Generation: tape.LTO6, Slots: 20, Drives: 1, Capacity: 6 << 20, EarlyWarning: 64 << 10}, 20, 6<<20)
	pool := tape.DefaultPool("p")
	w.label(pool, 20)
	lib := w.lib
	ch := catalogCutChanger{Changer: lib}
	ctx := context.Background()
	plan, err := tape.BuildPlan(ctx, w.r, w.snaps)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tape.WriteSet(ctx, ch, w.cat, w.r.Backend(), plan, tape.WriteOptions{Pool: pool, Level: tape.LevelDaily, Parity: 1,
		Now: func() time.Time { return time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC) }, BufferSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Set.Complete {
		t.Fatalf("set written incomplete: %+v", res.Set)
	}
	cols := map[int][]tape.SetTape{}
	for _, st := range res.Set.Tapes {
		cols[st.Column] = append(cols[st.Column], st)
	}
	if len(cols) != res.Set.Columns {
		t.Fatalf("%d columns have tapes, want %d", len(cols), res.Set.Columns)
	}
	for c, tapes := range cols {
		for i, st := range tapes {
			tc, err := w.cat.TapeCatalog(res.Set.ID, st.Column, st.ColumnSeq)
			if err != nil {
				t.Fatal(err)
			}
			data := 0
			for _, e := range tc.Entries {
				if e.Type == tiers.TypeData {
					data++
				}
			}
			closing := i == len(tapes)-1
			if st.Last != closing || tc.Last != closing || (closing && data != 0) || (!closing && data == 0) {
				t.Errorf("column %d tape %d (%s): last %v with %d data objects; want only a closing tape without data marked last", c, i, st.Barcode, st.Last, data)
			}
		}
	}
	if len(res.NoCatalog) != len(res.Set.Tapes)-res.Set.Columns {
		t.Errorf("%d tapes reported without a catalog file, want %d", len(res.NoCatalog), len(res.Set.Tapes)-res.Set.Columns)
	}
	rep, err := tape.CheckCatalog(ctx, lib, w.cat, tape.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %v", err, rep.Errors)
	}
	before := snapshotDir(t, w.cat.Dir())
	os.RemoveAll(w.cat.Dir())
	if w.cat, err = tape.OpenCatalog(w.cat.Dir()); err != nil {
		t.Fatal(err)
	}
	rr, err := tape.Rebuild(ctx, lib, w.cat, tape.ScanOptions{}, nil)
	if err != nil || len(rr.Errors) > 0 {
		t.Fatalf("rebuild: %v %v", err, rr)
	}
	compareDirs(t, before, snapshotDir(t, w.cat.Dir()))
	if _, err := w.restore("latest"); err != nil {
		t.Fatal(err)
	}
}

// catalogCutChanger hands out drives on which the end of the medium cuts
// the catalog file of every tape that holds data.
type catalogCutChanger struct{ tape.Changer }

func (c catalogCutChanger) OpenDrive(ctx context.Context, i int) (tape.Drive, error) {
	d, err := c.Changer.OpenDrive(ctx, i)
	if err != nil {
		return nil, err
	}
	return &catalogCutDrive{Drive: d}, nil
}

type catalogCutDrive struct {
	tape.Drive
	data bool // a data record went onto the tape since it was rewound
}

func (d *catalogCutDrive) Rewind(ctx context.Context) error {
	d.data = false
	return d.Drive.Rewind(ctx)
}

func (d *catalogCutDrive) WriteRecord(ctx context.Context, p []byte) (bool, error) {
	if h, _, err := tape.ParseRecord(p); err == nil {
		switch h.Kind {
		case tape.KindData:
			d.data = true
		case tape.KindCatalog:
			if d.data {
				return true, tape.ErrEndOfMedia
			}
		}
	}
	return d.Drive.WriteRecord(ctx, p)
}

func snapshotDir(t *testing.T, dir string) map[string][]byte {
	out := map[string][]byte{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out[rel], _ = os.ReadFile(p)
		}
		return err
	})
	return out
}

func compareDirs(t *testing.T, a, b map[string][]byte) {
	t.Helper()
	var names []string
	for k := range a {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !bytes.Equal(a[k], b[k]) {
			t.Errorf("catalog file %s differs after rebuild:\nbefore %s\nafter  %s", k, clip(a[k]), clip(b[k]))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			t.Errorf("rebuild made extra file %s", k)
		}
	}
}

func clip(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "…"
	}
	return string(b)
}

func TestFullCatalogEndsTheTape(t *testing.T) {
	// A tape takes no more objects once the next one's entry would not
	// fit in the catalog file a reader accepts: the column goes on to
	// another tape, and every catalog file can be read back.
	w := newWorld(t, erasure.Params{K: 1, M: 1}, tape.VirtualConfig{Generation: tape.LTO6, Slots: 30, Drives: 1}, 40, 12<<20)
	pool := tape.DefaultPool("p")
	w.label(pool, 30)
	first := w.write(pool, 1, time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC))
	if len(first.Set.Tapes) != first.Set.Columns {
		t.Fatalf("without a limit the set has %d tapes in %d columns, want one each", len(first.Set.Tapes), first.Set.Columns)
	}
	tc, err := w.cat.TapeCatalog(first.Set.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	meta := *tc
	meta.Entries = nil
	var entry int64
	for _, e := range tc.Entries {
		if e.Type == tiers.TypeData {
			entry = tape.CatalogLenForTest(&tape.TapeCatalog{Barcode: tc.Barcode, Entries: []tape.CatalogEntry{e}}) - tape.CatalogLenForTest(&tape.TapeCatalog{Barcode: tc.Barcode})
		} else {
			meta.Entries = append(meta.Entries, e)
		}
	}
	if entry == 0 {
		t.Fatal("the first tape holds no data object")
	}
	// The writer counts on the longest barcode a label may have.
	meta.Barcode = strings.Repeat("X", 255)
	metaLen := tape.CatalogLenForTest(&meta)

	ctx := context.Background()
	plan, err := tape.BuildPlan(ctx, w.r, w.snaps)
	if err != nil {
		t.Fatal(err)
	}
	opts := tape.WriteOptions{Pool: pool, Level: tape.LevelDaily, Parity: 1, Now: func() time.Time { return time.Date(2026, 1, 6, 0, 0, 0, 0, time.UTC) }, BufferSize: 8 << 20}
	before := snapshotDir(t, w.cat.Dir())
	restore := tape.SetCatalogLimitForTest(metaLen + entry - 1)
	_, err = tape.WriteSet(ctx, w.lib, w.cat, w.r.Backend(), plan, opts)
	restore()
	if err == nil || !strings.Contains(err.Error(), "metadata (") || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("metadata alone filling the catalog: err %v, want it to say so", err)
	}
	compareDirs(t, before, snapshotDir(t, w.cat.Dir()))

	limit := metaLen + 3*entry
	restore = tape.SetCatalogLimitForTest(limit)
	opts.Now = func() time.Time { return time.Date(2026, 1, 7, 0, 0, 0, 0, time.UTC) }
	res, err := tape.WriteSet(ctx, w.lib, w.cat, w.r.Backend(), plan, opts)
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if !res.Set.Complete || len(res.Set.Tapes) < 2*res.Set.Columns {
		t.Fatalf("set complete %v with %d tapes in %d columns, want several tapes per column", res.Set.Complete, len(res.Set.Tapes), res.Set.Columns)
	}
	for _, st := range res.Set.Tapes {
		tc, err := w.cat.TapeCatalog(res.Set.ID, st.Column, st.ColumnSeq)
		if err != nil {
			t.Fatal(err)
		}
		if n := tape.CatalogLenForTest(tc); n > limit {
			t.Errorf("tape %s: catalog of %d bytes, over the %d allowed", st.Barcode, n, limit)
		}
	}
	rep, err := tape.CheckCatalog(ctx, w.lib, w.cat, tape.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %v", err, rep.Errors)
	}
	before = snapshotDir(t, w.cat.Dir())
	os.RemoveAll(w.cat.Dir())
	if w.cat, err = tape.OpenCatalog(w.cat.Dir()); err != nil {
		t.Fatal(err)
	}
	if rr, err := tape.Rebuild(ctx, w.lib, w.cat, tape.ScanOptions{}, nil); err != nil || len(rr.Errors) > 0 {
		t.Fatalf("rebuild: %v %v", err, rr)
	}
	compareDirs(t, before, snapshotDir(t, w.cat.Dir()))
	if _, err := w.restore("latest"); err != nil {
		t.Fatal(err)
	}
}
