package repo

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/id"
)

// diskIndex is the local index cache: every pack and blob of the
// repository's index files in one sorted, memory-mapped file, so lookups
// cost a few page touches and the process holds no per-blob memory. This is
// what lets the chunk index scale to 10^8 chunks: the file is ~52 bytes per
// blob and the kernel's page cache decides what stays resident.
//
// File layout (cache only; rebuilt from the repository whenever missing or
// unreadable, so it carries its own version and no compatibility promise):
//
//	header 64 B: "DRPC" | version u32 | nIndexFiles u64 | nPacks u64 | nBlobs u64 |
//	             records crc u32 | header crc u32 | 24 B zero
//	nIndexFiles × id [32]          sorted: which index objects are included
//	fanout 65536 × u64             fanout[b] = number of blobs whose id's first two bytes are <= b
//	nPacks × packRec (48 B)        id | length u64 | shard size u32 | K u8 | M u8 | 2 B zero
//	nBlobs × blobRec (52 B)        id | pack no u32 | offset u32 | length u32 | raw length u32 | type u8 | 3 B zero
//	                               sorted by (id, pack no)
//
// The CRC-32C checksums cover the pack and blob records (records crc) and
// the header's first 36 bytes with the index file ids and the fanout
// (header crc). A cache that does not match them (blocks a power cut left
// unwritten, a disk error) is rebuilt: trusted, a pack missing from it
// would look like an orphan to prune.
type diskIndex struct {
	path       string
	mm         []byte
	nFiles     uint64
	nPacks     uint64
	nBlobs     uint64
	offFiles   int
	offFanout  int
	offPacks   int
	offBlobs   int
	indexFiles map[id.ID]struct{}

	// holdMu guards holds, the users that read the mapping without
	// idxMu (hold), and retired: close was called while one did, and
	// the last release unmaps.
	holdMu  sync.Mutex
	holds   int
	retired bool
}

const (
	cacheMagic    = "DRPC"
	cacheVersion  = 2
	cacheHdrSize  = 64
	fanoutEntries = 65536
	packRecSize   = 48
	blobRecSize   = 52
)

type blobRec [blobRecSize]byte

func (r *blobRec) id() (i id.ID)      { copy(i[:], r[:32]); return }
func (r *blobRec) packNo() uint32     { return binary.LittleEndian.Uint32(r[32:36]) }
func (r *blobRec) setPackNo(n uint32) { binary.LittleEndian.PutUint32(r[32:36], n) }
func (r *blobRec) entry() BlobEntry {
	return BlobEntry{
		ID:        r.id(),
		Offset:    binary.LittleEndian.Uint32(r[36:40]),
		Length:    binary.LittleEndian.Uint32(r[40:44]),
		RawLength: binary.LittleEndian.Uint32(r[44:48]),
		Type:      BlobType(r[48]),
	}
}

func makeBlobRec(e BlobEntry, packNo uint32) (r blobRec) {
	copy(r[:32], e.ID[:])
	binary.LittleEndian.PutUint32(r[32:36], packNo)
	binary.LittleEndian.PutUint32(r[36:40], e.Offset)
	binary.LittleEndian.PutUint32(r[40:44], e.Length)
	binary.LittleEndian.PutUint32(r[44:48], e.RawLength)
	r[48] = byte(e.Type)
	return r
}

func blobRecLess(a, b *blobRec) bool {
	if c := bytes.Compare(a[:32], b[:32]); c != 0 {
		return c < 0
	}
	return a.packNo() < b.packNo()
}

func encodePackRec(p PackInfo) (b [packRecSize]byte) {
	copy(b[:32], p.ID[:])
	binary.LittleEndian.PutUint64(b[32:40], uint64(p.Length))
	binary.LittleEndian.PutUint32(b[40:44], p.ShardSize)
	b[44], b[45] = p.K, p.M
	return b
}

func decodePackRec(b []byte) (p PackInfo) {
	copy(p.ID[:], b[:32])
	p.Length = int64(binary.LittleEndian.Uint64(b[32:40]))
	p.ShardSize = binary.LittleEndian.Uint32(b[40:44])
	p.K, p.M = b[44], b[45]
	return p
}

