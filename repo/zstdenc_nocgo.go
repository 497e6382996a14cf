//go:build !cgo

package repo

import (
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/drpipe/drpipe/internal/cpus"
)

// ZstdEncoder names the implementation that compresses new blobs, for
// `drpipe --version` and benchmark reports.
const ZstdEncoder = "klauspost/compress (pure Go; build with cgo for the faster C library)"

var (
	encOnce  sync.Once
	encoders map[Compression]*zstd.Encoder
)

// compressZstd appends one zstd frame holding src, compressed at the
// preset nearest c's level, to dst. ok is always true.
func compressZstd(dst, src []byte, c Compression) (out []byte, ok bool) {
	encOnce.Do(func() {
		encoders = map[Compression]*zstd.Encoder{}
		for c, lvl := range map[Compression]zstd.EncoderLevel{
			CompressAuto:    zstd.SpeedDefault,
			CompressFastest: zstd.SpeedFastest,
			CompressMax:     zstd.SpeedBetterCompression,
		} {
			// EncodeAll calls share Concurrency encoders. No frame
			// checksum: every blob is authenticated by AES-GCM already.
			e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(cpus.N()), zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
			if err != nil {
				panic(err) // static options; cannot fail
			}
			encoders[c] = e
		}
	})
	e := encoders[c]
	if e == nil {
		e = encoders[CompressAuto]
	}
	return e.EncodeAll(src, dst), true
}

// compressZstdLevel is compressZstd at the preset nearest a C library
// level: 1 fastest, 2 to 6 default, 7 and above better compression.
func compressZstdLevel(dst, src []byte, level int) (out []byte, ok bool) {
	c := CompressAuto
	switch {
	case level <= 1:
		c = CompressFastest
	case level >= maxZstdLevel:
		c = CompressMax
	}
	return compressZstd(dst, src, c)
}
