package tape

import (
	"bytes"
	"errors"
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
