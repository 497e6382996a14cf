package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
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
