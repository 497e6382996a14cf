package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/hugepage"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// packer accumulates sealed blobs of one type into a pack.
type packer struct {
	typ     BlobType
	mu      sync.Mutex
	buf     []byte
	entries []BlobEntry
}

var (
	scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}
	sealPool    = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}
)

// SaveBlob stores plain as a blob of type t unless a blob of type t with
// the same id is already stored or being stored. x is the blob's id if the caller
// already computed it (BlobID), else null. It returns the id and whether
// the blob was new. The blob is durable only after Flush returns.
//
// SaveBlob may block when pack uploads are behind (backpressure). It is
// safe for concurrent use.
func (r *Repository) SaveBlob(ctx context.Context, t BlobType, plain []byte, x id.ID) (id.ID, bool, error) {
	if !t.valid() {
		return id.ID{}, false, fmt.Errorf("save blob: invalid type %d", t)
	}
	if len(plain) > MaxBlobSize {
		return id.ID{}, false, fmt.Errorf("save blob: %d bytes exceeds the %d-byte blob limit", len(plain), MaxBlobSize)
	}
	if err := r.firstUploadErr(); err != nil {
		return id.ID{}, false, err
	}
	r.idxMu.RLock()
	cerr := r.condemnedErr
	r.idxMu.RUnlock()
	if cerr != nil {
		return id.ID{}, false, cerr
	}
	if x.IsNull() {
		x = r.BlobID(plain)
	}
	r.idxMu.Lock()
	if r.hasLocked(t, x) {
		r.idxMu.Unlock()
		return x, false, nil
	}
	r.pending[blobKey{t, x}] = pendingBlob{entry: BlobEntry{Type: t, ID: x, RawLength: uint32(len(plain))}}
	add := r.adds.start() // under idxMu: another writer taking x as saved may Flush
	r.idxMu.Unlock()
	return x, true, r.addBlob(ctx, t, plain, x, add)
}

// saveBlobCopy stores another copy of an existing blob (repacking).
func (r *Repository) saveBlobCopy(ctx context.Context, t BlobType, plain []byte, x id.ID) error {
	if err := r.firstUploadErr(); err != nil {
		return err
	}
	r.idxMu.Lock()
	if pb, ok := r.pending[blobKey{t, x}]; ok && (pb.pack == nil || !r.condemned[pb.pack.ID]) {
		r.idxMu.Unlock()
		return nil // already copied in this session
	}
	r.pending[blobKey{t, x}] = pendingBlob{entry: BlobEntry{Type: t, ID: x, RawLength: uint32(len(plain))}}
	add := r.adds.start()
	r.idxMu.Unlock()
	return r.addBlob(ctx, t, plain, x, add)
}

// addBlob compresses, seals and packs one blob, and ends add (r.adds)
// once the blob is in the packer.
func (r *Repository) addBlob(ctx context.Context, t BlobType, plain []byte, x id.ID, add uint64) error {

	sp := scratchPool.Get().(*[]byte)
	sb := sealPool.Get().(*[]byte)
	sealed, scratch := r.key.encodeBlob(kindBlob, (*sb)[:0], *sp, plain, r.comp)
	*sp = scratch
	scratchPool.Put(sp)
	defer func() { *sb = sealed[:0]; sealPool.Put(sb) }()

	r.statsMu.Lock()
	r.stats.Blobs++
	r.stats.BlobBytes += int64(len(plain))
	r.statsMu.Unlock()

	p := r.packers[t]
	p.mu.Lock()
	if p.buf == nil && t == DataBlob {
		// Tree packs mostly hold a few KiB: they grow as needed
		// instead of taking a pack buffer.
		p.buf = r.getPackBuf()
	}
	p.entries = append(p.entries, BlobEntry{Type: t, ID: x, Offset: uint32(len(p.buf)), Length: uint32(len(sealed)), RawLength: uint32(len(plain))})
	p.buf = append(p.buf, sealed...)
	r.adds.end(add)
	if len(p.buf) < r.cfg.PackSize && len(p.entries) < maxBlobsPerPack {
		p.mu.Unlock()
		return nil
	}
	// The pack is full (or lists as many blobs as a pack header may). Its upload slot is taken before the packer is let
	// go: while uploads are behind, the other writers wait here for the
	// packer instead of each filling and setting aside a pack of its own,
	// which held up to one pack buffer per backup worker.
	seq, err := r.acquireUpload(ctx)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	full, entries := p.buf, p.entries
	p.buf, p.entries = nil, nil
	p.mu.Unlock()
	r.launchPack(ctx, seq, full, entries)
	return nil
}

