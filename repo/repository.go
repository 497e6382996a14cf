package repo

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/restic/chunker"

	"github.com/drpipe/drpipe/chunking"
	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/hugepage"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// Options tune how a repository is opened or created.
type Options struct {
	// Password opens (or, for Init, creates) a key slot. A key file's
	// contents are used the same way.
	Password []byte
	// CacheDir holds the local index cache. Empty means
	// $XDG_CACHE_HOME/drpipe or ~/.cache/drpipe; if that is not writable a
	// directory under os.TempDir is used.
	CacheDir string
	// Compression for new blobs (default auto).
	Compression Compression
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
	// KDF parameters for new key slots (default DefaultKDF).
	KDF *KDFParams
	// Uploads is the number of packs uploaded concurrently (default 2).
	Uploads int
	// IndexEvery writes an index object after this many new packs so that
	// an interrupted backup's data can be deduplicated by the next one
	// (default 16).
	IndexEvery int
	// IndexInterval also writes an index object when this much time passed
	// since the last one and packs are waiting (default 30 s).
	IndexInterval time.Duration
	// FoldEvery bounds the memory a long session's own index takes: once
	// the index objects this session wrote list this many blobs, their
	// entries move from memory to a memory-mapped file in the cache
	// directory (default 262144, about 64 MiB of memory).
	FoldEvery int
	// SkipUnreadableIndex leaves index objects that cannot be read out of
	// the index cache instead of failing Open and LoadIndex. Check and
	// Repair need it: they are how an unreadable index is reported and
	// replaced, so they must open a repository that has one.
	SkipUnreadableIndex bool
}

// InitOptions are the format parameters chosen at init.
type InitOptions struct {
	EC       erasure.Params
	PackSize int
	// Version is the repository format version to create: 0 for
	// FormatVersion; 1 keeps the repository usable by drpipe releases
	// that know only format 1 (SHA-256 shard hashes).
	Version int
	// Chunks are the content-defined chunk sizes every backup into the
	// repository uses; nil for DefaultChunkSizes. See ChunkSizes.Validate.
	Chunks *ChunkSizes
}

// Repository is an open, unlocked repository. It is safe for concurrent
// use. Close it to flush nothing — call Flush before Close to make pending
// blobs durable.
type Repository struct {
	be       tiers.Backend
	cfg      *Config
	key      *MasterKey
	keyID    id.ID
	hasher   *chunking.Hasher
	kdf      KDFParams
	now      func() time.Time
	comp     Compression
	cacheDir string
	opts     Options

	idxMu     sync.RWMutex
	disk      *diskIndex
	condemned map[id.ID]bool // packs listed in prune tombstones
	// condemnedErr is why the tombstones could not be read at the last
	// LoadIndex: then no indexed blob counts for deduplication and
	// SaveBlob refuses.
	condemnedErr error
	// damaged holds the index objects the last LoadIndex left out
	// because they are damaged (DamagedIndexes).
	damaged   map[id.ID]error
	pending   map[blobKey]pendingBlob
	unindexed []IndexPack
	lastIndex time.Time
	indexing  sync.Mutex // serialises index object writes
	// toFold holds the index objects this session wrote whose blobs are
	// still in pending, and foldBlobs how many blobs they list. sessIdx
	// holds what foldPending moved out of pending: mapped files of this
	// session's index objects that disk may lack, oldest first. indexSeq
	// counts the index objects writePendingIndex stored, numbering those
	// of toFold and sessIdx; loading counts the LoadIndex calls that
	// noted it before listing and have not replaced disk yet. All five
	// are guarded by idxMu; only foldPending and swapDisk, with indexing
	// held, and Close replace or unmap a file of sessIdx.
	toFold    map[id.ID]foldObject
	foldBlobs int
	sessIdx   []sessLevel
	indexSeq  uint64
	loading   int
	closed    bool // Close was called: no more folds (guarded by idxMu)

	packers [3]*packer // by BlobType

	packBufs  *hugepage.Pool // of pack buffers: packers and uploads
	shardBufs *hugepage.Pool // of erasure-coded shards: uploads

	uploadSem chan struct{}
	uploads   uploadTracker
	adds      uploadTracker // blobs SaveBlob registered, until in a packer
	errMu     sync.Mutex
	uploadErr error

	rcMu    sync.Mutex
	rcCache []*reconstructed // tiny LRU of rebuilt packs
	rcWait  map[id.ID]*sync.WaitGroup

	statsMu sync.Mutex
	stats   WriteStats

	// sessMu guards sessions, the sessions begun on this repository
	// and not ended yet: no index object is written once one lapsed.
	sessMu   sync.Mutex
	sessions map[*Session]struct{}
}

