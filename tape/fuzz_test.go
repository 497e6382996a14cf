package tape_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tape/tapetest"
	"github.com/drpipe/drpipe/tiers"
)

// Parsers of bytes read from tape: every one is fuzzed, and what a
// parser accepts must round-trip through the writer.

func seedLabels() [][]byte {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	vl, _ := tape.MarshalLabel(tape.KindVolumeLabel, tape.VolumeLabel{Format: "drpipe-tape", Version: 1, Barcode: "DRP001L9", UUID: "00112233445566778899aabbccddeeff", Pool: "offsite", Labeled: now})
	sl, _ := tape.MarshalLabel(tape.KindSetLabel, tape.SetLabel{Format: "drpipe-tape", Version: 1, SetID: "ffeeddccbbaa99887766554433221100", Pool: "offsite", Barcode: "DRP001L9",
		UUID: "00112233445566778899aabbccddeeff", Created: now, Level: tape.LevelWeekly, Expires: now.AddDate(0, 0, 28), Columns: 3, Parity: 1, PerTape: 2, Column: 1})
	v2, _ := tape.MarshalLabel(tape.KindVolumeLabel, map[string]any{"format": "drpipe-tape", "version": 2, "barcode": "X"})
	return [][]byte{vl, sl, v2, []byte("DRPR"), make([]byte, 24)}
}

func FuzzParseRecord(f *testing.F) {
	for _, s := range seedLabels() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := tape.ParseRecord(b)
		if err != nil {
			if !errors.Is(err, tape.ErrCorrupt) && !errors.Is(err, tape.ErrForeignTape) && !errors.Is(err, tape.ErrUnsupportedVersion) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if int(h.Length) != len(p) || !bytes.Equal(b[len(b)-len(p):], p) {
			t.Fatalf("payload mismatch")
		}
		// Bytes 6-7 are reserved and checked to be zero, so an accepted
		// record is exactly what the writer makes of its header and
		// payload.
		if again := tape.RecordSeqForTest(h.Kind, h.Seq, p); !bytes.Equal(again, b) {
			t.Fatalf("accepted record %+v re-encodes to %x, want %x", h, again, b)
		}
	})
}

