package tiers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"
)

// RetryPolicy configures WithRetry. Zero fields take the defaults noted
// below (the values of DefaultRetryPolicy).
type RetryPolicy struct {
	// MaxAttempts is the total number of attempts per operation, the
	// first included (default 5). 1 disables retries.
	MaxAttempts int
	// BaseDelay is the backoff before the first retry (default 250ms).
	BaseDelay time.Duration
	// MaxDelay caps the backoff between two attempts (default 30s).
	MaxDelay time.Duration
	// Multiplier is the factor by which the backoff grows after each
	// retry (default 2; values <= 1 take the default).
	Multiplier float64
	// Jitter is the fraction of each backoff that is randomised: the
	// actual delay is uniform in [d*(1-Jitter), d]. 0 takes the default
	// 0.5; a negative value disables jitter; values above 1 count as 1.
	Jitter float64
	// Sleep waits for d or until ctx is done, returning ctx.Err() in the
	// latter case. Nil uses a timer; tests inject a fake clock here.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a number in [0, 1) for the jitter. Nil uses
	// math/rand/v2.
	Rand func() float64
	// Notify, if set, is called before each backoff with the operation
	// ("put", "load", "stat", "list", "remove"), the handle (Name empty
	// for list), the attempt that failed (1-based), the delay and the
	// error. It must be safe for concurrent use.
	Notify func(op string, h Handle, attempt int, delay time.Duration, err error)
}

// DefaultRetryPolicy returns the policy used for zero fields of a
// RetryPolicy: 5 attempts, backoff 250ms doubling up to 30s, 50% jitter.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxAttempts: 5,
		BaseDelay:   250 * time.Millisecond,
		MaxDelay:    30 * time.Second,
		Multiplier:  2,
		Jitter:      0.5,
	}
}

func (p RetryPolicy) normalized() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = d.BaseDelay
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = d.MaxDelay
	}
	if p.MaxDelay < p.BaseDelay {
		p.MaxDelay = p.BaseDelay
	}
	if p.Multiplier <= 1 {
		p.Multiplier = d.Multiplier
	}
	switch {
	case p.Jitter == 0:
		p.Jitter = d.Jitter
	case p.Jitter > 1:
		p.Jitter = 1
	} // negative stays negative (disabled), so normalising is idempotent
	if p.Sleep == nil {
		p.Sleep = sleepCtx
	}
	if p.Rand == nil {
		p.Rand = rand.Float64
	}
	return p
}

// Backoff returns the delay after the given failed attempt (1-based),
// jitter included, under the normalised policy.
func (p RetryPolicy) Backoff(attempt int) time.Duration {
	return p.normalized().backoff(attempt)
}

func (p RetryPolicy) backoff(attempt int) time.Duration {
	d := float64(p.BaseDelay)
	for i := 1; i < attempt && d < float64(p.MaxDelay); i++ {
		d *= p.Multiplier
	}
	if d > float64(p.MaxDelay) {
		d = float64(p.MaxDelay)
	}
	if p.Jitter > 0 {
		d -= d * p.Jitter * p.Rand()
	}
	return time.Duration(d)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WithRetry wraps be so that Put, Load, Stat, List and Remove are retried
// with exponential backoff and jitter while they fail with an error that
// IsRetriable accepts, up to policy.MaxAttempts attempts in all, and never
// past the cancellation of ctx. When it gives up, the last error is
// returned (annotated with the number of attempts) and is no longer
// retriable, so stacking two retry wrappers does not multiply attempts.
//
// Put is retried only when rd is an io.ReadSeeker, which is rewound to its
// position at the call before each retry; other readers get one attempt.
// Load may call fn once per attempt (the Backend contract requires fn to
// be idempotent). A retried List does not report an object twice. Over a
// backend that lists in order and can start after a name (ListerAfter:
// S3), it resumes after the last object passed to fn, remembering that
// name only; over others, objects already passed to fn are skipped, at the
// cost of remembering their names. An error returned by List's fn is never
// retried.
//
// The wrapper hides optional interfaces of be (Warmer, Retainer); type
// assert on the inner backend for those.
func WithRetry(be Backend, policy RetryPolicy) Backend {
	return &retryBackend{be: be, p: policy.normalized()}
}

type retryBackend struct {
	be Backend
	p  RetryPolicy
}

// noRetry carries an error that must be returned as is, without retry.
type noRetry struct{ err error }

func (e *noRetry) Error() string { return e.err.Error() }

func (r *retryBackend) do(ctx context.Context, op string, h Handle, f func() error) error {
	var last error
	for attempt := 1; ; attempt++ {
		if cerr := ctx.Err(); cerr != nil {
			if last == nil {
				return fmt.Errorf("%s %s: %w", op, h, cerr)
			}
			return fmt.Errorf("%w; retry abandoned: %w", last, cerr)
		}
		err := f()
		var nr *noRetry
		if errors.As(err, &nr) {
			return nr.err
		}
		if err == nil || !IsRetriable(err) {
			return err
		}
		last = err
		if attempt >= r.p.MaxAttempts {
			return &exhaustedError{err: err, attempts: attempt}
		}
		d := r.p.backoff(attempt)
		if r.p.Notify != nil {
			r.p.Notify(op, h, attempt, d, err)
		}
		if serr := r.p.Sleep(ctx, d); serr != nil {
			if cerr := ctx.Err(); cerr != nil {
				serr = cerr
			}
			return fmt.Errorf("%w; retry abandoned: %w", last, serr)
		}
	}
}

func (r *retryBackend) Location() string { return r.be.Location() }
func (r *retryBackend) Close() error     { return r.be.Close() }

func (r *retryBackend) Put(ctx context.Context, h Handle, rd io.Reader, size int64) error {
	rs, ok := rd.(io.ReadSeeker)
	if !ok || h.Validate() != nil {
		return r.be.Put(ctx, h, rd, size)
	}
	start, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return r.be.Put(ctx, h, rd, size)
	}
	first := true
	return r.do(ctx, "put", h, func() error {
		if !first {
			if _, err := rs.Seek(start, io.SeekStart); err != nil {
				return &noRetry{fmt.Errorf("put %s: rewind body for retry: %w", h, err)}
			}
		}
		first = false
		return r.be.Put(ctx, h, rs, size)
	})
}

