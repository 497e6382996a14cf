package pipeline

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreBlockedDirectoryOnPath: a --path below a directory that
// cannot be made in the target (an immutable file in its place) fails
// with that directory, and is not also reported as missing from the
// snapshot, which would send the operator looking for the wrong problem.
func TestRestoreBlockedDirectoryOnPath(t *testing.T) {
	if _, err := exec.LookPath("chattr"); err != nil || !isRoot {
		t.Skip("needs root and chattr")
	}
	ctx := context.Background()
	r, src, res := backupFiles(t, map[string]string{"a/b/c": "data", "x": "other"})
	dst := filepath.Join(t.TempDir(), "dst")
	blocker := filepath.Join(dst, src, "a")
	os.MkdirAll(filepath.Dir(blocker), 0o755)
	if err := os.WriteFile(blocker, []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chattr", "+i", blocker).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v %s", err, out)
	}
	defer exec.Command("chattr", "-i", blocker).Run()
	inc := filepath.Join(src, "a", "b", "c")
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, Include: []string{inc}})
	if !errors.Is(err, ErrRestoreIncomplete) || rr == nil {
		t.Fatalf("restore: %v, want ErrRestoreIncomplete", err)
	}
	for _, f := range rr.Failed {
		if strings.Contains(f.Err.Error(), "no such path") {
			t.Errorf("%s reported as %v", f.Path, f.Err)
		}
	}
	if len(rr.Failed) != 1 || rr.Failed[0].Path != blocker {
		t.Errorf("failed: %v, want only %s", rr.Failed, blocker)
	}
}
