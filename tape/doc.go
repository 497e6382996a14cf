// Package tape owns drpipe's LTO tape support: the Drive and Changer
// seams (a Linux st driver, a file-backed virtual drive and changer), the
// on-tape format (docs/TAPE-FORMAT.md), tape sets with parity across
// tapes, the catalog database, media pools with GFS rotation, and the
// writer, scanner and restore planner built on them.
//
// # Data model
//
// A cartridge carries a volume label (file 0) that names its barcode, its
// pool and a random volume UUID. A tape set ("media set") is what one
// `tape write` run produces: the repository objects needed by a list of
// snapshots — config, key slots, index and snapshot objects (the
// "metadata", copied to every tape of the set) and the erasure-coded pack
// shards (each shard object on exactly one tape). The shards of a pack
// are spread over the set's columns so that the set survives the loss of
// any Parity tapes: a column is a chain of tapes (more than one when the
// column's share does not fit on one cartridge) and holds at most
// PerTape shards of any pack (see Layout). Objects are never split
// across tapes: an object cut short by the end of the medium is written
// again, whole, on the next tape of its column.
//
// The catalog database (Catalog) records, per set, which object is on
// which tape at which file and offset, and per cartridge its pool, set,
// location and status. Every tape also carries its own catalog as its last
// file, and everything in the database except the library's location data
// can be rebuilt by scanning the tapes (Rebuild).
//
// Pools (Pool) carry the retention policy: GFS levels (daily, weekly,
// monthly, yearly) with their retention, which levels go offsite, and
// whether the pool uses WORM media. A tape is overwritten only when the
// set it holds has expired; WORM tapes are never reused.
//
// Concurrency: a Drive or Changer is used by one goroutine at a time
// unless its documentation says otherwise. The writer runs one goroutine
// per drive plus one reader per column feeding a bounded buffer. The
// engine never prints; progress goes through the Progress interface.
package tape
