package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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

// sessionRecord is the sealed content of a session object.
type sessionRecord struct {
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Started   time.Time `json:"started"`
	Refreshed time.Time `json:"refreshed"`
}

// Session is a running writer's announcement. End it when done.
type Session struct {
	r      *Repository
	h      tiers.Handle
	rec    sessionRecord
	stop   chan struct{}
	wg     sync.WaitGroup
	endErr error
	once   sync.Once
}

// BeginSession announces a writer and keeps the announcement fresh until
// End. It returns an error only if the session cannot be written at all.
func (r *Repository) BeginSession(ctx context.Context, host string) (*Session, error) {
	var nb [16]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, err
	}
	now := r.now().UTC()
	s := &Session{r: r, h: tiers.Handle{Type: tiers.TypeSession, Name: hex.EncodeToString(nb[:])},
		rec: sessionRecord{Host: host, PID: os.Getpid(), Started: now, Refreshed: now}, stop: make(chan struct{})}
	if err := s.put(ctx); err != nil {
		return nil, fmt.Errorf("announce backup session: %w", err)
	}
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
				s.rec.Refreshed = r.now().UTC()
				_ = s.put(ctx) // a missed refresh only makes prune more careful
			}
		}
	}()
	return s, nil
}

func (s *Session) put(ctx context.Context) error {
	b, err := json.Marshal(s.rec)
	if err != nil {
		return err
	}
	sealed, _ := s.r.key.encodeBlob(nil, nil, b, CompressOff)
	return tiers.PutBytes(ctx, s.r.be, s.h, sealed)
}

// End removes the session announcement.
func (s *Session) End(ctx context.Context) error {
	s.once.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.endErr = s.r.be.Remove(ctx, s.h)
	})
	return s.endErr
}

// liveSessions returns the sessions refreshed within SessionTTL; stale
// ones are removed as a side effect when clean is true.
func (r *Repository) liveSessions(ctx context.Context, clean bool) ([]sessionRecord, error) {
	var out []sessionRecord
	var stale []tiers.Handle
	now := r.now()
	err := r.be.List(ctx, tiers.TypeSession, func(oi tiers.ObjectInfo) error {
		raw, err := tiers.LoadAll(ctx, r.be, oi.Handle, 0, 0)
		if err != nil {
			return nil // removed meanwhile
		}
		plain, err := r.decodeBlob(nil, raw, -1, [32]byte{})
		if err != nil {
			return nil
		}
		var rec sessionRecord
		if json.Unmarshal(plain, &rec) != nil {
			return nil
		}
		if now.Sub(rec.Refreshed) > SessionTTL+ClockSkew {
			stale = append(stale, oi.Handle)
			return nil
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions in %s: %w", r.be.Location(), err)
	}
	if clean {
		for _, h := range stale {
			_ = r.be.Remove(ctx, h)
		}
	}
	return out, nil
}
