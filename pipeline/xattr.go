package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Extended attributes (user.*, security.*, trusted.*, and the POSIX ACLs
// kept as system.posix_acl_*) are backed up with each entry and set again
// on restore. Reading never follows a symlink.

// readXattrs returns the extended attributes of path, nil when it has none
// or its file system keeps none. Names that are not valid UTF-8 cannot be
// recorded in a tree (JSON keys); they are left out and reported in err
// along with the attributes that were read.
func readXattrs(path string) (map[string][]byte, error) {
	var stack [1024]byte
	names, err := xattrList(path, stack[:])
	if err != nil || len(names) == 0 {
		if err == unix.ENOTSUP || err == unix.ENOENT {
			return nil, nil // no xattrs on this file system; or gone (the caller reports that)
		}
		if err != nil {
			return nil, fmt.Errorf("list extended attributes: %w", err)
		}
		return nil, nil
	}
	out := map[string][]byte{}
	var errs []error
	for _, nb := range bytes.Split(bytes.TrimRight(names, "\x00"), []byte{0}) {
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
		out[name] = v
	}
	if len(out) == 0 {
		out = nil
	}
	return out, errors.Join(errs...)
}

// xattrList returns the NUL-separated attribute names of path, using buf
// when it is large enough.
func xattrList(path string, buf []byte) ([]byte, error) {
	for range 4 { // the list can grow between asking its size and reading it
		n, err := unix.Llistxattr(path, buf)
		if err == nil {
			return buf[:n], nil
		}
		if err != unix.ERANGE {
			return nil, err
		}
		if n, err = unix.Llistxattr(path, nil); err != nil {
			return nil, err
		}
		buf = make([]byte, n+256)
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
	var errs []error
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
			errs = append(errs, fmt.Errorf("set extended attribute %s: %w", name, err))
		}
	}
	return unsupported, errors.Join(errs...)
}
