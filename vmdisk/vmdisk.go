package vmdisk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
)

// Format names a container format. The names are stored in snapshots and
// never change meaning.
type Format string

// Container formats.
const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	VHD   Format = "vhd"
	VHDX  Format = "vhdx"
)

// ParseFormat maps a user-given name (raw, qcow2, vhd or vpc, vhdx) to a
// Format.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "raw", "img":
		return Raw, nil
	case "qcow2":
		return QCOW2, nil
	case "vhd", "vpc":
		return VHD, nil
	case "vhdx":
		return VHDX, nil
	}
	return "", fmt.Errorf("unknown disk format %q: use raw, qcow2, vhd or vhdx", s)
}

// Ext returns the usual file name extension of f, with the dot.
func (f Format) Ext() string {
	if f == Raw {
		return ".raw"
	}
	return "." + string(f)
}

// Range is a byte range [Off, Off+Len) of the virtual disk.
type Range struct{ Off, Len int64 }

// End returns Off+Len.
func (r Range) End() int64 { return r.Off + r.Len }

// Kind says what a layer holds for a range of the virtual disk.
type Kind uint8

// Kinds of runs.
const (
	// Unallocated ranges are read from the parent (zeros without one).
	Unallocated Kind = iota
	// Zero ranges read as zeros and hide the parent.
	Zero
	// Data ranges are stored in the layer.
	Data
)

// Run is a piece of a layer's own map.
type Run struct {
	Off, Len int64
	Kind     Kind
}

// End returns Off+Len.
func (r Run) End() int64 { return r.Off + r.Len }

// Limits bound what a parser accepts. The zero value selects the defaults.
type Limits struct {
	// MaxVirtualSize is the largest virtual disk accepted (default 64 TiB,
	// the VHDX maximum).
	MaxVirtualSize int64
	// MaxChain is the deepest backing chain followed (default 32).
	MaxChain int
	// MaxTableBytes bounds any single table read into memory (L1 table,
	// BAT; default 256 MiB).
	MaxTableBytes int64
	// OpenParent opens a backing file read-only (default: os.OpenFile
	// with O_NONBLOCK). A caller reading images on behalf of their owners
	// opens the parents with the owner's rights, so that an image does
	// not read, as its own data, a file its owner may not.
	OpenParent func(name string) (*os.File, error)
}

func (l Limits) withDefaults() Limits {
	if l.MaxVirtualSize <= 0 {
		l.MaxVirtualSize = 64 << 40
	}
	if l.MaxChain <= 0 {
		l.MaxChain = 32
	}
	if l.MaxTableBytes <= 0 {
		l.MaxTableBytes = 256 << 20
	}
	if l.OpenParent == nil {
		// O_NONBLOCK: a FIFO named by a hostile header must not block
		// open(2).
		l.OpenParent = func(name string) (*os.File, error) { return os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0) }
	}
	return l
}

// ErrMalformed is wrapped by every error about an image's bytes.
var ErrMalformed = errors.New("malformed disk image")

// ErrUnsupported is wrapped when an image uses a feature this package does
// not implement (encryption, external data files, a dirty VHDX log, ...).
var ErrUnsupported = errors.New("unsupported disk image feature")

// ErrChain is wrapped when a backing chain cannot be followed (missing
// parent, cycle, too deep, identity mismatch).
var ErrChain = errors.New("broken backing chain")

func malformed(name string, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", name, ErrMalformed, fmt.Sprintf(format, args...))
}

func unsupported(name string, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", name, ErrUnsupported, fmt.Sprintf(format, args...))
}

// impl is what each container format provides.
type impl interface {
	// lookup reports the kind of the run starting at virtual offset off
	// and its length, at least 1 and at most limit (off < size).
	lookup(off, limit int64) (Kind, int64, error)
	// readData fills p from the layer's own data; [off, off+len(p)) is
	// inside one Data run returned by lookup.
	readData(p []byte, off int64) error
	// runs lists the layer's Data and Zero runs, sorted and merged.
	runs() ([]Run, error)
}

// Layer is one opened image file: a container format over one file.
type Layer struct {
	// Info describes the container.
	Info Info
	f    io.Closer
	own  bool // close f in Close
	impl impl
}

// Info describes one image file.
type Info struct {
	Format      Format `json:"format"`
	Path        string `json:"-"`
	VirtualSize int64  `json:"virtual_size"`
	FileSize    int64  `json:"file_size"`
	// Backing is the parent reference as written in the image (qcow2
	// backing file name, VHD/VHDX relative or absolute locator), empty for
	// an image without a parent.
	Backing string `json:"backing,omitempty"`
	// BackingFormat is the parent's format when the image records it.
	BackingFormat Format `json:"backing_format,omitempty"`
	// Format-specific parameters, enough to write a similar container.
	QCOW2 *QCOW2Params `json:"qcow2,omitempty"`
	VHD   *VHDParams   `json:"vhd,omitempty"`
	VHDX  *VHDXParams  `json:"vhdx,omitempty"`

	backingCandidates []string // paths to try for the parent, best first
	identity          []byte   // what a child's parent link must match (VHD UUID, VHDX DataWriteGuid)
	parentIdentity    []byte   // what this image's parent must have
}

