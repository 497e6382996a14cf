// Package sample generates realistic, reproducible sample data for the
// demo, the tests and the benchmarks: file trees of text-like and binary
// files with symlinks and varied modes, and sparse raw disk images with an
// ext4 file system inside (built with mkfs.ext4 -d, no mount needed).
package sample

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

var words = strings.Fields(`the of and to in is that for it as was with be by on not he this are or his from at which but have
an they you were her she there been one all we their has would when if so no will can more other out them do some time
could my than first any into what only these its new also may two most over up said after back disk volume network switch
host guest vlan snapshot backup restore replica site tape cloud bucket storage controller memory processor virtual machine
kernel driver service event error warning info debug request response database table index page record log entry user
group policy domain forest dns dhcp gateway subnet address route firewall rule port session token certificate key`)

// Text returns n bytes of word-salad text: compressible like logs and
// documents (zstd reaches about 3-4×).
func Text(rng *rand.Rand, n int) []byte {
	var b strings.Builder
	b.Grow(n + 16)
	for b.Len() < n {
		if rng.IntN(12) == 0 {
			fmt.Fprintf(&b, "%d-%02d-%02dT%02d:%02d:%02d ", 2026, 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60))
		}
		b.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(10) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return []byte(b.String()[:n])
}

// Binary returns n incompressible bytes.
func Binary(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TreeOptions shape a generated file tree.
type TreeOptions struct {
	Files int   // number of regular files
	Bytes int64 // approximate total size
	// BinaryFraction of files hold incompressible data (default 0.3).
	BinaryFraction float64
	Seed           uint64
}

// Tree writes a directory tree under dir: nested directories, regular
// files of varied sizes (text and binary), symlinks (relative, absolute
// and dangling), and a spread of permission modes. It returns the number
// of bytes written.
func Tree(dir string, o TreeOptions) (int64, error) {
	if o.Files <= 0 {
		return 0, errors.New("sample: TreeOptions.Files must be positive")
	}
	if o.BinaryFraction == 0 {
		o.BinaryFraction = 0.3
	}
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	avg := max(o.Bytes/int64(o.Files), 1)
	var total int64
	modes := []os.FileMode{0o644, 0o600, 0o640, 0o755, 0o444, 0o700, 0o664}
	dirs := []string{dir}
	for i := 0; i < o.Files; i++ {
		if i%25 == 0 {
			parent := dirs[rng.IntN(len(dirs))]
			if strings.Count(strings.TrimPrefix(parent, dir), "/") > 5 {
				parent = dir
			}
			d := filepath.Join(parent, fmt.Sprintf("dir%03d", len(dirs)))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return total, err
			}
			dirs = append(dirs, d)
		}
		d := dirs[rng.IntN(len(dirs))]
		// Sizes: mostly small, a few large (exponential-ish).
		size := int64(rng.ExpFloat64() * float64(avg))
		if size > 50*avg {
			size = 50 * avg
		}
		var data []byte
		name := fmt.Sprintf("file%05d", i)
		if rng.Float64() < o.BinaryFraction {
			data = Binary(rng, int(size))
			name += ".bin"
		} else {
			data = Text(rng, int(size))
			name += ".log"
		}
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return total, err
		}
		if err := os.Chmod(p, modes[rng.IntN(len(modes))]); err != nil {
			return total, err
		}
		total += size
		if i%40 == 7 {
			switch rng.IntN(3) {
			case 0:
				err := os.Symlink(name, filepath.Join(d, name+".lnk"))
				if err != nil {
					return total, err
				}
			case 1:
				if err := os.Symlink(p, filepath.Join(d, name+".abs")); err != nil {
					return total, err
				}
			default:
				if err := os.Symlink("does/not/exist", filepath.Join(d, name+".dangling")); err != nil {
					return total, err
				}
			}
		}
	}
	// Some directories with unusual modes.
	for i, d := range dirs[1:] {
		if i%7 == 3 {
			if err := os.Chmod(d, 0o750); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

// HaveMkfs reports whether mkfs.ext4 is available.
func HaveMkfs() bool {
	_, err := exec.LookPath("mkfs.ext4")
	return err == nil
}

// Ext4Image creates a sparse raw disk image of size bytes at path holding
// an ext4 file system populated from contentDir (mkfs.ext4 -d; no mount).
func Ext4Image(ctx context.Context, path string, size int64, contentDir string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	args := []string{"-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-L", "sample"}
	if contentDir != "" {
		args = append(args, "-d", contentDir)
	}
	args = append(args, path)
	cmd := exec.CommandContext(ctx, "mkfs.ext4", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Rewrite overwrites n bytes of path at off with fresh random data in
// place (no truncation), like a guest rewriting blocks.
func Rewrite(path string, off int64, n int, seed uint64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, ^seed))
	if _, err := f.WriteAt(Binary(rng, n), off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// AllocatedBytes returns the bytes a file occupies on disk (st_blocks×512).
func AllocatedBytes(path string) (int64, error) {
	return allocated(path)
}

// SameContent reports whether two files have identical bytes.
func SameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ra, rb := bufio.NewReaderSize(fa, 1<<20), bufio.NewReaderSize(fb, 1<<20)
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, ea := io.ReadFull(ra, ba)
		nb, eb := io.ReadFull(rb, bb)
		if na != nb || string(ba[:na]) != string(bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}
