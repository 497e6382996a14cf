package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// snapshotListGate holds a List of snapshots until released: a prune
// stopped there has announced itself and not yet swept.
type snapshotListGate struct {
	tiers.Backend
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *snapshotListGate) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	if t == tiers.TypeSnapshot {
		g.once.Do(func() { close(g.entered) })
		<-g.release
	}
	return g.Backend.List(ctx, t, fn)
}

func sessionObjects(t *testing.T, be tiers.Backend) int {
	t.Helper()
	n := 0
	if err := be.List(context.Background(), tiers.TypeSession, func(tiers.ObjectInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// announceFixture is a destination holding a repository (password
// "pw"), its config and options, and an app given that password in
// DRPIPE_PASSWORD, writing its messages to stderr.
func announceFixture(t *testing.T) (*tierstest.Memory, *repo.Config, repo.Options, *app, *bytes.Buffer) {
	t.Helper()
	ctx := context.Background()
	dst := tierstest.NewMemory()
	opts := repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: &repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	r, err := repo.Init(ctx, dst, repo.InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20}, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	cfg, err := repo.ReadConfig(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	root := &cobra.Command{}
	root.PersistentFlags().String("password-file", "", "")
	a := &app{v: viper.New(), stderr: &stderr, root: root}
	a.v.Set("cache_dir", t.TempDir())
	t.Setenv("DRPIPE_PASSWORD", "pw")
	return dst, cfg, opts, a, &stderr
}

// TestCopyAnnouncesItselfInTheDestination: drpipe copy into a location
// that holds the repository announces itself there when a password is
// given, as tier run does, so a prune of the destination waits for it (a
// copy skips the packs the destination holds, condemned ones too, and
// then writes snapshots naming them); a prune already running there stops
// the copy before it copies anything. Without a password it goes ahead
// unannounced and says so. An empty destination is announced to too.
func TestCopyAnnouncesItselfInTheDestination(t *testing.T) {
	ctx := context.Background()
	dst, cfg, opts, a, stderr := announceFixture(t)

	// A prune of the destination is running: the copy does not start.
	gate := &snapshotListGate{Backend: dst, entered: make(chan struct{}), release: make(chan struct{})}
	pr, err := repo.Open(ctx, gate, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	pruned := make(chan error, 1)
	go func() { _, err := pr.Prune(ctx, repo.PruneOptions{}); pruned <- err }()
	<-gate.entered
	var o tiers.CopyOptions
	if _, err := a.announceCopy(ctx, dst, cfg, dst, &o); !errors.Is(err, repo.ErrPruneRunning) {
		t.Errorf("copy beside a running prune of the destination: %v, want a prune is running", err)
	}
	if n := sessionObjects(t, dst); n != 1 {
		t.Errorf("%d session objects while the prune runs, want only the prune's", n)
	}
	close(gate.release)
	if err := <-pruned; err != nil {
		t.Fatal(err)
	}

	// Announced: a session in the destination while it runs, and the
	// check before the index.
	o = tiers.CopyOptions{}
	end, err := a.announceCopy(ctx, dst, cfg, dst, &o)
	if err != nil {
		t.Fatal(err)
	}
	if o.BeforeIndex == nil || sessionObjects(t, dst) != 1 {
		t.Errorf("announced copy: BeforeIndex set %v, %d session objects in the destination", o.BeforeIndex != nil, sessionObjects(t, dst))
	}
	end()
	if n := sessionObjects(t, dst); n != 0 {
		t.Errorf("%d session objects after the copy ended", n)
	}

	// No password given: unannounced, with a note.
	t.Setenv("DRPIPE_PASSWORD", "")
	o = tiers.CopyOptions{}
	if end, err = a.announceCopy(ctx, dst, cfg, dst, &o); err != nil {
		t.Fatal(err)
	}
	end()
	if o.BeforeIndex != nil || sessionObjects(t, dst) != 0 || !strings.Contains(stderr.String(), "not announced") {
		t.Errorf("copy without a password: BeforeIndex set %v, stderr %q", o.BeforeIndex != nil, stderr.String())
	}

	// An empty destination is announced to as well: the copy makes it
	// a repository long before it is complete.
	o = tiers.CopyOptions{}
	t.Setenv("DRPIPE_PASSWORD", "pw")
	empty := tierstest.NewMemory()
	end, err = a.announceCopy(ctx, dst, cfg, empty, &o)
	if err != nil || o.BeforeIndex == nil || sessionObjects(t, empty) != 1 {
		t.Errorf("copy to an empty destination: %v, BeforeIndex set %v, %d session objects", err, o.BeforeIndex != nil, sessionObjects(t, empty))
	}
	if end != nil {
		end()
	}
	if n := sessionObjects(t, empty); n != 0 {
		t.Errorf("%d session objects in the empty destination after the copy ended", n)
	}

	// A password_file setting that cannot be read: the error says what
	// copy wanted the password for, and how to go on without it.
	t.Setenv("DRPIPE_PASSWORD", "")
	a.v.Set("password_file", filepath.Join(t.TempDir(), "missing"))
	o = tiers.CopyOptions{}
	if _, err := a.announceCopy(ctx, dst, cfg, dst, &o); err == nil || !strings.Contains(err.Error(), "only to announce") {
		t.Errorf("unreadable password file: %v, want it to say that copy uses the password only to announce itself", err)
	}
}

// TestCopyWhoseAnnouncementCannotBeRemovedSaysSo: in a destination that
// keeps every object (object lock), the copy's session object outlives
// the copy; until it goes stale a prune there waits "for the copy", which
// has ended. The copy must say so, not end silently.
func TestCopyWhoseAnnouncementCannotBeRemovedSaysSo(t *testing.T) {
	ctx := context.Background()
	mem, cfg, _, a, stderr := announceFixture(t)
	dst := tierstest.RetainedSessions{Backend: mem}
	var o tiers.CopyOptions
	end, err := a.announceCopy(ctx, mem, cfg, dst, &o)
	if err != nil || o.BeforeIndex == nil {
		t.Fatalf("announce: %v, BeforeIndex set %v", err, o.BeforeIndex != nil)
	}
	end()
	if sessionObjects(t, mem) != 1 {
		t.Fatal("fixture: the session object was removed")
	}
	for _, want := range []string{"sessions/", "locked", "prune"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("the copy ended without saying that its announcement stays (%q): %q", want, stderr.String())
		}
	}
}
