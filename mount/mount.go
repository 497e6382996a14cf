// Package mount serves a repository's snapshots as a read-only FUSE file
// system (github.com/hanwen/go-fuse/v2), for granular restore without
// restoring a whole VM.
//
// # Layout
//
//	/<host>/<time>/...            one directory per snapshot (UTC time,
//	                              RFC 3339 to the second; a short id is
//	                              appended when two share a second)
//	/<host>/latest                symlink to the newest snapshot of host
//	                              (of those that could be read: see
//	                              Server.Unreadable)
//	.../<file>                    files, directories, symlinks as they were
//	.../<image>.raw               each VM disk image that backup recognised
//	                              (repo.Node.Disk), as its flattened raw
//	                              virtual disk (<image>.2.raw, .3.raw ...
//	                              when the snapshot has a file of that name)
//
// Snapshots are listed when the file system is mounted; a snapshot's trees
// are loaded when first looked at. File content is read on demand from the
// repository (any tier it reads from) through one shared chunk cache, so a
// loop-mounted raw disk image reads only the chunks the guest file system
// touches. A chunk that cannot be read (lost, or damaged beyond what parity
// rebuilds) fails the read with EIO; wrong bytes are never returned.
//
// Names that were hard links of one file in a snapshot are one inode of
// the mount, with the link count the backup recorded (see snapLinks).
package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/vmdisk"
)

// Options configure a mount.
type Options struct {
	// CacheBytes bounds the shared chunk cache (default 256 MiB).
	CacheBytes int64
	// OnError is told about read errors (path and cause); may be nil.
	OnError func(path string, err error)
	// Debug logs every FUSE request (go-fuse debug output).
	Debug bool
}

// Server is a mounted file system.
type Server struct {
	srv *fuse.Server
	dir string
	// Unreadable is set when some snapshots could not be read: they are
	// not shown, and a host's latest link names its newest readable
	// snapshot, which may not be its newest. The caller tells the user.
	Unreadable error
}

// ErrDetached is returned by Unmount when the mount point stayed busy (a
// shell inside it, a file open): it was detached from the file system
// tree instead (a lazy unmount), and the file system keeps serving the
// programs still using it until they leave, when Wait returns. Stopping
// the server before that gives them errors.
var ErrDetached = errors.New("mount point busy: detached lazily")

