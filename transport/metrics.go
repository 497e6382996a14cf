package transport

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the site's Prometheus metrics, in their own registry. A nil
// *Metrics records nothing.
type Metrics struct {
	reg          *prometheus.Registry
	bytes        *prometheus.CounterVec
	objects      *prometheus.CounterVec
	errors       *prometheus.CounterVec
	lastSnapshot *prometheus.GaugeVec
	sessions     prometheus.Counter
	active       prometheus.Gauge

	mu     sync.Mutex
	newest map[string]float64

	scrub scrubMetrics
}

// NewMetrics creates the metrics and their registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg:    prometheus.NewRegistry(),
		newest: map[string]float64{},
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drpipe_site_received_bytes_total",
			Help: "Bytes of verified objects committed by the DR site, by object type.",
		}, []string{"type"}),
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drpipe_site_received_objects_total",
			Help: "Verified objects committed by the DR site, by object type.",
		}, []string{"type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drpipe_site_errors_total",
			Help: "Refused objects, refused connections and failed sessions, by reason.",
		}, []string{"reason"}),
		lastSnapshot: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "drpipe_site_last_snapshot_timestamp_seconds",
			Help: "Time of the newest complete snapshot per host, as asserted by the client that sent it (the site cannot decrypt snapshots).",
		}, []string{"host"}),
		sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drpipe_site_sessions_total",
			Help: "Sessions accepted (after mutual TLS).",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drpipe_site_active_sessions",
			Help: "Sessions in progress.",
		}),
	}
	m.scrub = newScrubMetrics()
	m.reg.MustRegister(m.scrub.collectors()...)
	m.reg.MustRegister(m.bytes, m.objects, m.errors, m.lastSnapshot, m.sessions, m.active,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *Metrics) object(t string, n int64) {
	if m == nil {
		return
	}
	m.bytes.WithLabelValues(t).Add(float64(n))
	m.objects.WithLabelValues(t).Inc()
}

// Error counts one refusal or failure.
func (m *Metrics) Error(reason string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(reason).Inc()
}

func (m *Metrics) snapshot(host string, unix float64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Keep the newest: sessions may deliver older snapshots later.
	if cur, ok := m.newest[host]; !ok || unix > cur {
		m.newest[host] = unix
		m.lastSnapshot.WithLabelValues(host).Set(unix)
	}
}

// session adds delta to the sessions in progress (a connection counts
// from its handshake until it ends or joins another's session).
func (m *Metrics) session(delta int) {
	if m == nil {
		return
	}
	m.active.Add(float64(delta))
}

// sessionStarted counts a session that started (replicate or status),
// once its Hello is accepted; connections joining a running session are
// part of it and not counted.
func (m *Metrics) sessionStarted() {
	if m == nil {
		return
	}
	m.sessions.Inc()
}
