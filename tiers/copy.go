package tiers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/drpipe/drpipe/internal/workpool"
)

// Copy errors.
var (
	// ErrCopyIncomplete: some objects could not be copied; the ones that
	// were are kept and a re-run copies the rest.
	ErrCopyIncomplete = errors.New("copy incomplete")
	// ErrDifferentRepository: the destination holds a config object with
	// other bytes than the source's, i.e. another repository.
	ErrDifferentRepository = errors.New("destination holds a different repository")
)

// CopyOptions configure Copy.
type CopyOptions struct {
	// Workers is the number of objects transferred at once (default 4).
	Workers int
	// MemLimit: objects up to this size are held in memory while they are
	// verified; larger ones are spooled to a temporary file in TempDir
	// (default 16 MiB). Memory is about Workers x MemLimit.
	MemLimit int64
	// TempDir for spooled objects (default os.TempDir()).
	TempDir string
	// DryRun compares the tiers and reports what would be copied.
	DryRun bool
	// Progress, if set, is told what is planned and what was transferred.
	Progress CopyProgress
	// BeforeIndex, if set, is called once the data is complete and before
	// the first index object is written, and again before the first
	// snapshot; an error stops the copy there (a copy session that
	// lapsed: a prune may have removed packs the index and snapshots
	// would name).
	BeforeIndex func() error
}

// CopyProgress receives Copy's progress. Its methods are called from
// several goroutines.
type CopyProgress interface {
	// Planned is called once per type, before its transfer starts, with
	// the number and total size of the objects to transfer.
	Planned(t Type, objects int, bytes int64)
	// Transferred is called after each object is stored at the
	// destination.
	Transferred(h Handle, bytes int64)
}

// CopyTypeStats counts one object type.
type CopyTypeStats struct {
	Source      int   `json:"source"`       // objects at the source
	SourceBytes int64 `json:"source_bytes"` // their bytes
	Present     int   `json:"present"`      // already at the destination (same name and size)
	Copied      int   `json:"copied"`       // transferred by this run
	CopiedBytes int64 `json:"copied_bytes"`
	Vanished    int   `json:"vanished"` // listed at the source but gone when read (removed meanwhile)
	Failed      int   `json:"failed"`
}

// CopyFailure is one object Copy could not copy.
type CopyFailure struct {
	Handle Handle
	Err    error
}

// CopyStats is the outcome of Copy.
type CopyStats struct {
	ByType   map[Type]*CopyTypeStats
	Total    CopyTypeStats
	Failures []CopyFailure // at most 100 are kept; Total.Failed counts all
	Duration time.Duration
}

