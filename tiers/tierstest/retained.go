package tierstest

import (
	"context"
	"fmt"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// RetainedSessions wraps a backend so that session objects cannot be
// removed, as in an S3 bucket with object-lock retention, which keeps
// every object written: a writer's announcement then outlives it.
type RetainedSessions struct{ tiers.Backend }

// Remove refuses session objects with an error wrapping tiers.ErrLocked
// and removes the others.
func (r RetainedSessions) Remove(ctx context.Context, h tiers.Handle) error {
	if h.Type == tiers.TypeSession {
		return fmt.Errorf("remove %s: %w", h, tiers.ErrLocked)
	}
	return r.Backend.Remove(ctx, h)
}

// SetClock passes now to the wrapped backend when it takes a clock
// (Memory.SetClock).
func (r RetainedSessions) SetClock(now func() time.Time) {
	if c, ok := r.Backend.(interface{ SetClock(func() time.Time) }); ok {
		c.SetClock(now)
	}
}
