package transport

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLimiterRate pushes 8 MiB through one 4 MiB/s limiter from four
// writers at once (as the streams of a replication share it): the whole
// takes about (8 MiB - burst) / 4 MiB/s = 1.9 s. The bounds are coarse:
// they check that the rate is honoured, not how fast the machine is.
func TestLimiterRate(t *testing.T) {
	const rate, total, writers = 4 << 20, 8 << 20, 4
	l := NewLimiter(rate)
	if l.Rate() != rate {
		t.Fatalf("Rate() = %d, want %d", l.Rate(), rate)
	}
	ctx := context.Background()
	var sent atomic.Int64
	var probeMu sync.Mutex
	var probeSent int64
	var probeAt time.Duration
	start := time.Now()
	probe := time.AfterFunc(time.Second, func() {
		probeMu.Lock()
		defer probeMu.Unlock()
		// Bytes first, then the time: a pause between the two reads can
		// only loosen the bound checked below.
		probeSent = sent.Load()
		probeAt = time.Since(start)
	})
	defer probe.Stop()
	var wg sync.WaitGroup
	buf := make([]byte, total/writers)
	for range writers {
		wg.Go(func() {
			w := &limitedWriter{w: io.Discard, wait: func(n int) error { return l.WaitN(ctx, n) }, n: func(n int) { sent.Add(int64(n)) }}
			if n, err := w.Write(buf); n != len(buf) || err != nil {
				t.Errorf("Write: %d, %v", n, err)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if sent.Load() != total {
		t.Fatalf("%d bytes counted, want %d", sent.Load(), total)
	}
	probeMu.Lock()
	defer probeMu.Unlock()
	t.Logf("%d MiB at %d MiB/s: %v (%.2f MiB/s); %.2f MiB by %v", total>>20, rate>>20, el.Round(time.Millisecond),
		float64(total)/(1<<20)/el.Seconds(), float64(probeSent)/(1<<20), probeAt.Round(time.Millisecond))
	if el < 1500*time.Millisecond {
		t.Errorf("%d MiB through a %d MiB/s limiter took %v, want at least 1.5 s", total>>20, rate>>20, el)
	}
	if el > 6*time.Second {
		t.Errorf("%d MiB through a %d MiB/s limiter took %v: it throttles far below its rate", total>>20, rate>>20, el)
	}
	// At any time at most the rate times the time so far, the burst and
	// one chunk per writer may have passed (the probe reads the time
	// before the count, so a late probe only loosens the bound).
	if limit := int64(rate*probeAt.Seconds()) + rate/10 + writers*32<<10; probeSent > limit {
		t.Errorf("%d bytes passed in the first %v, the limit allows %d", probeSent, probeAt, limit)
	}
}

// TestLimiterAccounting drives the token bucket with a fake clock: the
// burst (a tenth of a second, at least 64 KiB) passes at once, the
// bucket never holds more than the burst however long it idles, and
// tokens come back at the rate.
func TestLimiterAccounting(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := NewLimiter(1 << 20) // burst 104857.6 bytes
	l.now = func() time.Time { return now }
	ctx := context.Background()
	done, cancel := context.WithCancel(ctx)
	cancel() // a WaitN that would have to wait returns this context's error at once

	if err := l.WaitN(ctx, 100_000); err != nil {
		t.Fatalf("within the burst: %v", err)
	}
	if err := l.WaitN(done, 10_000); !errors.Is(err, context.Canceled) {
		t.Fatalf("beyond the burst with no time passed: %v, want to wait", err)
	}
	// That request was not sent, so it is not charged: the 4857.6 bytes
	// left in the bucket still pass at once.
	if err := l.WaitN(done, 4_800); err != nil {
		t.Fatalf("after a cancelled request: %v (a cancelled wait was charged)", err)
	}
	// Ten seconds idle refill the bucket to the burst, not beyond.
	now = now.Add(10 * time.Second)
	if err := l.WaitN(done, 104_857); err != nil {
		t.Fatalf("a full burst after idling: %v", err)
	}
	if err := l.WaitN(done, 1024); !errors.Is(err, context.Canceled) {
		t.Fatalf("the bucket held more than its burst after idling: %v", err)
	}
	// Refill at the rate: 1024 + 0.6 bytes owed; 2 ms bring 2097 bytes.
	now = now.Add(2 * time.Millisecond)
	if err := l.WaitN(done, 1000); err != nil {
		t.Fatalf("after 2 ms at 1 MiB/s: %v", err)
	}

	// Small rates still allow 64 KiB at once.
	s := NewLimiter(1000)
	s.now = func() time.Time { return now }
	if err := s.WaitN(done, 64<<10); err != nil {
		t.Fatalf("64 KiB through a 1000 B/s limiter's burst: %v", err)
	}

	// A nil limiter and empty requests never wait.
	var nl *Limiter
	if err := nl.WaitN(done, 1<<30); err != nil || nl.Rate() != 0 {
		t.Fatalf("nil limiter: %v, rate %d", err, nl.Rate())
	}
	if err := l.WaitN(done, 0); err != nil {
		t.Fatalf("WaitN(0): %v", err)
	}
}

// TestLimiterWaitAndCancel: a request beyond the bucket waits for its
// deficit at the rate, and a cancelled or expired context ends the wait
// at once instead.
func TestLimiterWaitAndCancel(t *testing.T) {
	l := NewLimiter(1 << 20)
	ctx := context.Background()
	if err := l.WaitN(ctx, 104_857); err != nil { // drain the burst
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.WaitN(ctx, 256<<10); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 200*time.Millisecond || el > 2*time.Second {
		t.Errorf("256 KiB beyond an empty bucket at 1 MiB/s waited %v, want about 250 ms", el)
	}

	// 1 GiB at 64 KiB/s would take hours: cancellation ends it.
	slow := NewLimiter(64 << 10)
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	if err := slow.WaitN(cctx, 1<<30); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("cancelled wait returned after %v", el)
	}
	dctx, dcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer dcancel()
	if err := slow.WaitN(dctx, 1<<30); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired wait: %v", err)
	}

	// A writer whose wait fails stops, reporting what it wrote.
	var chunks []int
	fail := errors.New("stop")
	w := &limitedWriter{w: io.Discard, wait: func(n int) error {
		if len(chunks) == 2 {
			return fail
		}
		chunks = append(chunks, n)
		return nil
	}}
	n, err := w.Write(make([]byte, 100<<10))
	if n != 64<<10 || !errors.Is(err, fail) || len(chunks) != 2 || chunks[0] != 32<<10 || chunks[1] != 32<<10 {
		t.Errorf("limitedWriter with a failing wait: wrote %d, %v, chunks %v; want 64 KiB in two 32 KiB chunks", n, err, chunks)
	}
}
