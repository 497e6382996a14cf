package workpool

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFeed: every job runs once on exactly `workers` goroutines
// (at least one); when work cancels the context the feeding stops, and
// Feed returns only after the jobs handed out have finished.
func TestFeed(t *testing.T) {
	ctx := context.Background()

	// All jobs, once each, three at a time: each of the first three
	// waits until all three run, which only three workers can do.
	const workers, jobs = 3, 12
	var (
		mu            sync.Mutex
		ran           = map[int]int{}
		running, most int
		all           = make(chan struct{})
		stuck         atomic.Bool
		arrived       atomic.Int32
	)
	Feed(ctx, workers, jobs, func(j int) {
		mu.Lock()
		ran[j]++
		running++
		most = max(most, running)
		mu.Unlock()
		if j < workers {
			if arrived.Add(1) == workers {
				close(all)
			}
			select {
			case <-all:
			case <-time.After(10 * time.Second):
				stuck.Store(true)
			}
		}
		mu.Lock()
		running--
		mu.Unlock()
	})
	if stuck.Load() {
		t.Errorf("the first %d jobs never ran at the same time: fewer than %d workers", workers, workers)
	}
	if most != workers {
		t.Errorf("at most %d jobs ran at once, want %d", most, workers)
	}
	for j := range jobs {
		if ran[j] != 1 {
			t.Errorf("job %d ran %d times, want once", j, ran[j])
		}
	}
	if len(ran) != jobs {
		t.Errorf("%d distinct jobs ran, want %d", len(ran), jobs)
	}

	// No workers asked for: one. (Without one the feeding would block
	// until the deadline.)
	n := 0
	dctx, stop := context.WithTimeout(ctx, 10*time.Second)
	Feed(dctx, 0, 5, func(int) { n++ })
	stop()
	if n != 5 {
		t.Errorf("with 0 workers asked for, %d of 5 jobs ran, want all (on one worker)", n)
	}

	// Job 2 cancels: the rest of a long list is not handed out, and the
	// jobs that were have finished when Feed returns. (A worker
	// back for more while the feeder sees the cancellation may still get
	// one job: callers check ctx in work, as ReadPlan does.)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const many = 1000
	var started, finished atomic.Int32
	var last atomic.Int32
	Feed(cctx, 1, many, func(j int) {
		started.Add(1)
		if int32(j) < last.Load() {
			t.Errorf("job %d handed out after job %d: not in order", j, last.Load())
		}
		last.Store(int32(j))
		if j == 2 {
			cancel()
		}
		time.Sleep(time.Millisecond) // give the feeder the chance to hand out more
		finished.Add(1)
	})
	if s, f := started.Load(), finished.Load(); s != f {
		t.Errorf("Feed returned with %d of %d jobs handed out still running", s-f, s)
	}
	if s := started.Load(); s >= many/2 {
		t.Errorf("%d of %d jobs were handed out after the context was cancelled at job 2", s-3, many-3)
	}
}