// WriteStats counts what a session added to the repository.
type WriteStats struct {
	Blobs       int64 // new blobs stored
	BlobBytes   int64 // plaintext bytes of new blobs
	PackedBytes int64 // bytes of new packs (before erasure coding)
	StoredBytes int64 // bytes of new shard and index objects
	Packs       int64
	Indexes     int64
}

type pendingBlob struct {
	pack  *PackInfo // nil while the pack is not durable yet
	entry BlobEntry
}

// blobKey names a blob of this session: a data blob and a tree blob with
// the same bytes, and so the same id, are two blobs.
type blobKey struct {
	t BlobType
	x id.ID
}

func (o *Options) defaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Uploads <= 0 {
		o.Uploads = 2
	}
	if o.IndexEvery <= 0 {
		o.IndexEvery = 16
	}
	if o.IndexInterval <= 0 {
		o.IndexInterval = 30 * time.Second
	}
	if o.FoldEvery <= 0 {
		o.FoldEvery = 1 << 18
	}
}

// Init creates a new repository on be, which must not already hold one,
// and returns it opened.
func Init(ctx context.Context, be tiers.Backend, io InitOptions, o Options) (*Repository, error) {
	o.defaults()
	if io.EC == (erasure.Params{}) {
		io.EC = erasure.DefaultParams
	}
	if err := io.EC.Validate(); err != nil {
		return nil, err
	}
	if io.PackSize == 0 {
		io.PackSize = DefaultPackSize
	}
	if io.PackSize < MinPackSize || io.PackSize > MaxPackSize {
		return nil, fmt.Errorf("pack size %d outside 1 MiB..1 GiB", io.PackSize)
	}
	if io.Chunks != nil {
		if err := io.Chunks.Validate(); err != nil {
			return nil, err
		}
	}
	if _, err := be.Stat(ctx, configHandle); err == nil {
		return nil, fmt.Errorf("%s already holds a drpipe repository; refusing to overwrite it", be.Location())
	} else if !errors.Is(err, tiers.ErrNotFound) {
		return nil, fmt.Errorf("check %s: %w", be.Location(), err)
	}
	// Refuse a location that already has objects of any kind.
	for _, t := range tiers.AllTypes {
		found := false
		err := be.List(ctx, t, func(tiers.ObjectInfo) error { found = true; return errStop })
		if err != nil && !errors.Is(err, errStop) {
			return nil, fmt.Errorf("list %s in %s: %w", t, be.Location(), err)
		}
		if found {
			return nil, fmt.Errorf("%s is not empty (it holds %s objects but no config); refusing to init there", be.Location(), t)
		}
	}
	mk, err := NewMasterKey()
	if err != nil {
		return nil, err
	}
	pol, err := chunker.RandomPolynomial()
	if err != nil {
		return nil, fmt.Errorf("choose chunker polynomial: %w", err)
	}
	version := io.Version
	if version == 0 {
		version = FormatVersion
	}
	if version < 1 || version > FormatVersion {
		return nil, fmt.Errorf("%w: cannot create a repository of format version %d, this drpipe writes 1..%d", ErrUnsupportedVersion, version, FormatVersion)
	}
	chunks := DefaultChunkSizes()
	if io.Chunks != nil {
		c := *io.Chunks
		chunks = &c
	}
	cfg := &Config{Format: formatName, Version: version, Created: o.Now().UTC(), EC: io.EC, PackSize: io.PackSize, Chunks: chunks, ChunkerPolynomial: pol}
	if _, err := randRead(cfg.ID[:]); err != nil {
		return nil, err
	}
	kdf := DefaultKDF
	if o.KDF != nil {
		kdf = *o.KDF
	}
	// Key slot first, config last: a crash leaves no half-initialised
	// config behind.
	kraw, err := sealKeyFile(mk, o.Password, "password", kdf, o.Now())
	if err != nil {
		return nil, err
	}
	kid := id.Hash(kraw)
	if err := tiers.PutBytes(ctx, be, tiers.Handle{Type: tiers.TypeKey, Name: kid.String()}, kraw); err != nil {
		return nil, fmt.Errorf("store key slot: %w", err)
	}
	craw, err := cfg.seal(mk)
	if err != nil {
		return nil, err
	}
	if err := tiers.PutBytes(ctx, be, configHandle, craw); err != nil {
		return nil, fmt.Errorf("store config: %w", err)
	}
	return newRepository(ctx, be, cfg, mk, kid, kdf, o)
}

var errStop = errors.New("stop")

