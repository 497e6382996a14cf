package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A -suites list selects those suites in report order; a name that is no
// suite (a typo) is refused, naming it and the suites there are, instead
// of a run that benchmarks nothing and exits 0.
func TestSelectSuites(t *testing.T) {
	names := func(ss []Suite) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out
	}
	all, err := selectSuites("")
	if err != nil || !slices.Equal(names(all), suiteNames()) {
		t.Fatalf("empty list: %q, %v; want every suite", names(all), err)
	}
	got, err := selectSuites("drsite, core,")
	if err != nil || !slices.Equal(names(got), []string{"core", "drsite"}) {
		t.Fatalf("drsite, core: %q, %v; want core, drsite", names(got), err)
	}
	for _, list := range []string{"cor", "core,s4", "Core"} {
		got, err := selectSuites(list)
		if err == nil {
			t.Errorf("-suites %s selected %q, want an error", list, names(got))
			continue
		}
		if !strings.Contains(err.Error(), strings.Join(suiteNames(), ",")) {
			t.Errorf("-suites %s: %v; want the error to list the suites", list, err)
		}
	}
}

// A run with a failed suite exits 1 and still removes its temporary work
// directory (unless -keep): the suites leave gigabytes of images,
// repositories and restores there, and an exit that skipped the removal
// left them in /tmp after every failed or interrupted run.
func TestFailedRunRemovesWorkDir(t *testing.T) {
	tmp := diskTempDir(t)
	t.Setenv("TMPDIR", tmp)
	fakeDropCaches(t)
	var work string
	addSuites(t, Suite{Name: "failing", Run: func(_ context.Context, env *Env) ([]Table, error) {
		work = env.Work
		if err := os.WriteFile(env.Path("image.raw"), make([]byte, 1<<20), 0o644); err != nil {
			return nil, err
		}
		return nil, errors.New("the suite failed")
	}})
	out := t.TempDir()
	if code := benchMain([]string{"-drpipe", "/bin/true", "-out", out, "-suites", "failing"}); code != 1 {
		t.Fatalf("run with a failed suite: exit %d, want 1", code)
	}
	if work == "" || !strings.HasPrefix(work, tmp) {
		t.Fatalf("the suite ran in %q, want a directory below %s", work, tmp)
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("the failed run left %s in the temporary directory", left[0].Name())
	}
	if reports, _ := os.ReadDir(out); len(reports) != 1 {
		t.Fatalf("the failed run wrote %d reports, want 1", len(reports))
	}
}

// Ctrl-C ends the run after the suite it interrupted: the suites after it
// do not start (each would first generate its data, gigabytes for some,
// before its first command failed on the cancelled context).
func TestInterruptSkipsLaterSuites(t *testing.T) {
	t.Setenv("TMPDIR", diskTempDir(t))
	fakeDropCaches(t)
	later := false
	addSuites(t,
		Suite{Name: "interrupted", Run: func(ctx context.Context, _ *Env) ([]Table, error) {
			if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
				return nil, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(5 * time.Second):
				return nil, errors.New("SIGINT did not cancel the run's context")
			}
		}},
		Suite{Name: "later", Run: func(context.Context, *Env) ([]Table, error) {
			later = true
			return nil, nil
		}})
	out := t.TempDir()
	if code := benchMain([]string{"-drpipe", "/bin/true", "-out", out, "-suites", "interrupted,later"}); code != 1 {
		t.Fatalf("interrupted run: exit %d, want 1", code)
	}
	if later {
		t.Fatal("a suite after the interrupted one ran")
	}
}

// A drpipe binary that does not run (not built yet: -drpipe defaults to
// bin/drpipe) stops the run before any suite: they would generate their
// data first and fail only at drpipe's first command, and the report
// would name no binary.
func TestMissingBinaryStopsTheRun(t *testing.T) {
	t.Setenv("TMPDIR", diskTempDir(t))
	fakeDropCaches(t)
	ran := false
	addSuites(t, Suite{Name: "probe", Run: func(context.Context, *Env) ([]Table, error) {
		ran = true
		return nil, nil
	}})
	missing := filepath.Join(t.TempDir(), "bin", "drpipe")
	if code := benchMain([]string{"-drpipe", missing, "-out", t.TempDir(), "-suites", "probe"}); code != 1 {
		t.Fatalf("run with a missing binary: exit %d, want 1", code)
	}
	if ran {
		t.Fatal("a suite ran without a drpipe binary")
	}
}

// diskTempDir returns a temporary directory for a run's work directory, or
// skips the test where temporary directories are in memory, which a run
// refuses.
func diskTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if fs, err := memoryFS(dir); err != nil || fs != "" {
		t.Skipf("temporary directories are on %s (%v): a run refuses them", fs, err)
	}
	return dir
}

// A work directory on tmpfs (/tmp on many systems) is refused before any
// suite: its files live in the page cache, which no drop evicts, so every
// "cold" step would read RAM.
func TestWorkDirInMemoryRefused(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "drpipe-bench-test-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.RemoveAll(shm)
	if fs, err := memoryFS(shm); err != nil || fs != "tmpfs" {
		t.Skipf("/dev/shm is not tmpfs here (%q, %v)", fs, err)
	}
	fakeDropCaches(t)
	ran := false
	addSuites(t, Suite{Name: "probe", Run: func(context.Context, *Env) ([]Table, error) {
		ran = true
		return nil, nil
	}})
	if code := benchMain([]string{"-drpipe", "/bin/true", "-work", filepath.Join(shm, "work"), "-out", t.TempDir(), "-suites", "probe"}); code != 1 {
		t.Fatalf("run in %s: exit %d, want 1", shm, code)
	}
	if ran {
		t.Fatal("a suite ran in a work directory on tmpfs")
	}
}

// A relative -work names a directory below the current one, and the
// suites get it as an absolute path: borg extract runs in its target
// directory, where a relative repository path names nothing, and restic
// restores below its target at the source's absolute path.
func TestRelativeWorkDirMadeAbsolute(t *testing.T) {
	dir := diskTempDir(t)
	t.Chdir(dir)
	fakeDropCaches(t)
	var work string
	addSuites(t, Suite{Name: "probe", Run: func(_ context.Context, env *Env) ([]Table, error) {
		work = env.Work
		return nil, nil
	}})
	if code := benchMain([]string{"-drpipe", "/bin/true", "-work", "w", "-out", t.TempDir(), "-suites", "probe"}); code != 0 {
		t.Fatalf("run with -work w: exit %d", code)
	}
	if want := filepath.Join(dir, "w", "probe"); work != want {
		t.Fatalf("the suite's work directory is %q, want %q", work, want)
	}
}

// fakeDropCaches points the page-cache drop at a file of the test's own
// (the shared machine's cache is not dropped), for the test's duration.
func fakeDropCaches(t *testing.T) {
	t.Helper()
	saved := dropCachesFile
	t.Cleanup(func() { dropCachesFile = saved })
	dropCachesFile = filepath.Join(t.TempDir(), "drop_caches")
	if err := os.WriteFile(dropCachesFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// addSuites registers extra suites for the test's duration.
func addSuites(t *testing.T, extra ...Suite) {
	t.Helper()
	saved := suites
	t.Cleanup(func() { suites = saved })
	suites = append(slices.Clone(suites), extra...)
}
