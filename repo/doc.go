// Package repo owns the drpipe repository format: the config object, the
// password-wrapped master keys (key slots), packs of compressed and
// encrypted blobs stored as erasure-coded shards, index files, the local
// on-disk index cache, snapshots and trees, and the check and repair
// operations over them. docs/REPOSITORY-FORMAT.md is the normative
// description; the constants here carry its version numbers.
//
// Layering: repo sits on a tiers.Backend (it never touches files itself,
// except for the local index cache) and on package erasure for shards. It
// knows nothing of file systems or VM images; package pipeline turns files
// into blobs and trees and back.
//
// Write ordering (invariant "data before metadata"): a pack's shards are all
// durable before the pack appears in an index file, and index files are
// durable before a snapshot that references their blobs is written. A crash
// at any point leaves at worst unreferenced shards or index entries, which
// check reports as garbage and prune may remove.
//
// Concurrency: a *Repository is safe for concurrent use. Many processes on
// many hosts may write to one repository at once without locks: every object
// is immutable and content-addressed, so concurrent writers can only create
// duplicate blobs, never conflicting objects.
package repo
