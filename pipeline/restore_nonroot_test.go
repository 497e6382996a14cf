package pipeline

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/sample"
)

// asNobody runs f with the effective uid of nobody (the process keeps
// uid 0 as its real and saved uid, to switch back), as a non-root
// restore would run: isRoot false, no CAP_DAC_OVERRIDE. Everything below
// base is given to nobody first.
func asNobody(t *testing.T, base string, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to nobody")
	}
	const nobody = 65534
	filepath.Walk(base, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			os.Lchown(p, nobody, nobody)
		}
		return nil
	})
	wasRoot := isRoot
	isRoot = false
	if err := syscall.Setresuid(-1, nobody, -1); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := syscall.Setresuid(-1, 0, -1); err != nil {
			panic(err)
		}
		isRoot = wasRoot
	}()
	f()
}

// TestRestoreNonRootCancelReadOnlyDir: a non-root restore interrupted
// after the walk left a directory recorded as 0555 (a Go module cache,
// say) while a file in it still waits for its data: Ctrl-C's clean-up
// must remove that file, as it did when directory metadata came last.
func TestRestoreNonRootCancelReadOnlyDir(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "ro"), 0o755)
	os.MkdirAll(filepath.Join(src, "z"), 0o755)
	rng := rand.New(rand.NewPCG(9, 9))
	want := sample.Binary(rng, 2<<20)
	os.WriteFile(filepath.Join(src, "ro/f"), want, 0o644)
	os.WriteFile(filepath.Join(src, "z/g"), []byte("g"), 0o644)
	os.Chmod(filepath.Join(src, "ro"), 0o555)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	root := filepath.Join(dst, src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testHookWalk = func(dir string) {
		if dir == filepath.Join(root, "z") { // ro left (0555), ro/f's data still in the batch
			cancel()
		}
	}
	defer func() { testHookWalk = nil }()
	asNobody(t, filepath.Dir(filepath.Dir(dst)), func() {
		_, err = Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	})
	t.Logf("restore: %v", err)
	os.Chmod(filepath.Join(root, "ro"), 0o755)
	if got, err := os.ReadFile(filepath.Join(root, "ro/f")); err == nil && !bytes.Equal(got, want) {
		t.Errorf("after Ctrl-C ro/f is left under its name with %d of its %d bytes", len(got), len(want))
	}
}

// TestRestoreNonRootLinkThroughNoSearchDir: a non-root restore of a
// directory recorded without search permission (0600) that holds the
// first name of a file whose second name is in a later directory: the
// second name must still be a hard link, as it was when directory
// metadata came last.
func TestRestoreNonRootLinkThroughNoSearchDir(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "a"), 0o755)
	os.MkdirAll(filepath.Join(src, "b"), 0o755)
	rng := rand.New(rand.NewPCG(7, 7))
	// Larger than the first batch: its data is handed to the readers, and
	// written, before the walk reaches b.
	os.WriteFile(filepath.Join(src, "a/x"), sample.Binary(rng, 1<<20), 0o644)
	os.WriteFile(filepath.Join(src, "a/zfill"), sample.Binary(rng, 12<<20), 0o644)
	if err := os.Link(filepath.Join(src, "a/x"), filepath.Join(src, "b/y")); err != nil {
		t.Skipf("the file system cannot hard-link: %v", err)
	}
	os.Chmod(filepath.Join(src, "a"), 0o600)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	os.Chmod(filepath.Join(src, "a"), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	root := filepath.Join(dst, src)
	testHookWalk = func(dir string) {
		if dir == filepath.Join(root, "b") {
			time.Sleep(2 * time.Second) // a/x finished (closed) by now
		}
	}
	defer func() { testHookWalk = nil }()
	var rr *RestoreResult
	asNobody(t, filepath.Dir(filepath.Dir(dst)), func() {
		rr, err = Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst})
	})
	if err != nil {
		t.Fatalf("restore: %v %+v", err, rr)
	}
	os.Chmod(filepath.Join(root, "a"), 0o755)
	ix, _ := inode(t, filepath.Join(root, "a/x"))
	iy, n := inode(t, filepath.Join(root, "b/y"))
	if ix != iy {
		t.Errorf("b/y is a separate copy (%d links), not a hard link to a/x; restore wrote %d bytes", n, rr.BytesWritten)
	}
}
