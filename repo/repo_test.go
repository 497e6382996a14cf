package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/chunking"
	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

var testKDF = &KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func testRepo(t *testing.T, be tiers.Backend, o InitOptions) *Repository {
	t.Helper()
	if be == nil {
		be = tierstest.NewMemory()
	}
	r, err := Init(context.Background(), be, o, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func TestSaveLoadBlobsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[id.ID][]byte{}
	for i := 0; i < 300; i++ {
		b := randBytes(rng, 1+rng.IntN(20000))
		if i%3 == 0 {
			b = bytes.Repeat([]byte("compressible "), 1+rng.IntN(4000))
		}
		x, isNew, err := r.SaveBlob(ctx, DataBlob, b, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := want[x]; dup == isNew {
			t.Fatalf("blob %d: isNew=%v but seen before=%v", i, isNew, dup)
		}
		want[x] = b
	}
	// Same content again is not new.
	for x, b := range want {
		if _, isNew, _ := r.SaveBlob(ctx, DataBlob, b, x); isNew {
			t.Fatalf("blob %s saved twice", x.Short())
		}
		break
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(r *Repository) {
		t.Helper()
		for x, b := range want {
			got, err := r.LoadBlob(ctx, DataBlob, x, nil)
			if err != nil {
				t.Fatalf("load %s: %v", x.Short(), err)
			}
			if !bytes.Equal(got, b) {
				t.Fatalf("blob %s: got %d bytes, want %d identical", x.Short(), len(got), len(b))
			}
		}
	}
	check(r)
	r2, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	check(r2)
	if _, err := r2.LoadBlob(ctx, TreeBlob, func() id.ID {
		for x := range want {
			return x
		}
		return id.ID{}
	}(), nil); !errors.Is(err, ErrBlobLost) {
		t.Errorf("loading a data blob as tree: err %v, want ErrBlobLost", err)
	}
}

func TestWrongPasswordAndKeySlots(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{})
	if _, err := Open(ctx, be, Options{Password: []byte("nope"), CacheDir: t.TempDir()}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: err %v, want ErrWrongPassword", err)
	}
	k2, err := r.AddKey(ctx, []byte("second"), "second")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, be, Options{Password: []byte("second"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatalf("open with second slot: %v", err)
	}
	if r2.KeyID() != k2 {
		t.Errorf("opened with slot %s, want %s", r2.KeyID().Short(), k2.Short())
	}
	if err := r2.RemoveKey(ctx, k2); err == nil {
		t.Error("removing the slot in use succeeded")
	}
	if err := r2.RemoveKey(ctx, r.KeyID()); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir()}); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("removed slot still opens: %v", err)
	}
	keys, _ := r2.ListKeys(ctx)
	if len(keys) != 1 || !keys[0].Current {
		t.Errorf("ListKeys = %+v, want the one current slot", keys)
	}
}

func TestUnknownVersionAndNotRepository(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	if _, err := ReadConfig(ctx, be); !errors.Is(err, ErrNotRepository) {
		t.Errorf("empty backend: %v, want ErrNotRepository", err)
	}
	testRepo(t, be, InitOptions{})
	raw, _ := tiers.LoadAll(ctx, be, configHandle, 0, 0)
	bad := bytes.Replace(raw, []byte(fmt.Sprintf(`"version": %d`, FormatVersion)), []byte(`"version": 7`), 1)
	tiers.PutBytes(ctx, be, configHandle, bad)
	_, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir()})
	if !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("version 7: %v, want ErrUnsupportedVersion", err)
	}
	// A version below 1 was never written: the config is damaged, and a
	// newer drpipe would not read it either.
	for _, v := range []string{`"version": 0`, `"version": -3`} {
		tiers.PutBytes(ctx, be, configHandle, bytes.Replace(raw, []byte(fmt.Sprintf(`"version": %d`, FormatVersion)), []byte(v), 1))
		_, err := ReadConfig(ctx, be)
		if err == nil || errors.Is(err, ErrUnsupportedVersion) || strings.Contains(err.Error(), "newer") {
			t.Errorf("%s: %v, want an error calling the config damaged, not a newer version", v, err)
		}
	}
	// Tampering with public fields is detected through the sealed copy.
	tampered := bytes.Replace(raw, []byte(`"K": 4`), []byte(`"K": 5`), 1)
	if bytes.Equal(tampered, raw) {
		t.Fatalf("test setup: config has no \"K\": 4: %s", raw)
	}
	tiers.PutBytes(ctx, be, configHandle, tampered)
	if _, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir()}); err == nil {
		t.Error("tampered config opened")
	}
	if _, err := Init(ctx, be, InitOptions{}, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF}); err == nil {
		t.Error("init over an existing repository succeeded")
	}
}

func TestIndexRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	f := &IndexFile{Supersedes: []id.ID{{1}, {2}}}
	for p := 0; p < 20; p++ {
		ip := IndexPack{PackInfo: PackInfo{ID: id.ID{byte(p), 9}, Length: 1 << 20, K: 4, M: 2}}
		ip.ShardSize = uint32((ip.Length + 3) / 4)
		off := uint32(0)
		for b := 0; b < rng.IntN(50); b++ {
			l := uint32(100 + rng.IntN(1000))
			var x id.ID
			x[0], x[1] = byte(p), byte(b)
			ip.Blobs = append(ip.Blobs, BlobEntry{Type: BlobType(1 + rng.IntN(2)), ID: x, Offset: off, Length: l, RawLength: l * 2})
			off += l
		}
		f.Packs = append(f.Packs, ip)
	}
	enc := encodeIndex(f)
	got, err := decodeIndex(enc)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Supersedes) != fmt.Sprint(f.Supersedes) || len(got.Packs) != len(f.Packs) {
		t.Fatalf("round trip mismatch")
	}
	for i := range f.Packs {
		if fmt.Sprintf("%+v", got.Packs[i]) != fmt.Sprintf("%+v", f.Packs[i]) {
			t.Fatalf("pack %d: got %+v, want %+v", i, got.Packs[i], f.Packs[i])
		}
	}
	// Every truncation is an error, never a panic.
	for n := 0; n < len(enc); n += 1 + n/16 {
		if _, err := decodeIndex(enc[:n]); err == nil {
			t.Fatalf("decodeIndex of %d/%d bytes succeeded", n, len(enc))
		}
	}
}

// TestDiskIndexMergeAndRebuild checks the memory-mapped index cache with
// sort runs small enough to force external merging.
func TestDiskIndexMergeAndRebuild(t *testing.T) {
	ctx := context.Background()
	saved := runMaxRecords
	runMaxRecords = 500
	defer func() { runMaxRecords = saved }()
	rng := rand.New(rand.NewPCG(5, 6))
	files := map[id.ID]*IndexFile{}
	all := map[id.ID][]BlobLocation{}
	mk := func(n int) id.ID {
		f := &IndexFile{}
		for p := 0; p < n; p++ {
			var pid id.ID
			for i := range pid {
				pid[i] = byte(rng.Uint32())
			}
			ip := IndexPack{PackInfo: PackInfo{ID: pid, Length: 4 << 20, ShardSize: 1 << 20, K: 4, M: 2}}
			for b := 0; b < 40; b++ {
				var x id.ID
				for i := range x {
					x[i] = byte(rng.Uint32())
				}
				if b%10 == 0 && len(all) > 0 { // some duplicates across packs
					for k := range all {
						x = k
						break
					}
				}
				e := BlobEntry{Type: DataBlob, ID: x, Offset: uint32(b * 100), Length: 100, RawLength: 90}
				ip.Blobs = append(ip.Blobs, e)
				all[x] = append(all[x], BlobLocation{Pack: ip.PackInfo, Entry: e})
			}
			f.Packs = append(f.Packs, ip)
		}
		var fid id.ID
		for i := range fid {
			fid[i] = byte(rng.Uint32())
		}
		files[fid] = f
		return fid
	}
	load := func(_ context.Context, x id.ID) (*IndexFile, error) { return files[x], nil }
	path := filepath.Join(t.TempDir(), "index.db")
	ids := []id.ID{mk(30), mk(20)}
	if err := buildDiskIndex(ctx, path, nil, ids, load); err != nil {
		t.Fatal(err)
	}
	d, err := openDiskIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, mk(25))
	if err := buildDiskIndex(ctx, path, d, ids, load); err != nil { // incremental merge
		t.Fatal(err)
	}
	d.close()
	d, err = openDiskIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if int(d.nFiles) != 3 {
		t.Errorf("cache covers %d index files, want 3", d.nFiles)
	}
	total := 0
	for x, want := range all {
		var got []BlobLocation
		d.lookup(x, func(p PackInfo, e BlobEntry) bool {
			got = append(got, BlobLocation{p, e})
			return true
		})
		total += len(got)
		if len(got) != len(want) {
			t.Fatalf("blob %s: %d locations, want %d", x.Short(), len(got), len(want))
		}
		key := func(l []BlobLocation) []string {
			var s []string
			for _, b := range l {
				s = append(s, fmt.Sprintf("%+v", b))
			}
			sort.Strings(s)
			return s
		}
		if fmt.Sprint(key(got)) != fmt.Sprint(key(want)) {
			t.Fatalf("blob %s: got %v, want %v", x.Short(), key(got), key(want))
		}
	}
	if uint64(total) != d.nBlobs {
		t.Errorf("lookups found %d records, cache holds %d", total, d.nBlobs)
	}
	var missing id.ID
	missing[0] = 0xff
	d.lookup(missing, func(PackInfo, BlobEntry) bool { t.Error("found a blob that was never indexed"); return false })
	// Ordering invariant.
	for i := uint64(1); i < d.nBlobs; i++ {
		if blobRecLess(d.blob(i), d.blob(i-1)) {
			t.Fatalf("records %d and %d out of order", i-1, i)
		}
	}
}

