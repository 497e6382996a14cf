package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// drpipe's timed restore is the only drpipe command between the cache drop
// and the restore: no untimed lookup (snapshots) that would load the
// binary, the keys and the index into the page cache first, a start the
// peers, each timed from its own cold start, do not get.
func TestDrpipeRestoreRunsOnlyTheRestore(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	fake := filepath.Join(dir, "drpipe")
	script := "#!/bin/sh\necho \"$@\" >> " + log + "\n" +
		"case \"$1\" in\n" +
		"backup) echo '{\"snapshot_id\": \"5e1d\"}' ;;\n" +
		"snapshots) echo '[{\"id\": \"5e1d\", \"tags\": [\"day2\"]}]' ;;\n" +
		"esac\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d := drpipeTool(&Env{Work: dir, Drpipe: fake})
	ctx := context.Background()
	if _, err := d.backup(ctx, "day2", dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(log); err != nil {
		t.Fatal(err)
	}
	if _, err := d.restore(ctx, "day2", filepath.Join(dir, "target")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	calls := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(calls) != 1 || !strings.HasPrefix(calls[0], "restore ") || !strings.Contains(calls[0], " 5e1d ") {
		t.Fatalf("drpipe commands for one restore: %q, want only the restore of snapshot 5e1d", calls)
	}
}