// Copy copies to dst every object of src that dst lacks, so that dst
// becomes a replica of src; objects already at dst (same name and size)
// are not transferred, and nothing at dst is removed. It is idempotent and
// resumable: an interrupted copy leaves only complete objects behind (a
// Backend's Put is atomic) and a re-run transfers exactly what is still
// missing. Any two tiers work (local, S3, ...).
//
// Order: the source is listed metadata first (tombstones, snapshots,
// index, data, keys, config), so that every snapshot listed has its index
// and data in the later listings even while backups write to src; the
// objects are then transferred in CopyTypes order, one type after the
// other, so the destination holds a snapshot only after all the data and
// index objects it may reference.
//
// Every object is verified against its name while it is read from src
// (see ObjectVerifier) and is not stored if it fails; such failures, like
// unreadable objects (e.g. ErrNotReady from an archive class), are counted
// and reported, the rest of the copy goes on, and Copy returns an error
// wrapping ErrCopyIncomplete. So does an index object removed from src
// after it was listed (a prune rewrote the index): the copy stops before
// the snapshots, and a re-run copies the objects that replaced it. A
// config at dst that differs from src's is ErrDifferentRepository before
// anything is copied.
func Copy(ctx context.Context, src, dst Backend, o CopyOptions) (*CopyStats, error) {
	start := time.Now()
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.MemLimit <= 0 {
		o.MemLimit = 16 << 20
	}
	st := &CopyStats{ByType: make(map[Type]*CopyTypeStats)}
	defer func() { st.Duration = time.Since(start) }()

	srcObjs := make(map[Type]map[string]int64)
	for i := len(CopyTypes) - 1; i >= 0; i-- {
		t := CopyTypes[i]
		m, err := listSizes(ctx, src, t)
		if err != nil {
			return st, fmt.Errorf("copy from %s: %w", src.Location(), err)
		}
		srcObjs[t] = m
		ts := &CopyTypeStats{Source: len(m)}
		for _, n := range m {
			ts.SourceBytes += n
		}
		st.ByType[t] = ts
	}
	if err := sameConfig(ctx, src, dst); err != nil {
		return st, err
	}

	var (
		mu   sync.Mutex
		fail = func(h Handle, err error) {
			mu.Lock()
			defer mu.Unlock()
			st.ByType[h.Type].Failed++
			if len(st.Failures) < 100 {
				st.Failures = append(st.Failures, CopyFailure{h, err})
			}
		}
	)
	for _, t := range CopyTypes {
		ts := st.ByType[t]
		if (t == TypeIndex || t == TypeSnapshot) && o.BeforeIndex != nil && !o.DryRun {
			if err := o.BeforeIndex(); err != nil {
				st.sum()
				what := "the index and snapshots"
				if t == TypeSnapshot {
					what = "the snapshots"
				}
				return st, fmt.Errorf("copy to %s stopped before %s: %w", dst.Location(), what, err)
			}
		}
		have, err := listSizes(ctx, dst, t)
		if err != nil {
			return st, fmt.Errorf("copy to %s: %w", dst.Location(), err)
		}
		var missing []ObjectInfo
		var missingBytes int64
		for name, size := range srcObjs[t] {
			if got, ok := have[name]; ok && (got == size || t == TypeConfig) {
				ts.Present++
				continue
			}
			missing = append(missing, ObjectInfo{Handle: Handle{Type: t, Name: name}, Size: size})
			missingBytes += size
		}
		slices.SortFunc(missing, func(a, b ObjectInfo) int { return cmpString(a.Handle.Name, b.Handle.Name) })
		if o.Progress != nil {
			o.Progress.Planned(t, len(missing), missingBytes)
		}
		if o.DryRun || len(missing) == 0 {
			continue
		}
		workpool.Feed(ctx, min(o.Workers, len(missing)), len(missing), func(j int) {
			oi := missing[j]
			n, vanished, err := copyObject(ctx, src, dst, oi, o)
			switch {
			case vanished:
				mu.Lock()
				ts.Vanished++
				mu.Unlock()
			case err == nil:
				mu.Lock()
				ts.Copied++
				ts.CopiedBytes += n
				mu.Unlock()
				if o.Progress != nil {
					o.Progress.Transferred(oi.Handle, n)
				}
			default:
				fail(oi.Handle, err)
			}
		})
		if err := ctx.Err(); err != nil {
			st.sum()
			return st, fmt.Errorf("copy %s to %s: %w", src.Location(), dst.Location(), err)
		}
		if t == TypeIndex && ts.Vanished > 0 {
			// A prune of src rewrote the index: the objects that
			// replaced these came after the listing, and the snapshots
			// may need the packs only they list.
			st.sum()
			return st, fmt.Errorf("%w: %d index objects were removed from %s during the copy (a prune there rewrote the index); "+
				"stopped before the snapshots, which may need the index objects that replaced them: run the copy again", ErrCopyIncomplete, ts.Vanished, src.Location())
		}
		if ts.Failed > 0 && (t == TypeConfig || t == TypeKey || t == TypeData || t == TypeIndex) {
			// Metadata after a failed type could reference what is
			// missing; stop here, keeping the invariant.
			st.sum()
			return st, st.incomplete(src, dst, t)
		}
	}
	st.sum()
	if st.Total.Failed > 0 {
		return st, st.incomplete(src, dst, "")
	}
	return st, nil
}

func (st *CopyStats) sum() {
	st.Total = CopyTypeStats{}
	for _, ts := range st.ByType {
		st.Total.Source += ts.Source
		st.Total.SourceBytes += ts.SourceBytes
		st.Total.Present += ts.Present
		st.Total.Copied += ts.Copied
		st.Total.CopiedBytes += ts.CopiedBytes
		st.Total.Vanished += ts.Vanished
		st.Total.Failed += ts.Failed
	}
}

