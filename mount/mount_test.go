package mount

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// TestInterruptedLoadIsNotRemembered: the context of a FUSE request ends
// when the kernel interrupts it (a signal to the reading process: Ctrl-C,
// or the Go runtime's preemption signal in a Go program). A directory
// whose first listing was interrupted must list on the next request, not
// fail with EIO until the file system is mounted again.
func TestInterruptedLoadIsNotRemembered(t *testing.T) {
	ctx := context.Background()
	be, err := tiers.NewLocal(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	r, err := repo.Init(ctx, be, repo.InitOptions{EC: erasure.Params{K: 2, M: 1}},
		repo.Options{Password: []byte("mount test"), CacheDir: t.TempDir(), KDF: &repo.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "notes.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	var reported []error
	m := &mfs{r: r, o: Options{OnError: func(_ string, err error) { reported = append(reported, err) }}}
	d := &dirNode{m: m, root: res.Snapshot.Tree, tree: res.Snapshot.Tree, path: "/"}
	interrupted, cancel := context.WithCancel(ctx)
	cancel()
	if err := d.load(interrupted); err == nil {
		t.Fatal("load with an interrupted request's context: no error")
	}
	if err := d.load(ctx); err != nil {
		t.Fatalf("load after an interrupted one: %v", err)
	}
	if len(d.names) != 1 {
		t.Errorf("root lists %q, want the one top directory", d.names)
	}
	if len(reported) != 0 {
		t.Errorf("an interrupted request was reported as a read error: %v", reported)
	}
}
