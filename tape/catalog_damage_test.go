package tape_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/tape"
)

// TestCatalogCheckOfDamagedRecords: records of the catalog database that
// are valid JSON but not what drpipe writes (a set whose id is not its
// directory's, a tape or media record whose volume or set id is not 32
// hex digits: edited by hand, or from another program) are reported as
// damaged files to rebuild, by 'tape catalog check' first of all, instead
// of crashing the commands that print those ids.
func TestCatalogCheckOfDamagedRecords(t *testing.T) {
	const set = "ffeeddccbbaa99887766554433221100"
	const vol = "00112233445566778899aabbccddeeff"
	for _, c := range []struct {
		name, file, body string
	}{
		{"set id", "sets/" + set + "/set.json", `{"id":"ffee","columns":1,"per_tape":1,"tapes":[{"barcode":"DRP001L9","uuid":"` + vol + `"}]}`},
		{"tape uuid", "sets/" + set + "/set.json", `{"id":"` + set + `","columns":1,"per_tape":1,"tapes":[{"barcode":"DRP001L9","uuid":"0011"}]}`},
		{"media uuid", "media/DRP001L9.json", `{"barcode":"DRP001L9","uuid":"0011","pool":"p","state":"scratch"}`},
		{"media set", "media/DRP001L9.json", `{"barcode":"DRP001L9","uuid":"` + vol + `","pool":"p","state":"full","set_id":"ffee"}`},
		{"media barcode", "media/DRP001L9.json", `{"barcode":"DRP002L9","uuid":"` + vol + `","pool":"p","state":"scratch"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cat, err := tape.OpenCatalog(dir)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, filepath.FromSlash(c.file))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(c.body), 0o644); err != nil {
				t.Fatal(err)
			}
			var rep *tape.CheckReport
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("catalog check panicked: %v", r)
					}
				}()
				rep, err = tape.CheckCatalog(context.Background(), nil, cat, tape.CheckOptions{})
			}()
			if err == nil || !strings.Contains(err.Error(), "is damaged") || !strings.Contains(err.Error(), filepath.Base(p)) {
				t.Fatalf("check of a catalog with a damaged %s: %+v, %v; want an error naming the damaged file", c.name, rep, err)
			}
			if errors.Is(err, os.ErrNotExist) {
				t.Fatalf("damaged record reported as missing: %v", err)
			}
		})
	}
}
