package transport

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// Progress receives replication progress. Calls may come from several
// goroutines at once.
type Progress interface {
	// Want is called when the site asked for objects totalling bytes.
	Want(objects int, bytes int64)
	// Sent is called as object bytes are written to the network.
	Sent(bytes int64)
}

// ReplicateOptions tune Replicate; zero values pick defaults.
type ReplicateOptions struct {
	// Streams is the number of objects written in parallel over all
	// connections (default one per connection). Each writer sends its
	// objects back to back, without waiting for the site's verdict on
	// one before writing the next.
	Streams int
	// Connections is the number of connections the session's object
	// streams are spread over (default 1). The first is the Conn given to
	// Replicate; the others are opened with Dial and join its session.
	// Several connections help on lossy long links, where one
	// connection's congestion control caps its rate.
	Connections int
	// Dial opens another connection to the same site; required when
	// Connections > 1. Replicate closes the connections it dialed.
	Dial func(ctx context.Context) (Conn, error)
	// Limiter, if set, bounds the rate of object bytes sent.
	Limiter *Limiter
	// SnapshotMeta returns the host and time of a snapshot object, sent
	// along with it so the site can report per-host state without the
	// key. nil sends snapshots without metadata. It is first called after
	// every data and index object has been sent, so it may wait for a
	// slow start-up (such as unlocking the repository key).
	SnapshotMeta func(ctx context.Context, name string) (*SnapshotMeta, error)
	// Progress, if set, receives progress.
	Progress Progress
	// Program identifies the client in the site's logs.
	Program string
	// BatchSize is the number of names per Offer (default and limit
	// MaxOfferBatch).
	BatchSize int
	// Window is the number of data objects offered at a time (default
	// DefaultWindow): data is listed, offered and sent window by window,
	// so that neither side holds the names of every pack of a large
	// repository at once.
	Window int
	// Timeout bounds each exchange on the control stream, each wait for
	// the site to take more of an object's bytes and the wait for each
	// object's result after its last byte (default 2m).
	Timeout time.Duration
}

