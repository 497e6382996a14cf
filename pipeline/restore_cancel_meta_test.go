package pipeline

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/drpipe/drpipe/repo"
)

// TestRestoreCancelKeepsFilesWithAllTheirData: a file whose data is all
// written but whose metadata could not be set (an extended attribute the
// target refuses) is listed as failed, and an interrupted restore keeps
// it as a restore that runs to its end does: only the files without all
// their data go.
func TestRestoreCancelKeepsFilesWithAllTheirData(t *testing.T) {
	ctx := context.Background()
	content := string(bytes.Repeat([]byte("whole data "), 1000))
	r, src, res := backupFiles(t, map[string]string{"f": content})
	// Larger than any file system takes (E2BIG): setting it fails.
	big := bytes.Repeat([]byte("x"), 70000)
	tree, err := rewriteTree(ctx, r, res.Snapshot.Tree, func(n *repo.Node) {
		if n.Name == "f" {
			n.Xattrs = map[string][]byte{"user.big": big}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	sn := &repo.Snapshot{Time: time.Now(), Host: "h", Paths: res.Snapshot.Paths, Tree: tree}
	if _, err := r.SaveSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dst := filepath.Join(t.TempDir(), "dst")
	_, err = Restore(cctx, r, sn, RestoreOptions{Target: dst, Progress: cancelOnWarn{cancel}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("restore cancelled at its first failure: %v", err)
	}
	p := filepath.Join(dst, src, "f")
	if got, err := os.ReadFile(p); err != nil || string(got) != content {
		t.Errorf("interrupted restore removed %s, which holds all its data (%d of %d bytes, %v)", p, len(got), len(content), err)
	}
}
