package main

import (
	"bufio"
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
// dir is given and mountinfo speaks.
func unmountedMountPoint(dir string, fstab, mountinfo io.Reader, resolve func(string) string) (string, bool) {
	dir = filepath.Clean(dir)
	best, bestAt := "", ""
	for _, m := range fstabMountPoints(fstab) {
		at := resolve(m)
		if at == "/" || !(dir == at || strings.HasPrefix(dir, at+"/")) {
			continue
		}
		if len(at) > len(bestAt) {
			best, bestAt = m, at
		}
	}
	if best == "" || mountedPoints(mountinfo)[bestAt] {
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
func fstabMountPoints(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(io.LimitReader(r, maxMountTable))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || strings.HasPrefix(f[0], "#") || f[2] == "swap" {
			continue
		}
		m := unescapeMount(f[1])
		if !strings.HasPrefix(m, "/") {
			continue // none, swap
		}
		out = append(out, filepath.Clean(m))
	}
	return out
}

// mountedPoints returns the mount points (fifth field) of mountinfo.
func mountedPoints(r io.Reader) map[string]bool {
	out := map[string]bool{}
	sc := bufio.NewScanner(io.LimitReader(r, maxMountTable))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		out[filepath.Clean(unescapeMount(f[4]))] = true
	}
	return out
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
