// Package workpool owns the one worker-pool shape drpipe uses for I/O
// jobs: hand numbered jobs to a fixed number of goroutines until the
// context ends, then wait for the ones running.
package workpool

import (
	"context"
	"sync"
)

// Feed calls work(0), work(1), … work(jobs-1) on workers
// goroutines (at least one), handing the jobs out in order until ctx is
// done: the jobs not handed out by then are skipped, the ones being
// worked on run to their end. It returns when every worker has returned.
// work reports its own errors; to stop the feeding it cancels ctx.
func Feed(ctx context.Context, workers, jobs int, work func(job int)) {
	ch := make(chan int)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for j := range ch {
				work(j)
			}
		})
	}
feed:
	for j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
}
