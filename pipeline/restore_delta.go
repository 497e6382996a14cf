package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/repo"
)

// A delta restore (RestoreOptions.Delta) keeps a regular file already at
// its target path and writes only the chunks that differ from the
// snapshot's: each extent of the file is read locally and hashed with the
// repository's chunk hash (or, for a hole, checked to be zeros). Resuming
// an interrupted restore or refreshing a DR copy then reads from the
// repository, which may be a remote site or a bucket, only what changed.

// reusable opens entry name of dir (path dp) for a delta restore of n, or
// returns nil when the entry is to be replaced as in a full restore. A
// file is written in place only when no one but the restoring user and
// the file's recorded owner can hold it open: a regular file with one
// name (a second name could be a hard link planted to a file outside the
// target), owned by the restoring user or by n's recorded owner and
// group, with no group or other access n does not record (a descriptor
// opened before the restore keeps reading or writing what is restored),
// group access only for n's group, no POSIX ACL, no setuid or setgid bit
// (a privileged program is not rewritten while it can run), and not a
// mount point (a file bind-mounted there).
func (rs *restorer) reusable(dir *restoreDir, name, dp string, n *repo.Node) *os.File {
	// Only a regular file is opened: opening a device can do something
	// (rewind a tape, arm a watchdog).
	var st unix.Stat_t
	if unix.Fstatat(dir.fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	// O_NONBLOCK: a FIFO swapped in meanwhile must not block the open.
	f, err := openNoPollAt(dir.fd(), name, dp, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil
	}
	euid := uint32(os.Geteuid())
	ok := unix.Fstat(int(f.Fd()), &st) == nil &&
		st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 &&
		(st.Uid == euid || st.Uid == n.UID && st.Gid == n.GID) &&
		st.Mode&0o066&^uint32(n.Mode.Perm()) == 0 &&
		(st.Mode&0o060 == 0 || st.Gid == n.GID) &&
		st.Mode&(unix.S_ISUID|unix.S_ISGID) == 0 &&
		!hasACL(int(f.Fd())) &&
		!mountedOn(int(f.Fd()), dir.fd())
	if ok {
		_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, 0) // blocking again
		ok = err == nil
	}
	if !ok {
		f.Close()
		return nil
	}
	return f
}

// mountedOn reports whether open file fd is a mount point in directory
// dir (a file bind-mounted there): writing it in place would write the
// mount's source, where a full restore fails with EBUSY. Without statx's
// mount ids it cannot tell, and says no.
func mountedOn(fd, dir int) bool {
	var a, b unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &a) != nil || unix.Statx(dir, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &b) != nil {
		return false
	}
	return a.Mask&b.Mask&unix.STATX_MNT_ID != 0 && a.Mnt_id != b.Mnt_id
}

// hasACL reports whether open file fd carries a POSIX access ACL.
func hasACL(fd int) bool {
	_, err := unix.Fgetxattr(fd, aclAccess, nil)
	return err == nil
}

// deltaBufMax bounds a comparer's read buffer: a longer data extent
// (chunks are far shorter) is not compared, only written.
const deltaBufMax = 8 << 20

// sameExtent reports whether the bytes of f at [off, off+e.Len) are
// extent e's. For a zero extent that is not, it makes them so, punching a
// hole (or writing zeros where the file system cannot punch), and reports
// done. A data extent over a hole differs without being read.
func (rs *restorer) sameExtent(f *os.File, e repo.Extent, off int64, buf *[]byte) (same, done bool, err error) {
	fd := int(f.Fd())
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	hole := errors.Is(err, unix.ENXIO) || err == nil && data >= off+e.Len
	if e.Zero {
		if hole {
			// SEEK_DATA reports preallocated (unwritten) blocks as a hole
			// too: free them, as a full restore leaves none there.
			unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, e.Len)
			return true, true, nil
		}
		zero, err := readZero(f, off, e.Len, buf)
		if err != nil {
			return false, false, err
		}
		if zero {
			// Allocated zeros where the snapshot has a hole: a hole, as a
			// full restore leaves it, where the file system can punch one.
			unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, e.Len)
			return true, true, nil
		}
		return false, true, punchZeros(f, off, e.Len)
	}
	if hole {
		return false, false, nil
	}
	if e.Len > deltaBufMax {
		return false, false, nil // not a chunk this restore would compare
	}
	if int64(cap(*buf)) < e.Len {
		*buf = make([]byte, e.Len)
	}
	b := (*buf)[:e.Len]
	if _, err := f.ReadAt(b, off); err != nil {
		if err == io.EOF {
			return false, false, nil
		}
		return false, false, fmt.Errorf("read the file in place at offset %d: %w", off, err)
	}
	same = rs.r.BlobID(b) == e.ID
	return same, same, nil
}

// readZero reports whether f holds only zeros at [off, off+n), reading
// into *buf.
func readZero(f *os.File, off, n int64, buf *[]byte) (bool, error) {
	if cap(*buf) < 1<<20 {
		*buf = make([]byte, 1<<20)
	}
	for n > 0 {
		b := (*buf)[:min(n, 1<<20)]
		k, err := f.ReadAt(b, off)
		if !isZero(b[:k]) {
			return false, nil
		}
		if err == io.EOF {
			return true, nil // past the end reads as zeros
		}
		if err != nil {
			return false, fmt.Errorf("read the file in place at offset %d: %w", off, err)
		}
		off, n = off+int64(k), n-int64(k)
	}
	return true, nil
}

// punchZeros makes [off, off+n) of f zeros: a hole where the file system
// can punch one, written zeros otherwise.
func punchZeros(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if err != unix.EOPNOTSUPP && err != unix.ENOSYS {
		return fmt.Errorf("punch a hole at offset %d: %w", off, err)
	}
	zeros := bytes.Repeat([]byte{0}, int(min(n, 1<<20)))
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:k], off); err != nil {
			return fmt.Errorf("write zeros at offset %d: %w", off, err)
		}
		off, n = off+k, n-k
	}
	return nil
}

// dropExtraXattrs removes from a file restored in place, or a directory
// kept from the target, the extended attributes n does not record (set
// ones are rewritten by applyMetaFd).
func dropExtraXattrs(fd int, n *repo.Node) error {
	size, err := unix.Flistxattr(fd, nil)
	if err != nil || size == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return err
	}
	buf := make([]byte, size+64)
	size, err = unix.Flistxattr(fd, buf)
	if err != nil {
		return fmt.Errorf("list extended attributes: %w", err)
	}
	for _, name := range bytes.Split(buf[:size], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		if _, ok := n.Xattrs[string(name)]; ok {
			continue
		}
		err := unix.Fremovexattr(fd, string(name))
		refused := err == unix.EPERM || err == unix.EACCES || err == unix.ENOTSUP
		if refused && bytes.HasPrefix(name, []byte("security.")) {
			// A label the security module keeps (security.selinux: no one
			// may remove it; any security.* without CAP_SYS_ADMIN). A new
			// file would carry the policy's label too.
			err = nil
		}
		if refused && bytes.HasPrefix(name, []byte("system.")) && !bytes.HasPrefix(name, []byte("system.posix_acl_")) {
			// The file system's own view of the file (system.nfs4_acl on
			// NFSv4, system.cifs_acl on SMB), which every entry there
			// shows and none may drop: a new one would show it too. A
			// POSIX ACL that stays is still an error.
			err = nil
		}
		if err != nil && err != unix.ENODATA {
			return fmt.Errorf("remove extended attribute %s, which the snapshot does not record: %w", name, err)
		}
	}
	return nil
}
