package tiers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Permissions of a local tier. A repository holds key material (wrapped
// master keys) and its config, so everything is private to the owner.
// Objects are written read-only: they are immutable once stored, and a
// read-only file guards against accidental in-place modification by other
// tools. Overwrite and Remove still work because on POSIX systems they
// need write permission on the directory, not the file (on Windows the
// backend clears the read-only attribute first).
const (
	// LocalDirMode is the permission of directories created by a local tier.
	LocalDirMode fs.FileMode = 0o700
	// LocalFileMode is the permission of objects stored by a local tier.
	LocalFileMode fs.FileMode = 0o400
)

// Local is a Backend storing objects as files in a directory tree:
//
//	<root>/config
//	<root>/keys/<name>
//	<root>/index/<name>
//	<root>/snapshots/<name>
//	<root>/tombstones/<name>
//	<root>/sessions/<name>
//	<root>/data/<first two bytes of name>/<name>   (one-byte names: data/<name>/<name>)
//
// Put writes a temporary file whose name starts with "." in the object's
// directory, fsyncs it, renames it into place and fsyncs the directory, so a
// stored object is complete and durable and a crash leaves at most a hidden
// temporary file, which List ignores (a later Put of the same object simply
// creates a new one; prune removes those older than an hour, see
// RemoveStaleTemp).
//
// All access goes through an os.Root opened on the root directory: besides
// the name validation of Handle.Validate, no path can resolve outside the
// root, so a type directory replaced by a symbolic link pointing outside
// the root makes operations fail instead of following it. The root itself
// may be a symbolic link (it is resolved once, when the tier is opened).
// Only regular files are objects; List skips anything else.
//
// Object names are compared byte for byte; on a case-insensitive file
// system names differing only in case collide (repository names are
// lower-case hex, so this does not arise in practice).
type Local struct {
	root   *os.Root
	path   string
	closed atomic.Bool
}

var _ Backend = (*Local)(nil)

// NewLocal creates (if needed) the directory dir and the type directories
// of a local tier inside it, and returns the backend. It is idempotent: an
// existing tier is opened as is and no object is touched. Whether a
// repository already lives there is for the repository layer to decide
// (it checks for the config object).
func NewLocal(dir string) (*Local, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("create local tier %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, LocalDirMode); err != nil {
		return nil, fmt.Errorf("create local tier %s: %w", abs, err)
	}
	// Make the root's own directory entry durable; best effort, as the
	// parent may not be ours to open.
	_ = syncDirPath(filepath.Dir(abs))
	l, err := openLocal(abs)
	if err != nil {
		return nil, fmt.Errorf("create local tier %s: %w", abs, err)
	}
	for _, t := range AllTypes {
		if t == TypeConfig {
			continue
		}
		if err := l.mkdirDurable(string(t)); err != nil {
			l.root.Close()
			return nil, fmt.Errorf("create local tier %s: %w", abs, err)
		}
	}
	return l, nil
}

// OpenLocal opens the local tier in the existing directory dir. It fails
// with an error wrapping fs.ErrNotExist when dir does not exist, and with
// an error when dir is not a directory. Missing type directories are not
// an error: List reports no objects for them and Put creates them.
func OpenLocal(dir string) (*Local, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open local tier %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open local tier %s: directory does not exist: %w", abs, err)
		}
		return nil, fmt.Errorf("open local tier %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open local tier %s: not a directory", abs)
	}
	l, err := openLocal(abs)
	if err != nil {
		return nil, fmt.Errorf("open local tier %s: %w", abs, err)
	}
	return l, nil
}

func openLocal(abs string) (*Local, error) {
	r, err := os.OpenRoot(abs)
	if err != nil {
		return nil, err
	}
	return &Local{root: r, path: abs}, nil
}

// Root returns the absolute path of the tier's directory.
func (l *Local) Root() string { return l.path }

// Location returns the absolute path of the tier's directory.
func (l *Local) Location() string { return l.path }

// Close releases the directory handle. Further calls fail; a second Close
// returns nil.
func (l *Local) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	if err := l.root.Close(); err != nil {
		return fmt.Errorf("close local tier %s: %w", l.path, err)
	}
	return nil
}

// objPath returns the slash-separated path of h relative to the root; h
// must be valid.
func objPath(h Handle) string {
	switch h.Type {
	case TypeConfig:
		return "config"
	case TypeData:
		return path.Join("data", dataPrefix(h.Name), h.Name)
	default:
		return path.Join(string(h.Type), h.Name)
	}
}

// dataPrefix returns the fan-out directory of a data object.
func dataPrefix(name string) string {
	if len(name) < 2 {
		return name
	}
	return name[:2]
}

