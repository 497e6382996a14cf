package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// snapshotsJSON runs 'snapshots --json' and decodes it.
func (e *env) snapshotsJSON(repoDir string, args ...string) []map[string]any {
	e.t.Helper()
	out := e.ok(append([]string{"snapshots", "--repo", repoDir, "--json"}, args...)...)
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		e.t.Fatalf("snapshots --json printed %q: %v", out, err)
	}
	return list
}

// A --tag value is a comma-separated list, as forget reads it: a snapshot
// tagged "nightly,monthly" must be kept by --keep-tag monthly, and an empty
// tag (an unset shell variable) is refused rather than recorded.
func TestBackupTagList(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	stdin := func(data string, args ...string) result {
		return e.runIn([]byte(data), append([]string{"backup", "--repo", repoDir, "--host", "db01", "--stdin", "--stdin-name", "dump.sql"}, args...)...)
	}
	if r := stdin("one", "--tag", "nightly, monthly", "--json"); r.code != 0 {
		t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
	}
	list := e.snapshotsJSON(repoDir)
	if len(list) != 1 {
		t.Fatalf("%d snapshots, want 1", len(list))
	}
	var tags []string
	for _, x := range list[0]["tags"].([]any) {
		tags = append(tags, x.(string))
	}
	if !slices.Equal(tags, []string{"nightly", "monthly"}) {
		t.Errorf("tags %q, want [nightly monthly]", tags)
	}
	if r := stdin("two", "--tag", "nightly"); r.code != 0 {
		t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
	}
	out := e.ok("forget", "--repo", repoDir, "--keep-last", "1", "--keep-tag", "monthly", "--dry-run")
	if !strings.Contains(out, "would forget 0 of 2") {
		t.Errorf("forget --keep-tag monthly would remove the snapshot tagged nightly,monthly:\n%s", out)
	}
	// forget's --tag filter reads a list the same way: both snapshots carry
	// nightly, only one carries nightly and monthly.
	out = e.ok("forget", "--repo", repoDir, "--tag", "monthly, nightly", "--keep-last", "1", "--dry-run")
	if !strings.Contains(out, "would forget 0 of 1") {
		t.Errorf("forget --tag \"monthly, nightly\" does not select the one snapshot with both tags:\n%s", out)
	}
	if r := e.run("forget", "--repo", repoDir, "--tag", "", "--keep-last", "1", "--dry-run"); r.code != 2 || !strings.Contains(r.stderr, "empty tag name") {
		t.Errorf("forget --tag \"\": exit %d, want 2 with 'empty tag name':\n%s", r.code, r.stderr)
	}
	for _, bad := range []string{"", "a,,b", " "} {
		r := stdin("three", "--tag", bad)
		if r.code != 2 || !strings.Contains(r.stderr, "empty tag name") {
			t.Errorf("--tag %q: exit %d, want 2 with 'empty tag name':\n%s", bad, r.code, r.stderr)
		}
	}
	if n := len(e.snapshotsJSON(repoDir)); n != 2 {
		t.Errorf("%d snapshots after refused backups, want 2", n)
	}
}

// --password-file on the command line wins over an exported
// DRPIPE_PASSWORD, as flags win over the environment: init creates the
// repository with the password in the named file, not the exported one.
func TestPasswordFileFlagWinsOverEnv(t *testing.T) {
	e := newEnv(t)
	pwFile := writeFile(t, e.dir, "offsite.pw", "offsite-password\n")
	repoDir := filepath.Join(e.dir, "offsite")
	e.pw = "exported-for-another-repository"
	e.ok("init", "--repo", repoDir, "--password-file", pwFile)
	e.ok("snapshots", "--repo", repoDir, "--password-file", pwFile)
	e.pw = "offsite-password"
	e.ok("snapshots", "--repo", repoDir)
	e.pw = "exported-for-another-repository"
	if r := e.run("snapshots", "--repo", repoDir); r.code != 4 {
		t.Errorf("the exported password opened the repository (exit %d): init used it instead of --password-file", r.code)
	}
	// Without the flag, DRPIPE_PASSWORD still comes before DRPIPE_PASSWORD_FILE.
	e.pw = "offsite-password"
	e.extra = []string{"DRPIPE_PASSWORD_FILE=" + filepath.Join(e.dir, "none")}
	e.ok("snapshots", "--repo", repoDir)
}

