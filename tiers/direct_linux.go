package tiers

import (
	"errors"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Large objects are written with O_DIRECT: on virtualised hosts copying
// into the page cache and writing it back costs more CPU than compressing
// the data did (1 GiB: 2.0 s of system time buffered, 0.1 s direct, on the
// benchmark machine), and a backup never reads its own output back.
const (
	// directAlign is the buffer, offset and length alignment O_DIRECT
	// needs: the largest logical block size in common use.
	directAlign = 4096
	// directMin is the object size from which writes bypass the page
	// cache; smaller objects (index, snapshots, small packs) do not gain.
	directMin = 1 << 20
	// directChunk is the size of one direct write and of each pooled
	// aligned buffer (one per concurrent Put: a dozen during a backup).
	directChunk = 1 << 20
)

var directBufs = sync.Pool{New: func() any {
	b := make([]byte, directChunk+directAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	b = b[off : off+directChunk : off+directChunk]
	return &b
}}

// copyToFile writes exactly size bytes from src to the new, empty file f
// and reports how many bytes it took from src; a src shorter than size
// gives io.EOF (as io.CopyN does). Large objects go around the page cache
// when the file system allows it, otherwise through it.
func copyToFile(f *os.File, src io.Reader, size int64) (int64, error) {
	if size < directMin {
		return io.CopyN(f, src, size)
	}
	fd := int(f.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || setFlags(fd, fl|unix.O_DIRECT) != nil {
		return io.CopyN(f, src, size)
	}
	bp := directBufs.Get().(*[]byte)
	defer directBufs.Put(bp)
	buf := *bp
	var n int64
	direct := true
	for n < size {
		m, rerr := io.ReadFull(src, buf[:min(int64(len(buf)), size-n)])
		chunk := buf[:m]
		if direct && m > 0 {
			// Whole blocks go around the page cache. A last partial block
			// goes through it: padding it and cutting the file back would
			// make the file system read that block back from disk,
			// synchronously, to zero its tail.
			aligned := m &^ (directAlign - 1)
			if aligned > 0 {
				if _, werr := f.Write(buf[:aligned]); werr != nil {
					if !errors.Is(werr, unix.EINVAL) || n > 0 {
						return n, werr
					}
					// The file system refuses O_DIRECT (or this
					// alignment): nothing was written; go on through the
					// page cache.
					aligned = 0
				}
			}
			chunk = buf[aligned:m]
			if len(chunk) > 0 {
				direct = false
				if err := setFlags(fd, fl); err != nil {
					return n, err
				}
			}
		}
		if !direct && len(chunk) > 0 {
			if _, werr := f.Write(chunk); werr != nil {
				return n, werr
			}
		}
		n += int64(m)
		if rerr != nil {
			if errors.Is(rerr, io.ErrUnexpectedEOF) {
				rerr = io.EOF
			}
			return n, rerr
		}
	}
	if direct {
		if err := setFlags(fd, fl); err != nil {
			return n, err
		}
	}
	return n, nil
}

func setFlags(fd, fl int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return err
}
