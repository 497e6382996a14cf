package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/chunking"
	"github.com/drpipe/drpipe/internal/cpus"
	"github.com/drpipe/drpipe/internal/hugepage"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
)

// BackupOptions configure one backup run.
type BackupOptions struct {
	Host  string
	Tags  []string
	Paths []string
	// Stdin, when set, is backed up as one file named StdinName instead of
	// Paths.
	Stdin     io.Reader
	StdinName string
	// Parent is the snapshot whose unchanged files are reused without
	// reading. Nil selects the newest snapshot of the same host and paths
	// unless NoParent is set.
	Parent   *repo.Snapshot
	NoParent bool
	// Inventory is stored in the snapshot (VM inventory, opaque here).
	Inventory json.RawMessage
	// Workers is the number of chunking workers (default cpus.N()+2, at
	// most maxDefaultWorkers). Each holds one segment buffer.
	Workers int
	// Progress receives counters (default NoProgress).
	Progress Progress
	// Scan runs a concurrent pre-scan so Progress learns totals early.
	Scan bool
	// Time is the snapshot time (default: the repository clock).
	Time time.Time
	// Program is recorded in the snapshot (e.g. "drpipe 0.1.0").
	Program string
	// Flatten backs up differencing disk images as their merged virtual
	// disk instead of as a chain of layers (see disk.go).
	Flatten bool
	// NoDiskImages backs up disk image containers as plain files.
	NoDiskImages bool
	// RawDisks lists files known to be raw disks (those the VM inventory
	// gives as raw), by absolute path; a file matches by its path or by
	// its path with symlinks resolved. They are backed up as plain files
	// even when their first bytes look like an image header: a guest
	// writes every byte of its raw disk, and a qcow2 header it wrote there
	// would otherwise be read as the disk, with a backing file naming any
	// file of the host (the format-probing hazard of CVE-2008-2004).
	RawDisks map[string]bool
}

// BackupResult describes a finished backup.
type BackupResult struct {
	Snapshot *repo.Snapshot
	Summary  repo.Summary
	// Warnings counts items that could not be backed up; the snapshot
	// exists but is incomplete when it is not zero.
	Warnings int
}

// MaxNameLen is the longest file name, in bytes, that Linux file systems
// hold (NAME_MAX): the limit of a --stdin-name.
const MaxNameLen = 255

// ErrPartial is returned (with a result) when the snapshot was written
// but some source items could not be read.
var ErrPartial = errors.New("snapshot is incomplete: some files could not be read")

type backup struct {
	r        *repo.Repository
	o        BackupOptions
	ck       chunking.Config
	progress Progress
	ctx      context.Context
	cancel   context.CancelCauseFunc
	start    time.Time // before anything was read (racy)
	// linkFirst maps each multi-name file seen to the read of its first
	// name (under linkMu; see file).
	linkMu    sync.Mutex
	linkFirst map[inodeKey]*linkedRead
	// parentXattrs: the parent snapshot recorded extended attributes, so
	// an unchanged entry's may be taken from it (see xattrs).
	parentXattrs bool
	xattrErrors  atomic.Int64 // entries whose attributes were not all read
	// pseudoRoots are the given paths on /proc or /sys, below which
	// their files are read to their end; pseudoDevs maps the devices of
	// files without blocks there to whether they are (see pseudoFile).
	pseudoRoots []string
	pseudoDevs  sync.Map

	// jobs queues segments larger than smallBuf (2 per worker: each may
	// have a whole segment prefetched); smallJobs queues smaller ones,
	// whole small files mostly, smallAhead deep.
	jobs      chan segJob
	smallJobs chan segJob
	walkSem   chan struct{}
	workers   sync.WaitGroup
	bigBufs   *hugepage.Pool // segment buffers, one per worker
	smlBufs   sync.Pool

	bytesRead atomic.Int64
	bytesDone atomic.Int64
	files     atomic.Int64
	dirs      atomic.Int64
	warnings  atomic.Int64
}

// currentUser is the name of the user running the backup ("" if unknown).
func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

// recordXattrs is whether backups read extended attributes (false only in
// tests that stand in for a build from before they were recorded).
var recordXattrs = true

const smallBuf = 4 << 20

// smallAhead is how many segments of at most smallBuf (small files) the
// walker opens and prefetches ahead of the workers. Each takes a worker
// well under a millisecond, so two per worker (the depth that suits 32 MiB
// segments) issue the read of a small file too late to hide the disk's
// latency; 64 files of the benchmark tree's 60 KiB keep about 4 MiB of
// reads in flight (its backup from a cold cache was 3% faster). At most
// 256 MiB are prefetched, as with the large segments' queue.
const smallAhead = 64

// maxDefaultWorkers caps the default worker count on hosts with many
// cores: each worker holds a segment buffer (32 MiB by default), so a
// 64-core hypervisor host would otherwise give a backup 2 GiB of them,
// more than 16 workers' chunking rate (several GB/s) is of use to any
// disk. Options.Workers (config key workers) sets more.
const maxDefaultWorkers = 16

// walkers bounds the directories listed concurrently.
const walkers = 4