// Wrong arguments are usage errors (exit 2), and an unknown subcommand of a
// command group is not answered with its help and exit 0.
func TestArgumentErrorsExit2(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"snapshot", "--repo", repoDir}, "did you mean snapshots?"},
		{[]string{"key", "remve", "--repo", repoDir, "0123"}, "did you mean remove?"},
		{[]string{"key", "bogus"}, `unknown command "bogus" for "drpipe key"`},
		{[]string{"tape", "bogus"}, `unknown command "bogus" for "drpipe tape"`},
		{[]string{"key", "list", "--repo", repoDir, "extra"}, `unknown command "extra"`},
		{[]string{"restore", "--repo", repoDir, "--target", filepath.Join(e.dir, "t")}, "usage: drpipe restore"},
		{[]string{"restore", "--repo", repoDir, "latest", "x", "--target", filepath.Join(e.dir, "t")}, "received 2"},
		{[]string{"key", "remove", "--repo", repoDir}, "usage: drpipe key remove"},
		{[]string{"snapshots", "--repo", repoDir, "extra"}, `unknown command "extra"`},
		{[]string{"restore", "--repo", repoDir, "zzzz", "--target", filepath.Join(e.dir, "t")}, "neither latest nor a hex id prefix"},
		{[]string{"forget", "--repo", repoDir, "latest!"}, "neither latest nor a hex id prefix"},
		{[]string{"restore", "--repo", filepath.Join(e.dir, "none"), "latest", "--target", filepath.Join(e.dir, "t"), "--disk-format", "bogus"}, "unknown disk format"},
	} {
		r := e.run(c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("drpipe %s: exit %d, want 2 with %q\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), r.code, c.want, r.stdout, r.stderr)
		}
	}
	// A well-formed reference that matches nothing is a failure, not a
	// usage error.
	if r := e.run("restore", "--repo", repoDir, "abcdef12", "--target", filepath.Join(e.dir, "t")); r.code != 1 || !strings.Contains(r.stderr, "no snapshot id starts with") {
		t.Errorf("restore of a missing snapshot: exit %d, want 1\n%s", r.code, r.stderr)
	}
	// A group without a subcommand still shows its help.
	if r := e.run("key"); r.code != 0 || !strings.Contains(r.stdout, "Available Commands") {
		t.Errorf("drpipe key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// key add, list and remove print JSON with --json, nothing else.
func TestKeyCommandsJSON(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	keyFile := writeFile(t, e.dir, "second.pw", "second password")
	var added struct {
		ID string `json:"id"`
	}
	out := e.ok("key", "add", "--repo", repoDir, "--new-password-file", keyFile, "--json")
	if err := json.Unmarshal([]byte(out), &added); err != nil || added.ID == "" {
		t.Fatalf("key add --json printed %q: %v", out, err)
	}
	out = e.ok("key", "remove", "--repo", repoDir, added.ID[:8], "--json")
	var removed struct {
		Removed string `json:"removed"`
	}
	if err := json.Unmarshal([]byte(out), &removed); err != nil || removed.Removed != added.ID {
		t.Fatalf("key remove --json printed %q (%v), want {\"removed\": %q}", out, err, added.ID)
	}
	var keys []map[string]any
	out = e.ok("key", "list", "--repo", repoDir, "--json")
	if err := json.Unmarshal([]byte(out), &keys); err != nil || len(keys) != 1 {
		t.Fatalf("key list --json after remove printed %q: %v", out, err)
	}
	// A removed slot lives on in the repository's copies: say so.
	out = e.ok("key", "add", "--repo", repoDir, "--new-password-file", keyFile, "--json")
	if err := json.Unmarshal([]byte(out), &added); err != nil {
		t.Fatal(err)
	}
	res := e.run("key", "remove", "--repo", repoDir, added.ID[:8])
	if res.code != 0 || !strings.Contains(res.stderr, "copies of this repository") || !strings.Contains(res.stderr, "master key is unchanged") {
		t.Errorf("key remove: exit %d, stderr %q; want a note that copies still hold the slot", res.code, res.stderr)
	}
}

// The summary saved in a snapshot (snapshots --json) records the bytes the
// backup added, not 0: all of them but the snapshot object's own.
func TestSnapshotSummaryBytesNew(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := writeFile(t, e.dir, "data.bin", strings.Repeat("drpipe summary test data\n", 40000))
	b := e.backup(repoDir, src)
	list := e.snapshotsJSON(repoDir)
	if len(list) != 1 {
		t.Fatalf("%d snapshots, want 1", len(list))
	}
	sum, _ := list[0]["summary"].(map[string]any)
	stored, _ := sum["bytes_new"].(float64)
	if stored <= 0 || int64(stored) > b.BytesNew || b.BytesNew-int64(stored) > 64<<10 {
		t.Errorf("snapshots --json summary.bytes_new = %v; backup --json said bytes_new %d", sum["bytes_new"], b.BytesNew)
	}
}

// Bad backup and restore arguments are usage errors (exit 2) that change
// nothing; an empty --path does not turn into a restore of everything.
func TestBackupRestoreBadArguments(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	b := e.backup(repoDir, writeFile(t, e.dir, "a.txt", "a"))
	target := filepath.Join(e.dir, "restore")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "--repo", repoDir, "--stdin"}, "--stdin needs --stdin-name"},
		{[]string{"backup", "--repo", repoDir, "--stdin", "--stdin-name", "a/b"}, "plain file name"},
		{[]string{"backup", "--repo", repoDir, "--stdin", "--stdin-name", strings.Repeat("n", 256)}, "at most 255 bytes"},
		{[]string{"backup", "--repo", repoDir, "--stdin-name", "x", filepath.Join(e.dir, "a.txt")}, "only used with --stdin"},
		{[]string{"backup", "--repo", repoDir, ""}, "empty PATH"},
		{[]string{"restore", "--repo", repoDir, b.SnapshotID, "--target", target, "--path", ""}, "--path \"\" is empty"},
	} {
		r := e.runIn([]byte("data"), c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("drpipe %q: exit %d, want 2 with %q\nstdout: %s\nstderr: %s", c.args, r.code, c.want, r.stdout, r.stderr)
		}
	}
	if n := len(e.snapshotsJSON(repoDir)); n != 1 {
		t.Errorf("%d snapshots, want 1: a refused backup wrote one", n)
	}
	if _, err := os.Stat(target); err == nil {
		t.Errorf("restore with an empty --path wrote %s", target)
	}
}

