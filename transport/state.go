package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// StateDirName is the directory inside the site's repository directory
// where the site keeps what it learned from clients. The repository layer
// ignores it (it is not an object type directory, and it starts with '.').
const StateDirName = ".drpipe-site"

// SnapshotRecord is what the site knows about a snapshot it received. Host
// and Time are asserted by the client: the site cannot decrypt snapshots.
type SnapshotRecord struct {
	ID           string    `json:"id"`
	Host         string    `json:"host"`
	Time         time.Time `json:"time"`
	AssertedBy   string    `json:"asserted_by"` // always "client"
	Client       string    `json:"client"`      // certificate name of the sender
	ReplicatedAt time.Time `json:"replicated_at"`
	// SessionBytes is what the session that delivered the snapshot had
	// received when the snapshot committed (object bodies).
	SessionBytes int64 `json:"session_bytes"`
}

// ClientRecord accumulates what a primary has sent.
type ClientRecord struct {
	Name             string    `json:"name"`
	Sessions         int64     `json:"sessions"`
	LastSession      time.Time `json:"last_session"`
	LastSessionBytes int64     `json:"last_session_bytes"`
	BytesReceived    int64     `json:"bytes_received"`
	ObjectsReceived  int64     `json:"objects_received"`
}

// siteState stores records as small JSON files under StateDirName,
// durably (temp, fsync, rename, fsync dir). Safe for concurrent use.
type siteState struct {
	mu   sync.Mutex
	root *os.Root
}

func openState(repoDir string, create bool) (*siteState, error) {
	dir := filepath.Join(repoDir, StateDirName)
	if create {
		for _, d := range []string{dir, filepath.Join(dir, "snapshots"), filepath.Join(dir, "clients")} {
			if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("create site state directory %s: %w", d, err)
			}
		}
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open site state directory: %w", err)
	}
	return &siteState{root: r}, nil
}

func (s *siteState) close() error { return s.root.Close() }

