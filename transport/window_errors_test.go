package transport

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// stallStat is a site store that stalls once, on the data object offered
// after the first few.
type stallStat struct {
	tiers.Backend
	mu sync.Mutex
	n  int
}

func (s *stallStat) Stat(ctx context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	if h.Type == tiers.TypeData {
		s.mu.Lock()
		s.n++
		n := s.n
		s.mu.Unlock()
		if n == 5 {
			time.Sleep(time.Second)
		}
	}
	return s.Backend.Stat(ctx, h)
}

// TestDataOfferErrorNotBlamedOnSource: a site that stalls while
// answering the offer of a later data window is a site problem; the error
// must not say it happened reading the data in the primary's repository
// (nor say "replicate:" twice).
func TestDataOfferErrorNotBlamedOnSource(t *testing.T) {
	p := newPrimary(t)
	p.backup("hv01", 12, 6<<20)
	st := newSiteOn(t, func(be tiers.Backend) tiers.Backend { return &stallStat{Backend: be} })
	_, err := st.replicatePipe(context.Background(), p, -1, ReplicateOptions{Window: 2, Timeout: 200 * time.Millisecond})
	if err == nil {
		t.Fatal("replication beside a stalled site succeeded")
	}
	if strings.Contains(err.Error(), "data in "+p.be.Location()) || strings.Count(err.Error(), "replicate:") > 1 {
		t.Errorf("a stalled site reported as a problem of the primary's data: %v", err)
	}
}
