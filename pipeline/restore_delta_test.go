package pipeline

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/sample"
)

// TestRestoreDelta: a delta restore over an earlier restore that was
// changed since writes only what differs (a few bytes in the middle of a
// large file, data put into a hole, a truncated and an extended file, an
// extra extended attribute), keeps those files' inodes, and gives the
// snapshot back exactly. Files it must not write in place are replaced:
// one writable by others, one owned by someone else, one with a second
// name outside the tree (which keeps its content), a setuid program. An interrupted delta
// restore leaves what it wrote, and the next run completes it.
func TestRestoreDelta(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown to another owner)")
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 7))
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("big", sample.Binary(rng, 40<<20))
	for _, n := range []string{"d/a", "d/b", "d/open", "d/other", "d/linked", "d/gone", "d/suid"} {
		write(n, sample.Text(rng, 20<<10))
	}
	write("d/x", []byte("with an attribute"))
	if err := unix.Setxattr(filepath.Join(src, "d/x"), "user.keep", []byte("1"), 0); err != nil {
		t.Skipf("no user extended attributes here: %v", err)
	}
	os.Chmod(filepath.Join(src, "d/suid"), os.ModeSetuid|0o755)
	sparse := filepath.Join(src, "sparse")
	sf, _ := os.Create(sparse)
	sf.WriteAt(sample.Binary(rng, 1<<20), 0)
	sf.WriteAt(sample.Binary(rng, 1<<20), 5<<20)
	sf.Close()
	sn, dst := backupRestore(t, r, src)
	root := filepath.Join(dst, src)
	at := func(name string) string { return filepath.Join(root, name) }

	// Changes since: in place, and ones that forbid writing in place.
	f, _ := os.OpenFile(at("big"), os.O_WRONLY, 0)
	f.WriteAt([]byte("changed in the middle"), 20<<20)
	f.Close()
	f, _ = os.OpenFile(at("sparse"), os.O_WRONLY, 0)
	f.WriteAt([]byte("data in the hole"), 3<<20)
	f.Close()
	os.Truncate(at("d/a"), 100)
	f, _ = os.OpenFile(at("d/b"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("appended"))
	f.Close()
	os.Remove(at("d/gone"))
	unix.Setxattr(at("d/x"), "user.extra", []byte("not in the snapshot"), 0)
	os.Chmod(at("d/open"), 0o666)
	os.Chown(at("d/other"), 4242, 4242)
	elsewhere := filepath.Join(t.TempDir(), "second-name")
	os.Link(at("d/linked"), elsewhere)
	os.WriteFile(at("d/linked"), []byte("second name's content"), 0o644) // same inode: both names
	// Held open, so that a replaced file's inode number is not reused:
	// a file written in place is still the one at its path.
	held := map[string]*os.File{}
	for _, n := range []string{"big", "sparse", "d/a", "d/b", "d/x", "d/open", "d/other", "d/linked", "d/suid"} {
		var err error
		if held[n], err = os.Open(at(n)); err != nil {
			t.Fatal(err)
		}
		defer held[n].Close()
	}

	rr, err := Restore(ctx, r, sn, RestoreOptions{Target: dst, Delta: true})
	if err != nil {
		t.Fatal(err)
	}
	compare(t, src, root)
	if v, err := xattrGet(at("d/x"), "user.extra"); err == nil {
		t.Errorf("user.extra, which the snapshot does not record, survived: %q", v)
	}
	for n, want := range map[string]bool{"big": true, "sparse": true, "d/a": true, "d/b": true, "d/x": true, "d/open": false, "d/other": false, "d/linked": false, "d/suid": false} {
		a, _ := held[n].Stat()
		b, _ := os.Stat(at(n))
		if inPlace := a != nil && b != nil && os.SameFile(a, b); inPlace != want {
			t.Errorf("%s: written in place %v, want %v", n, inPlace, want)
		}
	}
	if b, _ := os.ReadFile(elsewhere); string(b) != "second name's content" {
		t.Errorf("the other name of a replaced file now holds %q", b)
	}
	t.Logf("delta restore: wrote %d bytes, kept %d bytes in %d files", rr.BytesWritten, rr.BytesKept, rr.FilesKept)
	// Written: the chunk(s) of big under the change (chunks are at most 4
	// MiB, cut where the repository's random chunker cuts: at most two),
	// the small files replaced whole, the truncated and the missing file
	// (well under 1 MiB); the hole's data is punched, not written. Not the
	// 42 MiB of a full restore.
	if rr.BytesWritten > 9<<20 || rr.BytesKept < 31<<20 || rr.FilesKept != 5 {
		t.Errorf("delta restore wrote %d bytes, kept %d bytes and %d files; want at most 9 MiB written, 31 MiB and 5 files kept", rr.BytesWritten, rr.BytesKept, rr.FilesKept)
	}
	srcAlloc, _ := sample.AllocatedBytes(sparse)
	dstAlloc, _ := sample.AllocatedBytes(at("sparse"))
	if dstAlloc > srcAlloc+64<<10 {
		t.Errorf("sparse file holds %d allocated bytes after the delta restore, the source %d: the hole was filled", dstAlloc, srcAlloc)
	}

	// Interrupted while the walk is in d: big and sparse are being
	// written, d's files not all created. The files stay; the next delta
	// run completes the restore.
	f, _ = os.OpenFile(at("big"), os.O_WRONLY, 0)
	f.WriteAt([]byte("changed again"), 1<<20)
	f.Close()
	os.RemoveAll(at("d"))
	cctx, cancel := context.WithCancel(ctx)
	testHookWalk = func(dir string) {
		if dir == at("d") {
			cancel()
		}
	}
	_, err = Restore(cctx, r, sn, RestoreOptions{Target: dst, Delta: true})
	testHookWalk = nil
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted delta restore: %v", err)
	}
	if _, err := os.Stat(at("big")); err != nil {
		t.Fatalf("the interrupted delta restore removed big: %v", err)
	}
	if _, err := Restore(ctx, r, sn, RestoreOptions{Target: dst, Delta: true}); err != nil {
		t.Fatal(err)
	}
	compare(t, src, root)
}
