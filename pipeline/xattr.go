package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Extended attributes (user.*, security.*, trusted.*, and the POSIX ACLs
// kept as system.posix_acl_*) are backed up with each entry and set again
// on restore. Reading never follows a symlink.

// maxXattrBytes bounds the names and values kept for one entry: room for
// the largest value Linux allows (64 KiB) several times over. They are
// stored inline in the directory's tree, which is split into parts of a
// few MiB, so one entry must stay well below a part; file systems that
// allow more (XFS, ext4 with ea_inode) are cut here with a warning. Real
// attribute sets (SELinux labels, ACLs, capabilities, user tags) are tens
// to hundreds of bytes.
const maxXattrBytes = 256 << 10

// readXattrs returns the extended attributes of path, nil when it has none
// or its file system keeps none. Names that are not valid UTF-8 cannot be
// recorded in a tree (JSON keys), and attributes beyond maxXattrBytes are
// not kept; both are left out and reported in err along with the
// attributes that were read.
func readXattrs(path string) (map[string][]byte, error) {
	names, err := xattrList(path)
	if err != nil {
		if err == unix.ENOTSUP || err == unix.ENOENT {
			return nil, nil // no xattrs on this file system; or gone (the caller reports that)
		}
		return nil, fmt.Errorf("list extended attributes: %w", err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	list := bytes.Split(bytes.TrimRight(names, "\x00"), []byte{0})
	sort.Slice(list, func(i, j int) bool { return bytes.Compare(list[i], list[j]) < 0 })
	out := map[string][]byte{}
	var errs []error
	total, dropped := 0, 0
	for _, nb := range list {
		if len(nb) == 0 {
			continue
		}
		name := string(nb)
		if !utf8.ValidString(name) {
			errs = append(errs, fmt.Errorf("extended attribute name %q is not valid UTF-8 and is not backed up", name))
			continue
		}
		v, err := xattrGet(path, name)
		if err == unix.ENODATA {
			continue // removed since the listing
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read extended attribute %s: %w", name, err))
			continue
		}
		if total+len(name)+len(v) > maxXattrBytes {
			dropped++
			continue
		}
		total += len(name) + len(v)
		out[name] = v
	}
	if dropped > 0 {
		errs = append(errs, fmt.Errorf("%d extended attributes not backed up: drpipe keeps at most %d KiB of names and values per entry", dropped, maxXattrBytes>>10))
	}
	if len(out) == 0 {
		out = nil
	}
	return out, errors.Join(errs...)
}

// xattrList returns the NUL-separated attribute names of path. Asking
// for the size first costs no allocation for the usual entry, which has
// none.
func xattrList(path string) ([]byte, error) {
	for range 4 { // the list can grow between asking its size and reading it
		n, err := unix.Llistxattr(path, nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n+64)
		n, err = unix.Llistxattr(path, buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.ERANGE
}

// xattrGet reads one attribute value.
func xattrGet(path, name string) ([]byte, error) {
	for range 4 {
		n, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, err
		}
		v := make([]byte, n)
		if n == 0 {
			return v, nil
		}
		m, err := unix.Lgetxattr(path, name, v)
		if err == unix.ERANGE {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, err
		}
		return v[:m], nil
	}
	return nil, unix.ERANGE
}

// setXattrs sets x on the open file fd, or when fd < 0 on path itself
// (never following a symlink). Every attribute is tried. unsupported names
// those the file system refused as unsupported (no extended attributes
// there, or not in that namespace), which the restorer reports once per
// restore rather than once per file; err names the others that failed.
func setXattrs(fd int, path string, x map[string][]byte) (unsupported []string, err error) {
	if len(x) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(x))
	for k := range x {
		names = append(names, k)
	}
	sort.Strings(names)
	var first error
	failed := 0
	for _, name := range names {
		var err error
		if fd >= 0 {
			err = unix.Fsetxattr(fd, name, x[name], 0)
		} else {
			err = unix.Lsetxattr(path, name, x[name], 0)
		}
		switch {
		case err == nil:
		case err == unix.ENOTSUP:
			unsupported = append(unsupported, name)
		default:
			failed++
			if first == nil {
				first = fmt.Errorf("set extended attribute %s: %w", name, err)
			}
			if err == unix.ENOSPC || err == unix.E2BIG || err == unix.EDQUOT {
				failed += len(names) - 1 - slices.Index(names, name) // no room for the rest either
				return unsupported, xattrFailures(first, failed)
			}
		}
	}
	return unsupported, xattrFailures(first, failed)
}

// xattrFailures is the first error of n failed attributes, with the count
// of the others (one line per item, however many attributes failed).
func xattrFailures(first error, n int) error {
	if n <= 1 {
		return first
	}
	return fmt.Errorf("%w (and %d more extended attributes not set)", first, n-1)
}
