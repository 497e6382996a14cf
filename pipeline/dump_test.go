package pipeline

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/drpipe/drpipe/repo"
)

// TestDumpRefusesDiskImages: a snapshot holds a VM disk image as its
// virtual disk (a layer as its own clusters alone) and its container is
// rebuilt only by restore. Dump must not write those bytes as the image
// file, alone or in a tar archive: the result would be neither the
// qcow2 file nor, for a layer, the guest's disk.
func TestDumpRefusesDiskImages(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(src, "vm.qcow2")
	makeQcow2(t, img, 4<<20, bytes.Repeat([]byte("guest data"), 1000), 1<<20)
	file, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err = Dump(ctx, r, res.Snapshot, img, &out)
	switch {
	case err == nil && !bytes.Equal(out.Bytes(), file):
		t.Fatalf("dump of %s wrote %d bytes that are not the %d-byte image file, and no error", img, out.Len(), len(file))
	case err != nil && !errors.Is(err, ErrDumpDiskImage):
		t.Fatalf("dump of %s: %v, want an error wrapping ErrDumpDiskImage", img, err)
	}
	out.Reset()
	if _, err := Dump(ctx, r, res.Snapshot, src, &out); !errors.Is(err, ErrDumpDiskImage) {
		t.Fatalf("dump of %s holding a disk image as a tar archive: %v, want an error wrapping ErrDumpDiskImage", src, err)
	}
}

// TestDumpOfAnEmptySnapshotIsAnEmptyArchive: the whole of a snapshot
// that holds nothing is an empty tar archive, which tar reads, not zero
// bytes reported as a file.
func TestDumpOfAnEmptySnapshotIsAnEmptyArchive(t *testing.T) {
	r, _ := newRepo(t)
	sn := snapshotOf(t, r, &repo.Tree{Version: repo.TreeVersion, Nodes: []*repo.Node{}}, "/")
	var buf bytes.Buffer
	res, err := Dump(context.Background(), r, sn, "/", &buf)
	if err != nil || !res.Tar || res.Entries != 0 {
		t.Fatalf("dump of an empty snapshot: %+v, %v; want an empty archive", res, err)
	}
	if _, err := tar.NewReader(&buf).Next(); err != io.EOF {
		t.Errorf("the archive does not read as an empty tar (%d bytes): %v", buf.Len(), err)
	}
}