// Backup backs up o.Paths (or o.Stdin) into r and writes a snapshot. On a
// fatal error nothing is referenced by a snapshot, and what was stored is
// kept for the next run to deduplicate against. When some items could not
// be read the snapshot is still written and the error wraps ErrPartial.
func Backup(ctx context.Context, r *repo.Repository, o BackupOptions) (*BackupResult, error) {
	start := time.Now()
	if o.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("no --host given and the hostname is unknown: %w", err)
		}
		o.Host = h
	}
	if o.Workers <= 0 {
		// Two more than cores: while a worker waits for the disk, the
		// others keep the CPUs busy. At most maxDefaultWorkers, as each
		// holds a segment buffer.
		o.Workers = min(cpus.N()+2, maxDefaultWorkers)
	}
	if o.Progress == nil {
		o.Progress = NoProgress{}
	}
	if o.Stdin != nil {
		if o.StdinName == "" {
			return nil, errors.New("--stdin needs --stdin-name NAME for the file in the snapshot")
		}
		if strings.ContainsAny(o.StdinName, "/\x00") || o.StdinName == "." || o.StdinName == ".." {
			return nil, fmt.Errorf("--stdin-name %q must be a plain file name", o.StdinName)
		}
		if len(o.StdinName) > MaxNameLen {
			return nil, fmt.Errorf("--stdin-name is %d bytes long: a file name has at most %d, or no restore can create the file", len(o.StdinName), MaxNameLen)
		}
	} else if len(o.Paths) == 0 {
		return nil, errors.New("nothing to back up: give one or more paths, or --stdin")
	}
	paths, err := cleanPaths(o.Paths)
	if err != nil {
		return nil, err
	}
	if o.Stdin != nil {
		paths = []string{"/" + o.StdinName}
	}
	// Announce this writer before reading the index and prune tombstones,
	// so a concurrent prune either sees the session or this backup sees
	// its tombstone (see repo.Prune).
	sess, err := r.BeginSession(ctx, o.Host)
	if err != nil {
		return nil, err
	}
	defer sess.End(context.WithoutCancel(ctx))
	if err := r.LoadIndex(ctx); err != nil {
		return nil, err
	}
	b := &backup{r: r, o: o, ck: r.ChunkConfig(), progress: o.Progress, start: start}
	b.ctx, b.cancel = context.WithCancelCause(ctx)
	defer b.cancel(nil)
	b.bigBufs = hugepage.NewPool(int(b.ck.SegmentSize), o.Workers)
	b.smlBufs.New = func() any { s := make([]byte, smallBuf); return &s }
	for _, p := range paths {
		var sf unix.Statfs_t
		if o.Stdin == nil && unix.Statfs(p, &sf) == nil && pseudoFS(int64(sf.Type)) {
			b.pseudoRoots = append(b.pseudoRoots, p)
		}
	}
	before := r.SessionStats()

	parent := o.Parent
	if parent == nil && !o.NoParent && o.Stdin == nil {
		parent = findParent(ctx, r, o.Host, paths)
	}
	var parentTree id.ID
	if parent != nil {
		parentTree = parent.Tree
		// Only from a snapshot whose user saw the same attributes
		// (trusted.* are root's alone, for one).
		b.parentXattrs = parent.Has(repo.FeatureXattrs) && parent.Username == currentUser()
	}

	b.jobs = make(chan segJob, 2*o.Workers)
	b.smallJobs = make(chan segJob, smallAhead)
	b.walkSem = make(chan struct{}, walkers)
	for i := 0; i < o.Workers; i++ {
		ch, err := chunking.NewChunker(b.ck)
		if err != nil {
			return nil, err
		}
		b.workers.Add(1)
		go b.worker(ch)
	}
	if o.Scan && o.Stdin == nil {
		go scan(b.ctx, paths, o.Progress)
	}

	var rootTree id.ID
	var walkErr error
	if o.Stdin != nil {
		rootTree, walkErr = b.backupStdin()
	} else {
		fut := b.virtualRoot(paths, parentTree)
		walkErr = fut.wait()
		if walkErr == nil {
			rootTree = *fut.node.Subtree
		}
	}
	close(b.jobs)
	close(b.smallJobs)
	b.workers.Wait()
	if cause := context.Cause(b.ctx); cause != nil && walkErr == nil {
		walkErr = cause
	}
	if walkErr != nil {
		if ctx.Err() != nil {
			// Interrupted: the packs already stored are indexed, so
			// the next run deduplicates against them (bounded: Ctrl-C
			// must not wait on a storage that does not answer).
			ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), indexOnInterrupt)
			if err := r.IndexStored(ictx); err != nil {
				walkErr = fmt.Errorf("%w (the data stored before the interruption could not be indexed, and the next backup stores it again: %v)", walkErr, err)
			}
			cancel()
		}
		return nil, walkErr
	}
	if err := r.Flush(ctx); err != nil {
		return nil, fmt.Errorf("finish writing to %s: %w", r.Backend().Location(), err)
	}
	t := o.Time
	if t.IsZero() {
		t = r.Now()
	}
	sn := &repo.Snapshot{Time: t, Host: o.Host, Tags: o.Tags, Paths: paths, Tree: rootTree, Program: o.Program, Inventory: o.Inventory}
	// A snapshot where some attributes could not be read does not claim
	// them all: the next backup reads every entry's again (and warns
	// again) rather than take over an incomplete set.
	if recordXattrs && b.xattrErrors.Load() == 0 {
		sn.Features = []string{repo.FeatureXattrs}
	}
	sn.Username = currentUser()
	if parent != nil {
		pid := parent.ID()
		sn.Parent = &pid
	}
	after := r.SessionStats()
	sum := repo.Summary{
		Files:      b.files.Load(),
		Dirs:       b.dirs.Load(),
		BytesRead:  b.bytesRead.Load(),
		BytesTotal: b.bytesDone.Load(),
		BlobsNew:   after.Blobs - before.Blobs,
	}
	sn.Summary = &sum
	// BytesNew counts every stored byte this backup added. The summary
	// saved in the snapshot counts all but the snapshot object itself
	// (which cannot hold its own size); the result adds it after saving.
	sum.BytesNew = after.StoredBytes - before.StoredBytes
	sum.DurationSec = time.Since(start).Seconds()
	// A session that lapsed may have let a prune remove packs this
	// backup deduplicated against: no snapshot then.
	if err := sess.Check(); err != nil {
		return nil, err
	}
	if _, err := r.SaveSnapshot(ctx, sn); err != nil {
		return nil, err
	}
	sum.BytesNew = r.SessionStats().StoredBytes - before.StoredBytes
	res := &BackupResult{Snapshot: sn, Summary: sum, Warnings: int(b.warnings.Load())}
	if res.Warnings > 0 {
		return res, fmt.Errorf("%w (%d items; see the warnings above)", ErrPartial, res.Warnings)
	}
	return res, nil
}