func (r *Repository) firstUploadErr() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.uploadErr
}

func (r *Repository) setUploadErr(err error) {
	r.errMu.Lock()
	if r.uploadErr == nil {
		r.uploadErr = err
	}
	r.errMu.Unlock()
}

// startPack takes an upload slot, waiting while Options.Uploads packs are
// in flight, and starts the pack's upload (launchPack).
func (r *Repository) startPack(ctx context.Context, buf []byte, entries []BlobEntry) error {
	seq, err := r.acquireUpload(ctx)
	if err != nil {
		return err
	}
	r.launchPack(ctx, seq, buf, entries)
	return nil
}

// acquireUpload takes one of the Options.Uploads upload slots, waiting
// for one to come free, and returns the upload's number. launchPack gives
// the slot back.
//
// The upload counts for Flush from here: a writer takes the slot with
// the packer held, so a Flush that gets the packer after it waits for
// the pack it handed over (whose other blobs were saved before).
func (r *Repository) acquireUpload(ctx context.Context) (uint64, error) {
	select {
	case r.uploadSem <- struct{}{}:
		return r.uploads.start(), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// launchPack seals the pack header, then erasure-codes and uploads the
// pack in the background, in the upload slot the caller took (seq).
func (r *Repository) launchPack(ctx context.Context, seq uint64, buf []byte, entries []BlobEntry) {
	hdr := r.key.sealAs(kindPackHeader, nil, encodePackHeader(entries))
	buf = append(buf, hdr...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(hdr)))
	buf = append(buf, packTrailerMagic...)
	go func() {
		defer r.uploads.end(seq)
		defer func() { <-r.uploadSem }()
		if err := r.uploadPack(ctx, buf, entries); err != nil {
			r.setUploadErr(err)
		}
	}()
}

// uploadTracker numbers the pack uploads (r.uploads), or the blobs on
// their way into a packer (r.adds), and tells when those started before
// a point have all ended. Unlike a sync.WaitGroup, whose Add from
// zero must not race a Wait, it lets writers start uploads while a Flush
// waits (a library user flushing beside its writers), and a wait does
// not take the uploads started after it.
type uploadTracker struct {
	mu      sync.Mutex
	next    uint64
	running map[uint64]struct{}
	ended   chan struct{} // made by a wait, closed when one ends
}

func (u *uploadTracker) start() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.running == nil {
		u.running = map[uint64]struct{}{}
	}
	seq := u.next
	u.next++
	u.running[seq] = struct{}{}
	return seq
}

func (u *uploadTracker) end(seq uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.running, seq)
	if u.ended != nil { // someone waits
		close(u.ended)
		u.ended = nil
	}
}

// wait returns once every upload started before the call has ended, or
// with ctx's error.
func (u *uploadTracker) wait(ctx context.Context) error {
	u.mu.Lock()
	limit := u.next
	for {
		busy := false
		for seq := range u.running { // at most Options.Uploads, or the writers
			if seq < limit {
				busy = true
				break
			}
		}
		if !busy {
			u.mu.Unlock()
			return nil
		}
		if u.ended == nil {
			u.ended = make(chan struct{})
		}
		ended := u.ended
		u.mu.Unlock()
		select {
		case <-ended:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		u.mu.Lock()
	}
}

func (r *Repository) uploadPack(ctx context.Context, pack []byte, entries []BlobEntry) error {
	defer r.putPackBuf(pack)
	sbuf := r.getShardBuf(len(pack))
	defer r.putShardBuf(sbuf)
	packID, shards, err := erasure.EncodeVersion(r.cfg.ShardVersion(), r.cfg.EC, pack, sbuf)
	if err != nil {
		return fmt.Errorf("erasure-code pack: %w", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(shards))
	for i, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(packID, i)}
			if err := r.be.Put(ctx, h, bytes.NewReader(s), int64(len(s))); err != nil {
				errs[i] = fmt.Errorf("store shard %d of pack %s in %s: %w", i, packID.Short(), r.be.Location(), err)
			}
		}()
	}
	wg.Wait()
	var stored int64
	for i, e := range errs {
		if e != nil {
			return e
		}
		stored += int64(len(shards[i]))
	}
	k := r.cfg.EC.K
	info := &PackInfo{ID: packID, Length: int64(len(pack)), ShardSize: uint32((len(pack) + k - 1) / k), K: uint8(k), M: uint8(r.cfg.EC.M)}
	r.idxMu.Lock()
	for _, e := range entries {
		r.pending[blobKey{e.Type, e.ID}] = pendingBlob{pack: info, entry: e}
	}
	r.unindexed = append(r.unindexed, IndexPack{PackInfo: *info, Blobs: entries})
	due := len(r.unindexed) >= r.opts.IndexEvery || r.now().Sub(r.lastIndex) >= r.opts.IndexInterval
	r.idxMu.Unlock()
	r.statsMu.Lock()
	r.stats.Packs++
	r.stats.PackedBytes += int64(len(pack))
	r.stats.StoredBytes += stored
	r.statsMu.Unlock()
	if due {
		return r.writePendingIndex(ctx)
	}
	return nil
}

