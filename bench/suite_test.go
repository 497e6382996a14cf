package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A cancelled run kills the measured command, not only GNU time above it
// (which would leave it holding the output pipes until it exits).
func TestRunCancelKillsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Run(ctx, nil, "sleep", "5"); err == nil {
		t.Fatal("cancelled run reported success")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("cancelled run returned after %v, want soon after the 300 ms deadline", el)
	}
}

// Peak RSS is the command's own, not the bench process's.
func TestRunPeakRSSIsTheCommands(t *testing.T) {
	ballast := make([]byte, 256<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	m, err := Run(context.Background(), nil, "true")
	if err != nil {
		t.Fatal(err)
	}
	if m.MaxRSS > 64<<20 {
		t.Errorf("peak RSS of true: %d MiB (the bench process holds %d MiB)", m.MaxRSS>>20, len(ballast)>>20)
	}
	_ = ballast[len(ballast)-1]
}

// A page cache that cannot be dropped (not root, a read-only /proc/sys) is
// an error, which stops the run before any suite: the report says every
// timed step starts cold. Where it can, DropCaches writes 3 to the
// kernel's switch.
func TestDropCachesReportsFailure(t *testing.T) {
	dir := t.TempDir()
	defer func(f string) { dropCachesFile = f }(dropCachesFile)
	dropCachesFile = filepath.Join(dir, "no-proc", "drop_caches")
	if err := DropCaches(); err == nil || !strings.Contains(err.Error(), "as root") {
		t.Fatalf("DropCaches without its switch: %v, want an error saying to run as root", err)
	}
	if _, err := os.Stat(dropCachesFile); err == nil {
		t.Fatalf("DropCaches created %s", dropCachesFile)
	}
	dropCachesFile = filepath.Join(dir, "drop_caches")
	if err := os.WriteFile(dropCachesFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := DropCaches(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dropCachesFile); err != nil || string(b) != "3\n" {
		t.Fatalf("drop_caches got %q (%v), want \"3\\n\"", b, err)
	}
}

// A measured command gets the settings its suite gives it, not those the
// shell running the benchmark exports for drpipe, restic or borg: every
// drpipe config key can come from a DRPIPE_ variable (DRPIPE_COMPRESSION,
// DRPIPE_WORKERS), DRPIPE_CPU_PROFILE profiles every drpipe command, and
// RESTIC_COMPRESSION or BORG_ variables change the peers' settings, all
// while the report states each tool's defaults.
func TestRunDropsToolSettingsFromTheEnvironment(t *testing.T) {
	t.Setenv("DRPIPE_COMPRESSION", "fastest")
	t.Setenv("DRPIPE_CPU_PROFILE", filepath.Join(t.TempDir(), "cpu.prof"))
	t.Setenv("RESTIC_COMPRESSION", "max")
	t.Setenv("BORG_FILES_CACHE_TTL", "1")
	m, err := Run(context.Background(), []string{"DRPIPE_PASSWORD=bench", "RESTIC_CACHE_DIR=/c"}, "env")
	if err != nil {
		t.Fatal(err)
	}
	vars := strings.Split(strings.TrimSpace(m.Stdout), "\n")
	for _, v := range []string{"DRPIPE_COMPRESSION=fastest", "RESTIC_COMPRESSION=max", "BORG_FILES_CACHE_TTL=1"} {
		if slices.Contains(vars, v) {
			t.Errorf("the command inherited %s", v)
		}
	}
	for _, v := range []string{"DRPIPE_PASSWORD=bench", "RESTIC_CACHE_DIR=/c", "PATH=" + os.Getenv("PATH")} {
		if !slices.Contains(vars, v) {
			t.Errorf("the command lacks %s", v)
		}
	}
	for _, v := range vars {
		if strings.HasPrefix(v, "DRPIPE_CPU_PROFILE=") {
			t.Errorf("the command inherited %s", v)
		}
	}
}
