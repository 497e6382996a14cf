package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
)

// TestTieringPlanRunAndFallbackRestore drives 'tier plan' and 'tier run'
// over a primary, a real DR site ('drpipe site serve' on loopback, planned
// and fed over the site protocol), a real S3 server and a virtual tape
// library, then restores with the hot tier's data deleted (the site serves
// over its read path), then with the site's deleted too, then with the
// bucket's deleted as well: the tape pool serves, read off the cartridges
// through the changer.
func TestTieringPlanRunAndFallbackRestore(t *testing.T) {
	e := newEnv(t)
	srv := startS3(t)
	s3Env(e, srv)
	makeBucket(t, srv, "cold", false)
	repoDir := e.initRepo("--pack-size", "2MiB")
	lib := filepath.Join(e.dir, "library")
	e.ok("tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "12", "--drives", "2")
	e.ok("tape", "label", "--library", lib, "--pool", "vault", "--count", "8")
	tlsDir := filepath.Join(e.dir, "tls")
	e.ok("site", "init", "--dir", tlsDir, "--name", "dr-e2e", "--primary", "hv01")
	drDir := filepath.Join(e.dir, "dr")
	sp := e.startSite(t, tlsDir, drDir)
	bundle := filepath.Join(tlsDir, "clients", "hv01")
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 2}
    - name: dr
      kind: site
      location: %s
      tls_dir: %s
      keep: {last: 3}
    - name: cloud
      kind: s3
      location: s3://cold/repo
      keep: {last: 5}
    - name: vault
      kind: tape
      library: %s
      pool: vault
      keep: {last: 1}
`, repoDir, sp.addr, bundle, lib))
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	makeImage(t, src, 512<<20, 30<<20, 21)
	for i := 0; i < 3; i++ {
		if _, err := sample.Tree(filepath.Join(src, fmt.Sprintf("etc%d", i)), sample.TreeOptions{Files: 30, Bytes: 2 << 20, Seed: uint64(30 + i)}); err != nil {
			t.Fatal(err)
		}
		e.backup(repoDir, src)
	}
	plan := e.ok("--config", cfg, "tier", "plan")
	if strings.Contains(plan, "UNREACHABLE") {
		t.Errorf("tier plan cannot inspect a tier:\n%s", plan)
	}
	for _, want := range []string{"hot (primary)", "forget 1 snapshots", "dr (site)", "copy 3 snapshots", "cloud (s3)", "vault (tape)", "copy 1 snapshots", "per month"} {
		if !strings.Contains(plan, want) {
			t.Errorf("tier plan lacks %q:\n%s", want, plan)
		}
	}
	var rep struct {
		Tiers []struct {
			Name      string `json:"name"`
			Copied    int    `json:"snapshots_copied"`
			Objects   int    `json:"objects_sent"`
			Forgotten int    `json:"snapshots_forgotten"`
			Error     string `json:"error"`
		} `json:"tiers"`
	}
	out := e.ok("--config", cfg, "--json", "tier", "run")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("tier run --json: %v\n%s", err, out)
	}
	byName := map[string]int{}
	for _, tr := range rep.Tiers {
		if tr.Error != "" {
			t.Fatalf("tier %s failed: %s", tr.Name, tr.Error)
		}
		byName[tr.Name] = tr.Copied
	}
	if byName["dr"] != 3 || byName["cloud"] != 3 || byName["vault"] != 1 {
		t.Errorf("copied %v, want dr 3, cloud 3, vault 1", byName)
	}
	if n := len(repoObjects(t, drDir)); n == 0 {
		t.Fatal("tier run left the DR site empty")
	}
	// The snapshots came with their host and time, as replicate sends
	// them: the site's status names the host.
	if st := e.siteStatus(t, "--repo", drDir); len(st.Hosts) != 1 || st.Hosts[0].Host != "hv01" {
		t.Errorf("site status after tier run: %+v, want host hv01", st)
	}
	// The plan now sees what the site holds: nothing left to copy there.
	var pl struct {
		Tiers []struct {
			Name        string            `json:"name"`
			Holds       int               `json:"holds"`
			Copy        []json.RawMessage `json:"copy"`
			Unreachable string            `json:"unreachable"`
		} `json:"tiers"`
	}
	out = e.ok("--config", cfg, "--json", "tier", "plan")
	if err := json.Unmarshal([]byte(out), &pl); err != nil {
		t.Fatalf("tier plan --json: %v\n%s", err, out)
	}
	sawSite := false
	for _, tp := range pl.Tiers {
		if tp.Name == "dr" {
			sawSite = true
			if tp.Unreachable != "" || len(tp.Copy) != 0 || tp.Holds != 3 {
				t.Errorf("plan for the site after the run: unreachable %q, holds %d (want 3), %d snapshots to copy", tp.Unreachable, tp.Holds, len(tp.Copy))
			}
		}
	}
	if !sawSite {
		t.Errorf("tier plan --json has no dr tier:\n%s", out)
	}
	// Idempotent: a second run sends and forgets nothing.
	out = e.ok("--config", cfg, "--json", "tier", "run")
	json.Unmarshal([]byte(out), &rep)
	for _, tr := range rep.Tiers {
		if tr.Copied != 0 || tr.Objects != 0 || tr.Forgotten != 0 {
			t.Errorf("second tier run changed %s: %+v", tr.Name, tr)
		}
	}
	// The hot tier keeps 2 snapshots now; the latest restores from it.
	restoreFrom := func(label string, wantServer string) string {
		t.Helper()
		target := filepath.Join(e.dir, "restore-"+label)
		var res struct {
			Served []struct {
				Tier    string `json:"tier"`
				Objects int64  `json:"objects"`
			} `json:"served_by"`
		}
		start := time.Now()
		r := e.run("--config", cfg, "--json", "restore", "--tiers", "latest", "--target", target)
		if r.code != 0 {
			t.Fatalf("%s: restore --tiers: exit %d\n%s%s", label, r.code, r.stdout, r.stderr)
		}
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("restore --json: %v\n%s", err, r.stdout)
		}
		compareTrees(t, src, restored(target, src))
		served := map[string]int64{}
		for _, s := range res.Served {
			served[s.Tier] = s.Objects
		}
		if served[wantServer] == 0 {
			t.Errorf("%s: restore served by %v, want objects from %s", label, served, wantServer)
		}
		if wantServer != "vault" && (served["vault"] != 0 || strings.Contains(r.stderr, "mounted")) {
			t.Errorf("%s: a tape was read although a faster tier held everything: %v\n%s", label, served, r.stderr)
		}
		t.Logf("%s: served by %v in %v", label, served, time.Since(start).Round(time.Millisecond))
		return r.stderr
	}
	restoreFrom("all-tiers", "hot")
	// Lose the hot tier's data: the DR site serves over its read path.
	os.RemoveAll(filepath.Join(repoDir, "data"))
	restoreFrom("hot-lost", "dr")
	// Browse the latest snapshot through mount --tiers: its data comes from
	// the DR site, and unmounting says so.
	mnt := filepath.Join(e.dir, "mnt-tiers")
	os.MkdirAll(mnt, 0o755)
	stop := startMount(t, e, mnt, "--config", cfg, "--tiers")
	for _, rel := range []string{"etc2", "etc0"} {
		want, err := os.ReadDir(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range want {
			if !de.Type().IsRegular() {
				continue
			}
			p := filepath.Join(src, rel, de.Name())
			orig, _ := os.ReadFile(p)
			got, err := os.ReadFile(filepath.Join(mnt, "hv01", "latest", p))
			if err != nil || !bytes.Equal(got, orig) {
				t.Errorf("mount --tiers: %s: %v (%d bytes, want %d)", p, err, len(got), len(orig))
			}
		}
	}
	if se := stop(); !regexp.MustCompile(`tier dr served [1-9]\d* objects`).MatchString(se) {
		t.Errorf("mount --tiers does not say the DR site served:\n%s", se)
	}
	// Lose the site's data as well: the bucket serves.
	os.RemoveAll(filepath.Join(drDir, "data"))
	restoreFrom("hot-and-site-lost", "cloud")
	// Lose the bucket's data too: the tape pool serves. The output names
	// the tapes mounted and what each served.
	if err := os.RemoveAll(filepath.Join(srv.Dir, "cold", "repo", "data")); err != nil {
		t.Fatal(err)
	}
	stderr := restoreFrom("hot-site-cloud-lost", "vault")
	if !regexp.MustCompile(`tier vault: tape \S+ \(set [0-9a-f]{8}, column \d+\.\d+\) mounted in drive \d`).MatchString(stderr) ||
		!regexp.MustCompile(`tier vault: tape \S+ \(set [0-9a-f]{8}\) served [1-9]\d* objects`).MatchString(stderr) {
		t.Errorf("restore from tape does not say which tapes served:\n%s", stderr)
	}
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "tier vault:") {
			t.Log(l)
		}
	}
}

// TestTieringPruneGraceMalformed: a tiering.prune_grace that is not a
// duration ("7d": Go durations have no days) is a usage error naming the
// key, not a grace of 0, which removes condemned data in the same run.
func TestTieringPruneGraceMalformed(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	for _, grace := range []string{"7d", "-1h"} {
		cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  prune_grace: %s
  tiers:
    - name: hot
      kind: primary
      keep: {last: 1}
`, repoDir, grace))
		res := e.run("--config", cfg, "tier", "plan")
		if res.code != 2 || !strings.Contains(res.stderr, "tiering.prune_grace") || !strings.Contains(res.stderr, grace) {
			t.Errorf("prune_grace %s: exit %d, stderr %q; want exit 2 naming tiering.prune_grace and the value", grace, res.code, res.stderr)
		}
	}
}