// writePendingIndex writes one index object for all durable, unindexed
// packs.
func (r *Repository) writePendingIndex(ctx context.Context) error {
	r.indexing.Lock()
	defer r.indexing.Unlock()
	r.idxMu.Lock()
	packs := r.unindexed
	r.unindexed = nil
	r.lastIndex = r.now()
	r.idxMu.Unlock()
	if len(packs) == 0 {
		return nil
	}
	// A writer whose session lapsed may have been taken for a crashed one:
	// a prune may have removed these packs as orphans meanwhile. An index
	// object naming them would make every other backup deduplicate
	// against blobs that are gone.
	err := r.checkSessions()
	if err != nil {
		err = fmt.Errorf("%d packs stored in %s left unindexed: %w", len(packs), r.be.Location(), err)
	}
	var ids []id.ID
	var parts []*IndexFile
	if err == nil {
		ids, parts, err = r.saveIndexParts(ctx, &IndexFile{Packs: packs})
	}
	if err != nil {
		r.idxMu.Lock()
		r.unindexed = append(packs, r.unindexed...)
		r.idxMu.Unlock()
		return err
	}
	r.idxMu.Lock()
	for i, x := range ids {
		r.indexSeq++
		r.toFold[x] = foldObject{f: parts[i], seq: r.indexSeq}
		for _, p := range parts[i].Packs {
			r.foldBlobs += len(p.Blobs)
		}
	}
	due := r.foldBlobs >= r.opts.FoldEvery
	r.idxMu.Unlock()
	if due {
		r.foldPending(ctx)
	}
	return nil
}

// SaveIndexFile stores f as an index object and returns its id. An index
// whose encoding would exceed the limit readers enforce (MaxBlobSize) is
// stored as several objects, each holding whole packs; the last one
// written carries f.Supersedes, so superseded objects are only removable
// once all parts are durable. The id returned is that last one's.
func (r *Repository) SaveIndexFile(ctx context.Context, f *IndexFile) (id.ID, error) {
	ids, _, err := r.saveIndexParts(ctx, f)
	if err != nil {
		return id.ID{}, err
	}
	return ids[len(ids)-1], nil
}

// saveIndexParts stores f as SaveIndexFile does and returns each object
// written with its part of f.
func (r *Repository) saveIndexParts(ctx context.Context, f *IndexFile) ([]id.ID, []*IndexFile, error) {
	parts, err := splitIndex(f, maxIndexPlainLen)
	if err != nil {
		return nil, nil, fmt.Errorf("store index in %s: %w", r.be.Location(), err)
	}
	ids := make([]id.ID, 0, len(parts))
	for _, p := range parts {
		x, err := r.saveObject(ctx, tiers.TypeIndex, encodeIndex(p))
		if err != nil {
			return nil, nil, err
		}
		ids = append(ids, x)
		r.statsMu.Lock()
		r.stats.Indexes++
		r.statsMu.Unlock()
	}
	return ids, parts, nil
}

