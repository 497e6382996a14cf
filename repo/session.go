package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// Sessions make lock-free writers and pruning safe together. A writer
// (backup) announces itself with a session object sessions/<random>,
// refreshed every SessionRefresh; prune's sweep never deletes packs it
// condemned while a session that started before the condemnation (minus
// ClockSkew) is still fresh, because that writer may have deduplicated
// against them. Sessions never block writers and are not copied to other
// tiers. A crashed writer's session goes stale after SessionTTL.
const (
	SessionRefresh = 2 * time.Minute
	SessionTTL     = 10 * time.Minute
	// ClockSkew is the tolerated clock difference between hosts sharing a
	// repository.
	ClockSkew = 5 * time.Minute
)

// sessionVersion is the format version of session records. Records
// written before sessions carried a version have no "version" field and
// are version 1.
const sessionVersion = 1

// maxSessionPlain bounds a session record's plaintext (real ones are about
// 150 bytes); a larger session object is not one this drpipe wrote.
const maxSessionPlain = 64 << 10

// sessionRecord is the sealed content of a session object.
type sessionRecord struct {
	Version   int       `json:"version"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Started   time.Time `json:"started"`
	Refreshed time.Time `json:"refreshed"`
	// Kind is "prune" for a prune's own announcement and empty for a
	// writer's. Older drpipe versions ignore the field and take a prune's
	// session for a backup's, which only postpones their sweeps.
	Kind string `json:"kind,omitempty"`

	name string // the session object's name, set by liveSessions
	// behind is set by liveSessions for a session live by the storage's
	// clock whose record looks stale: how old its last refresh reads,
	// about how far its writer's clock is behind this host's.
	behind time.Duration
}

// sessionPrune is the Kind of a prune's session.
const sessionPrune = "prune"

// sessionCopy is the kind of a copy's announcement in the repository it
// copies into (BeginCopySession).
const sessionCopy = "copy"

// Session is a running writer's announcement. End it when done.
type Session struct {
	r      *Repository
	h      tiers.Handle
	rec    sessionRecord
	stop   chan struct{}
	wg     sync.WaitGroup
	endErr error
	once   sync.Once

	mu     sync.Mutex
	lastOK time.Time // when the last record was stored (with its monotonic reading)
	lapsed error     // set once refreshes were further apart than SessionTTL
}

// BeginSession announces a writer and keeps the announcement fresh until
// End. It returns an error only if the session cannot be written at all.
func (r *Repository) BeginSession(ctx context.Context, host string) (*Session, error) {
	return r.beginSession(ctx, host, "")
}

// BeginCopySession announces a copy into r (a tier receiving snapshots
// with their data). A copy does not deduplicate: it skips the packs r
// already holds, condemned ones too, and writes snapshots naming them.
// While its session is live, no sweep removes a pack, whenever the copy
// began; the copy must Check the session before it writes index objects
// and snapshots.
//
// A prune that listed the sessions before this one was stored does not
// see it, so the copy looks for prunes after announcing itself (as a
// prune announces itself before it looks): of a copy and a prune started
// together at least one sees the other. A live prune session makes
// BeginCopySession end the announcement and fail with an error wrapping
// ErrPruneRunning.
func (r *Repository) BeginCopySession(ctx context.Context, host string) (*Session, error) {
	s, err := r.beginSession(ctx, host, sessionCopy)
	if err != nil {
		return nil, err
	}
	sessions, err := r.liveSessions(ctx, false, s.h.Name)
	if err == nil {
		for _, p := range sessions {
			if p.Kind == sessionPrune {
				err = fmt.Errorf("%w in %s (host %s, pid %d, since %s; session object sessions/%s): "+
					"a copy now could skip packs it is removing; run again once it has finished. If no prune is running, one was killed: its record expires %s after %s, or remove that object",
					ErrPruneRunning, r.be.Location(), p.Host, p.PID, p.Started.Format(time.RFC3339), p.name,
					SessionTTL+ClockSkew, p.Refreshed.Format(time.RFC3339))
				break
			}
		}
	}
	if err != nil {
		_ = s.End(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("announce copy session: %w", err)
	}
	return s, nil
}

// ErrPruneRunning is returned by BeginCopySession while a prune runs in
// the repository.
var ErrPruneRunning = errors.New("a prune is running")

func (r *Repository) beginSession(ctx context.Context, host, kind string) (*Session, error) {
	var nb [16]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, err
	}
	start := r.now()
	now := start.UTC()
	s := &Session{r: r, h: tiers.Handle{Type: tiers.TypeSession, Name: hex.EncodeToString(nb[:])},
		rec: sessionRecord{Version: sessionVersion, Host: host, PID: os.Getpid(), Started: now, Refreshed: now, Kind: kind}, stop: make(chan struct{})}
	if err := s.putAt(ctx, start); err != nil {
		what := "backup"
		if kind != "" {
			what = kind
		}
		return nil, fmt.Errorf("announce %s session: %w", what, err)
	}
	r.sessMu.Lock()
	if r.sessions == nil {
		r.sessions = map[*Session]struct{}{}
	}
	r.sessions[s] = struct{}{}
	r.sessMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(SessionRefresh)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				now := r.now()
				s.rec.Refreshed = now.UTC()
				// A missed refresh is retried on the next tick; too many
				// in a row make the session lapse (see Check).
				_ = s.putAt(ctx, now)
			}
		}
	}()
	return s, nil
}

func (s *Session) put(ctx context.Context) error {
	return s.putAt(ctx, s.r.now())
}

// putAt stores the session record, whose Refreshed time was read at now
// (a reading that keeps the monotonic clock; rec.Refreshed, in UTC, does
// not). Gaps are measured between these readings, taken before each
// write, not between the ends of the writes: a prune judges the session
// by the Refreshed time it reads, so a write that took minutes must not
// count as a refresh at its end.
func (s *Session) putAt(ctx context.Context, now time.Time) error {
	rec := s.rec
	rec.Version = sessionVersion // always the version this drpipe writes
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sealed, _ := s.r.key.encodeBlob(kindSession, nil, nil, b, CompressOff)
	if err := tiers.PutBytes(ctx, s.r.be, s.h, sealed); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gap := sinceWall(s.lastOK, now); !s.lastOK.IsZero() && gap > SessionTTL && s.lapsed == nil {
		s.lapsed = s.lapseError(gap)
	}
	s.lastOK = now
	return nil
}

// sinceWall returns how long after a b is, by the wall clock and by the
// monotonic clock, whichever is longer: a suspended host's monotonic
// clock stands still while prune on another host sees time pass.
func sinceWall(a, b time.Time) time.Duration {
	return max(b.Sub(a), b.Round(0).Sub(a.Round(0)))
}

func (s *Session) lapseError(gap time.Duration) error {
	if s.rec.Kind == sessionPrune {
		return fmt.Errorf("%w: this prune's session %s lapsed: it was not refreshed for %s (longer than %s; was the process suspended or %s unreachable?), "+
			"so another prune may have taken it for a crashed one and started; this prune stopped before changing more: run prune again",
			ErrPruneUnsafe, s.h.Name, gap.Round(time.Second), SessionTTL, s.r.be.Location())
	}
	if s.rec.Kind == sessionCopy {
		return fmt.Errorf("copy session %s lapsed: it was not refreshed for %s (longer than %s; was the process suspended or %s unreachable?), "+
			"so a prune there may have taken the copy for a crashed one and removed packs it skipped as present or stored before the index naming them; "+
			"the copy stops here: run it again (it stores what is missing)", s.h.Name, gap.Round(time.Second), SessionTTL, s.r.be.Location())
	}
	return fmt.Errorf("backup session %s lapsed: it was not refreshed for %s (longer than %s; was the process suspended or %s unreachable?), "+
		"so a prune may have taken the backup for a crashed one and removed data it deduplicated against; "+
		"no snapshot was written: run the backup again", s.h.Name, gap.Round(time.Second), SessionTTL, s.r.be.Location())
}

// Check reports whether the session has been announced without a gap
// since it began. It fails when refreshes were ever further apart than
// SessionTTL, or the last one is that old: prune may then have treated
// the session as stale and swept packs the writer deduplicated against,
// so the writer must not write a snapshot.
func (s *Session) Check() error {
	now := s.r.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lapsed != nil {
		return s.lapsed
	}
	if gap := sinceWall(s.lastOK, now); gap > SessionTTL {
		return s.lapseError(gap)
	}
	return nil
}

// checkSessions fails when a session begun on r lapsed (see Check). Packs
// stored before the gap may then have been swept by a prune as orphans, so
// no index object may name them any more.
func (r *Repository) checkSessions() error {
	r.sessMu.Lock()
	defer r.sessMu.Unlock()
	for s := range r.sessions {
		if err := s.Check(); err != nil {
			return err
		}
	}
	return nil
}

// Name is the name of the session object (sessions/<name>).
func (s *Session) Name() string { return s.h.Name }

// End removes the session announcement.
func (s *Session) End(ctx context.Context) error {
	s.once.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.r.sessMu.Lock()
		delete(s.r.sessions, s)
		s.r.sessMu.Unlock()
		s.endErr = s.r.be.Remove(ctx, s.h)
	})
	return s.endErr
}

// parseSessionRecord decodes a session record's plaintext. A record
// without a version (written before sessions carried one) is version 1;
// the version is not checked here.
func parseSessionRecord(b []byte) (sessionRecord, error) {
	rec := sessionRecord{Version: sessionVersion}
	if err := json.Unmarshal(b, &rec); err != nil {
		return sessionRecord{}, err
	}
	return rec, nil
}

// liveSessions returns the sessions refreshed within SessionTTL (plus
// ClockSkew); stale ones are removed as a side effect when clean is true.
//
// A session is stale only when both clocks that can tell say so: the
// refresh time in its record (its writer's clock, compared with this
// host's), and, where the storage keeps modification times and own names
// the caller's session object (written just before, so its time is the
// storage's "now"), the storage's times of the two objects. A writer
// whose clock is behind this host's by more than the tolerance would
// otherwise look crashed: its session would be removed and its packs
// swept while it deduplicates against them. Its object's storage time
// advances with every refresh, whatever its clock says. A crashed
// writer's does not, so it still goes stale.
//
// A session object that this drpipe cannot understand — a record version
// it does not know, or one that does not open, decode or parse — makes
// liveSessions fail with an error wrapping ErrPruneUnsafe (and, for an
// unknown version, ErrUnsupportedVersion) that names the object; nothing
// is removed then, not even stale sessions. Prune therefore refuses to run
// rather than treat such a session as a live one of unknown age, which
// would look safe but is not: it would only postpone sweeps, while this
// prune would still condemn and repack packs, rewrite index objects and
// remove stale sessions under rules the newer writer may have changed (it
// may depend on more than "packs condemned after I started stay", e.g.
// deduplicating against condemned packs, or protect objects other than
// packs); and since its refresh time cannot be trusted to mean what it
// means here, it could never be aged out, so every sweep would be
// postponed forever behind a "waiting for" line that tells the operator
// nothing. Refusing changes nothing in the repository and says what to
// do: prune with the newer drpipe, or remove the session object once no
// backup of the newer drpipe is running. Failing to read a session
// object for any other reason than its disappearance (a backup that ended)
// is an error too: skipping it would let prune delete packs its backup is
// using.
func (r *Repository) liveSessions(ctx context.Context, clean bool, own string) ([]sessionRecord, error) {
	var out []sessionRecord
	var stale []tiers.Handle
	var unknown []error
	now := r.now()
	maxSealed := sealedLimit(maxSessionPlain)
	// Sessions are few (one per running writer): list them all first,
	// to know the storage's time of the caller's own.
	var listed []tiers.ObjectInfo
	var storageNow time.Time
	err := r.be.List(ctx, tiers.TypeSession, func(oi tiers.ObjectInfo) error {
		listed = append(listed, oi)
		if own != "" && oi.Handle.Name == own {
			storageNow = oi.ModTime
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions in %s: %w", r.be.Location(), err)
	}
	for _, oi := range listed {
		h := oi.Handle
		if oi.Size > maxSealed {
			unknown = append(unknown, r.unreadableSession(h, fmt.Errorf("%w: %d bytes stored, a session object is at most %d", ErrTooLarge, oi.Size, maxSealed)))
			continue
		}
		raw, err := loadLimited(ctx, r.be, h, maxSealed)
		if errors.Is(err, tiers.ErrNotFound) {
			continue // the backup ended meanwhile
		}
		if errors.Is(err, ErrTooLarge) {
			unknown = append(unknown, r.unreadableSession(h, err))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read session %s: %w", h, err)
		}
		plain, err := r.decodeObject(kindSession, raw, maxSessionPlain)
		if err != nil {
			unknown = append(unknown, r.unreadableSession(h, err))
			continue
		}
		rec, err := parseSessionRecord(plain)
		if err != nil {
			unknown = append(unknown, r.unreadableSession(h, fmt.Errorf("malformed record: %w", err)))
			continue
		}
		if rec.Version < sessionVersion {
			unknown = append(unknown, r.unreadableSession(h, fmt.Errorf("%w: version %d, which no drpipe writes", ErrUnsupportedVersion, rec.Version)))
			continue
		}
		if rec.Version > sessionVersion {
			unknown = append(unknown, fmt.Errorf("%w: session object %s in %s has version %d, which this drpipe does not know (%w): "+
				"a newer drpipe is backing up into this repository and may depend on data prune would remove. "+
				"Prune with that newer drpipe, or, once you are sure no backup of it is running, remove %s and prune again",
				ErrPruneUnsafe, h, r.be.Location(), rec.Version, ErrUnsupportedVersion, h))
			continue
		}
		staleByRecord := now.Sub(rec.Refreshed) > SessionTTL+ClockSkew
		staleByStorage := storageNow.IsZero() || oi.ModTime.IsZero() || storageNow.Sub(oi.ModTime) > SessionTTL+ClockSkew
		if staleByRecord && staleByStorage {
			stale = append(stale, h)
			continue
		}
		if staleByRecord {
			rec.behind = now.Sub(rec.Refreshed)
		}
		rec.name = h.Name
		out = append(out, rec)
	}
	if len(unknown) > 0 {
		if len(unknown) > 1 {
			return nil, fmt.Errorf("%w (and %d more session objects this drpipe cannot read)", unknown[0], len(unknown)-1)
		}
		return nil, unknown[0]
	}
	if clean {
		for _, h := range stale {
			_ = r.be.Remove(ctx, h)
		}
	}
	return out, nil
}

// unreadableSession is the error for a session object that does not open,
// decode or parse: it may announce a backup of a newer drpipe.
func (r *Repository) unreadableSession(h tiers.Handle, why error) error {
	return fmt.Errorf("%w: session object %s in %s cannot be read (%w): it may announce a backup by a newer drpipe, which could depend on data prune would remove. "+
		"Prune with a newer drpipe, or, once you are sure no backup of a newer drpipe is running, remove %s and prune again",
		ErrPruneUnsafe, h, r.be.Location(), why, h)
}
