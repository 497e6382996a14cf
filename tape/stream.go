package tape

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/drpipe/drpipe/tiers"
)

// fileWriter cuts the byte stream of one tape file into records. It is
// the "Finish or Abort" writable: the file is complete on tape only after
// Finish returned nil; Abort leaves an unterminated file that readers
// recognise as incomplete (no end entry). After the first error every
// call returns it.
type fileWriter struct {
	ctx  context.Context
	d    Drive
	kind Kind
	rec  []byte // header room + payload being filled
	fill int    // payload bytes in rec
	seq  uint32
	// off counts stream bytes accepted; written counts stream bytes in
	// records the drive accepted.
	off, written int64
	ew           bool
	err          error
	objects      uint64
	objBytes     uint64
	hash         hash.Hash
	objLeft      int64
	// stall measures time spent inside the drive (for rate reporting).
	onRecord func(n int)
}

func newFileWriter(ctx context.Context, d Drive, h FileHeader, recSize int) *fileWriter {
	w := &fileWriter{ctx: ctx, d: d, kind: h.Kind, rec: make([]byte, recSize), hash: sha256.New()}
	w.write(h.append(nil))
	return w
}

func (w *fileWriter) payloadCap() int { return len(w.rec) - recordHeaderSize }

// write appends stream bytes, writing every full record.
func (w *fileWriter) write(p []byte) {
	for len(p) > 0 && w.err == nil {
		n := copy(w.rec[recordHeaderSize+w.fill:], p)
		w.fill += n
		w.off += int64(n)
		p = p[n:]
		if w.fill == w.payloadCap() {
			w.flushRecord()
		}
	}
}

func (w *fileWriter) flushRecord() {
	if w.err != nil || w.fill == 0 {
		return
	}
	if err := w.ctx.Err(); err != nil {
		w.err = err
		return
	}
	payload := w.rec[recordHeaderSize : recordHeaderSize+w.fill]
	h := w.rec[:recordHeaderSize]
	copy(h[:4], recordMagic)
	h[4] = recordVersion
	h[5] = byte(w.kind)
	h[6], h[7] = 0, 0
	binary.LittleEndian.PutUint32(h[8:], w.seq)
	binary.LittleEndian.PutUint32(h[12:], uint32(w.fill))
	binary.LittleEndian.PutUint32(h[16:], crc(payload))
	binary.LittleEndian.PutUint32(h[20:], crc(h[:20]))
	ew, err := w.d.WriteRecord(w.ctx, w.rec[:recordHeaderSize+w.fill])
	if err != nil {
		w.err = fmt.Errorf("write record %d of %s file on %s: %w", w.seq, w.kind, w.d.Name(), err)
		return
	}
	if ew {
		w.ew = true
	}
	if w.onRecord != nil {
		w.onRecord(w.fill)
	}
	w.seq++
	w.written = w.off
	w.fill = 0
}

// BeginObject starts an object entry and returns its stream offset.
func (w *fileWriter) BeginObject(h ObjectHeader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.objLeft != 0 {
		return 0, errors.New("tape: BeginObject while an object is open")
	}
	b, err := h.append(nil)
	if err != nil {
		return 0, err
	}
	off := w.off
	w.write(b)
	w.hash.Reset()
	w.objLeft = h.Size
	if h.Size == 0 {
		w.endObject()
	}
	return off, w.err
}

