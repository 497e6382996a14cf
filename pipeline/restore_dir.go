package pipeline

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// restoreDir is a directory of the restore target held open while its
// entries are restored. Entries are made through its descriptor (the *at
// system calls), and each directory below is opened from it without
// following a symlink: a directory of the target that someone replaces by
// a symlink while the restore runs (a user's directory in a restore to /)
// cannot send what is restored below it out of the target.
type restoreDir struct {
	f       *os.File
	path    string // the directory's path, for messages and later passes
	created bool   // made by this restore, empty at first
	// followed: reached through a symlink above the backed-up paths
	// (followAncestor); its metadata is left as it is.
	followed bool
	acl      int8 // whether it holds a default ACL: 0 not asked yet, 1 no, 2 yes (inheritsACL)
}

func (d *restoreDir) fd() int { return int(d.f.Fd()) }

// close releases the descriptor.
func (d *restoreDir) close() { d.f.Close() }

// pinned is a path for entry name of d that system calls without an *at
// form (extended attributes) resolve through d's descriptor, never
// through d's path. Without /proc there is none (ok false): the plain
// path would follow a directory swapped for a symlink.
func (d *restoreDir) pinned(name string) (p string, ok bool) {
	if !procFD {
		return "", false
	}
	return "/proc/self/fd/" + strconv.Itoa(d.fd()) + "/" + name, true
}

// errNoProc is why extended attributes of symlinks, devices, FIFOs and
// disk images are not set without /proc.
var errNoProc = errors.New("/proc is not mounted, and without it they cannot be set without following a directory someone may have swapped for a symlink; mount it (mount -t proc proc /proc) and restore this path again")

// procFD reports whether /proc/self/fd resolves descriptors (procfs is
// mounted), asked once.
var procFD = func() bool {
	_, err := os.Stat("/proc/self/fd/0")
	return err == nil
}()

// openDirAt opens directory name of dir without following a symlink,
// retrying when interrupted.
func openDirAt(dir int, name, path string) (*restoreDir, error) {
	f, err := openNoPollAt(dir, name, path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	return &restoreDir{f: f, path: path}, nil
}

// ancestorPaths returns the snapshot paths strictly above the backed-up
// paths, without those backed up themselves and without "/".
func ancestorPaths(paths []string) map[string]bool {
	backed := map[string]bool{}
	for _, p := range paths {
		backed[filepath.Clean("/"+p)] = true
	}
	m := map[string]bool{}
	for p := range backed {
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			if !backed[d] {
				m[d] = true
			}
		}
	}
	return m
}

// followAncestor opens the directory a symlink at p leads to, p being a
// directory above the backed-up paths: a restore to / keeps /lib on a
// merged-/usr system, or /srv pointing to a data volume, rather than
// replacing them with directories (GNU tar's --keep-directory-symlink,
// rsync's --keep-dirlinks). The link is resolved with the target as root
// (openInRoot: an absolute target is taken below it, ".." stops at it),
// so nothing leaves the target, and through links root or the restoring
// user owns only. It returns nil when the link leads to no directory, or
// only through another user's link: the symlink is then replaced, as
// elsewhere.
func (rs *restorer) followAncestor(p string) *restoreDir {
	rel, err := filepath.Rel(rs.top.path, p)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil
	}
	fd, err := rs.openInRoot(rel, unix.O_RDONLY)
	if err != nil {
		return nil
	}
	rs.followedMu.Lock()
	rs.followedDirs[p] = true
	rs.followedMu.Unlock()
	return &restoreDir{f: os.NewFile(uintptr(fd), p), path: p, followed: true}
}

// maxLinks bounds the symlinks one resolution follows, as the kernel's
// limit does.
const maxLinks = 40

// errUntrustedLink is why a symlink on the way to a directory above the
// backed-up paths is not followed.
var errUntrustedLink = errors.New("a symlink on the way is owned by another user than root and the restoring user, who could have planted it; not followed")

// trustedLink reports whether a symlink owned by uid may be followed:
// root's or the restoring user's, not one another user could have made.
func trustedLink(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// openInRoot opens directory rel, a path below the restore target, with
// flags (O_RDONLY or O_PATH), resolved with the target as root, as
// openat2's RESOLVE_IN_ROOT does (an absolute link target is taken below
// the target, ".." stops at it), but following only symlinks root or the
// restoring user owns (trustedLink). Each component is opened without
// following it, and a symlink is checked and read through that
// descriptor: a link swapped for another one meanwhile is not followed
// unchecked.
func (rs *restorer) openInRoot(rel string, flags int) (int, error) {
	var stack []int // the directories walked below the target, innermost last
	defer func() {
		for _, fd := range stack {
			unix.Close(fd)
		}
	}()
	cur := func() int {
		if len(stack) == 0 {
			return rs.top.fd()
		}
		return stack[len(stack)-1]
	}
	rest := strings.Split(rel, "/")
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if n := len(stack); n > 0 {
				unix.Close(stack[n-1])
				stack = stack[:n-1]
			}
			continue
		}
		fd, err := openatRetry(cur(), c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if err != nil {
			return -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			stack = append(stack, fd)
			continue
		case unix.S_IFLNK:
		default:
			unix.Close(fd)
			return -1, unix.ENOTDIR
		}
		if links++; links > maxLinks {
			unix.Close(fd)
			return -1, unix.ELOOP
		}
		if !trustedLink(st.Uid) {
			unix.Close(fd)
			return -1, errUntrustedLink
		}
		to, err := readlinkFd(fd)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		if strings.HasPrefix(to, "/") {
			for _, fd := range stack {
				unix.Close(fd)
			}
			stack = stack[:0]
		}
		rest = append(strings.Split(to, "/"), rest...)
	}
	return openatRetry(cur(), ".", flags|unix.O_DIRECTORY|unix.O_CLOEXEC)
}