var configHandle = tiers.Handle{Type: tiers.TypeConfig, Name: "config"}

// ReadConfig reads the public part of the config without a key.
func ReadConfig(ctx context.Context, be tiers.Backend) (*Config, error) {
	raw, err := loadLimited(ctx, be, configHandle, maxSmallObject)
	if errors.Is(err, tiers.ErrNotFound) {
		return nil, fmt.Errorf("%w: no repository at %s (create one with drpipe init)", ErrNotRepository, be.Location())
	}
	if err != nil {
		return nil, fmt.Errorf("read config from %s: %w", be.Location(), err)
	}
	return parseConfigPublic(raw)
}

// Open unlocks the repository on be with o.Password and loads its index.
func Open(ctx context.Context, be tiers.Backend, o Options) (*Repository, error) {
	o.defaults()
	cfg, err := ReadConfig(ctx, be)
	if err != nil {
		return nil, err
	}
	mk, kid, err := unlock(ctx, be, o.Password)
	if err != nil {
		return nil, err
	}
	return openUnlocked(ctx, be, cfg, mk, kid, o)
}

// openUnlocked opens the repository with config cfg on be with the master
// key mk, unlocked from key slot kid; the key must open cfg's secret.
func openUnlocked(ctx context.Context, be tiers.Backend, cfg *Config, mk *MasterKey, kid id.ID, o Options) (*Repository, error) {
	if err := cfg.openSecret(mk); err != nil {
		return nil, err
	}
	kdf := DefaultKDF
	if o.KDF != nil {
		kdf = *o.KDF
	}
	return newRepository(ctx, be, cfg, mk, kid, kdf, o)
}

// OpenReplica opens the repository on be, a copy of the one on src (the
// same config), as Open does, except that when no key slot on be opens
// with o.Password, those on src are tried: a copy stores the config
// before the key slots, so an interrupted one leaves be without them, and
// a slot added on src reaches be only with the next copy. The master key
// found must open be's config. When neither opens, src's error is
// returned (src holds every slot being copied). A be that holds no
// config yet is opened with src's: a copy into it is about to make it
// src's replica, and announces itself there before it does
// (BeginCopySession). A be that holds another repository than src is
// no replica of it: it is not opened, even where its own slots open, and
// the error wraps tiers.ErrDifferentRepository (src's key would not open
// its config, which reads as damage).
func OpenReplica(ctx context.Context, be, src tiers.Backend, o Options) (*Repository, error) {
	o.defaults()
	srcCfg, err := ReadConfig(ctx, src)
	if err != nil {
		return nil, err
	}
	cfg, err := ReadConfig(ctx, be)
	if errors.Is(err, ErrNotRepository) {
		cfg, err = srcCfg, nil
	}
	if err != nil {
		return nil, err
	}
	if cfg.ID != srcCfg.ID {
		return nil, fmt.Errorf("%s holds repository %s, %s holds repository %s: %w; use an empty location or a replica of %s",
			be.Location(), cfg.ID.Short(), src.Location(), srcCfg.ID.Short(), tiers.ErrDifferentRepository, srcCfg.ID.Short())
	}
	mk, kid, err := unlock(ctx, be, o.Password)
	if err != nil {
		var serr error
		if mk, kid, serr = unlock(ctx, src, o.Password); serr != nil {
			return nil, serr
		}
	}
	return openUnlocked(ctx, be, cfg, mk, kid, o)
}

