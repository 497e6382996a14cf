package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestDemoIgnoresOperatorSettings: the commands the demo runs work on its
// own directory with the built-in defaults, whatever DRPIPE_* settings the
// operator's shell exports: a DRPIPE_CONFIG the demo cannot read does not
// fail them, and a DRPIPE_TAPE_CATALOG naming the real tape catalog does
// not get the demo's cartridges and sets recorded in it.
func TestDemoIgnoresOperatorSettings(t *testing.T) {
	dir := t.TempDir()
	catalog := filepath.Join(dir, "real-catalog")
	t.Setenv("DRPIPE_TAPE_CATALOG", catalog)
	t.Setenv("DRPIPE_CONFIG", filepath.Join(dir, "etc", "drpipe.yaml"))
	d := &demo{a: &app{stdout: io.Discard}, dir: filepath.Join(dir, "demo")}
	c, err := d.cli("demo-password")
	if err != nil {
		t.Fatal(err)
	}
	c.bin = drpipeBin
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lib := filepath.Join(d.dir, "tape-library")
	for _, args := range [][]string{
		{"tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "4", "--drives", "1"},
		{"tape", "label", "--library", lib, "--pool", "offsite", "--count", "1"},
	} {
		if out, err := c.run(ctx, args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	if _, err := os.Stat(catalog); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the demo's tape commands used DRPIPE_TAPE_CATALOG %s (stat: %v); want their own catalog in the library", catalog, err)
	}
}

// TestDemoInterruptedLeavesNothing: a demo interrupted (SIGINT to drpipe
// alone, as kill -INT or a supervisor sends it) while it restores from
// tape leaves nothing in the temporary directory: neither its own work
// directory nor the repository that 'tape restore' reads from the tapes.
func TestDemoInterruptedLeavesNothing(t *testing.T) {
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, drpipeBin, "demo", "--image-size", "256MiB")
	c.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	restoring := func() bool {
		for _, g := range []string{"drpipe-tape-restore-*", filepath.Join("drpipe-demo-*", "tape-restore-work", "*")} {
			if m, _ := filepath.Glob(filepath.Join(tmp, g)); len(m) > 0 {
				return true
			}
		}
		return false
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	for !restoring() {
		select {
		case err := <-done:
			t.Fatalf("the demo ended (%v) before its tape restore was seen:\n%s", err, out.String())
		case <-time.After(2 * time.Millisecond):
		}
	}
	if err := c.Process.Signal(os.Interrupt); err != nil {
		t.Fatalf("interrupt: %v\n%s", err, out.String())
	}
	if err := <-done; err == nil {
		t.Fatalf("the demo finished although interrupted:\n%s", out.String())
	}
	left, _ := os.ReadDir(tmp)
	for _, l := range left {
		t.Errorf("the interrupted demo left %s in the temporary directory", l.Name())
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out.String())
	}
}
