package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// SnapshotVersion is the format version of snapshot records.
const SnapshotVersion = 1

// Snapshot records one backup: who, when, what, and the root tree. It is
// stored sealed as snapshots/<sha256 of the stored bytes>, written only
// after every blob it references is durable and indexed.
type Snapshot struct {
	Version  int       `json:"version"`
	Time     time.Time `json:"time"`
	Host     string    `json:"host"`
	Tags     []string  `json:"tags,omitempty"`
	Paths    []string  `json:"paths"`
	Tree     id.ID     `json:"tree"`
	Parent   *id.ID    `json:"parent,omitempty"`
	Username string    `json:"username,omitempty"`
	Program  string    `json:"program,omitempty"`
	Summary  *Summary  `json:"summary,omitempty"`
	// Inventory is the VM inventory captured with the backup (package
	// drsite's model, stored opaquely here).
	Inventory json.RawMessage `json:"inventory,omitempty"`
	// Features names what the backup recorded beyond the first format
	// (FeatureXattrs), so a later backup knows what it may take over from
	// this one as its parent.
	Features []string `json:"features,omitempty"`

	id id.ID
}

// FeatureXattrs marks a snapshot whose nodes carry all of every entry's
// extended attributes that its user could see (an entry without the
// field has none); a backup that could not read some leaves it out.
const FeatureXattrs = "xattrs"

// Has reports whether the snapshot lists feature f.
func (s *Snapshot) Has(f string) bool { return slices.Contains(s.Features, f) }

// Summary records what a backup did.
type Summary struct {
	Files       int64   `json:"files"`
	Dirs        int64   `json:"dirs"`
	BytesRead   int64   `json:"bytes_read"`
	BytesTotal  int64   `json:"bytes_total"`
	BytesNew    int64   `json:"bytes_new"`
	BlobsNew    int64   `json:"blobs_new"`
	DurationSec float64 `json:"duration_s"`
}

// ID returns the snapshot's object id (set by Save and Load).
func (s *Snapshot) ID() id.ID { return s.id }

// SaveSnapshot stores s and sets its id. Call only after Flush.
func (r *Repository) SaveSnapshot(ctx context.Context, s *Snapshot) (id.ID, error) {
	if s.Tree.IsNull() {
		return id.ID{}, errors.New("save snapshot: no tree")
	}
	if len(r.Lookup(s.Tree)) == 0 {
		return id.ID{}, fmt.Errorf("save snapshot: tree %s is not durable yet (Flush first)", s.Tree.Short())
	}
	s.Version = SnapshotVersion
	b, err := json.Marshal(s)
	if err != nil {
		return id.ID{}, err
	}
	if len(b) > maxObjectPlain {
		return id.ID{}, fmt.Errorf("save snapshot: %w: the record is %d bytes (%d of them VM inventory), more than the %d bytes readers accept; "+
			"no snapshot was stored: back up with a smaller inventory", ErrTooLarge, len(b), len(s.Inventory), maxObjectPlain)
	}
	x, err := r.saveObject(ctx, tiers.TypeSnapshot, b)
	if err != nil {
		return id.ID{}, err
	}
	s.id = x
	return x, nil
}

// LoadSnapshot reads and verifies snapshot x.
func (r *Repository) LoadSnapshot(ctx context.Context, x id.ID) (*Snapshot, error) {
	b, err := r.loadObject(ctx, tiers.TypeSnapshot, x, maxObjectPlain)
	if err != nil {
		return nil, err
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("snapshot %s: malformed: %w", x.Short(), err)
	}
	if s.Version != SnapshotVersion {
		return nil, fmt.Errorf("snapshot %s: %w: version %d", x.Short(), ErrUnsupportedVersion, s.Version)
	}
	s.id = x
	return &s, nil
}

// ListSnapshotIDs lists snapshot object ids.
func (r *Repository) ListSnapshotIDs(ctx context.Context) ([]id.ID, error) {
	return r.listIDs(ctx, tiers.TypeSnapshot)
}

