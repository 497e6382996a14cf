package transport

import (
	"context"
	"io"
	"sync"
	"time"
)

// Limiter is a token bucket that bounds the rate of bytes written through
// it, shared by every stream of a replication. Safe for concurrent use; a
// nil *Limiter does not limit.
type Limiter struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

// NewLimiter returns a limiter of bytesPerSec (> 0). The bucket holds at
// most a tenth of a second of traffic, but at least 64 KiB.
func NewLimiter(bytesPerSec int64) *Limiter {
	r := float64(bytesPerSec)
	b := max(r/10, 64<<10)
	return &Limiter{rate: r, burst: b, tokens: b, now: time.Now}
}

// Rate returns the configured rate in bytes per second.
func (l *Limiter) Rate() int64 {
	if l == nil {
		return 0
	}
	return int64(l.rate)
}

// WaitN blocks until n bytes may be sent or ctx ends. n may exceed the
// bucket: the caller then waits for the deficit. A wait that ends with
// ctx is not charged (its bytes go back to the bucket for later
// requests; callers already waiting keep their computed wait).
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	if l == nil || n <= 0 {
		return nil
	}
	l.mu.Lock()
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	deficit := -l.tokens
	l.mu.Unlock()
	if deficit <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(deficit / l.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		// Nothing was sent: give the bytes back, or a cancelled wait
		// would hold up the streams that go on.
		l.mu.Lock()
		l.tokens = min(l.burst, l.tokens+float64(n))
		l.mu.Unlock()
		return ctx.Err()
	}
}

// limitedWriter writes in chunks of at most 32 KiB, calling wait before
// each (a Limiter's WaitN bound to the caller's context) and n after.
type limitedWriter struct {
	w    io.Writer
	wait func(n int) error
	n    func(int)
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		c := min(len(p), 32<<10)
		if err := w.wait(c); err != nil {
			return done, err
		}
		n, err := w.w.Write(p[:c])
		done += n
		if w.n != nil && n > 0 {
			w.n(n)
		}
		if err != nil {
			return done, err
		}
		p = p[c:]
	}
	return done, nil
}