func FuzzParseVolumeLabel(f *testing.F) {
	for _, s := range seedLabels() {
		f.Add(s)
		if len(s) > 24 {
			f.Add(s[24:])
		}
	}
	// A label dated with an offset of minutes (a zone of its own).
	f.Add([]byte(`{"format":"drpipe-tape","version":1,"barcode":"DRP001L9","uuid":"00112233445566778899aabbccddeeff","pool":"offsite","labeled":"2026-01-02T03:04:05+05:45"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && b[0] == '{' {
			// A JSON payload: wrap it in a valid record to reach the
			// label decoder past the checksums.
			b = tape.RecordForTest(tape.KindVolumeLabel, b)
		}
		l, err := tape.ParseVolumeLabel(b)
		if err != nil {
			if !errors.Is(err, tape.ErrCorrupt) && !errors.Is(err, tape.ErrForeignTape) && !errors.Is(err, tape.ErrUnsupportedVersion) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		again, err := tape.MarshalLabel(tape.KindVolumeLabel, l)
		if err != nil {
			t.Fatal(err)
		}
		l2, err := tape.ParseVolumeLabel(again)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		// Times compare by instant: a label dated with an offset of
		// minutes decodes to a new zone each time.
		if !l2.Labeled.Equal(l.Labeled) {
			t.Fatalf("round trip: labeled %v, then %v", l.Labeled, l2.Labeled)
		}
		l2.Labeled = l.Labeled
		if *l2 != *l {
			t.Fatalf("round trip: %+v %+v", l, l2)
		}
	})
}

func FuzzParseSetLabel(f *testing.F) {
	for _, s := range seedLabels() {
		f.Add(s)
		if len(s) > 24 {
			f.Add(s[24:])
		}
	}
	f.Add([]byte(`{"format":"drpipe-tape","version":1,"set_id":"ffeeddccbbaa99887766554433221100","pool":"offsite","barcode":"DRP001L9","uuid":"00112233445566778899aabbccddeeff",` +
		`"created":"2026-01-02T03:04:05+05:45","level":"weekly","expires":"2026-01-30T03:04:05-03:30","columns":3,"parity":1,"per_tape":2,"column":1,"column_seq":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && b[0] == '{' {
			b = tape.RecordForTest(tape.KindSetLabel, b)
		}
		l, err := tape.ParseSetLabel(b)
		if err != nil {
			if !errors.Is(err, tape.ErrCorrupt) && !errors.Is(err, tape.ErrForeignTape) && !errors.Is(err, tape.ErrUnsupportedVersion) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		again, err := tape.MarshalLabel(tape.KindSetLabel, l)
		if err != nil {
			t.Fatal(err)
		}
		l2, err := tape.ParseSetLabel(again)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if !l2.Created.Equal(l.Created) || !l2.Expires.Equal(l.Expires) {
			t.Fatalf("round trip: created %v, expires %v, then %v, %v", l.Created, l.Expires, l2.Created, l2.Expires)
		}
		l2.Created, l2.Expires = l.Created, l.Expires
		if *l2 != *l {
			t.Fatalf("round trip: %+v %+v", l, l2)
		}
	})
}

func seedCatalogs() [][]byte {
	c := &tape.TapeCatalog{Barcode: "DRP002L9", Column: 2, ColumnSeq: 1, Last: true}
	c.SetID[0], c.Volume[1] = 1, 2
	c.Entries = []tape.CatalogEntry{
		{Type: tiers.TypeConfig, Name: "config", File: 2, Offset: 48, Size: 300, SHA256: sha256.Sum256([]byte("a"))},
		{Type: tape.TypeManifest, Name: "manifest", File: 2, Offset: 400, Size: 30},
		{Type: tiers.TypeData, Name: id.Hash([]byte("p")).String() + "-3", File: 3, Offset: 48, Size: 4 << 20},
	}
	empty := &tape.TapeCatalog{Barcode: "A"}
	return [][]byte{c.Marshal(), empty.Marshal(), []byte("DRPC")}
}

func FuzzParseTapeCatalog(f *testing.F) {
	for _, s := range seedCatalogs() {
		f.Add(s)
		if len(s) > 4 {
			v := append([]byte(nil), s...)
			v[4] = 0xff
			f.Add(v)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4 && b[4] == 0xff {
			// Fix up the trailing checksum to reach the entry decoder.
			b = append([]byte(nil), b...)
			b[4] = 1
			if len(b) > 32 {
				sum := sha256.Sum256(b[:len(b)-32])
				copy(b[len(b)-32:], sum[:])
			}
		}
		c, err := tape.ParseTapeCatalog(b)
		if err != nil {
			if !errors.Is(err, tape.ErrCorrupt) && !errors.Is(err, tape.ErrUnsupportedVersion) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if !bytes.Equal(c.Marshal(), b) {
			t.Fatalf("accepted catalog does not re-encode to the same bytes")
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	m := tape.Manifest{Version: 1, SetID: "x", Packs: []tape.ManifestPack{{ID: id.Hash([]byte("p")), K: 4, M: 2}},
		Snapshots: []tape.ManifestSnapshot{{ID: id.Hash([]byte("s")), Time: time.Unix(1, 0).UTC(), Packs: []int{0}}}}
	b, _ := json.Marshal(m)
	f.Add(b)
	f.Add([]byte(`{"version":1,"snapshots":[{"packs":[5]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := tape.ParseManifest(b)
		if err != nil {
			return
		}
		for _, s := range m.Snapshots {
			for _, i := range s.Packs {
				_ = m.Packs[i] // must be in range
			}
		}
	})
}

// seedFile writes a small object file on a memory drive and returns its
// stream (the payloads of its records), preceded by one byte choosing
// the record size the fuzzer cuts it into.
func seedFile() []byte {
	ctx := context.Background()
	d := tapetest.NewDrive(1<<30, 1<<20)
	objs := []struct {
		h    tiers.Handle
		data []byte
	}{{tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, []byte("{}")}, {tiers.Handle{Type: tiers.TypeIndex, Name: id.Hash([]byte("i")).String()}, bytes.Repeat([]byte("ix"), 300)}}
	if err := tape.WriteObjectFileForTest(ctx, d, objs[0].h, objs[0].data, objs[1].h, objs[1].data); err != nil {
		panic(err)
	}
	d.Rewind(ctx)
	out := []byte{7}
	buf := make([]byte, 2<<20)
	for {
		n, err := d.ReadRecord(ctx, buf)
		if err != nil {
			break
		}
		_, p, err := tape.ParseRecord(buf[:n])
		if err != nil {
			panic(err)
		}
		out = append(out, p...)
	}
	return out
}

// FuzzScanFile feeds arbitrary object-file streams, cut into valid
// records, to the scanner: it must never panic or hang, and every object
// it reports whole must match its SHA-256 trailer.
func FuzzScanFile(f *testing.F) {
	f.Add(seedFile())
	f.Add([]byte{0, 'D', 'R', 'P', 'F'})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || len(b) > 1<<20 {
			return
		}
		ctx := context.Background()
		d := tapetest.NewDrive(1<<30, 1<<20)
		size := (int(b[0]) + 1) * 8
		stream := b[1:]
		for seq := uint32(0); len(stream) > 0; seq++ {
			n := min(size, len(stream))
			d.WriteRecord(ctx, tape.RecordSeqForTest(tape.KindMeta, seq, stream[:n]))
			stream = stream[n:]
		}
		d.WriteFilemarks(ctx, 1)
		d.Rewind(ctx)
		buf := make([]byte, tape.MaxRecordSize)
		whole := b[1:]
		visits := 0
		fs, err := tape.ScanFile(ctx, d, buf, func(v *tape.ObjectVisit) error {
			body, err := io.ReadAll(v.Body)
			if err != nil {
				return err
			}
			visits++
			// The object as the stream holds it: its header (16 fixed
			// bytes, the name, a CRC), the content, and the trailer
			// "DRPT" with the content's SHA-256.
			at := v.Offset + 16 + int64(len(v.Header.Name)) + 4
			end := at + int64(len(body))
			sum := sha256.Sum256(body)
			if int64(len(body)) != v.Header.Size || end+36 > int64(len(whole)) || !bytes.Equal(whole[at:end], body) ||
				string(whole[end:end+4]) != "DRPT" || !bytes.Equal(whole[end+4:end+36], sum[:]) {
				t.Fatalf("object %s at %d read whole: %d bytes that are not the content its header and trailer frame", v.Header.Name, v.Offset, len(body))
			}
			return nil
		})
		if err == nil && fs.Objects != visits {
			t.Fatalf("scan counts %d objects, %d were read whole", fs.Objects, visits)
		}
	})
}

// TestWriteFuzzSeeds writes the seed corpora under testdata/fuzz when
// DRPIPE_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("DRPIPE_WRITE_SEEDS") == "" {
		t.Skip("set DRPIPE_WRITE_SEEDS=1 to regenerate testdata/fuzz")
	}
	write := func(name string, seeds [][]byte) {
		dir := filepath.Join("testdata", "fuzz", name)
		os.MkdirAll(dir, 0o755)
		for i, s := range seeds {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)), 0o644)
		}
	}
	labels := seedLabels()
	write("FuzzParseRecord", labels)
	var payloads [][]byte
	for _, l := range labels {
		payloads = append(payloads, l)
		if len(l) > 24 {
			payloads = append(payloads, l[24:])
		}
	}
	write("FuzzParseVolumeLabel", payloads)
	write("FuzzParseSetLabel", payloads)
	cats := seedCatalogs()
	for _, c := range seedCatalogs() {
		if len(c) > 4 {
			v := append([]byte(nil), c...)
			v[4] = 0xff
			cats = append(cats, v)
		}
	}
	write("FuzzParseTapeCatalog", cats)
	m, _ := json.Marshal(tape.Manifest{Version: 1, Packs: []tape.ManifestPack{{K: 1}}, Snapshots: []tape.ManifestSnapshot{{Packs: []int{0}}}})
	write("FuzzParseManifest", [][]byte{m, []byte(`{"version":2}`)})
	write("FuzzScanFile", [][]byte{seedFile()})
}
