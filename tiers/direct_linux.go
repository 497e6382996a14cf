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
	directAlign = ReadAlign
	// directMin is the object size from which writes, and the size of a
	// ranged read from which reads, bypass the page cache; smaller objects
	// (index, snapshots, small packs) do not gain.
	directMin = 1 << 20
	// directChunk is the size of one direct write or read and of each
	// pooled aligned buffer (one per concurrent Put or ranged Load: a
	// dozen during a backup, one per reader during a restore).
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
	fd, fl, ok := setDirect(f)
	if !ok {
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

// setDirect turns on O_DIRECT for f and returns its descriptor and its
// flags before (to restore with setFlags); ok is false, and f unchanged,
// when the file system refuses the flag.
func setDirect(f *os.File) (fd, fl int, ok bool) {
	fd = int(f.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || setFlags(fd, fl|unix.O_DIRECT) != nil {
		return fd, fl, false
	}
	return fd, fl, true
}

func setFlags(fd, fl int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return err
}

// rangeReader returns a reader over [off, off+n) of f, which the caller
// opened for this read alone. Ranges of at least directMin bytes are read
// around the page cache, like large writes: a restore reads each pack
// range once, and filling the page cache costs more system time than the
// copy it saves (2 GiB of shards from a cold cache on the benchmark
// machine: 0.3 s of system time direct, 0.5 to 1.2 s buffered). Smaller
// ranges, and file systems that refuse O_DIRECT, go through the page
// cache. done returns the pooled buffer and f to ordinary I/O; call it
// after the last Read.
func rangeReader(f *os.File, off, n int64) (rd io.Reader, done func()) {
	buffered := io.NewSectionReader(f, off, n)
	if n < directMin {
		return buffered, func() {}
	}
	fd, fl, ok := setDirect(f)
	if !ok {
		return buffered, func() {}
	}
	d := &directReader{f: f, fd: fd, fl: fl, pos: off, end: off + n}
	return d, d.release
}

// directReader reads a byte range with O_DIRECT, in aligned blocks of
// directChunk bytes through a pooled aligned buffer.
type directReader struct {
	f        *os.File
	fd, fl   int     // f's descriptor and its flags without O_DIRECT
	pos, end int64   // next byte to deliver; end of the range
	bp       *[]byte // pooled buffer, taken on the first Read
	lo       int64   // file offset of the buffer's first byte
	have     int     // valid bytes in the buffer
	buffered bool    // O_DIRECT reads were refused: read through the page cache
	direct   int64   // bytes read straight into the caller's memory (tests)
}

func (d *directReader) Read(p []byte) (int, error) {
	if d.pos >= d.end {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if d.buffered {
		m, err := d.f.ReadAt(p[:min(int64(len(p)), d.end-d.pos)], d.pos)
		d.pos += int64(m)
		if err == io.EOF && m > 0 {
			err = nil
		}
		return m, err
	}
	inBuf := d.pos >= d.lo && d.pos < d.lo+int64(d.have)
	// Whole blocks go straight into p when the position and p's memory
	// are both block-aligned (no copy through the pooled buffer), if the
	// read is worth a device request of its own.
	if !inBuf && d.pos%directAlign == 0 && memAligned(p) {
		if want := d.straight(d.pos, int64(len(p))); want > 0 {
			m, err := d.fill(p[:want], d.pos)
			if err == unix.EINVAL {
				return d.refused(p)
			}
			if err != nil {
				return 0, &os.PathError{Op: "read", Path: d.f.Name(), Err: err}
			}
			d.direct += int64(m)
			if m == 0 {
				return 0, io.EOF // the file is shorter than the range
			}
			d.pos += int64(m)
			return m, nil
		}
	}
	if d.bp == nil {
		d.bp = directBufs.Get().(*[]byte)
	}
	buf := *d.bp
	if !inBuf {
		d.lo = d.pos &^ (directAlign - 1)
		// Never read past the range's last block.
		want := min(int64(len(buf)), (d.end-d.lo+directAlign-1)&^(directAlign-1))
		if next := d.lo + directAlign; placedFor(p, d.pos) && int64(len(p)) > next-d.pos && d.straight(next, int64(len(p))-(next-d.pos)) > 0 {
			// p continues block-aligned after this block: read only the
			// block, so that the rest goes straight into p.
			want = min(want, directAlign)
		}
		m, err := d.fill(buf[:want], d.lo)
		if err == unix.EINVAL {
			return d.refused(p)
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: d.f.Name(), Err: err}
		}
		d.have = m
		if d.pos >= d.lo+int64(d.have) {
			return 0, io.EOF // the file is shorter than the range
		}
	}
	k := copy(p, buf[d.pos-d.lo:min(int64(d.have), d.end-d.lo)])
	d.pos += int64(k)
	return k, nil
}

// straight is how many bytes, from file offset from on, a read of room
// bytes of caller memory would take straight from the device: whole blocks
// within the range, if they make a full chunk or reach the range's last
// whole block; 0 otherwise. Smaller reads (a stream copied through 32 KiB
// buffers) go through the pooled buffer in chunks, one request per MiB
// instead of one per call.
func (d *directReader) straight(from, room int64) int64 {
	want := min(room, d.end-from) &^ (directAlign - 1)
	if want <= 0 || (want < directChunk && from+want < d.end&^(directAlign-1)) {
		return 0
	}
	return want
}

// refused handles EINVAL from an O_DIRECT read (the file system takes the
// flag but not this alignment): the flag is cleared and the read goes on
// through the page cache from the same position.
func (d *directReader) refused(p []byte) (int, error) {
	if err := setFlags(d.fd, d.fl); err != nil {
		return 0, &os.PathError{Op: "read", Path: d.f.Name(), Err: err}
	}
	d.buffered = true
	d.have = 0
	return d.Read(p)
}

// memAligned reports whether p starts on a directAlign boundary in memory.
func memAligned(p []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}

// placedFor reports whether p, to be filled from file offset pos on, is
// placed as Placed places buffers: each later block boundary of the file
// falls on a block boundary of memory.
func placedFor(p []byte, pos int64) bool {
	addr := int64(uintptr(unsafe.Pointer(unsafe.SliceData(p))) % directAlign)
	return addr == pos%directAlign
}

// fill reads b from file offset off on, continuing after short reads that
// stop on a block boundary; it stops at the end of the file (a read of 0
// bytes, or one that ends inside a block).
func (d *directReader) fill(b []byte, off int64) (int, error) {
	got := 0
	for got < len(b) {
		m, err := unix.Pread(d.fd, b[got:], off+int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return got, err
		}
		got += m
		if m == 0 || got%directAlign != 0 {
			break
		}
	}
	return got, nil
}

// release returns the pooled buffer and f to ordinary I/O.
func (d *directReader) release() {
	if d.bp != nil {
		directBufs.Put(d.bp)
		d.bp = nil
	}
	if !d.buffered {
		d.buffered = true
		_ = setFlags(d.fd, d.fl)
	}
}
