package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestRestoreKeepsSymlinkedAncestors: a directory above the backed-up
// paths that is a symlink to a directory in the target (/lib on a
// merged-/usr system, /srv on a data volume) is followed, not replaced
// by a directory, as long as root or the restoring user owns it; an
// absolute or ".."-laden link is resolved with the target as root, so
// nothing lands outside it. Below the backed-up paths, and for a link
// someone else owns, the symlink is replaced as before. Hard links among
// files below a followed link are restored too (openBeneath).
func TestRestoreKeepsSymlinkedAncestors(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	base := t.TempDir()
	host := filepath.Join(base, "host")
	mk := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk(filepath.Join(host, "usr/lib/sub/f"), "lib file")
	if err := os.Link(filepath.Join(host, "usr/lib/sub/f"), filepath.Join(host, "usr/lib/sub/g")); err != nil {
		t.Fatal(err)
	}
	mk(filepath.Join(host, "usr/lib/sub/inner/h"), "inner file")
	mk(filepath.Join(host, "data/srv/web/index"), "srv file")
	mk(filepath.Join(host, "other/x/y"), "other file")
	for link, to := range map[string]string{"lib": "usr/lib", "srv": "data/srv", "o": "other"} {
		if err := os.Symlink(to, filepath.Join(host, link)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{
		filepath.Join(host, "lib/sub"), filepath.Join(host, "srv/web"), filepath.Join(host, "o/x"),
	}})
	if err != nil {
		t.Fatal(err)
	}

	dst := t.TempDir()
	at := func(p string) string { return filepath.Join(dst, host, p) }
	if err := os.MkdirAll(at("usr/lib/sub/inner"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(at("data/srv"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(at("elsewhere"), 0o755); err != nil {
		t.Fatal(err)
	}
	// lib: relative; srv: absolute, as the host sees it, which outside
	// the target names the source itself; o: owned by another user.
	os.Symlink("usr/lib", at("lib"))
	os.Symlink(filepath.Join(host, "data/srv"), at("srv"))
	os.Symlink("elsewhere", at("o"))
	if err := os.Lchown(at("o"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	// Below a backed-up path a symlink is replaced as always.
	os.Symlink("../../elsewhere", at("usr/lib/sub/inner/escape"))
	os.Remove(at("usr/lib/sub/inner"))
	os.Symlink("../../../elsewhere", at("usr/lib/sub/inner"))

	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	if err != nil {
		fatalRestore(t, "restore into a target with symlinked ancestors", rr, err)
	}
	for _, c := range []struct{ path, want string }{
		{"usr/lib/sub/f", "lib file"},
		{"usr/lib/sub/g", "lib file"},
		{"usr/lib/sub/inner/h", "inner file"},
		{"data/srv/web/index", "srv file"},
		{"o/x/y", "other file"},
	} {
		b, err := os.ReadFile(at(c.path))
		if err != nil || string(b) != c.want {
			t.Errorf("%s: %q, %v; want %q", c.path, b, err, c.want)
		}
	}
	for _, link := range []string{"lib", "srv"} {
		if fi, err := os.Lstat(at(link)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s in the target is no longer the symlink it was (%v)", link, err)
		}
	}
	if fi, err := os.Lstat(at("o")); err != nil || !fi.IsDir() {
		t.Errorf("another user's symlink above a backed-up path was followed, not replaced (%v)", err)
	}
	if fi, err := os.Lstat(at("usr/lib/sub/inner")); err != nil || !fi.IsDir() {
		t.Errorf("a symlink below a backed-up path was followed, not replaced (%v)", err)
	}
	if ents, _ := os.ReadDir(at("elsewhere")); len(ents) != 0 {
		t.Errorf("the restore wrote through a link it must not follow: %v", ents)
	}
	fa, errA := os.Stat(at("usr/lib/sub/f"))
	fb, errB := os.Stat(at("usr/lib/sub/g"))
	if errA != nil || errB != nil || !os.SameFile(fa, fb) {
		t.Errorf("hard links below a followed symlink restored as two files (%v, %v)", errA, errB)
	}
	// The source itself (what the absolute link names outside the
	// target) is untouched: still one file in web.
	if ents, _ := os.ReadDir(filepath.Join(host, "data/srv/web")); len(ents) != 1 {
		t.Errorf("the restore wrote outside the target: %v", ents)
	}
}

// TestRestoreFollowsOnlyTrustedLinks: a symlink above the backed-up paths
// that root owns is followed only through links root or the restoring
// user owns as well: one another user planted on its way (in a directory
// of theirs it leads through) redirects nothing, and the root-owned link
// is replaced, as a link that leads nowhere is.
func TestRestoreFollowsOnlyTrustedLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a symlink to another user")
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	base := t.TempDir()
	host := filepath.Join(base, "host")
	if err := os.MkdirAll(filepath.Join(host, "w/x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "w/x/f"), []byte("site file"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{filepath.Join(host, "w/x")}})
	if err != nil {
		t.Fatal(err)
	}

	dst := t.TempDir()
	at := func(p string) string { return filepath.Join(dst, host, p) }
	for _, d := range []string{"pub", "etc"} {
		if err := os.MkdirAll(at(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// w (root's) leads to pub/site, which a user made a link to etc.
	if err := os.Symlink("pub/site", at("w")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../etc", at("pub/site")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(at("pub/site"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst})
	if err != nil {
		fatalRestore(t, "restore into a target with a planted link", rr, err)
	}
	if ents, _ := os.ReadDir(at("etc")); len(ents) != 0 {
		t.Errorf("the restore followed another user's link: etc holds %v", ents)
	}
	if b, err := os.ReadFile(at("w/x/f")); err != nil || string(b) != "site file" {
		t.Errorf("w/x/f: %q, %v", b, err)
	}
}
