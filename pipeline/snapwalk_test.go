package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/vmdisk"
)

// TestWalkSnapshotListsWhatWasBackedUp: the walk of a backed-up path
// gives every entry of the source, in the order filepath.WalkDir visits
// them, with its type and size; a path inside lists only that part, and
// a path the snapshot lacks is an error naming it.
func TestWalkSnapshotListsWhatWasBackedUp(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := makeSource(t)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	type ent struct {
		path string
		typ  repo.NodeType
		size int64
	}
	var want []ent
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := ent{path: p}
		switch {
		case d.IsDir():
			e.typ = repo.NodeDir
		case d.Type()&fs.ModeSymlink != 0:
			e.typ = repo.NodeSymlink
		case d.Type()&fs.ModeNamedPipe != 0:
			e.typ = repo.NodeFIFO
		default:
			e.typ, e.size = repo.NodeFile, fi.Size()
		}
		want = append(want, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	walk := func(paths ...string) ([]ent, error) {
		var got []ent
		err := WalkSnapshot(ctx, r, res.Snapshot, paths, func(p string, n *repo.Node) error {
			e := ent{path: p, typ: n.Type}
			if n.Type == repo.NodeFile {
				e.size = n.Size
			}
			got = append(got, e)
			return nil
		})
		return got, err
	}
	got, err := walk(src)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("walk of %s: %d entries, the source has %d; first difference at %v", src, len(got), len(want), firstDiff(got, want))
	}
	all, err := walk()
	if err != nil {
		t.Fatal(err)
	}
	// The whole snapshot: the directories above src, then what src holds.
	if len(all) < len(want) || !slices.Equal(all[len(all)-len(want):], want) || all[0].path != "/"+firstElem(src) {
		t.Errorf("walk of the whole snapshot: %d entries, first %v; want the directories above %s, then its %d entries", len(all), all[:min(3, len(all))], src, len(want))
	}
	var sub []ent
	for _, e := range want {
		if e.path == filepath.Join(src, "sparse.img") {
			sub = append(sub, e)
		}
	}
	if got, err := walk(filepath.Join(src, "sparse.img")); err != nil || !slices.Equal(got, sub) {
		t.Errorf("walk of one file: %v, %v; want %v", got, err, sub)
	}
	if _, err := walk(filepath.Join(src, "no-such-file")); !errors.Is(err, ErrNoSuchPath) {
		t.Errorf("walk of a path the snapshot lacks: %v, want ErrNoSuchPath", err)
	}
}

func firstElem(p string) string {
	for i := 1; i < len(p); i++ {
		if p[i] == '/' {
			return p[1:i]
		}
	}
	return p[1:]
}

func firstDiff[T comparable](a, b []T) any {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return [2]T{a[i], b[i]}
		}
	}
	return "one is a prefix of the other"
}

