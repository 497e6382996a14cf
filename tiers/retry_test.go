package tiers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

func TestRetryConformance(t *testing.T) {
	tierstest.Run(t, func(t *testing.T) tiers.Backend {
		l, err := tiers.NewLocal(filepath.Join(t.TempDir(), "repo"))
		if err != nil {
			t.Fatal(err)
		}
		return tiers.WithRetry(l, tiers.RetryPolicy{})
	})
}

type tempErr struct{ temp bool }

func (e tempErr) Error() string   { return fmt.Sprintf("temp=%v", e.temp) }
func (e tempErr) Temporary() bool { return e.temp }

func TestIsRetriable(t *testing.T) {
	base := errors.New("base")
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{base, false},
		{tiers.Retriable(base), true},
		{fmt.Errorf("wrapped: %w", tiers.Retriable(base)), true},
		{tempErr{true}, true},
		{fmt.Errorf("wrapped: %w", tempErr{true}), true},
		{tempErr{false}, false},
		{syscall.ECONNRESET, false},
		{syscall.EAGAIN, true},
		{context.Canceled, false},
		{context.DeadlineExceeded, false},
		{tiers.Retriable(context.Canceled), false},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{tiers.Retriable(fmt.Errorf("x: %w", tiers.ErrNotFound)), false},
		{tiers.Retriable(tiers.ErrInvalidHandle), false},
		{tiers.Retriable(tiers.ErrLocked), false},
		{tiers.Retriable(tiers.ErrShortRead), false},
		{tiers.Retriable(tiers.ErrNotReady), false},
		{tiers.Retriable(tiers.ErrSizeMismatch), false},
		{errors.Join(base, tiers.Retriable(base)), true},
	}
	for _, c := range cases {
		if got := tiers.IsRetriable(c.err); got != c.want {
			t.Errorf("IsRetriable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if tiers.Retriable(nil) != nil {
		t.Error("Retriable(nil) != nil")
	}
}

// fakeClock records the requested sleeps without sleeping.
type fakeClock struct {
	mu     sync.Mutex
	sleeps []time.Duration
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.mu.Unlock()
	return ctx.Err()
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sleeps)
}

func policy(c *fakeClock) tiers.RetryPolicy {
	return tiers.RetryPolicy{
		MaxAttempts: 4,
		BaseDelay:   100 * time.Millisecond,
		MaxDelay:    time.Second,
		Jitter:      -1,
		Sleep:       c.Sleep,
	}
}

var (
	hd = tiers.Handle{Type: tiers.TypeData, Name: "d00d"}
	hi = tiers.Handle{Type: tiers.TypeIndex, Name: "1d"}
)

// stack returns memory <- counting <- faulty <- retry.
func stack(t *testing.T, p tiers.RetryPolicy) (tiers.Backend, *tierstest.Faulty, *tierstest.CountingBackend) {
	mem := tierstest.NewMemory()
	c := tierstest.NewCounting(mem)
	f := tierstest.NewFaulty(c, 1)
	return tiers.WithRetry(f, p), f, c
}

func TestRetryFailsThenSucceeds(t *testing.T) {
	ctx := t.Context()
	data := bytes.Repeat([]byte("retry "), 1000)
	for _, op := range []tierstest.Op{tierstest.OpPut, tierstest.OpLoad, tierstest.OpStat, tierstest.OpList, tierstest.OpRemove} {
		t.Run(string(op), func(t *testing.T) {
			clk := &fakeClock{}
			be, f, c := stack(t, policy(clk))
			if op != tierstest.OpPut {
				if err := tiers.PutBytes(ctx, be, hd, data); err != nil {
					t.Fatal(err)
				}
				c.Reset()
			}
			f.Inject(tierstest.Fault{Op: op, Times: 3})
			var err error
			switch op {
			case tierstest.OpPut:
				err = tiers.PutBytes(ctx, be, hd, data)
			case tierstest.OpLoad:
				var got []byte
				got, err = tiers.LoadAll(ctx, be, hd, 0, 0)
				if err == nil && !bytes.Equal(got, data) {
					t.Error("wrong data")
				}
			case tierstest.OpStat:
				_, err = be.Stat(ctx, hd)
			case tierstest.OpList:
				err = be.List(ctx, tiers.TypeData, func(tiers.ObjectInfo) error { return nil })
			case tierstest.OpRemove:
				err = be.Remove(ctx, hd)
			}
			if err != nil {
				t.Fatalf("%s after 3 transient failures: %v", op, err)
			}
			if f.Fired() != 3 {
				t.Errorf("fired %d faults, want 3", f.Fired())
			}
			want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
			if got := clk.Sleeps(); !slices.Equal(got, want) {
				t.Errorf("sleeps %v, want %v", got, want)
			}
			if op == tierstest.OpPut {
				if got := c.Counts(tiers.TypeData); got.Puts != 1 || got.BytesPut != int64(len(data)) {
					t.Errorf("backend counts %+v, want one put", got)
				}
			}
		})
	}
}