// latest is not silently an older snapshot when the newest cannot be read:
// restore refuses and names the newest readable one, which works by id.
func TestLatestWithUnreadableSnapshot(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	old := e.backup(repoDir, writeFile(t, e.dir, "a.txt", "old"))
	newest := e.backup(repoDir, writeFile(t, e.dir, "a.txt", "new"))
	obj := filepath.Join(repoDir, "snapshots", newest.SnapshotID)
	fi, err := os.Stat(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := corruptAt(obj, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	r := e.run("restore", "--repo", repoDir, "latest", "--target", filepath.Join(e.dir, "t1"))
	if r.code == 0 || !strings.Contains(r.stderr, old.SnapshotID[:8]) {
		t.Errorf("restore latest with the newest snapshot damaged: exit %d, want an error naming %s\nstdout: %s\nstderr: %s", r.code, old.SnapshotID[:8], r.stdout, r.stderr)
	}
	e.ok("restore", "--repo", repoDir, old.SnapshotID[:8], "--target", filepath.Join(e.dir, "t2"))
}

// TestLocalDir: plain paths and file:// name local directories; other
// schemes do not. A file:// repository opens like its path.
func TestLocalDir(t *testing.T) {
	for _, c := range []struct {
		loc, dir string
		ok       bool
	}{{"/srv/r", "/srv/r", true}, {"rel/r", "rel/r", true}, {"file:///srv/r", "/srv/r", true}, {"s3://b/p", "", false}, {"ftp://x", "", false}} {
		if dir, ok := localDir(c.loc); dir != c.dir || ok != c.ok {
			t.Errorf("localDir(%q) = %q, %v; want %q, %v", c.loc, dir, ok, c.dir, c.ok)
		}
	}
	e := newEnv(t)
	repoDir := e.initRepo()
	e.ok("snapshots", "--repo", "file://"+repoDir)
}

// A snapshot that cannot be read stops forget's keep rules, so it must be
// possible to forget it by id; the refusal says so. Nothing else goes.
func TestForgetUnreadableSnapshotByID(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := writeFile(t, e.dir, "a", "hello")
	good := e.backup(repoDir, src).SnapshotID
	bad := e.backup(repoDir, src).SnapshotID
	if err := corruptAt(filepath.Join(repoDir, "snapshots", bad), 40); err != nil {
		t.Fatal(err)
	}
	r := e.run("forget", "--repo", repoDir, "--keep-last", "1")
	if r.code == 0 || !strings.Contains(r.stderr, "drpipe forget "+bad[:8]) {
		t.Errorf("forget --keep-last 1 beside an unreadable snapshot: exit %d, want an error naming 'drpipe forget %s':\n%s", r.code, bad[:8], r.stderr)
	}
	r = e.run("forget", "--repo", repoDir, bad[:8])
	if r.code != 0 {
		t.Fatalf("forget %s (unreadable): exit %d:\n%s%s", bad[:8], r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "cannot be read") {
		t.Errorf("forget of an unreadable snapshot does not say it could not read it:\n%s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(repoDir, "snapshots", bad)); !os.IsNotExist(err) {
		t.Errorf("unreadable snapshot %s still there after forget (%v)", bad[:8], err)
	}
	list := e.snapshotsJSON(repoDir)
	if len(list) != 1 || list[0]["id"] != good {
		t.Errorf("snapshots after forgetting %s: %v, want only %s", bad[:8], list, good)
	}
}

// forget counts only the snapshots it did remove: one that stays (here
// immutable) is not among those it says it forgot.
func TestForgetCountsOnlyRemovedSnapshots(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := writeFile(t, e.dir, "a", "hello")
	stuck := e.backup(repoDir, src).SnapshotID
	e.backup(repoDir, src)
	e.backup(repoDir, src)
	p := filepath.Join(repoDir, "snapshots", stuck)
	if out, err := exec.Command("chattr", "+i", p).CombinedOutput(); err != nil {
		t.Skipf("cannot make a file immutable here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", p).Run() })
	r := e.run("forget", "--repo", repoDir, "--keep-last", "1")
	if r.code != 1 || !strings.Contains(r.stderr, stuck[:8]) {
		t.Errorf("forget with an immutable snapshot: exit %d, want 1 naming %s:\n%s", r.code, stuck[:8], r.stderr)
	}
	if !strings.Contains(r.stdout, "forgot 1 of 3 snapshots") {
		t.Errorf("forget removed 1 of 3 snapshots but says:\n%s", r.stdout)
	}
}

// forget --prune --dry-run shows what the prune would free once the
// snapshots are forgotten, and still changes nothing.
func TestForgetPruneDryRunCountsForgottenSnapshots(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	rnd := newRandSource(7)
	data := func() string {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return string(b)
	}
	src := writeFile(t, e.dir, "f", data())
	e.backup(repoDir, src)
	writeFile(t, e.dir, "f", data())
	e.backup(repoDir, src)
	out := e.ok("forget", "--repo", repoDir, "--keep-last", "1", "--prune", "--dry-run", "--json")
	var res struct {
		Prune struct {
			Snapshots   int `json:"snapshots"`
			UnusedPacks int `json:"unused_packs"`
		} `json:"prune"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("forget --json printed %q: %v", out, err)
	}
	if res.Prune.Snapshots != 1 || res.Prune.UnusedPacks == 0 {
		t.Errorf("forget --keep-last 1 --prune --dry-run: prune counts %d snapshots and %d unused packs, want 1 and the first backup's packs:\n%s", res.Prune.Snapshots, res.Prune.UnusedPacks, out)
	}
	if n := len(e.snapshotsJSON(repoDir)); n != 2 {
		t.Errorf("%d snapshots after a dry run, want 2", n)
	}
}

// TestForgetWarnsOfSnapshotsFromTheFuture: a snapshot dated ahead of the
// clock (its host's clock was wrong) is taken as the newest by the keep
// rules; forget says so, naming it.
func TestForgetWarnsOfSnapshotsFromTheFuture(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := writeFile(t, e.dir, "a", "hello")
	e.backup(repoDir, src)
	ctx := context.Background()
	be, err := tiers.NewLocal(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ahead := time.Now().Add(72 * time.Hour)
	r, err := repo.Open(ctx, be, repo.Options{Password: []byte(e.pw), CacheDir: t.TempDir(), Now: func() time.Time { return ahead }})
	if err != nil {
		t.Fatal(err)
	}
	res, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "skewed", Paths: []string{src}})
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	out := e.run("forget", "--repo", repoDir, "--keep-last", "1", "--dry-run")
	if out.code != 0 {
		t.Fatalf("forget: exit %d\n%s", out.code, out.stderr)
	}
	if want := "snapshot " + res.Snapshot.ID().Short() + " of host skewed is dated"; !strings.Contains(out.stderr, want) || !strings.Contains(out.stderr, "ahead of this host's clock") {
		t.Errorf("forget does not warn of the snapshot dated ahead (want %q):\n%s", want, out.stderr)
	}
	if strings.Count(out.stderr, "ahead of this host's clock") != 1 {
		t.Errorf("forget warns of more than the one snapshot dated ahead:\n%s", out.stderr)
	}
}

// TestForgetByIDArguments: an id named twice (whole and as a prefix) is
// forgotten once, and --host or --tag beside ids, which they would not
// filter, is a usage error.
func TestForgetByIDArguments(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := writeFile(t, e.dir, "a", "hello")
	first := e.backup(repoDir, src).SnapshotID
	e.backup(repoDir, src)
	if r := e.run("forget", "--repo", repoDir, "--host", "other", first); r.code != 2 || !strings.Contains(r.stderr, "--host and --tag") {
		t.Errorf("forget ID --host: exit %d, want a usage error (2):\n%s", r.code, r.stderr)
	}
	out := e.ok("forget", "--json", "--repo", repoDir, first, first[:8])
	var res struct {
		Decisions []struct{ ID string } `json:"decisions"`
		Forgotten int                   `json:"forgotten"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Forgotten != 1 || len(res.Decisions) != 1 {
		t.Errorf("forget of one snapshot named twice: %d forgotten, %d decisions; want 1 and 1:\n%s", res.Forgotten, len(res.Decisions), out)
	}
}

// TestForgetKeepsSomethingOfEveryGroup: keep rules that would leave a
// group with no snapshot (a --keep-tag no snapshot of a host carries, a
// typo) are refused before anything is forgotten, as restic refuses them;
// such a group is removed only by naming its snapshots.
func TestForgetKeepsSomethingOfEveryGroup(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	stdin := func(host, tag, data string) {
		r := e.runIn([]byte(data), "backup", "--repo", repoDir, "--host", host, "--tag", tag, "--stdin", "--stdin-name", "dump.sql")
		if r.code != 0 {
			t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
		}
	}
	stdin("hv01", "monthly", "one")
	stdin("db01", "nightly", "two")
	stdin("db01", "nightly", "three")
	for _, dry := range []bool{true, false} {
		args := []string{"forget", "--repo", repoDir, "--keep-tag", "monthly"}
		if dry {
			args = append(args, "--dry-run")
		}
		r := e.run(args...)
		if r.code != 1 || !strings.Contains(r.stderr, "host=db01") || !strings.Contains(r.stderr, "refusing to forget all 2") {
			t.Errorf("%s: exit %d, want 1 naming the group of db01 it would empty:\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		if n := len(e.snapshotsJSON(repoDir)); n != 3 {
			t.Fatalf("%s: %d snapshots left, want all 3", strings.Join(args, " "), n)
		}
	}
	// A rule that keeps something of every group runs as before.
	out := e.ok("forget", "--repo", repoDir, "--keep-tag", "monthly", "--keep-tag", "nightly", "--dry-run")
	if !strings.Contains(out, "would forget 0 of 3") {
		t.Errorf("forget keeping every tagged snapshot:\n%s", out)
	}
}

// TestBackupConfigTagsAdded: backup.tags are added to every backup, in
// addition to --tag (configs/drpipe.yaml, README), not only to backups
// given no --tag.
func TestBackupConfigTagsAdded(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	cfg := writeFile(t, e.dir, "drpipe.yaml", "backup:\n  tags: [prod]\n")
	r := e.runIn([]byte("x"), "--config", cfg, "backup", "--repo", repoDir, "--host", "db01", "--stdin", "--stdin-name", "x", "--tag", "nightly")
	if r.code != 0 {
		t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
	}
	list := e.snapshotsJSON(repoDir)
	if len(list) != 1 {
		t.Fatalf("%d snapshots, want 1", len(list))
	}
	var tags []string
	for _, x := range list[0]["tags"].([]any) {
		tags = append(tags, x.(string))
	}
	if !slices.Equal(tags, []string{"nightly", "prod"}) {
		t.Errorf("backup --tag nightly with backup.tags [prod]: tags %q, want [nightly prod]", tags)
	}
}

// TestForgetPruneBadGraceChangesNothing: forget --prune with a --grace
// that is not a duration is a usage error before any snapshot is
// forgotten, not after.
func TestForgetPruneBadGraceChangesNothing(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := writeFile(t, e.dir, "a", "hello")
	e.backup(repoDir, src)
	e.backup(repoDir, src)
	r := e.run("forget", "--repo", repoDir, "--keep-last", "1", "--prune", "--grace", "7d")
	if r.code != 2 || !strings.Contains(r.stderr, "--grace") {
		t.Errorf("forget --prune --grace 7d: exit %d, want 2 naming --grace:\n%s", r.code, r.stderr)
	}
	if n := len(e.snapshotsJSON(repoDir)); n != 2 {
		t.Errorf("%d snapshots after a refused forget, want 2", n)
	}
}

// TestJSONOutputEdges: forget --json on a selection with no snapshot
// gives an empty list, not null, so do the tags of an untagged snapshot,
// and demo, which has no JSON output,
// refuses --json rather than print text where JSON is promised.
func TestJSONOutputEdges(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	out := e.ok("forget", "--json", "--repo", repoDir, "--keep-last", "1", "--host", "nobody", "--dry-run")
	if !strings.Contains(out, `"decisions": []`) {
		t.Errorf("forget --json with nothing selected: want an empty decisions list:\n%s", out)
	}
	// A snapshot without tags has an empty tag list, as in snapshots
	// --json, not null (which a script iterating the tags fails on).
	e.backup(repoDir, writeFile(t, e.dir, "a", "hello"))
	var fj struct {
		Decisions []struct {
			Tags json.RawMessage `json:"tags"`
		} `json:"decisions"`
	}
	if err := json.Unmarshal([]byte(e.ok("forget", "--json", "--repo", repoDir, "--keep-last", "1", "--dry-run")), &fj); err != nil || len(fj.Decisions) != 1 {
		t.Fatalf("forget --json: %v, %d decisions", err, len(fj.Decisions))
	}
	if got := string(fj.Decisions[0].Tags); got != "[]" {
		t.Errorf("forget --json: tags of an untagged snapshot are %s, want []", got)
	}
	if r := e.run("demo", "--json"); r.code != 2 || r.stdout != "" {
		t.Errorf("demo --json: exit %d, stdout %q; want a usage error and nothing on stdout", r.code, r.stdout)
	}
}

// TestCopyDryRunToNewDirectory: a dry run of a first copy into a directory
// that does not exist yet plans it as the empty destination the copy
// creates, and creates nothing; the copy then sends what it planned.
func TestCopyDryRunToNewDirectory(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	e.backup(repoDir, writeFile(t, e.dir, "a", "hello"))
	to := filepath.Join(e.dir, "offsite", "hv01")
	var plan struct {
		DryRun      bool   `json:"dry_run"`
		Destination string `json:"destination"`
		Objects     int    `json:"objects"`
		Present     int    `json:"present"`
		ToCopy      int    `json:"to_copy"`
		Copied      int    `json:"copied"`
	}
	out := e.ok("copy", "--json", "--dry-run", "--repo", repoDir, "--to", to)
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("copy --dry-run --json: %v\n%s", err, out)
	}
	if !plan.DryRun || plan.Destination != to || plan.Objects == 0 || plan.ToCopy != plan.Objects || plan.Present != 0 || plan.Copied != 0 {
		t.Errorf("copy --dry-run to a new directory: %+v; want every object to copy", plan)
	}
	if out := e.ok("copy", "--dry-run", "--repo", repoDir, "--to", to); !strings.Contains(out, fmt.Sprintf("would copy %d of %d objects", plan.Objects, plan.Objects)) {
		t.Errorf("copy --dry-run to a new directory:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "offsite")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("copy --dry-run created the destination's parent: %v", err)
	}
	out = e.ok("copy", "--json", "--repo", repoDir, "--to", to)
	var done struct {
		Copied int `json:"copied"`
	}
	if err := json.Unmarshal([]byte(out), &done); err != nil || done.Copied != plan.ToCopy {
		t.Errorf("copy after the dry run: %v, copied %d, the dry run planned %d\n%s", err, done.Copied, plan.ToCopy, out)
	}
}

// TestStatsDamagedSnapshot: one damaged snapshot does not hide the
// repository's sizes: stats prints them for the snapshots it could read,
// says what it left out, and exits 1.
func TestStatsDamagedSnapshot(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), []byte(strings.Repeat("drpipe", 100000)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	bad := e.backup(repoDir, src)
	if err := os.WriteFile(filepath.Join(repoDir, "snapshots", bad.SnapshotID), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.run("stats", "--repo", repoDir, "--json")
	if r.code != 1 {
		t.Fatalf("stats with a damaged snapshot: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var st struct {
		Snapshots    int   `json:"snapshots"`
		LogicalBytes int64 `json:"logical_bytes"`
		StoredBytes  int64 `json:"stored_bytes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("stats --json with a damaged snapshot printed %q: %v (stderr %s)", r.stdout, err, r.stderr)
	}
	if st.Snapshots != 1 || st.LogicalBytes != 600000 || st.StoredBytes <= 0 {
		t.Errorf("stats = %+v, want the readable snapshot's 600000 logical bytes and the stored bytes", st)
	}
	if !strings.Contains(r.stderr, bad.SnapshotID[:8]) || !strings.Contains(r.stderr, "drpipe check") {
		t.Errorf("stderr does not name the damaged snapshot and what to do: %s", r.stderr)
	}
}

// TestForgetPrunesBesideAnUndeletableSnapshot: a snapshot that cannot be
// removed (here immutable; in a bucket, under object lock) fails forget
// with exit 1, but --prune still frees the data of the snapshots that
// were forgotten: prune only ever removes what no remaining snapshot
// uses. Before, one such snapshot kept every forget --prune from
// pruning, without saying so.
func TestForgetPrunesBesideAnUndeletableSnapshot(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	for _, data := range []string{"one", "two", "three"} {
		if r := e.runIn([]byte(data), "backup", "--repo", repoDir, "--host", "db01", "--stdin", "--stdin-name", "dump.sql"); r.code != 0 {
			t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
		}
	}
	var plan struct {
		Decisions []struct {
			ID   string `json:"id"`
			Keep bool   `json:"keep"`
		} `json:"decisions"`
	}
	if err := json.Unmarshal([]byte(e.ok("forget", "--repo", repoDir, "--keep-last", "1", "--dry-run", "--json")), &plan); err != nil {
		t.Fatal(err)
	}
	oldID := ""
	for _, d := range plan.Decisions {
		if !d.Keep {
			oldID = d.ID
		}
	}
	if oldID == "" {
		t.Fatalf("forget --keep-last 1 would remove none of 3 snapshots: %+v", plan)
	}
	makeImmutable(t, filepath.Join(repoDir, "snapshots", oldID))
	r := e.run("forget", "--repo", repoDir, "--keep-last", "1", "--prune", "--grace", "0s")
	if r.code != 1 || !strings.Contains(r.stderr, oldID[:8]) {
		t.Errorf("forget with an undeletable snapshot: exit %d, want 1 naming %s:\n%s%s", r.code, oldID[:8], r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "prune") {
		t.Errorf("forget --prune did not prune beside the snapshot it could not remove:\n%s%s", r.stdout, r.stderr)
	}
	if n := len(e.snapshotsJSON(repoDir)); n != 2 {
		t.Errorf("%d snapshots left, want 2 (the newest, and the undeletable one)", n)
	}
	e.ok("check", "--repo", repoDir)
}

// TestForgetJSONNamesUndeletableSnapshot: forget --json names the
// snapshots it could not remove, as the text output counts them.
func TestForgetJSONNamesUndeletableSnapshot(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	for _, data := range []string{"one", "two"} {
		if r := e.runIn([]byte(data), "backup", "--repo", repoDir, "--host", "db01", "--stdin", "--stdin-name", "dump.sql"); r.code != 0 {
			t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
		}
	}
	snaps := e.snapshotsJSON(repoDir)
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots, want 2", len(snaps))
	}
	var ids []string
	for _, s := range snaps {
		ids = append(ids, s["id"].(string))
	}
	makeImmutable(t, filepath.Join(repoDir, "snapshots", ids[0]))
	r := e.run("forget", "--repo", repoDir, "--json", ids[0], ids[1])
	var out struct {
		Forgotten int      `json:"forgotten"`
		Failed    []string `json:"failed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("forget --json: %v: %s", err, r.stdout)
	}
	if r.code != 1 || out.Forgotten != 1 || len(out.Failed) != 1 || out.Failed[0] != ids[0] {
		t.Errorf("forget --json of an undeletable and a deletable snapshot: exit %d, %+v; want exit 1, forgotten 1, failed [%s]", r.code, out, ids[0])
	}
}

// makeImmutable sets the immutable flag on path (chattr +i, from
// e2fsprogs, which make deps installs) and clears it when the test ends,
// so that removing the file fails as under S3 object lock. Only root may
// set the flag, and only some file systems (ext4, xfs, btrfs) keep it:
// elsewhere the test is skipped, naming which.
func makeImmutable(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("only root may make a file immutable (chattr +i)")
	}
	if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v: %s (the test directory's file system keeps no immutable flag)", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", path).Run() })
}

// openTTY opens the terminal side of a new pseudo-terminal, closed when
// the test ends.
func openTTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pseudo-terminal number: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

// backup --stdin with a terminal as standard input (the pipe forgotten)
// is a usage error at once, instead of a backup waiting for ever for what
// is typed, to store it as the dump.
func TestBackupStdinTerminal(t *testing.T) {
	tty := openTTY(t)
	e := newEnv(t)
	repoDir := e.initRepo()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := e.cmd(ctx, "backup", "--repo", repoDir, "--host", "db01", "--stdin", "--stdin-name", "dump.sql")
	var se strings.Builder
	c.Stdin, c.Stderr = tty, &se
	err := c.Run()
	var ee *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(se.String(), "terminal") {
		t.Errorf("backup --stdin from a terminal: %v (timed out: %v), stderr %q; want exit 2 saying stdin is a terminal", err, ctx.Err() != nil, se.String())
	}
	if n := len(e.snapshotsJSON(repoDir)); n != 0 {
		t.Errorf("%d snapshots, want none", n)
	}
}
