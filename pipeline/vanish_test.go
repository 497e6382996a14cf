package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
)

// A backup path that vanishes while an earlier path is being read fails
// the backup with its name, after everything already started has stopped
// (the job queues must not close under a reader still queueing).
func TestBackupPathVanishesDuringWalk(t *testing.T) {
	r, _ := newRepo(t)
	base := t.TempDir()
	first := filepath.Join(base, "a")
	if _, err := sample.Tree(first, sample.TreeOptions{Files: 400, Bytes: 40 << 20, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	// Paths are walked in name order: a (a directory, walked in the
	// background), b (a file read right away) and c, which goes while b is
	// read, so it is gone when the walk gets to it while a is still being
	// walked.
	trigger := filepath.Join(base, "b")
	os.WriteFile(trigger, []byte("read first"), 0o644)
	second := filepath.Join(base, "c")
	os.WriteFile(second, []byte("gone soon"), 0o644)
	var once sync.Once
	testHookSegmentsPlanned = func(p string) {
		if p == trigger {
			once.Do(func() { os.Remove(second) })
		}
	}
	t.Cleanup(func() { testHookSegmentsPlanned = nil })
	_, err := Backup(context.Background(), r, BackupOptions{Host: "h", Paths: []string{first, trigger, second}})
	if err == nil || !strings.Contains(err.Error(), second) {
		t.Fatalf("backup with a vanished path: %v, want an error naming %s", err, second)
	}
}
