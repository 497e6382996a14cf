package vmdisk

import (
	"fmt"
	"io"
	"os"

	"github.com/drpipe/drpipe/chunking"
)

// rawImpl is a raw image: the file is the virtual disk. Its map lists the
// file's data ranges (SEEK_DATA/SEEK_HOLE); holes read as zeros.
type rawImpl struct {
	f    io.ReaderAt
	file *os.File // set when f is a file: SEEK_DATA works
	name string
	size int64
}

func openRaw(f io.ReaderAt, name string, size int64, info *Info) (impl, error) {
	info.VirtualSize = size
	return &rawImpl{f: f, name: name, size: size}, nil
}

func (r *rawImpl) lookup(off, limit int64) (Kind, int64, error) { return Data, limit, nil }

func (r *rawImpl) readData(p []byte, off int64) error {
	n, err := r.f.ReadAt(p, off)
	if n < len(p) {
		if err == nil {
			err = fmt.Errorf("short read")
		}
		// The file shrank after it was opened: report, do not invent data.
		return fmt.Errorf("%s: read %d bytes at %d: %w", r.name, len(p), off, err)
	}
	return nil
}

func (r *rawImpl) runs() ([]Run, error) {
	if r.file == nil {
		if r.size == 0 {
			return nil, nil
		}
		return []Run{{0, r.size, Data}}, nil
	}
	rs, err := dataRanges(r.file, r.size)
	if err != nil {
		return nil, fmt.Errorf("%s: find allocated ranges: %w", r.name, err)
	}
	out := make([]Run, len(rs))
	for i, x := range rs {
		out[i] = Run{x.Off, x.Len, Data}
	}
	return out, nil
}

// dataRanges lists the allocated ranges of f (chunking.DataRanges): on
// file systems without SEEK_DATA the whole file is one range, and a file
// that shrank below size is an error, not a tail of zeros.
func dataRanges(f *os.File, size int64) ([]Range, error) {
	rs, err := chunking.DataRanges(f, size)
	if err != nil {
		return nil, err
	}
	out := make([]Range, len(rs))
	for i, r := range rs {
		out[i] = Range{r.Off, r.Len}
	}
	return out, nil
}