// TestTieringRestoreFromTapeAfterAnUnavailableTier: restore --tiers reads
// from a tape pool when the tier listed before it cannot be opened (the
// NAS is gone as well as the primary's data), not only when every other
// tier opened.
func TestTieringRestoreFromTapeAfterAnUnavailableTier(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	lib := filepath.Join(e.dir, "library")
	e.ok("tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "6", "--drives", "1")
	e.ok("tape", "label", "--library", lib, "--pool", "vault", "--count", "3")
	nas := filepath.Join(e.dir, "nas")
	if err := os.Mkdir(nas, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 1}
    - name: nas
      kind: local
      location: %s
      keep: {last: 1}
    - name: vault
      kind: tape
      library: %s
      pool: vault
      keep: {last: 1}
`, repoDir, nas, lib))
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 20, Bytes: 1 << 20, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	e.ok("--config", cfg, "tier", "run")
	// The NAS and the primary's data are lost: only the tape pool holds
	// the snapshot's data.
	if err := os.RemoveAll(nas); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(repoDir, "data")); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(e.dir, "restore")
	r := e.run("--config", cfg, "restore", "--tiers", "latest", "--target", target)
	if r.code != 0 || strings.Contains(r.stderr, "tier vault unavailable") {
		t.Fatalf("restore --tiers with the NAS gone: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	compareTrees(t, src, restored(target, src))
}

// TestTierPlanWritesNothing: tier plan is a dry run, and neither it nor
// tier run creates a local tier's directory: one that does not exist (a
// NAS not mounted) is unreachable, nothing is copied to the file system
// beneath, and the primary keeps its snapshots. Once the directory exists
// (a new tier: mkdir), tier run fills it.
func TestTierPlanWritesNothing(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	nas := filepath.Join(e.dir, "nas", "drpipe")
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 1}
    - name: nas
      kind: local
      location: %s
      keep: {last: 1}
`, repoDir, nas))
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 5, Bytes: 64 << 10, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	e.backup(repoDir, src)
	out := e.ok("--config", cfg, "tier", "plan")
	if _, err := os.Stat(filepath.Join(e.dir, "nas")); err == nil {
		t.Errorf("tier plan created the local tier's directory %s", nas)
	}
	if !strings.Contains(out, "UNREACHABLE") || !strings.Contains(out, "mkdir -p "+nas) {
		t.Errorf("tier plan for a local tier whose directory is missing does not say so:\n%s", out)
	}
	r := e.run("--config", cfg, "tier", "run")
	if r.code == 0 {
		t.Errorf("tier run with a tier's directory missing exits 0\n%s%s", r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "nas")); err == nil {
		t.Errorf("tier run created the local tier's directory %s", nas)
	}
	if snaps := e.snapshotsJSON(repoDir); len(snaps) != 2 {
		t.Errorf("the primary forgot snapshots while a tier was missing: %d left, want 2", len(snaps))
	}
	if err := os.MkdirAll(nas, 0o700); err != nil {
		t.Fatal(err)
	}
	out = e.ok("--config", cfg, "tier", "plan")
	if !strings.Contains(out, "nas (local)") || !strings.Contains(out, "copy 1 snapshots") || strings.Contains(out, "UNREACHABLE") {
		t.Errorf("tier plan for a new, empty local tier does not plan the copy:\n%s", out)
	}
	e.ok("--config", cfg, "tier", "run")
	if out := e.ok("--config", cfg, "tier", "plan"); strings.Contains(out, "copy ") {
		t.Errorf("tier plan after the run still copies:\n%s", out)
	}
}