func (l *Local) wrap(op, prep string, h Handle, err error) error {
	s := h.String()
	if h.Validate() != nil {
		s = strconv.Quote(s)
	}
	return fmt.Errorf("%s %s %s %s: %w", op, s, prep, l.path, err)
}

func (l *Local) check(ctx context.Context) error {
	if l.closed.Load() {
		return os.ErrClosed
	}
	return ctx.Err()
}

// Put stores size bytes read from rd as h; see Backend. The object is
// visible only once complete and is durable when Put returns nil.
func (l *Local) Put(ctx context.Context, h Handle, rd io.Reader, size int64) (err error) {
	if err := h.Validate(); err != nil {
		return l.wrap("put", "to", h, err)
	}
	if size < 0 {
		return l.wrap("put", "to", h, fmt.Errorf("negative size %d", size))
	}
	if err := l.check(ctx); err != nil {
		return l.wrap("put", "to", h, err)
	}
	p := objPath(h)
	dir := path.Dir(p)
	f, tmp, err := l.createTemp(dir, h.Name)
	if errors.Is(err, fs.ErrNotExist) {
		if err = l.mkdirDurable(dir); err == nil {
			f, tmp, err = l.createTemp(dir, h.Name)
		}
	}
	if err != nil {
		return l.wrap("put", "to", h, err)
	}
	committed := false
	defer func() {
		if !committed {
			if f != nil {
				f.Close()
			}
			_ = l.root.Remove(tmp)
		}
	}()

	src := &trackedReader{ctx: ctx, r: rd}
	n, err := copyToFile(f, src, size)
	if err != nil {
		switch {
		case src.err != nil:
			// The reader (or the context) failed.
			return l.wrap("put", "to", h, fmt.Errorf("read object body after %d bytes: %w", n, src.err))
		case errors.Is(err, io.EOF):
			return l.wrap("put", "to", h, fmt.Errorf("%w: reader yielded %d bytes, want %d", ErrSizeMismatch, n, size))
		default:
			return l.wrap("put", "to", h, err)
		}
	}
	// The reader must be exhausted now.
	var one [1]byte
	k, rerr := io.ReadFull(src, one[:])
	if k > 0 {
		return l.wrap("put", "to", h, fmt.Errorf("%w: reader yields more than %d bytes", ErrSizeMismatch, size))
	}
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return l.wrap("put", "to", h, fmt.Errorf("read object body at end: %w", rerr))
	}
	if err := f.Chmod(LocalFileMode); err != nil && runtime.GOOS != "windows" {
		return l.wrap("put", "to", h, err)
	}
	if err := f.Sync(); err != nil {
		return l.wrap("put", "to", h, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return l.wrap("put", "to", h, err)
	}
	// Last point of no return: honour cancellation before committing.
	if err := l.check(ctx); err != nil {
		return l.wrap("put", "to", h, err)
	}
	if err := l.root.Rename(tmp, p); err != nil {
		// Windows refuses to replace a read-only file. Elsewhere a
		// refused rename is the directory's, and the object already
		// there keeps its mode.
		if !errors.Is(err, fs.ErrPermission) || runtime.GOOS != "windows" || l.root.Chmod(p, 0o600) != nil {
			return l.wrap("put", "to", h, err)
		}
		if err := l.root.Rename(tmp, p); err != nil {
			return l.wrap("put", "to", h, err)
		}
	}
	committed = true
	// The object is complete; if the directory sync fails it may not
	// survive a crash, which the error reports.
	if err := l.syncDir(dir); err != nil {
		return l.wrap("put", "to", h, fmt.Errorf("object written but directory sync failed: %w", err))
	}
	return nil
}

// createTemp creates a new hidden temporary file in dir.
func (l *Local) createTemp(dir, name string) (*os.File, string, error) {
	for range 10 {
		tmp := path.Join(dir, "."+name+".tmp-"+strconv.FormatUint(rand.Uint64(), 36))
		f, err := l.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, tmp, err
	}
	return nil, "", fmt.Errorf("create temporary file in %s: too many collisions", dir)
}

// mkdirDurable creates every missing component of the slash-separated
// relative directory dir and fsyncs the parent of each one it created.
func (l *Local) mkdirDurable(dir string) error {
	parent := "."
	cur := ""
	for _, c := range splitSlash(dir) {
		cur = path.Join(cur, c)
		err := l.root.Mkdir(cur, LocalDirMode)
		switch {
		case err == nil:
			if err := l.syncDir(parent); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
			fi, serr := l.root.Stat(cur)
			if serr != nil {
				return serr
			}
			if !fi.IsDir() {
				return fmt.Errorf("%s exists and is not a directory", cur)
			}
		default:
			return err
		}
		parent = cur
	}
	return nil
}