func TestFindSnapshot(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := testRepo(t, nil, InitOptions{})
	tree, err := r.SaveTree(ctx, &Tree{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []id.ID
	for i, h := range []string{"a", "b", "a"} {
		x, err := r.SaveSnapshot(ctx, &Snapshot{Time: now.Add(time.Duration(i) * time.Hour), Host: h, Tree: tree, Paths: []string{"/x"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, x)
	}
	for _, tc := range []struct {
		ref, host string
		want      id.ID
	}{
		{"latest", "", ids[2]}, {"latest", "b", ids[1]}, {ids[0].String(), "", ids[0]}, {ids[1].String()[:12], "", ids[1]},
	} {
		s, err := r.FindSnapshot(ctx, tc.ref, tc.host)
		if err != nil || s.ID() != tc.want {
			t.Errorf("FindSnapshot(%q, %q) = %v, %v; want %s", tc.ref, tc.host, s, err, tc.want.Short())
		}
	}
	for _, bad := range []string{"", "zz", "latest!", ids[0].String() + "0"} {
		if _, err := r.FindSnapshot(ctx, bad, ""); !errors.Is(err, ErrBadSnapshotRef) {
			t.Errorf("FindSnapshot(%q) = %v, want a bad reference", bad, err)
		}
	}
	if _, err := r.FindSnapshot(ctx, "0000000000000000000000", ""); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("FindSnapshot of an id prefix that matches nothing: %v", err)
	}
	if _, err := r.FindSnapshot(ctx, "latest", "nohost"); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("latest of unknown host: %v", err)
	}
	// An id with a host: the snapshot must be that host's, as with
	// latest, not restored whatever its host.
	if s, err := r.FindSnapshot(ctx, ids[1].String()[:12], "a"); !errors.Is(err, ErrNoSnapshot) || !strings.Contains(fmt.Sprint(err), `host "b"`) {
		t.Errorf("FindSnapshot of host b's snapshot with host a = %v, %v; want no matching snapshot naming host b", s, err)
	}
	if s, err := r.FindSnapshot(ctx, ids[1].String(), "b"); err != nil || s.ID() != ids[1] {
		t.Errorf("FindSnapshot of host b's snapshot with host b = %v, %v", s, err)
	}
}

// TestSnapshotNeedsDurableTree enforces "data before metadata".
func TestSnapshotNeedsDurableTree(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t, nil, InitOptions{})
	tree, _ := r.SaveTree(ctx, &Tree{Nodes: []*Node{{Name: "x", Type: NodeFile}}})
	if _, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tree, Host: "h"}); err == nil {
		t.Fatal("snapshot saved before its tree was flushed")
	}
}

// TestCheckAndRepairInProcess runs check and repair on repositories of
// every format version: format 1 keeps writing version 1 shards (SHA-256),
// formats 2 and 3 write version 2 (BLAKE3), format 3 also binds sealed
// metadata to its kind; damage is found and repaired in each.
func TestCheckAndRepairInProcess(t *testing.T) {
	for fv := 1; fv <= FormatVersion; fv++ {
		t.Run(fmt.Sprintf("format%d", fv), func(t *testing.T) { checkAndRepair(t, fv) })
	}
}