// openDiskIndex maps an existing cache file and verifies its checksums.
// Any inconsistency is an error; the caller then rebuilds.
func openDiskIndex(path string) (*diskIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < cacheHdrSize {
		return nil, errors.New("index cache: too short")
	}
	mm, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("index cache: mmap %s: %w", path, err)
	}
	d := &diskIndex{path: path, mm: mm}
	if err := d.parse(); err != nil {
		d.close()
		return nil, err
	}
	if err := d.verify(); err != nil {
		d.close()
		return nil, fmt.Errorf("%w in %s", err, path)
	}
	return d, nil
}

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// headerSum returns the header checksum of a cache file whose header,
// index file ids and fanout are hdr (up to the pack records).
func headerSum(hdr []byte) uint32 {
	return crc32.Update(crc32.Checksum(hdr[:36], crc32c), crc32c, hdr[cacheHdrSize:])
}

// verify checks the cache's checksums; parse must have succeeded. It reads
// the whole file.
func (d *diskIndex) verify() error {
	if binary.LittleEndian.Uint32(d.mm[36:40]) != headerSum(d.mm[:d.offPacks]) {
		return errors.New("index cache: header checksum mismatch")
	}
	if binary.LittleEndian.Uint32(d.mm[32:36]) != crc32.Checksum(d.mm[d.offPacks:], crc32c) {
		return errors.New("index cache: records checksum mismatch")
	}
	return nil
}

func (d *diskIndex) parse() error {
	h := d.mm
	if string(h[:4]) != cacheMagic || binary.LittleEndian.Uint32(h[4:8]) != cacheVersion {
		return errors.New("index cache: bad magic or version")
	}
	d.nFiles = binary.LittleEndian.Uint64(h[8:16])
	d.nPacks = binary.LittleEndian.Uint64(h[16:24])
	d.nBlobs = binary.LittleEndian.Uint64(h[24:32])
	size := uint64(len(h))
	want := uint64(cacheHdrSize) + d.nFiles*32 + fanoutEntries*8 + d.nPacks*packRecSize + d.nBlobs*blobRecSize
	if d.nFiles > size || d.nPacks > size || d.nBlobs > size || want != size {
		return fmt.Errorf("index cache: size %d does not match header (want %d)", size, want)
	}
	d.offFiles = cacheHdrSize
	d.offFanout = d.offFiles + int(d.nFiles)*32
	d.offPacks = d.offFanout + fanoutEntries*8
	d.offBlobs = d.offPacks + int(d.nPacks)*packRecSize
	if binary.LittleEndian.Uint64(d.mm[d.offFanout+(fanoutEntries-1)*8:]) != d.nBlobs {
		return errors.New("index cache: fanout does not match blob count")
	}
	// Lookups index the blob records with the fanout: it must never
	// decrease (so it never exceeds the blob count checked above).
	prev := uint64(0)
	for b := 0; b < fanoutEntries; b++ {
		v := binary.LittleEndian.Uint64(d.mm[d.offFanout+8*b:])
		if v < prev {
			return fmt.Errorf("index cache: fanout decreases at entry %d", b)
		}
		prev = v
	}
	d.indexFiles = make(map[id.ID]struct{}, d.nFiles)
	for i := 0; i < int(d.nFiles); i++ {
		var x id.ID
		copy(x[:], d.mm[d.offFiles+32*i:])
		d.indexFiles[x] = struct{}{}
	}
	return nil
}

// close unmaps the file, or once the last hold is released when a user
// holds it.
// files returns the index objects d holds; none for a nil d.
func (d *diskIndex) files() map[id.ID]struct{} {
	if d == nil {
		return nil
	}
	return d.indexFiles
}

func (d *diskIndex) close() {
	if d == nil {
		return
	}
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	if d.holds > 0 {
		d.retired = true
		return
	}
	d.unmap()
}

// hold keeps the mapping of d, the repository's cache when the caller
// read it under idxMu, until release, for a user that reads it without
// idxMu (prune's liveness): a LoadIndex meanwhile replaces the cache and
// closes d, and would unmap it under the reader.
func (d *diskIndex) hold() {
	if d == nil {
		return
	}
	d.holdMu.Lock()
	d.holds++
	d.holdMu.Unlock()
}

// release ends a hold; the last one unmaps d if it was closed meanwhile.
func (d *diskIndex) release() {
	if d == nil {
		return
	}
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	if d.holds--; d.holds == 0 && d.retired {
		d.unmap()
	}
}

func (d *diskIndex) unmap() {
	if d.mm != nil {
		_ = unix.Munmap(d.mm)
		d.mm = nil
	}
}

func (d *diskIndex) pack(n uint32) PackInfo {
	o := d.offPacks + int(n)*packRecSize
	return decodePackRec(d.mm[o : o+packRecSize])
}

func (d *diskIndex) blob(i uint64) *blobRec {
	o := d.offBlobs + int(i)*blobRecSize
	return (*blobRec)(d.mm[o : o+blobRecSize])
}