// TypeStats counts objects and bytes.
type TypeStats struct {
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

func (t *TypeStats) add(n int64) { t.Objects++; t.Bytes += n }

// Report says what a replication did.
type Report struct {
	Site string `json:"site"`
	// Offered: objects the primary holds, by type.
	Offered map[tiers.Type]TypeStats `json:"offered"`
	// Sent: objects the site lacked and committed in this run.
	Sent map[tiers.Type]TypeStats `json:"sent"`
	// SentTotal sums Sent.
	SentTotal TypeStats `json:"sent_total"`
	// Snapshots lists the snapshot objects committed in this run.
	Snapshots []string `json:"snapshots"`
	// SiteSnapshots lists every snapshot object the primary offered: when
	// Replicate returns nil, the site holds all of them completely.
	SiteSnapshots []string `json:"-"`
	// Connections is the number of connections the session used.
	Connections int `json:"connections"`
	// WireBytesSent is what the connections put on the network
	// (protocol, retransmissions and TLS included); 0 when unknown.
	WireBytesSent     uint64 `json:"wire_bytes_sent"`
	WireBytesReceived uint64 `json:"wire_bytes_received"`
	// WireBytesLost is the part of WireBytesSent that the congestion
	// controller declared lost and sent again: on a link that drops
	// packets (or a receiver too busy to keep up) this, not
	// drpipe's framing, is what pushes the wire bytes above the object
	// bytes.
	WireBytesLost uint64        `json:"wire_bytes_lost"`
	Duration      time.Duration `json:"-"`
	DurationSec   float64       `json:"duration_s"`
}

// Replicate copies to the site every object of src that the site lacks,
// over c and, with Connections > 1, further connections that join c's
// session: config and keys, then data (shards) in parallel, then index
// objects, then snapshots, each class sealed complete before the next may
// commit (see the package doc). It is safe to run again after any failure
// or cut: committed objects are not sent again. It does not close c.
//
// Round trips are kept few, for long links: the other connections are
// dialed while the first opens the session and join it while the offers
// are answered; all offers are sent before the first answer is read; and
// a class's seal is waited for only where the site needs it (before index
// objects and before snapshots), the others travel with the next seal.
func Replicate(ctx context.Context, c Conn, src tiers.Backend, o ReplicateOptions) (*Report, error) {
	if o.Connections <= 0 {
		o.Connections = 1
	}
	if o.Connections > 1 && o.Dial == nil {
		return nil, errors.New("replicate: several connections requested without a way to dial them")
	}
	if o.Streams <= 0 {
		o.Streams = o.Connections
	}
	o.Streams = max(o.Streams, o.Connections)
	if o.BatchSize <= 0 || o.BatchSize > MaxOfferBatch {
		o.BatchSize = MaxOfferBatch
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	start := time.Now()
	cfg, err := repo.ReadConfig(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("replicate: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Dial the other connections while this one opens the session; they
	// join it once its id is known.
	extra := startExtraConns(ctx, cfg.ID, o)
	defer extra.close()
	ctl, w, err := openSession(ctx, c, Hello{Purpose: PurposeReplicate, RepoID: cfg.ID, Program: o.Program}, o.Timeout)
	if err != nil {
		extra.abort()
		return nil, err
	}
	extra.setSession(w.Session)
	defer ctl.Abort()
	if !w.RepoID.IsNull() && w.RepoID != cfg.ID {
		return nil, fmt.Errorf("replicate: the site holds repository %s, this is %s", w.RepoID.Short(), cfg.ID.Short())
	}
	rep := &Report{Site: w.SiteName, Offered: map[tiers.Type]TypeStats{}, Sent: map[tiers.Type]TypeStats{}, Connections: o.Connections}

	// List in reverse dependency order: every snapshot listed is
	// durable, so the index and data it references are listed after it.
	// Data, listed last, is listed while it is sent, window by window.
	lists := map[tiers.Type][]OfferEntry{}
	for i := len(phaseTypes) - 1; i >= 0; i-- {
		t := phaseTypes[i]
		if t == tiers.TypeData {
			continue
		}
		var l []OfferEntry
		err := src.List(ctx, t, func(oi tiers.ObjectInfo) error {
			if CheckName(oi.Handle) != nil {
				return nil // not a replicated object (check reports it)
			}
			l = append(l, OfferEntry{Name: oi.Handle.Name, Size: oi.Size})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("replicate: list %s in %s: %w", t, src.Location(), err)
		}
		lists[t] = l
	}

	// Offer, pipelined: one round trip however many batches. All but
	// the data at once (the other connections join meanwhile); the data
	// in windows as it is sent (sendData).
	perType := map[tiers.Type][]OfferEntry{}
	offer := func(lists map[tiers.Type][]OfferEntry) error {
		var batches []Offer
		for _, t := range phaseTypes {
			entries := lists[t]
			for off := 0; off < len(entries); off += o.BatchSize {
				batches = append(batches, Offer{Type: t, Entries: entries[off:min(off+o.BatchSize, len(entries))]})
			}
		}
		if len(batches) == 0 {
			return nil
		}
		wanted, err := exchangeOffers(ctx, ctl, batches, o.Timeout)
		if err != nil {
			return err
		}
		for i, b := range batches {
			var n int
			var bytes int64
			for k, e := range b.Entries {
				st := rep.Offered[b.Type]
				st.add(e.Size)
				rep.Offered[b.Type] = st
				if wanted[i][k] {
					n++
					bytes += e.Size
					perType[b.Type] = append(perType[b.Type], e)
				}
			}
			if o.Progress != nil && n > 0 {
				o.Progress.Want(n, bytes)
			}
		}
		// Largest first: the small objects fill in at the end, so the
		// connections finish a phase together.
		for _, l := range perType {
			slices.SortStableFunc(l, func(a, b OfferEntry) int { return cmp.Compare(b.Size, a.Size) })
		}
		return nil
	}
	if err := offer(lists); err != nil {
		return nil, err
	}
	conns, err := extra.wait(c)
	if err != nil {
		return nil, err
	}

	// Each writer sends objects back to back on its connection: it
	// writes the next object while the site verifies and commits the
	// previous ones, so a connection never idles for a round trip, and
	// objects complete in order, which keeps the tail of a phase short.
	var mu sync.Mutex // guards rep.Sent, rep.Snapshots
	jobs := make(chan job)
	var workers sync.WaitGroup
	for i := range o.Streams {
		wc := conns[i%len(conns)]
		workers.Go(func() {
			var verdicts sync.WaitGroup
			defer verdicts.Wait()
			inFlight := make(chan struct{}, maxAwaiting)
			for j := range jobs {
				if ctx.Err() != nil {
					j.done.Done()
					continue
				}
				s, err := sendBody(ctx, wc, src, j, o)
				if err != nil {
					cancel(err)
					j.done.Done()
					continue
				}
				inFlight <- struct{}{}
				verdicts.Go(func() {
					defer func() { <-inFlight; j.done.Done() }()
					if err := s.await(o.Timeout); err != nil {
						cancel(err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					st := rep.Sent[j.h.Type]
					st.add(j.size)
					rep.Sent[j.h.Type] = st
					rep.SentTotal.add(j.size)
					if j.h.Type == tiers.TypeSnapshot {
						rep.Snapshots = append(rep.Snapshots, j.h.Name)
					}
				})
			}
		})
	}
	stop := func() { close(jobs); workers.Wait() }

	fail := func(err error) (*Report, error) {
		cancel(err)
		stop()
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		return nil, err
	}

	// send queues the wanted objects of the given types and waits until
	// the site has committed all of them.
	send := func(types ...tiers.Type) error {
		var phase sync.WaitGroup
		for _, t := range types {
			for _, e := range perType[t] {
				phase.Add(1)
				select {
				case jobs <- job{h: tiers.Handle{Type: t, Name: e.Name}, size: e.Size, done: &phase}:
				case <-ctx.Done():
					phase.Done()
					phase.Wait()
					return context.Cause(ctx)
				}
			}
		}
		phase.Wait()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return nil
	}
	// sendData lists the data objects and offers and sends them a window
	// at a time: the site holds at most a window of wanted names, and
	// this side a window of listed ones.
	sendData := func() error {
		var window []OfferEntry
		var flushErr error // the exchange's error, returned as it is
		flush := func() error {
			if len(window) == 0 {
				return nil
			}
			delete(perType, tiers.TypeData)
			if err := offer(map[tiers.Type][]OfferEntry{tiers.TypeData: window}); err != nil {
				flushErr = err
				return err
			}
			window = window[:0]
			flushErr = send(tiers.TypeData)
			return flushErr
		}
		err := src.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
			if CheckName(oi.Handle) != nil {
				return nil // not a replicated object (check reports it)
			}
			window = append(window, OfferEntry{Name: oi.Handle.Name, Size: oi.Size})
			if len(window) >= o.Window {
				return flush()
			}
			return nil
		})
		if flushErr != nil {
			return flushErr // the site's or the network's, not the listing's
		}
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("replicate: list data in %s: %w", src.Location(), err)
		}
		return flush()
	}
	// Config and keys first, so the site holds them before any data; the
	// config before the keys, so that an empty site is claimed for this
	// repository before a key slot lands there (another repository's
	// session racing this one to the empty site is then refused whole).
	// A class is sealed once its objects are committed, but the seals are
	// only waited for where the site needs them: before index objects
	// (data sealed) and before snapshots (index sealed). Classes with
	// nothing to send are sealed together with the next seal.
	steps := [][]tiers.Type{
		{tiers.TypeConfig},
		{tiers.TypeKey},
		{tiers.TypeData},
		{tiers.TypeIndex},
		{tiers.TypeSnapshot},
	}
	var unsealed []tiers.Type
	for _, step := range steps {
		if step[0] == tiers.TypeData {
			if err := sendData(); err != nil {
				return fail(err)
			}
			unsealed = append(unsealed, step...)
			continue
		}
		n := 0
		for _, t := range step {
			n += len(perType[t])
		}
		if n > 0 && (step[0] == tiers.TypeIndex || step[0] == tiers.TypeSnapshot) && len(unsealed) > 0 {
			if err := exchangeSeals(ctx, ctl, unsealed, o.Timeout); err != nil {
				return fail(err)
			}
			unsealed = nil
		}
		if err := send(step...); err != nil {
			return fail(err)
		}
		unsealed = append(unsealed, step...)
	}
	if err := exchangeSeals(ctx, ctl, unsealed, o.Timeout); err != nil {
		return fail(err)
	}
	stop()
	for _, e := range lists[tiers.TypeSnapshot] {
		rep.SiteSnapshots = append(rep.SiteSnapshots, e.Name)
	}
	// Say goodbye on every connection and wait for the site to
	// acknowledge by ending its side. Everything is committed by now:
	// Ctrl-C stops the wait, not the replication's success.
	byeAll := func(st Stream) {
		st.SetDeadline(time.Now().Add(o.Timeout))
		stop := context.AfterFunc(ctx, st.Abort)
		defer stop()
		if err := WriteFrame(st, FrameBye, nil); err == nil {
			st.CloseWrite()
			_, _ = io.Copy(io.Discard, io.LimitReader(st, MaxFramePayload))
		}
	}
	var byes sync.WaitGroup
	for _, j := range extra.joined {
		byes.Go(func() { byeAll(j.ctl) })
	}
	byeAll(ctl)
	byes.Wait()
	for _, wc := range conns {
		if ws, ok := wc.(WireStats); ok {
			s, r, l := ws.WireBytes()
			rep.WireBytesSent += s
			rep.WireBytesReceived += r
			rep.WireBytesLost += l
		}
	}
	rep.Duration = time.Since(start)
	rep.DurationSec = rep.Duration.Seconds()
	return rep, nil
}

type job struct {
	h    tiers.Handle
	size int64
	done *sync.WaitGroup
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// maxAwaiting bounds the objects a writer has sent whose verdict it has
// not received yet.
const maxAwaiting = 8

type joinResult struct {
	c   Conn
	ctl Stream
	err error
}

// extraConns dials and joins the connections beyond the first.
type extraConns struct {
	cancel  context.CancelFunc // ends dials and joins not yet done
	n       int
	results chan joinResult
	ready   chan struct{} // closed once sess is set (zero: the session failed)
	sess    SessionID
	joined  []joinResult
	waited  bool
}

// startExtraConns dials o.Connections-1 connections now; each joins the
// session once setSession names it.
func startExtraConns(ctx context.Context, repoID id.ID, o ReplicateOptions) *extraConns {
	ctx, cancel := context.WithCancel(ctx)
	x := &extraConns{cancel: cancel, n: o.Connections - 1, results: make(chan joinResult, o.Connections), ready: make(chan struct{})}
	for i := 1; i < o.Connections; i++ {
		go func() { x.results <- x.dialAndJoin(ctx, i, repoID, o) }()
	}
	return x
}

func (x *extraConns) dialAndJoin(ctx context.Context, i int, repoID id.ID, o ReplicateOptions) joinResult {
	dctx, dcancel := context.WithTimeout(ctx, o.Timeout)
	c, err := o.Dial(dctx)
	dcancel()
	if err != nil {
		return joinResult{err: fmt.Errorf("replicate: open connection %d of %d to the site: %w", i+1, o.Connections, err)}
	}
	// The session id may be read only once ready is closed: setSession
	// writes it just before.
	ok := false
	select {
	case <-x.ready:
		ok = !x.sess.IsZero() && ctx.Err() == nil
	case <-ctx.Done():
	}
	if !ok {
		c.CloseWithError(CodeOK, "")
		return joinResult{err: fmt.Errorf("replicate: connection %d of %d: no session to join", i+1, o.Connections)}
	}
	ctl, w, err := openSession(ctx, c, Hello{Purpose: PurposeJoin, RepoID: repoID, Session: x.sess, Program: o.Program}, o.Timeout)
	if err == nil && w.Session != x.sess {
		ctl.Abort()
		err = fmt.Errorf("%w: joined session %x, asked for %x", ErrProtocol, w.Session[:4], x.sess[:4])
	}
	if err != nil {
		c.CloseWithError(CodeOK, "")
		return joinResult{err: fmt.Errorf("replicate: connection %d of %d: %w", i+1, o.Connections, err)}
	}
	return joinResult{c: c, ctl: ctl}
}

// setSession lets the dialed connections join session s.
func (x *extraConns) setSession(s SessionID) {
	x.sess = s
	close(x.ready)
}

// abort tells the dialed connections that there is no session.
func (x *extraConns) abort() { close(x.ready) }

// wait collects the joined connections and returns all connections, first
// first; it fails if any could not join.
func (x *extraConns) wait(first Conn) ([]Conn, error) {
	x.waited = true
	defer x.cancel()
	conns := []Conn{first}
	var errs error
	for range x.n {
		j := <-x.results
		if j.err != nil {
			errs = cmp.Or(errs, j.err)
			continue
		}
		x.joined = append(x.joined, j)
		conns = append(conns, j.c)
	}
	return conns, errs
}

// close closes every connection it dialed (collecting them first if
// wait was not called).
func (x *extraConns) close() {
	if !x.waited {
		x.cancel()
		x.wait(nil)
	}
	for _, j := range x.joined {
		j.ctl.Abort()
		j.c.CloseWithError(CodeOK, "done")
	}
}

// openSession opens the control stream and exchanges Hello and Welcome.
func openSession(ctx context.Context, c Conn, h Hello, timeout time.Duration) (Stream, Welcome, error) {
	octx, ocancel := context.WithTimeout(ctx, timeout)
	ctl, err := c.OpenStream(octx)
	ocancel()
	if err != nil {
		return nil, Welcome{}, fmt.Errorf("open control stream to the site: %w", err)
	}
	ctl.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, ctl.Abort) // a stalled site does not hold up Ctrl-C
	defer stop()
	if err := WriteFrame(ctl, FrameHello, h.encode()); err != nil {
		ctl.Abort()
		return nil, Welcome{}, fmt.Errorf("session with the site: %w", cancelCause(ctx, err))
	}
	f, err := readReply(ctl, FrameWelcome)
	if err != nil {
		ctl.Abort()
		return nil, Welcome{}, fmt.Errorf("session with the site: %w", cancelCause(ctx, err))
	}
	w, err := decodeWelcome(f.Payload)
	if err != nil {
		ctl.Abort()
		return nil, Welcome{}, fmt.Errorf("session with the site: %w", err)
	}
	ctl.SetDeadline(time.Time{})
	return ctl, w, nil
}

// cancelCause is err, or the reason ctx ended when it has: a stream
// aborted because ctx ended fails with a reset, which would hide that.
func cancelCause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// readReply reads one frame and turns an Error frame into a RemoteError.
func readReply(st Stream, want FrameType) (Frame, error) {
	f, err := ReadFrame(st)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return Frame{}, fmt.Errorf("site closed the stream while waiting for %s: %w", want, io.ErrUnexpectedEOF)
		}
		return Frame{}, fmt.Errorf("waiting for %s: %w", want, err)
	}
	if f.Type == FrameError {
		re, err := decodeError(f.Payload)
		if err != nil {
			return Frame{}, err
		}
		return Frame{}, re
	}
	if f.Type != want {
		return Frame{}, fmt.Errorf("%w: got %s, want %s", ErrProtocol, f.Type, want)
	}
	return f, nil
}

// exchangeOffer sends one offer and reads its answer.
func exchangeOffer(ctx context.Context, ctl Stream, m Offer, timeout time.Duration) ([]bool, error) {
	w, err := exchangeOffers(ctx, ctl, []Offer{m}, timeout)
	if err != nil {
		return nil, err
	}
	return w[0], nil
}

// exchangeOffers sends every offer and reads the answers, concurrently, so
// that all batches cost one round trip. It returns, per offer, which of
// its entries the site wants.
func exchangeOffers(ctx context.Context, ctl Stream, offers []Offer, timeout time.Duration) ([][]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	defer ctl.SetDeadline(time.Time{})
	ctl.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, ctl.Abort) // a stalled site does not hold up Ctrl-C
	defer stop()
	werr := make(chan error, 1)
	go func() {
		for _, m := range offers {
			if err := WriteFrame(ctl, FrameOffer, m.encode()); err != nil {
				werr <- fmt.Errorf("offer %d %s objects: %w", len(m.Entries), m.Type, err)
				ctl.Abort() // unblocks the reader
				return
			}
		}
		werr <- nil
	}()
	out := make([][]bool, len(offers))
	for i, m := range offers {
		f, err := readReply(ctl, FrameWant)
		if err == nil {
			var w Want
			if w, err = decodeWant(f.Payload); err == nil && len(w.Want) != len(m.Entries) {
				err = fmt.Errorf("%w: Want has %d entries for an Offer of %d", ErrProtocol, len(w.Want), len(m.Entries))
			}
			out[i] = w.Want
		}
		if err != nil {
			ctl.Abort() // unblocks the writer
			var re *RemoteError
			if werr := <-werr; werr != nil && !errors.As(err, &re) {
				return nil, cancelCause(ctx, werr) // the write failed first: the cause
			}
			return nil, fmt.Errorf("offer %d %s objects: %w", len(m.Entries), m.Type, cancelCause(ctx, err))
		}
		// Each answer proves the site alive: extend the deadline.
		ctl.SetDeadline(time.Now().Add(timeout))
	}
	if err := <-werr; err != nil {
		return nil, cancelCause(ctx, err)
	}
	return out, nil
}

// exchangeSeals seals the types in order, pipelined: one round trip.
func exchangeSeals(ctx context.Context, ctl Stream, types []tiers.Type, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	ctl.SetDeadline(time.Now().Add(timeout))
	defer ctl.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, ctl.Abort) // a stalled site does not hold up Ctrl-C
	defer stop()
	var b bytes.Buffer
	for _, t := range types {
		if err := WriteFrame(&b, FrameSeal, Seal{Type: t}.encode()); err != nil {
			return fmt.Errorf("seal %s: %w", t, err)
		}
	}
	if _, err := ctl.Write(b.Bytes()); err != nil {
		return fmt.Errorf("seal %v: %w", types, cancelCause(ctx, err))
	}
	for _, t := range types {
		f, err := readReply(ctl, FrameSealed)
		if err != nil {
			return fmt.Errorf("seal %s: %w", t, cancelCause(ctx, err))
		}
		m, err := decodeSealed(f.Payload)
		if err != nil {
			return err
		}
		if m.Type != t {
			return fmt.Errorf("%w: Sealed %s for Seal %s", ErrProtocol, m.Type, t)
		}
	}
	return nil
}

