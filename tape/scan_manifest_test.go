package tape_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tape/tapetest"
	"github.com/drpipe/drpipe/tiers"
)

// TestScanTapeRefusesHugeManifest: a metadata file whose set manifest
// says it is longer than any manifest the catalog reads back (a hostile
// or foreign tape) is refused when its object header is read, instead of
// being gathered in memory for as long as the tape goes on.
func TestScanTapeRefusesHugeManifest(t *testing.T) {
	ctx := context.Background()
	d := tapetest.NewDrive(1<<30, 1<<20)
	const bc, vol, set = "DRP001L9", "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	vl, err := tape.MarshalLabel(tape.KindVolumeLabel, tape.VolumeLabel{Format: "drpipe-tape", Version: 1, Barcode: bc, UUID: vol, Pool: "p", Labeled: now})
	if err != nil {
		t.Fatal(err)
	}
	sl, err := tape.MarshalLabel(tape.KindSetLabel, tape.SetLabel{Format: "drpipe-tape", Version: 1, SetID: set, Pool: "p", Barcode: bc, UUID: vol,
		Created: now, Level: tape.LevelWeekly, Expires: now.AddDate(0, 0, 28), Columns: 1, PerTape: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][]byte{vl, nil, sl, nil} {
		if r == nil {
			err = d.WriteFilemarks(ctx, 1)
		} else {
			_, err = d.WriteRecord(ctx, r)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The metadata file (docs/TAPE-FORMAT.md, "Object files"): its
	// header, then a manifest object of 5 GiB of which 4 MiB follow.
	crc := func(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
	stream := []byte("DRPF\x01\x03\x00\x00")
	stream = append(stream, mustUUID(t, set)...)
	stream = append(stream, mustUUID(t, vol)...)
	stream = binary.LittleEndian.AppendUint32(stream, 2)
	stream = binary.LittleEndian.AppendUint32(stream, crc(stream))
	obj := []byte("DRPO\x64\x08\x00\x00")
	obj = binary.LittleEndian.AppendUint64(obj, 5<<30)
	obj = append(obj, "manifest"...)
	obj = binary.LittleEndian.AppendUint32(obj, crc(obj))
	stream = append(stream, obj...)
	stream = append(stream, bytes.Repeat([]byte("{"), 4<<20)...)
	for seq := uint32(0); len(stream) > 0; seq++ {
		n := min(256<<10, len(stream))
		if _, err := d.WriteRecord(ctx, tape.RecordSeqForTest(tape.KindMeta, seq, stream[:n])); err != nil {
			t.Fatal(err)
		}
		stream = stream[n:]
	}
	if err := d.WriteFilemarks(ctx, 1); err != nil {
		t.Fatal(err)
	}

	visited := 0
	_, err = tape.ScanTape(ctx, d, bc, tape.ScanOptions{ReadData: true, Visit: func(string, *tape.ObjectVisit) error {
		visited++
		return nil
	}})
	if !errors.Is(err, tape.ErrCorrupt) || !strings.Contains(err.Error(), "set manifest of 5368709120 bytes") || visited != 0 {
		t.Fatalf("scan of a tape with a 5 GiB manifest: %v (%d objects visited); want ErrCorrupt naming the manifest's size before any visit", err, visited)
	}
}

func mustUUID(t *testing.T, s string) []byte {
	u, err := tape.ParseUUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return u[:]
}

// TestScanTapeBoundsItsCatalog: a tape holding more objects than a
// catalog file can list (no drpipe writes one: the writer starts another
// tape first) is refused as corrupt once the catalog the scan builds in
// memory passes that bound, instead of growing with whatever the tape
// holds.
func TestScanTapeBoundsItsCatalog(t *testing.T) {
	ctx := context.Background()
	d := tapetest.NewDrive(1<<30, 1<<20)
	const bc, vol, set = "DRP001L9", "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	vl, _ := tape.MarshalLabel(tape.KindVolumeLabel, tape.VolumeLabel{Format: "drpipe-tape", Version: 1, Barcode: bc, UUID: vol, Pool: "p", Labeled: now})
	sl, _ := tape.MarshalLabel(tape.KindSetLabel, tape.SetLabel{Format: "drpipe-tape", Version: 1, SetID: set, Pool: "p", Barcode: bc, UUID: vol,
		Created: now, Level: tape.LevelWeekly, Expires: now.AddDate(0, 0, 28), Columns: 1, PerTape: 1})
	for _, r := range [][]byte{vl, nil, sl, nil} {
		var err error
		if r == nil {
			err = d.WriteFilemarks(ctx, 1)
		} else {
			_, err = d.WriteRecord(ctx, r)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	objs := []any{tiers.Handle{Type: tape.TypeManifest, Name: "manifest"}, []byte(`{"version":1,"set_id":"` + set + `"}`)}
	for i := range 100 {
		b := []byte(fmt.Sprintf("index %d", i))
		objs = append(objs, tiers.Handle{Type: tiers.TypeIndex, Name: id.Hash(b).String()}, b)
	}
	if err := tape.WriteObjectFileForTest(ctx, d, objs...); err != nil {
		t.Fatal(err)
	}
	// The scan finds all 101 objects while catalog files may be as long
	// as they are (no catalog file on this tape: it reads every object).
	ts, err := tape.ScanTape(ctx, d, bc, tape.ScanOptions{})
	if err != nil || len(ts.Catalog.Entries) != 101 {
		t.Fatalf("scan: %v", err)
	}
	defer tape.SetCatalogLimitForTest(tape.CatalogLenForTest(ts.Catalog) - 1)()
	if _, err := tape.ScanTape(ctx, d, bc, tape.ScanOptions{}); !errors.Is(err, tape.ErrCorrupt) || !strings.Contains(err.Error(), "catalog") {
		t.Fatalf("scan of a tape whose objects a catalog file cannot list: %v; want ErrCorrupt", err)
	}
}