// TestTierSiteInspectedAfterAPasswordChange: after the primary's password
// changed (a slot added, the old one removed), the DR site still holds
// only the old slots until the next copy brings the new one. The site is
// inspected with the primary's slots, as a directory or bucket tier is,
// not reported unreachable on every run, which would never copy to it
// again and hold back the primary's retention for good.
func TestTierSiteInspectedAfterAPasswordChange(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	tlsDir := filepath.Join(e.dir, "tls")
	e.ok("site", "init", "--dir", tlsDir, "--name", "dr-e2e", "--primary", "hv01")
	drDir := filepath.Join(e.dir, "dr")
	sp := e.startSite(t, tlsDir, drDir)
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 1}
    - name: dr
      kind: site
      location: %s
      tls_dir: %s
      keep: {last: 3}
`, repoDir, sp.addr, filepath.Join(tlsDir, "clients", "hv01")))
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 5, Bytes: 64 << 10, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	e.ok("--config", cfg, "tier", "run")
	// A new password; the old slot goes.
	var keys []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(e.ok("--json", "key", "list", "--repo", repoDir)), &keys); err != nil || len(keys) != 1 {
		t.Fatalf("key list: %v %v", keys, err)
	}
	newPw := writeFile(t, e.dir, "new-password", "a new password for the repository")
	e.ok("key", "add", "--repo", repoDir, "--new-password-file", newPw)
	e.pw = "a new password for the repository"
	e.ok("key", "remove", "--repo", repoDir, keys[0].ID)
	if _, err := sample.Tree(filepath.Join(src, "more"), sample.TreeOptions{Files: 3, Bytes: 32 << 10, Seed: 12}); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	out := e.ok("--config", cfg, "tier", "plan")
	if strings.Contains(out, "UNREACHABLE") || !strings.Contains(out, "copy 1 snapshots") {
		t.Fatalf("tier plan after the password change:\n%s", out)
	}
	e.ok("--config", cfg, "tier", "run")
	if out := e.ok("--config", cfg, "tier", "plan"); strings.Contains(out, "UNREACHABLE") || strings.Contains(out, "copy ") {
		t.Errorf("tier plan after the run:\n%s", out)
	}
}

// TestTierPrimaryLocationMustBeTheRepository: a primary tier whose
// location names another repository than the one tier commands act on
// (--repo) is a usage error, not a plan that names one repository and
// acts on the other; the same directory, written relative, is accepted.
func TestTierPrimaryLocationMustBeTheRepository(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	policyWith := func(loc string) string {
		return writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      location: %s
      keep: {last: 1}
`, repoDir, loc))
	}
	r := e.run("--config", policyWith(filepath.Join(e.dir, "other")), "tier", "plan")
	if r.code != 2 || !strings.Contains(r.stderr, "location") {
		t.Errorf("tier plan with the primary tier elsewhere: exit %d, want 2\n%s", r.code, r.stderr)
	}
	rel, err := filepath.Rel(mustGetwd(t), repoDir)
	if err != nil {
		t.Fatal(err)
	}
	if out := e.ok("--config", policyWith(rel+"/"), "tier", "plan"); !strings.Contains(out, repoDir) {
		t.Errorf("tier plan does not name the repository:\n%s", out)
	}
}

