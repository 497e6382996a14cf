package pipeline

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/cpus"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
)

// RestoreOptions configure a restore.
type RestoreOptions struct {
	// Target is the directory to restore into (created if missing).
	Target string
	// Include restricts the restore to these snapshot paths (absolute, as
	// listed in the snapshot) and everything below them. Empty restores
	// everything.
	Include []string
	// Workers is the number of concurrent pack readers (default 2×cpus.N()).
	Workers int
	// Progress receives counters (default NoProgress).
	Progress Progress
	// DiskFormat is the container for recognised VM disk images: raw,
	// qcow2, vhdx or original (the default; see disk.go).
	DiskFormat string
	// Flatten restores every differencing disk as a self-contained image
	// (in the format DiskFormat gives), never as a layer: for callers that
	// place disks one by one, such as DR-site bring-up.
	Flatten bool
	// Delta keeps regular files already at their target paths and writes
	// only the chunks that differ from the snapshot's (restore_delta.go),
	// to resume an interrupted restore or refresh a copy. Files it cannot
	// safely write in place are replaced as usual. Interrupted, it leaves
	// the files it was writing for the next run.
	Delta bool
}

// RestoreResult describes a finished restore.
type RestoreResult struct {
	// Files counts the files, symlinks, devices, FIFOs and hard links
	// restored (not those listed in Failed); Dirs the directories.
	Files int64
	Dirs  int64
	// BytesWritten is the file data written (holes and all-zero chunks
	// are not written, nor the content of a hard link's later names).
	BytesWritten int64
	// BytesTotal is the size of every file name restored or attempted:
	// a file with several names counts once per name, as in a backup's
	// bytes_total.
	BytesTotal int64
	// BytesKept counts the data a delta restore found already in place
	// (chunks compared equal, holes) and did not write; FilesKept the
	// files it wrote in place rather than anew.
	BytesKept int64
	FilesKept int64
	// Failed lists files whose content could not be restored, with why.
	Failed []FileError
	// Notices lists restored entries that need the operator's attention
	// but did not fail: a disk restored as a layer whose parent is not
	// there.
	Notices []FileError
}

// FileError names a file that could not be restored and the cause.
type FileError struct {
	Path string
	Err  error
}

// ErrRestoreIncomplete is wrapped when some files could not be restored.
var ErrRestoreIncomplete = errors.New("restore incomplete")

type restorer struct {
	r        *repo.Repository
	o        RestoreOptions
	ctx      context.Context
	progress Progress
	root     id.ID       // the snapshot's tree, for disk chains
	top      *restoreDir // the target, held open for the whole restore
	topAbs   string      // its absolute path (whereNow)

	tasks chan packTask
	wg    sync.WaitGroup
	// open holds a token per output file open from creation until its
	// last extent is written (openLimit), so that a batch of thousands
	// of small files cannot run the process out of descriptors.
	open chan struct{}
	// The batch of extents not yet handed to the readers, under batchMu
	// (the walker and the comparers add to it).
	batchMu sync.Mutex
	batch   []target
	batchSz int64
	batchN  int // batches flushed so far (for the ramp in batchLimits)
	depth   int // directories the walker holds open below the target

	files, dirs, written, total atomic.Int64
	kept, keptFiles             atomic.Int64
	// Comparers (delta): files to write in place, compared extent by
	// extent by these goroutines (started with the first such file).
	cmpJobs chan *outFile
	cmpWG   sync.WaitGroup

	mu     sync.Mutex
	failed []FileError
	// salvage holds, under mu, where the files kept with chunks missing
	// (listed in failed) are, but for a delta restore: an interrupted
	// restore lists nothing, and removes them.
	salvage []string

	// Extended attributes the target file system refused as unsupported:
	// how many, and the first (reported once, at the end).
	xattrUnsupported int
	xattrFirst       string

	// Files restored so far that had more than one name in the snapshot,
	// by device and inode: their other names become hard links (walker only).
	linked map[linkKey]linkFirst

	matched map[string]bool // the includes some snapshot path matched (walker only)

	// For disks restored in another format (walker only): the names in
	// the directory being walked, and the converted paths already used.
	dirNames  map[string]bool
	converted map[string]bool

	// ancestors are the snapshot paths above the backed-up paths (not
	// backed up themselves): an existing symlink to a directory there is
	// followed, within the target (followAncestor). followedDirs holds
	// the target paths where that happened, under followedMu.
	ancestors    map[string]bool
	followedMu   sync.Mutex
	followedDirs map[string]bool

	// Disks restored as layers (walker only): each with the backing file
	// it names, checked once everything is restored, and what that check
	// found.
	layers  []restoredLayer
	notices []FileError

	// Directories whose metadata is set at the end (walker only).
	lateDirs []lateDir
}

// restoredLayer is a differencing disk restored as such, and the path of
// the parent it names (as recorded: relative to its directory, or
// absolute).
type restoredLayer struct{ path, backing string }

