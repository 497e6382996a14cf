package mount

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// testRepo is a repository in memory, closed when the test ends.
func testRepo(t *testing.T) *repo.Repository {
	t.Helper()
	r, err := repo.Init(context.Background(), tierstest.NewMemory(), repo.InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestInterruptedLoadIsNotRemembered: the context of a FUSE request ends
// when the kernel interrupts it (a signal to the reading process: Ctrl-C,
// or the Go runtime's preemption signal in a Go program). A directory
// whose first listing was interrupted must list on the next request, not
// fail with EIO until the file system is mounted again.
func TestInterruptedLoadIsNotRemembered(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t)
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

	// A FUSE request the kernel interrupted (go-fuse cancels its context)
	// is still served: its reader gets the answer, not EIO.
	fresh := &dirNode{m: m, root: res.Snapshot.Tree, tree: res.Snapshot.Tree, path: "/"}
	if _, errno := fresh.Readdir(interrupted); errno != 0 {
		t.Errorf("readdir of an interrupted request: %v, want it served", errno)
	}
	top := d.kids[d.names[0]].n
	sub := &dirNode{m: m, root: res.Snapshot.Tree, tree: *top.Subtree, path: "/" + top.Name}
	if err := sub.load(ctx); err != nil {
		t.Fatal(err)
	}
	var file *repo.Node
	for file = sub.kids[sub.names[0]].n; file.Type == repo.NodeDir; {
		sub = &dirNode{m: m, root: res.Snapshot.Tree, tree: *file.Subtree, path: sub.path + "/" + file.Name}
		if err := sub.load(ctx); err != nil {
			t.Fatal(err)
		}
		file = sub.kids[sub.names[0]].n
	}
	m.cache = pipeline.NewBlobCache(r, 1<<20)
	f := &fileNode{m: m, root: res.Snapshot.Tree, path: sub.path + "/" + file.Name, n: file}
	if _, _, errno := f.Open(interrupted, syscall.O_RDONLY); errno != 0 {
		t.Errorf("open of an interrupted request: %v, want it served", errno)
	}
	buf := make([]byte, 16)
	if rr, errno := f.Read(interrupted, nil, buf, 0); errno != 0 {
		t.Errorf("read of an interrupted request: %v, want it served", errno)
	} else if b, _ := rr.Bytes(buf); string(b) != "hello" {
		t.Errorf("read of an interrupted request: %q, want hello", b)
	}
	if len(reported) != 0 {
		t.Errorf("an interrupted request was reported as a read error: %v", reported)
	}
}

// TestRawViewDoesNotHideAFile: a snapshot holding the disk
// image web.qcow2 and a file web.qcow2.raw (a raw export kept next to
// it) shows the file under its own name, not the qcow2's virtual disk;
// the raw view of web.qcow2 gets another name.
func TestRawViewDoesNotHideAFile(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t)
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