func (d *diskIndex) fanout(b int) uint64 {
	if b < 0 {
		return 0
	}
	return binary.LittleEndian.Uint64(d.mm[d.offFanout+8*b:])
}

// lookup calls fn for every (pack, entry) holding blob x.
func (d *diskIndex) lookup(x id.ID, fn func(PackInfo, BlobEntry) bool) {
	if d == nil || d.nBlobs == 0 {
		return
	}
	b := int(x[0])<<8 | int(x[1])
	lo, hi := d.fanout(b-1), d.fanout(b)
	i := lo + uint64(sort.Search(int(hi-lo), func(k int) bool {
		return bytes.Compare(d.blob(lo + uint64(k))[:32], x[:]) >= 0
	}))
	for ; i < hi; i++ {
		r := d.blob(i)
		if !bytes.Equal(r[:32], x[:]) {
			return
		}
		if uint64(r.packNo()) >= d.nPacks {
			continue // damaged record: the blob is not found there
		}
		if !fn(d.pack(r.packNo()), r.entry()) {
			return
		}
	}
}

// lookupRange returns the record positions [lo, hi) holding blob x.
func (d *diskIndex) lookupRange(x id.ID) (uint64, uint64) {
	if d == nil || d.nBlobs == 0 {
		return 0, 0
	}
	b := int(x[0])<<8 | int(x[1])
	lo, hi := d.fanout(b-1), d.fanout(b)
	first := lo + uint64(sort.Search(int(hi-lo), func(k int) bool {
		return bytes.Compare(d.blob(lo + uint64(k))[:32], x[:]) >= 0
	}))
	end := first
	for end < hi && bytes.Equal(d.blob(end)[:32], x[:]) {
		end++
	}
	return first, end
}

// eachPack calls fn for every pack record (duplicates possible).
func (d *diskIndex) eachPack(fn func(no uint32, p PackInfo) error) error {
	if d == nil {
		return nil
	}
	for n := uint64(0); n < d.nPacks; n++ {
		if err := fn(uint32(n), d.pack(uint32(n))); err != nil {
			return err
		}
	}
	return nil
}

// eachBlob calls fn for every blob record in id order.
func (d *diskIndex) eachBlob(fn func(p PackInfo, e BlobEntry) error) error {
	if d == nil {
		return nil
	}
	for i := uint64(0); i < d.nBlobs; i++ {
		r := d.blob(i)
		if uint64(r.packNo()) >= d.nPacks {
			return fmt.Errorf("index cache %s is damaged (blob record %d names pack %d of %d): remove it, drpipe rebuilds it from the repository", d.path, i, r.packNo(), d.nPacks)
		}
		if err := fn(d.pack(r.packNo()), r.entry()); err != nil {
			return err
		}
	}
	return nil
}

// buildDiskIndex writes a new cache file at path containing the index
// objects in want. load returning (nil, nil) means the object vanished; it
// is left out of the cache (the caller lists again). When old covers a subset of want, its records are
// merged with only the new index objects; otherwise everything is read
// again. Memory stays bounded by one sort run (runMaxRecords) regardless
// of repository size.
func buildDiskIndex(ctx context.Context, path string, old *diskIndex, want []id.ID, load func(context.Context, id.ID) (*IndexFile, error)) error {
	return buildDiskIndexWith(ctx, path, old, nil, want, load)
}