// openatRetry is openat, retried when interrupted.
func openatRetry(dir int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dir, name, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// readlinkFd reads the target of the symlink open (O_PATH) as fd.
func readlinkFd(fd int) (string, error) {
	for n := 256; ; n *= 2 {
		buf := make([]byte, n)
		m, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if m < n {
			return string(buf[:m]), nil
		}
	}
}

// wasFollowed reports whether the directory at target path p was reached
// through a symlink (followAncestor).
func (rs *restorer) wasFollowed(p string) bool {
	rs.followedMu.Lock()
	defer rs.followedMu.Unlock()
	return rs.followedDirs[p]
}

// openNoPollAt is openNoPoll relative to directory descriptor dir; path
// names the file in errors and in the *os.File.
func openNoPollAt(dir int, name, path string, flags int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Openat(dir, name, flags|unix.O_CLOEXEC, perm)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}

// openBeneath opens path, a path below the restore target, by walking
// from the target's descriptor one component at a time without following
// a symlink anywhere but where the walk followed one (followAncestor, and
// as it did: within the target): for what comes after the walk left a
// directory (links to finished files, clean-up after Ctrl-C), when it is
// no longer held open. flags apply to the last component (O_NOFOLLOW is
// added).
func (rs *restorer) openBeneath(path string, flags int) (*os.File, error) {
	rel, err := filepath.Rel(rs.top.path, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("%s is not below the restore target %s", path, rs.top.path)
	}
	if rel == "." {
		return openNoPollAt(rs.top.fd(), ".", path, flags, 0)
	}
	parts := strings.Split(rel, "/")
	dir := rs.top.fd()
	for i, p := range parts[:len(parts)-1] {
		var fd int
		var err error
		if prefix := filepath.Join(parts[:i+1]...); rs.wasFollowed(filepath.Join(rs.top.path, prefix)) {
			fd, err = rs.openInRoot(prefix, unix.O_PATH)
		} else {
			fd, err = unix.Openat(dir, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			for err == unix.EINTR {
				fd, err = unix.Openat(dir, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		if dir != rs.top.fd() {
			unix.Close(dir)
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: filepath.Join(rs.top.path, filepath.Join(parts[:i+1]...)), Err: notFollowed(err)}
		}
		dir = fd
	}
	f, err := openNoPollAt(dir, parts[len(parts)-1], path, flags|unix.O_NOFOLLOW, 0)
	if dir != rs.top.fd() {
		unix.Close(dir)
	}
	if err != nil && flags&unix.O_DIRECTORY != 0 {
		err = notFollowed(err)
	}
	return f, err
}

// removeBeneath unlinks the file at path below the restore target (see
// openBeneath).
func (rs *restorer) removeBeneath(path string) error {
	d, err := rs.openBeneath(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Unlinkat(int(d.Fd()), filepath.Base(path), 0); err != nil {
		return &fs.PathError{Op: "remove", Path: path, Err: err}
	}
	return nil
}

// absDir is the absolute path of open directory f (path as given).
func absDir(f *os.File, path string) string {
	if procFD {
		if p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd()))); err == nil && filepath.IsAbs(p) {
			return p
		}
	}
	p, _ := filepath.Abs(path)
	return p
}

// whereNow is where open file f, restored at path, is now, below the
// target: after Ctrl-C the files not yet complete are removed, also from
// a directory someone moved meanwhile. It is path when that cannot be
// told (no /proc), and "" (nothing to remove: whatever is at path now is
// not this file) when the file is no longer below the target.
func (rs *restorer) whereNow(f *os.File, path string) string {
	if !procFD {
		return path
	}
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil || !filepath.IsAbs(p) {
		return path
	}
	rel, err := filepath.Rel(rs.topAbs, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return ""
	}
	return filepath.Join(rs.top.path, rel)
}

// notFollowed explains ELOOP or ENOTDIR from an O_NOFOLLOW open of a
// directory: a symlink (or a file) took the place of a directory of the
// target since the restore made or kept it.
func notFollowed(err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%w (a symlink or file is there now, not the directory restored; not followed)", err)
	}
	return err
}

// linkFile makes name in dir another name of the open file f, through
// /proc/self/fd (no privilege needed) or AT_EMPTY_PATH (needs
// CAP_DAC_READ_SEARCH): never by path, which someone may have changed.
func linkFile(f *os.File, dir int, name string) error {
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), dir, name, unix.AT_SYMLINK_FOLLOW)
	if err == nil || err == unix.EEXIST {
		return err
	}
	if err2 := unix.Linkat(int(f.Fd()), "", dir, name, unix.AT_EMPTY_PATH); err2 == nil {
		return nil
	}
	return err
}

// fileID is a file's device and inode.
type fileID struct{ dev, ino uint64 }

// fileIDOf is the device and inode of open file f.
func fileIDOf(f *os.File) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileID{}, err
	}
	return fileID{st.Dev, st.Ino}, nil
}