// Write adds object content; more than the announced size is an error.
func (w *fileWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if int64(len(p)) > w.objLeft {
		return 0, fmt.Errorf("tape: object content exceeds its announced size by %d bytes", int64(len(p))-w.objLeft)
	}
	w.hash.Write(p)
	w.write(p)
	w.objLeft -= int64(len(p))
	if w.objLeft == 0 && w.err == nil {
		w.endObject()
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

func (w *fileWriter) endObject() {
	var t [objTrailerSize]byte
	copy(t[:4], objTrailerMagic)
	w.hash.Sum(t[4:4])
	w.write(t[:])
	w.objects++
}

// Committed returns the stream bytes the drive has accepted so far: an
// object whose entry ends at or before it is on tape.
func (w *fileWriter) Committed() int64 { return w.written }

// Offset returns the stream bytes accepted so far.
func (w *fileWriter) Offset() int64 { return w.off }

// EarlyWarning reports whether a record landed past the early warning.
func (w *fileWriter) EarlyWarning() bool { return w.ew }

// Err returns the sticky error.
func (w *fileWriter) Err() error { return w.err }

// Finish writes the end entry, the last record and a filemark, and syncs.
func (w *fileWriter) Finish() error {
	if w.err != nil {
		return w.err
	}
	if w.objLeft != 0 {
		return fmt.Errorf("tape: finish with %d bytes of an object missing", w.objLeft)
	}
	w.write(appendEnd(nil, w.objects, uint64(w.off)))
	w.flushRecord()
	if w.err != nil {
		return w.err
	}
	if err := w.d.WriteFilemarks(w.ctx, 1); err != nil {
		w.err = fmt.Errorf("write filemark on %s: %w", w.d.Name(), err)
		return w.err
	}
	if err := w.d.Sync(w.ctx); err != nil {
		w.err = fmt.Errorf("flush %s: %w", w.d.Name(), err)
		return w.err
	}
	return nil
}

// Abort terminates the file without an end entry (best effort: at the
// physical end of the medium even the filemark may fail).
func (w *fileWriter) Abort() error {
	if w.err == nil {
		w.err = errors.New("tape: file aborted")
	}
	return w.d.WriteFilemarks(w.ctx, 1)
}

// recordReader reads the records of one file and exposes their payloads
// as a byte stream. io.EOF means the file ended with a filemark;
// errUnterminated means the recorded data ended without one.
type recordReader struct {
	ctx      context.Context
	d        Drive
	buf      []byte
	payload  []byte
	seq      uint32
	kind     Kind
	done     error
	consumed int64
}

var errUnterminated = errors.New("tape: file ends without a filemark")

func newRecordReader(ctx context.Context, d Drive, buf []byte) *recordReader {
	if len(buf) < MaxRecordSize {
		buf = make([]byte, MaxRecordSize)
	}
	return &recordReader{ctx: ctx, d: d, buf: buf}
}

func (r *recordReader) next() error {
	if r.done != nil {
		return r.done
	}
	if err := r.ctx.Err(); err != nil {
		return err
	}
	n, err := r.d.ReadRecord(r.ctx, r.buf)
	switch {
	case errors.Is(err, ErrFilemark):
		r.done = io.EOF
		return r.done
	case errors.Is(err, ErrEndOfData):
		r.done = errUnterminated
		return r.done
	case err != nil:
		r.done = fmt.Errorf("read %s: %w", r.d.Name(), err)
		return r.done
	}
	h, p, err := ParseRecord(r.buf[:n])
	if err != nil {
		r.done = fmt.Errorf("record %d on %s: %w", r.seq, r.d.Name(), err)
		return r.done
	}
	if h.Seq != r.seq || (r.seq > 0 && h.Kind != r.kind) {
		r.done = fmt.Errorf("%w: record %d of a %s file on %s is numbered %d (%s): a record is missing", ErrCorrupt, r.seq, r.kind, r.d.Name(), h.Seq, h.Kind)
		return r.done
	}
	r.kind = h.Kind
	r.seq++
	r.payload = p
	return nil
}

func (r *recordReader) Read(p []byte) (int, error) {
	for len(r.payload) == 0 {
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.payload)
	r.payload = r.payload[n:]
	r.consumed += int64(n)
	return n, nil
}

// skipToEnd reads and drops the rest of the file up to its filemark.
func (r *recordReader) skipToEnd() error {
	for {
		r.payload = nil
		if err := r.next(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// ObjectVisit is what ScanFile reports for each object.
type ObjectVisit struct {
	Header ObjectHeader
	Offset int64 // stream offset of the object header
	// Body yields the object's bytes; at its end it checks the SHA-256
	// trailer and returns an error wrapping ErrCorrupt instead of io.EOF
	// when it does not match. A visitor that does not read it fully
	// leaves the rest to be skipped.
	Body io.Reader
	sum  [32]byte
}

// FileScan is the outcome of scanning one file.
type FileScan struct {
	Header FileHeader
	// Complete is true when the file has its end entry and filemark;
	// an incomplete file was cut by the end of the medium or a crash:
	// only objects reported before the cut are whole.
	Complete bool
	Objects  int
	// Unterminated is true when the recorded data ended inside the file.
	Unterminated bool
}

// ScanFile reads one metadata or data file from the drive's current
// position (the start of the file) to its filemark, calling visit for
// every whole object. Objects whose content or trailer is damaged make
// ScanFile return an error wrapping ErrCorrupt after visit saw the error
// from Body. The drive ends after the file's filemark.
func ScanFile(ctx context.Context, d Drive, buf []byte, visit func(*ObjectVisit) error) (*FileScan, error) {
	return scanFile(newRecordReader(ctx, d, buf), visit)
}

func scanFile(rr *recordReader, visit func(*ObjectVisit) error) (*FileScan, error) {
	d := rr.d
	res := &FileScan{}
	var hb [fileHeaderSize]byte
	if _, err := io.ReadFull(rr, hb[:]); err != nil {
		return res, streamErr(rr, err, "file header")
	}
	fh, err := ParseFileHeader(hb[:])
	if err != nil {
		return res, fmt.Errorf("on %s: %w", d.Name(), err)
	}
	res.Header = fh
	var head []byte
	for {
		off := rr.consumed
		head = head[:0]
		var m [4]byte
		if _, err := io.ReadFull(rr, m[:]); err != nil {
			return finishScan(res, rr, err)
		}
		head = append(head, m[:]...)
		switch string(m[:]) {
		case endMagic:
			var rest [endSize - 4]byte
			if _, err := io.ReadFull(rr, rest[:]); err != nil {
				return finishScan(res, rr, err)
			}
			head = append(head, rest[:]...)
			if crc(head[:endSize-4]) != binary.LittleEndian.Uint32(head[endSize-4:]) {
				return res, fmt.Errorf("%w: end entry checksum mismatch in file %d on %s", ErrCorrupt, fh.FileNo, d.Name())
			}
			if n := binary.LittleEndian.Uint64(head[8:16]); n != uint64(res.Objects) {
				return res, fmt.Errorf("%w: file %d on %s ends saying %d objects, found %d", ErrCorrupt, fh.FileNo, d.Name(), n, res.Objects)
			}
			if err := rr.skipToEnd(); err != nil {
				return finishScan(res, rr, err)
			}
			res.Complete = true
			return res, nil
		case objMagic:
			var fixed [objFixed - 4 - 4]byte // type..size
			if _, err := io.ReadFull(rr, fixed[:]); err != nil {
				return finishScan(res, rr, err)
			}
			head = append(head, fixed[:]...)
			rest := make([]byte, int(head[5])+4)
			if _, err := io.ReadFull(rr, rest); err != nil {
				return finishScan(res, rr, err)
			}
			head = append(head, rest...)
			oh, _, err := parseObjectHeader(head)
			if err != nil {
				return res, fmt.Errorf("file %d on %s at offset %d: %w", fh.FileNo, d.Name(), off, err)
			}
			body := &objectBody{r: rr, left: oh.Size, h: sha256.New()}
			v := &ObjectVisit{Header: oh, Offset: off, Body: body}
			verr := visit(v)
			if verr == nil && !body.done {
				_, verr = io.Copy(io.Discard, body)
			}
			if verr != nil {
				if body.cut != nil {
					return finishScan(res, rr, body.cut)
				}
				return res, verr
			}
			res.Objects++
		default:
			return res, fmt.Errorf("%w: file %d on %s: unknown entry %q at offset %d", ErrCorrupt, fh.FileNo, d.Name(), m[:], off)
		}
	}
}

// finishScan turns the end of the stream inside an entry into an
// incomplete (but not failed) scan.
func finishScan(res *FileScan, rr *recordReader, err error) (*FileScan, error) {
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return res, nil
	case errors.Is(err, errUnterminated):
		res.Unterminated = true
		return res, nil
	}
	return res, err
}

func streamErr(rr *recordReader, err error, what string) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF || errors.Is(err, errUnterminated) {
		return fmt.Errorf("%w: file ends inside its %s on %s", ErrCorrupt, what, rr.d.Name())
	}
	return err
}

// objectBody reads one object's content and verifies its trailer.
type objectBody struct {
	r    *recordReader
	left int64
	h    hash.Hash
	done bool
	cut  error // the stream ended inside the object
}

func (b *objectBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.left == 0 {
		var t [objTrailerSize]byte
		if _, err := io.ReadFull(b.r, t[:]); err != nil {
			return 0, b.fail(err)
		}
		if string(t[:4]) != objTrailerMagic || string(b.h.Sum(nil)) != string(t[4:]) {
			return 0, fmt.Errorf("%w: object content does not match its SHA-256 on %s", ErrCorrupt, b.r.d.Name())
		}
		b.done = true
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.h.Write(p[:n])
	b.left -= int64(n)
	if err != nil {
		return n, b.fail(err)
	}
	return n, nil
}

func (b *objectBody) fail(err error) error {
	if err == io.EOF || errors.Is(err, errUnterminated) {
		b.cut = err
		return fmt.Errorf("%w: object cut short by the end of the file", io.ErrUnexpectedEOF)
	}
	return err
}

// objectHandle converts a visit's header to a tiers handle.
func (o ObjectHeader) handle() tiers.Handle { return tiers.Handle{Type: o.Type, Name: o.Name} }