func checkAndRepair(t *testing.T, fv int) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20, Version: fv})
	if r.Config().Version != fv {
		t.Fatalf("repository format %d, want %d", r.Config().Version, fv)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var ext []Extent
	for i := 0; i < 40; i++ {
		b := randBytes(rng, 60000)
		x, _, err := r.SaveBlob(ctx, DataBlob, b, id.ID{})
		if err != nil {
			t.Fatal(err)
		}
		ext = append(ext, Extent{ID: x, Len: int64(len(b))})
	}
	n := &Node{Name: "disk.img", Type: NodeFile, Size: 40 * 60000}
	if err := r.SetContent(ctx, n, ext); err != nil {
		t.Fatal(err)
	}
	tree, _ := r.SaveTree(ctx, &Tree{Nodes: []*Node{n}})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sid, err := r.SaveSnapshot(ctx, &Snapshot{Tree: tree, Host: "h", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("healthy repository: %v %+v", err, rep)
	}
	victim := r.Lookup(ext[0].ID)[0].Pack // a data pack
	shard, err := tiers.LoadAll(ctx, be, victim.ShardHandle(0), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := erasure.Version // format 1 repositories stay readable by format-1 drpipe
	if fv == 1 {
		want = 1
	}
	if int(shard[4]) != want {
		t.Fatalf("format %d repository wrote shard version %d, want %d", fv, shard[4], want)
	}
	// A flipped payload bit is found by check --read-data and repaired.
	shard[len(shard)-100] ^= 1
	tiers.PutBytes(ctx, be, victim.ShardHandle(0), shard)
	rep, err := r.Check(ctx, CheckOptions{ReadData: true})
	if !errors.Is(err, ErrCheckFailed) || len(rep.Damaged) != 1 || !slices.Equal(rep.Damaged[0].Corrupt, []int{0}) {
		t.Fatalf("flipped bit in shard 0: err %v, damaged %+v", err, rep.Damaged)
	}
	if _, err := r.Repair(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatal(err)
	}
	be.Remove(ctx, victim.ShardHandle(1))
	rep, err = r.Check(ctx, CheckOptions{})
	if !errors.Is(err, ErrCheckFailed) || len(rep.Damaged) != 1 || rep.Damaged[0].Pack != victim.ID || !rep.Damaged[0].Repairable {
		t.Fatalf("one shard gone: err %v, damaged %+v", err, rep.Damaged)
	}
	if len(rep.Damaged[0].Files) != 1 || rep.Damaged[0].Files[0] != "/disk.img" || rep.Damaged[0].Snapshots[0] != sid.String()[:8] {
		t.Errorf("damage names files %v snapshots %v, want /disk.img in %s", rep.Damaged[0].Files, rep.Damaged[0].Snapshots, sid.Short())
	}
	if _, err := r.Repair(ctx, CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("after repair: %v", err)
	}
	// Two shards gone with M=1: lost.
	be.Remove(ctx, victim.ShardHandle(0))
	be.Remove(ctx, victim.ShardHandle(2))
	rep, _ = r.Check(ctx, CheckOptions{})
	if len(rep.Lost()) != 1 {
		t.Fatalf("lost packs %+v, want 1", rep.Lost())
	}
	if _, err := r.Repair(ctx, CheckOptions{}); !errors.Is(err, ErrUnrepairable) {
		t.Errorf("repair of a lost pack: %v, want ErrUnrepairable", err)
	}
}

var _ = os.Remove

// TestConfigChunkSizes: a new repository records the default chunk
// sizes; a config without them (written before they were recorded) cuts
// with restic's; invalid recorded sizes are refused and a public copy
// that differs from the sealed one is caught.
func TestConfigChunkSizes(t *testing.T) {
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{})
	cc := r.ChunkConfig()
	if cc.MinSize != chunking.DefaultMinSize || cc.MaxSize != chunking.DefaultMaxSize || cc.AverageBits != chunking.DefaultAverageBits || cc.Pol != r.ChunkerPolynomial() {
		t.Fatalf("new repository chunks with %+v, want the defaults", cc)
	}
	legacy := Config{ChunkerPolynomial: r.ChunkerPolynomial()}
	if lc := legacy.ChunkConfig(); lc.MinSize != chunking.LegacyMinSize || lc.MaxSize != chunking.LegacyMaxSize || lc.AverageBits != chunking.LegacyAverageBits {
		t.Fatalf("a config without chunk sizes chunks with %+v, want restic's", lc)
	}
	raw, err := tiers.LoadAll(context.Background(), be, tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(c *Config)) []byte {
		c, err := parseConfigPublic(raw)
		if err != nil {
			t.Fatal(err)
		}
		f(c)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := parseConfigPublic(edit(func(c *Config) { c.Chunks.AverageBits = 40 })); err == nil || !strings.Contains(err.Error(), "chunk sizes") {
		t.Errorf("average bits 40: %v, want a chunk sizes error", err)
	}
	if _, err := parseConfigPublic(edit(func(c *Config) { c.Chunks.Max = c.Chunks.Min - 1 })); err == nil {
		t.Error("max below min accepted")
	}
	for name, f := range map[string]func(c *Config){
		"changed": func(c *Config) { c.Chunks.Min *= 2 },
		"removed": func(c *Config) { c.Chunks = nil },
	} {
		c, err := parseConfigPublic(edit(f))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.openSecret(r.key); err == nil || !strings.Contains(err.Error(), "tampered") {
			t.Errorf("public chunk sizes %s: %v, want a tampering error", name, err)
		}
	}
}

// TestInitChunkSizes checks that init records the chunk sizes it is given,
// that a reopened repository chunks with them, and that sizes outside the
// documented bounds are refused before anything is stored.
func TestInitChunkSizes(t *testing.T) {
	ctx := context.Background()
	want := ChunkSizes{Min: 1 << 20, Max: 8 << 20, AverageBits: 21}
	be := tierstest.NewMemory()
	r := testRepo(t, be, InitOptions{Chunks: &want})
	if got := *r.Config().Chunks; got != want {
		t.Fatalf("config records %+v, want %+v", got, want)
	}
	r2, err := Open(ctx, be, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if cc := r2.ChunkConfig(); cc.MinSize != want.Min || cc.MaxSize != want.Max || cc.AverageBits != want.AverageBits {
		t.Fatalf("reopened repository chunks with %+v, want %+v", cc, want)
	}
	if s := want.String(); s != "1MiB:3MiB:8MiB" {
		t.Errorf("String() = %q", s)
	}
	for name, bad := range map[string]ChunkSizes{
		"min too small": {Min: 32 << 10, Max: 4 << 20, AverageBits: 19},
		"max too large": {Min: 1 << 20, Max: 16 << 20, AverageBits: 21},
		"average ≥ max": {Min: 1 << 20, Max: 2 << 20, AverageBits: 20},
		"bits too few":  {Min: 256 << 10, Max: 4 << 20, AverageBits: 4},
	} {
		empty := tierstest.NewMemory()
		_, err := Init(ctx, empty, InitOptions{Chunks: &bad}, Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF})
		if !errors.Is(err, ErrChunkSizes) {
			t.Errorf("%s: %v, want ErrChunkSizes", name, err)
		}
		keys := 0
		empty.List(ctx, tiers.TypeKey, func(tiers.ObjectInfo) error { keys++; return nil })
		if keys != 0 {
			t.Errorf("%s: a key was stored before the sizes were refused", name)
		}
	}
	for _, ok := range []*ChunkSizes{DefaultChunkSizes(), ResticChunkSizes()} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", *ok, err)
		}
	}
}

