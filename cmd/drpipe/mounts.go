package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxMountTable bounds what is read of /etc/fstab and mountinfo.
const maxMountTable = 4 << 20

// unmountedMountPoint returns the deepest mount point other than "/" that
// fstab lists at or above dir when mountinfo shows nothing mounted there:
// a local tier's directory is then the empty directory the file system
// would be mounted on, and a copy would fill the one beneath. resolve maps
// a path to the one the kernel sees (symbolic links resolved), in which
// dir is given and mountinfo speaks. A table that cannot be read to its
// end (longer than maxMountTable, a read error) tells nothing: false.
func unmountedMountPoint(dir string, fstab, mountinfo io.Reader, resolve func(string) string) (string, bool) {
	dir = filepath.Clean(dir)
	points, err := fstabMountPoints(fstab)
	if err != nil {
		return "", false
	}
	best, bestAt := "", ""
	for _, m := range points {
		at := resolve(m)
		if at == "/" || !(dir == at || strings.HasPrefix(dir, at+"/")) {
			continue
		}
		if len(at) > len(bestAt) {
			best, bestAt = m, at
		}
	}
	if best == "" {
		return "", false
	}
	mounted, err := mountedPoints(mountinfo)
	if err != nil || mounted[bestAt] {
		return "", false
	}
	return best, true
}

// resolvePath returns p with its symbolic links resolved, or p when that
// fails (it does not exist).
func resolvePath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// unmountedTierDir is unmountedMountPoint on this host's /etc/fstab and
// /proc/self/mountinfo (false when either cannot be read).
func unmountedTierDir(dir string) (string, bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	abs = resolvePath(abs)
	fstab, err := os.Open("/etc/fstab")
	if err != nil {
		return "", false
	}
	defer fstab.Close()
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	defer mi.Close()
	return unmountedMountPoint(abs, fstab, mi, resolvePath)
}

// fstabMountPoints returns the mount points (second field) of fstab's
// entries, swap and "none" left out, escapes (\040) decoded, cleaned.
func fstabMountPoints(r io.Reader) ([]string, error) {
	var out []string
	err := readMountTable(r, func(f []string) {
		if len(f) < 3 || strings.HasPrefix(f[0], "#") || f[2] == "swap" {
			return
		}
		m := unescapeMount(f[1])
		if !strings.HasPrefix(m, "/") {
			return // none, swap
		}
		out = append(out, filepath.Clean(m))
	})
	return out, err
}

// mountedPoints returns the mount points (fifth field) of mountinfo.
func mountedPoints(r io.Reader) (map[string]bool, error) {
	out := map[string]bool{}
	err := readMountTable(r, func(f []string) {
		if len(f) < 5 {
			return
		}
		out[filepath.Clean(unescapeMount(f[4]))] = true
	})
	return out, err
}

// readMountTable calls fn with the fields of every line of a mount table,
// lines of any length; a table longer than maxMountTable is an error, as
// is a read error: what comes after is not seen.
func readMountTable(r io.Reader, fn func(fields []string)) error {
	br := bufio.NewReader(io.LimitReader(r, maxMountTable+1))
	n := 0
	for {
		line, err := br.ReadString('\n')
		if n += len(line); n > maxMountTable {
			return fmt.Errorf("mount table longer than %d bytes", maxMountTable)
		}
		if line != "" {
			fn(strings.Fields(line))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read mount table: %w", err)
		}
	}
}

// unescapeMount decodes the octal escapes (\040 for a space) fstab and
// mountinfo use in paths; anything else is left as it is.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