func newRepository(ctx context.Context, be tiers.Backend, cfg *Config, mk *MasterKey, kid id.ID, kdf KDFParams, o Options) (*Repository, error) {
	r := &Repository{
		be: be, cfg: cfg, key: mk, keyID: kid, kdf: kdf, now: o.Now, comp: o.Compression, opts: o,
		hasher:    chunking.NewHasher(mk.ChunkID),
		pending:   map[blobKey]pendingBlob{},
		toFold:    map[id.ID]foldObject{},
		uploadSem: make(chan struct{}, o.Uploads),
		rcWait:    map[id.ID]*sync.WaitGroup{},
		// The data pack being filled, one per upload, and one changing
		// hands; one shard buffer per upload, and one.
		packBufs:  hugepage.NewPool(packBufSize(cfg), o.Uploads+2),
		shardBufs: hugepage.NewPool(erasure.EncodedSize(cfg.EC, packBufSize(cfg)), o.Uploads+1),
	}
	r.lastIndex = r.now()
	for _, t := range []BlobType{DataBlob, TreeBlob} {
		r.packers[t] = &packer{typ: t}
	}
	if err := r.setupCache(o.CacheDir); err != nil {
		return nil, err
	}
	if err := r.LoadIndex(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Repository) setupCache(dir string) error {
	loc := sha256.Sum256([]byte(r.be.Location()))
	sub := r.cfg.ID.String()[:16] + "-" + hex.EncodeToString(loc[:4])
	var cands []string
	if dir != "" {
		cands = append(cands, dir)
	} else {
		if d, err := os.UserCacheDir(); err == nil {
			cands = append(cands, filepath.Join(d, "drpipe"))
		}
		cands = append(cands, filepath.Join(os.TempDir(), fmt.Sprintf("drpipe-cache-%d", os.Getuid())))
	}
	shared := ""
	if dir == "" {
		shared = cands[len(cands)-1]
	}
	var lastErr error
	for _, c := range cands {
		p := filepath.Join(c, sub)
		if err := os.MkdirAll(p, 0o700); err != nil {
			lastErr = err
			continue
		}
		if c == shared {
			// The fallback lies in a directory everyone may write (the
			// default when $HOME is unset, as for a system service):
			// anyone could have made it first and then swap the cache,
			// or the build files in it, for symlinks.
			if err := privateDir(c); err != nil {
				lastErr = err
				continue
			}
			if err := privateDir(p); err != nil {
				lastErr = err
				continue
			}
		}
		r.cacheDir = p
		return nil
	}
	return fmt.Errorf("no usable cache directory (tried %v): %w; set --cache-dir", cands, lastErr)
}

// privateDir checks that dir is a directory (not a symlink) owned by this
// user that no one else may write.
func privateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o022 != 0 {
		owner := -1
		if ok {
			owner = int(st.Uid)
		}
		return fmt.Errorf("cache directory %s is not private to this user (mode %v, owner uid %d): remove it or set --cache-dir", dir, fi.Mode(), owner)
	}
	return nil
}

// Backend returns the storage the repository lives on.
func (r *Repository) Backend() tiers.Backend { return r.be }

// Config returns the repository config (with the polynomial filled in).
func (r *Repository) Config() Config { return *r.cfg }

// KeyID returns the id of the key slot that opened the repository.
func (r *Repository) KeyID() id.ID { return r.keyID }

// BlobID returns the keyed hash that names a blob with this plaintext.
func (r *Repository) BlobID(plain []byte) id.ID { return r.hasher.ID(plain) }

// ChunkerPolynomial returns the repository's secret chunker polynomial.
func (r *Repository) ChunkerPolynomial() chunker.Pol { return r.cfg.ChunkerPolynomial }

// ChunkConfig returns the chunking configuration backups into this
// repository use (its polynomial and recorded chunk sizes).
func (r *Repository) ChunkConfig() chunking.Config { return r.cfg.ChunkConfig() }

// Now returns the repository clock's current time.
func (r *Repository) Now() time.Time { return r.now() }

// SessionStats returns what this session has written so far.
func (r *Repository) SessionStats() WriteStats {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	return r.stats
}

// Close releases the index cache mapping. It does not flush.
func (r *Repository) Close() error {
	r.indexing.Lock() // no fold is reading a file of sessIdx
	defer r.indexing.Unlock()
	r.idxMu.Lock()
	r.closed = true
	r.disk.close()
	r.disk = nil
	for _, l := range r.sessIdx {
		l.close()
	}
	r.sessIdx = nil
	r.idxMu.Unlock()
	return nil
}

// LoadIndex (re)reads the repository's index objects into the local cache.
// Blobs written by this session stay known. An index object that vanishes
// while being read (a concurrent prune superseded it) makes it list again;
// when objects still vanish after several listings, it fails (unless
// Options.SkipUnreadableIndex) rather than leave their packs unknown.
func (r *Repository) LoadIndex(ctx context.Context) error {
	const attempts = 10
	for attempt := 0; attempt < attempts; attempt++ {
		complete, err := r.loadIndexOnce(ctx)
		if err != nil || complete {
			return err
		}
	}
	if r.opts.SkipUnreadableIndex {
		return nil // check and repair read every listed object themselves
	}
	return fmt.Errorf("load index of %s: index objects listed there could not be found, %d times over, so the index loaded lacks them: "+
		"run again once no prune or repair is rewriting the index; if this persists, the storage lists index objects it cannot read",
		r.be.Location(), attempts)
}

