package vmdisk

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzWriteRoundTrip opens arbitrary images as FuzzOpen does and, for
// each small one without a parent, writes it again in its own format
// with its own container parameters (as a restore does) and opens the
// result: it must be accepted, have the same virtual size and read the
// same bytes.
func FuzzWriteRoundTrip(f *testing.F) {
	// The real images of FuzzOpen's corpus (qemu-img and drpipe wrote
	// them) are the seeds.
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzOpen", "*"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		q, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "go test fuzz v1\n[]byte(")
		if v, err := strconv.Unquote(strings.TrimSuffix(q, ")")); ok && err == nil {
			f.Add([]byte(v))
		}
	}
	f.Add(append(make([]byte, 512), []byte("conectix")...))
	// Every write syncs its file: use tmpfs when there is one.
	dir, err := os.MkdirTemp("/dev/shm", "drpipe-fuzz-write-")
	if err != nil {
		dir = f.TempDir()
	} else {
		f.Cleanup(func() { os.RemoveAll(dir) })
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r io.ReaderAt = bytes.NewReader(data)
		size := int64(len(data))
		if s, ok := decodeSparse(data); ok {
			r, size = s, s.size
		}
		l, err := OpenReaderAt(r, size, "fuzz.img", "", Limits{})
		if err != nil || l.Info.Backing != "" || l.Size() > 1<<20 {
			return
		}
		runs, err := l.Runs()
		if err != nil {
			return
		}
		whole := make([]byte, l.Size())
		if n, err := l.ReadAt(whole, 0); n != len(whole) || (err != nil && err != io.EOF) {
			return
		}
		var ranges []Range
		for _, x := range runs {
			if x.Kind == Data {
				ranges = append(ranges, Range{x.Off, x.Len})
			}
		}
		if ranges == nil {
			ranges = []Range{}
		}
		path := filepath.Join(dir, "again."+string(l.Info.Format))
		defer os.Remove(path)
		_, err = Write(context.Background(), path, Source{Size: l.Size(), R: l, Data: ranges},
			WriteOptions{Format: l.Info.Format, QCOW2: l.Info.QCOW2, VHD: l.Info.VHD, VHDX: l.Info.VHDX})
		if err != nil {
			t.Fatalf("write the %s image again (%+v): %v", l.Info.Format, l.Info, err)
		}
		d, err := Open(path, Limits{})
		if err != nil {
			t.Fatalf("the %s image written again does not open: %v", l.Info.Format, err)
		}
		defer d.Close()
		if d.Size() != l.Size() {
			t.Fatalf("the %s image written again has %d bytes, the original %d", l.Info.Format, d.Size(), l.Size())
		}
		again := make([]byte, d.Size())
		if n, err := d.ReadAt(again, 0); n != len(again) || (err != nil && err != io.EOF) {
			t.Fatalf("read the %s image written again: %d bytes, %v", l.Info.Format, n, err)
		}
		if !bytes.Equal(again, whole) {
			t.Fatalf("the %s image written again reads other bytes", l.Info.Format)
		}
	})
}
