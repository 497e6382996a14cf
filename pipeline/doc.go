// Package pipeline owns the staged, concurrent backup and restore
// pipelines: walking sources, parallel segment chunking of large files,
// deduplication against the repository index, building trees and
// snapshots, and writing restored files (sparse, with modes, owners and
// times). It reports progress through the Progress interface and never
// prints.
//
// Backup stages: a walker visits the sources in sorted order and queues one
// job per file segment (package chunking splits big files into independent
// segments); a pool of workers reads, zero-detects, chunks, hashes,
// deduplicates, compresses and encrypts; the repository packs and uploads
// in the background. Directory trees are saved bottom-up as their entries
// complete. The snapshot is written only after Flush made every blob
// durable.
//
// Restore stages: a walker creates directories, symlinks and empty sparse
// files; file extents are batched, grouped by pack, and a pool of readers
// fetches each pack's blobs with ranged reads and writes them at their
// offsets. Zero extents are never written, so holes stay holes.
package pipeline

import (
	"sync"
	"sync/atomic"
	"time"
)

// Progress receives counters from a running backup or restore. Methods may
// be called from several goroutines at once.
type Progress interface {
	// AddTotal grows the expected totals as the scanner finds work.
	AddTotal(files, bytes int64)
	// AddDone reports finished work.
	AddDone(files, bytes int64)
	// Warn reports a problem with one item that did not stop the run.
	Warn(path string, err error)
}

// NoProgress discards progress.
type NoProgress struct{}

// AddTotal implements Progress.
func (NoProgress) AddTotal(int64, int64) {}

// AddDone implements Progress.
func (NoProgress) AddDone(int64, int64) {}

// Warn implements Progress.
func (NoProgress) Warn(string, error) {}

// Counter is a Progress that keeps totals; the CLI renders it.
type Counter struct {
	TotalFiles, TotalBytes atomic.Int64
	DoneFiles, DoneBytes   atomic.Int64
	Start                  time.Time

	mu    sync.Mutex
	warns []Warning
	// OnWarn, if set, is called for each warning as it happens.
	OnWarn func(Warning)
}

// Warning is a non-fatal problem with one item.
type Warning struct {
	Path string
	Err  error
}

// AddTotal implements Progress.
func (c *Counter) AddTotal(f, b int64) { c.TotalFiles.Add(f); c.TotalBytes.Add(b) }

// AddDone implements Progress.
func (c *Counter) AddDone(f, b int64) { c.DoneFiles.Add(f); c.DoneBytes.Add(b) }

// Warn implements Progress.
func (c *Counter) Warn(p string, err error) {
	w := Warning{Path: p, Err: err}
	c.mu.Lock()
	c.warns = append(c.warns, w)
	f := c.OnWarn
	c.mu.Unlock()
	if f != nil {
		f(w)
	}
}

// Warnings returns the warnings so far.
func (c *Counter) Warnings() []Warning {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Warning(nil), c.warns...)
}
