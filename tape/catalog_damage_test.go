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

// FuzzCatalogRecords feeds arbitrary set and media records of the
// catalog database to the commands that read them all ('tape catalog
// check', the set and media listings): they must never panic, and a
// record they accept must name the set or tape of its file.
func FuzzCatalogRecords(f *testing.F) {
	const set = "ffeeddccbbaa99887766554433221100"
	const vol = "00112233445566778899aabbccddeeff"
	f.Add([]byte(`{"id":"`+set+`","pool":"p","created":"2026-01-02T03:04:05Z","level":"weekly","expires":"2026-01-30T03:04:05Z","columns":1,"parity":0,"per_tape":1,"complete":true,`+
		`"tapes":[{"barcode":"DRP001L9","uuid":"`+vol+`","column":0,"column_seq":0,"last":true}],"snapshots":[]}`),
		[]byte(`{"barcode":"DRP001L9","uuid":"`+vol+`","pool":"p","labeled":"2026-01-01T00:00:00Z","state":"full","set_id":"`+set+`","column":0,"column_seq":0,"location":"library"}`))
	f.Add([]byte(`{"id":"ffee"}`), []byte(`{"barcode":"DRP001L9","uuid":"0011"}`))
	f.Add([]byte(`{"id":"`+set+`","columns":-1,"tapes":[{"barcode":"","uuid":""}]}`), []byte(`null`))
	dir := f.TempDir()
	cat, err := tape.OpenCatalog(dir)
	if err != nil {
		f.Fatal(err)
	}
	setFile := filepath.Join(dir, "sets", set, "set.json")
	mediaFile := filepath.Join(dir, "media", "DRP001L9.json")
	if err := os.MkdirAll(filepath.Dir(setFile), 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, setRec, mediaRec []byte) {
		if err := os.WriteFile(setFile, setRec, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(mediaFile, mediaRec, 0o644); err != nil {
			t.Fatal(err)
		}
		cat, err := tape.OpenCatalog(cat.Dir()) // no records cached
		if err != nil {
			t.Fatal(err)
		}
		if sets, err := cat.Sets(); err == nil {
			for _, s := range sets {
				if s.ID != set {
					t.Fatalf("record of set %q accepted for set %s", s.ID, set)
				}
			}
		}
		if media, err := cat.AllMedia(); err == nil {
			for _, m := range media {
				if m.Barcode != "DRP001L9" {
					t.Fatalf("record of tape %q accepted for tape DRP001L9", m.Barcode)
				}
			}
		}
		tape.CheckCatalog(context.Background(), nil, cat, tape.CheckOptions{})
	})
}

// TestDamagedRecordAdviceForTapeOutsideLibrary: the error for a damaged
// record must not send the operator to a catalog rebuild alone when the
// record is of a tape outside the library: a rebuild reads the tapes in
// the library and leaves that record damaged, and the same error (and
// advice) came back after it.
func TestDamagedRecordAdviceForTapeOutsideLibrary(t *testing.T) {
	dir := t.TempDir()
	libDir := filepath.Join(dir, "lib")
	if _, err := tape.InitVirtual(libDir, tape.VirtualConfig{Generation: tape.LTO9, Slots: 2, Drives: 1, Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	lib, err := tape.OpenVirtual(libDir)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	catDir := filepath.Join(libDir, "catalog")
	cat, err := tape.OpenCatalog(catDir)
	if err != nil {
		t.Fatal(err)
	}
	// An offsite tape's record, edited by hand.
	p := filepath.Join(catDir, "media", "DRP009L9.json")
	if err := os.WriteFile(p, []byte(`{"barcode":"DRP009L9","uuid":"0011","pool":"p","state":"full","location":"offsite"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tape.Rebuild(context.Background(), lib, cat, tape.ScanOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	if cat, err = tape.OpenCatalog(catDir); err != nil {
		t.Fatal(err)
	}
	_, err = cat.AllMedia()
	if err == nil || !strings.Contains(err.Error(), filepath.Base(p)) {
		t.Fatalf("media records after a rebuild, with the damaged record of a tape outside the library: %v; want the damaged file named", err)
	}
	if !strings.Contains(err.Error(), "import the tape") || !strings.Contains(err.Error(), "move the file") {
		t.Errorf("error %q sends the operator to a rebuild, which leaves the record of a tape outside the library damaged; it should say to import the tape or move the file away", err)
	}
}