// Unmount unmounts the file system, retrying while it is busy for up to
// five seconds, then detaching it lazily (ErrDetached). Without that, a
// process that exits after a failed unmount leaves a dead mount point
// ("transport endpoint is not connected") until someone runs
// fusermount3 -u.
func (s *Server) Unmount() error {
	var err error
	for i := 0; i < 20; i++ {
		if err = s.srv.Unmount(); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	if derr := detach(s.dir); derr != nil {
		return fmt.Errorf("unmount: %w (is something still using the mount point?); a lazy unmount failed too: %v", err, derr)
	}
	return ErrDetached
}

// detach unmounts dir lazily: umount2(MNT_DETACH) as root, fusermount3
// -u -z otherwise.
func detach(dir string) error {
	if os.Geteuid() == 0 {
		return unix.Unmount(dir, unix.MNT_DETACH)
	}
	if out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("fusermount3 -u -z: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Wait blocks until the file system is unmounted.
func (s *Server) Wait() { s.srv.Wait() }

type mfs struct {
	r     *repo.Repository
	cache *pipeline.BlobCache
	o     Options

	inoMu   sync.Mutex
	nextIno uint64 // the last inode number given to a hard-linked file
}

// snapLinks gives the hard-linked files of one snapshot their inode
// numbers, as their names are looked up: every name of a file gets the
// number its first name got, so that go-fuse serves them all as one inode
// and ls -i, find -samefile, du, rsync -H and cp -a see one file. Only
// hard-linked files looked up are kept (a few dozen bytes each), and for
// as long as the file system is mounted, so that a name looked up again
// after the kernel forgot the inode still shows the number a program
// walking the snapshot saw for its other names.
type snapLinks struct {
	mu  sync.Mutex
	ino map[linkKey]uint64
}

// linkKey identifies a hard-linked file of a snapshot: the device and
// inode it had on the backed-up system, and a digest of what its node
// recorded (pipeline.InodeDataSum), so that names recorded with different
// data (the file changed between reading them) stay two files, as
// restore makes them.
type linkKey struct {
	dev, ino uint64
	sum      [32]byte
}

// hardLinked reports whether n is a file the snapshot recorded with
// other names (its device and inode identify them).
func hardLinked(n *repo.Node) bool {
	return n.Type == repo.NodeFile && n.Links > 1 && n.Inode != 0
}

// inode returns the inode number of hard-linked file n in the snapshot
// of l. The numbers are given out from 2 up, below the ones go-fuse
// gives other nodes (from 1<<63).
func (l *snapLinks) inode(m *mfs, n *repo.Node) uint64 {
	k := linkKey{n.DeviceID, n.Inode, pipeline.InodeDataSum(n)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if ino, ok := l.ino[k]; ok {
		return ino
	}
	m.inoMu.Lock()
	if m.nextIno == 0 {
		m.nextIno = 1 // the root's
	}
	m.nextIno++
	ino := m.nextIno
	m.inoMu.Unlock()
	if l.ino == nil {
		l.ino = map[linkKey]uint64{}
	}
	l.ino[k] = ino
	return ino
}

// Mount lists the snapshots of r and mounts them read-only at dir. The
// caller must Unmount the returned server (and keep r open until then).
func Mount(ctx context.Context, r *repo.Repository, dir string, o Options) (*Server, error) {
	if o.CacheBytes <= 0 {
		o.CacheBytes = 256 << 20
	}
	snaps, err := r.ListSnapshots(ctx)
	if err != nil && len(snaps) == 0 {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	m := &mfs{r: r, cache: pipeline.NewBlobCache(r, o.CacheBytes), o: o}
	root := &rootNode{m: m, snaps: snaps}
	sec := time.Second
	srv, merr := gofs.Mount(dir, root, &gofs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec,
		MountOptions: fuse.MountOptions{FsName: "drpipe", Name: "drpipe", Options: []string{"ro"}, Debug: o.Debug, MaxReadAhead: 1 << 20},
	})
	if merr != nil {
		return nil, fmt.Errorf("mount FUSE file system at %s: %w (needs /dev/fuse and fusermount3)", dir, merr)
	}
	return &Server{srv: srv, dir: dir, Unreadable: err}, nil
}

type rootNode struct {
	gofs.Inode
	m     *mfs
	snaps []*repo.Snapshot
}

var _ gofs.NodeOnAdder = (*rootNode)(nil)

func (rn *rootNode) OnAdd(ctx context.Context) {
	byHost := map[string][]*repo.Snapshot{}
	for _, s := range rn.snaps {
		h := s.Host
		if h == "" || h == "." || h == ".." || strings.ContainsAny(h, "/\x00") {
			h = "_"
		}
		byHost[h] = append(byHost[h], s)
	}
	for host, list := range byHost {
		sort.Slice(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
		hd := rn.NewPersistentInode(ctx, &gofs.Inode{}, gofs.StableAttr{Mode: fuse.S_IFDIR})
		rn.AddChild(host, hd, false)
		used := map[string]bool{}
		var last string
		for _, s := range list {
			name := s.Time.UTC().Format("2006-01-02T15:04:05Z")
			if used[name] {
				name += "-" + s.ID().Short()
			}
			used[name] = true
			sd := &dirNode{m: rn.m, links: &snapLinks{}, root: s.Tree, tree: s.Tree, path: "/", mtime: s.Time}
			hd.AddChild(name, hd.NewPersistentInode(ctx, sd, gofs.StableAttr{Mode: fuse.S_IFDIR}), false)
			last = name
		}
		hd.AddChild("latest", hd.NewPersistentInode(ctx, &gofs.MemSymlink{Data: []byte(last)}, gofs.StableAttr{Mode: fuse.S_IFLNK}), false)
	}
}

// dirNode is a directory of a snapshot, loaded on first use.
type dirNode struct {
	gofs.Inode
	m     *mfs
	links *snapLinks // the snapshot's hard-linked files
	root  id.ID      // the snapshot's root tree
	tree  id.ID
	path  string // snapshot path
	node  *repo.Node
	mtime time.Time

	loaded once // kids and names are set once, by load, and never change
	names  []string
	kids   map[string]entry
}

// once runs a node's one-time load: one request loads, and the others
// wait for it, each only as long as its own context lets it (a request
// whose program is being killed must not stay behind another one's load
// from a hung tier). A failed load is not remembered: the next request
// loads again.
type once struct {
	mu   sync.Mutex
	done bool
	busy chan struct{} // closed when the running load ends
}

// loaded reports whether a load has succeeded, without waiting for one
// that runs.
func (o *once) loaded() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.done
}

func (o *once) do(ctx context.Context, load func() error) error {
	for {
		o.mu.Lock()
		if o.done {
			o.mu.Unlock()
			return nil
		}
		if busy := o.busy; busy != nil {
			o.mu.Unlock()
			select {
			case <-busy:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		busy := make(chan struct{})
		o.busy = busy
		o.mu.Unlock()
		err := load()
		o.mu.Lock()
		o.done, o.busy = err == nil, nil
		close(busy)
		o.mu.Unlock()
		return err
	}
}

type entry struct {
	n    *repo.Node
	disk bool // the raw view of a disk image
}

var (
	_ gofs.NodeLookuper    = (*dirNode)(nil)
	_ gofs.NodeReaddirer   = (*dirNode)(nil)
	_ gofs.NodeGetattrer   = (*dirNode)(nil)
	_ gofs.NodeGetxattrer  = (*dirNode)(nil)
	_ gofs.NodeListxattrer = (*dirNode)(nil)
	_ gofs.NodeGetxattrer  = (*fileNode)(nil)
	_ gofs.NodeListxattrer = (*specialNode)(nil)
	_ gofs.NodeReadlinker  = (*specialNode)(nil)
)

// load reads the directory's tree once it is first needed. A failed load
// is not remembered: a tier that failed for a moment (a network error,
// a cancelled context) must not leave the directory failed for good.
func (d *dirNode) load(ctx context.Context) error {
	return d.loaded.do(ctx, func() error { return d.loadTree(ctx) })
}

func (d *dirNode) loadTree(ctx context.Context) error {
	if d.kids != nil {
		return nil // an empty directory, made so at lookup
	}
	t, err := d.m.r.LoadTree(ctx, d.tree)
	if err != nil {
		if ctx.Err() == nil {
			d.m.report(d.path, err)
		}
		return err
	}
	kids := map[string]entry{}
	var names []string
	add := func(name string, e entry) {
		if _, dup := kids[name]; !dup {
			kids[name] = e
			names = append(names, name)
		}
	}
	var disks []*repo.Node
	for _, n := range t.Nodes {
		if n.Name == "" || n.Name == "." || n.Name == ".." || strings.ContainsAny(n.Name, "/\x00") || n.Type == repo.NodeSocket {
			continue
		}
		if n.Disk != nil {
			disks = append(disks, n)
			continue
		}
		add(n.Name, entry{n: n})
	}
	// Raw views after the entries of the snapshot, so that a view never
	// hides a file of the same name (web.qcow2 next to a kept export
	// web.qcow2.raw): the view is then web.qcow2.2.raw, and so on.
	for _, n := range disks {
		name := n.Name + ".raw"
		for i := 2; kids[name].n != nil; i++ {
			name = fmt.Sprintf("%s.%d.raw", n.Name, i)
		}
		add(name, entry{n: n, disk: true})
	}
	sort.Strings(names)
	d.kids, d.names = kids, names
	return nil
}

// work returns the context a request's work runs under, and its release,
// to be called once the request is answered.
//
// The kernel interrupts a FUSE request when any signal reaches the thread
// waiting on it (a SIGCHLD, the Go runtime's preemption signal in a Go
// reader), and go-fuse then cancels the request's context. Abandoning the
// work for that failed the reader's open or read with EIO, and answering
// EINTR instead would make a slow load under periodic signals start over
// forever. So, as most FUSE file systems do, drpipe finishes the request:
// its work runs without the request's cancellation, and after a signal
// that does not kill the reader the kernel waits for the answer and gives
// it to the reader.
//
// After a fatal signal (kill -9, Ctrl-C of a program that does not catch
// it) the kernel waits for the answer too, with the program unkillable
// until it comes: were the work served on while a tier hangs, so would
// the program. And go-fuse cancels every request in flight when the
// connection is aborted (umount -f, fusectl's abort): the kernel has
// failed them for their callers, and work served on would keep the
// server's loops, which handle requests inline, and so Wait, from
// returning until the tier answers. So once a request's context ends, its
// caller is watched (callerWaits), and the work is cancelled as soon as
// the caller no longer waits for the answer: it is being killed, has
// exited, or is seen doing something else.
func (m *mfs) work(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	caller, ok := fuse.FromContext(ctx)
	if !ok || caller.Pid == 0 || ctx.Done() == nil {
		return wctx, cancel
	}
	pid := int(caller.Pid)
	go func() {
		select {
		case <-wctx.Done():
			return
		case <-ctx.Done(): // interrupted, or the connection is gone
		}
		t := time.NewTicker(callerPoll)
		defer t.Stop()
		seen, elsewhere := false, 0
		for {
			switch callerWaits(pid, seen) {
			case callerWaiting:
				seen, elsewhere = true, 0
			case callerElsewhere:
				// Twice, so that the moment between the interruption and
				// the kernel's wait for the answer does not count.
				seen = true
				if elsewhere++; elsewhere == 2 {
					cancel()
					return
				}
			case callerDone:
				cancel()
				return
			}
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return wctx, cancel
}

// callerPoll is how often the caller of an interrupted request is looked at.
const callerPoll = 50 * time.Millisecond

// What callerWaits tells of a request's caller.
const (
	callerUnknown   = iota // its status cannot be read: the request is served on
	callerWaiting          // in uninterruptible sleep, as while the kernel waits for the answer
	callerElsewhere        // running or sleeping otherwise: not waiting for the answer
	callerDone             // being killed, or exited
)

// callerWaits looks at thread pid, a request's caller as the kernel names
// it in the request, in /proc. A pending SIGKILL (which the kernel also
// sets for any other fatal signal it does not dump core for) means it is
// being killed. A thread that is gone has exited, when it was seen before
// or /proc shows every process (no hidepid).
func callerWaits(pid int, seen bool) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && (seen || !procHidesProcesses()) {
			return callerDone
		}
		return callerUnknown
	}
	state := callerUnknown
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			state = callerElsewhere
			if strings.HasPrefix(v, "D") {
				state = callerWaiting
			}
		case "SigPnd", "ShdPnd":
			if mask, err := strconv.ParseUint(v, 16, 64); err == nil && mask&(1<<(unix.SIGKILL-1)) != 0 {
				return callerDone
			}
		}
	}
	return state
}

// procHidesProcesses reports whether /proc is mounted with hidepid, so
// that a caller missing from it may only be hidden.
var procHidesProcesses = sync.OnceValue(func() bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != "/proc" {
			continue
		}
		for _, o := range strings.Split(f[len(f)-1], ",") {
			if v, ok := strings.CutPrefix(o, "hidepid="); ok && v != "0" && v != "off" {
				return true
			}
		}
	}
	return false
})

// errno is the answer to a request whose work under wctx (see work)
// failed, asked before wctx is released: EINTR when the work was
// cancelled, EIO otherwise.
func errno(wctx context.Context) syscall.Errno {
	if wctx.Err() != nil {
		return syscall.EINTR
	}
	return syscall.EIO
}

func (m *mfs) report(path string, err error) {
	if m.o.OnError != nil {
		m.o.OnError(path, err)
	}
}

func (d *dirNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if d.node != nil {
		fillAttr(&out.Attr, d.node, 0)
	} else {
		out.Mode = fuse.S_IFDIR | 0o555
		out.SetTimes(nil, &d.mtime, &d.mtime)
	}
	return 0
}

func (d *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	wctx, done := d.m.work(ctx)
	defer done()
	if err := d.load(wctx); err != nil {
		return nil, errno(wctx)
	}
	ents := make([]fuse.DirEntry, 0, len(d.names))
	for _, name := range d.names {
		ents = append(ents, fuse.DirEntry{Name: name, Mode: typeBits(d.kids[name].n)})
	}
	return gofs.NewListDirStream(ents), 0
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	wctx, done := d.m.work(ctx)
	defer done()
	if err := d.load(wctx); err != nil {
		return nil, errno(wctx)
	}
	e, ok := d.kids[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	if ch := d.GetChild(name); ch != nil {
		// Looked up again (the entry timeout passed): the inode the
		// kernel has, so that the name keeps its inode number, and its
		// listing or reader stays loaded.
		if ga, ok := ch.Operations().(gofs.NodeGetattrer); ok {
			var ao fuse.AttrOut
			ga.Getattr(ctx, nil, &ao)
			out.Attr = ao.Attr
			return ch, 0
		}
	}
	cp := strings.TrimSuffix(d.path, "/") + "/" + e.n.Name
	var emb interface {
		gofs.InodeEmbedder
		gofs.NodeGetattrer
	}
	switch {
	case e.n.Type == repo.NodeDir:
		var sub id.ID
		if e.n.Subtree != nil {
			sub = *e.n.Subtree
		}
		dn := &dirNode{m: d.m, links: d.links, root: d.root, tree: sub, path: cp, node: e.n}
		if e.n.Subtree == nil {
			dn.kids = map[string]entry{} // empty: nothing to load
		}
		emb = dn
	case e.n.Type == repo.NodeFile:
		emb = &fileNode{m: d.m, root: d.root, path: cp, n: e.n, disk: e.disk}
	default:
		emb = &specialNode{n: e.n}
	}
	// The node's own Getattr, so that a lookup tells what a later stat
	// does (the raw view of a disk image has a mode of its own).
	var ao fuse.AttrOut
	emb.Getattr(ctx, nil, &ao)
	out.Attr = ao.Attr
	sa := gofs.StableAttr{Mode: typeBits(e.n)}
	if !e.disk && hardLinked(e.n) && d.links != nil {
		// The same number for every name: go-fuse then serves the
		// inode it already has for another name, if any.
		sa.Ino = d.links.inode(d.m, e.n)
	}
	ch := d.NewInode(ctx, emb, sa)
	return ch, 0
}

func typeBits(n *repo.Node) uint32 {
	switch n.Type {
	case repo.NodeDir:
		return fuse.S_IFDIR
	case repo.NodeSymlink:
		return fuse.S_IFLNK
	case repo.NodeDev:
		return syscall.S_IFBLK
	case repo.NodeCharDev:
		return syscall.S_IFCHR
	case repo.NodeFIFO:
		return syscall.S_IFIFO
	}
	return fuse.S_IFREG
}

func fillAttr(a *fuse.Attr, n *repo.Node, _ int) {
	a.Mode = typeBits(n) | uint32(n.Mode&fs.ModePerm) | pipeline.UnixModeBits(n.Mode)
	if n.Type == repo.NodeFile || n.Type == repo.NodeSymlink {
		a.Size = uint64(n.Size)
		if n.Type == repo.NodeSymlink {
			a.Size = uint64(len(n.LinkTarget))
		}
	}
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096 // set, or go-fuse overwrites Blocks from the size
	a.Owner = fuse.Owner{Uid: n.UID, Gid: n.GID}
	at := n.AccessTime
	if at.IsZero() {
		at = n.ModTime
	}
	ct := n.ChangeTime
	if ct.IsZero() {
		ct = n.ModTime
	}
	a.SetTimes(&at, &n.ModTime, &ct)
	a.Nlink = 1
	if hardLinked(n) {
		// The links the file had when it was backed up, names outside
		// the backed-up paths included: counting the snapshot's names
		// would take reading all of it.
		a.Nlink = uint32(min(n.Links, math.MaxUint32))
	}
	if n.Type == repo.NodeDev || n.Type == repo.NodeCharDev {
		a.Rdev = uint32(n.Rdev)
	}
}

// getXattr serves one of n's recorded extended attributes (n may be nil:
// a directory made up for the snapshot's paths, which has none).
func getXattr(n *repo.Node, attr string, dest []byte) (uint32, syscall.Errno) {
	var v []byte
	ok := false
	if n != nil {
		v, ok = n.Xattrs[attr]
	}
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// listXattr serves the names of n's recorded extended attributes, each
// NUL-terminated, in sorted order.
func listXattr(n *repo.Node, dest []byte) (uint32, syscall.Errno) {
	if n == nil || len(n.Xattrs) == 0 {
		return 0, 0
	}
	names := make([]string, 0, len(n.Xattrs))
	size := 0
	for k := range n.Xattrs {
		names = append(names, k)
		size += len(k) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	sort.Strings(names)
	off := 0
	for _, k := range names {
		off += copy(dest[off:], k)
		dest[off] = 0
		off++
	}
	return uint32(off), 0
}

// Getxattr implements gofs.NodeGetxattrer.
func (d *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getXattr(d.node, attr, dest)
}

// Listxattr implements gofs.NodeListxattrer.
func (d *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listXattr(d.node, dest)
}

// specialNode is a symlink, device or FIFO of a snapshot: attributes and
// extended attributes as recorded, and a symlink's target.
type specialNode struct {
	gofs.Inode
	n *repo.Node
}

// Readlink implements gofs.NodeReadlinker.
func (s *specialNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(s.n.LinkTarget), 0
}

// Getxattr implements gofs.NodeGetxattrer.
func (s *specialNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getXattr(s.n, attr, dest)
}

// Listxattr implements gofs.NodeListxattrer.
func (s *specialNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listXattr(s.n, dest)
}

func (s *specialNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, s.n, 0)
	return 0
}

// fileNode is a file of a snapshot; disk marks the raw view of a disk
// image (flattened across its chain in the same snapshot).
type fileNode struct {
	gofs.Inode
	m    *mfs
	root id.ID
	path string
	n    *repo.Node
	disk bool

	opened once // rd and data are set once, by reader, and never change
	rd     interface {
		ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
		Size() int64
		Data() []vmdisk.Range // sorted, merged; the rest reads as zeros
	}
	// data is rd.Data(), made once: it walks every extent (and, for a
	// raw view, sorts the layers'), too much for each SEEK_DATA and
	// SEEK_HOLE of a sparse copy, which asks twice per run.
	data []vmdisk.Range
}

var (
	_ gofs.NodeOpener    = (*fileNode)(nil)
	_ gofs.NodeReader    = (*fileNode)(nil)
	_ gofs.NodeGetattrer = (*fileNode)(nil)
	_ gofs.NodeLseeker   = (*fileNode)(nil)
)

func (f *fileNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, f.n, 0)
	if f.disk {
		out.Mode = fuse.S_IFREG | 0o444
		out.Nlink = 1
	}
	if n, ok := f.allocated(); ok {
		out.Blocks = uint64(n+511) / 512
	}
	return 0
}

// allocated is how many bytes of the file stored chunks hold, holes and
// zero regions left out, when that is known without reading the
// repository: from the extents a small file keeps in its node, or from
// the reader once the file has been opened. A stat before the first open
// of a large file (its extents in content lists) or of a raw disk view
// counts every byte, as fillAttr does.
func (f *fileNode) allocated() (int64, bool) {
	if f.opened.loaded() {
		var n int64
		for _, r := range f.data {
			n += r.Len
		}
		return n, true
	}
	if f.disk || len(f.n.ContentLists) > 0 {
		return 0, false
	}
	var n int64
	for _, e := range f.n.Content {
		if !e.Zero {
			n += e.Len
		}
	}
	return n, true
}

// Lseek implements gofs.NodeLseeker: SEEK_DATA and SEEK_HOLE go by the
// chunks the snapshot stores, so the holes and zero regions backup
// recorded are holes here too, and tools that copy sparse files by
// seeking (cp, tar --sparse, qemu-img convert) skip them instead of
// reading gigabytes of zeros.
func (f *fileNode) Lseek(ctx context.Context, _ gofs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	if whence != unix.SEEK_DATA && whence != unix.SEEK_HOLE {
		return 0, syscall.EINVAL
	}
	wctx, done := f.m.work(ctx)
	defer done()
	if err := f.reader(wctx); err != nil {
		if wctx.Err() == nil {
			f.m.report(f.path, err)
		}
		return 0, errno(wctx)
	}
	size := f.rd.Size()
	if off >= uint64(size) {
		return 0, syscall.ENXIO
	}
	o := int64(off)
	data := f.data
	// The first data range that ends after o.
	i := sort.Search(len(data), func(i int) bool { return data[i].End() > o })
	if whence == unix.SEEK_DATA {
		if i == len(data) {
			return 0, syscall.ENXIO
		}
		return uint64(max(o, data[i].Off)), 0
	}
	if i < len(data) && data[i].Off <= o {
		return uint64(min(data[i].End(), size)), 0
	}
	return off, 0
}

// Getxattr implements gofs.NodeGetxattrer. The raw view of a disk image
// is made by drpipe and has none.
func (f *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if f.disk {
		return 0, syscall.ENODATA
	}
	return getXattr(f.n, attr, dest)
}

// Listxattr implements gofs.NodeListxattrer.
func (f *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if f.disk {
		return 0, 0
	}
	return listXattr(f.n, dest)
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	wctx, done := f.m.work(ctx)
	defer done()
	if err := f.reader(wctx); err != nil {
		if wctx.Err() == nil {
			f.m.report(f.path, err)
		}
		return nil, 0, errno(wctx)
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *fileNode) reader(ctx context.Context) error {
	loaded := false
	err := f.opened.do(ctx, func() error {
		err := f.open(ctx)
		loaded = err == nil
		return err
	})
	if loaded {
		f.refreshBlocks()
	}
	return err
}

func (f *fileNode) open(ctx context.Context) error {
	if f.disk {
		sd, err := pipeline.OpenSnapshotDisk(ctx, f.m.r, f.root, f.path, f.n, f.m.cache)
		if err != nil {
			return err
		}
		f.rd, f.data = sd, sd.Data()
		return nil
	}
	nr, err := pipeline.NewNodeReader(ctx, f.m.r, f.n, f.m.cache)
	if err != nil {
		return err
	}
	f.rd, f.data = nr, nr.Data()
	return nil
}

// refreshBlocks drops the attributes the kernel holds for f once its
// reader is loaded, when st_blocks could not be told before (see
// allocated), so that an fstat right after the first open (cp --sparse
// asks) counts the stored bytes rather than the size. Only the
// attributes: the cached content stays.
func (f *fileNode) refreshBlocks() {
	if f.disk || len(f.n.ContentLists) > 0 {
		f.NotifyContent(-1, 0)
	}
}

func (f *fileNode) Read(ctx context.Context, _ gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	wctx, done := f.m.work(ctx)
	defer done()
	if err := f.reader(wctx); err != nil {
		if wctx.Err() == nil {
			f.m.report(f.path, err)
		}
		return nil, errno(wctx)
	}
	n, err := f.rd.ReadAtContext(wctx, dest, off)
	if err != nil && err != io.EOF {
		if wctx.Err() == nil {
			f.m.report(f.path, err)
		}
		return nil, errno(wctx)
	}
	return fuse.ReadResultData(dest[:n]), 0
}
