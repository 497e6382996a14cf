package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
)

// TestAbortedSetKeepsNoGFSLevel: the first write of a month (here
// the pool's first ever: monthly) stops after reaching a tape, for want
// of a second one. The operator labels more tapes and runs it again the
// same night: that run must still be the month's monthly set. The aborted
// set gives its tapes back to the pool, so counting it as the month's
// monthly would leave the month with no set kept beyond a few days.
func TestAbortedSetKeepsNoGFSLevel(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "1+1", "--pack-size", "1MiB")
	src := filepath.Join(e.dir, "src")
	sample.Tree(src, sample.TreeOptions{Files: 8, Bytes: 2 << 20, Seed: 9})
	cfg := filepath.Join(e.dir, "drpipe.yaml")
	os.WriteFile(cfg, []byte("tape:\n  parity: 0\n  record_size: 256KiB\n  pools:\n    gfs:\n      daily: 3\n      weekly: 1\n      monthly: 1\n      yearly: 0\n      weekly_on: friday\n"), 0o644)
	lib := filepath.Join(e.dir, "vtl")
	e.extra = []string{"DRPIPE_TAPE_NOW=2026-10-01T22:00:00Z"}
	e.ok("--config", cfg, "tape", "library", "init", "--library", lib, "--generation", "LTO-8", "--slots", "8", "--drives", "1", "--mailslots", "1", "--capacity", "1MiB")
	e.backup(repoDir, src)
	e.ok("--config", cfg, "tape", "label", "--library", lib, "--pool", "gfs", "--count", "1")
	r := e.run("--config", cfg, "tape", "write", "--json", "--library", lib, "--repo", repoDir, "--pool", "gfs")
	var first struct {
		Level    string `json:"level"`
		Complete bool   `json:"complete"`
		Tapes    []any  `json:"tapes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &first); err != nil {
		t.Fatalf("tape write --json printed %q (stderr %s): %v", r.stdout, r.stderr, err)
	}
	if r.code == 0 || first.Complete || len(first.Tapes) == 0 || first.Level != "monthly" {
		t.Fatalf("first write: exit %d, %+v; want a monthly set aborted after reaching a tape\n%s", r.code, first, r.stderr)
	}
	e.ok("--config", cfg, "tape", "label", "--library", lib, "--pool", "gfs", "--count", "4")
	w := e.ok("--config", cfg, "tape", "write", "--json", "--library", lib, "--repo", repoDir, "--pool", "gfs")
	var second struct {
		Level    string `json:"level"`
		Complete bool   `json:"complete"`
	}
	if err := json.Unmarshal([]byte(w), &second); err != nil {
		t.Fatal(err)
	}
	if !second.Complete || second.Level != "monthly" {
		t.Errorf("rerun after the aborted monthly: level %q complete %v, want the month's monthly set", second.Level, second.Complete)
	}
}
