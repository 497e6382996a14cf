package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/tiers"
)

// damagedSite replicates a backup of random data in 4 MiB packs to a DR
// site started with siteArgs, then damages the site's copy: the first
// rebuilt shards of the first pack (by pack ID) and the first lost shards
// of the second. It returns the site, the primary's repository, the
// client bundle and the two pack IDs.
func damagedSite(t *testing.T, e *env, rebuilt, lost int, siteArgs ...string) (sp *siteProc, repoDir, bundle string, a, b string) {
	t.Helper()
	repoDir = e.initRepo("--pack-size", "4MiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	if err := os.WriteFile(filepath.Join(src, "a.bin"), sample.Binary(newRandSource(7), 12<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	tlsDir := filepath.Join(e.dir, "tls")
	e.ok("site", "init", "--dir", tlsDir, "--name", "dr-scrub", "--primary", "hv01")
	// A site that scrubs (siteArgs) starts once the damage is done: one
	// scrubbing between two of the shards damaged below would rebuild
	// the first before the others, and count it.
	sp = e.startSite(t, tlsDir, filepath.Join(e.dir, "dr"))
	bundle = filepath.Join(tlsDir, "clients", "hv01")
	e.replicate(t, repoDir, sp.addr, bundle)
	if len(siteArgs) > 0 {
		sp.stop()
		defer func() { sp = e.startSite(t, tlsDir, sp.dir, siteArgs...) }()
	}

	packs := map[string][]string{}
	paths, _ := filepath.Glob(filepath.Join(sp.dir, "data", "*", "*"))
	for _, p := range paths {
		pid, _, _ := strings.Cut(filepath.Base(p), "-")
		packs[pid] = append(packs[pid], p)
	}
	var ids []string
	for pid := range packs {
		ids = append(ids, pid)
	}
	sort.Strings(ids)
	if len(ids) < 2 {
		t.Fatalf("%d packs at the site, want at least 2", len(ids))
	}
	for i, n := range []int{rebuilt, lost} {
		shards := packs[ids[i]]
		sortByShard(shards)
		for _, p := range shards[:n] {
			if err := corruptAt(p, 200); err != nil {
				t.Fatal(err)
			}
		}
	}
	return sp, repoDir, bundle, ids[0], ids[1]
}

// TestScrubHealsTheDRSite damages a DR site's shards: scrub, with no
// password, rebuilds the pack that lost M shards from parity and removes
// the damaged shards of the pack that lost more, which the next
// replicate then sends again; the site is whole afterwards.
func TestScrubHealsTheDRSite(t *testing.T) {
	e := newEnv(t)
	sp, repoDir, bundle, a, b := damagedSite(t, e, 2, 3)
	drDir := sp.dir

	pw := e.pw
	e.pw = "" // the site holds no password
	scrub := func(wantCode int, args ...string) tiers.ScrubReport {
		t.Helper()
		// The site's shards are seconds old: --min-age tells scrub
		// that no pack is being written.
		r := e.run(append([]string{"scrub", "--json", "--min-age", "1ns", "--repo", drDir}, args...)...)
		var rep tiers.ScrubReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != wantCode {
			t.Fatalf("scrub %v: exit %d (want %d), %v\n%s\n%s", args, r.code, wantCode, err, r.stdout, r.stderr)
		}
		return rep
	}
	rep := scrub(1, "--remove-damaged")
	if rep.PacksRebuilt != 1 || rep.ShardsRebuilt != 2 || rep.PacksLost != 1 || rep.Removed != 3 || rep.Rebuilt[0].Pack.String() != a || rep.Lost[0].Pack.String() != b {
		t.Fatalf("scrub at the site: %+v, want pack %s rebuilt and pack %s lost with 3 shards removed", rep, a[:8], b[:8])
	}
	if r := e.run("scrub", "--min-age", "1ns", "--repo", drDir); r.code != 1 || !strings.Contains(r.stdout, "LOST") || !strings.Contains(r.stderr, "hint:") {
		t.Errorf("scrub with a lost pack: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	e.pw = pw
	if r := e.replicate(t, repoDir, sp.addr, bundle); r.ObjectsSent != 3 {
		t.Errorf("replicate after the scrub sent %d objects, want the 3 removed shards", r.ObjectsSent)
	}
	e.pw = ""
	if rep := scrub(0); !rep.Clean() || rep.PacksRebuilt != 0 {
		t.Errorf("scrub after replicate: %+v", rep)
	}
	e.pw = pw
	e.ok("check", "--repo", drDir, "--read-data")

	// Not a repository: an error, not an empty report.
	if r := e.run("scrub", "--repo", filepath.Join(e.dir, "src")); r.code != 1 || !strings.Contains(r.stderr, "repository") {
		t.Errorf("scrub of a directory that is no repository: exit %d\n%s", r.code, r.stderr)
	}
}

// TestSiteScrubsItself: with --scrub-interval the site scrubs its own
// repository: a pack that lost M shards is rebuilt, one that lost more has
// its damaged shards removed, which the next replicate sends again; the
// metrics and the log say so.
func TestSiteScrubsItself(t *testing.T) {
	e := newEnv(t)
	sp, repoDir, bundle, _, _ := damagedSite(t, e, 1, 3, "--metrics", "127.0.0.1:0", "--scrub-interval", "500ms")
	url := siteMetricsURL(t, sp)
	wait := func(what string, ok func(m map[string]float64) bool) map[string]float64 {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			m := scrapeMetrics(t, url)
			if ok(m) {
				return m
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(sp.log.Name())
				t.Fatalf("%s: metrics %v\n%s", what, m, log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	m := wait("scrub rebuilds one pack and removes the damaged shards of the other", func(m map[string]float64) bool {
		return m["drpipe_site_scrub_shards_rebuilt_total"] >= 1 && m["drpipe_site_scrub_objects_removed_total"] >= 3
	})
	if m["drpipe_site_scrub_shards_rebuilt_total"] != 1 || m["drpipe_site_scrub_objects_removed_total"] != 3 {
		t.Errorf("scrubs rebuilt %v shards and removed %v objects, want 1 and 3", m["drpipe_site_scrub_shards_rebuilt_total"], m["drpipe_site_scrub_objects_removed_total"])
	}
	if r := e.replicate(t, repoDir, sp.addr, bundle); r.ObjectsSent != 3 {
		t.Errorf("replicate after the site's scrub sent %d objects, want the 3 removed shards", r.ObjectsSent)
	}
	sent := float64(time.Now().UnixNano()) / 1e9
	m = wait("a scrub after the replicate", func(m map[string]float64) bool {
		return m["drpipe_site_scrub_last_timestamp_seconds"] > sent+0.1
	})
	if m["drpipe_site_scrub_packs_lost"] != 0 || m["drpipe_site_scrub_objects_removed_total"] != 3 || m["drpipe_site_scrub_failures_total"] != 0 || m["drpipe_site_scrub_clean"] != 1 {
		t.Errorf("after the replicate: metrics %v, want no pack lost, nothing more removed, no failure", m)
	}
	log, _ := os.ReadFile(sp.log.Name())
	for _, want := range []string{"scrub rebuilt lost shards from parity", "pack lost here", "scrub finished"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("site log lacks %q", want)
		}
	}
	e.ok("check", "--repo", sp.dir, "--read-data")
}
