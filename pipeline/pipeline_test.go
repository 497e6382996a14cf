package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

var fastKDF = &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func newRepo(t *testing.T) (*repo.Repository, tiers.Backend) {
	t.Helper()
	be, err := tiers.NewLocal(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, repo.InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20},
		repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: fastKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, be
}

// makeSource writes a small tree with a sparse file, zero runs, symlinks,
// a fifo and varied modes.
func makeSource(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 150, Bytes: 6 << 20, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(src, "sparse.img")
	f, err := os.Create(sp)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(200 << 20)
	rng := rand.New(rand.NewPCG(1, 1))
	for _, off := range []int64{0, 33 << 20, 100<<20 + 12345, 199 << 20} {
		f.WriteAt(sample.Binary(rng, 700<<10), off)
	}
	f.WriteAt(make([]byte, 3<<20), 50<<20) // written zeros
	f.Close()
	os.Symlink("sparse.img", filepath.Join(src, "link"))
	os.Mkdir(filepath.Join(src, "empty"), 0o711)
	os.WriteFile(filepath.Join(src, "empty-file"), nil, 0o640)
	os.WriteFile(filepath.Join(src, "zeros"), make([]byte, 1<<20), 0o644) // no data extent at all
	// Special mode bits, set through the descriptor on restore.
	for name, mode := range map[string]fs.FileMode{"setuid": 0o755 | fs.ModeSetuid, "setgid": 0o750 | fs.ModeSetgid, "readonly": 0o444} {
		p := filepath.Join(src, name)
		os.WriteFile(p, []byte(name), 0o600)
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(src, "sticky"), 0o755)
	if err := os.Chmod(filepath.Join(src, "sticky"), 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	return src
}

func compare(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		a, _ := os.Lstat(p)
		b, err := os.Lstat(q)
		if err != nil {
			return fmt.Errorf("missing %s", rel)
		}
		if a.Mode() != b.Mode() || (!a.IsDir() && !a.ModTime().Equal(b.ModTime())) {
			return fmt.Errorf("%s: mode/mtime %v %v, restored %v %v", rel, a.Mode(), a.ModTime(), b.Mode(), b.ModTime())
		}
		if a.Mode().IsRegular() {
			same, err := sample.SameContent(p, q)
			if err != nil || !same {
				return fmt.Errorf("%s: content differs (%v)", rel, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// settle waits until what was just written is older than the time stamps'
// granularity, so that a backup starting now records it as it is (racy)
// and the next takes it over from that one.
func settle() { time.Sleep(ctimeTick) }

func TestBackupRestoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := makeSource(t)
	settle()
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Summary.BytesRead > 20<<20 {
		t.Errorf("read %d bytes of a source with ~9 MiB allocated: holes were read", res.Summary.BytesRead)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	if err != nil {
		t.Fatal(err)
	}
	compare(t, src, filepath.Join(dst, src))
	if rr.BytesWritten > 12<<20 {
		t.Errorf("restore wrote %d bytes: zero extents were written", rr.BytesWritten)
	}
	alloc, _ := sample.AllocatedBytes(filepath.Join(dst, src, "sparse.img"))
	if alloc > 8<<20 {
		t.Errorf("restored sparse.img allocates %d bytes, want about 2.8 MiB", alloc)
	}

	// Unchanged second backup reads nothing and stores only metadata.
	res2, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Summary.BytesRead != 0 || res2.Summary.BlobsNew > 2 {
		t.Errorf("unchanged backup read %d bytes and stored %d blobs, want 0 and <= 2", res2.Summary.BytesRead, res2.Summary.BlobsNew)
	}
	if res2.Snapshot.Parent == nil || *res2.Snapshot.Parent != res.Snapshot.ID() {
		t.Errorf("parent = %v, want %s", res2.Snapshot.Parent, res.Snapshot.ID().Short())
	}

	// --path restores a subset.
	one := filepath.Join(t.TempDir(), "one")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: one, Include: []string{filepath.Join(src, "sparse.img")}}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(one, src))
	if len(ents) != 1 || ents[0].Name() != "sparse.img" {
		t.Errorf("include restored %v, want only sparse.img", ents)
	}
}

func TestStdinMatchesFile(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	rng := rand.New(rand.NewPCG(2, 2))
	data := append(sample.Text(rng, 5<<20), make([]byte, 1<<20)...)
	data = append(data, sample.Binary(rng, 3<<20)...)
	res, err := Backup(ctx, r, BackupOptions{Host: "db", Stdin: bytes.NewReader(data), StdinName: "dump.sql"})
	if err != nil {
		t.Fatal(err)
	}
	// The same bytes as a file dedupe completely against the stream.
	r.LoadIndex(ctx)
	before, err := r.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dump.sql")
	os.WriteFile(f, data, 0o600)
	if _, err := Backup(ctx, r, BackupOptions{Host: "db", Paths: []string{f}}); err != nil {
		t.Fatal(err)
	}
	r.LoadIndex(ctx)
	after, err := r.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Chunks != before.Chunks {
		t.Errorf("file with the stream's bytes added %d data chunks, want 0", after.Chunks-before.Chunks)
	}
	dst := t.TempDir()
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dst, "dump.sql"))
	if !bytes.Equal(got, data) {
		t.Errorf("restored stream: %d bytes, want %d identical", len(got), len(data))
	}
	if _, err := Backup(ctx, r, BackupOptions{Host: "db", Stdin: bytes.NewReader(nil), StdinName: "../x"}); err == nil {
		t.Error("stdin name with a slash accepted")
	}
}

// TestConcurrentWriters backs up from several goroutines into one
// repository at once (lock-free writers) and restores every snapshot.
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	r, be := newRepo(t)
	var srcs []string
	for i := 0; i < 4; i++ {
		s := filepath.Join(t.TempDir(), fmt.Sprintf("host%d", i))
		if _, err := sample.Tree(s, sample.TreeOptions{Files: 40, Bytes: 3 << 20, Seed: uint64(i % 2)}); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, s)
	}
	// Separate Repository values on one backend, like separate processes.
	var wg sync.WaitGroup
	snaps := make([]*repo.Snapshot, len(srcs))
	errs := make([]error, len(srcs))
	for i, s := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ri, err := repo.Open(ctx, be, repo.Options{Password: []byte("pw"), CacheDir: t.TempDir()})
			if err != nil {
				errs[i] = err
				return
			}
			defer ri.Close()
			res, err := Backup(ctx, ri, BackupOptions{Host: fmt.Sprintf("h%d", i), Paths: []string{s}})
			if err != nil {
				errs[i] = err
				return
			}
			snaps[i] = res.Snapshot
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if rep, err := r.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check after concurrent backups: %v %+v", err, rep.Errors)
	}
	for i, sn := range snaps {
		dst := t.TempDir()
		if _, err := Restore(ctx, r, sn, RestoreOptions{Target: dst}); err != nil {
			t.Fatal(err)
		}
		compare(t, srcs[i], filepath.Join(dst, srcs[i]))
	}
}