// Size returns the virtual disk size.
func (l *Layer) Size() int64 { return l.Info.VirtualSize }

// Runs returns the layer's own map: sorted, merged Data and Zero runs;
// the rest of the virtual disk is unallocated in this layer.
func (l *Layer) Runs() ([]Run, error) { return l.impl.runs() }

// Close closes the file if the layer opened it.
func (l *Layer) Close() error {
	if l.own {
		return l.f.Close()
	}
	return nil
}

// ReadAt reads the layer alone: its Data runs, zeros elsewhere. It is
// safe for concurrent use.
func (l *Layer) ReadAt(p []byte, off int64) (int, error) {
	return readChain([]*Layer{l}, 0, p, off, true)
}

// Detect identifies the container format of an image of size bytes from
// its content. Anything that is not a recognised container is Raw.
func Detect(r io.ReaderAt, size int64) (Format, error) {
	var b [8]byte
	if size >= 8 {
		if _, err := r.ReadAt(b[:], 0); err != nil && err != io.EOF {
			return "", fmt.Errorf("detect disk format: %w", err)
		}
		switch {
		case string(b[:4]) == "QFI\xfb":
			return QCOW2, nil
		case string(b[:]) == "vhdxfile":
			return VHDX, nil
		case string(b[:]) == "conectix":
			return VHD, nil
		}
	}
	if size >= 512 {
		if _, err := r.ReadAt(b[:], size-512); err != nil && err != io.EOF {
			return "", fmt.Errorf("detect disk format: %w", err)
		}
		if string(b[:]) == "conectix" {
			return VHD, nil
		}
	}
	return Raw, nil
}

// OpenLayer opens one image file (no parent) of the given format, or
// detects it when format is empty. The layer reads through f and does not
// close it.
func OpenLayer(f *os.File, path string, format Format, lim Limits) (*Layer, error) {
	lim = lim.withDefaults()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	l, err := open(f, st.Size(), path, format, lim)
	if err != nil {
		return nil, err
	}
	switch x := l.impl.(type) { // SEEK_DATA for the allocation map
	case *rawImpl:
		x.file = f
	case *vhdImpl:
		x.file = f
	}
	l.f = f
	return l, nil
}

// OpenReaderAt opens an image held by any io.ReaderAt of size bytes (no
// parent). A raw image opened this way maps its whole size as data.
func OpenReaderAt(r io.ReaderAt, size int64, name string, format Format, lim Limits) (*Layer, error) {
	return open(r, size, name, format, lim)
}

func open(f io.ReaderAt, size int64, path string, format Format, lim Limits) (*Layer, error) {
	lim = lim.withDefaults()
	var err error
	if format == "" {
		if format, err = Detect(f, size); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	l := &Layer{Info: Info{Format: format, Path: path, FileSize: size}}
	switch format {
	case Raw:
		l.impl, err = openRaw(f, path, size, &l.Info)
	case QCOW2:
		l.impl, err = openQCOW2(f, path, size, lim, &l.Info)
	case VHD:
		l.impl, err = openVHD(f, path, size, lim, &l.Info)
	case VHDX:
		l.impl, err = openVHDX(f, path, size, lim, &l.Info)
	default:
		return nil, fmt.Errorf("%s: unknown disk format %q", path, format)
	}
	if err != nil {
		return nil, err
	}
	if l.Info.VirtualSize < 0 || l.Info.VirtualSize > lim.MaxVirtualSize {
		return nil, malformed(path, "virtual size %d is beyond the limit of %d bytes", l.Info.VirtualSize, lim.MaxVirtualSize)
	}
	return l, nil
}

// Disk is an opened backing chain, top first, read as one flattened
// virtual disk. It is safe for concurrent ReadAt calls.
type Disk struct {
	// Layers is the chain, Layers[0] the image that was opened.
	Layers []*Layer
}

// Open opens the image at path and its whole backing chain. Format is
// detected from each file's bytes (a backing format recorded in the child
// is checked against it).
func Open(path string, lim Limits) (*Disk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open disk image: %w", err)
	}
	d, err := OpenFile(f, path, lim)
	if err != nil {
		f.Close()
		return nil, err
	}
	d.Layers[0].own = true
	return d, nil
}

