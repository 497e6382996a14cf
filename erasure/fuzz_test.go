package erasure

import (
	"bytes"
	"errors"
	"testing"

	"github.com/drpipe/drpipe/internal/id"
)

// seedShards returns a few real shard objects for the fuzz corpora (the
// files under testdata/fuzz hold more, generated the same way).
func seedShards(f *testing.F) [][]byte {
	var out [][]byte
	for _, c := range []struct {
		p Params
		l int
	}{{Params{1, 0}, 1}, {Params{2, 1}, 5}, {Params{4, 2}, 100}, {Params{3, 3}, 7}} {
		pack := make([]byte, c.l)
		for i := range pack {
			pack[i] = byte(i * 7)
		}
		for v := MinVersion; v <= Version; v++ {
			_, shards, err := EncodeVersion(v, c.p, pack, nil)
			if err != nil {
				f.Fatal(err)
			}
			out = append(out, shards...)
		}
	}
	return out
}

// FuzzParseHeader checks that ParseHeader never panics, classifies every
// failure, and that whatever it accepts re-serializes to the same bytes.
func FuzzParseHeader(f *testing.F) {
	for _, s := range seedShards(f) {
		f.Add(s)
		f.Add(s[:FixedHeaderSize])
	}
	f.Add([]byte("DRPS"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if errors.Is(err, ErrShortHeader) == errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v: want exactly one of ErrShortHeader, ErrCorrupt", err)
			}
			return
		}
		hs := h.Size()
		if hs <= FixedHeaderSize || hs > len(b) || len(h.Hashes) != h.K+h.M || h.Index >= h.K+h.M {
			t.Fatalf("accepted header %+v with size %d from %d bytes", h, hs, len(b))
		}
		again := make([]byte, hs)
		h.putHeader(again, h.Index)
		if !bytes.Equal(again, b[:hs]) {
			t.Fatalf("header does not round-trip:\n%x\n%x", again, b[:hs])
		}
		if h.PackID() != id.Hash(b[:hs-4]) {
			t.Fatalf("PackID is not the hash of the table")
		}
		spans, err := h.Locate(0, h.PackLen)
		if err != nil || len(spans) > h.K {
			t.Fatalf("Locate(0, %d) = %d spans, %v", h.PackLen, len(spans), err)
		}
		var sum int64
		for _, s := range spans {
			sum += s.Len
		}
		if sum != h.PackLen {
			t.Fatalf("spans cover %d bytes, want %d", sum, h.PackLen)
		}
	})
}

// FuzzVerifyShard checks that VerifyShard never panics, that what it
// accepts is consistent, and feeds accepted shards to Reconstruct. The pack
// ID is taken from the object's own table so that the payload checks are
// reached.
func FuzzVerifyShard(f *testing.F) {
	for _, s := range seedShards(f) {
		h, err := ParseHeader(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s, h.Index)
		f.Add(s, h.Index+1)
	}
	f.Fuzz(func(t *testing.T, obj []byte, index int) {
		var pid id.ID
		if h, err := ParseHeader(obj); err == nil {
			pid = id.Hash(obj[:h.Size()-4])
		}
		h, err := VerifyShard(pid, index, obj)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("VerifyShard error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if h.Index != index || int64(len(obj)) != h.ObjectSize() || h.PayloadHash(obj[h.Size():]) != h.Hashes[index] || h.PackID() != pid {
			t.Fatalf("VerifyShard accepted an inconsistent shard: %+v", h)
		}
		slots := make([][]byte, h.K+h.M)
		slots[index] = obj
		res, err := Reconstruct(pid, slots)
		if h.K > 1 {
			if !errors.Is(err, ErrTooFewShards) {
				t.Fatalf("Reconstruct from 1 of %d+%d shards: %v, want ErrTooFewShards", h.K, h.M, err)
			}
			return
		}
		// K == 1: a single shard is enough, unless the (forged) table
		// promises parity that does not match the data.
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Reconstruct from 1 of 1+%d shards: %v", h.M, err)
			}
			return
		}
		if int64(len(res.Pack)) != h.PackLen || len(res.Rebuilt) != h.M {
			t.Fatalf("Reconstruct: %d-byte pack, %d rebuilt; want %d and %d", len(res.Pack), len(res.Rebuilt), h.PackLen, h.M)
		}
		for i, o := range res.Rebuilt {
			if _, err := VerifyShard(pid, i, o); err != nil {
				t.Fatalf("rebuilt shard does not verify: %v", err)
			}
		}
	})
}

// FuzzParseShardName feeds arbitrary object names, as a backend listing
// returns them, to ParseShardName: it must never panic, must keep its
// messages short, and must accept exactly the names ShardName makes.
func FuzzParseShardName(f *testing.F) {
	pid := id.Hash([]byte("pack"))
	for _, i := range []int{0, 7, 10, 254} {
		f.Add(ShardName(pid, i))
	}
	f.Add(pid.String())
	f.Add(pid.String() + "-255")
	f.Add(pid.String() + "-01")
	f.Add("config")
	f.Fuzz(func(t *testing.T, name string) {
		got, i, err := ParseShardName(name)
		if err != nil {
			if len(err.Error()) > 1200 {
				t.Fatalf("error of %d bytes for a name of %d bytes", len(err.Error()), len(name))
			}
			return
		}
		if i < 0 || i >= MaxShards || ShardName(got, i) != name {
			t.Fatalf("ParseShardName(%q) = %s, %d: not the name ShardName makes", name, got, i)
		}
	})
}