// cleanPaths makes paths absolute, cleans and sorts them and drops paths
// inside another given path. A given symlink with given paths through it
// is dropped instead: it is then a directory above them, as any symlink
// above a backup path is, where its own backup would store only the link.
// A path inside another that leads out of it through a symlink above it
// is refused, as the other's backup would store the link and not what it
// leads to; a given symlink inside another path is dropped as covered.
func cleanPaths(in []string) ([]string, error) {
	var out []string
	links := map[string]bool{}
	for _, p := range in {
		if p == "" {
			return nil, errors.New("empty path given")
		}
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("path %q: %w", p, err)
		}
		fi, err := os.Lstat(a)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", a, err)
		}
		a = filepath.Clean(a)
		links[a] = fi.Mode()&fs.ModeSymlink != 0
		out = append(out, a)
	}
	sort.Strings(out)
	out = slices.Compact(out)
	var res []string
	for _, p := range out {
		i := slices.IndexFunc(res, func(q string) bool { return q == "/" || strings.HasPrefix(p, q+"/") })
		if i < 0 {
			res = append(res, p)
			continue
		}
		q := res[i]
		if links[q] {
			res = append(slices.Delete(res, i, i+1), p)
			continue
		}
		rq, err := filepath.EvalSymlinks(q)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", q, err)
		}
		// Only the directories above p: p itself, if a symlink, is
		// stored as the link, by the backup of q as on its own.
		rp, err := filepath.EvalSymlinks(filepath.Dir(p))
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", p, err)
		}
		rp = filepath.Join(rp, filepath.Base(p))
		if rq != "/" && rp != rq && !strings.HasPrefix(rp, rq+"/") {
			return nil, fmt.Errorf("source %s leads out of %s through a symbolic link, to %s, and the backup of %s stores that link, not what it leads to: give %s instead of %s", p, q, rp, q, rp, p)
		}
	}
	return res, nil
}

// findParent returns the newest snapshot of host with exactly these paths.
func findParent(ctx context.Context, r *repo.Repository, host string, paths []string) *repo.Snapshot {
	all, _ := r.ListSnapshots(ctx)
	var best *repo.Snapshot
	for _, s := range all {
		if s.Host != host || !slices.Equal(s.Paths, paths) {
			continue
		}
		if best == nil || s.Time.After(best.Time) {
			best = s
		}
	}
	return best
}

// future is a node whose content is still being produced.
type future struct {
	node *repo.Node
	done chan struct{}
	err  error // fatal error only; per-item problems are warnings
	skip bool  // item could not be backed up (warned)
	// read identifies the file a regular file's content was read from
	// (fstat of the open descriptor), for its other names (sameAs).
	read inodeIdent
}

// inodeIdent identifies one state of a file: device, inode and change time.
type inodeIdent struct {
	dev, ino uint64
	ctime    time.Time
}

func doneFuture(n *repo.Node) *future {
	f := &future{node: n, done: make(chan struct{})}
	close(f.done)
	return f
}

func (f *future) wait() error { <-f.done; return f.err }

func (b *backup) warn(path string, err error) {
	b.warnings.Add(1)
	b.progress.Warn(path, err)
}

// skipFile warns that the regular file at path is left out of the
// snapshot and takes it back out of the file count (file counted it).
func (b *backup) skipFile(path string, err error) {
	b.warn(path, err)
	b.files.Add(-1)
}

func (b *backup) fatal(err error) { b.cancel(err) }

// vdir is a directory on the way from / to the given paths.
type vdir struct {
	path     string
	children map[string]*vdir
	leaf     bool
}

// virtualRoot builds the directories above the backup paths and processes
// the paths themselves.
func (b *backup) virtualRoot(paths []string, parentTree id.ID) *future {
	root := &vdir{path: "/", children: map[string]*vdir{}}
	for _, p := range paths {
		if p == "/" {
			root.leaf = true
			continue
		}
		cur := root
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		for i, part := range parts {
			nx := cur.children[part]
			if nx == nil {
				nx = &vdir{path: filepath.Join(cur.path, part), children: map[string]*vdir{}}
				cur.children[part] = nx
			}
			cur = nx
			if i == len(parts)-1 {
				cur.leaf = true
			}
		}
	}
	rootNode := &repo.Node{Name: "", Type: repo.NodeDir, Mode: fs.ModeDir | 0o755}
	if root.leaf {
		fi, err := os.Lstat("/")
		if err != nil {
			return &future{err: err, done: closed()}
		}
		return b.dir("/", fi, nil, b.parentTreeNodes(parentTree))
	}
	return b.vdirFuture(root, rootNode, b.parentTreeNodes(parentTree))
}

func closed() chan struct{} { c := make(chan struct{}); close(c); return c }

func (b *backup) vdirFuture(v *vdir, n *repo.Node, parent map[string]*repo.Node) *future {
	if v.path != "/" {
		fi, err := os.Lstat(v.path)
		if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			// A directory above a backup path reached through a symlink
			// (/var/lib/libvirt -> /srv/libvirt): the snapshot holds the
			// path as given, so this name is a directory there (a symlink
			// node cannot hold the entries below it).
			fi, err = os.Stat(v.path)
		}
		if err != nil {
			return &future{err: fmt.Errorf("stat %s: %w", v.path, err), done: closed()}
		}
		n = nodeFromInfo(filepath.Base(v.path), fi)
		b.xattrs(v.path, n, nil)
	}
	names := make([]string, 0, len(v.children))
	for k := range v.children {
		names = append(names, k)
	}
	sort.Strings(names)
	var kids []*future
	for _, name := range names {
		c := v.children[name]
		pn := parent[name]
		if c.leaf {
			fi, err := os.Lstat(c.path)
			if err != nil {
				return b.abandon(fmt.Errorf("stat %s: %w", c.path, err), kids)
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				if st, err := os.Stat(c.path); err == nil && st.IsDir() {
					// Stored as the link it is (as restic does), but an
					// admin who meant the directory learns it now.
					b.progress.Warn(c.path, errors.New("is a symlink to a directory: only the link is stored; give the directory it points to (or a path through it) to back up its contents"))
				}
			}
			kids = append(kids, b.entry(c.path, fi, pn))
			continue
		}
		var sub map[string]*repo.Node
		if pn != nil && pn.Subtree != nil {
			sub = b.parentTreeNodes(*pn.Subtree)
		}
		kids = append(kids, b.vdirFuture(c, nil, sub))
	}
	return b.finishDir(v.path, n, kids)
}

// abandon fails the backup with err and returns a future that completes
// with err once the children already started have stopped: until then
// they may still be queueing segments, and the queues close only after
// the root's future is done.
func (b *backup) abandon(err error, kids []*future) *future {
	b.fatal(err)
	f := &future{err: err, done: make(chan struct{})}
	go func() {
		for _, k := range kids {
			k.wait()
		}
		close(f.done)
	}()
	return f
}

