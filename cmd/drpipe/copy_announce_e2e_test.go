package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
)

// copyAnnounceFixture is a local repository with one backup and a
// complete announced copy of it: the source, the destination and the
// environment (DRPIPE_PASSWORD is the repository's).
func copyAnnounceFixture(t *testing.T) (e *env, src, dst string) {
	t.Helper()
	e = newEnv(t)
	data := filepath.Join(e.dir, "data")
	os.MkdirAll(data, 0o755)
	if err := os.WriteFile(filepath.Join(data, "f.bin"), sample.Binary(newRandSource(41), 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	src = e.initRepo("--pack-size", "1MiB")
	e.backup(src, data)
	dst = filepath.Join(e.dir, "dst")
	return e, src, dst
}

func copyOut(t *testing.T, r result) copyJSONOut {
	t.Helper()
	var c copyJSONOut
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil {
		t.Fatalf("copy --json printed %q (stderr %q): %v", r.stdout, r.stderr, err)
	}
	return c
}

// TestCopyWithPasswordResumesIntoADestinationThatHasOnlyTheConfig: a
// copy interrupted after the config and before the key slots (the first
// two types it stores) leaves a destination that holds the repository's
// config and no key: the password cannot open it there. Run again with
// the password given, the copy must resume (announced, with the key the
// source's slots unlock), as it does without one, not stop for good
// before it copies the keys that would make the destination open.
func TestCopyWithPasswordResumesIntoADestinationThatHasOnlyTheConfig(t *testing.T) {
	e, src, dst := copyAnnounceFixture(t)
	os.MkdirAll(dst, 0o755)
	cfg, err := os.ReadFile(filepath.Join(src, "config"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "config"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.run("copy", "--json", "--repo", src, "--to", dst)
	if r.code != 0 {
		t.Fatalf("resumed copy with the password given: exit %d\n%s", r.code, r.stderr)
	}
	if c := copyOut(t, r); !c.Announced || c.Failed != 0 || c.Copied != c.Objects-1 {
		t.Errorf("resumed copy: %+v", c)
	}
	e.ok("check", "--repo", dst)
}

// TestCopyWithANewPasswordTheDestinationDoesNotKnowYet: a key slot added
// at the source (key add) reaches the destination with the next copy. Run
// with that new password, the copy cannot open the destination's key
// slots, but the source's open the same repository: the copy must go on,
// announced, and bring the new slot along.
func TestCopyWithANewPasswordTheDestinationDoesNotKnowYet(t *testing.T) {
	e, src, dst := copyAnnounceFixture(t)
	e.ok("copy", "--repo", src, "--to", dst)
	pw2 := filepath.Join(e.dir, "pw2")
	if err := os.WriteFile(pw2, []byte("a second password"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.ok("key", "add", "--repo", src, "--new-password-file", pw2, "--label", "second")
	r := e.run("copy", "--json", "--password-file", pw2, "--repo", src, "--to", dst)
	if r.code != 0 {
		t.Fatalf("copy with the new password: exit %d\n%s", r.code, r.stderr)
	}
	if c := copyOut(t, r); !c.Announced || c.Copied != 1 {
		t.Errorf("copy with the new password: %+v, want it announced and the new key slot copied", c)
	}
	e.ok("check", "--password-file", pw2, "--repo", dst)
}

// TestCopyWithAWrongPasswordSaysWhatToDo: a password given that does not
// open the repository (DRPIPE_PASSWORD exported for another one) stops
// the copy, which without any password would go ahead unannounced. The
// error must say so, and how to go on.
func TestCopyWithAWrongPasswordSaysWhatToDo(t *testing.T) {
	e, src, dst := copyAnnounceFixture(t)
	e.ok("copy", "--repo", src, "--to", dst)
	e.pw = "the password of another repository"
	r := e.run("copy", "--repo", src, "--to", dst)
	if r.code == 0 {
		t.Fatalf("copy with a wrong password succeeded:\n%s", r.stdout)
	}
	for _, want := range []string{"wrong password", "DRPIPE_PASSWORD", "unannounced", "do not prune"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("copy with a wrong password: the error does not say %q:\n%s", want, r.stderr)
		}
	}
}
