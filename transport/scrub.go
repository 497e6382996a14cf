package transport

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drpipe/drpipe/tiers"
)

// scrubLoop scrubs the site's repository every ScrubInterval, the first
// time one interval after the start, until ctx ends: every object is
// verified against its name, lost shards are rebuilt from parity, and
// what cannot be rebuilt is removed, so that the next replication from a
// primary that still holds it sends it again (replication sends what the
// site lacks).
func (s *Server) scrubLoop(ctx context.Context) {
	t := time.NewTicker(s.o.ScrubInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.scrubOnce(ctx)
	}
}

// scrubOnce runs one scrub of the site's repository, logs what it found
// and did, and records it in the metrics.
func (s *Server) scrubOnce(ctx context.Context) *tiers.ScrubReport {
	s.log.Info("scrub started", "dir", s.o.Dir)
	rep, err := tiers.Scrub(ctx, s.store, tiers.ScrubOptions{Workers: 1, RemoveDamaged: true})
	if ctx.Err() != nil {
		s.log.Info("scrub stopped by the shutdown", "packs", rep.Packs)
		return rep
	}
	s.m.scrubbed(rep, err, s.o.Now())
	for _, p := range rep.Rebuilt {
		if len(p.NotStored) > 0 {
			s.log.Error("scrub: rebuilt shards still read damaged once stored", "pack", p.Pack.String(), "shards", p.Rebuilt, "not_stored", p.NotStored, "err", p.Error)
			continue
		}
		s.log.Warn("scrub rebuilt lost shards from parity", "pack", p.Pack.String(), "shards", p.Rebuilt, "missing", p.Missing, "damaged", p.Corrupt)
	}
	for _, p := range rep.Lost {
		s.log.Error("scrub: pack lost here, fewer than K intact shards; its damaged shards were removed, and the next replication from a primary that holds it sends them again",
			"pack", p.Pack.String(), "missing", p.Missing, "damaged", p.Corrupt, "removed", p.Removed)
	}
	for _, p := range rep.Unread {
		s.log.Warn("scrub: shards could not be read, the pack was not verified", "pack", p.Pack.String(), "err", p.Error)
	}
	for _, o := range rep.DamagedObjects {
		s.log.Error("scrub: object damaged", "object", o.Object, "err", o.Error, "removed", o.Removed)
	}
	attrs := []any{"packs", rep.Packs, "shards", rep.Shards, "objects", rep.Objects, "bytes", rep.Bytes,
		"packs_rebuilt", rep.PacksRebuilt, "shards_not_stored", rep.ShardsNotStored, "packs_lost", rep.PacksLost, "packs_unread", rep.PacksUnread,
		"damaged", rep.Damaged, "objects_unread", rep.ObjectsUnread, "removed", rep.Removed, "duration_s", rep.Duration}
	switch {
	case err != nil:
		s.log.Error("scrub failed", append(attrs, "err", err)...)
	case rep.Clean():
		s.log.Info("scrub finished", attrs...)
	default:
		s.log.Warn("scrub finished with damage left", attrs...)
	}
	return rep
}

// scrubMetrics are the site's metrics of its scrubs (ServerOptions.ScrubInterval).
type scrubMetrics struct {
	last, duration, lost, damaged, clean prometheus.Gauge
	rebuilt, removed, failed             prometheus.Counter
}

func newScrubMetrics() scrubMetrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return scrubMetrics{
		last:     g("drpipe_site_scrub_last_timestamp_seconds", "End of the last scrub of the site's repository that ran to its end."),
		duration: g("drpipe_site_scrub_duration_seconds", "Duration of the last scrub that ran to its end."),
		lost:     g("drpipe_site_scrub_packs_lost", "Packs the last scrub found with fewer than K intact shards (their damaged shards removed, for replication to send again)."),
		damaged:  g("drpipe_site_scrub_damaged_objects", "Index, snapshot, key and tombstone objects the last scrub found damaged (and removed)."),
		clean:    g("drpipe_site_scrub_clean", "1 when the last scrub left no damage (none lost, unread, damaged or not stored), else 0."),
		rebuilt:  c("drpipe_site_scrub_shards_rebuilt_total", "Shards scrubs rebuilt from parity."),
		removed:  c("drpipe_site_scrub_objects_removed_total", "Damaged objects scrubs removed, for replication to send again."),
		failed:   c("drpipe_site_scrub_failures_total", "Scrubs that stopped on an error (listing, rewriting or removing)."),
	}
}

func (s scrubMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.last, s.duration, s.lost, s.damaged, s.clean, s.rebuilt, s.removed, s.failed}
}

// scrubbed records a scrub's report (and error) at time now.
func (m *Metrics) scrubbed(rep *tiers.ScrubReport, err error, now time.Time) {
	if m == nil {
		return
	}
	m.scrub.rebuilt.Add(float64(rep.ShardsRebuilt))
	m.scrub.removed.Add(float64(rep.Removed))
	if err != nil {
		m.scrub.failed.Inc()
		return
	}
	m.scrub.last.Set(float64(now.UnixNano()) / 1e9)
	m.scrub.duration.Set(rep.Duration)
	m.scrub.lost.Set(float64(rep.PacksLost))
	m.scrub.damaged.Set(float64(rep.Damaged))
	clean := 0.0
	if rep.Clean() {
		clean = 1
	}
	m.scrub.clean.Set(clean)
}