// exchangeSeal seals one type.
func exchangeSeal(ctx context.Context, ctl Stream, t tiers.Type, timeout time.Duration) error {
	return exchangeSeals(ctx, ctl, []tiers.Type{t}, timeout)
}

// sendObject sends one object on its own stream and waits for the site's
// verdict.
func sendObject(ctx context.Context, c Conn, src tiers.Backend, j job, o ReplicateOptions) error {
	s, err := sendBody(ctx, c, src, j, o)
	if err != nil {
		return err
	}
	return s.await(o.Timeout)
}

// sentObject is an object whose bytes are all written, awaiting the
// site's verdict.
type sentObject struct {
	h         tiers.Handle
	st        Stream
	stopWatch func() bool
}

// sendBody opens a stream and writes the Put frame and the object's
// bytes, then ends its side; the caller must await the verdict. The
// stream is aborted if ctx ends before await returns.
func sendBody(ctx context.Context, c Conn, src tiers.Backend, j job, o ReplicateOptions) (*sentObject, error) {
	p := Put{Type: j.h.Type, Name: j.h.Name, Size: j.size}
	if j.h.Type == tiers.TypeSnapshot && o.SnapshotMeta != nil {
		m, err := o.SnapshotMeta(ctx, j.h.Name)
		if err != nil {
			return nil, fmt.Errorf("read snapshot %s for its host and time: %w", j.h.Name[:8], err)
		}
		p.Meta = m
	}
	st, err := c.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("send %s: open stream: %w", j.h, err)
	}
	// Abort the stream when ctx ends, so a blocked write or read returns.
	s := &sentObject{h: j.h, st: st, stopWatch: context.AfterFunc(ctx, st.Abort)}
	fail := func(err error) (*sentObject, error) {
		s.stopWatch()
		st.Abort()
		return nil, fmt.Errorf("send %s: %w", j.h, err)
	}
	// Every write may wait for the site to take bytes for at most
	// Timeout: a site whose storage hangs, its connection alive, must
	// not hold the replication for ever.
	st.SetDeadline(time.Now().Add(o.Timeout))
	if err := WriteFrame(st, FramePut, p.encode()); err != nil {
		return fail(err)
	}
	var calls atomic.Int32
	w := &limitedWriter{w: st, wait: func(n int) error {
		if err := o.Limiter.WaitN(ctx, n); err != nil {
			return err
		}
		return st.SetDeadline(time.Now().Add(o.Timeout))
	}, n: func(n int) {
		if o.Progress != nil {
			o.Progress.Sent(int64(n))
		}
	}}
	var netErr error // a failed write: the network's fault, not the source's
	lerr := src.Load(ctx, j.h, 0, 0, func(rd io.Reader) error {
		if calls.Add(1) > 1 {
			return errors.New("source retried a read after bytes were sent")
		}
		n, err := io.Copy(writerFunc(func(p []byte) (int, error) {
			n, err := w.Write(p)
			if err != nil {
				netErr = err
			}
			return n, err
		}), rd)
		if err == nil && n != j.size {
			err = fmt.Errorf("object is %d bytes now, %d when listed", n, j.size)
		}
		return err
	})
	if errors.Is(netErr, os.ErrDeadlineExceeded) {
		return fail(fmt.Errorf("the site took none of the object's bytes for %v (its storage may hang; run again to resume): %w", o.Timeout, netErr))
	}
	if netErr != nil {
		// A refusal may explain a failed write: prefer the site's word.
		if res, err := readResult(st, o.Timeout); err == nil && res.Code != CodeOK {
			return fail(&RemoteError{res.Code, res.Message})
		}
		return fail(netErr)
	}
	if lerr != nil {
		// The source failed: the site, still waiting for the rest of
		// the body, has no verdict to wait for.
		return fail(lerr)
	}
	st.SetDeadline(time.Time{}) // await bounds the wait for the verdict
	if err := st.CloseWrite(); err != nil {
		return fail(err)
	}
	return s, nil
}