// loadIndexOnce lists and loads the index objects; complete is false when
// some vanished while being read, so the caller lists again.
func (r *Repository) loadIndexOnce(ctx context.Context) (complete bool, err error) {
	// The tombstones are read before the index objects are listed: a
	// sweep rewrites the index objects naming the packs it removes before
	// it removes their tombstone, so a tombstone found gone means that
	// the listing below no longer holds those packs. Read the other way
	// round, a sweep in between would leave them listed (from the cache)
	// but no longer condemned, and a backup would deduplicate against
	// packs that are gone.
	cond, cerr := r.loadCondemned(ctx)
	if cerr != nil {
		cerr = fmt.Errorf("cannot read the prune tombstones in %s (%w): a backup must not deduplicate against packs a prune may be removing; "+
			"run it again once they can be read (drpipe check reports each one it cannot read)", r.be.Location(), cerr)
	}
	// The index objects this session stored so far are listed below
	// unless a prune or repair removed them since (see swapDisk).
	r.idxMu.Lock()
	listed := r.indexSeq
	r.loading++
	r.idxMu.Unlock()
	defer func() {
		r.idxMu.Lock()
		r.loading--
		r.idxMu.Unlock()
	}()
	var ids []id.ID
	err = r.be.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error {
		x, err := id.Parse(oi.Handle.Name)
		if err != nil {
			return nil // not ours; check reports it
		}
		ids = append(ids, x)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("list index objects in %s: %w", r.be.Location(), err)
	}
	// Until the new cache replaces the one in use, the packs condemned
	// before stay condemned too: a tombstone found gone may be a sweep's
	// that removed them, and the cache in use still lists them.
	r.idxMu.Lock()
	both := make(map[id.ID]bool, len(r.condemned)+len(cond))
	maps.Copy(both, r.condemned)
	maps.Copy(both, cond)
	r.condemned = both
	if cerr != nil {
		r.condemnedErr = cerr
	}
	r.idxMu.Unlock()
	path := filepath.Join(r.cacheDir, "index.db")
	cur, _ := openDiskIndex(path)
	if cur != nil && len(cur.indexFiles) == len(ids) {
		same := true
		for _, x := range ids {
			if _, ok := cur.indexFiles[x]; !ok {
				same = false
				break
			}
		}
		if same {
			r.idxMu.Lock()
			r.damaged = nil
			r.idxMu.Unlock()
			r.swapDisk(cur, listed, cond, cerr)
			return true, nil
		}
	}
	vanished := false
	damaged := map[id.ID]error{}
	load := func(ctx context.Context, x id.ID) (*IndexFile, error) {
		f, err := r.LoadIndexFile(ctx, x)
		if errors.Is(err, tiers.ErrNotFound) {
			vanished = true
			return nil, nil
		}
		if errors.Is(err, ErrIndexDamaged) {
			// Left out of the cache (so read again next time): one
			// damaged object must not make every snapshot unreadable,
			// nor stop drpipe repair from replacing it.
			damaged[x] = err
			return nil, nil
		}
		if err != nil && r.opts.SkipUnreadableIndex && ctx.Err() == nil {
			return nil, nil // left out of the cache; Check reports it
		}
		return f, err
	}
	err = buildDiskIndex(ctx, path, cur, ids, load)
	r.idxMu.Lock()
	r.damaged = damaged
	r.idxMu.Unlock()
	cur.close()
	if err != nil {
		return false, fmt.Errorf("build index cache in %s: %w", r.cacheDir, err)
	}
	d, err := openDiskIndex(path)
	if err != nil {
		return false, fmt.Errorf("open index cache: %w", err)
	}
	r.swapDisk(d, listed, cond, cerr)
	return !vanished, nil
}

// swapDisk makes d the index cache, and cond the packs condemned by the
// tombstones read before its index objects were listed (cerr why they
// could not be read). listed is how many index objects this session had
// stored (indexSeq) when the objects d holds were listed: each of those
// is in d unless a prune or repair removed it since, and then what it
// listed of live packs is in d too, under the object that replaced it.
func (r *Repository) swapDisk(d *diskIndex, listed uint64, cond map[id.ID]bool, cerr error) {
	r.indexing.Lock() // no fold is reading a level of sessIdx
	defer r.indexing.Unlock()
	r.idxMu.Lock()
	old := r.disk
	r.disk = d
	r.condemned, r.condemnedErr = cond, cerr
	// The session's index objects stored before the listing need no
	// fold: they are in the new cache or were removed, their swept packs
	// with them.
	for x, o := range r.toFold {
		if _, ok := d.indexFiles[x]; ok || o.seq <= listed {
			delete(r.toFold, x)
			for _, p := range o.f.Packs {
				r.foldBlobs -= len(p.Blobs)
			}
		}
	}
	// Blobs of this session that the new cache holds no longer need the
	// overlay (and must not outlive a prune that removed their pack).
	// Those of packs that no index object lists yet, or only one stored
	// after the listing, are in no other index.
	keep := map[id.ID]bool{}
	for _, p := range r.unindexed {
		keep[p.ID] = true
	}
	for _, o := range r.toFold {
		for _, p := range o.f.Packs {
			keep[p.ID] = true
		}
	}
	for k, pb := range r.pending {
		if pb.pack == nil || keep[pb.pack.ID] {
			continue
		}
		delete(r.pending, k)
	}
	// The levels of sessIdx holding only such objects go too: all of
	// them, as no fold began since the listing (foldPending waits while
	// loading), so no level mixes objects from before it, which may be
	// gone, and after it, which are in no other index.
	var gone []sessLevel
	kept := r.sessIdx[:0]
	for _, l := range r.sessIdx {
		if l.last <= listed {
			gone = append(gone, l)
		} else {
			kept = append(kept, l)
		}
	}
	clear(r.sessIdx[len(kept):])
	r.sessIdx = kept
	r.idxMu.Unlock()
	old.close()
	for _, l := range gone {
		l.close()
	}
}