// parentTreeNodes loads a parent tree as a name map (nil on any problem:
// the parent is only an optimisation).
func (b *backup) parentTreeNodes(t id.ID) map[string]*repo.Node {
	if t.IsNull() {
		return nil
	}
	tr, err := b.r.LoadTree(b.ctx, t)
	if err != nil {
		return nil
	}
	m := make(map[string]*repo.Node, len(tr.Nodes))
	for _, n := range tr.Nodes {
		m[n.Name] = n
	}
	return m
}

// finishDir saves the tree of n's children once they are all complete.
func (b *backup) finishDir(path string, n *repo.Node, kids []*future) *future {
	f := &future{node: n, done: make(chan struct{})}
	if path != "/" { // the snapshot's root is where a restore's target is
		b.dirs.Add(1)
	}
	go func() {
		defer close(f.done)
		t := &repo.Tree{}
		// Every child is waited for, also after one failed: the
		// backup closes its job queues once the root is done, and no
		// child may still be queueing segments then.
		for _, k := range kids {
			if err := k.wait(); err != nil && f.err == nil {
				f.err = err
			}
			if !k.skip {
				if k.node != nil && racy(k.node.ChangeTime, b.start) {
					k.node.ChangeTime = time.Time{}
				}
				t.Nodes = append(t.Nodes, k.node)
			}
		}
		if f.err != nil {
			return
		}
		sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
		x, err := b.r.SaveTree(b.ctx, t)
		if err != nil {
			f.err = fmt.Errorf("save tree of %s: %w", path, err)
			b.fatal(f.err)
			return
		}
		n.Subtree = &x
	}()
	return f
}

// entry backs up one file-system item.
func (b *backup) entry(path string, fi fs.FileInfo, parent *repo.Node) *future {
	if err := b.ctx.Err(); err != nil {
		return &future{err: context.Cause(b.ctx), done: closed()}
	}
	n := nodeFromInfo(filepath.Base(path), fi)
	if !fi.IsDir() && fi.Mode()&fs.ModeSocket == 0 { // dir reads a directory's own
		b.xattrs(path, n, parent)
	}
	switch {
	case fi.Mode().IsRegular():
		return b.file(path, fi, n, parent)
	case fi.IsDir():
		// Directories are listed by up to walkers goroutines at once, so
		// metadata reads (cold inodes, parent trees) overlap; with no slot
		// free the walk continues inline, which can never deadlock.
		select {
		case b.walkSem <- struct{}{}:
			f := &future{done: make(chan struct{})}
			go func() {
				inner := b.dir(path, fi, parent, b.parentSubtree(parent))
				<-b.walkSem
				f.err = inner.wait()
				f.node, f.skip = inner.node, inner.skip
				close(f.done)
			}()
			return f
		default:
			return b.dir(path, fi, parent, b.parentSubtree(parent))
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(path)
		if err != nil {
			b.warn(path, err)
			return &future{skip: true, done: closed()}
		}
		n.LinkTarget = t
	case fi.Mode()&fs.ModeSocket != 0:
		return &future{skip: true, done: closed()} // sockets are not restorable
	}
	b.files.Add(1)
	return doneFuture(n)
}

// xattrs records the extended attributes of path in n; any that cannot
// be read are a warning, and the entry is kept without them. When the
// parent snapshot recorded attributes and the entry's inode and change
// time are the parent node's p, they are p's (setting or removing an
// attribute changes the inode's change time): no system calls, which
// matters on incrementals of millions of unchanged entries.
func (b *backup) xattrs(path string, n, p *repo.Node) {
	if !recordXattrs {
		return
	}
	if b.parentXattrs && p != nil && p.Type == n.Type && p.Inode == n.Inode && !n.ChangeTime.IsZero() && p.ChangeTime.Equal(n.ChangeTime) {
		n.Xattrs = p.Xattrs
		return
	}
	x, err := readXattrs(path)
	n.Xattrs = x
	if err != nil {
		b.xattrErrors.Add(1)
		b.warn(path, err)
	}
}

// parentSubtree loads the parent snapshot's listing of a directory.
func (b *backup) parentSubtree(parent *repo.Node) map[string]*repo.Node {
	if parent != nil && parent.Type == repo.NodeDir && parent.Subtree != nil {
		return b.parentTreeNodes(*parent.Subtree)
	}
	return nil
}

// dir backs up a directory; pn is its node in the parent snapshot (or
// nil), parent the parent snapshot's listing of it.
func (b *backup) dir(path string, fi fs.FileInfo, pn *repo.Node, parent map[string]*repo.Node) *future {
	if testHookBeforeList != nil {
		testHookBeforeList(path)
	}
	// O_NOFOLLOW: a symlink renamed over the directory since its lstat
	// is not listed, nor are the entries of the directory it leads to
	// recorded under this name.
	d, err := openNoPoll(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		b.warn(path, errors.New("changed type during backup (no longer a directory)"))
		return &future{skip: true, done: closed()}
	}
	if err == nil {
		// A directory renamed over the name since its lstat is recorded
		// with its own owner, mode and times, as its entries are.
		if st, serr := d.Stat(); serr == nil && !os.SameFile(st, fi) {
			fi = st
		}
	}
	n := nodeFromInfo(filepath.Base(path), fi)
	if path == "/" {
		n.Name = ""
	}
	b.xattrs(path, n, pn)
	var ents []fs.DirEntry
	if err == nil {
		ents, err = d.ReadDir(-1)
		// Closed before the walk goes below it: a deep tree listed
		// inline would otherwise hold a descriptor per level.
		d.Close()
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	}
	if err != nil {
		b.warn(path, fmt.Errorf("read directory: %w", err))
	}
	var kids []*future
	for _, e := range ents {
		cp := filepath.Join(path, e.Name())
		cfi, err := e.Info()
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				b.warn(cp, err)
			}
			continue
		}
		kids = append(kids, b.entry(cp, cfi, parent[e.Name()]))
	}
	return b.finishDir(path, n, kids)
}

