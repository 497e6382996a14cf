// Package netem impairs network paths for tests and benchmarks (this
// kernel has no netem qdisc). It offers two tools.
//
// Link (Linux, root) is a packet-level path between two network
// namespaces: TUN devices joined by a user-space bridge that adds the
// delay, with loss from nftables and a rate cap from htb inside the
// namespaces. Nothing is terminated, so TCP and QUIC endpoints see the
// same round-trip time, losses and rate end to end; comparisons of QUIC
// with TCP (drpipe with rsync) use it. See link_linux.go.
//
// The proxies are lighter and need no privileges: a UDP proxy (for QUIC)
// and a TCP proxy forward traffic between a listening address and a
// target while adding delay, jitter, random loss and a bandwidth cap, and
// can cut the link on command. Proxy model: each direction is a link with a serialization rate (bandwidth
// cap; 0 = unlimited) and a bounded queue (tail drop when the queue
// holds more than QueueDelay of traffic at that rate), then a propagation
// delay of Delay ± Jitter. UDP datagrams are lost independently with
// probability Loss; TCP carries a byte stream, so the TCP proxy applies
// delay, jitter (without reordering) and the rate cap but not loss (use
// iptables' statistic match in a network namespace for TCP loss). Note
// that the TCP proxy terminates TCP on both sides: the endpoints' TCP
// stacks do not see the added delay as RTT, so they are not slowed by it
// the way a long link would slow them.
//
// Cut drops every datagram (UDP) or closes every connection and refuses
// new ones (TCP) until Restore.
package netem

import (
	"container/heap"
	"math/rand/v2"
	"sync"
	"time"
)

// Impairment describes one direction of a link.
type Impairment struct {
	Delay  time.Duration // one-way propagation delay
	Jitter time.Duration // uniform in [-Jitter, +Jitter], never below 0
	Loss   float64       // probability of dropping a datagram (UDP only)
	// Rate caps the bandwidth in bytes per second (0 = unlimited).
	Rate int64
	// QueueDelay bounds the queue at Rate (default 100 ms of traffic).
	QueueDelay time.Duration
}

// shaper computes when a packet of n bytes leaves the link, or drops it.
type shaper struct {
	mu     sync.Mutex
	imp    Impairment
	rng    *rand.Rand
	txFree time.Time // when the serializer is free
	last   time.Time // last delivery time (for no-reorder mode)
	drops  int64
	cut    bool
}

func newShaper(imp Impairment, seed uint64) *shaper {
	return &shaper{imp: imp, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// schedule returns the delivery time of n bytes arriving now, or false to
// drop them. With ordered, deliveries never overtake each other.
func (s *shaper) schedule(now time.Time, n int, lossy, ordered bool) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		s.drops++
		return time.Time{}, false
	}
	if lossy && s.imp.Loss > 0 && s.rng.Float64() < s.imp.Loss {
		s.drops++
		return time.Time{}, false
	}
	out := now
	if s.imp.Rate > 0 {
		start := now
		if s.txFree.After(start) {
			start = s.txFree
		}
		qd := s.imp.QueueDelay
		if qd <= 0 {
			qd = 100 * time.Millisecond
		}
		if lossy && start.Sub(now) > qd {
			s.drops++
			return time.Time{}, false
		}
		s.txFree = start.Add(time.Duration(float64(n) / float64(s.imp.Rate) * float64(time.Second)))
		out = s.txFree
	}
	d := s.imp.Delay
	if j := s.imp.Jitter; j > 0 {
		d += time.Duration(s.rng.Int64N(int64(2*j+1))) - j
		if d < 0 {
			d = 0
		}
	}
	out = out.Add(d)
	if ordered && out.Before(s.last) {
		out = s.last
	}
	s.last = out
	return out, true
}

func (s *shaper) set(imp Impairment) {
	s.mu.Lock()
	s.imp = imp
	s.mu.Unlock()
}

func (s *shaper) setCut(on bool) {
	s.mu.Lock()
	s.cut = on
	s.mu.Unlock()
}

// delayQueue delivers items at their due times, in due-time order.
type delayQueue struct {
	mu     sync.Mutex
	h      itemHeap
	seq    uint64
	wake   chan struct{}
	closed chan struct{}
}

type item struct {
	due time.Time
	seq uint64
	fn  func()
}

type itemHeap []item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h itemHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)   { *h = append(*h, x.(item)) }
func (h *itemHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newDelayQueue() *delayQueue {
	q := &delayQueue{wake: make(chan struct{}, 1), closed: make(chan struct{})}
	go q.run()
	return q
}

func (q *delayQueue) add(due time.Time, fn func()) {
	q.mu.Lock()
	q.seq++
	heap.Push(&q.h, item{due: due, seq: q.seq, fn: fn})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *delayQueue) close() { close(q.closed) }

func (q *delayQueue) run() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		q.mu.Lock()
		var wait time.Duration = time.Hour
		for q.h.Len() > 0 {
			d := time.Until(q.h[0].due)
			if d > 0 {
				wait = d
				break
			}
			it := heap.Pop(&q.h).(item)
			q.mu.Unlock()
			it.fn()
			q.mu.Lock()
		}
		q.mu.Unlock()
		t.Reset(wait)
		select {
		case <-t.C:
		case <-q.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-q.closed:
			return
		}
	}
}
