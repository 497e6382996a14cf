package pipeline

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
)

// shrinkWhilePlanned makes the file at path shrink to keep bytes after
// its segments are planned and before they are read, the first times
// times it is read. It returns how often that happened.
func shrinkWhilePlanned(t *testing.T, path string, keep int64, times int32) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	testHookSegmentsPlanned = func(p string) {
		if p != path || n.Load() >= times {
			return
		}
		n.Add(1)
		if err := os.Truncate(p, keep); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { testHookSegmentsPlanned = nil })
	return &n
}

// logSource makes a source directory holding app.log (size bytes of text)
// and, with other, a small file named other; it returns the source and
// the log's path.
func logSource(t *testing.T, size int, seed uint64, other bool) (src, log string) {
	t.Helper()
	src = filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	log = filepath.Join(src, "app.log")
	if err := os.WriteFile(log, sample.Text(rand.New(rand.NewPCG(seed, seed)), size), 0o644); err != nil {
		t.Fatal(err)
	}
	if other {
		os.WriteFile(filepath.Join(src, "other"), []byte("unchanged"), 0o644)
	}
	return src, log
}

// A file truncated while it is read (a log rotated in place) is read
// again as it is now, not left out of the snapshot, and without warning.
func TestShrinkingFileReadAgain(t *testing.T) {
	r, _ := newRepo(t)
	src, log := logSource(t, 6<<20, 4, true)
	shrunk := shrinkWhilePlanned(t, log, 1<<20, 1)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil || res.Warnings != 0 {
		t.Fatalf("backup of a file that shrank once: %v, %d warnings", err, res.Warnings)
	}
	if shrunk.Load() != 1 {
		t.Fatalf("the file shrank %d times, want 1", shrunk.Load())
	}
	if res.Summary.Files != 2 || res.Summary.BytesTotal != 1<<20+int64(len("unchanged")) {
		t.Errorf("summary %d files, %d bytes; want 2 files of %d bytes, counted once", res.Summary.Files, res.Summary.BytesTotal, 1<<20+len("unchanged"))
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(log)
	got, err := os.ReadFile(filepath.Join(dst, log))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("restored app.log: %d bytes (%v), want the %d bytes it holds now", len(got), err, len(want))
	}
	compare(t, src, filepath.Join(dst, src))
}

// A file that shrinks during both reads is left out with a warning, once.
func TestShrinkingFileTwiceLeftOut(t *testing.T) {
	r, _ := newRepo(t)
	src, log := logSource(t, 6<<20, 5, true)
	var keep int64 = 3 << 20
	var n atomic.Int32
	testHookSegmentsPlanned = func(p string) {
		if p == log && n.Add(1) <= 2 {
			os.Truncate(p, keep)
			keep /= 2
		}
	}
	t.Cleanup(func() { testHookSegmentsPlanned = nil })
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if !errors.Is(err, ErrPartial) || res == nil || res.Warnings != 1 {
		t.Fatalf("backup of a file that shrank twice: %v, %+v; want one warning", err, res)
	}
	if res.Summary.Files != 1 || res.Summary.BytesTotal != int64(len("unchanged")) {
		t.Errorf("summary %d files, %d bytes; want only the other file", res.Summary.Files, res.Summary.BytesTotal)
	}
}

// A file of two segments that shrinks during both reads is left out, and
// the segments read before each failure are taken back out of the totals.
func TestShrinkingLargeFileTwiceNotCounted(t *testing.T) {
	r, _ := newRepo(t)
	src, log := logSource(t, 40<<20, 5, true)
	sizes := []int64{36 << 20, 33 << 20}
	var n atomic.Int32
	testHookSegmentsPlanned = func(p string) {
		if p == log {
			if i := n.Add(1); i <= 2 {
				os.Truncate(p, sizes[i-1])
			}
		}
	}
	t.Cleanup(func() { testHookSegmentsPlanned = nil })
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if !errors.Is(err, ErrPartial) || res == nil || res.Warnings != 1 {
		t.Fatalf("backup: %v, %+v", err, res)
	}
	if res.Summary.Files != 1 || res.Summary.BytesTotal != int64(len("unchanged")) {
		t.Errorf("summary %d files, %d bytes; want 1 file of %d bytes (the left-out file's bytes are counted)", res.Summary.Files, res.Summary.BytesTotal, len("unchanged"))
	}
}

// A file of two segments shrinking once: the totals count it once, as it
// is now.
func TestShrinkingLargeFileOnceCountedOnce(t *testing.T) {
	r, _ := newRepo(t)
	src, log := logSource(t, 40<<20, 5, false)
	shrinkWhilePlanned(t, log, 36<<20, 1)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil || res.Warnings != 0 {
		t.Fatalf("backup: %v, %+v", err, res)
	}
	if res.Summary.Files != 1 || res.Summary.BytesTotal != 36<<20 {
		t.Errorf("summary %d files, %d bytes; want 1 of %d", res.Summary.Files, res.Summary.BytesTotal, 36<<20)
	}
}

// A file with two names that shrinks while its first name is read: once,
// both names hold what it is now; twice, both are left out.
func TestShrinkingHardLinkedFile(t *testing.T) {
	for _, times := range []int32{1, 2} {
		r, _ := newRepo(t)
		src, log := logSource(t, 6<<20, 4, false)
		if err := os.Link(log, filepath.Join(src, "b.log")); err != nil {
			t.Fatal(err)
		}
		var shrunk atomic.Int32
		keeps := []int64{3 << 20, 1 << 20}
		if times == 1 {
			keeps = []int64{1 << 20}
		}
		testHookSegmentsPlanned = func(p string) {
			if p == log {
				if i := shrunk.Add(1); int(i) <= len(keeps) {
					os.Truncate(p, keeps[i-1])
				}
			}
		}
		res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
		if (times == 1) != (err == nil) {
			t.Fatalf("times %d: backup: %v", times, err)
		}
		wantWarn := int(times - 1)
		if res.Warnings != wantWarn || res.Summary.Files != int64(2-wantWarn) || res.Summary.BytesTotal != int64(2-wantWarn)<<20 {
			t.Errorf("times %d: %d warnings, %d files, %d bytes", times, res.Warnings, res.Summary.Files, res.Summary.BytesTotal)
		}
		dst := filepath.Join(t.TempDir(), "dst")
		if _, err := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(log)
		got, err := os.ReadFile(filepath.Join(dst, src, "b.log"))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("times %d: restored b.log: %d bytes (%v), want %d", times, len(got), err, len(want))
		}
		testHookSegmentsPlanned = nil
	}
}

// A sparse file truncated inside its trailing hole while it is read: no
// read runs short, yet the snapshot must hold the file's size as it is
// now, not the old size with the lost tail stored as a hole.
func TestShrinkingSparseFileReadAgain(t *testing.T) {
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	p := filepath.Join(src, "disk.img")
	data := sample.Binary(rand.New(rand.NewPCG(6, 6)), 1<<20)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 6<<20); err != nil {
		t.Fatal(err)
	}
	shrinkWhilePlanned(t, p, 2<<20, 1)
	res, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil || res.Warnings != 0 {
		t.Fatalf("backup of a file that shrank once: %v, %+v", err, res)
	}
	if res.Summary.BytesTotal != 2<<20 {
		t.Errorf("summary counts %d bytes, want %d", res.Summary.BytesTotal, 2<<20)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(context.Background(), r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dst, p))
	if err != nil {
		t.Fatal(err)
	}
	want := append(data, make([]byte, 1<<20)...)
	if !bytes.Equal(got, want) {
		t.Errorf("restored %d bytes, want the %d the file holds now", len(got), len(want))
	}
}