// fileState tracks the segments of one file in flight.
type fileState struct {
	b         *backup
	path      string
	f         *os.File
	size      int64
	mtime     time.Time
	src       io.ReaderAt  // f, or the virtual disk of a disk image
	closeSrc  func() error // closes what src opened besides f
	fut       *future
	plan      []chunking.Segment // the segments holding data
	remaining atomic.Int32
	counted   atomic.Int64 // bytes of finished segments, in the totals
	retried   bool         // the second read of a file that shrank
	mu        sync.Mutex
	err       error

	// The extents of segments read out of order wait in segs until those
	// before them are done; cw stores them in file order as they come
	// (feed), so a file's extents are never all held at once. pos is
	// where what cw holds ends, holes the bytes of holes it recorded.
	feedMu sync.Mutex
	segs   [][]repo.Extent // by plan index; nil until done
	next   int             // first segment not given to cw
	pos    int64
	holes  int64
	cw     *repo.ContentWriter
}

// feed records the extents of segment i and gives cw the segments done
// in file order, with the holes between them.
func (s *fileState) feed(i int, ext []repo.Extent) error {
	ctx := s.b.ctx
	s.feedMu.Lock()
	defer s.feedMu.Unlock()
	if ext == nil {
		ext = []repo.Extent{}
	}
	s.segs[i] = ext
	for ; s.next < len(s.segs) && s.segs[s.next] != nil; s.next++ {
		if off := s.plan[s.next].Off; off > s.pos {
			if err := s.cw.Zero(ctx, off-s.pos); err != nil {
				return err
			}
			s.holes += off - s.pos
		}
		for _, e := range s.segs[s.next] {
			var err error
			if e.Zero {
				err = s.cw.Zero(ctx, e.Len)
			} else {
				err = s.cw.Add(ctx, e)
			}
			if err != nil {
				return err
			}
		}
		s.pos = s.plan[s.next].End()
		s.segs[s.next] = nil
	}
	return nil
}

// indexOnInterrupt bounds how long an interrupted backup spends indexing
// the packs it stored.
const indexOnInterrupt = 15 * time.Second

// testHookBeforeList, when set (by tests), runs before a directory the
// walk saw is opened to be listed.
var testHookBeforeList func(path string)

// testHookSegmentsPlanned, when set (by tests), runs after a file's
// segments are planned and before they are read.
var testHookSegmentsPlanned func(path string)

type segJob struct {
	fs  *fileState
	i   int
	seg chunking.Segment
}

func (b *backup) file(path string, fi fs.FileInfo, n *repo.Node, parent *repo.Node) *future {
	b.files.Add(1)
	if parent != nil && parent.Disk == nil && unchanged(parent, n) && b.contentKnown(parent) {
		n.Content, n.ContentLists = parent.Content, parent.ContentLists
		b.bytesDone.Add(n.Size)
		b.progress.AddDone(1, n.Size)
		return doneFuture(n)
	}
	if parent != nil && parent.Disk != nil && b.knownRaw(path) == "" && b.diskUnchanged(parent, n) {
		n.Size, n.Disk, n.Content, n.ContentLists = parent.Size, parent.Disk, parent.Content, parent.ContentLists
		// From the record itself: a parent written before nodes had
		// refs names its layer map only there.
		n.Refs = diskRefs(parent)
		b.bytesDone.Add(n.Size)
		b.progress.AddDone(1, n.Size)
		return doneFuture(n)
	}
	if n.Links > 1 && n.Inode != 0 {
		// Hard links: the first name of an inode is read, later names
		// take its content.
		key := inodeKey{n.DeviceID, n.Inode}
		b.linkMu.Lock()
		if b.linkFirst == nil {
			b.linkFirst = map[inodeKey]*linkedRead{}
		}
		first := b.linkFirst[key]
		if first == nil {
			if len(b.linkFirst) >= maxLinkedReads {
				b.linkMu.Unlock()
				return b.readFile(path, n)
			}
			first = &linkedRead{ready: make(chan struct{}), left: n.Links - 1}
			b.linkFirst[key] = first
			b.linkMu.Unlock()
			first.fut = b.readFile(path, n)
			close(first.ready)
			return first.fut
		}
		if first.left--; first.left == 0 {
			delete(b.linkFirst, key) // every name seen
		}
		b.linkMu.Unlock()
		return b.sameAs(first, path, n)
	}
	return b.readFile(path, n)
}

// maxLinkedReads bounds the files with several names whose first read
// is remembered at once (about 200 bytes each once read, more for large
// files); beyond it, further such files are read under every name.
const maxLinkedReads = 1 << 20

// inodeKey identifies a file of the source: its device and inode.
type inodeKey struct{ dev, ino uint64 }

// linkedRead is the read of the first name of a file with several names;
// fut is set when ready is closed. left counts the names still to come
// (under linkMu); the entry is dropped when it reaches 0.
type linkedRead struct {
	ready chan struct{}
	fut   *future
	left  uint64
}

// sameAs completes n, a later name of the file first reads, with the
// content first stored, once it is done. The content is shared only if
// the first name's open descriptor was this name's inode in the state
// its lstat saw (device, inode and change time: a file renamed over the
// first name in between is another file), and is not a disk image (whose
// record depends on the name's path: backing files are found next to
// it). Otherwise n is read itself.
func (b *backup) sameAs(first *linkedRead, path string, n *repo.Node) *future {
	f := &future{node: n, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		<-first.ready
		<-first.fut.done
		fn, rd := first.fut.node, first.fut.read
		if first.fut.err == nil && !first.fut.skip && fn != nil && fn.Disk == nil &&
			rd.dev == n.DeviceID && rd.ino == n.Inode && rd.ctime.Equal(n.ChangeTime) {
			n.Size, n.Content, n.ContentLists = fn.Size, fn.Content, fn.ContentLists
			b.bytesDone.Add(n.Size)
			b.progress.AddDone(1, n.Size)
			return
		}
		if err := first.fut.err; err != nil {
			f.err = err
			return
		}
		if err := b.ctx.Err(); err != nil {
			f.err = context.Cause(b.ctx)
			return
		}
		own := b.readFile(path, n)
		<-own.done
		f.err, f.skip = own.err, own.skip
	}()
	return f
}

// readFile reads regular file path and stores its content in n.
func (b *backup) readFile(path string, n *repo.Node) *future { return b.read(path, n, false) }

// shrankAgain says whether a read that failed with err is to be tried
// once more: the file shrank while it was read (a log truncated or
// rotated in place), and a second read takes it as it is now instead of
// leaving it out of the snapshot.
func (b *backup) shrankAgain(err error, retried bool) bool {
	return !retried && errors.Is(err, chunking.ErrShortRead) && b.ctx.Err() == nil
}

