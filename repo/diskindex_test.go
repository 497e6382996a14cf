package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// damagedCache is a cache file with one blob record and no pack records;
// its sizes and final fanout entry are consistent.
func damagedCache(packNo uint32) []byte {
	b := make([]byte, cacheHdrSize+fanoutEntries*8+blobRecSize)
	copy(b, cacheMagic)
	binary.LittleEndian.PutUint32(b[4:], cacheVersion)
	binary.LittleEndian.PutUint64(b[24:], 1) // one blob
	for i := 0; i < fanoutEntries; i++ {
		binary.LittleEndian.PutUint64(b[cacheHdrSize+8*i:], 1)
	}
	binary.LittleEndian.PutUint32(b[cacheHdrSize+fanoutEntries*8+32:], packNo)
	return b
}

// A damaged local index cache must be refused or rebuilt, never crash
// the process.
func TestDiskIndexDamagedNoPanic(t *testing.T) {
	d := &diskIndex{mm: damagedCache(7)}
	if err := d.parse(); err != nil {
		t.Fatalf("parse: %v", err)
	}
	if err := d.eachBlob(func(PackInfo, BlobEntry) error { return nil }); err == nil {
		t.Fatal("eachBlob accepted a blob record naming a pack that does not exist")
	}
	d.lookup(id.ID{}, func(PackInfo, BlobEntry) bool {
		t.Fatal("lookup returned a blob record naming a pack that does not exist")
		return true
	})

	b := damagedCache(0)
	binary.LittleEndian.PutUint64(b[cacheHdrSize:], 9) // fanout[0] above the blob count
	if err := (&diskIndex{mm: b}).parse(); err == nil {
		t.Fatal("parse accepted a fanout that decreases")
	}
}

// zeroCacheRange overwrites what lies at [off, off+n) of the cache file at
// path with zeros, as blocks a power cut left unwritten read back.
func zeroCacheRange(t *testing.T, path string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedCacheNotTrusted: the index cache written before a power cut
// reads back with the pack records of its data packs zeroed (its size and
// header intact).
// Opened as it is, every pack looked unindexed to prune, which condemned
// and swept the packs of a live snapshot as orphans. The cache must be
// found damaged and rebuilt from the index objects.
func TestDamagedCacheNotTrusted(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r, clock := clockedRepo(t, be)
	rng := rand.New(rand.NewPCG(31, 31))
	var plain [][]byte
	for i := 0; i < 40; i++ {
		plain = append(plain, randBytes(rng, 30000))
	}
	snapOf(t, r, plain)
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	cacheDir := filepath.Dir(r.cacheDir)
	path := filepath.Join(r.cacheDir, "index.db")
	d := r.disk
	if d.nPacks == 0 {
		t.Fatal("fixture: no pack in the cache")
	}
	// The pack records of the data packs are lost, the tree pack's not.
	treePacks := map[uint32]bool{}
	for i := uint64(0); i < d.nBlobs; i++ {
		if rec := d.blob(i); rec.entry().Type == TreeBlob {
			treePacks[rec.packNo()] = true
		}
	}
	var zero []int64
	for n := uint32(0); uint64(n) < d.nPacks; n++ {
		if !treePacks[n] {
			zero = append(zero, int64(d.offPacks)+int64(n)*packRecSize)
		}
	}
	if len(zero) == 0 {
		t.Fatal("fixture: no data pack in the cache")
	}
	r.Close()
	for _, off := range zero {
		zeroCacheRange(t, path, off, packRecSize)
	}

	p, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: cacheDir, Now: func() time.Time { return *clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rep, err := p.Prune(ctx, PruneOptions{GraceSet: true, RepackBelow: -1, RepackBelowSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Condemned != 0 || rep.Removed != 0 {
		t.Errorf("prune with a damaged index cache condemned %d and removed %d packs of a live snapshot", rep.Condemned, rep.Removed)
	}
	fresh, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), Now: func() time.Time { return *clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	for i, b := range plain {
		got, err := fresh.LoadBlob(ctx, DataBlob, fresh.BlobID(b), nil)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("chunk %d of the live snapshot after the prune: %v", i, err)
		}
	}
}

// TestMergeRunsReadError: a sort run that cannot be read to its end (a
// partial record, a read error) fails the cache build; taken for the end
// of the run, the cache built lacked the records after it.
func TestMergeRunsReadError(t *testing.T) {
	dir := t.TempDir()
	var rec blobRec
	whole := filepath.Join(dir, "run-0")
	if err := os.WriteFile(whole, bytes.Repeat(rec[:], 3), 0o600); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(dir, "run-1")
	if err := os.WriteFile(partial, append(bytes.Repeat(rec[:], 2), rec[:10]...), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "run-2")
	if err := os.Mkdir(unreadable, 0o700); err != nil { // reading fails (EISDIR)
		t.Fatal(err)
	}
	for _, runs := range [][]string{{whole, partial}, {whole, unreadable}} {
		n, err := mergeRuns(context.Background(), nil, runs, func(*blobRec) error { return nil })
		if err == nil {
			t.Errorf("merge of %v: %d records and no error", runs, n)
		}
	}
	if n, err := mergeRuns(context.Background(), nil, []string{whole, whole}, func(*blobRec) error { return nil }); err != nil || n != 6 {
		t.Errorf("merge of two whole runs: %d records, %v", n, err)
	}
}

// TestStaleCacheBuildFilesRemoved: a process killed while it built the
// index cache leaves its sort runs and partial cache file (together up to
// twice the cache's size) in the cache directory. A later build removes
// those untouched for StaleTempAge, and leaves a recent one, which may be
// another process's build in progress.
func TestStaleCacheBuildFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-2 * StaleTempAge)
	staleRun := filepath.Join(dir, ".build-1", "run-0")
	staleOut := filepath.Join(dir, ".index-1")
	freshRun := filepath.Join(dir, ".build-2", "run-0")
	freshOut := filepath.Join(dir, ".index-2")
	for _, p := range []string{staleRun, staleOut, freshRun, freshOut} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, blobRecSize), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{staleRun, filepath.Dir(staleRun), staleOut} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	load := func(context.Context, id.ID) (*IndexFile, error) { return &IndexFile{}, nil }
	if err := buildDiskIndex(context.Background(), filepath.Join(dir, "index.db"), nil, nil, load); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(staleRun), staleOut} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s of a build killed long ago is still there", p)
		}
	}
	for _, p := range []string{freshRun, freshOut} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("recent build file: %v", err)
		}
	}
}
