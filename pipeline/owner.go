package pipeline

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ownerRights are the credentials with which a file's owner opens files:
// a disk image is flattened only through parents its owner may read, or
// a user whose overlay names /etc/shadow as its backing file would get
// it back in the restored image.
type ownerRights struct {
	uid, gid int
	groups   []int
}

// rightsOfOwner returns the rights of the owner of the file st describes,
// or nil when opening as the backup itself does is the same: the owner is
// root, or the backup does not run as root (it can open only what its own
// user may).
func rightsOfOwner(st *syscall.Stat_t) *ownerRights {
	if os.Geteuid() != 0 || st.Uid == 0 {
		return nil
	}
	r := &ownerRights{uid: int(st.Uid), gid: int(st.Gid)}
	u, err := user.LookupId(strconv.Itoa(r.uid))
	if err != nil {
		// An owner the user database does not know (a container's
		// user): the file's group stands for its groups.
		r.groups = []int{r.gid}
		return r
	}
	if g, err := strconv.Atoi(u.Gid); err == nil {
		r.gid = g
	}
	ids, _ := u.GroupIds()
	for _, s := range ids {
		if g, err := strconv.Atoi(s); err == nil {
			r.groups = append(r.groups, g)
		}
	}
	if len(r.groups) == 0 {
		r.groups = []int{r.gid}
	}
	return r
}

// open opens name read-only (O_NONBLOCK: a FIFO must not block open(2))
// with the owner's file-system rights: the kernel checks every directory
// of the path and the file itself as it would for the owner. The rights
// are set on one locked thread only (fsuid, fsgid and the supplementary
// groups are per thread) and put back after the open; a thread whose
// rights could not be put back is not released, so it ends with its
// goroutine instead of running others.
func (r *ownerRights) open(name string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		groups, err := unix.Getgroups()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("read this thread's groups: %w", err)}
			return
		}
		uid, gid := os.Geteuid(), os.Getegid()
		f, err := r.openAs(name)
		unix.Setfsuid(uid)
		unix.Setfsgid(gid)
		if unix.Setgroups(groups) == nil && fsuid() == uid {
			runtime.UnlockOSThread()
		}
		ch <- result{f, err}
	}()
	res := <-ch
	return res.f, res.err
}

// openAs takes on the owner's rights on the calling (locked) thread and
// opens name.
func (r *ownerRights) openAs(name string) (*os.File, error) {
	if err := unix.Setgroups(r.groups); err != nil {
		return nil, fmt.Errorf("take on the groups of uid %d: %w", r.uid, err)
	}
	unix.Setfsgid(r.gid)
	unix.Setfsuid(r.uid)
	if fsuid() != r.uid {
		return nil, errors.New("could not take on the file-system uid of the image's owner")
	}
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("with the rights of the image's owner (uid %d), who may not read it: %w", r.uid, err)
	}
	return f, nil
}

// fsuid is the calling thread's file-system uid (setfsuid(-1) changes
// nothing and returns it).
func fsuid() int {
	u, _ := unix.SetfsuidRetUid(-1)
	return u
}