// buildDiskIndexWith is buildDiskIndex that also takes every pack and
// blob record of extra, a mapped index of some of want's objects, as they
// are (its records are sorted already), instead of reading those objects:
// two indexes merge without a read from storage and in bounded memory.
func buildDiskIndexWith(ctx context.Context, path string, old, extra *diskIndex, want []id.ID, load func(context.Context, id.ID) (*IndexFile, error)) error {
	slices.SortFunc(want, func(a, b id.ID) int { return bytes.Compare(a[:], b[:]) })
	reuse := old != nil
	if reuse {
		wantSet := make(map[id.ID]struct{}, len(want))
		for _, w := range want {
			wantSet[w] = struct{}{}
		}
		for f := range old.indexFiles {
			if _, ok := wantSet[f]; !ok {
				reuse = false // an index object was removed (prune/repair)
				break
			}
		}
	}
	var basePacks uint64
	var toRead []id.ID
	if !reuse {
		old = nil
	}
	for _, w := range want {
		if _, ok := extra.files()[w]; ok {
			continue
		}
		if _, ok := old.files()[w]; !ok {
			toRead = append(toRead, w)
		}
	}
	if old != nil {
		basePacks = old.nPacks
	}

	dir := filepath.Dir(path)
	removeStaleBuilds(dir, time.Now().Add(-StaleTempAge))
	tmpDir, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return fmt.Errorf("index cache: %w", err)
	}
	defer os.RemoveAll(tmpDir)

	// Pass 1: read the new index objects; packs go to a temp file, blob
	// records to sorted runs.
	packsF, err := os.Create(filepath.Join(tmpDir, "packs"))
	if err != nil {
		return err
	}
	defer packsF.Close()
	packsW := bufio.NewWriterSize(packsF, 1<<20)
	nNewPacks := uint64(0)
	var runs []string
	run := make([]blobRec, 0, min(runMaxRecords, 4096))
	flushRun := func() error {
		if len(run) == 0 {
			return nil
		}
		slices.SortFunc(run, func(a, b blobRec) int {
			if blobRecLess(&a, &b) {
				return -1
			}
			if blobRecLess(&b, &a) {
				return 1
			}
			return 0
		})
		name := filepath.Join(tmpDir, fmt.Sprintf("run-%d", len(runs)))
		f, err := os.Create(name)
		if err != nil {
			return err
		}
		w := bufio.NewWriterSize(f, 1<<20)
		for i := range run {
			w.Write(run[i][:])
		}
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		runs = append(runs, name)
		run = run[:0]
		return f.Close()
	}
	skipped := map[id.ID]bool{}
	for _, ixID := range toRead {
		if err := ctx.Err(); err != nil {
			return err
		}
		ix, err := load(ctx, ixID)
		if err != nil {
			return fmt.Errorf("index %s: %w", ixID.Short(), err)
		}
		if ix == nil {
			skipped[ixID] = true // vanished: superseded by a concurrent prune
			continue
		}
		for _, p := range ix.Packs {
			no := basePacks + nNewPacks
			if no >= 1<<32 {
				return errors.New("index cache: more than 2^32 packs")
			}
			rec := encodePackRec(p.PackInfo)
			packsW.Write(rec[:])
			nNewPacks++
			for _, e := range p.Blobs {
				run = append(run, makeBlobRec(e, uint32(no)))
				if len(run) == runMaxRecords {
					if err := flushRun(); err != nil {
						return err
					}
				}
			}
		}
	}
	if err := flushRun(); err != nil {
		return err
	}
	if extra != nil {
		// Its pack records as they are, numbered after those above;
		// its blob records, sorted, as one run with their packs
		// renumbered by as much (which keeps them sorted).
		base := basePacks + nNewPacks
		if base+extra.nPacks > 1<<32 {
			return errors.New("index cache: more than 2^32 packs")
		}
		packsW.Write(extra.mm[extra.offPacks:extra.offBlobs])
		nNewPacks += extra.nPacks
		name := filepath.Join(tmpDir, fmt.Sprintf("run-%d", len(runs)))
		f, err := os.Create(name)
		if err != nil {
			return err
		}
		w := bufio.NewWriterSize(f, 1<<20)
		for i := uint64(0); i < extra.nBlobs; i++ {
			r := *extra.blob(i)
			r.setPackNo(uint32(base + uint64(r.packNo())))
			w.Write(r[:])
		}
		err = w.Flush()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		runs = append(runs, name)
	}
	if err := packsW.Flush(); err != nil {
		return err
	}

	if len(skipped) > 0 {
		kept := want[:0:0]
		for _, w := range want {
			if !skipped[w] {
				kept = append(kept, w)
			}
		}
		want = kept
	}

	// Pass 2: write the new cache file.
	out, err := os.CreateTemp(dir, ".index-")
	if err != nil {
		return err
	}
	tmpName := out.Name()
	defer os.Remove(tmpName)
	defer out.Close()
	nPacks := basePacks + nNewPacks
	// Header and fanout are rewritten at the end; reserve their space.
	fanoutOff := int64(cacheHdrSize + 32*len(want))
	if _, err := out.Seek(fanoutOff+fanoutEntries*8, io.SeekStart); err != nil {
		return err
	}
	sum := crc32.New(crc32c)
	w := bufio.NewWriterSize(io.MultiWriter(out, sum), 1<<20)
	if old != nil {
		w.Write(old.mm[old.offPacks:old.offBlobs])
	}
	if _, err := packsF.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(w, packsF); err != nil {
		return err
	}
	fan := make([]uint64, fanoutEntries)
	nBlobs, err := mergeRuns(ctx, old, runs, func(r *blobRec) error {
		fan[int(r[0])<<8|int(r[1])]++
		_, err := w.Write(r[:])
		return err
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	hdr := make([]byte, 0, int(fanoutOff)+fanoutEntries*8)
	hdr = append(hdr, cacheMagic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, cacheVersion)
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(len(want)))
	hdr = binary.LittleEndian.AppendUint64(hdr, nPacks)
	hdr = binary.LittleEndian.AppendUint64(hdr, nBlobs)
	hdr = binary.LittleEndian.AppendUint32(hdr, sum.Sum32())
	hdr = append(hdr, make([]byte, cacheHdrSize-len(hdr))...)
	for _, x := range want {
		hdr = append(hdr, x[:]...)
	}
	var cum uint64
	for _, c := range fan {
		cum += c
		hdr = binary.LittleEndian.AppendUint64(hdr, cum)
	}
	binary.LittleEndian.PutUint32(hdr[36:40], headerSum(hdr))
	if _, err := out.WriteAt(hdr, 0); err != nil {
		return err
	}
	// Durable before it replaces the cache: renamed first, a power cut
	// could leave the new name on blocks never written.
	if err := out.Sync(); err != nil {
		return fmt.Errorf("index cache: %w", err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpName, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes the entries of directory dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("index cache: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("index cache: sync %s: %w", dir, err)
	}
	return nil
}

// removeStaleBuilds removes from the cache directory dir what builds
// killed mid-way left behind (sort run directories ".build-*", partial
// cache files ".index-*", session indexes ".session-*" not yet mapped
// and unlinked, see buildSessionIndex) when neither it nor anything in it was modified
// since before: a build in progress keeps writing them. It is best effort.
func removeStaleBuilds(dir string, before time.Time) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	recent := func(e fs.DirEntry) bool {
		fi, err := e.Info()
		return err != nil || !fi.ModTime().Before(before)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case (strings.HasPrefix(name, ".index-") || strings.HasPrefix(name, ".session-")) && e.Type().IsRegular():
			if !recent(e) {
				_ = os.Remove(filepath.Join(dir, name))
			}
		case strings.HasPrefix(name, ".build-") && e.IsDir():
			p := filepath.Join(dir, name)
			files, err := os.ReadDir(p)
			if err != nil || recent(e) || slices.ContainsFunc(files, recent) {
				continue
			}
			_ = os.RemoveAll(p)
		}
	}
}