// read is readFile; retried is set on the second read of a file that
// shrank during the first.
func (b *backup) read(path string, n *repo.Node, retried bool) *future {
	// O_NONBLOCK: the path may no longer be a regular file (a FIFO put
	// in its place would block the open, and the whole backup, forever);
	// regular files ignore the flag. The type is checked below.
	f, err := openSource(path)
	if err != nil {
		b.skipFile(path, err)
		return &future{skip: true, done: closed()}
	}
	// Size from the open file, so a file replaced since Lstat is still
	// read consistently.
	st, err := f.Stat()
	if err != nil {
		f.Close()
		b.skipFile(path, err)
		return &future{skip: true, done: closed()}
	}
	if !st.Mode().IsRegular() {
		f.Close()
		b.skipFile(path, errors.New("changed type during backup"))
		return &future{skip: true, done: closed()}
	}
	n.Size = st.Size()
	var read inodeIdent
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		read = inodeIdent{uint64(sys.Dev), sys.Ino, time.Unix(sys.Ctim.Sec, sys.Ctim.Nsec)}
		if replaced := read.dev != n.DeviceID || read.ino != n.Inode; retried || replaced {
			// The node describes what is read now (the same inode after
			// an in-place truncation; a rotation, or a file renamed over
			// the name since its lstat, may have replaced it), not the
			// owner, mode and attributes of a file whose content it
			// does not hold.
			n.Mode, n.ModTime, n.ChangeTime = st.Mode(), st.ModTime(), read.ctime
			n.UID, n.GID, n.Inode, n.DeviceID = sys.Uid, sys.Gid, sys.Ino, uint64(sys.Dev)
			if replaced {
				n.Links = uint64(sys.Nlink)
				b.xattrs(path, n, nil)
			}
		}
	}
	var src io.ReaderAt = f
	var closeSrc func() error
	var data []chunking.Range
	if b.pseudoFile(path, f, st) {
		// Its size is not its content's, which is read whole now, and
		// without waiting for more (/proc/kmsg).
		err := unix.SetNonblock(int(f.Fd()), true)
		var content []byte
		if err == nil {
			content, err = io.ReadAll(io.LimitReader(f, maxPseudoFile+1))
		}
		if err == nil && len(content) > maxPseudoFile {
			err = fmt.Errorf("a file of /proc or /sys longer than %d MiB is not backed up", maxPseudoFile>>20)
		}
		if err != nil {
			f.Close()
			b.skipFile(path, err)
			return &future{skip: true, done: closed()}
		}
		n.Size = int64(len(content))
		src, closeSrc, data = bytes.NewReader(content), func() error { return nil }, []chunking.Range{{Off: 0, Len: n.Size}}
	} else if ds := b.openDisk(path, f, n); ds != nil {
		src, closeSrc, data = ds.r, ds.close, ds.data // chunk the virtual disk (disk.go)
	} else if smallAndAllocated(st) {
		// Skip the SEEK_DATA/SEEK_HOLE walk (four syscalls) for small
		// files that look fully allocated. A wrong guess (preallocated
		// or unwritten blocks) only means reading under 1 MiB of zeros,
		// which the chunker still records as zeros.
		data = []chunking.Range{{Off: 0, Len: n.Size}}
	} else if data, err = chunking.DataRanges(f, n.Size); err != nil {
		f.Close()
		if b.shrankAgain(err, retried) {
			return b.read(path, n, true)
		}
		b.skipFile(path, err)
		return &future{skip: true, done: closed()}
	}
	// Only the segments holding data are read; those between them are
	// holes, recorded when the file is complete (segDone).
	segs := b.ck.PlanData(n.Size, data)
	fut := &future{node: n, done: make(chan struct{}), read: read}
	if n.Size == 0 {
		if closeSrc != nil {
			closeSrc()
		}
		f.Close()
		b.progress.AddDone(1, 0)
		close(fut.done)
		return fut
	}
	s := &fileState{b: b, path: path, f: f, size: st.Size(), mtime: st.ModTime(), src: src, closeSrc: closeSrc, fut: fut, plan: segs, segs: make([][]repo.Extent, len(segs)), cw: b.r.NewContentWriter(), retried: retried}
	if len(segs) == 0 { // all hole
		s.remaining.Store(1)
		s.segDone(nil)
		return fut
	}
	s.remaining.Store(int32(len(segs)))
	if testHookSegmentsPlanned != nil {
		testHookSegmentsPlanned(path)
	}
	for i, seg := range segs {
		if closeSrc == nil { // offsets are file offsets (not a virtual disk)
			prefetch(f, seg)
		}
		q := b.jobs
		if seg.Len <= smallBuf {
			q = b.smallJobs
		}
		select {
		case q <- segJob{fs: s, i: i, seg: seg}:
		case <-b.ctx.Done():
			// Workers drain what was queued; account for the rest here.
			for j := i; j < len(segs); j++ {
				s.segDone(errors.New("backup cancelled"))
			}
			return fut
		}
	}
	return fut
}

// contentKnown reports whether every blob of a parent node is still
// indexed (a pruned or repaired repository may have lost some), also the
// chunks its content lists name: repair removes the chunks of a lost pack
// from the index, and must not leave a large file referring to them. A
// content list that does not load counts as unknown: the file is read.
func (b *backup) contentKnown(n *repo.Node) bool {
	for _, e := range n.Content {
		if !e.Zero && !b.r.Has(repo.DataBlob, e.ID) {
			return false
		}
	}
	for _, x := range n.ContentLists {
		if !b.r.Has(repo.TreeBlob, x) {
			return false
		}
	}
	if len(n.ContentLists) == 0 {
		return true
	}
	errUnknown := errors.New("chunk in no index")
	err := b.r.EachExtent(b.ctx, n, func(e repo.Extent) error {
		if !e.Zero && !b.r.Has(repo.DataBlob, e.ID) {
			return errUnknown
		}
		return nil
	})
	return err == nil
}

// A change stamps a file with the kernel's clock, which on kernels before
// Linux 6.13 advances by a tick (10 ms at most; exFAT's 10 ms of
// granularity come on top), cut to what the file system keeps: whole
// seconds on ext4 with 128-byte inodes or HFS+, two on FAT.
const (
	ctimeTick   = 20 * time.Millisecond
	ctimeSecond = 2*time.Second + ctimeTick
)