// TestSealedKindsDoNotMix: from format 3 on, the sealed bytes of a data
// blob (whose plaintext anyone who can write a backed-up file chooses)
// do not open as a snapshot, index object, session, tombstone, pack header
// or config, and each kind opens as itself. Format 2 repositories, which
// seal everything alike, still read and write as before.
func TestSealedKindsDoNotMix(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t, nil, InitOptions{})
	if r.Config().Version < 3 {
		t.Fatalf("new repositories are format %d", r.Config().Version)
	}
	// A "snapshot" planted from a data blob's sealed bytes.
	plain := []byte(`{"time":"2099-01-01T00:00:00Z","tree":"` + strings.Repeat("ab", 32) + `","paths":["/srv"],"hostname":"h"}`)
	sealed, _ := r.key.encodeBlob(kindBlob, nil, nil, plain, CompressOff)
	x := id.Hash(sealed)
	if err := tiers.PutBytes(ctx, r.be, tiers.Handle{Type: tiers.TypeSnapshot, Name: x.String()}, sealed); err != nil {
		t.Fatal(err)
	}
	if sn, err := r.LoadSnapshot(ctx, x); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("data blob planted as a snapshot: %+v, %v; want ErrDecrypt", sn, err)
	}
	kinds := []string{kindIndex, kindSnapshot, kindTombstone, kindSession, kindPackHeader, kindConfig}
	for _, a := range append(kinds, kindBlob) {
		s := r.key.sealAs(a, nil, []byte("payload"))
		for _, b := range append(kinds, kindBlob) {
			_, err := r.key.openAs(b, nil, s)
			if (a == b) != (err == nil) {
				t.Errorf("sealed as %q, opened as %q: %v", a, b, err)
			}
		}
	}
	// Format 2: one kind for all, as that format's readers expect.
	r2 := testRepo(t, nil, InitOptions{Version: 2})
	s := r2.key.sealAs(kindSnapshot, nil, []byte("payload"))
	if _, err := r2.key.Open(nil, s); err != nil {
		t.Errorf("format 2 snapshot sealing differs from blob sealing: %v", err)
	}
}

