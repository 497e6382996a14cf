//go:build !linux

package tiers

import (
	"io"
	"os"
)

// copyToFile writes exactly size bytes from src to f (io.CopyN's
// contract). Only Linux has the direct-I/O path.
func copyToFile(f *os.File, src io.Reader, size int64) (int64, error) {
	return io.CopyN(f, src, size)
}

// rangeReader returns a reader over [off, off+n) of f, through the page
// cache (only Linux has the direct-I/O path).
func rangeReader(f *os.File, off, n int64) (rd io.Reader, done func()) {
	return io.NewSectionReader(f, off, n), func() {}
}