// OpenFile is Open on an already opened top image; f is not closed by
// Disk.Close.
func OpenFile(f *os.File, path string, lim Limits) (*Disk, error) {
	lim = lim.withDefaults()
	top, err := OpenLayer(f, path, "", lim)
	if err != nil {
		return nil, err
	}
	d := &Disk{Layers: []*Layer{top}}
	seen := map[[2]uint64]string{}
	if k, ok := fileKey(f); ok {
		seen[k] = path
	}
	for cur := top; cur.Info.Backing != ""; {
		if len(d.Layers) >= lim.MaxChain {
			d.Close()
			return nil, fmt.Errorf("%s: %w: backing chain deeper than %d images", path, ErrChain, lim.MaxChain)
		}
		pf, ppath, err := openParent(cur, lim.OpenParent)
		if err != nil {
			d.Close()
			return nil, err
		}
		if k, ok := fileKey(pf); ok {
			if prev, dup := seen[k]; dup {
				pf.Close()
				d.Close()
				return nil, fmt.Errorf("%s: %w: cycle: %s refers back to %s", path, ErrChain, cur.Info.Path, prev)
			}
			seen[k] = ppath
		}
		// A parent the image records as raw is read as raw, as qemu
		// does: its guest wrote every byte of it, an image header too.
		var pformat Format
		if cur.Info.BackingFormat == Raw {
			pformat = Raw
		}
		p, err := OpenLayer(pf, ppath, pformat, lim)
		if err != nil {
			pf.Close()
			d.Close()
			return nil, fmt.Errorf("backing file of %s: %w", cur.Info.Path, err)
		}
		p.own = true
		if bf := cur.Info.BackingFormat; bf != "" && bf != p.Info.Format {
			p.Close()
			d.Close()
			return nil, fmt.Errorf("%s: %w: backing file %s is %s, the image says %s", cur.Info.Path, ErrChain, ppath, p.Info.Format, bf)
		}
		if want := cur.Info.parentIdentity; len(want) > 0 && len(p.Info.identity) > 0 && string(want) != string(p.Info.identity) {
			p.Close()
			d.Close()
			return nil, fmt.Errorf("%s: %w: parent %s has identity %x, the child expects %x (the parent was modified or replaced)", cur.Info.Path, ErrChain, ppath, p.Info.identity, want)
		}
		d.Layers = append(d.Layers, p)
		cur = p
	}
	return d, nil
}

// openParent opens l's parent with open, the first of its candidate
// paths that opens. Only regular files are followed (a device's stat size
// is 0, so its data would read as zeros).
func openParent(l *Layer, open func(string) (*os.File, error)) (*os.File, string, error) {
	var firstErr error
	for _, c := range l.Info.backingCandidates {
		f, err := open(c)
		if err == nil {
			st, err := f.Stat()
			if err == nil && !st.Mode().IsRegular() {
				f.Close()
				return nil, "", fmt.Errorf("%s: %w: backing file %q resolves to %s, which is not a regular file (%s): only regular files are followed as parents; put the parent image in place as a file", l.Info.Path, ErrChain, l.Info.Backing, c, st.Mode().Type())
			}
			if err != nil {
				f.Close()
				return nil, "", fmt.Errorf("%s: stat backing file %s: %w", l.Info.Path, c, err)
			}
			return f, c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = errors.New("no usable path")
	}
	return nil, "", fmt.Errorf("%s: %w: cannot open backing file %q: %v (restore or copy the parent next to it)", l.Info.Path, ErrChain, l.Info.Backing, firstErr)
}

// resolveNear returns candidate paths for a parent reference ref written in
// the image at path: relative to the image's directory, then as given.
func resolveNear(path, ref string) []string {
	if ref == "" {
		return nil
	}
	if filepath.IsAbs(ref) {
		return []string{ref}
	}
	return []string{filepath.Join(filepath.Dir(path), ref)}
}

func fileKey(f *os.File) ([2]uint64, bool) {
	st, err := f.Stat()
	if err != nil {
		return [2]uint64{}, false
	}
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return [2]uint64{}, false
	}
	return [2]uint64{uint64(s.Dev), s.Ino}, true
}