// await waits for the site's verdict on a sent object.
func (s *sentObject) await(timeout time.Duration) error {
	defer s.stopWatch()
	res, err := readResult(s.st, timeout)
	if err == nil && res.Code != CodeOK {
		err = &RemoteError{res.Code, res.Message}
	}
	if err != nil {
		s.st.Abort()
		return fmt.Errorf("send %s: %w", s.h, err)
	}
	// Read the site's end of the stream so the stream completes.
	s.st.SetDeadline(time.Now().Add(timeout))
	var one [1]byte
	_, _ = io.ReadFull(s.st, one[:])
	return nil
}

func readResult(st Stream, timeout time.Duration) (PutResult, error) {
	st.SetDeadline(time.Now().Add(timeout))
	f, err := readReply(st, FramePutResult)
	if err != nil {
		return PutResult{}, err
	}
	return decodePutResult(f.Payload)
}

// SiteStatus asks the site over c for its status. It does not close c.
func SiteStatus(ctx context.Context, c Conn, timeout time.Duration) (*Status, error) {
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctl, _, err := openSession(ctx, c, Hello{Purpose: PurposeStatus, Program: "drpipe site status"}, timeout)
	if err != nil {
		return nil, err
	}
	defer ctl.Abort()
	ctl.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, ctl.Abort) // a stalled site does not hold up Ctrl-C
	defer stop()
	if err := WriteFrame(ctl, FrameStatusRequest, nil); err != nil {
		return nil, fmt.Errorf("site status: %w", cancelCause(ctx, err))
	}
	f, err := readReply(ctl, FrameStatusReply)
	if err != nil {
		return nil, fmt.Errorf("site status: %w", cancelCause(ctx, err))
	}
	st, err := decodeStatus(f.Payload)
	if err != nil {
		return nil, err
	}
	if err := WriteFrame(ctl, FrameBye, nil); err == nil {
		ctl.CloseWrite()
		_, _ = io.Copy(io.Discard, io.LimitReader(ctl, MaxFramePayload))
	}
	return st, nil
}

// decodeStatus decodes the payload of a site's status reply.
func decodeStatus(p []byte) (*Status, error) {
	var st Status
	if err := json.Unmarshal(p, &st); err != nil {
		return nil, fmt.Errorf("%w: status reply is not valid JSON: %v", ErrProtocol, err)
	}
	return &st, nil
}

func encodeStatus(st *Status) ([]byte, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFramePayload {
		// Keep the summary; drop the client list first.
		st.Clients = st.Clients[:0]
		if b, err = json.Marshal(st); err != nil {
			return nil, err
		}
		if len(b) > MaxFramePayload {
			return nil, fmt.Errorf("status of %d bytes exceeds a frame", len(b))
		}
	}
	return b, nil
}