func (r *retryBackend) Load(ctx context.Context, h Handle, offset, length int64, fn func(rd io.Reader) error) error {
	return r.do(ctx, "load", h, func() error {
		return r.be.Load(ctx, h, offset, length, fn)
	})
}

func (r *retryBackend) Stat(ctx context.Context, h Handle) (ObjectInfo, error) {
	var oi ObjectInfo
	err := r.do(ctx, "stat", h, func() error {
		var err error
		oi, err = r.be.Stat(ctx, h)
		return err
	})
	return oi, err
}

// ListerAfter is a Backend whose List passes objects in ascending order
// of name and that can list the objects of a type whose names come after
// a given one (S3's ListObjectsV2 with StartAfter). A retried listing then
// resumes where it stopped, with no memory of what it passed.
type ListerAfter interface {
	ListAfter(ctx context.Context, t Type, after string, fn func(ObjectInfo) error) error
}

func (r *retryBackend) List(ctx context.Context, t Type, fn func(ObjectInfo) error) error {
	if la, ok := r.be.(ListerAfter); ok {
		return r.listAfter(ctx, la, t, fn)
	}
	var (
		mu   sync.Mutex
		seen = make(map[string]struct{})
	)
	return r.do(ctx, "list", Handle{Type: t}, func() error {
		err := r.be.List(ctx, t, func(oi ObjectInfo) error {
			mu.Lock()
			_, dup := seen[oi.Handle.Name]
			mu.Unlock()
			if dup {
				return nil
			}
			if err := fn(oi); err != nil {
				return &noRetry{err}
			}
			mu.Lock()
			seen[oi.Handle.Name] = struct{}{}
			mu.Unlock()
			return nil
		})
		return err
	})
}

// listAfter lists with retries that resume after the last object passed
// to fn. A server that lists out of order (it should not) cannot be
// resumed that way: once it has, a failure is returned, not retried.
func (r *retryBackend) listAfter(ctx context.Context, la ListerAfter, t Type, fn func(ObjectInfo) error) error {
	var last string
	ordered := true
	return r.do(ctx, "list", Handle{Type: t}, func() error {
		if !ordered {
			return &noRetry{fmt.Errorf("list %s in %s: cannot retry: the server listed names out of order", t, r.be.Location())}
		}
		err := la.ListAfter(ctx, t, last, func(oi ObjectInfo) error {
			if oi.Handle.Name <= last {
				ordered = false
			}
			if err := fn(oi); err != nil {
				return &noRetry{err}
			}
			if ordered {
				last = oi.Handle.Name
			}
			return nil
		})
		if err != nil && !ordered {
			var nr *noRetry
			if !errors.As(err, &nr) {
				err = &noRetry{fmt.Errorf("%w (not retried: the server listed names out of order, so the listing cannot be resumed)", err)}
			}
		}
		return err
	})
}

func (r *retryBackend) Remove(ctx context.Context, h Handle) error {
	return r.do(ctx, "remove", h, func() error {
		return r.be.Remove(ctx, h)
	})
}