func TestRetryGivesUp(t *testing.T) {
	clk := &fakeClock{}
	be, f, _ := stack(t, policy(clk))
	var notified []int
	p := policy(clk)
	p.Notify = func(op string, h tiers.Handle, attempt int, d time.Duration, err error) {
		if op != "stat" || h != hd || !errors.Is(err, tierstest.ErrInjected) {
			t.Errorf("Notify(%s, %v, %d, %v, %v)", op, h, attempt, d, err)
		}
		notified = append(notified, attempt)
	}
	be = tiers.WithRetry(f, p)
	f.Inject(tierstest.Fault{Op: tierstest.OpStat})
	_, err := be.Stat(t.Context(), hd)
	if !errors.Is(err, tierstest.ErrInjected) {
		t.Fatalf("got %v", err)
	}
	if f.Fired() != 4 {
		t.Errorf("%d attempts, want 4", f.Fired())
	}
	if !slices.Equal(notified, []int{1, 2, 3}) {
		t.Errorf("notified %v", notified)
	}
	if tiers.IsRetriable(err) {
		t.Errorf("final error %v is still retriable", err)
	}
	// A second retry layer does not multiply attempts.
	twice := tiers.WithRetry(be, policy(clk))
	_, _ = twice.Stat(t.Context(), hd)
	if f.Fired() != 8 {
		t.Errorf("stacked retries made %d attempts, want 4", f.Fired()-4)
	}
}

func TestRetryPermanentErrorNotRetried(t *testing.T) {
	ctx := t.Context()
	clk := &fakeClock{}
	be, f, c := stack(t, policy(clk))
	perm := errors.New("access denied")
	f.Inject(tierstest.Fault{Op: tierstest.OpPut, Err: perm})
	if err := tiers.PutBytes(ctx, be, hd, []byte("x")); !errors.Is(err, perm) {
		t.Errorf("Put: %v", err)
	}
	if f.Fired() != 1 || len(clk.Sleeps()) != 0 {
		t.Errorf("permanent error retried: %d attempts, sleeps %v", f.Fired(), clk.Sleeps())
	}
	f.Reset()
	// Not found, invalid handle, short read: one call each.
	c.Reset()
	if _, err := be.Stat(ctx, hd); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Stat: %v", err)
	}
	if _, err := tiers.LoadAll(ctx, be, hd, 0, 0); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Load: %v", err)
	}
	if err := tiers.PutBytes(ctx, be, hi, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := tiers.LoadAll(ctx, be, hi, 0, 10); !errors.Is(err, tiers.ErrShortRead) {
		t.Errorf("Load: %v", err)
	}
	bad := tiers.Handle{Type: tiers.TypeData, Name: "../x"}
	if _, err := be.Stat(ctx, bad); !errors.Is(err, tiers.ErrInvalidHandle) {
		t.Errorf("Stat: %v", err)
	}
	if got := c.Total(); got.Stats != 2 || got.Loads != 2 || got.Puts != 1 {
		t.Errorf("calls %+v, want one per operation", got)
	}
	if len(clk.Sleeps()) != 0 {
		t.Errorf("slept %v", clk.Sleeps())
	}
	// A load callback's own error is not retried either.
	calls := 0
	oops := errors.New("cannot decode")
	err := be.Load(ctx, hi, 0, 0, func(io.Reader) error { calls++; return oops })
	if !errors.Is(err, oops) || calls != 1 {
		t.Errorf("Load with failing callback: %v after %d calls", err, calls)
	}
}

func TestRetryContextCancel(t *testing.T) {
	be, f, _ := stack(t, tiers.RetryPolicy{})
	f.Inject(tierstest.Fault{Op: tierstest.OpStat})

	// Cancelled while backing off: no further attempt.
	ctx, cancel := context.WithCancel(t.Context())
	p := tiers.RetryPolicy{MaxAttempts: 10, Sleep: func(ctx context.Context, d time.Duration) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}}
	_, err := tiers.WithRetry(f, p).Stat(ctx, hd)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, tierstest.ErrInjected) {
		t.Errorf("got %v, want context.Canceled and the last error", err)
	}
	if tiers.IsRetriable(err) {
		t.Errorf("%v is retriable", err)
	}
	if f.Fired() != 1 {
		t.Errorf("%d attempts after cancellation, want 1", f.Fired())
	}

	// Real timer: cancellation interrupts a long backoff.
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	_, err = tiers.WithRetry(f, tiers.RetryPolicy{BaseDelay: time.Hour}).Stat(ctx, hd)
	if !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Errorf("got %v after %v", err, time.Since(start))
	}

	// Already cancelled: no attempt at all.
	before := f.Fired()
	if _, err := be.Stat(ctx, hd); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
	if f.Fired() != before {
		t.Error("attempted with a cancelled context")
	}
}

