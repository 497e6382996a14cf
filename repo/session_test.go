package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// sweepOpts sweeps tombstones older than an hour; no repacking, so that a
// prune changes the repository only by sweeping.
var sweepOpts = PruneOptions{Grace: time.Hour, GraceSet: true, RepackBelow: -1, RepackBelowSet: true}

// clockedRepo creates a small-pack 2+1 repository on be whose clock reads
// *clock (2026-01-01 00:00 UTC to start with).
func clockedRepo(t *testing.T, be tiers.Backend) (*Repository, *time.Time) {
	t.Helper()
	c := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := &c
	if m, ok := be.(interface{ SetClock(func() time.Time) }); ok {
		m.SetClock(func() time.Time { return *clock }) // the storage's times follow the repository's clock
	}
	r, err := Init(context.Background(), be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
		Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: testKDF, Now: func() time.Time { return *clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, clock
}

// sweepFixture returns a repository on be whose first snapshot was
// forgotten and whose unused packs were condemned at mark, two hours
// before the repository clock (*clock) now stands: the next prune with
// sweepOpts removes them unless a session blocks it.
func sweepFixture(t *testing.T, be tiers.Backend) (r *Repository, clock *time.Time, mark time.Time) {
	t.Helper()
	ctx := context.Background()
	r, clock = clockedRepo(t, be)
	rng := rand.New(rand.NewPCG(5, 5))
	s1, _ := snap(t, r, rng, 40, nil)
	snap(t, r, rng, 5, nil)
	if err := r.ForgetSnapshot(ctx, s1); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Prune(ctx, sweepOpts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Condemned == 0 || rep.Removed != 0 {
		t.Fatalf("fixture: condemned %d removed %d, want > 0 and 0", rep.Condemned, rep.Removed)
	}
	mark = *clock
	*clock = clock.Add(2 * time.Hour)
	return r, clock, mark
}

// putSession stores plain as session object name, sealed as Session.put
// seals records (or, when raw, stored as it is).
func putSession(t *testing.T, r *Repository, name string, plain []byte, raw bool) tiers.Handle {
	t.Helper()
	h := tiers.Handle{Type: tiers.TypeSession, Name: name}
	sealed := plain
	if !raw {
		sealed, _ = r.key.encodeBlob(kindSession, nil, nil, plain, CompressOff)
	}
	if err := tiers.PutBytes(context.Background(), r.be, h, sealed); err != nil {
		t.Fatal(err)
	}
	return h
}

// repoState lists every object of be with its size.
func repoState(t *testing.T, be tiers.Backend) map[tiers.Handle]int64 {
	t.Helper()
	m := map[tiers.Handle]int64{}
	for _, typ := range tiers.AllTypes {
		err := be.List(context.Background(), typ, func(oi tiers.ObjectInfo) error {
			m[oi.Handle] = oi.Size
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// TestSessionRecordVersion: a backup session announces itself with a
// version-1 record, and every refresh writes that version whatever the
// in-memory record says.
func TestSessionRecordVersion(t *testing.T) {
	ctx := context.Background()
	r := newFuzzRepo(t, t.TempDir())
	defer r.Close()
	stored := func(h tiers.Handle) any {
		t.Helper()
		raw, err := tiers.LoadAll(ctx, r.be, h, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := r.decodeObject(kindSession, raw, maxSessionPlain)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(plain, &m); err != nil {
			t.Fatal(err)
		}
		return m["version"]
	}
	s, err := r.BeginSession(ctx, "hv01")
	if err != nil {
		t.Fatal(err)
	}
	defer s.End(ctx)
	if v := stored(s.h); v != float64(1) {
		t.Errorf("BeginSession stored version %v, want 1", v)
	}
	live, err := r.liveSessions(ctx, false, "")
	if err != nil || len(live) != 1 || live[0].Version != 1 || live[0].Host != "hv01" {
		t.Fatalf("liveSessions = %+v, %v", live, err)
	}
	refresh := &Session{r: r, h: tiers.Handle{Type: tiers.TypeSession, Name: "refresh"}, rec: sessionRecord{Host: "hv02", Refreshed: fuzzNow}}
	if err := refresh.put(ctx); err != nil {
		t.Fatal(err)
	}
	if v := stored(refresh.h); v != float64(1) {
		t.Errorf("put stored version %v, want 1", v)
	}
}

// TestOldSessionRecordWithoutVersion: a record written before sessions
// carried a version is read as version 1 and blocks the sweep like any
// session that started before the mark.
func TestOldSessionRecordWithoutVersion(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewMemory()
	r, clock, mark := sweepFixture(t, be)
	old := fmt.Sprintf(`{"host":"old-release","pid":77,"started":%q,"refreshed":%q}`, rfc3339(mark.Add(-time.Hour)), rfc3339(*clock))
	h := putSession(t, r, "0123456789abcdef0123456789abcdef", []byte(old), false)
	live, err := r.liveSessions(ctx, false, "")
	if err != nil {
		t.Fatal(err)
	}
	want := sessionRecord{Version: 1, Host: "old-release", PID: 77, Started: mark.Add(-time.Hour), Refreshed: *clock, name: h.Name}
	if len(live) != 1 || !reflect.DeepEqual(live[0], want) {
		t.Fatalf("liveSessions = %+v, want [%+v]", live, want)
	}
	rep, err := r.Prune(ctx, sweepOpts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 0 || rep.Postponed == 0 || len(rep.WaitingFor) != 1 || !strings.Contains(rep.WaitingFor[0], "old-release (pid 77)") {
		t.Fatalf("with an unversioned session from before the mark: removed %d postponed %d waiting for %q", rep.Removed, rep.Postponed, rep.WaitingFor)
	}
	if err := be.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}
	if rep, err = r.Prune(ctx, sweepOpts); err != nil || rep.Removed == 0 {
		t.Fatalf("after the session ended: removed %d, %v", rep.Removed, err)
	}
}

// TestPruneRefusesSessionItCannotRead: a session object of a version this
// drpipe does not know, or one it cannot open, decode or parse, may
// announce a backup of a newer drpipe. Prune (also a dry run) refuses,
// names the object, and changes nothing — not even stale sessions are
// removed — even where a version-1 session like it would not block.
func TestPruneRefusesSessionItCannotRead(t *testing.T) {
	const name = "fedcba9876543210fedcba9876543210"
	type build func(r *Repository, now time.Time) (plain []byte, raw bool)
	record := func(format string) build {
		return func(_ *Repository, now time.Time) ([]byte, bool) {
			return []byte(strings.ReplaceAll(format, "NOW", rfc3339(now))), false
		}
	}
	for _, tc := range []struct {
		name  string
		build build
		want  []error
		text  string
	}{
		{"newer version", record(`{"version":2,"host":"hv9","pid":1,"started":"NOW","refreshed":"NOW"}`), []error{ErrUnsupportedVersion}, "a newer drpipe is backing up"},
		{"newer version, refreshed long ago", record(`{"version":3,"host":"hv9","refreshed":"2000-01-01T00:00:00Z"}`), []error{ErrUnsupportedVersion}, "has version 3"},
		{"newer version, other fields", record(`{"version":2,"lease":{"until":"NOW"}}`), []error{ErrUnsupportedVersion}, "has version 2"},
		{"version 0", record(`{"version":0,"host":"hv9","started":"NOW","refreshed":"NOW"}`), []error{ErrUnsupportedVersion}, "version 0, which no drpipe writes"},
		{"malformed", record(`{"version":1,"host":`), nil, "malformed record"},
		{"wrong type", record(`{"version":1,"started":42}`), nil, "malformed record"},
		{"not sealed", func(*Repository, time.Time) ([]byte, bool) { return []byte(`{"version":1}`), true }, []error{ErrDecrypt}, "cannot be read"},
		{"unknown compression", func(r *Repository, _ time.Time) ([]byte, bool) {
			return r.key.sealAs(kindSession, nil, []byte{9, '{', '}'}), true
		}, nil, "unknown compression id 9"},
		{"zstd bomb", func(r *Repository, _ time.Time) ([]byte, bool) {
			return r.key.sealAs(kindSession, nil, append([]byte{compZstd}, zstdRLEFrame(MaxBlobSize/(128<<10)+1)...)), true
		}, []error{ErrTooLarge}, "cannot be read"},
		{"too large", func(r *Repository, _ time.Time) ([]byte, bool) {
			return []byte(`{"version":1,"host":"` + strings.Repeat("x", maxSessionPlain) + `"}`), false
		}, []error{ErrTooLarge}, "a session object is at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			be := tierstest.NewMemory()
			r, clock, _ := sweepFixture(t, be)
			plain, raw := tc.build(r, *clock)
			h := putSession(t, r, name, plain, raw)
			// A crashed writer's session: refreshed long ago, by its record
			// and by the storage's clock.
			stale := `{"version":1,"host":"gone","started":"2025-01-01T00:00:00Z","refreshed":"2025-01-01T00:00:00Z"}`
			now := *clock
			*clock = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
			staleH := putSession(t, r, "00000000000000000000000000000000", []byte(stale), false)
			*clock = now
			before := repoState(t, be)
			for _, dry := range []bool{true, false} {
				o := sweepOpts
				o.DryRun = dry
				rep, err := r.Prune(ctx, o)
				if err == nil {
					t.Fatalf("dry run %v: prune went ahead beside the session: %+v", dry, rep)
				}
				if !dry {
					t.Log(err)
				}
				for _, w := range append([]error{ErrPruneUnsafe}, tc.want...) {
					if !errors.Is(err, w) {
						t.Errorf("dry run %v: error does not wrap %q: %v", dry, w, err)
					}
				}
				for _, s := range []string{h.String(), tc.text, "remove " + h.String()} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("dry run %v: error does not say %q: %v", dry, s, err)
					}
				}
				if after := repoState(t, be); !reflect.DeepEqual(after, before) {
					t.Fatalf("dry run %v: refused prune changed the repository:\nbefore %v\nafter  %v", dry, before, after)
				}
			}
			// Once the operator removes it, prune sweeps (and cleans up
			// the stale session): the refusal was the session's doing.
			if err := be.Remove(ctx, h); err != nil {
				t.Fatal(err)
			}
			rep, err := r.Prune(ctx, sweepOpts)
			if err != nil || rep.Removed == 0 {
				t.Fatalf("without the session: removed %d, %v", rep.Removed, err)
			}
			if _, err := be.Stat(ctx, staleH); !errors.Is(err, tiers.ErrNotFound) {
				t.Errorf("stale session not removed: %v", err)
			}
		})
	}
}

// TestPruneFailsWhenSessionUnreadable: an error reading a session object
// (other than its disappearance) fails the prune instead of skipping the
// session, whose backup might depend on the packs to be swept.
func TestPruneFailsWhenSessionUnreadable(t *testing.T) {
	ctx := context.Background()
	be := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	r, clock, mark := sweepFixture(t, be)
	rec := sessionRecord{Version: sessionVersion, Host: "hv02", PID: 1, Started: mark.Add(-time.Hour), Refreshed: *clock}
	putSession(t, r, "0123456789abcdef0123456789abcdef", mustJSON(t, rec), false)
	errBoom := errors.New("connection reset")
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeSession, Err: errBoom})
	before := repoState(t, be)
	rep, err := r.Prune(ctx, sweepOpts)
	if !errors.Is(err, errBoom) {
		t.Fatalf("prune with an unreadable session: %+v, %v; want the load error", rep, err)
	}
	if after := repoState(t, be); !reflect.DeepEqual(after, before) {
		t.Fatal("failed prune changed the repository")
	}
	// A session that ends between listing and loading is simply gone.
	be.Reset()
	be.Inject(tierstest.Fault{Op: tierstest.OpLoad, Type: tiers.TypeSession, Err: fmt.Errorf("session ended: %w", tiers.ErrNotFound)})
	if live, err := r.liveSessions(ctx, false, ""); err != nil || len(live) != 0 {
		t.Fatalf("session removed meanwhile: %+v, %v", live, err)
	}
}

// slowSessionPut advances the repository clock by delay while it stores a
// session object: a refresh whose write takes that long.
type slowSessionPut struct {
	tiers.Backend
	clock *time.Time
	delay time.Duration
}

func (b *slowSessionPut) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if h.Type == tiers.TypeSession && b.delay > 0 {
		*b.clock = b.clock.Add(b.delay)
	}
	return b.Backend.Put(ctx, h, rd, size)
}

// TestSessionLapseSlowRefresh: a refresh whose write took longer than
// ClockSkew stores a record that is that much older than the write's end.
// Once a prune may take the session for a crashed one (by the Refreshed
// time it reads), Check must fail, also when the gap since the end of the
// last write is still shorter than SessionTTL.
func TestSessionLapseSlowRefresh(t *testing.T) {
	ctx := context.Background()
	be := &slowSessionPut{Backend: tierstest.NewMemory()}
	r, clock := clockedRepo(t, be)
	be.clock = clock
	sess, err := r.BeginSession(ctx, "hv01")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.End(ctx)
	*clock = clock.Add(SessionRefresh)
	sess.rec.Refreshed = *clock // as the refresher does before storing
	be.delay = ClockSkew + time.Minute
	if err := sess.put(ctx); err != nil {
		t.Fatal(err)
	}
	be.delay = 0
	stored := sess.rec.Refreshed
	// Later refreshes fail; time passes until a prune drops the session.
	*clock = stored.Add(SessionTTL + ClockSkew + time.Second)
	live, err := r.liveSessions(ctx, false, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range live {
		if s.name == sess.h.Name {
			t.Fatalf("prune still counts the session (refreshed %s, now %s)", s.Refreshed, *clock)
		}
	}
	if err := sess.Check(); err == nil {
		t.Fatal("Check passed although a prune already takes the session for a crashed one")
	}
}

// TestCopySessionLapseNamesTheCopy: a copy whose announcement lapsed is
// stopped before its index or snapshots (tiers.CopyOptions.BeforeIndex);
// the error must say that the copy is to be run again, not a backup,
// which the operator did not run.
func TestCopySessionLapseNamesTheCopy(t *testing.T) {
	ctx := context.Background()
	r, clock := clockedRepo(t, tierstest.NewMemory())
	sess, err := r.BeginCopySession(ctx, "hv01")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.End(ctx)
	*clock = clock.Add(SessionTTL + time.Minute)
	err = sess.Check()
	if err == nil {
		t.Fatal("copy session unrefreshed for longer than SessionTTL: Check passed")
	}
	if msg := err.Error(); !strings.Contains(msg, "copy") || strings.Contains(msg, "backup") {
		t.Errorf("lapsed copy session: %q, want it to name the copy (and no backup)", msg)
	}
}

// TestSweepDoesNotWaitForEndedSessionsNamed: a copy session whose object
// outlived the copy (object lock) blocks a sweep as a running copy does,
// unless the prune is told it ended (PruneOptions.Ended).
func TestSweepDoesNotWaitForEndedSessionsNamed(t *testing.T) {
	ctx := context.Background()
	for _, told := range []bool{false, true} {
		r, _, _ := sweepFixture(t, tierstest.RetainedSessions{Backend: tierstest.NewMemory()})
		sess, err := r.BeginCopySession(ctx, "hv01")
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.End(ctx); err == nil {
			t.Fatal("fixture: the session object was removed")
		}
		o := sweepOpts
		if told {
			o.Ended = []string{sess.Name()}
		}
		rep, err := r.Prune(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if told && (rep.Removed == 0 || rep.Postponed != 0) {
			t.Errorf("ended copy named: removed %d, postponed %d (%v), want the sweep done", rep.Removed, rep.Postponed, rep.WaitingFor)
		}
		if !told && (rep.Removed != 0 || rep.Postponed == 0) {
			t.Errorf("live copy session: removed %d, postponed %d, want the sweep postponed", rep.Removed, rep.Postponed)
		}
	}
}