// checkLayers notes each restored layer whose parent is not where it
// points, or is outside the restore target: the layer alone is not a
// usable disk, or silently reads a live file that may have changed since
// the backup. It is not a failure: the operator may put the parent in
// place afterwards. Run after the walk and the readers are done (the
// parent may come later in the snapshot). Parents named by a URL or a
// qemu json: description are not files and are not checked.
func (rs *restorer) checkLayers() {
	const flat = "or restore with --disk-format raw for a self-contained disk"
	target := filepath.Clean(rs.o.Target)
	for _, l := range rs.layers {
		if strings.HasPrefix(l.backing, "json:") || strings.Contains(l.backing, "://") {
			continue
		}
		// Where the layer will look for its parent, when that is inside
		// the restored tree: next to it, or anywhere for a restore to /.
		inside := ""
		switch {
		case !filepath.IsAbs(l.backing):
			inside = filepath.Join(filepath.Dir(l.path), l.backing)
		case target == "/":
			inside = l.backing
		}
		var msg string
		switch restored := filepath.Join(target, l.backing); {
		case inside != "" && exists(inside):
			continue
		case inside != "":
			msg = fmt.Sprintf("restored as a layer over %s, which is not there: the disk will not open without it; restore that file too (--path), %s", inside, flat)
		case exists(restored):
			msg = fmt.Sprintf("restored as a layer that names its parent by the absolute path %s; the restored parent is %s: move the chain into place, or rebase this layer onto it (qemu-img rebase -u -b), %s", l.backing, restored, flat)
		case exists(l.backing):
			msg = fmt.Sprintf("restored as a layer over %s, outside the restore target: it reads that live file, which may have changed since the backup; restore the parent too and rebase this layer onto it (qemu-img rebase -u -b), %s", l.backing, flat)
		default:
			msg = fmt.Sprintf("restored as a layer over %s, which is not there: the disk will not open without it; restore that file too (--path) and rebase this layer onto it (qemu-img rebase -u -b), %s", l.backing, flat)
		}
		rs.notices = append(rs.notices, FileError{Path: l.path, Err: errors.New(msg)})
	}
}

// exists reports whether p names something (following symlinks).
func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// linkKey identifies a file of the backed-up system: its device and inode.
type linkKey struct{ dev, ino uint64 }

// linkFirst is the restored file later names of the same inode link to,
// with a digest of what its node recorded (InodeDataSum) rather than the
// node itself, so that trees with many hard links cost little memory.
type linkFirst struct {
	of  *outFile
	sum [32]byte
}

// outFile is a file being restored; it is finalised when its last extent
// is written.
type outFile struct {
	path    string
	node    *repo.Node
	f       *os.File
	pending atomic.Int64
	mu      sync.Mutex
	err     error
	res     *restorer
	acl     bool   // created with an inherited ACL (see dropInheritedACLs)
	reused  bool   // written in place by a delta restore, not created
	id      fileID // device and inode, for a file later names link to
	// Under mu: finished once the file is complete (err final) and f
	// closed, and the hard links made to it meanwhile (reported with it
	// if it fails).
	finished bool
	links    []string
}

type target struct {
	file *outFile
	off  int64
	id   id.ID
	len  int64
}

type packTask struct {
	pack    repo.PackInfo
	entries []repo.BlobEntry
	targets map[id.ID][]target
}

// A batch of extents is flushed to the readers at batchBytes or
// batchTargets, large enough to group many extents per pack. The first
// batches are smaller (batchRamp halvings less, doubling with each
// flush), so readers start while the walker is still creating the first
// few thousand files instead of after them.
const (
	batchBytes   = 256 << 20
	batchTargets = 8192
	batchRamp    = 5
)

// batchLimits is the size and extent count at which the next batch is
// flushed.
func (rs *restorer) batchLimits() (int64, int) {
	shift := max(batchRamp-rs.batchN, 0)
	return batchBytes >> shift, batchTargets >> shift
}

// openLimit is how many output files a restore keeps open at once: more
// than a full batch's worth where descriptors are plentiful, half the
// soft RLIMIT_NOFILE otherwise (the other half for pack reads, the index
// and the backend's connections).
func openLimit() int {
	n := 2 * batchTargets
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur != unix.RLIM_INFINITY {
		n = min(n, int(lim.Cur/2))
	}
	return max(n, 16)
}

// acquireOpen takes a token for one more open output file. When none is
// free, the batch being gathered is handed to the readers first: its
// files hold tokens until their extents are written.
func (rs *restorer) acquireOpen() error {
	select {
	case rs.open <- struct{}{}:
		return nil
	default:
	}
	rs.flushBatch()
	select {
	case rs.open <- struct{}{}:
		return nil
	case <-rs.ctx.Done():
		return rs.ctx.Err()
	}
}