// racy reports whether a change to an entry made after a backup that
// started at start read it could leave the entry's change time ct as it
// was, so that the next backup would take it for unchanged (same size,
// times and inode) and keep what this one read: ct lies within the
// granularity of the file system's time stamps of start. Such an entry
// is recorded without its change time, and the next backup reads it and
// its attributes again.
func racy(ct, start time.Time) bool {
	if ct.IsZero() {
		return false
	}
	g := ctimeTick
	if ct.Nanosecond() == 0 {
		g = ctimeSecond
	}
	return ct.Add(g).After(start)
}

func unchanged(p, n *repo.Node) bool {
	return p.Type == repo.NodeFile && p.Size == n.Size && p.ModTime.Equal(n.ModTime) &&
		p.ChangeTime.Equal(n.ChangeTime) && p.Inode == n.Inode
}

// segDone records the end of one segment; the last one completes the file.
func (s *fileState) segDone(err error) {
	if err != nil {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
	if s.remaining.Add(-1) != 0 {
		return
	}
	b := s.b
	st, statErr := s.f.Stat()
	if statErr == nil && s.err == nil && s.closeSrc == nil && st.Size() < s.size {
		// Shrunk where nothing was left to read (a trailing hole, or
		// after the last read): the size and the tail as planned would
		// be recorded as they no longer are.
		s.err = fmt.Errorf("file is %d bytes, shorter than the %d it had when opened: %w", st.Size(), s.size, chunking.ErrShortRead)
	}
	if b.shrankAgain(s.err, s.retried) && s.closeSrc == nil {
		// Read it again as it is now; what the first read counted is
		// taken back out of the totals.
		s.f.Close()
		b.bytesDone.Add(-s.counted.Load())
		b.progress.AddDone(0, -s.counted.Load())
		go func() {
			own := b.read(s.path, s.fut.node, true)
			<-own.done
			s.fut.err, s.fut.skip, s.fut.read = own.err, own.skip, own.read
			close(s.fut.done)
		}()
		return
	}
	if statErr == nil && s.err == nil && (st.Size() != s.size || !st.ModTime().Equal(s.mtime)) {
		// Kept (like any crash-consistent copy) but the operator is told;
		// not a warning that makes the snapshot incomplete (exit 3): a
		// live log grows under every backup.
		b.progress.Warn(s.path, errors.New("file changed while it was read; the snapshot holds a mix of old and new content"))
	}
	if s.closeSrc != nil {
		s.closeSrc()
	}
	s.f.Close()
	defer close(s.fut.done)
	if s.err != nil {
		if b.ctx.Err() != nil {
			s.fut.err = context.Cause(b.ctx)
			return
		}
		b.skipFile(s.path, s.err)
		// The segments read before the failure are not in the snapshot.
		b.bytesDone.Add(-s.counted.Load())
		b.progress.AddDone(0, -s.counted.Load())
		s.fut.skip = true
		return
	}
	// Every segment was fed (each segment fed its own before it was
	// done); what is left is the tail.
	holes := s.holes
	if size := s.fut.node.Size; s.pos < size { // a hole, or a disk image's virtual size
		holes += size - s.pos
		if err := s.cw.Zero(b.ctx, size-s.pos); err != nil {
			s.fut.err = err
			b.fatal(err)
			return
		}
	}
	s.segs, s.plan = nil, nil
	b.bytesDone.Add(holes)
	b.progress.AddDone(0, holes)
	if err := s.cw.Finish(b.ctx, s.fut.node); err != nil {
		s.fut.err = err
		b.fatal(err)
		return
	}
	b.progress.AddDone(1, 0)
}

// worker processes segments from both queues until both are closed.
func (b *backup) worker(ch *chunking.Chunker) {
	defer b.workers.Done()
	jobs, small := b.jobs, b.smallJobs
	for jobs != nil || small != nil {
		var j segJob
		var ok bool
		select {
		case j, ok = <-jobs:
			if !ok {
				jobs = nil
				continue
			}
		case j, ok = <-small:
			if !ok {
				small = nil
				continue
			}
		}
		if b.ctx.Err() != nil {
			j.fs.segDone(context.Cause(b.ctx))
			continue
		}
		j.fs.segDone(b.segment(ch, j))
	}
}

func (b *backup) segment(ch *chunking.Chunker, j segJob) error {
	var buf []byte
	var put func()
	if len(j.seg.Data) > 0 {
		if j.seg.Len <= smallBuf {
			p := b.smlBufs.Get().(*[]byte)
			buf, put = *p, func() { b.smlBufs.Put(p) }
		} else {
			buf = b.bigBufs.Get()
			put = func() { b.bigBufs.Put(buf) }
		}
		defer put()
	}
	ext, err := ch.ChunkSegment(b.ctx, j.fs.src, j.seg, buf)
	if err != nil {
		return fmt.Errorf("read at offset %d: %w", j.seg.Off, err)
	}
	var read int64
	for _, d := range j.seg.Data {
		read += d.Len
	}
	b.bytesRead.Add(read)
	out := make([]repo.Extent, 0, len(ext))
	for _, e := range ext {
		if e.Zero {
			out = append(out, repo.Extent{Len: e.Len, Zero: true})
			continue
		}
		x := b.r.BlobID(e.Data)
		if _, _, err := b.r.SaveBlob(b.ctx, repo.DataBlob, e.Data, x); err != nil {
			b.fatal(fmt.Errorf("store data of %s: %w", j.fs.path, err))
			return err
		}
		out = append(out, repo.Extent{ID: x, Len: e.Len})
	}
	if err := j.fs.feed(j.i, out); err != nil {
		err = fmt.Errorf("store content list of %s: %w", j.fs.path, err)
		b.fatal(err)
		return err
	}
	j.fs.counted.Add(j.seg.Len)
	b.bytesDone.Add(j.seg.Len)
	b.progress.AddDone(0, j.seg.Len)
	return nil
}

// backupStdin stores o.Stdin as a single file in a one-entry root tree.
func (b *backup) backupStdin() (id.ID, error) {
	ch, err := chunking.NewChunker(b.ck)
	if err != nil {
		return id.ID{}, err
	}
	now := b.r.Now()
	n := &repo.Node{Name: b.o.StdinName, Type: repo.NodeFile, Mode: 0o644, ModTime: now, ChangeTime: now,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	// A Read of a pipe or terminal cannot be interrupted, and a producer
	// may go quiet without closing it (pg_dump waiting on a lock): the
	// input is read on a goroutine of its own, so that cancelling (Ctrl-C,
	// SIGTERM) stops the backup at once. A Read still blocked then ends
	// the goroutine when it returns; what it read is dropped.
	in, pw := io.Pipe()
	go func() { _, err := io.Copy(pw, b.o.Stdin); pw.CloseWithError(err) }()
	stop := context.AfterFunc(b.ctx, func() { pw.CloseWithError(context.Cause(b.ctx)) })
	defer stop()
	defer in.Close()
	cw := b.r.NewContentWriter()
	err = ch.ChunkStream(b.ctx, in, func(e chunking.Extent) error {
		n.Size += e.Len
		b.bytesDone.Add(e.Len)
		b.progress.AddDone(0, e.Len)
		b.bytesRead.Add(e.Len)
		if e.Zero {
			return cw.Zero(b.ctx, e.Len)
		}
		x := b.r.BlobID(e.Data)
		if _, _, err := b.r.SaveBlob(b.ctx, repo.DataBlob, e.Data, x); err != nil {
			return err
		}
		return cw.Add(b.ctx, repo.Extent{ID: x, Len: e.Len})
	})
	if err != nil {
		return id.ID{}, fmt.Errorf("back up standard input: %w", err)
	}
	if err := cw.Finish(b.ctx, n); err != nil {
		return id.ID{}, err
	}
	b.files.Add(1)
	b.progress.AddDone(1, 0)
	return b.r.SaveTree(b.ctx, &repo.Tree{Nodes: []*repo.Node{n}})
}

// openNoPoll opens a regular file with flags (plus O_CLOEXEC) without
// registering it with the runtime poller, which a regular file gains
// nothing from: os.Open costs four more syscalls per file (fcntl pairs
// around a failing epoll_ctl). Like os.Open it retries when interrupted
// (network and FUSE file systems). Errors are *fs.PathError.
func openNoPoll(path string, flags int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, perm)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}

// openSource opens a file the walk saw as regular for reading. It opens
// with O_NONBLOCK, so that a FIFO renamed over it since cannot block the
// open (and the backup, beyond Ctrl-C) forever, then clears the flag
// (the caller rejects what fstat does not show as regular) so that
// os.NewFile does not try the runtime poller. With O_NOFOLLOW, a symlink
// renamed over it is not followed: the content of the file it leads to
// would be recorded under this name and the owner and mode its lstat saw.
func openSource(path string) (*os.File, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ELOOP {
			return nil, errors.New("changed type during backup (now a symbolic link)")
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0); err != nil {
			unix.Close(fd)
			return nil, &fs.PathError{Op: "fcntl", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}

// maxPseudoFile bounds the content of a /proc or /sys file read whole
// into memory (see pseudoFile); such files hold a few KiB.
const maxPseudoFile = smallBuf

// pseudoFS reports whether a file system type (statfs) is /proc's or
// /sys's, whose files show a size that is not their content's (0, or a
// page for every attribute).
func pseudoFS(t int64) bool { return t == unix.PROC_SUPER_MAGIC || t == unix.SYSFS_MAGIC }

// pseudoFile reports whether f at path, which fstat showed as st, is a
// file of /proc or /sys below a given path there (o.Paths such as
// /proc/cpuinfo or /sys/class/net), to be read to its end for its
// content. Elsewhere (a backup of /) they keep the size they show and are
// not read: some wait for data, or hand it to one reader only
// (/proc/kmsg). Such files have no blocks, so only files without any are
// looked at, once per device.
func (b *backup) pseudoFile(path string, f *os.File, st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Blocks != 0 || !slices.ContainsFunc(b.pseudoRoots, func(r string) bool { return path == r || strings.HasPrefix(path, r+"/") }) {
		return false
	}
	if v, ok := b.pseudoDevs.Load(sys.Dev); ok {
		return v.(bool)
	}
	var sf unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sf); err != nil {
		return false
	}
	p := pseudoFS(int64(sf.Type))
	b.pseudoDevs.Store(sys.Dev, p)
	return p
}

// smallAndAllocated reports whether a regular file is at most 1 MiB and
// has at least as many blocks allocated as its size needs. Such a file
// usually has no holes; it still may (blocks reserved by fallocate or past
// the end, metadata blocks), so only small files are taken on trust.
func smallAndAllocated(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Size > 0 && st.Size <= 1<<20 && st.Blocks*512 >= st.Size
}

// prefetch asks the kernel to start reading a queued segment's allocated
// ranges, so the worker that picks it up finds them in the page cache and
// disk reads overlap with chunking and compression.
func prefetch(f *os.File, seg chunking.Segment) {
	for _, d := range seg.Data {
		_ = unix.Fadvise(int(f.Fd()), d.Off, d.Len, unix.FADV_WILLNEED)
	}
}

// nodeFromInfo fills a node's metadata from Lstat information. The access
// time is not recorded: reading a file for the backup changes it, which
// would make every tree new on the next run (restore sets atime = mtime).
func nodeFromInfo(name string, fi fs.FileInfo) *repo.Node {
	n := &repo.Node{Name: name, Mode: fi.Mode(), ModTime: fi.ModTime()}
	switch m := fi.Mode(); {
	case m.IsRegular():
		n.Type = repo.NodeFile
		n.Size = fi.Size()
	case m.IsDir():
		n.Type = repo.NodeDir
	case m&fs.ModeSymlink != 0:
		n.Type = repo.NodeSymlink
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice != 0:
		n.Type = repo.NodeCharDev
	case m&fs.ModeDevice != 0:
		n.Type = repo.NodeDev
	case m&fs.ModeNamedPipe != 0:
		n.Type = repo.NodeFIFO
	case m&fs.ModeSocket != 0:
		n.Type = repo.NodeSocket
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		n.UID, n.GID = st.Uid, st.Gid
		n.Inode = st.Ino
		n.DeviceID = uint64(st.Dev)
		n.Links = uint64(st.Nlink)
		n.Rdev = uint64(st.Rdev)
		n.ChangeTime = time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	}
	return n
}

// scan walks paths and reports totals to p.
func scan(ctx context.Context, paths []string, p Progress) {
	for _, root := range paths {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil || d.IsDir() {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
				p.AddTotal(1, fi.Size())
			}
			return nil
		})
	}
}