// mergeRuns merges old's sorted records with the sorted run files and
// calls emit in order. It returns the number of records emitted. A run
// file that cannot be read to its end is an error: the cache would lack
// the records after the failure.
func mergeRuns(ctx context.Context, old *diskIndex, runs []string, emit func(*blobRec) error) (uint64, error) {
	h := &recHeap{}
	if old != nil && old.nBlobs > 0 {
		i := uint64(0)
		h.srcs = append(h.srcs, func(r *blobRec) (bool, error) {
			if i >= old.nBlobs {
				return false, nil
			}
			*r = *old.blob(i)
			i++
			return true, nil
		})
	}
	for _, name := range runs {
		f, err := os.Open(name)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		br := bufio.NewReaderSize(f, 1<<20)
		h.srcs = append(h.srcs, func(r *blobRec) (bool, error) {
			switch _, err := io.ReadFull(br, r[:]); {
			case err == io.EOF:
				return false, nil
			case err != nil:
				return false, fmt.Errorf("index cache: read sort run %s: %w", name, err)
			}
			return true, nil
		})
	}
	for i := range h.srcs {
		var r blobRec
		ok, err := h.srcs[i](&r)
		if err != nil {
			return 0, err
		}
		if ok {
			h.items = append(h.items, heapItem{rec: r, src: i})
		}
	}
	heap.Init(h)
	var n uint64
	for h.Len() > 0 {
		if n%(1<<16) == 0 {
			if err := ctx.Err(); err != nil {
				return n, err
			}
		}
		top := &h.items[0]
		if err := emit(&top.rec); err != nil {
			return n, err
		}
		n++
		ok, err := h.srcs[top.src](&top.rec)
		if err != nil {
			return n, err
		}
		if ok {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	return n, nil
}

type heapItem struct {
	rec blobRec
	src int
}

type recHeap struct {
	items []heapItem
	srcs  []func(*blobRec) (bool, error)
}

func (h *recHeap) Len() int           { return len(h.items) }
func (h *recHeap) Less(i, j int) bool { return blobRecLess(&h.items[i].rec, &h.items[j].rec) }
func (h *recHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *recHeap) Push(x any)         { h.items = append(h.items, x.(heapItem)) }
func (h *recHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}

// runMaxRecords bounds one in-memory sort run (52 MiB); a variable so tests
// can force external merging.
var runMaxRecords = 1 << 20
