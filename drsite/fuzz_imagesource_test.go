package drsite

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzImageSource feeds arbitrary records of where a placed image came
// from (the hidden file beside it) to their parser and to the check that
// keeps a placed image. It must never panic; a record it accepts must be
// JSON of at most 4 KiB that writes back (writeImageSource) to a record
// that reads the same; and the image must be kept exactly when the record
// names the snapshot and path the plan restores.
func FuzzImageSource(f *testing.F) {
	dir := f.TempDir()
	image := filepath.Join(dir, "web01-disk0.qcow2")
	snap := "5f3c9a0e2b7d41c88e6a1f0d9b2c4e7a5f3c9a0e2b7d41c88e6a1f0d9b2c4e7a"
	v := &PlannedVM{Name: "web01", Data: &VMData{Snapshot: snap}}
	d := DiskData{File: "/var/lib/libvirt/images/web01.qcow2", Path: "/var/lib/libvirt/images/web01.qcow2"}
	// Seeds: records writeImageSource writes.
	for _, s := range []imageSource{{Snapshot: snap, Path: d.Path}, {Snapshot: strings.ToUpper(snap), Path: d.Path}, {Snapshot: "0123abcd", Path: `C:\VMs\sql01\disk0.vhdx`}} {
		if err := writeImageSource(image, s); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(imageSourceFile(image))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"snapshot":null,"path":1}`))
	f.Add(append([]byte(`{"snapshot":"`+snap+`","path":"`), bytes.Repeat([]byte("x"), 4096)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, perr := parseImageSource(b)
		if perr == nil {
			if len(b) > 4096 || !json.Valid(b) {
				t.Fatalf("accepted a record of %d bytes that is not JSON or too long", len(b))
			}
			if err := writeImageSource(image, s); err != nil {
				t.Fatal(err)
			}
			back, err := os.ReadFile(imageSourceFile(image))
			if err != nil {
				t.Fatal(err)
			}
			if s2, err := parseImageSource(back); err != nil || s2 != s {
				t.Fatalf("record %+v written back reads as %+v (%v)", s, s2, err)
			}
		}
		if err := os.WriteFile(imageSourceFile(image), b, 0o644); err != nil {
			t.Fatal(err)
		}
		err := sameImageSource(image, v, d)
		keep := perr == nil && strings.EqualFold(s.Snapshot, snap) && s.Path == d.Path
		if (err == nil) != keep {
			t.Fatalf("record %q (%+v, %v): kept %v, want %v", b, s, perr, err == nil, keep)
		}
	})
}
