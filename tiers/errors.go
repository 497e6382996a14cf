package tiers

import (
	"context"
	"errors"
	"strconv"
)

// ErrSizeMismatch reports that the reader passed to Put yielded fewer or
// more bytes than the announced size. Backends wrap it so that callers (and
// IsRetriable) can tell a broken caller from a broken tier.
var ErrSizeMismatch = errors.New("reader size does not match announced size")

// Retriable marks err as transient: IsRetriable reports true for the result
// (and for any error wrapping it) unless the chain also holds one of the
// permanent conditions listed at IsRetriable. Backends use it for failures
// such as a dropped connection or a throttling response. Retriable(nil) is
// nil.
func Retriable(err error) error {
	if err == nil {
		return nil
	}
	return &retriableError{err: err}
}

type retriableError struct{ err error }

func (e *retriableError) Error() string { return e.err.Error() }
func (e *retriableError) Unwrap() error { return e.err }

// exhaustedError is returned by the retry wrapper when it gave up; it is
// never retriable again, so stacked retry wrappers do not multiply attempts.
type exhaustedError struct {
	err      error
	attempts int
}

func (e *exhaustedError) Error() string {
	return e.err.Error() + " (gave up after " + strconv.Itoa(e.attempts) + " attempts)"
}
func (e *exhaustedError) Unwrap() error { return e.err }

// IsRetriable is the single classification of errors for retries. It
// reports false for nil, for context cancellation and deadline errors, for
// errors wrapping ErrNotFound, ErrInvalidHandle, ErrLocked, ErrShortRead,
// ErrNotReady or ErrSizeMismatch, and for the final error of a retry
// wrapper that gave up. Otherwise it reports true when the chain holds an
// error made by Retriable, or an error implementing
// interface{ Temporary() bool } whose Temporary method returns true (as
// net.Error and syscall.Errno do for transient conditions). Everything else
// is permanent.
func IsRetriable(err error) bool {
	if err == nil {
		return false
	}
	// Context errors first: context.DeadlineExceeded claims Temporary().
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	for _, perm := range []error{ErrNotFound, ErrInvalidHandle, ErrLocked, ErrShortRead, ErrNotReady, ErrSizeMismatch} {
		if errors.Is(err, perm) {
			return false
		}
	}
	var ex *exhaustedError
	if errors.As(err, &ex) {
		return false
	}
	var re *retriableError
	if errors.As(err, &re) {
		return true
	}
	var tmp interface{ Temporary() bool }
	if errors.As(err, &tmp) {
		return tmp.Temporary()
	}
	return false
}
