package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSiteStatusQuotesNamesFromPrimaries: the host names and client
// names site status prints are asserted by primaries over the network
// (a site's reply to --to carries them too). One holding a terminal
// control sequence must reach the operator's terminal quoted, as ls
// quotes a file name, not as the sequence.
func TestSiteStatusQuotesNamesFromPrimaries(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := e.backup(repoDir, src)
	state := filepath.Join(repoDir, ".drpipe-site")
	for _, d := range []string{"snapshots", "clients"} {
		if err := os.MkdirAll(filepath.Join(state, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	const host, client = "hv01\x1b]0;owned\x07\x1b[2J", "hv01\x1b[8m"
	write := func(rel string, v any) {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, rel), j, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	write("snapshots/"+b.SnapshotID+".json", map[string]any{"id": b.SnapshotID, "host": host, "time": now, "asserted_by": "client", "client": client, "replicated_at": now})
	write("clients/hv01.json", map[string]any{"name": client, "sessions": 1, "last_session": now})
	out := e.ok("site", "status", "--repo", repoDir)
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("site status printed a control sequence from a primary's names:\n%q", out)
	}
	for _, n := range []string{host, client} {
		if q := printablePath(n); !strings.Contains(out, q) {
			t.Errorf("site status does not show %s:\n%s", q, out)
		}
	}
}