// splitIndex splits f into index files that each encode to at most limit
// bytes, keeping packs whole and in order; only the last part carries
// f.Supersedes (alone, if it does not fit beside the packs). It fails if
// one pack, or the Supersedes list, does not fit in an object by itself.
func splitIndex(f *IndexFile, limit int) ([]*IndexFile, error) {
	const fixed = 8 + 4 + 4 // magic and version, nSupersedes, nPacks
	supers := 32 * len(f.Supersedes)
	if fixed+supers > limit {
		return nil, fmt.Errorf("%d superseded index objects exceed the %d-byte index object limit", len(f.Supersedes), limit)
	}
	var parts []*IndexFile
	cur := &IndexFile{}
	size := fixed
	for _, p := range f.Packs {
		n := indexPackFixed + indexBlobSize*len(p.Blobs)
		if fixed+n > limit {
			return nil, fmt.Errorf("pack %s lists %d blobs: its index entry alone exceeds the %d-byte index object limit", p.ID.Short(), len(p.Blobs), limit)
		}
		if size+n > limit {
			parts = append(parts, cur)
			cur, size = &IndexFile{}, fixed
		}
		cur.Packs = append(cur.Packs, p)
		size += n
	}
	if size+supers > limit {
		parts = append(parts, cur)
		cur = &IndexFile{}
	}
	cur.Supersedes = f.Supersedes
	return append(parts, cur), nil
}

// Flush makes every blob saved so far durable: it closes the open packs,
// waits for all uploads and writes an index object for them. After Flush
// returns nil, a snapshot may reference any blob saved before the call.
func (r *Repository) Flush(ctx context.Context) error {
	// A blob another writer took as saved may still be sealed on its
	// way into a packer (SaveBlob found it pending): it is packed first.
	if err := r.adds.wait(ctx); err != nil {
		return err
	}
	for _, p := range r.packers {
		if p == nil {
			continue
		}
		p.mu.Lock()
		if len(p.entries) == 0 {
			p.mu.Unlock()
			continue
		}
		// The upload slot is taken before the pack leaves the packer: a
		// Flush stopped while it waits leaves the pack to the next one,
		// instead of dropping blobs that count as stored.
		seq, err := r.acquireUpload(ctx)
		if err != nil {
			p.mu.Unlock()
			return err
		}
		buf, entries := p.buf, p.entries
		p.buf, p.entries = nil, nil
		p.mu.Unlock()
		r.launchPack(ctx, seq, buf, entries)
	}
	// Without ctx: the uploads end with the contexts they started with.
	_ = r.uploads.wait(context.Background())
	if err := r.firstUploadErr(); err != nil {
		return err
	}
	return r.writePendingIndex(ctx)
}

// IndexStored writes an index object for the packs whose upload completed
// and that no index object lists yet, without closing the open packs:
// what an interrupted writer leaves for the next run to deduplicate
// against, instead of orphans a prune removes. It waits for the uploads
// under way (which end soon once their context is cancelled) as long as
// ctx lets it: an upload hung on a storage that does not answer fails it
// with ctx's error, indexing nothing. The index is written with ctx,
// which should not be the cancelled one.
func (r *Repository) IndexStored(ctx context.Context) error {
	if err := r.uploads.wait(ctx); err != nil {
		return fmt.Errorf("packs still being stored in %s: %w", r.be.Location(), err)
	}
	return r.writePendingIndex(ctx)
}

// maxPackLen is the length of the largest pack a writer of a repository
// with config c stores: its blobs stop at c.PackSize, except for the last
// one (at most MaxBlobSize, sealed), followed by a sealed header of at
// most maxBlobsPerPack entries and the trailer.
func maxPackLen(c *Config) int64 {
	lastBlob := int64(1 + MaxBlobSize + sealOverhead)
	header := int64(sealOverhead + 12 + maxBlobsPerPack*packEntrySize)
	return int64(c.PackSize) - 1 + lastBlob + header + packTrailerSize
}

// packBufSize is the size of a pack buffer: the pack size and room for
// the blob that overfills it, mostly.
func packBufSize(c *Config) int { return c.PackSize + c.PackSize/8 }

// Pack and shard buffers are recycled: a backup allocates a handful of
// them instead of one per pack, which keeps the heap (and RSS) flat.
func (r *Repository) getPackBuf() []byte { return r.packBufs.Get()[:0] }

func (r *Repository) putPackBuf(b []byte) {
	if cap(b) <= 2*r.cfg.PackSize {
		r.packBufs.Put(b)
	}
}

func (r *Repository) getShardBuf(packLen int) []byte {
	need := erasure.EncodedSize(r.cfg.EC, packLen)
	if need <= erasure.EncodedSize(r.cfg.EC, packBufSize(r.cfg)) {
		return r.shardBufs.Get()[:0]
	}
	// A pack beyond the usual size (a large last blob): a buffer of its
	// own, kept afterwards if the pool has room.
	return hugepage.MakeCap(need)
}

func (r *Repository) putShardBuf(b []byte) { r.shardBufs.Put(b) }
