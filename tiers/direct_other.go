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
