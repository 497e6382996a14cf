package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
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

// pruneBeforeIndex runs a prune of the repository in the location it
// wraps when the copy into it turns to the index, i.e. once the config,
// the key slots and the data are there and none of it is indexed yet
// (the first listing of the index once data is stored).
type pruneBeforeIndex struct {
	tiers.Backend
	mu    sync.Mutex
	done  bool
	prune func()
}

func (p *pruneBeforeIndex) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	if t == tiers.TypeIndex {
		p.mu.Lock()
		if !p.done {
			data := false
			p.Backend.List(ctx, tiers.TypeData, func(tiers.ObjectInfo) error { data = true; return nil })
			if data {
				p.done = true
				p.prune()
			}
		}
		p.mu.Unlock()
	}
	return p.Backend.List(ctx, t, fn)
}

// TestFirstCopyIntoAnEmptyDestinationIsAnnounced: the first copy into an
// empty location makes it a repository (config and key slots first) long
// before it is complete: its data is stored before any index names it.
// A prune of the destination then takes every pack copied so far for an
// orphan; once the tombstone is due (the grace elapsed, as on a copy that
// runs for days, or --grace 0) it removes them, and the copy goes on to
// write index objects and snapshots naming packs that are gone. Given
// the password, the copy must announce itself there from the start, so
// that the prune waits for it.
func TestFirstCopyIntoAnEmptyDestinationIsAnnounced(t *testing.T) {
	e, srcDir, dstDir := copyAnnounceFixture(t)
	ctx := context.Background()
	src, err := tiers.OpenLocal(srcDir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	raw, err := tiers.NewLocal(dstDir)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	srcCfg, err := repo.ReadConfig(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	var pruneErr error
	var pruned *repo.PruneReport
	dst := &pruneBeforeIndex{Backend: raw, prune: func() {
		r, err := repo.Open(ctx, raw, repo.Options{Password: []byte(e.pw), CacheDir: t.TempDir()})
		if err != nil {
			pruneErr = err
			return
		}
		defer r.Close()
		pruned, pruneErr = r.Prune(ctx, repo.PruneOptions{Grace: 0, GraceSet: true})
	}}
	root := &cobra.Command{}
	root.PersistentFlags().String("password-file", "", "")
	a := &app{v: viper.New(), stderr: io.Discard, root: root}
	a.v.Set("cache_dir", t.TempDir())
	t.Setenv("DRPIPE_PASSWORD", e.pw)
	o := tiers.CopyOptions{}
	end, err := a.announceCopy(ctx, src, srcCfg, dst, &o)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tiers.Copy(ctx, src, dst, o)
	end()
	if err != nil {
		t.Fatal(err)
	}
	if pruneErr != nil || pruned == nil {
		t.Fatalf("prune of the destination during the copy: %+v, %v", pruned, pruneErr)
	}
	t.Logf("prune during the copy: %+v", pruned)
	if r := e.run("check", "--repo", dstDir); r.code != 0 {
		t.Errorf("the destination after a first copy with a prune of it meanwhile: check exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