func (s *siteState) writeJSON(rel string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path.Join(path.Dir(rel), ".tmp-"+path.Base(rel))
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write site state %s: %w", rel, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.root.Rename(tmp, rel)
	}
	if err != nil {
		_ = s.root.Remove(tmp)
		return fmt.Errorf("write site state %s: %w", rel, err)
	}
	if d, err := s.root.Open(path.Dir(rel)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (s *siteState) readJSON(rel string, v any) error {
	f, err := s.root.Open(rel)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// putSnapshot writes the record of a committed snapshot. Unless replace
// is set, a readable record the snapshot has already is kept; written
// reports whether r was written.
func (s *siteState) putSnapshot(r SnapshotRecord, replace bool) (written bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := path.Join("snapshots", r.ID+".json")
	if !replace {
		if _, err := s.readSnapshot(rel); err == nil {
			return false, nil
		}
	}
	if err := s.writeJSON(rel, r); err != nil {
		return false, err
	}
	return true, nil
}

// hasSnapshot reports whether the snapshot has a readable record.
func (s *siteState) hasSnapshot(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.readSnapshot(path.Join("snapshots", id+".json"))
	return err == nil
}

// readSnapshot reads the snapshot record file rel (s.mu held). A record
// whose id is not its file's (damaged state: a copy under another name)
// is an error, as an unreadable one is: it would count its snapshot
// twice and stand for a snapshot it does not describe.
func (s *siteState) readSnapshot(rel string) (SnapshotRecord, error) {
	var r SnapshotRecord
	if err := s.readJSON(rel, &r); err != nil {
		return r, err
	}
	if want := strings.TrimSuffix(path.Base(rel), ".json"); r.ID != want {
		return r, fmt.Errorf("site state %s: the record of snapshot %q, not of %s", rel, r.ID, want)
	}
	return r, nil
}

// removeSnapshot removes the record of a snapshot (best effort: a record
// of a snapshot the site does not hold is not shown).
func (s *siteState) removeSnapshot(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.root.Remove(path.Join("snapshots", name+".json"))
}

// addSession folds one session's counts into the client's record.
func (s *siteState) addSession(name string, at time.Time, bytes, objects int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rel := path.Join("clients", name+".json")
	var r ClientRecord
	if err := s.readJSON(rel, &r); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r = ClientRecord{} // unreadable: start over rather than fail the session
	}
	r.Name = name
	r.Sessions++
	r.LastSession = at
	r.LastSessionBytes = bytes
	r.BytesReceived += bytes
	r.ObjectsReceived += objects
	return s.writeJSON(rel, r)
}

func (s *siteState) list(dir string, each func(name string) error) error {
	d, err := s.root.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		if len(n) == 0 || n[0] == '.' || path.Ext(n) != ".json" {
			continue
		}
		if err := each(path.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// Status is the site's view of what it holds, per host and per client.
type Status struct {
	Site     string    `json:"site,omitempty"`
	Location string    `json:"location"`
	RepoID   string    `json:"repository_id,omitempty"`
	Now      time.Time `json:"now"`
	// Hosts: per host (as asserted by clients), the newest snapshot the
	// site holds completely.
	Hosts   []HostStatus   `json:"hosts"`
	Clients []ClientRecord `json:"clients"`
	// Snapshots counts snapshot objects; SnapshotsWithoutMeta those the
	// site has no client-asserted host and time for.
	Snapshots            int   `json:"snapshots"`
	SnapshotsWithoutMeta int   `json:"snapshots_without_meta"`
	Objects              int64 `json:"objects"`
	StoredBytes          int64 `json:"stored_bytes"`
}

// HostStatus is one host's replication state at the site.
type HostStatus struct {
	Host           string    `json:"host"`
	LatestSnapshot string    `json:"latest_snapshot"`
	SnapshotTime   time.Time `json:"snapshot_time"`
	ReplicatedAt   time.Time `json:"replicated_at"`
	// LagSeconds is Now - SnapshotTime: the data at risk if the primary
	// were lost now (the recovery point). A snapshot dated after it
	// reached the site (the primary's clock is ahead) counts from its
	// arrival instead, so a clock ahead does not hide a stale site.
	LagSeconds   float64 `json:"lag_s"`
	Snapshots    int     `json:"snapshots"`
	Client       string  `json:"client"`
	SessionBytes int64   `json:"session_bytes"`
	AssertedBy   string  `json:"asserted_by"`
}

// ReadStatus computes the status of the site repository in repoDir
// directly from disk (no server needed).
func ReadStatus(ctx context.Context, repoDir string, now time.Time) (*Status, error) {
	be, err := tiers.OpenLocal(repoDir)
	if err != nil {
		return nil, err
	}
	defer be.Close()
	st, err := openState(repoDir, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if st != nil {
		defer st.close()
	}
	return computeStatus(ctx, be, st, now)
}

func computeStatus(ctx context.Context, be tiers.Backend, st *siteState, now time.Time) (*Status, error) {
	out := &Status{Location: be.Location(), Now: now, Hosts: []HostStatus{}, Clients: []ClientRecord{}}
	if c, err := repo.ReadConfig(ctx, be); err == nil {
		out.RepoID = c.ID.String()
	}
	snaps := map[string]bool{}
	for _, t := range phaseTypes {
		err := be.List(ctx, t, func(oi tiers.ObjectInfo) error {
			out.Objects++
			out.StoredBytes += oi.Size
			if t == tiers.TypeSnapshot {
				snaps[oi.Handle.Name] = true
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("site status: %w", err)
		}
	}
	out.Snapshots = len(snaps)
	hosts := map[string]*HostStatus{}
	withMeta := 0
	if st != nil {
		st.mu.Lock()
		defer st.mu.Unlock()
		err := st.list("snapshots", func(rel string) error {
			r, err := st.readSnapshot(rel)
			if err != nil || !snaps[r.ID] {
				return nil // unreadable, or the snapshot object is gone
			}
			withMeta++
			h := hosts[r.Host]
			if h == nil {
				h = &HostStatus{Host: r.Host}
				hosts[r.Host] = h
			}
			h.Snapshots++
			if h.LatestSnapshot == "" || r.Time.After(h.SnapshotTime) {
				h.LatestSnapshot, h.SnapshotTime, h.ReplicatedAt = r.ID, r.Time, r.ReplicatedAt
				h.Client, h.SessionBytes, h.AssertedBy = r.Client, r.SessionBytes, r.AssertedBy
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("site status: read snapshot records: %w", err)
		}
		err = st.list("clients", func(rel string) error {
			var r ClientRecord
			if st.readJSON(rel, &r) == nil {
				out.Clients = append(out.Clients, r)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("site status: read client records: %w", err)
		}
	}
	out.SnapshotsWithoutMeta = out.Snapshots - withMeta
	for _, h := range hosts {
		from := h.SnapshotTime
		if !h.ReplicatedAt.IsZero() && h.ReplicatedAt.Before(from) {
			from = h.ReplicatedAt
		}
		h.LagSeconds = now.Sub(from).Seconds()
		out.Hosts = append(out.Hosts, *h)
	}
	sort.Slice(out.Hosts, func(i, j int) bool { return out.Hosts[i].Host < out.Hosts[j].Host })
	return out, nil
}

// loadSnapshotRecords returns the records of snapshots present in be
// (used to seed metrics at start-up).
func (s *siteState) loadSnapshotRecords() []SnapshotRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SnapshotRecord
	_ = s.list("snapshots", func(rel string) error {
		if r, err := s.readSnapshot(rel); err == nil {
			if _, err := id.Parse(r.ID); err == nil {
				out = append(out, r)
			}
		}
		return nil
	})
	return out
}
