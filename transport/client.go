package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

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
	// Streams is the number of objects sent in parallel (default 8).
	Streams int
	// Limiter, if set, bounds the rate of object bytes sent.
	Limiter *Limiter
	// SnapshotMeta returns the host and time of a snapshot object, sent
	// along with it so the site can report per-host state without the
	// key. nil sends snapshots without metadata.
	SnapshotMeta func(ctx context.Context, name string) (*SnapshotMeta, error)
	// Progress, if set, receives progress.
	Progress Progress
	// Program identifies the client in the site's logs.
	Program string
	// BatchSize is the number of names per Offer (default and limit
	// MaxOfferBatch).
	BatchSize int
	// Timeout bounds each exchange on the control stream and the wait
	// for each object's result after its last byte (default 2m).
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
	// WireBytesSent is what the connection put on the network
	// (protocol, retransmissions and TLS included); 0 when unknown.
	WireBytesSent     uint64        `json:"wire_bytes_sent"`
	WireBytesReceived uint64        `json:"wire_bytes_received"`
	Duration          time.Duration `json:"-"`
	DurationSec       float64       `json:"duration_s"`
}

// Replicate copies to the site every object of src that the site lacks,
// over c: config and keys, then data (shards) in parallel, then index
// objects, then snapshots, each class sealed complete before the next may
// commit (see the package doc). It is safe to run again after any failure
// or cut: committed objects are not sent again. It does not close c.
func Replicate(ctx context.Context, c Conn, src tiers.Backend, o ReplicateOptions) (*Report, error) {
	if o.Streams <= 0 {
		o.Streams = 8
	}
	if o.BatchSize <= 0 || o.BatchSize > MaxOfferBatch {
		o.BatchSize = MaxOfferBatch
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	start := time.Now()
	cfg, err := repo.ReadConfig(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("replicate: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	ctl, w, err := openSession(ctx, c, Hello{Purpose: PurposeReplicate, RepoID: cfg.ID, Program: o.Program}, o.Timeout)
	if err != nil {
		return nil, err
	}
	defer ctl.Abort()
	if !w.RepoID.IsNull() && w.RepoID != cfg.ID {
		return nil, fmt.Errorf("replicate: the site holds repository %s, this is %s", w.RepoID.Short(), cfg.ID.Short())
	}
	rep := &Report{Site: w.SiteName, Offered: map[tiers.Type]TypeStats{}, Sent: map[tiers.Type]TypeStats{}}

	// List in reverse dependency order: every snapshot listed is
	// durable, so the index and data it references are listed after it.
	lists := map[tiers.Type][]OfferEntry{}
	for i := len(phaseTypes) - 1; i >= 0; i-- {
		t := phaseTypes[i]
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

	var mu sync.Mutex // guards rep.Sent, rep.Snapshots
	jobs := make(chan job)
	var workers sync.WaitGroup
	for range o.Streams {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				if ctx.Err() != nil {
					j.done.Done()
					continue
				}
				if err := sendObject(ctx, c, src, j, o); err != nil {
					cancel(err)
				} else {
					mu.Lock()
					s := rep.Sent[j.h.Type]
					s.add(j.size)
					rep.Sent[j.h.Type] = s
					rep.SentTotal.add(j.size)
					if j.h.Type == tiers.TypeSnapshot {
						rep.Snapshots = append(rep.Snapshots, j.h.Name)
					}
					mu.Unlock()
				}
				j.done.Done()
			}
		}()
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
	for _, t := range phaseTypes {
		var phase sync.WaitGroup
		entries := lists[t]
		for off := 0; off < len(entries); off += o.BatchSize {
			batch := entries[off:min(off+o.BatchSize, len(entries))]
			want, err := exchangeOffer(ctx, ctl, Offer{Type: t, Entries: batch}, o.Timeout)
			if err != nil {
				return fail(err)
			}
			var n int
			var b int64
			for i, e := range batch {
				st := rep.Offered[t]
				st.add(e.Size)
				rep.Offered[t] = st
				if want[i] {
					n++
					b += e.Size
				}
			}
			if o.Progress != nil && n > 0 {
				o.Progress.Want(n, b)
			}
			for i, e := range batch {
				if !want[i] {
					continue
				}
				phase.Add(1)
				select {
				case jobs <- job{h: tiers.Handle{Type: t, Name: e.Name}, size: e.Size, done: &phase}:
				case <-ctx.Done():
					phase.Done()
					phase.Wait()
					return fail(context.Cause(ctx))
				}
			}
		}
		phase.Wait()
		if ctx.Err() != nil {
			return fail(context.Cause(ctx))
		}
		if err := exchangeSeal(ctx, ctl, t, o.Timeout); err != nil {
			return fail(err)
		}
	}
	stop()
	for _, e := range lists[tiers.TypeSnapshot] {
		rep.SiteSnapshots = append(rep.SiteSnapshots, e.Name)
	}
	// Say goodbye and wait for the site to acknowledge by ending its side.
	ctl.SetDeadline(time.Now().Add(o.Timeout))
	if err := WriteFrame(ctl, FrameBye, nil); err == nil {
		ctl.CloseWrite()
		_, _ = io.Copy(io.Discard, io.LimitReader(ctl, MaxFramePayload))
	}
	if ws, ok := c.(WireStats); ok {
		rep.WireBytesSent, rep.WireBytesReceived = ws.WireBytes()
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

// openSession opens the control stream and exchanges Hello and Welcome.
func openSession(ctx context.Context, c Conn, h Hello, timeout time.Duration) (Stream, Welcome, error) {
	octx, ocancel := context.WithTimeout(ctx, timeout)
	ctl, err := c.OpenStream(octx)
	ocancel()
	if err != nil {
		return nil, Welcome{}, fmt.Errorf("open control stream to the site: %w", err)
	}
	ctl.SetDeadline(time.Now().Add(timeout))
	if err := WriteFrame(ctl, FrameHello, h.encode()); err != nil {
		ctl.Abort()
		return nil, Welcome{}, fmt.Errorf("session with the site: %w", err)
	}
	f, err := readReply(ctl, FrameWelcome)
	if err != nil {
		ctl.Abort()
		return nil, Welcome{}, fmt.Errorf("session with the site: %w", err)
	}
	w, err := decodeWelcome(f.Payload)
	if err != nil {
		ctl.Abort()
		return nil, Welcome{}, fmt.Errorf("session with the site: %w", err)
	}
	ctl.SetDeadline(time.Time{})
	return ctl, w, nil
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

func exchangeOffer(ctx context.Context, ctl Stream, m Offer, timeout time.Duration) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	ctl.SetDeadline(time.Now().Add(timeout))
	defer ctl.SetDeadline(time.Time{})
	if err := WriteFrame(ctl, FrameOffer, m.encode()); err != nil {
		return nil, fmt.Errorf("offer %d %s objects: %w", len(m.Entries), m.Type, err)
	}
	f, err := readReply(ctl, FrameWant)
	if err != nil {
		return nil, fmt.Errorf("offer %d %s objects: %w", len(m.Entries), m.Type, err)
	}
	w, err := decodeWant(f.Payload)
	if err != nil {
		return nil, err
	}
	if len(w.Want) != len(m.Entries) {
		return nil, fmt.Errorf("%w: Want has %d entries for an Offer of %d", ErrProtocol, len(w.Want), len(m.Entries))
	}
	return w.Want, nil
}

func exchangeSeal(ctx context.Context, ctl Stream, t tiers.Type, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	ctl.SetDeadline(time.Now().Add(timeout))
	defer ctl.SetDeadline(time.Time{})
	if err := WriteFrame(ctl, FrameSeal, Seal{Type: t}.encode()); err != nil {
		return fmt.Errorf("seal %s: %w", t, err)
	}
	f, err := readReply(ctl, FrameSealed)
	if err != nil {
		return fmt.Errorf("seal %s: %w", t, err)
	}
	m, err := decodeSealed(f.Payload)
	if err != nil {
		return err
	}
	if m.Type != t {
		return fmt.Errorf("%w: Sealed %s for Seal %s", ErrProtocol, m.Type, t)
	}
	return nil
}

// sendObject sends one object on its own stream and waits for the site's
// verdict.
func sendObject(ctx context.Context, c Conn, src tiers.Backend, j job, o ReplicateOptions) error {
	p := Put{Type: j.h.Type, Name: j.h.Name, Size: j.size}
	if j.h.Type == tiers.TypeSnapshot && o.SnapshotMeta != nil {
		m, err := o.SnapshotMeta(ctx, j.h.Name)
		if err != nil {
			return fmt.Errorf("read snapshot %s for its host and time: %w", j.h.Name[:8], err)
		}
		p.Meta = m
	}
	st, err := c.OpenStream(ctx)
	if err != nil {
		return fmt.Errorf("send %s: open stream: %w", j.h, err)
	}
	ok := false
	defer func() {
		if !ok {
			st.Abort()
		}
	}()
	// Abort the stream when ctx ends, so a blocked write returns.
	stopWatch := context.AfterFunc(ctx, st.Abort)
	defer stopWatch()
	if err := WriteFrame(st, FramePut, p.encode()); err != nil {
		return fmt.Errorf("send %s: %w", j.h, err)
	}
	var calls atomic.Int32
	w := &limitedWriter{w: st, wait: func(n int) error { return o.Limiter.WaitN(ctx, n) }, n: func(n int) {
		if o.Progress != nil {
			o.Progress.Sent(int64(n))
		}
	}}
	lerr := src.Load(ctx, j.h, 0, 0, func(rd io.Reader) error {
		if calls.Add(1) > 1 {
			return errors.New("source retried a read after bytes were sent")
		}
		n, err := io.Copy(w, rd)
		if err == nil && n != j.size {
			err = fmt.Errorf("object is %d bytes now, %d when listed", n, j.size)
		}
		return err
	})
	if lerr != nil {
		// A refusal may explain a failed write: prefer the site's word.
		if res, err := readResult(st, o.Timeout); err == nil && res.Code != CodeOK {
			return fmt.Errorf("send %s: %w", j.h, &RemoteError{res.Code, res.Message})
		}
		return fmt.Errorf("send %s: %w", j.h, lerr)
	}
	if err := st.CloseWrite(); err != nil {
		return fmt.Errorf("send %s: %w", j.h, err)
	}
	res, err := readResult(st, o.Timeout)
	if err != nil {
		return fmt.Errorf("send %s: %w", j.h, err)
	}
	if res.Code != CodeOK {
		return fmt.Errorf("send %s: %w", j.h, &RemoteError{res.Code, res.Message})
	}
	// Read the site's end of the stream so the stream completes.
	st.SetDeadline(time.Now().Add(o.Timeout))
	var one [1]byte
	_, _ = io.ReadFull(st, one[:])
	ok = true
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
	if err := WriteFrame(ctl, FrameStatusRequest, nil); err != nil {
		return nil, fmt.Errorf("site status: %w", err)
	}
	f, err := readReply(ctl, FrameStatusReply)
	if err != nil {
		return nil, fmt.Errorf("site status: %w", err)
	}
	var st Status
	if err := json.Unmarshal(f.Payload, &st); err != nil {
		return nil, fmt.Errorf("%w: status reply is not valid JSON: %v", ErrProtocol, err)
	}
	if err := WriteFrame(ctl, FrameBye, nil); err == nil {
		ctl.CloseWrite()
		_, _ = io.Copy(io.Discard, io.LimitReader(ctl, MaxFramePayload))
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