// TestRestoreReportsLostData removes too many shards of one pack.
func TestRestoreReportsLostData(t *testing.T) {
	ctx := context.Background()
	r, be := newRepo(t)
	src := makeSource(t)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	r.LoadIndex(ctx)
	var victim repo.PackInfo
	r.EachBlob(func(p repo.PackInfo, e repo.BlobEntry) error {
		if e.Type == repo.DataBlob {
			victim = p // a data pack: trees stay readable, files fail
		}
		return nil
	})
	for i := 0; i < 3; i++ { // K=3, M=2: three gone is one too many
		be.Remove(ctx, victim.ShardHandle(i))
	}
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: t.TempDir()})
	if !errors.Is(err, ErrRestoreIncomplete) || rr == nil || len(rr.Failed) == 0 {
		t.Fatalf("restore with a lost pack: err %v, result %+v", err, rr)
	}
	for _, f := range rr.Failed {
		if !strings.Contains(f.Err.Error(), victim.ID.Short()) {
			t.Errorf("failure for %s does not name pack %s: %v", f.Path, victim.ID.Short(), f.Err)
		}
	}
	if rr.Files+int64(len(rr.Failed)) != res.Summary.Files {
		t.Errorf("restored %d files and %d failed, the snapshot has %d: failed files must not count as restored", rr.Files, len(rr.Failed), res.Summary.Files)
	}
}

func TestBackupRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	if _, err := Backup(ctx, r, BackupOptions{Host: "h"}); err == nil {
		t.Error("backup of nothing succeeded")
	}
	if _, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{"/does/not/exist"}}); err == nil {
		t.Error("backup of a missing path succeeded")
	}
	if _, err := Restore(ctx, r, &repo.Snapshot{}, RestoreOptions{}); err == nil {
		t.Error("restore without target succeeded")
	}
}

// TestSmallFileHoleShortcut checks smallAndAllocated, which lets backup skip
// the SEEK_DATA/SEEK_HOLE walk: true only for small files with every block
// allocated; and that a small file the shortcut misjudges (a hole covered by
// blocks preallocated past its end) still restores byte for byte with its
// zero block recorded as zeros, not stored.
func TestSmallFileHoleShortcut(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	isShortcut := func(p string) bool {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return smallAndAllocated(fi)
	}
	text := bytes.Repeat([]byte("drpipe small file\n"), 4000)
	if p := write("small", text); !isShortcut(p) {
		t.Errorf("a fully written %d-byte file is not taken as allocated", len(text))
	}
	if p := write("big", bytes.Repeat(text, 20)); isShortcut(p) {
		t.Error("a file over 1 MiB is taken on trust")
	}
	if p := write("empty", nil); isShortcut(p) {
		t.Error("an empty file is taken on trust")
	}
	sparse := filepath.Join(dir, "sparse")
	if err := os.WriteFile(sparse, []byte("head"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(sparse, 512<<10); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(sparse); fi.Sys().(*syscall.Stat_t).Blocks*512 < fi.Size() && isShortcut(sparse) {
		t.Error("a sparse file is taken as fully allocated")
	}

	// A 256 KiB file: data, a 128 KiB hole, data; then blocks reserved past
	// its end (fallocate KEEP_SIZE) so the block count covers the hole.
	odd := filepath.Join(dir, "odd")
	f, err := os.Create(odd)
	if err != nil {
		t.Fatal(err)
	}
	head := bytes.Repeat([]byte{0xa5}, 64<<10)
	f.WriteAt(head, 0)
	f.WriteAt(head, 192<<10)
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 256<<10, 512<<10); err != nil {
		f.Close()
		t.Logf("fallocate KEEP_SIZE unsupported here (%v): no misjudged file to back up", err)
		return
	}
	f.Close()
	if !isShortcut(odd) {
		t.Log("the file system did not count the preallocated blocks: no misjudged file to back up")
		return
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{odd}})
	if err != nil {
		t.Fatal(err)
	}
	var zero int64
	var walk func(x id.ID)
	walk = func(x id.ID) {
		tr, err := r.LoadTree(ctx, x)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range tr.Nodes {
			if n.Subtree != nil {
				walk(*n.Subtree)
			}
			if n.Type == repo.NodeFile {
				r.EachExtent(ctx, n, func(e repo.Extent) error {
					if e.Zero {
						zero += e.Len
					}
					return nil
				})
			}
		}
	}
	walk(res.Snapshot.Tree)
	if zero < 64<<10 {
		t.Errorf("the 128 KiB hole was stored as data (%d zero bytes recorded)", zero)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	if same, err := sample.SameContent(odd, filepath.Join(dst, odd)); err != nil || !same {
		t.Fatalf("restored file differs: %v", err)
	}
}

// TestBackupBothQueuesOneWorker backs up, with a single worker, small
// files (queued smallAhead deep) together with a file whose first segment
// is larger than smallBuf and whose last is small, so one file's segments
// travel through both queues; the worker must drain both and the restore
// must be byte-identical.
func TestBackupBothQueuesOneWorker(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 3 * smallAhead, Bytes: 3 << 20, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	seg := int(r.ChunkConfig().SegmentSize)
	if seg <= smallBuf {
		t.Fatalf("segment size %d is not above smallBuf %d: the big queue would be unused", seg, smallBuf)
	}
	big := sample.Binary(rand.New(rand.NewPCG(8, 8)), seg+100<<10)
	if err := os.WriteFile(filepath.Join(src, "two-segments.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(3*smallAhead + 1); res.Summary.Files < want {
		t.Errorf("backed up %d files, want at least %d", res.Summary.Files, want)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	compare(t, src, filepath.Join(dst, src))
}

// gatedBackend holds data-object loads while gate is set, until release
// is closed or the load's context ends; entered is told of each held load.
type gatedBackend struct {
	tiers.Backend
	gate    atomic.Bool
	release chan struct{}
	entered chan struct{}
}

func (g *gatedBackend) Load(ctx context.Context, h tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	if h.Type == tiers.TypeData && g.gate.Load() {
		g.entered <- struct{}{}
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Backend.Load(ctx, h, off, n, fn)
}

// TestBlobCacheLeaderCancelled: a mount's concurrent reads of one blob
// share its load. When the request that started the load is interrupted
// (its context ends), the others must load the blob themselves, not fail
// with its cancellation (EIO in the mount).
func TestBlobCacheLeaderCancelled(t *testing.T) {
	ctx := context.Background()
	local, err := tiers.NewLocal(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	be := &gatedBackend{Backend: local, release: make(chan struct{}), entered: make(chan struct{}, 4)}
	r, err := repo.Init(ctx, be, repo.InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20},
		repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: fastKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src := t.TempDir()
	data := bytes.Repeat([]byte("blob cache "), 1000)
	os.WriteFile(filepath.Join(src, "f"), data, 0o644)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := FindNode(ctx, r, res.Snapshot.Tree, filepath.Join(src, "f"))
	if err != nil || len(n.Content) != 1 {
		t.Fatalf("node of f: %+v, %v", n, err)
	}
	c := NewBlobCache(r, 1<<20)
	be.gate.Store(true)
	leader, cancel := context.WithCancel(ctx)
	lerr := make(chan error, 1)
	go func() { _, err := c.Get(leader, n.Content[0].ID); lerr <- err }()
	<-be.entered
	type got struct {
		d   []byte
		err error
	}
	ferr := make(chan got, 1)
	go func() { d, err := c.Get(ctx, n.Content[0].ID); ferr <- got{d, err} }()
	time.Sleep(50 * time.Millisecond) // the follower waits on the leader's load
	cancel()
	if err := <-lerr; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled leader: %v", err)
	}
	close(be.release)
	if g := <-ferr; g.err != nil || !bytes.Equal(g.d, data) {
		t.Errorf("follower of a cancelled load: %d bytes, %v; want the blob", len(g.d), g.err)
	}
}

// TestCheckBesideABackup: a check whose repository was opened before a
// backup on another host finished must not report that backup's blobs
// as "in no index" (check from cron beside backups was a false alarm).
func TestCheckBesideABackup(t *testing.T) {
	ctx := context.Background()
	r, be := newRepo(t)
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	other, err := repo.Open(ctx, be, repo.Options{Password: []byte("pw"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), bytes.Repeat([]byte("beside the check "), 5000), 0o644)
	if _, err := Backup(ctx, other, BackupOptions{Host: "other", Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Check(ctx, repo.CheckOptions{})
	if err != nil || len(rep.Errors) > 0 || rep.MissingBlobs > 0 {
		t.Errorf("check after another host's backup: %v, errors %q, missing blobs %d", err, rep.Errors, rep.MissingBlobs)
	}
}
