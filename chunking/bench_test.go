package chunking

import (
	"bytes"
	"context"
	"testing"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/zeebo/blake3"
)

// BenchmarkChunkSegment chunks a random 32 MiB segment with the default
// config: ReadAt copies from memory (as from the page cache), then the zero
// check and CDC. "parallel" runs one Chunker per core.
func BenchmarkChunkSegment(b *testing.B) {
	cfg := DefaultConfig(testPol)
	content := randBytes(70, int(cfg.SegmentSize))
	seg := Segment{Off: 0, Len: cfg.SegmentSize, Data: []Range{{0, cfg.SegmentSize}}}
	b.Run("serial", func(b *testing.B) {
		ch := mustChunker(b, cfg)
		buf := make([]byte, cfg.SegmentSize)
		var exts []Extent
		b.SetBytes(cfg.SegmentSize)
		b.ReportAllocs()
		for b.Loop() {
			var err error
			exts, err = ch.AppendSegment(context.Background(), exts[:0], bytes.NewReader(content), seg, buf)
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(cfg.SegmentSize)
		b.RunParallel(func(pb *testing.PB) {
			ch := mustChunker(b, cfg)
			buf := make([]byte, cfg.SegmentSize)
			var exts []Extent
			for pb.Next() {
				var err error
				exts, err = ch.AppendSegment(context.Background(), exts[:0], bytes.NewReader(content), seg, buf)
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("zeros", func(b *testing.B) { // all-zero allocated segment: read + zero check only
		zero := make([]byte, cfg.SegmentSize)
		ch := mustChunker(b, cfg)
		buf := make([]byte, cfg.SegmentSize)
		b.SetBytes(cfg.SegmentSize)
		for b.Loop() {
			if _, err := ch.ChunkSegment(context.Background(), bytes.NewReader(zero), seg, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHasherID hashes 1 MiB (the average chunk). "pool" is Hasher.ID;
// the others are the alternatives it was measured against.
func BenchmarkHasherID(b *testing.B) {
	key := [32]byte{1, 2, 3}
	data := randBytes(71, 1<<20)
	h := NewHasher(key)
	b.Run("pool", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			h.ID(data)
		}
	})
	b.Run("newPerCall", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			bh, _ := blake3.NewKeyed(key[:])
			bh.Write(data)
			var out id.ID
			bh.Sum(out[:0])
		}
	})
	b.Run("pool/parallel", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.ID(data)
			}
		})
	})
	b.Run("pool/4KiB", func(b *testing.B) { // per-call overhead dominates
		b.SetBytes(4096)
		b.ReportAllocs()
		for b.Loop() {
			h.ID(data[:4096])
		}
	})
	b.Run("newPerCall/4KiB", func(b *testing.B) {
		b.SetBytes(4096)
		b.ReportAllocs()
		for b.Loop() {
			bh, _ := blake3.NewKeyed(key[:])
			bh.Write(data[:4096])
			var out id.ID
			bh.Sum(out[:0])
		}
	})
}
