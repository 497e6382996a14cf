package repo

import (
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
)

// Fuzz targets for every parser of stored bytes. Seeds are real encoded
// objects; the decoders must never panic or allocate beyond what the
// input justifies.

func FuzzDecodeIndex(f *testing.F) {
	ip := IndexPack{PackInfo: PackInfo{ID: id.ID{1}, Length: 1000, ShardSize: 250, K: 4, M: 2},
		Blobs: []BlobEntry{{Type: DataBlob, ID: id.ID{2}, Offset: 0, Length: 100, RawLength: 80}, {Type: TreeBlob, ID: id.ID{3}, Offset: 100, Length: 200, RawLength: 500}}}
	f.Add(encodeIndex(&IndexFile{Packs: []IndexPack{ip}, Supersedes: []id.ID{{9}}}))
	f.Add(encodeIndex(&IndexFile{}))
	f.Add([]byte("DRPI\x01\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := decodeIndex(b)
		if err != nil {
			return
		}
		// What decodes must re-encode to the same bytes.
		if got := encodeIndex(ix); string(got) != string(b) {
			t.Fatalf("re-encoding differs: %d vs %d bytes", len(got), len(b))
		}
	})
}

func FuzzDecodePackHeader(f *testing.F) {
	entries := []BlobEntry{{Type: DataBlob, ID: id.ID{1}, Length: 100, RawLength: 50}, {Type: TreeBlob, ID: id.ID{2}, Length: 64, RawLength: 10}}
	f.Add(encodePackHeader(entries), uint32(1000))
	f.Add([]byte("DRPH\x01\x00\x00\x00\x00\x00\x00\x00"), uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, hdrOff uint32) {
		es, err := decodePackHeader(b, hdrOff)
		if err != nil {
			return
		}
		var end uint64
		for _, e := range es {
			end = uint64(e.Offset) + uint64(e.Length)
		}
		if end > uint64(hdrOff) {
			t.Fatalf("entries end at %d beyond %d", end, hdrOff)
		}
		// The offsets follow from the lengths: what decodes re-encodes
		// to the same bytes.
		if got := encodePackHeader(es); string(got) != string(b) {
			t.Fatalf("re-encoding differs: %x vs %x", got, b)
		}
	})
}

// TestPackTrailerOfHugePack: the header offset of a pack longer than 4
// GiB does not fit the format's 32-bit offsets; such a pack is refused,
// not given an offset cut to 32 bits.
func TestPackTrailerOfHugePack(t *testing.T) {
	tr := append(binary.LittleEndian.AppendUint32(nil, 100), packTrailerMagic...)
	if off, l, err := parsePackTrailer(tr, 1<<33); err == nil {
		t.Fatalf("8 GiB pack: header at %d (+%d), want an error", off, l)
	}
	if off, l, err := parsePackTrailer(tr, 1<<32-1); err != nil || int64(off)+int64(l)+packTrailerSize != 1<<32-1 {
		t.Fatalf("pack of 4 GiB - 1 byte: header at %d (+%d), %v", off, l, err)
	}
}

func FuzzParsePackTrailer(f *testing.F) {
	tr := binary.LittleEndian.AppendUint32(nil, 100)
	f.Add(append(tr, packTrailerMagic...), int64(1000))
	// A pack longer than 32-bit offsets reach.
	f.Add(append(tr, packTrailerMagic...), int64(1)<<33)
	f.Fuzz(func(t *testing.T, b []byte, n int64) {
		off, l, err := parsePackTrailer(b, n)
		if err == nil && int64(off)+int64(l)+packTrailerSize != n {
			t.Fatalf("header [%d,+%d) does not end at the trailer of a %d-byte pack", off, l, n)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	c := Config{Format: formatName, Version: 1, Created: time.Unix(0, 0).UTC(), PackSize: DefaultPackSize, Sealed: []byte{1, 2, 3}}
	c.EC.K, c.EC.M = 4, 2
	b, _ := json.Marshal(c)
	f.Add(b)
	f.Add([]byte(`{"format":"drpipe-repository","version":99}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseConfigPublic(b)
		if err != nil {
			return
		}
		if c.Version < 1 || c.Version > FormatVersion || c.EC.Validate() != nil {
			t.Fatalf("accepted invalid config %+v", c)
		}
	})
}

func FuzzOpenKeyFile(f *testing.F) {
	mk, _ := NewMasterKey()
	kf, _ := sealKeyFile(mk, []byte("pw"), "t", KDFParams{Time: 1, MemoryKiB: 8, Threads: 1}, time.Unix(0, 0))
	f.Add(kf, []byte("pw"))
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":4294967295,"memory_kib":4294967295,"threads":255}`), []byte("x"))
	f.Fuzz(func(t *testing.T, b, pw []byte) {
		var probe keyFile
		if json.Unmarshal(b, &probe) == nil && (probe.MemoryKiB > 1<<16 || probe.Time > 4) {
			// Valid but expensive parameters are allowed by the format;
			// only check that out-of-range ones are refused quickly.
			if probe.MemoryKiB <= maxKDFMemoryKiB && probe.Time <= maxKDFTime {
				return
			}
		}
		_, _, _ = openKeyFile(b, pw)
	})
}

func FuzzDecodeTree(f *testing.F) {
	b, _ := json.Marshal(&Tree{Version: 1, Nodes: []*Node{{Name: "a", Type: NodeFile, Size: 5, Content: []Extent{{ID: id.ID{1}, Len: 3}, {Zero: true, Len: 2}}}}})
	f.Add(b)
	f.Add([]byte(`{"version":1,"nodes":[{"name":"\ufffd","name_raw":"Yf8=","type":"file","linktarget_raw":"L3j/"},null]}`))
	f.Add([]byte(`{"version":2,"nodes":[],"parts":["0100000000000000000000000000000000000000000000000000000000000000"]}`))
	f.Add([]byte(`{"version":1,"nodes":[{"name":"d.qcow2","type":"file","disk":{"v":1},"refs":["0200000000000000000000000000000000000000000000000000000000000000"]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := decodeTree(b)
		if err != nil {
			return
		}
		enc, err := encodeTree(tr)
		if err != nil {
			t.Fatalf("decoded tree does not re-encode: %v", err)
		}
		again, err := decodeTree(enc)
		if err != nil {
			t.Fatalf("re-encoded tree does not decode: %v", err)
		}
		for i, n := range tr.Nodes {
			if m := again.Nodes[i]; m.Name != n.Name || m.LinkTarget != n.LinkTarget {
				t.Fatalf("node %d: %q -> %q, %q -> %q after a round trip", i, n.Name, m.Name, n.LinkTarget, m.LinkTarget)
			}
		}
	})
}

func FuzzDiskIndexParse(f *testing.F) {
	hdr := make([]byte, cacheHdrSize+fanoutEntries*8)
	copy(hdr, cacheMagic)
	binary.LittleEndian.PutUint32(hdr[4:], cacheVersion)
	f.Add(hdr)
	f.Add([]byte("DRPC\x01\x00\x00\x00"))
	f.Add(damagedCache(7))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < cacheHdrSize {
			return
		}
		d := &diskIndex{mm: b}
		if d.parse() != nil {
			return
		}
		// A parsed cache must be safe to walk.
		_ = d.eachBlob(func(PackInfo, BlobEntry) error { return nil })
		d.lookup(id.ID{}, func(PackInfo, BlobEntry) bool { return true })
	})
}
