package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/drpipe/drpipe/pipeline"
)

// progressBar draws a one-line status (bytes, rate, ETA) on a terminal.
type progressBar struct {
	w     io.Writer
	c     *pipeline.Counter
	verb  string
	stop  chan struct{}
	wg    sync.WaitGroup
	start time.Time
}

func startProgress(w io.Writer, c *pipeline.Counter, verb string) *progressBar {
	p := &progressBar{w: w, c: c, verb: verb, stop: make(chan struct{}), start: time.Now()}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.draw(true)
				return
			case <-t.C:
				p.draw(false)
			}
		}
	}()
	return p
}

func (p *progressBar) draw(final bool) {
	el := time.Since(p.start)
	done := p.c.DoneBytes.Load()
	total := p.c.TotalBytes.Load()
	rate := float64(done) / max(el.Seconds(), 0.001)
	line := fmt.Sprintf("%s %s", p.verb, humanBytes(done))
	if total > 0 {
		line += fmt.Sprintf(" / %s (%.0f%%)", humanBytes(total), 100*float64(done)/float64(total))
	}
	line += fmt.Sprintf("  %s/s  files %d", humanBytes(int64(rate)), p.c.DoneFiles.Load())
	if tf := p.c.TotalFiles.Load(); tf > 0 {
		line += fmt.Sprintf("/%d", tf)
	}
	if total > done && rate > 0 && !final {
		eta := time.Duration(float64(total-done) / rate * float64(time.Second))
		line += "  ETA " + eta.Truncate(time.Second).String()
	}
	line += "  " + el.Truncate(time.Second).String()
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	if final {
		fmt.Fprintln(p.w)
	}
}

// Stop draws the final line and ends the ticker.
func (p *progressBar) Stop() {
	if p == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
}

// humanBytes renders n with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