func (st *CopyStats) incomplete(src, dst Backend, stopped Type) error {
	var first error
	if len(st.Failures) > 0 {
		first = st.Failures[0].Err
	}
	msg := fmt.Sprintf("%d of %d objects could not be copied from %s to %s", st.Total.Failed, st.Total.Source, src.Location(), dst.Location())
	if stopped != "" {
		msg += fmt.Sprintf("; stopped after %s so that no metadata references missing objects", stopped)
	}
	return fmt.Errorf("%w: %s; first: %w", ErrCopyIncomplete, msg, first)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func listSizes(ctx context.Context, be Backend, t Type) (map[string]int64, error) {
	m := make(map[string]int64)
	err := be.List(ctx, t, func(oi ObjectInfo) error {
		m[oi.Handle.Name] = oi.Size
		return nil
	})
	return m, err
}

// sameConfig fails if dst holds a config other than src's.
func sameConfig(ctx context.Context, src, dst Backend) error {
	h := Handle{Type: TypeConfig, Name: "config"}
	d, err := LoadAll(ctx, dst, h, 0, 0)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("copy to %s: read its config: %w", dst.Location(), err)
	}
	s, err := LoadAll(ctx, src, h, 0, 0)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("copy from %s: it holds no config, but %s does: %w", src.Location(), dst.Location(), ErrDifferentRepository)
	}
	if err != nil {
		return fmt.Errorf("copy from %s: read its config: %w", src.Location(), err)
	}
	if !bytes.Equal(s, d) {
		return fmt.Errorf("copy %s to %s: %w (its config differs); copy into an empty location or a replica of this repository", src.Location(), dst.Location(), ErrDifferentRepository)
	}
	return nil
}

// maxConfigCopy bounds what a copy reads of a config object, whose size
// the listing may not give (it is replaced in place): a repository's
// config is a few hundred bytes, and drpipe reads at most 1 MiB of one.
const maxConfigCopy = 1 << 20

// copyObject reads oi from src while verifying it, holding it in memory or
// a temporary file, and stores it at dst. vanished reports an object gone
// from src since it was listed.
func copyObject(ctx context.Context, src, dst Backend, oi ObjectInfo, o CopyOptions) (n int64, vanished bool, err error) {
	h := oi.Handle
	v, err := NewObjectVerifier(h)
	if err != nil {
		return 0, false, err
	}
	var (
		mem  *bytes.Buffer
		file *os.File
	)
	if oi.Size <= o.MemLimit {
		mem = bytes.NewBuffer(make([]byte, 0, oi.Size))
	} else {
		file, err = os.CreateTemp(o.TempDir, "drpipe-copy-*")
		if err != nil {
			return 0, false, fmt.Errorf("copy %s: spool file: %w", h, err)
		}
		defer func() {
			file.Close()
			os.Remove(file.Name())
		}()
	}
	expect, limit := oi.Size, oi.Size
	if h.Type == TypeConfig {
		expect, limit = -1, maxConfigCopy // replaced in place; the listing may be stale
	}
	err = src.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		v.Reset()
		var w io.Writer
		if mem != nil {
			mem.Reset()
			w = mem
		} else {
			if _, err := file.Seek(0, io.SeekStart); err != nil {
				return err
			}
			if err := file.Truncate(0); err != nil {
				return err
			}
			w = file
		}
		// No more than the listing gave (and one byte to tell): an object
		// that grew, or that the source serves damaged and endless, must
		// not fill the memory or the spool disk.
		k, err := io.Copy(io.MultiWriter(w, v), io.LimitReader(rd, limit+1))
		if err == nil && k > limit {
			err = fmt.Errorf("it holds more than the %d bytes its listing gave: it is damaged or changed while copied; run the copy again, and drpipe check there if this persists", limit)
		}
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) && ctx.Err() == nil {
			return 0, true, nil
		}
		return 0, false, fmt.Errorf("copy %s: read from %s: %w", h, src.Location(), err)
	}
	if err := v.Check(expect); err != nil {
		return 0, false, fmt.Errorf("copy %s: %s holds a damaged object, not copied (run drpipe check and repair there): %w", h, src.Location(), err)
	}
	n = v.Written()
	var body io.ReadSeeker
	if mem != nil {
		body = bytes.NewReader(mem.Bytes())
	} else {
		body = io.NewSectionReader(file, 0, n)
	}
	if err := dst.Put(ctx, h, body, n); err != nil {
		return 0, false, fmt.Errorf("copy %s: store: %w", h, err)
	}
	return n, false, nil
}
