package vmdisk

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRawShrunkAfterOpenIsAnError: a raw image (a flat disk, or the raw
// backing file of an overlay being flattened) that shrinks after it was
// opened makes its allocation map fail, naming the file, instead of
// mapping its lost tail as a hole that reads as zeros.
func TestRawShrunkAfterOpenIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 4096)
	for i := range data {
		data[i] = 0xA5
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 1<<20-4096); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLayer(f, p, Raw, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	runs, err := l.Runs()
	if err != nil || len(runs) != 2 {
		t.Fatalf("runs of the whole file: %v, %v", runs, err)
	}
	if err := f.Truncate(8192); err != nil {
		t.Fatal(err)
	}
	if runs, err := l.Runs(); err == nil {
		t.Fatalf("runs of an image shrunk from 1 MiB to 8 KiB: %v, no error", runs)
	}
}
