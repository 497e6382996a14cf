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

// fsRights are credentials with which files are opened on behalf of
// someone else: a disk image is flattened only through parents that
// everyone who may rewrite its header may read, or a user whose overlay
// names /etc/shadow as its backing file would get it back in the
// restored image.
type fsRights struct {
	who      string // for messages: "owner uid 1000"
	uid, gid int
	groups   []int
}

// noID is a user and group id that owns nothing: the rights of a group
// or of anyone, without an owner's.
const noID = 0x7ffffffe

// imageWriters returns the rights of those who may rewrite the image
// file st describes: its owner unless root, its group when the group may
// write it, anyone when everyone may. It returns nil when only root may,
// or when the backup does not run as root (it can open only what its own
// user may).
func imageWriters(st *syscall.Stat_t) []*fsRights {
	if os.Geteuid() != 0 {
		return nil
	}
	var ws []*fsRights
	if st.Uid != 0 {
		ws = append(ws, ownerRights(int(st.Uid), int(st.Gid)))
	}
	if st.Mode&0o020 != 0 && st.Gid != 0 {
		ws = append(ws, &fsRights{who: fmt.Sprintf("group gid %d, which may write the image,", st.Gid), uid: noID, gid: int(st.Gid), groups: []int{int(st.Gid)}})
	}
	if st.Mode&0o002 != 0 {
		ws = append(ws, &fsRights{who: "anyone, as everyone may write the image,", uid: noID, gid: noID})
	}
	return ws
}

// ownerRights are the rights of user uid: its primary group and groups
// from the user database, or gid alone for a user it does not know (a
// container's).
func ownerRights(uid, gid int) *fsRights {
	r := &fsRights{who: fmt.Sprintf("the image's owner uid %d", uid), uid: uid, gid: gid}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		r.groups = []int{gid}
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

// openAsEach opens name once with each of ws's rights and returns the
// first file: every one of them must be able to open it.
func openAsEach(ws []*fsRights, name string) (*os.File, error) {
	var first *os.File
	for _, w := range ws {
		f, err := w.open(name)
		if err != nil {
			if first != nil {
				first.Close()
			}
			return nil, err
		}
		if first == nil {
			first = f
		} else {
			f.Close()
		}
	}
	return first, nil
}

// open opens name read-only (O_NONBLOCK: a FIFO must not block open(2))
// with r's file-system rights: the kernel checks every directory of the
// path and the file itself as it would for them. The rights are set on
// one locked thread only (fsuid, fsgid and the supplementary groups are
// per thread) and put back after the open; a thread whose rights could
// not be put back is not released, so it ends with its goroutine instead
// of running others.
func (r *fsRights) open(name string) (*os.File, error) {
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
		if unix.Setgroups(groups) == nil && fsuid() == uid && fsgid() == gid {
			runtime.UnlockOSThread()
		}
		ch <- result{f, err}
	}()
	res := <-ch
	return res.f, res.err
}

// openAs takes on r's rights on the calling (locked) thread and opens
// name.
func (r *fsRights) openAs(name string) (*os.File, error) {
	if err := unix.Setgroups(r.groups); err != nil {
		return nil, fmt.Errorf("take on the groups of %s: %w", r.who, err)
	}
	unix.Setfsgid(r.gid)
	unix.Setfsuid(r.uid)
	if fsuid() != r.uid || fsgid() != r.gid {
		return nil, errors.New("could not take on the file-system ids of " + r.who)
	}
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("with the rights of %s, which may not read it: %w", r.who, err)
	}
	return f, nil
}

// fsuid and fsgid are the calling thread's file-system ids (setfsuid(-1)
// changes nothing and returns the current one).
func fsuid() int {
	u, _ := unix.SetfsuidRetUid(-1)
	return u
}

func fsgid() int {
	g, _ := unix.SetfsgidRetGid(-1)
	return g
}
