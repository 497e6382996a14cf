// Package chunking splits files and streams into content-defined chunks and
// zero regions, and computes chunk IDs.
//
// # Model
//
// A file is divided into segments at fixed file offsets that are multiples
// of Config.SegmentSize (32 MiB by default). Segments are independent: each
// is read into its own buffer and chunked with a freshly reset Rabin
// chunker (github.com/restic/chunker), so the segments of a large disk image
// can be chunked on all cores at once, and no chunk ever crosses a segment
// boundary. Config.Plan produces the segments (Config.PlanData only those
// holding data, for files whose holes are far larger than their data);
// Chunker.ChunkSegment chunks one of them; the caller runs many
// ChunkSegment calls in a worker pool and concatenates the results in
// segment order.
//
// Within a segment the bytes are classified in blocks of Config.ZeroBlock
// bytes (64 KiB by default) aligned to the file offset. A block that is
// entirely zero — whether it is a hole reported by SEEK_HOLE or allocated
// data that happens to be zero — belongs to a zero region. Adjacent zero
// blocks merge into one Zero extent, which is neither stored, chunked nor
// hashed. The non-zero runs between zero regions are chunked with
// content-defined chunking (CDC); a zero region always ends the chunk
// before it, and the chunker is reset after it. Holes are never read: bytes
// of a hole that share a block with data are filled with zeros in memory.
//
// The classification depends only on the file's bytes, not on how they are
// allocated: a sparse file, the same file fully allocated, and the same
// bytes read from a pipe with ChunkStream all give identical extents.
//
// # Stability
//
// Because segment boundaries are fixed file offsets, an in-place change to a
// disk image (the common case: a guest rewrites some blocks) affects only
// the chunks that overlap the change, and perhaps the next one, until CDC
// resynchronises. Boundaries in other segments are unaffected. Inserting or
// deleting bytes shifts the content against the fixed segment grid: inside
// each segment CDC resynchronises after the first chunk, but the first and
// last chunk of every segment after the edit change. That is the price of
// parallel chunking and is irrelevant for disk images, whose size and
// layout are fixed.
//
// # Chunk IDs
//
// A chunk ID is the keyed BLAKE3-256 hash of the chunk's plaintext (see
// Hasher), so a storage provider that sees IDs cannot confirm guesses about
// content without the key.
package chunking