// LoadIndexFile reads, verifies and decodes one index object. An object
// larger than the index limit (MaxBlobSize of plaintext) is refused with
// an error wrapping ErrTooLarge before memory is allocated for it.
//
// An object that was read but is damaged (its content does not match its
// name, does not authenticate, is too large or does not decode) gives an
// error wrapping ErrIndexDamaged; a failure to read it does not.
func (r *Repository) LoadIndexFile(ctx context.Context, x id.ID) (*IndexFile, error) {
	h := tiers.Handle{Type: tiers.TypeIndex, Name: x.String()}
	raw, err := r.loadVerified(ctx, h, sealedLimit(maxIndexPlainLen))
	if err != nil {
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTooLarge) {
			return nil, damagedIndex{err}
		}
		return nil, err
	}
	plain, err := r.decodeObject(kindIndex, raw, maxIndexPlainLen)
	if errors.Is(err, errUnknownCompression) {
		return nil, fmt.Errorf("%s in %s: %w (upgrade drpipe: a newer one wrote it)", h, r.be.Location(), err) // not damage
	}
	if err != nil {
		return nil, damagedIndex{fmt.Errorf("%s in %s: %w (%s)", h, r.be.Location(), err, objectHint(tiers.TypeIndex))}
	}
	f, err := decodeIndex(plain)
	if err != nil {
		err = fmt.Errorf("index %s: %w", x.Short(), err)
		if errors.Is(err, ErrUnsupportedVersion) {
			return nil, err // a newer drpipe's index: not damage
		}
		return nil, damagedIndex{err}
	}
	return f, nil
}

// ErrIndexDamaged is wrapped by LoadIndexFile's errors for an index object
// that was read but cannot be used. LoadIndex leaves such objects out (see
// DamagedIndexes), so that the rest of the repository stays readable and
// drpipe repair can replace them.
var ErrIndexDamaged = errors.New("index object damaged")

// damagedIndex marks an error as ErrIndexDamaged without changing its
// message.
type damagedIndex struct{ err error }

func (e damagedIndex) Error() string        { return e.err.Error() }
func (e damagedIndex) Unwrap() error        { return e.err }
func (e damagedIndex) Is(target error) bool { return target == ErrIndexDamaged }

// DamagedIndexes returns the index objects the last LoadIndex left out
// because they are damaged, with why. Blobs only they list are unknown to
// this session: reads of them fail and backups store them again; prune
// refuses to run until drpipe repair has replaced them.
func (r *Repository) DamagedIndexes() map[id.ID]error {
	r.idxMu.RLock()
	defer r.idxMu.RUnlock()
	out := make(map[id.ID]error, len(r.damaged))
	for x, err := range r.damaged {
		out[x] = err
	}
	return out
}

// Size limits of objects whose length is recorded nowhere else (a blob's
// is in the index). Reading one allocates at most about twice its stored
// size limit for the stored bytes (loadLimited) plus its plaintext limit
// for the content (decodeObject); anything larger is refused with an error
// wrapping ErrTooLarge.
const (
	// maxObjectPlain bounds the plaintext of snapshot and tombstone
	// objects (and, as maxIndexPlainLen, of index objects).
	maxObjectPlain = MaxBlobSize
	// maxSmallObject bounds the stored size of the config and of key
	// slots, a few hundred bytes in practice.
	maxSmallObject = 1 << 20
)

// sealedLimit is the largest stored object that can hold plain bytes of
// plaintext: content is stored uncompressed when zstd does not shrink it.
func sealedLimit(plain int) int64 { return int64(plain) + 1 + sealOverhead }