// TestTierLocationsAreTheirOwn: a directory or bucket tier whose location
// is the repository itself (however written), or another tier's, is a
// usage error: a run would forget the repository's snapshots by that
// tier's keep rules, which keep fewer than the primary's.
func TestTierLocationsAreTheirOwn(t *testing.T) {
	for _, c := range []struct{ what, tiers string }{
		{"the repository", `
    - name: nas
      kind: local
      location: REPO/
      keep: {last: 1}`},
		{"another tier's", `
    - name: nas
      kind: local
      location: NAS
      keep: {last: 3}
    - name: usb
      kind: local
      location: NAS/
      keep: {last: 1}`},
	} {
		e := newEnv(t)
		repoDir := e.initRepo()
		src := filepath.Join(e.dir, "src")
		if _, err := sample.Tree(src, sample.TreeOptions{Files: 3, Bytes: 16 << 10, Seed: 21}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			e.backup(repoDir, src)
		}
		nas := filepath.Join(e.dir, "nas")
		if err := os.Mkdir(nas, 0o700); err != nil {
			t.Fatal(err)
		}
		tiersYAML := strings.NewReplacer("REPO", repoDir, "NAS", nas).Replace(c.tiers)
		cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 3}%s
`, repoDir, tiersYAML))
		for _, cmd := range []string{"plan", "run"} {
			if r := e.run("--config", cfg, "tier", cmd); r.code != 2 || !strings.Contains(r.stderr, "location") {
				t.Errorf("tier %s with a tier at %s: exit %d, want 2 naming the location\n%s%s", cmd, c.what, r.code, r.stdout, r.stderr)
			}
		}
		if snaps := e.snapshotsJSON(repoDir); len(snaps) != 3 {
			t.Errorf("tier run with a tier at %s: the repository holds %d snapshots, want 3", c.what, len(snaps))
		}
	}
}

// TestTierLocalFileURL: a directory tier located as file://PATH, as the
// primary may be, is that directory: tier run copies the snapshots into
// it, instead of calling it missing and advising to create "file:".
func TestTierLocalFileURL(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 3, Bytes: 16 << 10, Seed: 22}); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	nas := filepath.Join(e.dir, "nas")
	if err := os.Mkdir(nas, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 3}
    - name: nas
      kind: local
      location: file://%s
      keep: {last: 3}
`, repoDir, nas))
	if r := e.run("--config", cfg, "tier", "run"); r.code != 0 {
		t.Fatalf("tier run to a file:// tier: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if snaps := e.snapshotsJSON(nas); len(snaps) != 1 {
		t.Errorf("the file:// tier holds %d snapshots, want 1", len(snaps))
	}
	// With the primary's data lost, restore --tiers reads it from there.
	if err := os.RemoveAll(filepath.Join(repoDir, "data")); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(e.dir, "restore")
	if r := e.run("--config", cfg, "restore", "--tiers", "latest", "--target", target); r.code != 0 {
		t.Fatalf("restore --tiers with the data on a file:// tier: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	compareTrees(t, src, restored(target, src))
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// TestTierSameLocation: the primary tier's location names the repository
// however it is written: through a symbolic link to its directory, or as
// a bucket prefix spelt with the slashes s3:// locations drop.
func TestTierSameLocation(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	if err := os.Mkdir(repoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(repoDir, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		configured, loc string
		same            bool
	}{
		{repoDir + "/", repoDir, true},
		{"file://" + repoDir, repoDir, true},
		{filepath.Join(dir, "link"), repoDir, true},
		{filepath.Join(dir, "other"), repoDir, false},
		{"s3://bucket/prefix/", "s3://bucket/prefix", true},
		{"s3://bucket//prefix", "s3://bucket/prefix", true},
		{"s3://bucket/", "s3://bucket", true},
		{"s3://bucket/other", "s3://bucket/prefix", false},
		{"s3://other/prefix", "s3://bucket/prefix", false},
	} {
		if got := sameLocation(c.configured, c.loc); got != c.same {
			t.Errorf("sameLocation(%q, %q) = %v, want %v", c.configured, c.loc, got, c.same)
		}
	}
}

// TestTierRunTapeWriteSettings: tier run writes a tape pool's set with the
// tape.record_size, tape.buffer and tape.file_size settings, as tape
// write does, and refuses values tape write refuses: a file size of one
// byte puts every object in a file of its own, and a record size outside
// 256KiB..1MiB fails the tape tier naming the key.
func TestTierRunTapeWriteSettings(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	lib := filepath.Join(e.dir, "library")
	e.ok("tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "8", "--drives", "1")
	e.ok("tape", "label", "--library", lib, "--pool", "vault", "--count", "6")
	nas := filepath.Join(e.dir, "nas")
	if err := os.Mkdir(nas, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 5}
    - name: nas
      kind: local
      location: %s
      keep: {last: 5}
    - name: vault
      kind: tape
      library: %s
      pool: vault
      keep: {last: 1}
`, repoDir, nas, lib))
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 20, Bytes: 1 << 20, Seed: 8}); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)

	// A bad setting stops the run before any tier runs, the NAS too.
	for _, c := range []struct{ env, key string }{{"DRPIPE_TAPE_RECORD_SIZE=4KiB", "tape.record_size"}, {"DRPIPE_TAPE_PARITY=-1", "tape.parity"}} {
		e.extra = []string{c.env}
		if r := e.run("--config", cfg, "tier", "run"); r.code != exitUsage || !strings.Contains(r.stdout+r.stderr, c.key) {
			t.Errorf("tier run with %s: exit %d, want %d naming the key\n%s%s", c.env, r.code, exitUsage, r.stdout, r.stderr)
		}
		if ents, _ := os.ReadDir(nas); len(ents) != 0 {
			t.Fatalf("tier run with %s copied to the NAS before it failed", c.env)
		}
	}
	cat, err := tape.OpenCatalog(filepath.Join(lib, "catalog"))
	if err != nil {
		t.Fatal(err)
	}
	if sets, _ := cat.Sets(); len(sets) != 0 {
		t.Fatalf("tier run with a bad tape.record_size wrote %d sets", len(sets))
	}

	e.extra = []string{"DRPIPE_TAPE_FILE_SIZE=1"}
	e.ok("--config", cfg, "tier", "run")
	if cat, err = tape.OpenCatalog(filepath.Join(lib, "catalog")); err != nil {
		t.Fatal(err)
	}
	sets, err := cat.Sets()
	if err != nil || len(sets) != 1 {
		t.Fatalf("after tier run: %d sets (%v), want 1", len(sets), err)
	}
	for _, st := range sets[0].Tapes {
		tc, err := cat.TapeCatalog(sets[0].ID, st.Column, st.ColumnSeq)
		if err != nil {
			t.Fatal(err)
		}
		files := map[uint32]int{}
		for _, en := range tc.Entries {
			if en.Type == tiers.TypeData {
				files[en.File]++
			}
		}
		for f, n := range files {
			if n > 1 {
				t.Errorf("tape %s: file %d holds %d objects; tape.file_size 1 puts each in a file of its own", st.Barcode, f, n)
			}
		}
	}
}

// TestTierRunGoesOnPastAnUnreachableBucket: a bucket whose endpoint does
// not answer is reported unreachable, as a NAS not mounted is: the other
// tiers still get their copies, plan and run name it, and the run exits
// 1 so that a cron job does not report success.
func TestTierRunGoesOnPastAnUnreachableBucket(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	nas := filepath.Join(e.dir, "nas")
	if err := os.Mkdir(nas, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing answers there now
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
s3:
  endpoint: http://%s
  access_key_id: AK
  secret_access_key: SK
  region: us-east-1
  connect_timeout: 2s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 1}
    - name: nas
      kind: local
      location: %s
      keep: {last: 1}
    - name: cloud
      kind: s3
      location: s3://bucket/drpipe
      keep: {last: 1}
`, repoDir, dead, nas))
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 5, Bytes: 64 << 10, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	if out := e.ok("--config", cfg, "tier", "plan"); !strings.Contains(out, "UNREACHABLE") {
		t.Errorf("plan does not say the bucket is unreachable:\n%s", out)
	}
	r := e.run("--config", cfg, "tier", "run")
	if r.code != exitFailure || !strings.Contains(r.stderr, "tier cloud is unreachable") {
		t.Fatalf("tier run: exit %d, want 1 naming the bucket\n%s%s", r.code, r.stdout, r.stderr)
	}
	snaps := e.ok("snapshots", "--repo", nas, "--json")
	if strings.Count(snaps, `"id"`) != 1 {
		t.Errorf("the NAS holds %s after the run, want the snapshot", snaps)
	}
}
