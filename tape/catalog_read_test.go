package tape

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// endless is a reader that never ends: a tape file whose filemark never
// comes.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

// TestCatalogFileReadIsBounded: a catalog file longer than any drpipe
// writes (a damaged tape, another program's data) is refused once it
// passes the bound, not read whole into memory first.
func TestCatalogFileReadIsBounded(t *testing.T) {
	if _, err := readCatalogBytes(endless{}, 1<<20); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("endless catalog file: %v, want ErrCorrupt", err)
	}
	b, err := readCatalogBytes(bytes.NewReader(make([]byte, 1<<20)), 1<<20)
	if err != nil || len(b) != 1<<20 {
		t.Fatalf("catalog file of exactly the bound: %d bytes, %v", len(b), err)
	}
}

// TestCatalogDatabaseReadsAreBounded: the files of the catalog database
// are read up to a bound too (a /dev/zero or a huge file put there).
func TestCatalogDatabaseReadsAreBounded(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "set.json")
	if err := os.WriteFile(p, bytes.Repeat([]byte(" "), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readBounded(p, 1024); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("4 KiB file read with a 1 KiB bound: %v, want ErrCorrupt", err)
	}
	if _, err := readBounded("/dev/zero", 1<<20); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("/dev/zero: %v, want ErrCorrupt", err)
	}
	if _, err := readBounded(filepath.Join(dir, "none"), 1024); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrNotExist", err)
	}
}
