package chunking

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// DataRanges returns the allocated ranges of the first size bytes of f,
// sorted and merged, using lseek(SEEK_DATA/SEEK_HOLE). Everything outside
// them is a hole that reads as zeros. An all-hole or empty file gives no
// ranges.
//
// Where the file system or file type cannot report holes the result is one
// range covering [0, size), which is always correct, merely slower. If the
// file turns out to have shrunk below size, DataRanges fails rather than
// report the missing tail as a hole. The file offset of f is restored.
func DataRanges(f *os.File, size int64) ([]Range, error) {
	if size <= 0 {
		return nil, nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return []Range{{0, size}}, nil
	}
	var out []Range
	var serr error
	if err := rc.Control(func(fd uintptr) { out, serr = seekRanges(int(fd), size) }); err != nil {
		return nil, fmt.Errorf("chunking: finding holes in %s: %w", f.Name(), err)
	}
	if serr != nil {
		return nil, fmt.Errorf("chunking: finding holes in %s: %w", f.Name(), serr)
	}
	return out, nil
}

func seekRanges(fd int, size int64) ([]Range, error) {
	cur, err := unix.Seek(fd, 0, io.SeekCurrent)
	if err != nil { // not seekable: no hole information
		return []Range{{0, size}}, nil
	}
	defer unix.Seek(fd, cur, io.SeekStart) // best effort; callers use ReadAt

	var out []Range
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			// No data at or after off: the rest is a hole, or off is past
			// the end of a file that shrank.
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err == nil && st.Size < size {
				return nil, fmt.Errorf("file is %d bytes, shorter than the expected %d: %w", st.Size, size, ErrShortRead)
			}
			break
		}
		if err != nil {
			// SEEK_DATA unsupported (EINVAL, EOPNOTSUPP, ...): treat the
			// rest as data.
			out = appendRange(out, Range{off, size - off})
			break
		}
		if d >= size {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil || h <= d || h > size {
			h = size
		}
		out = appendRange(out, Range{d, h - d})
		off = h
	}
	return out, nil
}

// appendRange appends r to sorted rs, merging it with the last range when
// they touch.
func appendRange(rs []Range, r Range) []Range {
	if n := len(rs); n > 0 && rs[n-1].End() >= r.Off {
		rs[n-1].Len = max(rs[n-1].End(), r.End()) - rs[n-1].Off
		return rs
	}
	return append(rs, r)
}