// onlyReader hides every method but Read.
type onlyReader struct{ io.Reader }

func TestRetryPutRewinds(t *testing.T) {
	ctx := t.Context()
	clk := &fakeClock{}
	be, f, c := stack(t, policy(clk))
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	f.Inject(tierstest.Fault{Op: tierstest.OpPut, Kind: tierstest.FailStream, Offset: 5000, Times: 2})

	// A seeker positioned past a header: retries rewind to that position.
	rd := bytes.NewReader(append([]byte("HEADER"), data...))
	if _, err := rd.Seek(6, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := be.Put(ctx, hd, rd, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	got, err := tiers.LoadAll(ctx, be, hd, 0, 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored %d bytes, %v", len(got), err)
	}
	if k := c.Counts(tiers.TypeData); k.Puts != 3 || k.BytesPut != 2*5000+int64(len(data)) {
		t.Errorf("counts %+v, want 3 puts", k)
	}

	// A plain reader cannot be rewound: one attempt.
	f.Inject(tierstest.Fault{Op: tierstest.OpPut, Kind: tierstest.FailStream, Offset: 10, Times: 1})
	err = be.Put(ctx, hi, onlyReader{bytes.NewReader(data)}, int64(len(data)))
	if !errors.Is(err, tierstest.ErrInjected) {
		t.Errorf("Put of a non-seeker: %v", err)
	}
	if _, err := be.Stat(ctx, hi); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Stat: %v", err)
	}
}

func TestRetryLoadCallsFnAgain(t *testing.T) {
	ctx := t.Context()
	be, f, _ := stack(t, policy(&fakeClock{}))
	data := bytes.Repeat([]byte("z"), 10000)
	if err := tiers.PutBytes(ctx, be, hd, data); err != nil {
		t.Fatal(err)
	}
	f.Inject(tierstest.Fault{Op: tierstest.OpLoad, Kind: tierstest.FailStream, Offset: 3000, Times: 1})
	calls := 0
	var got []byte
	err := be.Load(ctx, hd, 0, 0, func(rd io.Reader) error {
		calls++
		b, err := io.ReadAll(rd)
		got = b
		return err
	})
	if err != nil || calls != 2 || !bytes.Equal(got, data) {
		t.Errorf("Load: %v, %d calls, %d bytes", err, calls, len(got))
	}
}

func TestRetryListNoDuplicates(t *testing.T) {
	ctx := t.Context()
	be, f, _ := stack(t, policy(&fakeClock{}))
	var want []string
	for i := range 10 {
		h := tiers.Handle{Type: tiers.TypeSnapshot, Name: fmt.Sprintf("s%02d", i)}
		if err := tiers.PutBytes(ctx, be, h, []byte(h.Name)); err != nil {
			t.Fatal(err)
		}
		want = append(want, h.Name)
	}
	f.Inject(tierstest.Fault{Op: tierstest.OpList, Kind: tierstest.FailStream, Offset: 4, Times: 2})
	var got []string
	err := be.List(ctx, tiers.TypeSnapshot, func(oi tiers.ObjectInfo) error {
		got = append(got, oi.Handle.Name)
		return nil
	})
	slices.Sort(got)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("List: %v, %q", err, got)
	}
	// The callback's error stops the listing at once.
	stop := errors.New("stop")
	n := 0
	err = be.List(ctx, tiers.TypeSnapshot, func(tiers.ObjectInfo) error { n++; return tiers.Retriable(stop) })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("List with failing callback: %v after %d calls", err, n)
	}
}

