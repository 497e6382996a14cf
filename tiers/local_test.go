package tiers_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

func newLocal(t *testing.T) *tiers.Local {
	t.Helper()
	l, err := tiers.NewLocal(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLocalConformance(t *testing.T) {
	tierstest.Run(t, func(t *testing.T) tiers.Backend { return newLocal(t) })
}

func TestLocalOpenedConformance(t *testing.T) {
	// OpenLocal on a bare directory: type directories are created lazily.
	tierstest.Run(t, func(t *testing.T) tiers.Backend {
		l, err := tiers.OpenLocal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}

func TestLocalLayout(t *testing.T) {
	ctx := t.Context()
	l := newLocal(t)
	defer l.Close()
	for _, d := range []string{"keys", "data", "index", "snapshots", "tombstones"} {
		fi, err := os.Stat(filepath.Join(l.Root(), d))
		if err != nil || !fi.IsDir() {
			t.Errorf("type directory %s: %v", d, err)
		} else if runtime.GOOS != "windows" && fi.Mode().Perm() != tiers.LocalDirMode {
			t.Errorf("type directory %s has mode %v, want %v", d, fi.Mode().Perm(), tiers.LocalDirMode)
		}
	}
	objs := map[tiers.Handle]string{
		{Type: tiers.TypeConfig, Name: "config"}:        "config",
		{Type: tiers.TypeKey, Name: "k1"}:               "keys/k1",
		{Type: tiers.TypeData, Name: "ab12cd"}:          "data/ab/ab12cd",
		{Type: tiers.TypeData, Name: "a"}:               "data/a/a",
		{Type: tiers.TypeIndex, Name: "i1"}:             "index/i1",
		{Type: tiers.TypeSnapshot, Name: "s1"}:          "snapshots/s1",
		{Type: tiers.TypeTombstone, Name: "t1"}:         "tombstones/t1",
		{Type: tiers.TypeData, Name: "ff" + "00-3.x_y"}: "data/ff/ff00-3.x_y",
	}
	for h, rel := range objs {
		if err := tiers.PutBytes(ctx, l, h, []byte(h.String())); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(l.Root(), filepath.FromSlash(rel))
		b, err := os.ReadFile(p)
		if err != nil || string(b) != h.String() {
			t.Errorf("%v: file %s: %q, %v", h, rel, b, err)
		}
		fi, err := os.Stat(p)
		if err == nil && runtime.GOOS != "windows" && fi.Mode().Perm() != tiers.LocalFileMode {
			t.Errorf("%v: mode %v, want %v", h, fi.Mode().Perm(), tiers.LocalFileMode)
		}
	}
	// Read-only objects can still be replaced and removed.
	for h := range objs {
		if err := tiers.PutBytes(ctx, l, h, []byte("again")); err != nil {
			t.Errorf("overwrite read-only %v: %v", h, err)
		}
		if err := l.Remove(ctx, h); err != nil {
			t.Errorf("remove read-only %v: %v", h, err)
		}
	}
	if l.Location() != l.Root() || !filepath.IsAbs(l.Root()) {
		t.Errorf("Location %q, Root %q", l.Location(), l.Root())
	}
}

func TestLocalOpen(t *testing.T) {
	dir := t.TempDir()
	_, err := tiers.OpenLocal(filepath.Join(dir, "missing"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("OpenLocal of a missing directory: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tiers.OpenLocal(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("OpenLocal of a file: %v", err)
	}
	if _, err := tiers.NewLocal(filepath.Join(file, "sub")); err == nil {
		t.Error("NewLocal below a file succeeded")
	}

	// NewLocal is idempotent and OpenLocal sees what it stored.
	root := filepath.Join(dir, "a", "b", "repo")
	l, err := tiers.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	h := tiers.Handle{Type: tiers.TypeSnapshot, Name: "s1"}
	if err := tiers.PutBytes(t.Context(), l, h, []byte("snap")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.Stat(t.Context(), h); err == nil {
		t.Error("Stat after Close succeeded")
	}
	l2, err := tiers.NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	l2.Close()
	l3, err := tiers.OpenLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	b, err := tiers.LoadAll(t.Context(), l3, h, 0, 0)
	if err != nil || string(b) != "snap" {
		t.Errorf("LoadAll after reopen: %q, %v", b, err)
	}
}

// A put that crashed between creating its temporary file and renaming it
// leaves a hidden file behind; it must be invisible and harmless.
func TestLocalLeftoverTempFile(t *testing.T) {
	ctx := t.Context()
	l := newLocal(t)
	defer l.Close()
	name := "ab" + strings.Repeat("0", 62)
	leftovers := []string{
		"data/ab/." + name + ".tmp-crashed",
		"keys/.k1.tmp-crashed",
		".config.tmp-crashed",
		"data/.ab.tmp-crashed", // a stray file at the fan-out level
	}
	for _, rel := range leftovers {
		p := filepath.Join(l.Root(), filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, typ := range tiers.AllTypes {
		err := l.List(ctx, typ, func(oi tiers.ObjectInfo) error {
			t.Errorf("List %s reports %v", typ, oi.Handle)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	h := tiers.Handle{Type: tiers.TypeData, Name: name}
	if _, err := l.Stat(ctx, h); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Stat: %v", err)
	}
	if err := tiers.PutBytes(ctx, l, h, []byte("whole object")); err != nil {
		t.Fatal(err)
	}
	b, err := tiers.LoadAll(ctx, l, h, 0, 0)
	if err != nil || string(b) != "whole object" {
		t.Errorf("LoadAll: %q, %v", b, err)
	}
	var names []string
	if err := l.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		names = append(names, oi.Handle.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{name}) {
		t.Errorf("List data: %q", names)
	}
}

// TestLocalRemoveStaleTemp: old temporary files of interrupted writes are
// removed (in every object directory), recent ones and everything else
// stay.
func TestLocalRemoveStaleTemp(t *testing.T) {
	ctx := t.Context()
	l := newLocal(t)
	defer l.Close()
	name := "ab" + strings.Repeat("0", 62)
	if err := tiers.PutBytes(ctx, l, tiers.Handle{Type: tiers.TypeData, Name: name}, []byte("object")); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	write := func(rel string, mtime time.Time) {
		p := filepath.Join(l.Root(), filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	stale := []string{"data/ab/." + name + ".tmp-crashed", "keys/.k1.tmp-crashed", ".config.tmp-crashed", "index/.x.tmp-1", "sessions/.s.tmp-2"}
	kept := []string{"data/ab/." + name + ".tmp-writing", "snapshots/.y.tmp-3", // recent
		"data/ab/.notatemp", "index/README"} // not temporary files of a write
	for _, rel := range stale {
		write(rel, old)
	}
	write(kept[0], time.Now())
	write(kept[1], time.Now())
	write(kept[2], old)
	write(kept[3], old)
	n, size, err := l.RemoveStaleTemp(ctx, time.Now().Add(-time.Hour))
	if err != nil || n != len(stale) || size != int64(len(stale)*len("partial")) {
		t.Fatalf("RemoveStaleTemp = %d files, %d bytes, %v; want %d files", n, size, err, len(stale))
	}
	for _, rel := range stale {
		if _, err := os.Lstat(filepath.Join(l.Root(), filepath.FromSlash(rel))); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: still there (%v)", rel, err)
		}
	}
	for _, rel := range append(kept, "data/ab/"+name) {
		if _, err := os.Lstat(filepath.Join(l.Root(), filepath.FromSlash(rel))); err != nil {
			t.Errorf("%s: %v", rel, err)
		}
	}
}

// tempFiles returns the hidden files under root.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != root {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestLocalFailedPutLeavesNoTempFile(t *testing.T) {
	l := newLocal(t)
	defer l.Close()
	h := tiers.Handle{Type: tiers.TypeData, Name: "cafe"}
	ctx := t.Context()
	boom := errors.New("boom")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		rd   io.Reader
		size int64
		want error
	}{
		{"short", ctx, strings.NewReader("abc"), 4, tiers.ErrSizeMismatch},
		{"long", ctx, strings.NewReader("abcde"), 4, tiers.ErrSizeMismatch},
		{"failing", ctx, io.MultiReader(strings.NewReader("ab"), errReader{boom}), 4, boom},
		{"cancelled", cctx, strings.NewReader("abcd"), 4, context.Canceled},
		{"negative", ctx, strings.NewReader(""), -1, nil},
		// Large objects take the direct-I/O path.
		{"short large", ctx, bytes.NewReader(make([]byte, 5<<20)), 6 << 20, tiers.ErrSizeMismatch},
		{"long large", ctx, bytes.NewReader(make([]byte, 6<<20+1)), 6 << 20, tiers.ErrSizeMismatch},
		{"failing large", ctx, io.MultiReader(bytes.NewReader(make([]byte, 5<<20)), errReader{boom}), 6 << 20, boom},
	}
	for _, c := range cases {
		err := l.Put(c.ctx, h, c.rd, c.size)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if c.want != nil && tiers.IsRetriable(err) {
			t.Errorf("%s: %v is retriable", c.name, err)
		}
		if tmp := tempFiles(t, l.Root()); len(tmp) != 0 {
			t.Errorf("%s: temporary files left: %q", c.name, tmp)
		}
	}
	if _, err := os.Stat(filepath.Join(l.Root(), "data", "ca", "cafe")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("object exists after failed puts: %v", err)
	}
}

func TestLocalErrorMessages(t *testing.T) {
	l := newLocal(t)
	defer l.Close()
	ctx := t.Context()
	h := tiers.Handle{Type: tiers.TypeData, Name: "ab12-3"}
	_, err := l.Stat(ctx, h)
	if msg := err.Error(); !strings.HasPrefix(msg, "stat data/ab12-3 in "+l.Root()+": ") {
		t.Errorf("Stat error: %q", msg)
	}
	err = l.Put(ctx, h, strings.NewReader("x"), 2)
	if msg := err.Error(); !strings.HasPrefix(msg, "put data/ab12-3 to "+l.Root()+": ") {
		t.Errorf("Put error: %q", msg)
	}
	_, err = tiers.LoadAll(ctx, l, h, 0, 0)
	if msg := err.Error(); !strings.HasPrefix(msg, "load data/ab12-3 from "+l.Root()+": ") {
		t.Errorf("Load error: %q", msg)
	}
	err = l.Remove(ctx, tiers.Handle{Type: tiers.TypeData, Name: "../x"})
	if msg := err.Error(); !strings.HasPrefix(msg, `remove "data/../x" from `) {
		t.Errorf("Remove error: %q", msg)
	}
}

func TestLocalLoadCancelledMidway(t *testing.T) {
	l := newLocal(t)
	defer l.Close()
	b := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	h := tiers.Handle{Type: tiers.TypeData, Name: "big"}
	if err := tiers.PutBytes(t.Context(), l, h, b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	err := l.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		if _, err := io.CopyN(io.Discard, rd, 1000); err != nil {
			return err
		}
		cancel()
		_, err := io.Copy(io.Discard, rd)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Load cancelled midway: %v", err)
	}
}

// Operations never leave the root, even through a type directory replaced
// by a symbolic link or an object that is a link pointing outside.
func TestLocalSymlinkEscape(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	ctx := t.Context()
	l := newLocal(t)
	defer l.Close()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(l.Root(), "keys")
	if err := os.Remove(keys); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, keys); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(l.Root(), "index", "leak")); err != nil {
		t.Fatal(err)
	}

	if err := tiers.PutBytes(ctx, l, tiers.Handle{Type: tiers.TypeKey, Name: "k"}, []byte("key")); err == nil {
		t.Error("Put through an escaping symlinked type directory succeeded")
	}
	if _, err := tiers.LoadAll(ctx, l, tiers.Handle{Type: tiers.TypeKey, Name: "secret"}, 0, 0); err == nil {
		t.Error("Load through an escaping symlinked type directory succeeded")
	}
	if _, err := tiers.LoadAll(ctx, l, tiers.Handle{Type: tiers.TypeIndex, Name: "leak"}, 0, 0); err == nil {
		t.Error("Load of an object symlinked outside the root succeeded")
	}
	if err := l.Remove(ctx, tiers.Handle{Type: tiers.TypeKey, Name: "secret"}); err == nil {
		t.Error("Remove through an escaping symlinked type directory succeeded")
	}
	err := l.List(ctx, tiers.TypeKey, func(oi tiers.ObjectInfo) error {
		t.Errorf("List keys reports %v from outside the root", oi.Handle)
		return nil
	})
	if err == nil {
		t.Error("List through an escaping symlinked type directory succeeded")
	}
	if err := l.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error {
		t.Errorf("List index reports the symlink %v", oi.Handle)
		return nil
	}); err != nil {
		t.Error(err)
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 1 {
		t.Errorf("outside directory was modified: %v", ents)
	}
	if b, _ := os.ReadFile(secret); string(b) != "secret" {
		t.Errorf("secret modified: %q", b)
	}
}

// The root itself may be a symbolic link.
func TestLocalSymlinkedRoot(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	target := newLocal(t)
	target.Close()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(target.Root(), link); err != nil {
		t.Fatal(err)
	}
	l, err := tiers.OpenLocal(link)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h := tiers.Handle{Type: tiers.TypeData, Name: "abc"}
	if err := tiers.PutBytes(t.Context(), l, h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(target.Root(), "data", "ab", "abc")); err != nil {
		t.Error(err)
	}
}

// Durability: after Put returns, the object has its final name, mode and
// content, and there is no other file in its directory. (fsync itself
// cannot be observed without crashing the machine.)
func TestLocalPutFinal(t *testing.T) {
	l := newLocal(t)
	defer l.Close()
	h := tiers.Handle{Type: tiers.TypeIndex, Name: "idx"}
	if err := tiers.PutBytes(t.Context(), l, h, []byte("index")); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(l.Root(), "index"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "idx" || !ents[0].Type().IsRegular() {
		t.Errorf("index directory holds %v", ents)
	}
}

// TestLocalPrefetchIsAHint: Prefetch of a present, a missing and an
// invalid handle neither fails nor changes what Load returns.
func TestLocalPrefetchIsAHint(t *testing.T) {
	ctx := context.Background()
	l := newLocal(t)
	h := tiers.Handle{Type: tiers.TypeData, Name: strings.Repeat("ab", 32)}
	want := bytes.Repeat([]byte("prefetch"), 1<<16)
	if err := tiers.PutBytes(ctx, l, h, want); err != nil {
		t.Fatal(err)
	}
	l.Prefetch(h)
	l.Prefetch(tiers.Handle{Type: tiers.TypeData, Name: strings.Repeat("cd", 32)})
	l.Prefetch(tiers.Handle{Type: tiers.TypeData, Name: "../../etc/passwd"})
	got, err := tiers.LoadAll(ctx, l, h, 0, 0)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("load after prefetch: %d bytes, %v", len(got), err)
	}
}
