package pipeline

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/drpipe/drpipe/repo"
)

// TestBackupStoresContentListsAsItGoes: a file of many extents (4 KiB
// of data every 128 KiB of a 1.25 GiB sparse file, read in 40 segments
// by parallel workers) is recorded with the content lists SetContent
// gives for its extents, which the backup now stores in file order as
// segments complete instead of from a list of all of them at the end;
// its content reads back.
func TestBackupStoresContentListsAsItGoes(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := t.TempDir()
	p := filepath.Join(src, "big.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	const blocks, stride = 10000, 128 << 10
	block := func(i int) []byte {
		return bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5A, 0xC3}, 1024)
	}
	for i := range blocks {
		if _, err := f.WriteAt(block(i), int64(i)*stride); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(blocks*stride + 4096); err != nil { // and a tail hole
		t.Fatal(err)
	}
	f.Close()
	settle()
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{p}, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	var n *repo.Node
	if err := WalkSnapshot(ctx, r, res.Snapshot, nil, func(path string, nd *repo.Node) error {
		if nd.Name == "big.img" {
			n = nd
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n == nil {
		t.Fatal("big.img not in the snapshot")
	}
	var ext []repo.Extent
	if err := r.EachExtent(ctx, n, func(e repo.Extent) error { ext = append(ext, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(n.ContentLists) < 3 {
		t.Fatalf("%d extents in %d content lists: the test wants several lists", len(ext), len(n.ContentLists))
	}
	for i := 1; i < len(ext); i++ {
		if ext[i].Zero && ext[i-1].Zero {
			t.Fatalf("extents %d and %d are both zeros, not merged", i-1, i)
		}
	}
	var again repo.Node
	if err := r.SetContent(ctx, &again, ext); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.ContentLists, n.ContentLists) {
		t.Errorf("content lists %v, SetContent of the same extents gives %v", n.ContentLists, again.ContentLists)
	}
	nr, err := NewNodeReader(ctx, r, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	for i := 0; i < blocks; i += 7 {
		if _, err := nr.ReadAtContext(ctx, buf, int64(i)*stride); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:4096], block(i)) || !bytes.Equal(buf[4096:], make([]byte, 4096)) {
			t.Fatalf("block %d reads other bytes", i)
		}
	}
}