// removeHook runs before each Remove.
type removeHook struct {
	tiers.Backend
	before func(h tiers.Handle)
}

func (b *removeHook) Remove(ctx context.Context, h tiers.Handle) error {
	if f := b.before; f != nil {
		f(h)
	}
	return b.Backend.Remove(ctx, h)
}

// TestRemoveKeysCrosswise: two sessions opened with different slots each
// remove the other's slot. Removing protects only a session's own slot,
// so both could succeed and leave none; the second removal is refused,
// and one that raced with the other is undone.
func TestRemoveKeysCrosswise(t *testing.T) {
	ctx := context.Background()
	hook := &removeHook{Backend: tierstest.NewMemory()}
	r1 := testRepo(t, hook, InitOptions{})
	k2, err := r1.AddKey(ctx, []byte("second"), "second")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Open(ctx, hook, Options{Password: []byte("second"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	// Racing: both pass their checks, then r2 removes r1's slot just
	// before r1 removes k2.
	hook.before = func(h tiers.Handle) {
		if h.Name == k2.String() {
			hook.before = nil
			if err := r2.RemoveKey(ctx, r1.KeyID()); err != nil {
				t.Errorf("r2 removing r1's slot: %v", err)
			}
		}
	}
	err = r1.RemoveKey(ctx, k2)
	if err == nil || !strings.Contains(err.Error(), "was put back") {
		t.Fatalf("crosswise removal: %v, want the removed slot put back", err)
	}
	if _, err := Open(ctx, hook, Options{Password: []byte("second"), CacheDir: t.TempDir()}); err != nil {
		t.Fatalf("no slot left: %v", err)
	}
	// Sequential: r1's own slot is gone now, so it may not remove more.
	if err := r1.RemoveKey(ctx, k2); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("removal by a session whose slot is gone: %v", err)
	}
	if _, err := Open(ctx, hook, Options{Password: []byte("second"), CacheDir: t.TempDir()}); err != nil {
		t.Fatalf("second slot removed: %v", err)
	}
}

// TestIndexRefusesShardCountsNoShardHas: an index entry giving a pack
// more data or parity shards than a shard header may (K over 128, M over
// 127) is refused when the index is read, as the shard header is,
// instead of listing a pack no read can use.
func TestIndexRefusesShardCountsNoShardHas(t *testing.T) {
	for _, km := range [][2]uint8{{200, 0}, {129, 1}, {4, 128}} {
		ip := IndexPack{PackInfo: PackInfo{ID: id.ID{1}, Length: 1 << 20, K: km[0], M: km[1]}}
		ip.ShardSize = uint32((ip.Length + int64(km[0]) - 1) / int64(km[0]))
		ip.Blobs = []BlobEntry{{Type: DataBlob, ID: id.ID{2}, Offset: 0, Length: 100, RawLength: 100}}
		if _, err := decodeIndex(encodeIndex(&IndexFile{Packs: []IndexPack{ip}})); err == nil {
			t.Errorf("index of a %d+%d pack read without an error", km[0], km[1])
		}
	}
}