// TestDiffSnapshotsNamesEachChange: between two backups of a changed
// tree, diff reports exactly the entries added, removed, modified,
// changed in metadata only or in type, everything below an added or
// removed directory included, and nothing for identical snapshots.
func TestDiffSnapshotsNamesEachChange(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	write := func(rel, content string) {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("same/a", "a")
	write("same/deep/b", "b")
	write("mod", "old content")
	write("meta", "same content")
	write("gone/x", "x")
	write("gone/y/z", "z")
	write("becomes-dir", "file")
	old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	backup := func() *repo.Snapshot {
		// Fixed directory times, so that only the changes made show.
		for _, d := range []string{src, filepath.Join(src, "same"), filepath.Join(src, "same", "deep")} {
			os.Chtimes(d, old, old)
		}
		res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Snapshot
	}
	a := backup()
	write("mod", "new content, longer")
	if err := os.Chmod(filepath.Join(src, "meta"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(src, "gone")); err != nil {
		t.Fatal(err)
	}
	write("added/n", "n")
	if err := os.Remove(filepath.Join(src, "becomes-dir")); err != nil {
		t.Fatal(err)
	}
	write("becomes-dir/inside", "i")
	b := backup()

	type ch struct {
		path   string
		change Change
	}
	diff := func(a, b *repo.Snapshot) []ch {
		var got []ch
		if err := DiffSnapshots(ctx, r, a, b, func(d DiffEntry) error {
			got = append(got, ch{d.Path, d.Change})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	j := func(rel string) string { return filepath.Join(src, rel) }
	want := []ch{
		{j("added"), Added}, {j("added/n"), Added},
		{j("becomes-dir"), TypeDiff}, {j("becomes-dir/inside"), Added},
		{j("gone"), Removed}, {j("gone/x"), Removed}, {j("gone/y"), Removed}, {j("gone/y/z"), Removed},
		{j("meta"), Metadata},
		{j("mod"), Modified},
	}
	got := diff(a, b)
	var below []ch // src's own entries, not the directories above it
	for _, c := range got {
		if len(c.path) > len(src) && c.path[:len(src)+1] == src+"/" {
			below = append(below, c)
		}
	}
	if !slices.Equal(below, want) {
		t.Errorf("diff:\n got %v\nwant %v", below, want)
	}
	if got := diff(b, b); len(got) != 0 {
		t.Errorf("diff of a snapshot with itself: %v", got)
	}
}

// TestDiffSkipsUnchangedTrees: a directory whose tree is the same blob
// in both snapshots is not read (here it could not be: the blob does not
// exist), so a diff costs what changed, not the size of the snapshots.
// Names no restore would create are left out.
func TestDiffSkipsUnchangedTrees(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	missing := id.ID{1, 2, 3}
	mt := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	tree := func(size int64) *repo.Tree {
		return &repo.Tree{Version: repo.TreeVersion, Nodes: []*repo.Node{
			{Name: "a/b", Type: repo.NodeFile, Mode: 0o644, ModTime: mt, Size: size},
			{Name: "big", Type: repo.NodeDir, Mode: 0o755, ModTime: mt, Subtree: &missing},
			{Name: "f", Type: repo.NodeFile, Mode: 0o644, ModTime: mt, Size: size},
		}}
	}
	a := snapshotOf(t, r, tree(0), "/")
	b := snapshotOf(t, r, tree(0), "/")
	b2 := snapshotOf(t, r, &repo.Tree{Version: repo.TreeVersion, Nodes: append(tree(0).Nodes[1:2], &repo.Node{Name: "g", Type: repo.NodeFIFO, Mode: 0o644, ModTime: mt})}, "/")
	var got []string
	for _, s := range []*repo.Snapshot{b, b2} {
		if err := DiffSnapshots(ctx, r, a, s, func(d DiffEntry) error {
			got = append(got, string(d.Change)+" "+d.Path)
			return nil
		}); err != nil {
			t.Fatalf("diff: %v", err)
		}
	}
	if want := []string{"removed /f", "added /g"}; !slices.Equal(got, want) {
		t.Errorf("diff: %v, want %v", got, want)
	}
}

// TestDiffDiskImageRecord: a VM disk image's content is its virtual disk
// (for a layer, only its own data) and its disk record says how that
// makes the guest's disk: an overlay pointed at another backing file, or
// whose unallocated clusters became zero clusters, holds other data for
// the guest with the same chunks, and is modified, not unchanged.
func TestDiffDiskImageRecord(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	mt := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	const size = 1 << 20
	record := func(backing string, own []diskRun) []byte {
		b, err := json.Marshal(DiskMeta{Version: DiskMetaVersion, Info: vmdisk.Info{Format: vmdisk.QCOW2, VirtualSize: size, Backing: backing,
			BackingFormat: vmdisk.QCOW2, QCOW2: &vmdisk.QCOW2Params{Version: 3, ClusterBits: 16}}, Layer: true, Own: own})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	data := []diskRun{{0, 65536, int64(vmdisk.Data)}}
	zeroed := []diskRun{{0, 65536, int64(vmdisk.Data)}, {65536, 65536, int64(vmdisk.Zero)}}
	content := []repo.Extent{{ID: id.Hash([]byte("cluster")), Len: 65536}, {Len: size - 65536, Zero: true}}
	tree := func(rebased, zero []byte) *repo.Tree {
		return &repo.Tree{Version: repo.TreeVersion, Nodes: []*repo.Node{
			{Name: "rebased.qcow2", Type: repo.NodeFile, Mode: 0o644, ModTime: mt, Size: size, Content: content, Disk: rebased},
			{Name: "zeroed.qcow2", Type: repo.NodeFile, Mode: 0o644, ModTime: mt, Size: size, Content: content, Disk: zero},
		}}
	}
	a := snapshotOf(t, r, tree(record("base-a.qcow2", data), record("base.qcow2", data)), "/")
	b := snapshotOf(t, r, tree(record("base-b.qcow2", data), record("base.qcow2", zeroed)), "/")
	var got []string
	if err := DiffSnapshots(ctx, r, a, b, func(d DiffEntry) error {
		got = append(got, string(d.Change)+" "+d.Path)
		return nil
	}); err != nil {
		t.Fatalf("diff: %v", err)
	}
	if want := []string{"modified /rebased.qcow2", "modified /zeroed.qcow2"}; !slices.Equal(got, want) {
		t.Errorf("diff: %v, want %v", got, want)
	}
}
