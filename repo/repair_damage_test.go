package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// smallSnapshot stores one file of a few blobs and a snapshot of it.
func smallSnapshot(t *testing.T, r *Repository) []Extent {
	t.Helper()
	ctx := context.Background()
	var ext []Extent
	for i := 0; i < 4; i++ {
		b := make([]byte, 50000)
		for j := range b {
			b[j] = byte(i*7 + j*13 + j>>8)
		}
		x, _, err := r.SaveBlob(ctx, DataBlob, b, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		ext = append(ext, Extent{ID: x, Len: int64(len(b))})
	}
	fileSnapshot(t, r, &Node{Name: "f", Type: NodeFile, Size: 4 * 50000}, ext)
	return ext
}

func indexIDs(t *testing.T, be tiers.Backend) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	if err := be.List(context.Background(), tiers.TypeIndex, func(oi tiers.ObjectInfo) error {
		out[oi.Handle.Name] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRepairKeepsIndexOnStorageError: an index object that check read
// but that fails to load during repair (a storage error) is not removed:
// nothing indexed its packs again, so removing it would unindex live data
// (and let prune delete it).
func TestRepairKeepsIndexOnStorageError(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	fb := tierstest.NewFaulty(mem, 1)
	r := testRepo(t, fb, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	smallSnapshot(t, r)
	before := indexIDs(t, mem)
	// Check's read succeeds, the next read of an index object fails.
	fb.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeIndex, Skip: len(before), Times: 1})
	if _, err := r.Repair(ctx, CheckOptions{}); err != nil {
		t.Logf("repair: %v", err)
	}
	fb.Reset()
	after := indexIDs(t, mem)
	for x := range before {
		if !after[x] {
			t.Errorf("repair removed index %s after a storage error reading it", x[:8])
		}
	}
	r2, err := Open(ctx, mem, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if rep, err := r2.Check(ctx, CheckOptions{}); err != nil {
		t.Fatalf("check after repair: %v %v", err, rep.Errors)
	}
}

// TestRepairKeepsNewerIndex: an index object of a format this drpipe does
// not know (a newer drpipe shares the repository) is reported, not
// removed, and repair exits with an error saying why it is kept.
func TestRepairKeepsNewerIndex(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	r := testRepo(t, mem, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	smallSnapshot(t, r)
	newer, err := r.saveObject(ctx, tiers.TypeIndex, []byte("DRPI\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, mem, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, SkipUnreadableIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	rep, err := r2.Check(ctx, CheckOptions{})
	if !errors.Is(err, ErrCheckFailed) || rep.UnreadableIndexes != 1 || len(rep.DamagedIndexes) != 0 {
		t.Fatalf("check: %v, unreadable %d, damaged %v; want 1 unreadable, not damaged", err, rep.UnreadableIndexes, rep.DamagedIndexes)
	}
	if _, err := r2.Repair(ctx, CheckOptions{}); err == nil {
		t.Error("repair succeeded although it left an unreadable index object")
	}
	if !indexIDs(t, mem)[newer.String()] {
		t.Fatal("repair removed an index object of a newer format")
	}
}

// TestReconstructExtendedShardBounded: a shard object longer than the
// index says is corrupt, and reading it costs no more than an intact one
// (a hostile or damaged tier cannot make check, restore or repair load an
// arbitrarily large object into memory).
func TestReconstructExtendedShardBounded(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	cb := tierstest.NewCounting(mem)
	r := testRepo(t, cb, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	ext := smallSnapshot(t, r)
	p := r.Lookup(ext[0].ID)[0].Pack
	obj, err := tiers.LoadAll(ctx, mem, p.ShardHandle(0), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(len(obj))
	if err := tiers.PutBytes(ctx, mem, p.ShardHandle(0), append(obj, make([]byte, 32<<20)...)); err != nil {
		t.Fatal(err)
	}
	cb.Reset()
	res, err := r.ReconstructPack(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Corrupt) != 1 || res.Corrupt[0] != 0 || !strings.Contains(res.Damage[0].Error(), fmt.Sprintf("object is %d bytes, want %d", want+32<<20, want)) {
		t.Errorf("extended shard 0: corrupt %v, damage %v", res.Corrupt, res.Damage)
	}
	if got := cb.Counts(tiers.TypeData).BytesLoaded; got > 3*(want+1) {
		t.Errorf("read %d bytes of shards to rebuild a pack of three %d-byte shards", got, want)
	}
}

// TestCheckReadErrorIsNotMissing: a shard that exists but cannot be read
// is reported with the error, not as a missing shard.
func TestCheckReadErrorIsNotMissing(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	fb := tierstest.NewFaulty(mem, 1)
	r := testRepo(t, fb, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	ext := smallSnapshot(t, r)
	p := r.Lookup(ext[0].ID)[0].Pack
	fb.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeData, Name: p.ShardHandle(1).Name, Err: errors.New("input/output error")})
	rep, err := r.Check(ctx, CheckOptions{ReadData: true})
	if !errors.Is(err, ErrCheckFailed) || len(rep.Damaged) != 1 {
		t.Fatalf("check: %v, damaged %+v", err, rep.Damaged)
	}
	d := rep.Damaged[0]
	if len(d.Missing) != 0 || len(d.Corrupt) != 1 || !strings.Contains(strings.Join(d.Details, "\n"), "input/output error") {
		t.Errorf("unreadable shard 1: missing %v corrupt %v details %q; want it corrupt with the read error", d.Missing, d.Corrupt, d.Details)
	}
}

// TestCheckPackThatCannotBeRebuilt: a pack whose shards are all intact but
// whose content is unusable (here its sealed pack header) is not
// "repairable": repair cannot fix it, and must not report success.
func TestCheckPackThatCannotBeRebuilt(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	r := testRepo(t, mem, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	ext := smallSnapshot(t, r)
	p := r.Lookup(ext[0].ID)[0].Pack
	res, err := r.ReconstructPack(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := r.ParsePack(res.Pack)
	if err != nil {
		t.Fatal(err)
	}
	pack := append([]byte(nil), res.Pack...)
	pack[len(pack)-packTrailerSize-20] ^= 1 // inside the sealed pack header
	pid, shards, err := erasure.Encode(p.Params(), pack)
	if err != nil {
		t.Fatal(err)
	}
	for i, sh := range shards {
		if err := tiers.PutBytes(ctx, mem, tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, i)}, sh); err != nil {
			t.Fatal(err)
		}
	}
	bad := PackInfo{ID: pid, Length: int64(len(pack)), ShardSize: p.ShardSize, K: p.K, M: p.M}
	if _, err := r.SaveIndexFile(ctx, &IndexFile{Packs: []IndexPack{{PackInfo: bad, Blobs: entries}}}); err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Check(ctx, CheckOptions{ReadData: true})
	if !errors.Is(err, ErrCheckFailed) || len(rep.Damaged) != 1 || rep.Damaged[0].Pack != pid {
		t.Fatalf("check: %v, damaged %+v", err, rep.Damaged)
	}
	if rep.Damaged[0].Repairable || len(rep.Lost()) != 1 {
		t.Errorf("a pack with an unreadable header is reported repairable: %+v", rep.Damaged[0])
	}
	if _, err := r.Repair(ctx, CheckOptions{}); !errors.Is(err, ErrUnrepairable) {
		t.Errorf("repair of a pack it cannot fix: %v, want ErrUnrepairable", err)
	}
}

// TestRepairReadsBackRewrittenShards: a rebuilt shard is read back once
// stored; one the storage kept damaged (an object under retention it will
// not replace, a write cut short) makes repair fail naming it, and its
// pack is not reported repaired.
func TestRepairReadsBackRewrittenShards(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	fb := tierstest.NewFaulty(mem, 1)
	r := testRepo(t, fb, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	smallSnapshot(t, r)
	var victim tiers.Handle
	if err := mem.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		victim = oi.Handle
		return errStop
	}); err != nil && !errors.Is(err, errStop) {
		t.Fatal(err)
	}
	if err := mem.Remove(ctx, victim); err != nil {
		t.Fatal(err)
	}
	fb.Inject(tierstest.Fault{Op: tierstest.OpPut, Type: tiers.TypeData, Kind: tierstest.Truncate})
	rep, err := r.Repair(ctx, CheckOptions{})
	if !errors.Is(err, ErrUnrepairable) || !strings.Contains(err.Error(), victim.Name) {
		t.Fatalf("repair whose rewrite did not take: %v, want ErrUnrepairable naming %s", err, victim.Name)
	}
	if len(rep.NotStored) != 1 || rep.NotStored[0] != victim.Name || len(rep.PacksRepaired) != 0 || rep.ShardsRewritten != 0 {
		t.Errorf("report: not stored %v, repaired %v, %d rewritten; want %s not stored and nothing repaired", rep.NotStored, rep.PacksRepaired, rep.ShardsRewritten, victim.Name)
	}
	fb.Reset()
	if _, err := r.Repair(ctx, CheckOptions{}); err != nil {
		t.Fatalf("repair once storage stores again: %v", err)
	}
}

// keepsLarger is a store that, asked to store the shard named victim,
// keeps a far larger object under that name and reports success (an
// object under retention it will not replace), and counts the bytes
// read of that name.
type keepsLarger struct {
	tiers.Backend
	victim string
	read   atomic.Int64
}

func (b *keepsLarger) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if h.Name == b.victim {
		big := make([]byte, 64<<20)
		return b.Backend.Put(ctx, h, bytes.NewReader(big), int64(len(big)))
	}
	return b.Backend.Put(ctx, h, rd, size)
}

func (b *keepsLarger) Load(ctx context.Context, h tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	if h.Name != b.victim {
		return b.Backend.Load(ctx, h, off, n, fn)
	}
	return b.Backend.Load(ctx, h, off, n, func(rd io.Reader) error {
		return fn(countingReader{rd, &b.read})
	})
}

type countingReader struct {
	io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestRepairReadBackBounded: reading back a rewritten shard the store
// kept as some other, much larger object reads no more than the shard's
// size (and one byte) before calling it not stored.
func TestRepairReadBackBounded(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	kb := &keepsLarger{Backend: mem}
	r := testRepo(t, kb, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	smallSnapshot(t, r)
	var victim tiers.ObjectInfo
	if err := mem.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		victim = oi
		return errStop
	}); err != nil && !errors.Is(err, errStop) {
		t.Fatal(err)
	}
	if err := mem.Remove(ctx, victim.Handle); err != nil {
		t.Fatal(err)
	}
	kb.victim = victim.Handle.Name
	rep, err := r.Repair(ctx, CheckOptions{})
	if !errors.Is(err, ErrUnrepairable) || len(rep.NotStored) != 1 {
		t.Fatalf("repair whose rewrite the store kept as another object: %v, not stored %v", err, rep.NotStored)
	}
	if got := kb.read.Load(); got > victim.Size+1 {
		t.Errorf("read back %d bytes of a %d-byte shard", got, victim.Size)
	}
}