// listIDs lists the ids of the objects of type t (names that are not ids
// are passed over).
func (r *Repository) listIDs(ctx context.Context, t tiers.Type) ([]id.ID, error) {
	var out []id.ID
	err := r.be.List(ctx, t, func(oi tiers.ObjectInfo) error {
		if x, err := id.Parse(oi.Handle.Name); err == nil {
			out = append(out, x)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s/ in %s: %w", t, r.be.Location(), err)
	}
	return out, nil
}

// ListSnapshots loads every snapshot, oldest first. Snapshots that fail to
// load are returned as errors alongside the good ones.
func (r *Repository) ListSnapshots(ctx context.Context) ([]*Snapshot, error) {
	ids, err := r.ListSnapshotIDs(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Snapshot
	var errs []error
	for _, x := range ids {
		s, err := r.LoadSnapshot(ctx, x)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].id.Less(out[j].id)
	})
	return out, errors.Join(errs...)
}

// ErrNoSnapshot is wrapped when a snapshot reference matches nothing.
var ErrNoSnapshot = errors.New("no matching snapshot")

// ErrBadSnapshotRef is wrapped when a snapshot reference cannot name one
// snapshot whatever the repository holds (empty, not hex) or names more
// than one (an ambiguous prefix): the caller's argument is wrong.
var ErrBadSnapshotRef = errors.New("bad snapshot reference")

// FindSnapshot resolves a snapshot reference: a full id, a unique id
// prefix, or "latest" (newest), restricted to host when host is not
// empty: an id of another host's snapshot is then ErrNoSnapshot. latest is an error when some snapshot cannot be read, since
// that one may be the newest.
func (r *Repository) FindSnapshot(ctx context.Context, ref, host string) (*Snapshot, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, fmt.Errorf("%w: it is empty; give an id, a unique id prefix, or latest", ErrBadSnapshotRef)
	}
	if ref == "latest" {
		all, err := r.ListSnapshots(ctx)
		var newest *Snapshot
		for _, s := range all {
			if host != "" && s.Host != host {
				continue
			}
			if newest == nil || !s.Time.Before(newest.Time) {
				newest = s
			}
		}
		if newest == nil {
			if err != nil {
				return nil, fmt.Errorf("%w (some snapshots could not be read: %v)", ErrNoSnapshot, err)
			}
			if host != "" {
				return nil, fmt.Errorf("%w: no snapshot of host %q in %s", ErrNoSnapshot, host, r.be.Location())
			}
			return nil, fmt.Errorf("%w: %s has no snapshots", ErrNoSnapshot, r.be.Location())
		}
		if err != nil {
			// An unreadable snapshot may be the newest: latest would
			// silently be an older one (a restore of last week's data
			// that exits 0).
			return nil, fmt.Errorf("latest: some snapshots could not be read, so which is newest is not known; the newest readable one is %s (give its id to use it, or run 'drpipe check'): %w", newest.ID().Short(), err)
		}
		return newest, nil
	}
	x, err := r.FindSnapshotID(ctx, ref)
	if err != nil {
		return nil, err
	}
	sn, err := r.LoadSnapshot(ctx, x)
	if err != nil {
		return nil, err
	}
	if host != "" && sn.Host != host {
		return nil, fmt.Errorf("%w: snapshot %s is of host %q, not %q; leave out --host to use it, or give latest or an id of %q", ErrNoSnapshot, x.Short(), sn.Host, host, host)
	}
	return sn, nil
}

// FindSnapshotID resolves a full snapshot id or a unique id prefix (not
// latest) to the id of a stored snapshot without reading the snapshot, so
// that one that cannot be read can still be named.
func (r *Repository) FindSnapshotID(ctx context.Context, ref string) (id.ID, error) {
	ref = strings.ToLower(strings.TrimSpace(ref))
	if ref == "" {
		return id.ID{}, fmt.Errorf("%w: it is empty; give an id or a unique id prefix", ErrBadSnapshotRef)
	}
	for _, c := range ref {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return id.ID{}, fmt.Errorf("%w %q: it is neither latest nor a hex id prefix", ErrBadSnapshotRef, ref)
		}
	}
	if len(ref) > 2*len(id.ID{}) {
		return id.ID{}, fmt.Errorf("%w %q: longer than a snapshot id (%d hex digits)", ErrBadSnapshotRef, ref, 2*len(id.ID{}))
	}
	ids, err := r.ListSnapshotIDs(ctx)
	if err != nil {
		return id.ID{}, err
	}
	var match []id.ID
	for _, x := range ids {
		if strings.HasPrefix(x.String(), ref) {
			match = append(match, x)
		}
	}
	switch len(match) {
	case 0:
		return id.ID{}, fmt.Errorf("%w: no snapshot id starts with %q in %s", ErrNoSnapshot, ref, r.be.Location())
	case 1:
		return match[0], nil
	}
	return id.ID{}, fmt.Errorf("%w: prefix %q is ambiguous: it matches %d snapshots; give more digits", ErrBadSnapshotRef, ref, len(match))
}

// ForgetSnapshot removes a snapshot object. Its data stays until prune
// finds it unreferenced. A snapshot under retention (object lock) returns
// an error wrapping tiers.ErrLocked.
func (r *Repository) ForgetSnapshot(ctx context.Context, x id.ID) error {
	h := tiers.Handle{Type: tiers.TypeSnapshot, Name: x.String()}
	if err := r.be.Remove(ctx, h); err != nil {
		return fmt.Errorf("forget snapshot %s in %s: %w", x.Short(), r.be.Location(), err)
	}
	return nil
}
