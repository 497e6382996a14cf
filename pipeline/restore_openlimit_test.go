package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/drpipe/drpipe/repo"
)

// TestRestoreTinyOpenLimit: with room for only a few open output
// files the restore still completes (no deadlock between the walker
// waiting for a descriptor and the files of its unflushed batch), hard
// links included, and a lost chunk is still reported.
func TestRestoreTinyOpenLimit(t *testing.T) {
	ctx := context.Background()
	r, be := newRepo(t)
	src := makeSource(t)
	for i := range 300 {
		p := filepath.Join(src, fmt.Sprintf("tiny%03d", i))
		os.WriteFile(p, []byte(fmt.Sprint(i)), 0o644)
		if i%3 == 0 {
			os.Link(p, filepath.Join(src, fmt.Sprintf("link%03d", i)))
		}
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	limitOpenFiles(t, 128)
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	compare(t, src, filepath.Join(dst, src))
	// Each linkNNN came first in the walk and was closed by the time its
	// second name came (so few descriptors): the link is to the inode
	// found again below the target.
	for i := 0; i < 300; i += 3 {
		a, _ := os.Stat(filepath.Join(dst, src, fmt.Sprintf("link%03d", i)))
		b, _ := os.Stat(filepath.Join(dst, src, fmt.Sprintf("tiny%03d", i)))
		if a == nil || b == nil || !os.SameFile(a, b) {
			t.Fatalf("link%03d and tiny%03d are not one file after the restore", i, i)
		}
	}
	// Lose a data pack: the files it held fail, nothing hangs.
	r.LoadIndex(ctx)
	var victim repo.PackInfo
	r.EachBlob(func(p repo.PackInfo, e repo.BlobEntry) error {
		if e.Type == repo.DataBlob {
			victim = p
		}
		return nil
	})
	for i := 0; i < 3; i++ {
		be.Remove(ctx, victim.ShardHandle(i))
	}
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: filepath.Join(t.TempDir(), "dst2")})
	if !errors.Is(err, ErrRestoreIncomplete) || rr == nil || len(rr.Failed) == 0 {
		t.Fatalf("restore with a lost pack: %v", err)
	}
}

// limitOpenFiles lowers the process's soft descriptor limit to n for the
// rest of the test.
func limitOpenFiles(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// fatalRestore fails the test for a restore that returned err, logging
// the first few failed items of rr (which may be nil).
func fatalRestore(t *testing.T, what string, rr *RestoreResult, err error) {
	t.Helper()
	n := 0
	if rr != nil {
		for _, f := range rr.Failed {
			if n < 3 {
				t.Logf("FAILED %s: %v", f.Path, f.Err)
			}
			n++
		}
	}
	t.Fatalf("%s: %v (%d failed)", what, err, n)
}