// loadLimited loads the whole object h, refusing one of more than limit
// bytes (wrapping ErrTooLarge) after reading at most limit+1 of it and
// allocating at most about 2×limit.
func loadLimited(ctx context.Context, be tiers.Backend, h tiers.Handle, limit int64) ([]byte, error) {
	var out []byte
	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		b, err := readLimited(rd, limit)
		out = b
		return err
	})
	return out, err
}

// readLimited reads rd to its end into memory, failing with ErrTooLarge
// if more than limit bytes arrive. The buffer starts at 4 KiB or less and
// doubles up to exactly limit, so at most about 2×limit bytes are
// allocated in total; one byte past the limit is read to tell "exactly
// limit" from "too large".
func readLimited(rd io.Reader, limit int64) ([]byte, error) {
	start := limit
	for start > 4<<10 {
		start = (start + 1) / 2
	}
	b := make([]byte, 0, start)
	for {
		if len(b) == cap(b) {
			if int64(len(b)) >= limit {
				var one [1]byte
				n, err := io.ReadFull(rd, one[:])
				if n > 0 {
					return nil, fmt.Errorf("%w: more than %d bytes stored", ErrTooLarge, limit)
				}
				if err == io.EOF {
					return b, nil
				}
				return nil, err
			}
			nb := make([]byte, len(b), min(2*int64(cap(b)), limit))
			copy(nb, b)
			b = nb
		}
		n, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// loadVerified loads a content-addressed object of at most limit bytes
// and checks its name.
func (r *Repository) loadVerified(ctx context.Context, h tiers.Handle, limit int64) ([]byte, error) {
	want, err := id.Parse(h.Name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	raw, err := loadLimited(ctx, r.be, h, limit)
	if errors.Is(err, ErrTooLarge) {
		return nil, fmt.Errorf("load %s from %s: %w (%s)", h, r.be.Location(), err, objectHint(h.Type))
	}
	if err != nil {
		return nil, fmt.Errorf("load %s from %s: %w", h, r.be.Location(), err)
	}
	if id.Hash(raw) != want {
		return nil, fmt.Errorf("%s in %s: %w: content hash does not match its name", h, r.be.Location(), ErrCorrupt)
	}
	return raw, nil
}

// ErrCorrupt is wrapped when stored bytes fail verification.
var ErrCorrupt = errors.New("object corrupted")

// saveObject seals and stores a content-addressed metadata object.
func (r *Repository) saveObject(ctx context.Context, t tiers.Type, plain []byte) (id.ID, error) {
	sealed, _ := r.key.encodeBlob(objectKind(t), nil, nil, plain, CompressAuto)
	x := id.Hash(sealed)
	if err := tiers.PutBytes(ctx, r.be, tiers.Handle{Type: t, Name: x.String()}, sealed); err != nil {
		return id.ID{}, fmt.Errorf("store %s/%s in %s: %w", t, x.Short(), r.be.Location(), err)
	}
	r.statsMu.Lock()
	r.stats.StoredBytes += int64(len(sealed))
	r.statsMu.Unlock()
	return x, nil
}

// loadObject loads, verifies and opens a metadata object of at most limit
// bytes of plaintext. Its length is recorded nowhere, so the bound is
// enforced on the stored bytes and, before decompressing, on what the
// zstd frame headers allow (decodeObject).
func (r *Repository) loadObject(ctx context.Context, t tiers.Type, x id.ID, limit int) ([]byte, error) {
	h := tiers.Handle{Type: t, Name: x.String()}
	raw, err := r.loadVerified(ctx, h, sealedLimit(limit))
	if err != nil {
		return nil, err
	}
	plain, err := r.decodeObject(objectKind(t), raw, limit)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w (%s)", h, r.be.Location(), err, objectHint(t))
	}
	return plain, nil
}

// objectHint says what an operator can do about a metadata object of type
// t that drpipe refuses to read. Its name matches its content (checked
// first), so the object was stored like this: by a newer or faulty
// drpipe, or by someone else.
func objectHint(t tiers.Type) string {
	switch t {
	case tiers.TypeIndex:
		return "this drpipe cannot use the index object: unless a newer drpipe uses this repository, move the object out of it and run drpipe repair, which indexes its packs again"
	case tiers.TypeSnapshot:
		return "this drpipe cannot use the snapshot: upgrade drpipe if a newer one wrote it, otherwise move the object out of the repository"
	case tiers.TypeTombstone:
		return "this drpipe cannot use the tombstone: removing it is safe, the next prune condemns unused packs again"
	}
	return "this drpipe cannot use the object"
}

// Lookup returns every indexed location of blob x (several when concurrent
// writers stored it twice). Blobs of this session whose pack is not
// durable yet are not returned.
func (r *Repository) Lookup(x id.ID) []BlobLocation {
	r.idxMu.RLock()
	defer r.idxMu.RUnlock()
	var out []BlobLocation
	for _, t := range []BlobType{DataBlob, TreeBlob} {
		if pb, ok := r.pending[blobKey{t, x}]; ok && pb.pack != nil {
			out = append(out, BlobLocation{Pack: *pb.pack, Entry: pb.entry})
		}
	}
	var doomed []BlobLocation
	for d := range r.indexesLocked {
		d.lookup(x, func(p PackInfo, e BlobEntry) bool {
			if r.condemned[p.ID] {
				doomed = append(doomed, BlobLocation{Pack: p, Entry: e})
			} else {
				out = append(out, BlobLocation{Pack: p, Entry: e})
			}
			return true
		})
	}
	// Copies in packs condemned by prune are still readable until swept;
	// they come last.
	return append(out, doomed...)
}

// Has reports whether blob x of type t is stored or being stored by this
// session (a blob of the other type with the same id does not count, see
// hasLocked).
func (r *Repository) Has(t BlobType, x id.ID) bool {
	r.idxMu.RLock()
	defer r.idxMu.RUnlock()
	return r.hasLocked(t, x)
}

// hasLocked reports whether blob x of type t is stored or being stored by
// this session. A blob of the other type with the same plaintext, and so
// the same id, does not count: LoadBlob reads a blob as its own type only.
func (r *Repository) hasLocked(t BlobType, x id.ID) bool {
	if pb, ok := r.pending[blobKey{t, x}]; ok && (pb.pack == nil || !r.condemned[pb.pack.ID]) {
		return true
	}
	// A copy in a pack condemned by prune does not count: deduplicating
	// against it would let the sweep remove data a new snapshot needs.
	// Without the tombstones no copy counts.
	if r.condemnedErr != nil {
		return false
	}
	found := false
	for d := range r.indexesLocked {
		d.lookup(x, func(p PackInfo, e BlobEntry) bool {
			found = e.Type == t && !r.condemned[p.ID]
			return !found
		})
		if found {
			return true
		}
	}
	return false
}

// indexesLocked yields the mapped indexes lookups consult: the
// session's own (sessIdx, newest first), then the repository's cache.
// The caller holds idxMu.
func (r *Repository) indexesLocked(yield func(*diskIndex) bool) {
	for i := len(r.sessIdx) - 1; i >= 0; i-- {
		if !yield(r.sessIdx[i].diskIndex) {
			return
		}
	}
	yield(r.disk)
}

// BlobLocation is one place a blob is stored.
type BlobLocation struct {
	Pack  PackInfo
	Entry BlobEntry
}

// EachPack calls fn for every indexed pack (once per pack id) including
// packs written by this session.
func (r *Repository) EachPack(fn func(PackInfo) error) error {
	r.idxMu.RLock()
	defer r.idxMu.RUnlock()
	seen := map[id.ID]struct{}{}
	for d := range r.indexesLocked {
		err := d.eachPack(func(_ uint32, p PackInfo) error {
			if _, ok := seen[p.ID]; ok {
				return nil
			}
			seen[p.ID] = struct{}{}
			return fn(p)
		})
		if err != nil {
			return err
		}
	}
	for _, ip := range r.unindexedAndNew() {
		if _, ok := seen[ip.ID]; ok {
			continue
		}
		seen[ip.ID] = struct{}{}
		if err := fn(ip); err != nil {
			return err
		}
	}
	return nil
}

func (r *Repository) unindexedAndNew() []PackInfo {
	seen := map[id.ID]bool{}
	var out []PackInfo
	for _, pb := range r.pending {
		if pb.pack != nil && !seen[pb.pack.ID] {
			seen[pb.pack.ID] = true
			out = append(out, *pb.pack)
		}
	}
	return out
}

// EachBlob calls fn for every indexed blob location in the disk index
// (this session's new blobs excluded).
func (r *Repository) EachBlob(fn func(PackInfo, BlobEntry) error) error {
	r.idxMu.RLock()
	defer r.idxMu.RUnlock()
	return r.disk.eachBlob(fn)
}

func randRead(b []byte) (int, error) {
	n, err := rand.Read(b)
	if err != nil {
		return n, fmt.Errorf("read random bytes: %w", err)
	}
	return n, nil
}
