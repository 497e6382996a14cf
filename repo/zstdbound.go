package repo

import (
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstdMaxBlock is the most one zstd block holds or decodes to (the zstd
// format's Block_Maximum_Size); the decoder refuses larger blocks.
const zstdMaxBlock = 128 << 10

// zstdBound returns an upper bound of what src, a sequence of zstd frames,
// decodes to, read from the frame and block headers alone: nothing is
// decompressed or allocated, so a hostile payload is refused before it
// costs memory. A frame that records its content size counts that size,
// which must fit in what its blocks can hold (so a few bytes cannot claim
// 64 MiB); a frame without it counts the sizes of its raw and RLE blocks
// and, per compressed block, its window or zstdMaxBlock if that is less
// (the encoder omits the size of content under 256 bytes, in a 1 KiB
// window). Skippable frames count nothing.
//
// slack is the room a decoding buffer needs beyond the bound so that the
// decoder never reallocates it: a frame whose blocks hold more than its
// recorded size is caught by the decoder only after the block that
// crosses it, which is at most min(window, zstdMaxBlock) bytes. A buffer
// of bound+slack bytes is all that decoding src may allocate.
//
// It fails, wrapping ErrTooLarge, when the bound exceeds limit or a frame
// declares a window above MaxBlobSize (which the decoder refuses), and
// otherwise when src is not one or more whole frames (truncated, trailing
// bytes, reserved block type, oversized block) or a frame needs a
// dictionary (drpipe never writes one). The decoder still verifies the
// content.
func zstdBound(src []byte, limit int) (bound, slack int, err error) {
	if len(src) == 0 {
		return 0, 0, errors.New("no zstd frame")
	}
	total := 0
	for frame := 0; len(src) > 0; frame++ {
		var h zstd.Header
		rest, err := h.DecodeAndStrip(src)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, fmt.Errorf("zstd frame %d: truncated header (%d bytes left)", frame, len(src))
		}
		if err != nil {
			return 0, 0, fmt.Errorf("zstd frame %d: %w", frame, err)
		}
		if h.Skippable {
			if uint64(h.SkippableSize) > uint64(len(rest)) {
				return 0, 0, fmt.Errorf("zstd skippable frame %d: %d bytes declared, %d left", frame, h.SkippableSize, len(rest))
			}
			src = rest[h.SkippableSize:]
			continue
		}
		if h.WindowSize > MaxBlobSize {
			return 0, 0, fmt.Errorf("%w: zstd frame %d declares a %d-byte window, more than the %d bytes drpipe decodes with", ErrTooLarge, frame, h.WindowSize, MaxBlobSize)
		}
		if h.DictionaryID != 0 {
			return 0, 0, fmt.Errorf("zstd frame %d needs dictionary %d; drpipe writes none", frame, h.DictionaryID)
		}
		if h.HasFCS && h.FrameContentSize > uint64(limit-total) {
			return 0, 0, fmt.Errorf("%w: zstd frame %d declares %d bytes of content, more than the %d-byte limit", ErrTooLarge, frame, h.FrameContentSize, limit)
		}
		// No block decodes to more than the window (the decoder checks
		// every block against it): min(window, zstdMaxBlock) bounds a
		// compressed block and the overshoot of a frame that holds more
		// than it declares.
		window := h.WindowSize
		if h.SingleSegment {
			window = max(h.FrameContentSize, zstd.MinWindowSize)
		}
		blockMax := int(min(window, zstdMaxBlock))
		// Walk the blocks: 3-byte header (last flag, type, size), then
		// size bytes (raw, compressed) or one byte (RLE).
		blocks := 0 // most the blocks decode to, saturating at limit+1
		for last := false; !last; {
			if len(rest) < 3 {
				return 0, 0, fmt.Errorf("zstd frame %d: truncated block header", frame)
			}
			bh := uint32(rest[0]) | uint32(rest[1])<<8 | uint32(rest[2])<<16
			rest = rest[3:]
			last = bh&1 != 0
			size := int(bh >> 3)
			if size > zstdMaxBlock {
				return 0, 0, fmt.Errorf("zstd frame %d: block of %d bytes, more than the %d-byte maximum", frame, size, zstdMaxBlock)
			}
			stored, out := size, size
			switch (bh >> 1) & 3 {
			case 0: // raw
			case 1: // RLE: one byte repeated size times
				stored = 1
			case 2: // compressed
				out = blockMax
			default:
				return 0, 0, fmt.Errorf("zstd frame %d: reserved block type", frame)
			}
			if stored > len(rest) {
				return 0, 0, fmt.Errorf("zstd frame %d: truncated block (%d bytes declared, %d left)", frame, stored, len(rest))
			}
			rest = rest[stored:]
			blocks = min(blocks+out, limit+1)
			if !h.HasFCS && blocks > limit-total {
				return 0, 0, fmt.Errorf("%w: zstd frame %d may expand to more than the %d-byte limit", ErrTooLarge, frame, limit)
			}
		}
		if h.HasCheckSum {
			if len(rest) < 4 {
				return 0, 0, fmt.Errorf("zstd frame %d: truncated checksum", frame)
			}
			rest = rest[4:]
		}
		n := blocks
		if h.HasFCS {
			if h.FrameContentSize > uint64(blocks) {
				return 0, 0, fmt.Errorf("zstd frame %d declares %d bytes of content, but its blocks hold at most %d", frame, h.FrameContentSize, blocks)
			}
			n = int(h.FrameContentSize)
			slack = max(slack, blockMax)
		}
		total += n
		src = rest
	}
	return total, slack, nil
}