func TestRetryBackoff(t *testing.T) {
	p := tiers.RetryPolicy{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, Jitter: -1}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Backoff(i + 1); got != w*time.Millisecond {
			t.Errorf("Backoff(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := p.Backoff(1000); got != time.Second {
		t.Errorf("Backoff(1000) = %v", got)
	}
	// Jitter: the delay is in [d*(1-J), d].
	p.Jitter = 0.5
	p.Rand = func() float64 { return 0.999999 }
	if got := p.Backoff(3); got < 200*time.Millisecond || got > 201*time.Millisecond {
		t.Errorf("Backoff with maximal jitter = %v, want ~200ms", got)
	}
	p.Rand = func() float64 { return 0 }
	if got := p.Backoff(3); got != 400*time.Millisecond {
		t.Errorf("Backoff with no jitter drawn = %v", got)
	}
	// Default jitter varies.
	d := tiers.DefaultRetryPolicy()
	seen := map[time.Duration]bool{}
	for range 20 {
		b := d.Backoff(2)
		if b < 250*time.Millisecond || b > 500*time.Millisecond {
			t.Errorf("default Backoff(2) = %v, want within [250ms, 500ms]", b)
		}
		seen[b] = true
	}
	if len(seen) < 2 {
		t.Error("default backoff has no jitter")
	}
}

func TestRetryTemporaryInterface(t *testing.T) {
	clk := &fakeClock{}
	f := tierstest.NewFaulty(tierstest.NewMemory(), 1)
	f.Inject(tierstest.Fault{Op: tierstest.OpRemove, Err: tempErr{true}, Times: 2})
	f.Inject(tierstest.Fault{Op: tierstest.OpStat, Err: tempErr{false}})
	be := tiers.WithRetry(f, policy(clk))
	if err := be.Remove(t.Context(), hd); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if _, err := be.Stat(t.Context(), hd); err == nil {
		t.Error("Stat succeeded")
	}
	if f.Fired() != 3 {
		t.Errorf("%d faults fired, want 3", f.Fired())
	}
}

// orderedLister lists a Memory's objects in ascending order of name (or
// descending, as a server that does not keep S3's order), starting after
// a name, and fails with a retriable error after passing failAfter
// objects, failures times.
type orderedLister struct {
	*tierstest.Memory
	descending bool
	failAfter  int
	failures   int
	afters     []string // the after of each call
}

func (o *orderedLister) ListAfter(ctx context.Context, t tiers.Type, after string, fn func(tiers.ObjectInfo) error) error {
	o.afters = append(o.afters, after)
	var all []tiers.ObjectInfo
	if err := o.Memory.List(ctx, t, func(oi tiers.ObjectInfo) error { all = append(all, oi); return nil }); err != nil {
		return err
	}
	slices.SortFunc(all, func(a, b tiers.ObjectInfo) int { return strings.Compare(a.Handle.Name, b.Handle.Name) })
	if o.descending {
		slices.Reverse(all)
	}
	passed := 0
	for _, oi := range all {
		if !o.descending && oi.Handle.Name <= after {
			continue
		}
		if o.failures > 0 && passed == o.failAfter {
			o.failures--
			return tiers.Retriable(errors.New("connection reset"))
		}
		if err := fn(oi); err != nil {
			return err
		}
		passed++
	}
	return nil
}

func (o *orderedLister) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	return o.ListAfter(ctx, t, "", fn)
}

// TestRetryListResumesAfterTheLastName: over a backend that lists in
// order and starts after a name (S3), a retried listing resumes after the
// last object it passed, keeping no set of names, and passes each object
// once. Over one that lists out of order, a failure after the disorder is
// returned rather than retried into duplicates or gaps.
func TestRetryListResumesAfterTheLastName(t *testing.T) {
	ctx := t.Context()
	mem := tierstest.NewMemory()
	var want []string
	for i := range 10 {
		h := tiers.Handle{Type: tiers.TypeSnapshot, Name: fmt.Sprintf("s%02d", i)}
		if err := tiers.PutBytes(ctx, mem, h, []byte(h.Name)); err != nil {
			t.Fatal(err)
		}
		want = append(want, h.Name)
	}
	ol := &orderedLister{Memory: mem, failAfter: 4, failures: 2}
	var got []string
	err := tiers.WithRetry(ol, policy(&fakeClock{})).List(ctx, tiers.TypeSnapshot, func(oi tiers.ObjectInfo) error {
		got = append(got, oi.Handle.Name)
		return nil
	})
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("List: %v, %q", err, got)
	}
	if wantAfters := []string{"", "s03", "s07"}; !slices.Equal(ol.afters, wantAfters) {
		t.Errorf("listings started after %q, want %q", ol.afters, wantAfters)
	}

	un := &orderedLister{Memory: mem, descending: true, failAfter: 4, failures: 1}
	got = nil
	err = tiers.WithRetry(un, policy(&fakeClock{})).List(ctx, tiers.TypeSnapshot, func(oi tiers.ObjectInfo) error {
		got = append(got, oi.Handle.Name)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "out of order") || len(got) != 4 || len(un.afters) != 1 {
		t.Errorf("List over a server out of order that fails: %v after %q (%d listings)", err, got, len(un.afters))
	}
}