// Restore writes snapshot sn (or its Include subset) below o.Target.
// Files whose data cannot be read are reported in the result and make the
// error wrap ErrRestoreIncomplete; everything else is still restored.
func Restore(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, o RestoreOptions) (*RestoreResult, error) {
	if o.Target == "" {
		return nil, errors.New("restore needs --target DIR")
	}
	if o.Workers <= 0 {
		o.Workers = 2 * cpus.N()
	}
	if o.Progress == nil {
		o.Progress = NoProgress{}
	}
	for i, p := range o.Include {
		o.Include[i] = filepath.Clean("/" + p)
	}
	if err := os.MkdirAll(o.Target, 0o700); err != nil {
		return nil, fmt.Errorf("create target %s: %w", o.Target, err)
	}
	// The target's own path is followed (the operator chose it); nothing
	// below it is (restoreDir).
	top, err := openNoPoll(o.Target, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if errors.Is(err, fs.ErrPermission) { // a target one may write but not list
		top, err = openNoPoll(o.Target, unix.O_PATH|unix.O_DIRECTORY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open target %s: %w", o.Target, err)
	}
	defer top.Close()
	rs := &restorer{r: r, o: o, ctx: ctx, progress: o.Progress, root: sn.Tree, top: &restoreDir{f: top, path: filepath.Clean(o.Target)}, topAbs: absDir(top, o.Target), tasks: make(chan packTask, o.Workers), open: make(chan struct{}, openLimit()), matched: map[string]bool{"/": true}, linked: map[linkKey]linkFirst{}, converted: map[string]bool{}, ancestors: ancestorPaths(sn.Paths), followedDirs: map[string]bool{}}
	for i := 0; i < o.Workers; i++ {
		rs.wg.Add(1)
		go rs.reader()
	}
	walkErr := rs.walk(sn.Tree, "/", rs.top)
	if rs.cmpJobs != nil {
		close(rs.cmpJobs)
		rs.cmpWG.Wait()
	}
	rs.flushBatch() // files already created get their data (or an error) even if the walk stopped
	close(rs.tasks)
	rs.wg.Wait()
	if ctx.Err() != nil {
		for _, p := range rs.salvage {
			rs.removeBeneath(p)
		}
	}
	if walkErr != nil {
		return nil, walkErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Children were left, and listed, before their parents.
	for _, d := range rs.lateDirs {
		f, err := rs.openBeneath(d.path, unix.O_RDONLY|unix.O_DIRECTORY)
		if err == nil {
			err = rs.applyMetaFd(f, d.path, d.node, d.acl)
			f.Close()
		}
		if err != nil {
			rs.fail(d.path, fmt.Errorf("set directory metadata: %w", err))
		}
	}
	rs.checkLayers()
	for _, inc := range o.Include {
		if !rs.matched[inc] {
			rs.fail(inc, fmt.Errorf("no such path in snapshot %s (give it as it was backed up, e.g. /var/lib/libvirt/images/vm.qcow2)", sn.ID().Short()))
		}
	}
	if rs.xattrUnsupported > 0 {
		rs.fail(rs.o.Target, fmt.Errorf("%d extended attributes were not restored: the target file system refused them as unsupported (first: %s); restore onto a file system that supports these attribute namespaces to keep them", rs.xattrUnsupported, rs.xattrFirst))
	}
	res := &RestoreResult{Files: rs.files.Load(), Dirs: rs.dirs.Load(), BytesWritten: rs.written.Load(), BytesTotal: rs.total.Load(),
		BytesKept: rs.kept.Load(), FilesKept: rs.keptFiles.Load(), Failed: rs.failed, Notices: rs.notices}
	if len(res.Failed) > 0 {
		return res, fmt.Errorf("%w: %d items failed", ErrRestoreIncomplete, len(res.Failed))
	}
	return res, nil
}

func (rs *restorer) fail(path string, err error) {
	rs.mu.Lock()
	rs.failed = append(rs.failed, FileError{Path: path, Err: err})
	rs.mu.Unlock()
	rs.progress.Warn(path, err)
}

// selected reports whether snapshot path p is to be restored fully, and
// whether it lies on the way to an included path.
func (rs *restorer) selected(p string) (full, onPath bool) {
	if len(rs.o.Include) == 0 {
		return true, true
	}
	for _, inc := range rs.o.Include {
		if p == inc || inc == "/" || strings.HasPrefix(p, inc+"/") {
			rs.matched[inc] = true // every include that matches (they may overlap)
			full = true
		}
		if p == "/" || strings.HasPrefix(inc, p+"/") {
			onPath = true
		}
	}
	return full, onPath || full
}

// testHookWalk, when set by a test, is called with the path of each
// directory as its walk starts (the directory is open by then).
var testHookWalk func(dir string)

// walk restores tree (snapshot path snapPath) into dir.
func (rs *restorer) walk(tree id.ID, snapPath string, dir *restoreDir) error {
	dst := dir.path
	if testHookWalk != nil {
		testHookWalk(dst)
	}
	t, err := rs.r.LoadTree(rs.ctx, tree)
	if err != nil {
		err = fmt.Errorf("load tree of %s: %w", snapPath, err)
		if snapPath == "/" || rs.ctx.Err() != nil {
			return err
		}
		rs.fail(dst, err) // the rest of the snapshot is still restored
		rs.matchBelow(snapPath)
		return nil
	}
	seen := make(map[string]bool, len(t.Nodes))
	var names map[string]bool // only needed when disks may be renamed
	if f := rs.o.DiskFormat; f != "" && f != DiskFormatOriginal {
		names = make(map[string]bool, len(t.Nodes))
		for _, n := range t.Nodes {
			names[n.Name] = true
		}
	}
	for _, n := range t.Nodes {
		rs.dirNames = names // set again after each subtree's walk
		if err := rs.ctx.Err(); err != nil {
			return err
		}
		if n.Name == "" || n.Name == "." || n.Name == ".." || strings.ContainsAny(n.Name, "/\x00") {
			rs.fail(filepath.Join(snapPath, n.Name), fmt.Errorf("refusing unsafe name %q in tree %s", n.Name, tree.Short()))
			continue
		}
		if seen[n.Name] {
			rs.fail(filepath.Join(snapPath, n.Name), fmt.Errorf("tree %s names %q twice; the second is skipped", tree.Short(), n.Name))
			continue
		}
		seen[n.Name] = true
		sp := filepath.Join(snapPath, n.Name)
		full, onPath := rs.selected(sp)
		if !full && !onPath {
			continue
		}
		dp := filepath.Join(dst, n.Name)
		if !full {
			if n.Type == repo.NodeDir && n.Subtree != nil {
				if err := rs.subdir(n, sp, dir, dp, false); err != nil {
					return err
				}
			}
			continue
		}
		if err := rs.node(n, sp, dir, dp); err != nil {
			return err
		}
	}
	return nil
}

// matchBelow accounts for the includes below snapshot path sp by a
// failure of sp itself: they may well exist, and are not to be reported
// as missing from the snapshot.
func (rs *restorer) matchBelow(sp string) {
	for _, inc := range rs.o.Include {
		if strings.HasPrefix(inc, sp+"/") {
			rs.matched[inc] = true
		}
	}
}

// subdir restores directory node n (snapshot path sp) at dp in dir and,
// when it has a subtree, what it holds; count: as a restored directory
// (not one only on the way to an included path). A directory that cannot
// be made is listed as failed, and what it holds is skipped; the rest of
// the snapshot is still restored.
func (rs *restorer) subdir(n *repo.Node, sp string, dir *restoreDir, dp string, count bool) error {
	// The directory's descriptor, held while what it holds is restored,
	// takes a token of the open-file budget (openLimit), as output files
	// do, except at depths that would leave fewer than 8 for the files:
	// the walker would wait for tokens only its own ancestors hold.
	token := rs.depth < cap(rs.open)-8
	if token {
		if err := rs.acquireOpen(); err != nil {
			return err
		}
	}
	child, err := rs.ensureDir(dir, n.Name, dp, sp)
	if err != nil {
		if token {
			<-rs.open
		}
		rs.fail(dp, err)
		rs.matchBelow(sp)
		return nil
	}
	rs.depth++
	defer func() {
		rs.depth--
		child.close()
		if token {
			<-rs.open
		}
	}()
	if count {
		rs.dirs.Add(1)
	}
	if n.Subtree != nil {
		if err := rs.walk(*n.Subtree, sp, child); err != nil {
			return err
		}
	}
	if child.followed {
		return nil // the directory the symlink leads to keeps its own metadata
	}
	if !child.created {
		// A directory kept from the target loses the extended attributes
		// the snapshot does not record, as a new one has none: an ACL
		// left on it would grant access the backed-up directory did not.
		if err := dropExtraXattrs(child.fd(), n); err != nil {
			rs.fail(dp, err)
		}
	}
	// Its metadata now, through its descriptor, as the walk leaves it
	// (so deepest first): everything it holds has been created, and
	// nothing changes it any more (data still being written into its
	// files does not). Memory stays bounded by the depth, not the
	// number of directories.
	acl := child.created && rs.inheritsACL(dir)
	if !isRoot && n.Mode.Perm()&0o300 != 0o300 {
		// Without privilege, a directory the owner may not write or
		// search blocks what may still come after the walk left it: a
		// later name linked to a finished file in it (openBeneath), the
		// removal of its incomplete files after Ctrl-C. Such directories
		// (few) get their metadata at the end, as before.
		rs.lateDirs = append(rs.lateDirs, lateDir{dp, n, acl})
		return nil
	}
	if err := rs.applyMetaFd(child.f, dp, n, acl); err != nil {
		rs.fail(dp, err)
	}
	return nil
}

// lateDir is a directory whose metadata waits for the end of the
// restore (subdir).
type lateDir struct {
	path string
	node *repo.Node
	acl  bool
}

// node restores n (snapshot path sp) as entry dp of dir.
func (rs *restorer) node(n *repo.Node, sp string, dir *restoreDir, dp string) error {
	switch n.Type {
	case repo.NodeDir:
		return rs.subdir(n, sp, dir, dp, true)
	case repo.NodeFile:
		if n.Disk != nil {
			return rs.restoreDisk(n, sp, dir, dp) // VM disk image (disk.go)
		}
		return rs.file(n, dir, n.Name, dp)
	case repo.NodeSymlink:
		if err := rs.clearEntry(dir, n.Name, dp); err != nil {
			rs.fail(dp, err)
			return nil
		}
		if err := unix.Symlinkat(n.LinkTarget, dir.fd(), n.Name); err != nil {
			rs.fail(dp, &os.LinkError{Op: "symlink", Old: n.LinkTarget, New: dp, Err: err})
			return nil
		}
		if err := rs.applyMeta(dir, n.Name, dp, n, false); err != nil { // symlinks have no ACLs
			rs.fail(dp, err) // listed, not counted, as a file would be
			return nil
		}
		rs.files.Add(1)
		rs.progress.AddDone(1, 0) // the snapshot's file count includes it
	case repo.NodeDev, repo.NodeCharDev, repo.NodeFIFO:
		mode := uint32(n.Mode.Perm())
		switch n.Type {
		case repo.NodeDev:
			mode |= unix.S_IFBLK
		case repo.NodeCharDev:
			mode |= unix.S_IFCHR
		default:
			mode |= unix.S_IFIFO
		}
		if err := rs.clearEntry(dir, n.Name, dp); err != nil {
			rs.fail(dp, err)
			return nil
		}
		if err := unix.Mknodat(dir.fd(), n.Name, mode, int(n.Rdev)); err != nil {
			rs.fail(dp, fmt.Errorf("mknod: %w", err))
			return nil
		}
		if err := rs.applyMeta(dir, n.Name, dp, n, rs.inheritsACL(dir)); err != nil {
			rs.fail(dp, err)
			return nil
		}
		rs.files.Add(1)
		rs.progress.AddDone(1, 0)
	default:
		rs.fail(dp, fmt.Errorf("unknown node type %q", n.Type))
	}
	return nil
}

// ensureDir makes entry name of dir (path p, snapshot path sp) a
// directory and opens it: it creates it, keeps a directory already there,
// and replaces anything else (a file, or a symlink, which is not followed:
// writing through it could put the restore outside the target). Above the
// backed-up paths, a symlink to a directory that root or the restoring
// user owns is followed, within the target (followAncestor).
func (rs *restorer) ensureDir(dir *restoreDir, name, p, sp string) (*restoreDir, error) {
	err := mkdirAt(dir.fd(), name)
	created := err == nil
	switch {
	case err == nil:
	case err == unix.EEXIST:
		var st unix.Stat_t
		if err := unix.Fstatat(dir.fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			break
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK && rs.ancestors[sp] && trustedLink(st.Uid) {
			if d := rs.followAncestor(p); d != nil {
				return d, nil
			}
		}
		if err := unix.Unlinkat(dir.fd(), name, 0); err != nil {
			return nil, &fs.PathError{Op: "replace with a directory", Path: p, Err: err}
		}
		if err := mkdirAt(dir.fd(), name); err != nil {
			return nil, &fs.PathError{Op: "mkdir", Path: p, Err: err}
		}
		created = true
	default:
		return nil, &fs.PathError{Op: "mkdir", Path: p, Err: err}
	}
	d, err := openDirAt(dir.fd(), name, p)
	if err != nil {
		return nil, notFollowed(err)
	}
	d.created = created
	return d, nil
}

// mkdirAt makes directory name in dir, private until its metadata is set
// at the end of the restore, retrying when interrupted.
func mkdirAt(dir int, name string) error {
	for {
		if err := unix.Mkdirat(dir, name, 0o700); err != unix.EINTR {
			return err
		}
	}
}

// clearEntry makes way at entry name of dir (path p) for a new file, symlink or device: whatever
// non-directory is there is unlinked, not opened or followed (a symlink
// out of the target, a FIFO that would block the open, a hard link whose
// other names must keep their content). An empty directory is removed; a
// directory with entries is an error for this item. In a directory this
// restore created there is nothing to clear (and O_EXCL still checks).
func (rs *restorer) clearEntry(dir *restoreDir, name, p string) error {
	if dir.created {
		return nil
	}
	err := unix.Unlinkat(dir.fd(), name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err == unix.EISDIR || err == unix.EPERM {
		if rerr := unix.Unlinkat(dir.fd(), name, unix.AT_REMOVEDIR); rerr == nil {
			return nil
		} else if rerr == unix.ENOTEMPTY || rerr == unix.EEXIST {
			return fmt.Errorf("a directory with entries is in the way at %s (move it away or restore into an empty target)", p)
		}
	}
	return &fs.PathError{Op: "unlink", Path: p, Err: err}
}

// file restores regular file n as entry name of dir (path dp): it creates
// the file and queues its extents for the readers, or links it to an
// earlier name of the same inode.
func (rs *restorer) file(n *repo.Node, dir *restoreDir, name, dp string) error {
	var key linkKey
	var sum [32]byte
	newFirst := false
	if n.Links > 1 && n.Inode != 0 {
		key, sum = linkKey{n.DeviceID, n.Inode}, InodeDataSum(n)
		first, ok := rs.linked[key]
		switch {
		case !ok:
			newFirst = true
		case first.sum == sum:
			if rs.link(first.of, n, dir, name, dp) {
				return nil
			}
			newFirst = true // the first failed: this name is the one to link to
		}
	}
	if err := rs.acquireOpen(); err != nil {
		return err
	}
	var f *os.File
	if rs.o.Delta && !dir.created {
		f = rs.reusable(dir, name, dp, n)
	}
	reused := f != nil
	if !reused {
		if err := rs.clearEntry(dir, name, dp); err != nil {
			<-rs.open
			rs.fail(dp, err)
			return nil
		}
		// O_EXCL: a fresh inode, never one that appeared here meanwhile.
		var err error
		f, err = openNoPollAt(dir.fd(), name, dp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			<-rs.open
			rs.fail(dp, err)
			return nil
		}
	}
	of := &outFile{path: dp, node: n, f: f, res: rs, acl: !reused && rs.inheritsACL(dir), reused: reused}
	of.pending.Store(1) // held by the walker until all extents are queued
	if newFirst {
		// Later names link to this inode, checked by its identity once
		// the file is closed (link).
		of.id, _ = fileIDOf(f)
		rs.linked[key] = linkFirst{of: of, sum: sum}
	}
	rs.files.Add(1)
	rs.total.Add(n.Size)
	if reused {
		// Compared in place by a comparer, many files at once: the
		// walker would read them one after the other.
		rs.keptFiles.Add(1)
		rs.startComparers()
		select {
		case rs.cmpJobs <- of:
		case <-rs.ctx.Done():
			of.setErr(rs.ctx.Err())
			of.release()
		}
		return rs.ctx.Err()
	}
	rs.queue(of, nil)
	return rs.ctx.Err()
}

// queue hands the data extents of of to the readers, and releases the
// hold on it of whoever made it. For a file written in place (delta: buf
// is the caller's comparison buffer) it sets the size first (what lies
// beyond is gone, what is missing reads as a hole) and queues only the
// extents that differ from what is there. Called by the walker and, for
// files in place, the comparers.
func (rs *restorer) queue(of *outFile, buf *[]byte) {
	n, f := of.node, of.f
	var off, dataEnd int64
	var err error
	var queued bool
	if of.reused {
		if err = f.Truncate(n.Size); err != nil {
			err = fmt.Errorf("set the size of the file in place: %w", err)
		}
		dataEnd = n.Size
	}
	if err == nil {
		err = rs.r.EachExtent(rs.ctx, n, func(e repo.Extent) error {
			if e.Len < 0 || e.Len > n.Size-off { // not off+e.Len > n.Size: the sum may wrap around
				return fmt.Errorf("extent at %d (+%d) beyond file size %d", off, e.Len, n.Size)
			}
			if of.reused {
				same, done, err := rs.sameExtent(f, e, off, buf)
				if err != nil {
					return err
				}
				if same {
					rs.kept.Add(e.Len)
				}
				if done {
					rs.progress.AddDone(0, e.Len)
					off += e.Len
					return rs.ctx.Err()
				}
			}
			if !e.Zero {
				of.pending.Add(1)
				rs.add(target{file: of, off: off, id: e.ID, len: e.Len})
				dataEnd, queued = off+e.Len, true
			} else {
				rs.progress.AddDone(0, e.Len)
			}
			off += e.Len
			return nil
		})
	}
	if err == nil && off != n.Size {
		err = fmt.Errorf("extents cover %d bytes, file size is %d", off, n.Size)
	}
	// Writes extend the file to the end of its last data extent; a
	// trailing hole needs the size set here, and a last data extent that
	// turns out all zeros (a chunk cut inside trailing zeros) is skipped
	// by readPack, which sets the size then. Growing the file while
	// extents below are being written is safe.
	if err == nil && dataEnd < n.Size {
		err = f.Truncate(n.Size)
	}
	if err != nil {
		of.setErr(err)
	}
	if queued && of.reused {
		// A comparer hands over what it found at once: the walker may be
		// waiting for descriptors this file holds (acquireOpen).
		rs.flushBatch()
	}
	of.release()
}

// startComparers starts the goroutines that compare files in place
// (delta), once.
func (rs *restorer) startComparers() {
	if rs.cmpJobs != nil {
		return
	}
	rs.cmpJobs = make(chan *outFile, 64)
	for range 2 * cpus.N() {
		rs.cmpWG.Add(1)
		go func() {
			defer rs.cmpWG.Done()
			var buf []byte
			for of := range rs.cmpJobs {
				if err := rs.ctx.Err(); err != nil {
					of.setErr(err)
					of.release()
					continue
				}
				rs.queue(of, &buf)
			}
		}()
	}
}

// link makes entry name of dir (path dp) another name of the file first
// was restored to, as the two were one file (node n here) when backed up.
// It links the inode restored, never whatever first's path names now. It
// reports false when dp is to be restored as a file of its own instead:
// the first name failed or was replaced, or the file system cannot link
// (dp is then a copy).
func (rs *restorer) link(first *outFile, n *repo.Node, dir *restoreDir, name, dp string) bool {
	first.mu.Lock()
	defer first.mu.Unlock()
	if first.finished && first.err != nil {
		return false
	}
	if err := rs.clearEntry(dir, name, dp); err != nil {
		rs.fail(dp, err)
		return true
	}
	src := first.f
	if first.finished { // closed: found again below the target
		f, err := rs.openBeneath(first.path, unix.O_PATH)
		if err != nil {
			return false
		}
		defer f.Close()
		if got, err := fileIDOf(f); err != nil || first.id == (fileID{}) || got != first.id {
			return false
		}
		src = f
	}
	if err := linkFile(src, dir.fd(), name); err != nil {
		return false
	}
	first.links = append(first.links, dp)
	rs.files.Add(1)
	rs.total.Add(n.Size) // every name's size, as the backup's bytes_total
	// The progress total counts every name's bytes; these need no writing.
	if first.finished {
		rs.progress.AddDone(1, n.Size)
	} else {
		rs.progress.AddDone(0, n.Size)
	}
	return true
}

// InodeDataSum digests what a file's node recorded about its inode: size,
// times, mode, owner, attributes and content. Two names of one inode with
// different sums (the file changed between reading the two) are restored
// as two files, and mounted as two.
func InodeDataSum(n *repo.Node) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d %d %d %d %d %d\n", n.Size, n.ModTime.UnixNano(), uint32(n.Mode), n.UID, n.GID, len(n.Content))
	for _, e := range n.Content {
		fmt.Fprintf(h, "%x %d %t\n", e.ID[:], e.Len, e.Zero)
	}
	fmt.Fprintf(h, "lists %d\n", len(n.ContentLists))
	for _, x := range n.ContentLists {
		h.Write(x[:])
	}
	names := slices.Sorted(maps.Keys(n.Xattrs))
	fmt.Fprintf(h, "\nxattrs %d\n", len(names))
	for _, k := range names {
		fmt.Fprintf(h, "%d %s %d ", len(k), k, len(n.Xattrs[k]))
		h.Write(n.Xattrs[k])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// sameInodeData reports whether two nodes of one inode recorded the same
// data (InodeDataSum).
func sameInodeData(a, b *repo.Node) bool { return InodeDataSum(a) == InodeDataSum(b) }

func (of *outFile) setErr(err error) {
	of.mu.Lock()
	if of.err == nil {
		of.err = err
	}
	of.mu.Unlock()
}

// release drops one pending reference; the last one closes the file and
// applies its metadata.
func (of *outFile) release() {
	if of.pending.Add(-1) != 0 {
		return
	}
	rs := of.res
	// A failure from here on is the metadata's: the data is all written.
	whole := of.err == nil
	if of.err == nil && of.reused {
		of.err = dropExtraXattrs(int(of.f.Fd()), of.node)
	}
	if of.err == nil {
		// Through the descriptor: no path lookups, and after the last write.
		if err := rs.applyMetaFd(of.f, of.path, of.node, of.acl); err != nil {
			of.err = err
		}
	}
	of.mu.Lock() // link uses f until it is closed
	where := of.path
	interrupted := errors.Is(of.err, context.Canceled) || errors.Is(of.err, context.DeadlineExceeded)
	if of.err != nil && !rs.o.Delta {
		where = rs.whereNow(of.f, of.path)
	}
	cerr := of.f.Close()
	<-rs.open
	if of.err == nil && cerr != nil {
		of.err = cerr
	}
	of.finished = true
	links := of.links
	of.node, of.f = nil, nil // kept by rs.linked: only path and err are used from here
	of.mu.Unlock()
	if of.err != nil {
		// Not restored: counted when created, uncounted now (the result
		// and the summary say how many files came back).
		rs.files.Add(-1 - int64(len(links)))
		if interrupted {
			// Interrupted: no file is left under its real name with only
			// part of its content (nothing lists it after Ctrl-C), but
			// for a delta restore, whose next run goes on from what
			// was written. A file with lost chunks is kept, listed, for
			// salvage, unless the restore is interrupted (Restore).
			if !rs.o.Delta {
				for _, p := range append(links, where) {
					if p != "" {
						rs.removeBeneath(p)
					}
				}
			}
			return
		}
		rs.fail(of.path, of.err)
		for _, l := range links {
			rs.fail(l, fmt.Errorf("hard link to %s, which failed (the same file: see there)", of.path))
		}
		if !rs.o.Delta && !whole {
			rs.mu.Lock()
			for _, p := range append(links, where) {
				if p != "" {
					rs.salvage = append(rs.salvage, p)
				}
			}
			rs.mu.Unlock()
		}
		return
	}
	rs.progress.AddDone(1+int64(len(links)), 0)
}

func (rs *restorer) add(t target) {
	rs.batchMu.Lock()
	defer rs.batchMu.Unlock()
	rs.batch = append(rs.batch, t)
	rs.batchSz += t.len
	if maxBytes, maxTargets := rs.batchLimits(); rs.batchSz >= maxBytes || len(rs.batch) >= maxTargets {
		rs.flushLocked()
	}
}

// flushBatch groups the batch by pack and queues one task per pack.
func (rs *restorer) flushBatch() {
	rs.batchMu.Lock()
	defer rs.batchMu.Unlock()
	rs.flushLocked()
}

// flushLocked is flushBatch with batchMu held.
func (rs *restorer) flushLocked() {
	if len(rs.batch) == 0 {
		return
	}
	byPack := map[id.ID]*packTask{}
	var order []id.ID
	for _, t := range rs.batch {
		locs := rs.r.Lookup(t.id)
		if len(locs) == 0 {
			t.file.setErr(fmt.Errorf("chunk %s at offset %d: %w: not in any index", t.id.Short(), t.off, repo.ErrBlobLost))
			t.file.release()
			continue
		}
		// A data copy first: a tree blob of the same bytes has the same
		// id, and a tier may hold only the data copy.
		l := locs[0]
		if i := slices.IndexFunc(locs, func(l repo.BlobLocation) bool { return l.Entry.Type == repo.DataBlob }); i > 0 {
			l = locs[i]
		}
		pt := byPack[l.Pack.ID]
		if pt == nil {
			pt = &packTask{pack: l.Pack, targets: map[id.ID][]target{}}
			byPack[l.Pack.ID] = pt
			order = append(order, l.Pack.ID)
		}
		if _, ok := pt.targets[t.id]; !ok {
			pt.entries = append(pt.entries, l.Entry)
		}
		pt.targets[t.id] = append(pt.targets[t.id], t)
	}
	rs.batch, rs.batchSz = nil, 0
	rs.batchN++
	for _, p := range order {
		select {
		case rs.tasks <- *byPack[p]:
		case <-rs.ctx.Done():
			for _, ts := range byPack[p].targets {
				for _, t := range ts {
					t.file.setErr(rs.ctx.Err())
					t.file.release()
				}
			}
		}
	}
}

func (rs *restorer) reader() {
	defer rs.wg.Done()
	var bufs repo.ReadBuffers
	for task := range rs.tasks {
		rs.readPack(task, &bufs)
	}
}

func (rs *restorer) readPack(task packTask, bufs *repo.ReadBuffers) {
	done := map[id.ID]bool{}
	err := rs.r.LoadBlobsBuf(rs.ctx, task.pack, task.entries, bufs, func(e repo.BlobEntry, data []byte) error {
		rs.deliver(e.ID, data, task.targets[e.ID])
		done[e.ID] = true
		return nil
	})
	for x, ts := range task.targets {
		if done[x] {
			continue
		}
		cause := err
		if cause == nil {
			cause = errors.New("blob not delivered")
		}
		// The batch read only the first copy the index lists. Another
		// writer (or a repack) may have stored the blob in another pack
		// too: LoadBlob tries every copy, rebuilding from parity as needed.
		if rs.ctx.Err() == nil && len(rs.r.Lookup(x)) > 1 {
			data, lerr := rs.r.LoadBlob(rs.ctx, repo.DataBlob, x, nil)
			if lerr == nil {
				rs.deliver(x, data, ts)
				continue
			}
			cause = lerr
		}
		for _, t := range ts {
			t.file.setErr(fmt.Errorf("chunk %s at offset %d in pack %s: %w", x.Short(), t.off, task.pack.ID.Short(), cause))
			t.file.release()
		}
	}
}

// deliver writes the plaintext of blob x to its targets, and releases them.
func (rs *restorer) deliver(x id.ID, data []byte, ts []target) {
	zero := isZero(data)
	for _, t := range ts {
		if int64(len(data)) != t.len {
			t.file.setErr(fmt.Errorf("chunk %s has %d bytes, extent says %d", x.Short(), len(data), t.len))
		} else if !zero || t.file.reused { // in place, zeros overwrite what differed
			if _, err := t.file.f.WriteAt(data, t.off); err != nil {
				t.file.setErr(fmt.Errorf("write at offset %d: %w", t.off, err))
			} else {
				rs.written.Add(t.len)
			}
		} else if end := t.off + t.len; end == t.file.node.Size {
			// Not written (a hole), but it ends the file: set the size.
			if err := t.file.f.Truncate(end); err != nil {
				t.file.setErr(fmt.Errorf("set size %d: %w", end, err))
			}
		}
		rs.progress.AddDone(0, t.len)
		t.file.release()
	}
}

func isZero(b []byte) bool {
	for len(b) >= len(zeroBlock) {
		if string(b[:len(zeroBlock)]) != string(zeroBlock[:]) {
			return false
		}
		b = b[len(zeroBlock):]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

var zeroBlock [64 << 10]byte

// isRoot is whether restores may set ownership (asked once, not per file).
var isRoot = os.Geteuid() == 0

// applyMeta sets ownership (when permitted), extended attributes, mode
// and times of entry name of dir (path p, a symlink, device, FIFO or
// disk image), through dir and without following a symlink.
func (rs *restorer) applyMeta(dir *restoreDir, name, p string, n *repo.Node, acl bool) error {
	fd := dir.fd()
	if isRoot {
		if err := unix.Fchownat(fd, name, int(n.UID), int(n.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	// After chown, which clears security.capability.
	var xerr error
	if pp, ok := dir.pinned(name); ok {
		xerr = rs.setXattrs(-1, pp, p, n)
		if acl {
			xerr = errors.Join(xerr, dropInheritedACLs(-1, pp, n))
		}
	} else if len(n.Xattrs) > 0 || acl {
		xerr = fmt.Errorf("extended attributes not set: %w", errNoProc)
	}
	if n.Type != repo.NodeSymlink {
		mode := uint32(n.Mode.Perm()) | UnixModeBits(n.Mode)
		err := unix.Fchmodat(fd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.EOPNOTSUPP { // no fchmodat2 (Linux before 6.6): chmod follows symlinks
			var st unix.Stat_t
			if serr := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); serr != nil || st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return fmt.Errorf("chmod: %s is no longer what was restored (a symlink now?): %v", p, serr)
			}
			err = unix.Fchmodat(fd, name, mode, 0)
		}
		if err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	at := n.AccessTime
	if at.IsZero() {
		at = n.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(n.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(fd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return xerr
}

// applyMetaFd is applyMeta for an open file or directory.
func (rs *restorer) applyMetaFd(f *os.File, path string, n *repo.Node, acl bool) error {
	fd := int(f.Fd())
	if isRoot {
		if err := unix.Fchown(fd, int(n.UID), int(n.GID)); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	xerr := rs.setXattrs(fd, path, path, n)
	if acl {
		xerr = errors.Join(xerr, dropInheritedACLs(fd, path, n))
	}
	// After the extended attributes: setting an ACL changes the group
	// bits, and the mode recorded with it matches that ACL.
	if err := unix.Fchmod(fd, uint32(n.Mode.Perm())|UnixModeBits(n.Mode)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	at := n.AccessTime
	if at.IsZero() {
		at = n.ModTime
	}
	ts := [2]unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(n.ModTime.UnixNano())}
	// utimensat(fd, NULL, ...) sets the times of fd itself.
	if _, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); e != 0 {
		return fmt.Errorf("set times: %w", e)
	}
	return xerr
}

// setXattrs sets n's extended attributes on fd (or path when fd < 0; shown
// is the path for messages). Those the target file system does not
// support are counted and reported once, at the end of the restore; other
// failures are this item's error.
func (rs *restorer) setXattrs(fd int, path, shown string, n *repo.Node) error {
	unsupported, err := setXattrs(fd, path, n.Xattrs)
	if len(unsupported) > 0 {
		rs.mu.Lock()
		if rs.xattrUnsupported == 0 {
			rs.xattrFirst = fmt.Sprintf("%s on %s", unsupported[0], shown)
		}
		rs.xattrUnsupported += len(unsupported)
		rs.mu.Unlock()
	}
	return err
}

// inheritsACL reports whether an entry created in dir inherited an ACL
// from dir's default ACL, asked once per directory. A directory this
// restore made there inherited it as its own default ACL too.
func (rs *restorer) inheritsACL(dir *restoreDir) bool {
	if dir.acl == 0 {
		_, err := unix.Fgetxattr(dir.fd(), aclDefault, nil)
		if err == unix.EBADF && procFD { // the target opened with O_PATH
			_, err = unix.Getxattr("/proc/self/fd/"+strconv.Itoa(dir.fd()), aclDefault, nil)
		}
		dir.acl = 1
		if err == nil {
			dir.acl = 2
		}
	}
	return dir.acl == 2
}

const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"
)

// dropInheritedACLs removes the POSIX ACLs an entry inherited from the
// target directory's default ACL when the snapshot recorded none for it:
// a restore into a shared directory must not grant its users access to
// what is restored (an ACL entry "user:bob:rwx" with a restored mode of
// 0640 lets bob read the file).
func dropInheritedACLs(fd int, path string, n *repo.Node) error {
	for _, name := range []string{aclAccess, aclDefault} {
		if _, ok := n.Xattrs[name]; ok {
			continue
		}
		var err error
		if fd >= 0 {
			err = unix.Fremovexattr(fd, name)
		} else {
			err = unix.Lremovexattr(path, name)
		}
		if err != nil && err != unix.ENODATA && err != unix.ENOTSUP {
			return fmt.Errorf("remove inherited %s: %w", name, err)
		}
	}
	return nil
}

// UnixModeBits maps Go's setuid, setgid and sticky flags to chmod bits
// (S_ISUID, S_ISGID, S_ISVTX).
func UnixModeBits(m fs.FileMode) uint32 {
	var b uint32
	if m&fs.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}
