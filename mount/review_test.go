package mount

import (
	"context"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestReviewMountRawViewDoesNotHideAFile: a snapshot holding the disk
// image web.qcow2 and a file web.qcow2.raw (a raw export kept next to
// it) shows the file under its own name, not the qcow2's virtual disk;
// the raw view of web.qcow2 gets another name.
func TestReviewMountRawViewDoesNotHideAFile(t *testing.T) {
	ctx := context.Background()
	r, err := repo.Init(ctx, tierstest.NewMemory(), repo.InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	disk := &repo.Node{Name: "web.qcow2", Type: repo.NodeFile, Mode: 0o644, Disk: []byte(`{"v":1}`)}
	file := &repo.Node{Name: "web.qcow2.raw", Type: repo.NodeFile, Mode: 0o644}
	tree, err := r.SaveTree(ctx, &repo.Tree{Nodes: []*repo.Node{disk, file}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	d := &dirNode{m: &mfs{r: r, cache: pipeline.NewBlobCache(r, 1<<20)}, root: tree, tree: tree, path: "/"}
	if err := d.load(ctx); err != nil {
		t.Fatal(err)
	}
	if e := d.kids["web.qcow2.raw"]; e.n == nil || e.disk {
		t.Fatalf("web.qcow2.raw serves %+v, want the file of that name", e)
	}
	views := 0
	for name, e := range d.kids {
		if e.disk && e.n.Name == "web.qcow2" {
			views++
			t.Logf("raw view of web.qcow2: %s", name)
		}
	}
	if views != 1 {
		t.Fatalf("raw views of web.qcow2: %d, want 1 (names %v)", views, d.names)
	}
}
