package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestWriteFileReplacesWhole: the file holds the new content with the
// mode asked for, nothing temporary is left beside it, and a write that
// cannot be done (its directory is gone) leaves nothing and says which
// file.
func TestWriteFileReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := os.WriteFile(p, []byte("old content, longer than the new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "new" {
		t.Fatalf("content %q, %v", b, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left beside it: %v", ents)
	}
	missing := filepath.Join(dir, "gone", "x.json")
	if err := WriteFile(missing, []byte("x"), 0o600); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("write into a missing directory: %v; want an error naming %s", err, missing)
	}
}

// TestWriteFileWhereDirectoriesCannotSync: on a file system without a
// sync for directories (fsync gives EINVAL: VirtualBox shared folders,
// some 9p mounts) the file is still written and no error is returned,
// where a directory sync that fails otherwise is reported.
func TestWriteFileWhereDirectoriesCannotSync(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, c := range []struct {
		err  error
		fail bool
	}{{syscall.EINVAL, false}, {syscall.ENOTSUP, false}, {syscall.EIO, true}} {
		syncDir = func(*os.File) error { return &os.PathError{Op: "sync", Path: "dir", Err: c.err} }
		err := WriteFile(p, []byte("x"), 0o600)
		if (err != nil) != c.fail {
			t.Errorf("directory sync failing with %v: %v", c.err, err)
		}
		if b, rerr := os.ReadFile(p); rerr != nil || string(b) != "x" {
			t.Errorf("directory sync failing with %v: the file holds %q (%v)", c.err, b, rerr)
		}
	}
	syncDir = (*os.File).Sync
}
