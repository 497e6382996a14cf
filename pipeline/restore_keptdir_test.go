package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRestoreKeptDirectoryLosesAttributes: a directory already in the
// target keeps its inode, and must come back with the snapshot's
// attributes only, as a file replaced there does: an ACL entry left on it
// ("user:4242:rwx") would grant access the backed-up directory did not,
// and its default ACL would pass that on to whatever is made there later.
func TestRestoreKeptDirectoryLosesAttributes(t *testing.T) {
	ctx := context.Background()
	r, src, res := backupFiles(t, map[string]string{"d/f": "data"})
	dst := filepath.Join(t.TempDir(), "dst")
	kept := filepath.Join(dst, src, "d")
	if err := os.MkdirAll(kept, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setxattr(kept, "system.posix_acl_access", aclXattr(4242, 7), 0); err != nil {
		t.Skipf("no POSIX ACLs here: %v", err)
	}
	for k, v := range map[string][]byte{"system.posix_acl_default": aclXattr(4242, 7), "user.stale": []byte("old")} {
		if err := syscall.Setxattr(kept, k, v, 0); err != nil {
			t.Skipf("cannot set %s here: %v", k, err)
		}
	}
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	compare(t, src, filepath.Join(dst, src))
	if x, _ := readXattrs(kept); len(x) != 0 {
		t.Errorf("%s keeps attributes the snapshot does not record: %v", kept, names(x))
	}
}