// Close closes the files the Disk opened.
func (d *Disk) Close() error {
	var first error
	for _, l := range d.Layers {
		if err := l.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Size returns the virtual disk size (of the top image).
func (d *Disk) Size() int64 { return d.Layers[0].Info.VirtualSize }

// Format returns the top image's format.
func (d *Disk) Format() Format { return d.Layers[0].Info.Format }

// ReadAt reads the flattened virtual disk. It returns io.EOF for reads at
// or beyond the end. It is safe for concurrent use.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	return readChain(d.Layers, 0, p, off, false)
}

// Allocated returns the ranges of the flattened disk that may hold
// non-zero data: the union of the Data runs of every layer, each clipped
// to the part not covered by the layers above. Everything else reads as
// zeros.
func (d *Disk) Allocated() ([]Range, error) {
	size := d.Size()
	var covered []Run // runs decided by upper layers (Data or Zero)
	var out []Range
	for _, l := range d.Layers {
		rs, err := l.Runs()
		if err != nil {
			return nil, err
		}
		for _, r := range subtract(rs, covered) {
			if r.Kind == Data && r.Off < size {
				out = append(out, Range{r.Off, min(r.Len, size-r.Off)})
			}
		}
		covered = mergeRuns(append(covered, rs...))
	}
	slices.SortFunc(out, func(a, b Range) int { return cmp64(a.Off, b.Off) })
	return mergeRanges(out), nil
}

func cmp64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// subtract returns the parts of rs (sorted) not covered by cov (sorted,
// merged), keeping kinds.
func subtract(rs, cov []Run) []Run {
	var out []Run
	j := 0
	for _, r := range rs {
		off, end := r.Off, r.End()
		for j > 0 && cov[j-1].End() > off {
			j--
		}
		for j < len(cov) && cov[j].End() <= off {
			j++
		}
		for k := j; off < end && k < len(cov) && cov[k].Off < end; k++ {
			if cov[k].Off > off {
				out = append(out, Run{off, cov[k].Off - off, r.Kind})
			}
			off = max(off, cov[k].End())
		}
		if off < end {
			out = append(out, Run{off, end - off, r.Kind})
		}
	}
	return out
}

// mergeRuns sorts runs and merges overlapping ones (kind ignored: the
// result says "covered").
func mergeRuns(rs []Run) []Run {
	slices.SortFunc(rs, func(a, b Run) int { return cmp64(a.Off, b.Off) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.Off <= out[n-1].End() {
			out[n-1].Len = max(out[n-1].End(), r.End()) - out[n-1].Off
			continue
		}
		out = append(out, r)
	}
	return out
}

func mergeRanges(rs []Range) []Range {
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.Off <= out[n-1].End() {
			out[n-1].Len = max(out[n-1].End(), r.End()) - out[n-1].Off
			continue
		}
		out = append(out, r)
	}
	return out
}

// runBuilder appends runs, merging adjacent ones of the same kind.
type runBuilder struct{ rs []Run }

func (b *runBuilder) add(off, n int64, k Kind) {
	if k == Unallocated || n <= 0 {
		return
	}
	if m := len(b.rs); m > 0 && b.rs[m-1].Kind == k && b.rs[m-1].End() == off {
		b.rs[m-1].Len += n
		return
	}
	b.rs = append(b.rs, Run{off, n, k})
}

// readChain reads p at off from layers[i:]; alone reads only layers[i]
// with unallocated ranges as zeros.
func readChain(layers []*Layer, i int, p []byte, off int64, alone bool) (int, error) {
	size := layers[i].Info.VirtualSize
	if off < 0 {
		return 0, fmt.Errorf("%s: read at negative offset %d", layers[i].Info.Path, off)
	}
	if off >= size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > size-off {
		p = p[:size-off]
		eof = io.EOF
	}
	if err := fill(layers, i, p, off, alone); err != nil {
		return 0, err
	}
	return len(p), eof
}

func fill(layers []*Layer, i int, p []byte, off int64, alone bool) error {
	if i >= len(layers) {
		clear(p)
		return nil
	}
	l := layers[i]
	for len(p) > 0 {
		if off >= l.Info.VirtualSize { // a parent smaller than its child
			clear(p)
			return nil
		}
		lim := min(int64(len(p)), l.Info.VirtualSize-off)
		k, n, err := l.impl.lookup(off, lim)
		if err != nil {
			return err
		}
		if n <= 0 || n > lim {
			return fmt.Errorf("%s: internal error: lookup at %d returned length %d", l.Info.Path, off, n)
		}
		switch {
		case k == Data:
			err = l.impl.readData(p[:n], off)
		case k == Zero || alone:
			clear(p[:n])
		default:
			err = fill(layers, i+1, p[:n], off, false)
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readFullAt reads exactly len(p) bytes of the container file at off.
func readFullAt(f io.ReaderAt, name string, p []byte, off int64, what string) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return malformed(name, "%s at offset %d (%d bytes) extends beyond the end of the file: the image is truncated", what, off, len(p))
	}
	return fmt.Errorf("%s: read %s at offset %d: %w", name, what, off, err)
}

// lru is a small locked cache of tables keyed by file offset.
type lru struct {
	mu    sync.Mutex
	max   int
	order []int64
	m     map[int64][]byte
}

func newLRU(n int) *lru { return &lru{max: n, m: map[int64][]byte{}} }

func (c *lru) get(k int64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *lru) put(k int64, v []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		return
	}
	if len(c.order) >= c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.order = append(c.order, k)
	c.m[k] = v
}
