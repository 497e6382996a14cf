package pipeline

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
)

// cancelOnWarn cancels a restore at its first warning.
type cancelOnWarn struct{ cancel context.CancelFunc }

func (cancelOnWarn) AddTotal(int64, int64)         {}
func (cancelOnWarn) AddDone(int64, int64)          {}
func (p cancelOnWarn) Warn(path string, err error) { p.cancel() }

// TestRestoreCancelRemovesFilesWithLostData: a file kept with the chunks a
// lost pack took is there for salvage only while the restore lists it.
// Interrupted, the restore lists nothing, and such a file, without the
// data of those chunks, must go as the files not yet complete do, not
// stay under its name looking restored.
func TestRestoreCancelRemovesFilesWithLostData(t *testing.T) {
	r, be := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "lost"), sample.Binary(rand.New(rand.NewPCG(7, 7)), 300<<10), 0o644)
	ctx := context.Background()
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	r.LoadIndex(ctx)
	lost := map[repo.PackInfo]bool{}
	r.EachBlob(func(p repo.PackInfo, e repo.BlobEntry) error {
		if e.Type == repo.DataBlob {
			lost[p] = true
		}
		return nil
	})
	for p := range lost {
		for i := 0; i < 3; i++ { // K=3, M=2: three gone is one too many
			be.Remove(ctx, p.ShardHandle(i))
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dst := filepath.Join(t.TempDir(), "dst")
	_, err = Restore(cctx, r, res.Snapshot, RestoreOptions{Target: dst, Progress: cancelOnWarn{cancel}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("restore cancelled at its first failure: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(dst, src, "lost")); err == nil {
		t.Errorf("interrupted restore left %s (%d bytes) without its lost data, and listed nothing", filepath.Join(dst, src, "lost"), fi.Size())
	}
}
