package repo

import (
	"encoding/binary"
	"testing"

	"github.com/drpipe/drpipe/internal/id"
)

// damagedCache is a cache file with one blob record and no pack records;
// its sizes and final fanout entry are consistent.
func damagedCache(packNo uint32) []byte {
	b := make([]byte, cacheHdrSize+fanoutEntries*8+blobRecSize)
	copy(b, cacheMagic)
	binary.LittleEndian.PutUint32(b[4:], cacheVersion)
	binary.LittleEndian.PutUint64(b[24:], 1) // one blob
	for i := 0; i < fanoutEntries; i++ {
		binary.LittleEndian.PutUint64(b[cacheHdrSize+8*i:], 1)
	}
	binary.LittleEndian.PutUint32(b[cacheHdrSize+fanoutEntries*8+32:], packNo)
	return b
}

// A damaged local index cache must be refused or rebuilt, never crash
// the process.
func TestDiskIndexDamagedNoPanic(t *testing.T) {
	d := &diskIndex{mm: damagedCache(7)}
	if err := d.parse(); err != nil {
		t.Fatalf("parse: %v", err)
	}
	if err := d.eachBlob(func(PackInfo, BlobEntry) error { return nil }); err == nil {
		t.Fatal("eachBlob accepted a blob record naming a pack that does not exist")
	}
	d.lookup(id.ID{}, func(PackInfo, BlobEntry) bool {
		t.Fatal("lookup returned a blob record naming a pack that does not exist")
		return true
	})

	b := damagedCache(0)
	binary.LittleEndian.PutUint64(b[cacheHdrSize:], 9) // fanout[0] above the blob count
	if err := (&diskIndex{mm: b}).parse(); err == nil {
		t.Fatal("parse accepted a fanout that decreases")
	}
}