func splitSlash(p string) []string {
	var out []string
	for p != "" {
		i := 0
		for i < len(p) && p[i] != '/' {
			i++
		}
		if i > 0 {
			out = append(out, p[:i])
		}
		if i == len(p) {
			break
		}
		p = p[i+1:]
	}
	return out
}

// syncDir fsyncs the relative directory dir ("." for the root).
func (l *Local) syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be fsynced on Windows
	}
	d, err := l.root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDirPath(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Prefetch asks the kernel to start reading the object into the page
// cache, so that a Load soon after does not wait for the disk. It is a
// hint: a missing object or an error is ignored. Callers streaming many
// objects in order (the tape writer) call it for the next few.
func (l *Local) Prefetch(h Handle) {
	if h.Validate() != nil {
		return
	}
	f, err := l.root.Open(objPath(h))
	if err != nil {
		return
	}
	willNeed(f)
	f.Close()
}

// Load calls fn with a reader over length bytes of h at offset (0 = to the
// end); see Backend. The range is checked against the object's size before
// fn is called, so a short object yields ErrShortRead without calling fn.
func (l *Local) Load(ctx context.Context, h Handle, offset, length int64, fn func(rd io.Reader) error) error {
	if err := h.Validate(); err != nil {
		return l.wrap("load", "from", h, err)
	}
	if offset < 0 || length < 0 {
		return l.wrap("load", "from", h, fmt.Errorf("invalid range: offset %d, length %d", offset, length))
	}
	if err := l.check(ctx); err != nil {
		return l.wrap("load", "from", h, err)
	}
	f, err := l.root.Open(objPath(h))
	if err != nil {
		return l.wrap("load", "from", h, notFound(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return l.wrap("load", "from", h, err)
	}
	if !fi.Mode().IsRegular() {
		return l.wrap("load", "from", h, fmt.Errorf("%w: not a regular file", ErrNotFound))
	}
	size := fi.Size()
	n := length
	if length == 0 {
		n = size - offset
	}
	if offset > size || n > size-offset {
		return l.wrap("load", "from", h, fmt.Errorf("%w: object has %d bytes, want %d at offset %d", ErrShortRead, size, n, offset))
	}
	if err := l.check(ctx); err != nil {
		return l.wrap("load", "from", h, err)
	}
	// Whole objects are read through the page cache, where Prefetch puts
	// them; ranges (what a restore asks for) may go around it.
	var body io.Reader = io.NewSectionReader(f, offset, n)
	if length > 0 {
		var done func()
		body, done = rangeReader(f, offset, n)
		defer done()
	}
	rd := &trackedReader{ctx: ctx, r: body}
	if err := fn(rd); err != nil {
		return l.wrap("load", "from", h, err)
	}
	return nil
}

// notFound maps a file-system "does not exist" error to ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// Stat returns the size and modification time of h; see Backend.
func (l *Local) Stat(ctx context.Context, h Handle) (ObjectInfo, error) {
	if err := h.Validate(); err != nil {
		return ObjectInfo{}, l.wrap("stat", "in", h, err)
	}
	if err := l.check(ctx); err != nil {
		return ObjectInfo{}, l.wrap("stat", "in", h, err)
	}
	fi, err := l.root.Lstat(objPath(h))
	if err != nil {
		return ObjectInfo{}, l.wrap("stat", "in", h, notFound(err))
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, l.wrap("stat", "in", h, fmt.Errorf("%w: not a regular file", ErrNotFound))
	}
	return ObjectInfo{Handle: h, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List calls fn for every object of type t; see Backend. Temporary files,
// names that fail ValidName, data objects outside their fan-out directory
// and anything but regular files are skipped. A missing type directory
// lists nothing.
func (l *Local) List(ctx context.Context, t Type, fn func(ObjectInfo) error) error {
	lh := Handle{Type: t}
	if !t.Valid() {
		return l.wrap("list", "in", lh, fmt.Errorf("%w: unknown object type %q", ErrInvalidHandle, t))
	}
	if err := l.check(ctx); err != nil {
		return l.wrap("list", "in", lh, err)
	}
	var err error
	switch t {
	case TypeConfig:
		err = l.listConfig(fn)
	case TypeData:
		err = l.listDir(ctx, "data", func(e fs.DirEntry) error {
			prefix := e.Name()
			if prefix[0] == '.' || !e.IsDir() {
				return nil
			}
			return l.listDir(ctx, path.Join("data", prefix), func(e fs.DirEntry) error {
				if dataPrefix(e.Name()) != prefix {
					return nil
				}
				return l.listEntry(Handle{Type: t, Name: e.Name()}, fn)
			})
		})
	default:
		err = l.listDir(ctx, string(t), func(e fs.DirEntry) error {
			return l.listEntry(Handle{Type: t, Name: e.Name()}, fn)
		})
	}
	if err != nil {
		var fe *fnError
		if errors.As(err, &fe) {
			return fe.err // the callback's error, as is
		}
		return l.wrap("list", "in", lh, err)
	}
	return nil
}

// fnError carries an error returned by a List callback through the walk.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

func (l *Local) listConfig(fn func(ObjectInfo) error) error {
	return l.listEntry(Handle{Type: TypeConfig, Name: "config"}, fn)
}

// listEntry reports h to fn if it is a regular file.
func (l *Local) listEntry(h Handle, fn func(ObjectInfo) error) error {
	if h.Validate() != nil {
		return nil // temporary files and foreign names
	}
	fi, err := l.root.Lstat(objPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed meanwhile
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	if err := fn(ObjectInfo{Handle: h, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
		return &fnError{err: err}
	}
	return nil
}

// listDir calls each for every entry of the relative directory dir, in
// batches so huge directories are not held in memory at once. A missing
// directory has no entries.
func (l *Local) listDir(ctx context.Context, dir string, each func(fs.DirEntry) error) error {
	d, err := l.root.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := d.ReadDir(1024)
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := each(e); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Remove deletes h; removing a missing object returns nil. The directory
// is fsynced so the removal is durable.
func (l *Local) Remove(ctx context.Context, h Handle) error {
	if err := h.Validate(); err != nil {
		return l.wrap("remove", "from", h, err)
	}
	if err := l.check(ctx); err != nil {
		return l.wrap("remove", "from", h, err)
	}
	p := objPath(h)
	fi, err := l.root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return l.wrap("remove", "from", h, err)
	}
	if fi.IsDir() {
		return l.wrap("remove", "from", h, errors.New("is a directory, not an object"))
	}
	err = l.root.Remove(p)
	if errors.Is(err, fs.ErrPermission) && runtime.GOOS == "windows" {
		// Windows refuses to delete read-only files.
		if l.root.Chmod(p, 0o600) == nil {
			err = l.root.Remove(p)
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return l.wrap("remove", "from", h, err)
	}
	if err := l.syncDir(path.Dir(p)); err != nil {
		return l.wrap("remove", "from", h, fmt.Errorf("object removed but directory sync failed: %w", err))
	}
	return nil
}

// trackedReader checks ctx before every read and records the first error
// of the underlying reader (io.EOF excluded), so Put can tell a failing
// reader from a short one.
type trackedReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	if err := t.ctx.Err(); err != nil {
		t.err = err
		return 0, err
	}
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// RemoveStaleTemp removes the hidden temporary files (".<name>.tmp-…")
// that writes interrupted by a crash or SIGKILL left in the repository's
// directories, if they were last modified before before, and reports how
// many it removed and their bytes. A Put in progress keeps its temporary
// file's modification time current, so a cut-off well in the past never
// touches one. Stored objects and foreign files are never touched.
func (l *Local) RemoveStaleTemp(ctx context.Context, before time.Time) (int, int64, error) {
	if err := l.check(ctx); err != nil {
		return 0, 0, err
	}
	dirs := []string{"."}
	for _, t := range AllTypes {
		if t != TypeConfig {
			dirs = append(dirs, string(t))
		}
	}
	err := l.listDir(ctx, string(TypeData), func(e fs.DirEntry) error {
		if e.IsDir() && e.Name()[0] != '.' {
			dirs = append(dirs, path.Join(string(TypeData), e.Name()))
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("list %s: %w", l.path, err)
	}
	var n int
	var size int64
	for _, dir := range dirs {
		err := l.listDir(ctx, dir, func(e fs.DirEntry) error {
			name := e.Name()
			if !e.Type().IsRegular() || !strings.HasPrefix(name, ".") || !strings.Contains(name, ".tmp-") {
				return nil
			}
			fi, err := e.Info()
			if err != nil || !fi.ModTime().Before(before) {
				return nil // gone meanwhile, or recent
			}
			p := path.Join(dir, name)
			if err := l.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove stale temporary file %s: %w", filepath.Join(l.path, p), err)
			}
			n++
			size += fi.Size()
			return nil
		})
		if err != nil {
			return n, size, err
		}
	}
	return n, size, nil
}
