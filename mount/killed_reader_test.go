package mount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// hangingBackend holds every load of a data object, once hang is set,
// until release is closed or the load's context ends: a tier that stopped
// answering (a hung NFS server, an S3 endpoint that swallows requests).
type hangingBackend struct {
	tiers.Backend
	hang    atomic.Bool
	delay   time.Duration // added to every load of a data object
	blocked chan struct{} // one value for each load that started to hang
	release chan struct{}
	once    sync.Once
}

func (h *hangingBackend) Load(ctx context.Context, hd tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	if h.delay > 0 && hd.Type == tiers.TypeData {
		select {
		case <-time.After(h.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if h.hang.Load() && hd.Type == tiers.TypeData {
		select {
		case h.blocked <- struct{}{}:
		default:
		}
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.Backend.Load(ctx, hd, off, n, fn)
}

func (h *hangingBackend) unhang() { h.once.Do(func() { close(h.release) }) }

// hungTierRepo backs up src (filled by fill) into a repository on a
// hangingBackend and opens it again with an empty cache, so that the
// mount reads its trees from the tier. reopen opens it once more, with a
// new empty cache (from any goroutine).
func hungTierRepo(t *testing.T, fill func(src string)) (be *hangingBackend, r *repo.Repository, src string, reopen func() (*repo.Repository, error)) {
	t.Helper()
	ctx := context.Background()
	be = &hangingBackend{Backend: tierstest.NewMemory(), blocked: make(chan struct{}, 16), release: make(chan struct{})}
	ro := repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	w, err := repo.Init(ctx, be, repo.InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20}, ro)
	if err != nil {
		t.Fatal(err)
	}
	src = t.TempDir()
	fill(src)
	if _, err := pipeline.Backup(ctx, w, pipeline.BackupOptions{Host: "h", Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	reopen = func() (*repo.Repository, error) {
		o := ro
		o.CacheDir = t.TempDir() // nothing cached
		r, err := repo.Open(ctx, be, o)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { r.Close() })
		return r, nil
	}
	if r, err = reopen(); err != nil {
		t.Fatal(err)
	}
	return be, r, src, reopen
}

// mountForTest mounts r at a new directory, unmounted when the test ends.
func mountForTest(t *testing.T, r *repo.Repository) string {
	t.Helper()
	mnt := t.TempDir()
	srv, err := Mount(context.Background(), r, mnt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mnt
}

// startProgram starts a program and returns its exit.
func startProgram(t *testing.T, name string, args ...string) (*exec.Cmd, <-chan error) {
	t.Helper()
	c := exec.Command(name, args...)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	return c, exited
}

// awaitHang waits until a load hangs on the tier; what names the
// program that should have caused it.
func (h *hangingBackend) awaitHang(t *testing.T, what string, exited <-chan error) {
	t.Helper()
	select {
	case <-h.blocked:
	case err := <-exited:
		t.Fatalf("%s finished without reaching the hung tier: %v", what, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not reach the tier", what)
	}
}

// killAndAwait kills c and fails the test unless it exits within 10 s.
func killAndAwait(t *testing.T, c *exec.Cmd, exited <-chan error, why string) {
	t.Helper()
	if err := c.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal(why)
	}
}

// needFUSE fails the test where no FUSE file system can be mounted.
func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("this test mounts a FUSE file system and needs /dev/fuse: %v", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil && os.Geteuid() != 0 {
		t.Fatal("fusermount3 not installed: run 'make deps' (package fuse3)")
	}
}

// TestKilledReaderIsNotKeptWaitingOnAHungTier: a program looking into
// the mount while the tier hangs can be killed (kill -9, or Ctrl-C of a
// program without a handler for it). Once the kernel has handed a FUSE
// request to drpipe, the program waits, unkillable, until drpipe answers
// it; the request must then be given up, not served on forever.
func TestKilledReaderIsNotKeptWaitingOnAHungTier(t *testing.T) {
	needFUSE(t)
	be, r, src, _ := hungTierRepo(t, func(src string) {
		if err := os.MkdirAll(filepath.Join(src, "dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "dir", "notes.txt"), []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	mnt := mountForTest(t, r)
	defer be.unhang() // whatever happens, the reader and the unmount can finish

	be.hang.Store(true)
	ls, exited := startProgram(t, "ls", "-R", filepath.Join(mnt, "h", "latest")+"/")
	be.awaitHang(t, "ls", exited)
	time.Sleep(100 * time.Millisecond) // the request is in drpipe's hands
	killAndAwait(t, ls, exited, "ls, killed while its request waited on a hung tier, did not exit: the request is served on, and the kernel keeps the program waiting for its answer")

	// The file system still serves once the tier answers again.
	be.hang.Store(false)
	if b, err := os.ReadFile(filepath.Join(mnt, "h", "latest", src, "dir", "notes.txt")); err != nil || string(b) != "hello" {
		t.Errorf("read after the tier recovered: %q, %v", b, err)
	}
}

// TestSignalledReaderIsServed: a signal that does not kill the reader
// (the Go runtime's preemption signal, a SIGCHLD) interrupts its FUSE
// request, and the kernel then waits for the answer and hands it to the
// reader. That answer must be the data, not EIO, however slow the tier.
// The reading thread here gets SIGURG every 200 µs, and every load from
// the tier takes a millisecond, so that interruptions land while drpipe
// works on a request.
func TestSignalledReaderIsServed(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	want := map[string][]byte{}
	be, _, _, reopen := hungTierRepo(t, func(src string) {
		for d := range 4 {
			for f := range 4 {
				p := filepath.Join(src, fmt.Sprintf("d%d", d), fmt.Sprintf("f%d", f))
				b := make([]byte, 4096+rng.IntN(256<<10))
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
				want[p] = b
			}
		}
	})

	var mu sync.Mutex
	var reported []string
	mnt := t.TempDir()
	mountOnce := func() (*Server, error) {
		r, err := reopen()
		if err != nil {
			return nil, err
		}
		return Mount(ctx, r, mnt, Options{CacheBytes: 64 << 10, OnError: func(p string, err error) {
			mu.Lock()
			reported = append(reported, p+": "+err.Error())
			mu.Unlock()
		}})
	}
	be.delay = time.Millisecond

	tid := make(chan int, 1)
	failures := make(chan []string, 1)
	go func() {
		runtime.LockOSThread() // the signals go to this thread
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		var failed []string
		for round := 0; round < 3 && len(failed) == 0; round++ {
			srv, err := mountOnce() // nothing loaded, nothing in the kernel's caches
			if err != nil {
				failed = append(failed, "mount: "+err.Error())
				break
			}
			for p, b := range want {
				got, err := os.ReadFile(filepath.Join(mnt, "h", "latest", p))
				if err != nil {
					failed = append(failed, err.Error())
				} else if !bytes.Equal(got, b) {
					failed = append(failed, p+": wrong bytes")
				}
			}
			if err := srv.Unmount(); err != nil {
				failed = append(failed, "unmount: "+err.Error())
			}
		}
		failures <- failed
	}()
	reader := <-tid
	var failed []string
	tick := time.NewTicker(200 * time.Microsecond)
	defer tick.Stop()
wait:
	for {
		select {
		case failed = <-failures:
			break wait
		case <-tick.C:
			_ = unix.Tgkill(os.Getpid(), reader, unix.SIGURG)
		}
	}
	if len(failed) > 0 {
		t.Errorf("reading through the mount while signals arrive: %s", strings.Join(failed, "\n"))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) > 0 {
		t.Errorf("interrupted requests were reported as read errors: %s", strings.Join(reported, "\n"))
	}
}

// TestTierFailureIsEIO: a directory or file the tier cannot deliver
// fails its request with EIO, and the error is reported; EINTR is only
// for a request whose caller is being killed.
func TestTierFailureIsEIO(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	ro := repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	w, err := repo.Init(ctx, be, repo.InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20}, ro)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := pipeline.Backup(ctx, w, pipeline.BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	ro.CacheDir = t.TempDir()
	r, err := repo.Open(ctx, be, ro)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeData, Err: errors.New("tier down")})
	var reported []string
	m := &mfs{r: r, cache: pipeline.NewBlobCache(r, 1<<20), o: Options{OnError: func(p string, err error) { reported = append(reported, p) }}}
	d := &dirNode{m: m, root: res.Snapshot.Tree, tree: res.Snapshot.Tree, path: "/"}
	if _, errno := d.Lookup(ctx, "tmp", &fuse.EntryOut{}); errno != syscall.EIO {
		t.Errorf("lookup while the tier fails: %v, want EIO", errno)
	}
	if _, errno := d.Readdir(ctx); errno != syscall.EIO {
		t.Errorf("readdir while the tier fails: %v, want EIO", errno)
	}
	if len(reported) == 0 {
		t.Error("the tier's failure was not reported")
	}
}

// TestAbortedConnectionStopsWorkOnAHungTier: when the FUSE connection is
// aborted (umount -f, or writing to its abort file in fusectl) while a
// request waits on a hung tier, the kernel fails the request for its
// caller, and go-fuse cancels every request in flight. The work must end
// with it: the server's loops handle requests inline, so work served on
// keeps Wait (and the mount command) from returning until the tier
// answers.
func TestAbortedConnectionStopsWorkOnAHungTier(t *testing.T) {
	needFUSE(t)
	if os.Geteuid() != 0 {
		t.Fatal("this test aborts a FUSE connection (umount -f) and must run as root (CI does)")
	}
	ctx := context.Background()
	be, r, _, _ := hungTierRepo(t, func(src string) {
		if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	mnt := t.TempDir()
	srv, err := Mount(ctx, r, mnt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	defer func() {
		be.unhang()
		if err := srv.Unmount(); err != nil {
			t.Logf("unmount: %v", err)
		}
		<-served
	}()

	be.hang.Store(true)
	read := make(chan error, 1)
	go func() {
		_, err := os.ReadDir(filepath.Join(mnt, "h", "latest") + "/")
		read <- err
	}()
	select {
	case <-be.blocked:
	case err := <-read:
		t.Fatalf("the listing finished without reaching the hung tier: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the listing did not reach the tier")
	}
	time.Sleep(100 * time.Millisecond)
	_ = unix.Unmount(mnt, unix.MNT_FORCE) // aborts the connection, busy or not
	select {
	case err := <-read:
		t.Logf("the listing, aborted: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the listing did not end when the connection was aborted")
	}
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("the server still serves 10 s after its connection was aborted: the work of the aborted request runs on, on the hung tier")
	}
}

// TestKilledReaderIsNotKeptBehindAnotherLoad: two programs look into one
// directory while the tier hangs; the second waits for the first one's
// load of the directory. Killed, the second must exit, though the first
// still waits: it must not wait behind the other load unkillably.
func TestKilledReaderIsNotKeptBehindAnotherLoad(t *testing.T) {
	needFUSE(t)
	be, r, src, _ := hungTierRepo(t, func(src string) {
		if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	mnt := mountForTest(t, r)
	defer be.unhang()

	be.hang.Store(true)
	snap := filepath.Join(mnt, "h", "latest") + "/"
	_, firstDone := startProgram(t, "ls", snap) // lists the snapshot: loads its root tree
	be.awaitHang(t, "the first listing", firstDone)
	top := strings.Split(strings.TrimPrefix(src, "/"), "/")[0]
	second, secondDone := startProgram(t, "stat", filepath.Join(snap, top)) // looks a name up in the same tree
	time.Sleep(300 * time.Millisecond)                                      // its lookup waits for the first one's load
	select {
	case err := <-secondDone:
		t.Fatalf("the second program finished while the first one's load hung: %v", err)
	default:
	}
	killAndAwait(t, second, secondDone, "the second program, killed while it waited for another one's load from a hung tier, did not exit")
	select {
	case err := <-firstDone:
		t.Fatalf("the first listing ended while the tier hung: %v", err)
	default:
	}
	be.hang.Store(false)
	be.unhang()
	if err := <-firstDone; err != nil {
		t.Errorf("the first listing, once the tier answered: %v", err)
	}
}

// TestOnceWaitersFollowTheirOwnContext: a load in progress keeps the
// other callers waiting only while their own contexts let them; a failed
// load is tried again by the next caller, a successful one never again.
func TestOnceWaitersFollowTheirOwnContext(t *testing.T) {
	var o once
	started, finish := make(chan struct{}), make(chan error)
	leader := make(chan error, 1)
	go func() {
		leader <- o.do(context.Background(), func() error { close(started); return <-finish })
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() {
		waiter <- o.do(ctx, func() error { return errors.New("a second load ran while the first was running") })
	}()
	cancel()
	if err := <-waiter; !errors.Is(err, context.Canceled) {
		t.Errorf("waiter whose context ended: %v, want context.Canceled", err)
	}
	finish <- errors.New("tier failed")
	if err := <-leader; err == nil {
		t.Fatal("the leader's failure was not returned")
	}
	loads := 0
	for range 2 {
		if err := o.do(context.Background(), func() error { loads++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if loads != 1 {
		t.Errorf("%d loads after a failed one, want 1 (tried again once, then done)", loads)
	}
}
