package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestLsAndDiff drives 'drpipe ls' and 'drpipe diff' as an operator
// does: plain, long and JSON listings of a snapshot and of a path in it,
// a name with a newline that must not pass for two entries, the changes
// between two backups in text and JSON, and the errors for a path or a
// snapshot that is not there.
func TestLsAndDiff(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo()
	src := filepath.Join(e.dir, "src")
	write := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/app.conf", "a=1\n", 0o644)
	write("bin/tool", "#!/bin/sh\n", os.ModeSetuid|0o755)
	write("two\nlines", "x", 0o600)
	if err := os.Symlink("app.conf", filepath.Join(src, "etc", "link")); err != nil {
		t.Fatal(err)
	}
	first := e.backup(r, src).SnapshotID

	plain := e.ok("ls", "--repo", r, first, src)
	wantPlain := []string{src, src + "/bin", src + "/bin/tool", src + "/etc", src + "/etc/app.conf", src + "/etc/link", `"` + src + `/two\nlines"`}
	if got := strings.Split(strings.TrimSuffix(plain, "\n"), "\n"); !slices.Equal(got, wantPlain) {
		t.Errorf("ls:\n%s\nwant:\n%s", plain, strings.Join(wantPlain, "\n"))
	}
	long := e.ok("ls", "--repo", r, first, "--long", src+"/bin/tool", src+"/etc/link")
	if !strings.HasPrefix(long, "-rwsr-xr-x ") || !strings.Contains(long, "\nlrwxrwxrwx ") || !strings.HasSuffix(long, src+"/etc/link -> app.conf\n") {
		t.Errorf("ls --long:\n%s", long)
	}

	var ls struct {
		Snapshot struct {
			ID string `json:"id"`
		} `json:"snapshot"`
		Entries []struct {
			Path string `json:"path"`
			Type string `json:"type"`
			Mode string `json:"mode"`
			Size *int64 `json:"size"`
		} `json:"entries"`
		Complete bool `json:"complete"`
	}
	out := e.ok("ls", "--json", "--repo", r, "latest", src+"/etc")
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("ls --json printed %q: %v", out, err)
	}
	if ls.Snapshot.ID != first || !ls.Complete || len(ls.Entries) != 3 || ls.Entries[1].Path != src+"/etc/app.conf" || ls.Entries[1].Size == nil || *ls.Entries[1].Size != 4 || ls.Entries[1].Mode != "0644" || ls.Entries[2].Type != "symlink" {
		t.Errorf("ls --json: %s", out)
	}

	// A path the snapshot lacks: exit 1, the path named, the listing of
	// the paths before it still printed (and, under --json, still one
	// JSON value, marked incomplete).
	res := e.run("ls", "--repo", r, first, src+"/etc/app.conf", src+"/nope")
	if res.code != 1 || res.stdout != src+"/etc/app.conf\n" || !strings.Contains(res.stderr, src+"/nope is not in snapshot") {
		t.Errorf("ls of a missing path: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	res = e.run("ls", "--json", "--repo", r, first, src+"/nope")
	if err := json.Unmarshal([]byte(res.stdout), &ls); err != nil || res.code != 1 || ls.Complete {
		t.Errorf("ls --json of a missing path: exit %d, stdout %q (%v)", res.code, res.stdout, err)
	}
	if res := e.run("ls", "--repo", r, "ffffffff"); res.code != 1 || !strings.Contains(res.stderr, "no matching snapshot") {
		t.Errorf("ls of an unknown snapshot: exit %d, %s", res.code, res.stderr)
	}

	write("etc/app.conf", "a=2, and more\n", 0o644)
	if err := os.Chmod(filepath.Join(src, "bin", "tool"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("etc/new.conf", "n", 0o644)
	if err := os.Remove(filepath.Join(src, "two\nlines")); err != nil {
		t.Fatal(err)
	}
	second := e.backup(r, src).SnapshotID

	text := e.ok("diff", "--repo", r, first, second)
	for _, line := range []string{"M    " + src + "/etc/app.conf\n", "U    " + src + "/bin/tool\n", "+    " + src + "/etc/new.conf\n", `-    "` + src + `/two\nlines"` + "\n", "1 added (1 B), 1 removed (1 B), 1 modified (4 B -> 14 B)"} {
		if !strings.Contains(text, line) {
			t.Errorf("diff lacks %q:\n%s", line, text)
		}
	}
	var d struct {
		Old, New struct {
			ID string `json:"id"`
		}
		Changes []struct {
			Path    string `json:"path"`
			Change  string `json:"change"`
			OldSize int64  `json:"old_size"`
			NewSize int64  `json:"new_size"`
		} `json:"changes"`
		Summary  map[string]int64 `json:"summary"`
		Complete bool             `json:"complete"`
	}
	out = e.ok("diff", "--json", "--repo", r, first, "latest")
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("diff --json printed %q: %v", out, err)
	}
	got := map[string]string{}
	for _, c := range d.Changes {
		got[c.Path] = c.Change
		if c.Path == src+"/etc/app.conf" && (c.OldSize != 4 || c.NewSize != 14) {
			t.Errorf("diff --json: app.conf sizes %d -> %d, want 4 -> 14", c.OldSize, c.NewSize)
		}
	}
	if d.Old.ID != first || d.New.ID != second || !d.Complete || got[src+"/etc/app.conf"] != "modified" || got[src+"/bin/tool"] != "metadata" ||
		got[src+"/etc/new.conf"] != "added" || got[src+"/two\nlines"] != "removed" || d.Summary["added"] != 1 || d.Summary["modified"] != 1 {
		t.Errorf("diff --json: %s", out)
	}
	if out := e.ok("diff", "--json", "--repo", r, second, second); !strings.Contains(out, `"changes":[`+"\n]") {
		t.Errorf("diff of a snapshot with itself: %s", out)
	}
}

// TestDumpStdinStreamAndTree: a 'backup --stdin' stream comes back
// byte-identical through 'drpipe dump' (by the bare --stdin-name), a
// directory comes as a tar archive that tar extracts into the same
// files, modes and symlinks, and a terminal as standard output is
// refused before anything is read.
func TestDumpStdinStreamAndTree(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo()
	stream := make([]byte, 3<<20+17)
	for i := range stream {
		stream[i] = byte(i*7 + i>>11)
	}
	e.runIn(stream, "backup", "--repo", r, "--host", "db01", "--stdin", "--stdin-name", "pg.sql")
	res := e.run("dump", "--repo", r, "latest", "--host", "db01", "pg.sql")
	if res.code != 0 || res.stdout != string(stream) || !strings.Contains(res.stderr, "as a file") {
		t.Fatalf("dump of the stdin stream: exit %d, %d bytes back of %d, stderr %q", res.code, len(res.stdout), len(stream), res.stderr)
	}

	src := filepath.Join(e.dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "d"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "d", "f"), []byte("content\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	sparse, err := os.Create(filepath.Join(src, "sparse.img"))
	if err != nil {
		t.Fatal(err)
	}
	sparse.Truncate(8 << 20)
	sparse.WriteAt([]byte("in the middle"), 4<<20)
	sparse.Close()
	if err := os.Symlink("d/f", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	e.backup(r, src)
	tarPath := filepath.Join(e.dir, "src.tar")
	out, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	c := e.cmd(t.Context(), "dump", "--repo", r, "latest", "--host", "hv01", src)
	var se strings.Builder
	c.Stdout, c.Stderr = out, &se
	if err := c.Run(); err != nil {
		t.Fatalf("dump of a directory: %v: %s", err, se.String())
	}
	out.Close()
	dst := filepath.Join(e.dir, "x")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("tar", "-xpf", tarPath, "-C", dst).CombinedOutput(); err != nil {
		t.Fatalf("tar -x of the dump: %v: %s", err, b)
	}
	compareTrees(t, src, filepath.Join(dst, src))

	c = e.cmd(t.Context(), "dump", "--repo", r, "latest", "--host", "db01", "pg.sql")
	c.Stdout, c.Stderr = openTTY(t), &se
	se.Reset()
	var ee *exec.ExitError
	if err := c.Run(); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(se.String(), "terminal") {
		t.Errorf("dump to a terminal: %v, stderr %q; want exit 2 saying standard output is a terminal", err, se.String())
	}
}

// TestLsJSONRawNames: a name and a symlink target that are not UTF-8
// (Linux names are bytes) come back exactly, in base64, beside the
// JSON strings that cannot hold them.
func TestLsJSONRawNames(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo()
	src := filepath.Join(e.dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	name, target := "caf\xe9", "to-\xff"
	if err := os.Symlink(target, filepath.Join(src, name)); err != nil {
		t.Fatal(err)
	}
	e.backup(r, src)
	var ls struct {
		Entries []struct {
			PathRaw       []byte `json:"path_raw"`
			LinkTargetRaw []byte `json:"link_target_raw"`
		} `json:"entries"`
	}
	out := e.ok("ls", "--json", "--repo", r, "latest", filepath.Join(src, name))
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("ls --json printed %q: %v", out, err)
	}
	if len(ls.Entries) != 1 || string(ls.Entries[0].PathRaw) != filepath.Join(src, name) || string(ls.Entries[0].LinkTargetRaw) != target {
		t.Errorf("ls --json of a link with a name and target in Latin-1: %s", out)
	}
}
