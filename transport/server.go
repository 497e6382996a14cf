package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// DefaultMaxObjectSize bounds objects the site accepts unless configured:
// larger than any shard of a 1 GiB pack with K=1.
const DefaultMaxObjectSize = 2 << 30

// ServerOptions configure the DR-site receiver.
type ServerOptions struct {
	// Dir is the site's repository directory, created if missing.
	Dir string
	// Store overrides the backend over Dir (tests wrap it to count or
	// inject faults); it must store into Dir. Default tiers.NewLocal(Dir).
	Store tiers.Backend
	// SiteName is announced to clients.
	SiteName string
	// Logger receives structured logs (default: discard).
	Logger *slog.Logger
	// Metrics, if set, is updated.
	Metrics *Metrics
	// MaxObjectSize bounds a single object (default DefaultMaxObjectSize).
	MaxObjectSize int64
	// MaxOutstanding bounds the objects a session may have been offered
	// and not sent yet (default MaxOutstanding).
	MaxOutstanding int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// HandshakeTimeout bounds the wait for a client's Hello and for each
	// Put header (default 30s).
	HandshakeTimeout time.Duration
	// ShutdownGrace is how long Serve lets running sessions finish after
	// its context ends (default 10s).
	ShutdownGrace time.Duration
	// BodyIdleTimeout bounds each wait for the next bytes of an object's
	// body: a primary that sends nothing for that long (its source hangs)
	// has the object's stream reset, which frees what the object holds at
	// the site (default 10 minutes). It bounds the other way too: a
	// reader (a restore from the site) that takes no bytes of an object
	// for that long has its stream reset, which frees the object's file
	// and the goroutine serving it.
	BodyIdleTimeout time.Duration
	// ScrubInterval, when positive, makes Serve scrub the repository
	// (tiers.Scrub, removing what cannot be rebuilt) that often, the
	// first time one interval after it starts.
	ScrubInterval time.Duration
}

// Server is the DR-site receiver: it accepts sessions from primaries and
// commits verified objects into its repository directory. It needs no
// repository key. Safe for concurrent use; one Server serves many
// sessions at once.
type Server struct {
	o      ServerOptions
	store  tiers.Backend
	owned  bool
	state  *siteState
	log    *slog.Logger
	m      *Metrics
	repoMu sync.Mutex
	repoID id.ID // zero until the site holds a config
	claim  id.ID // the repository whose config is being stored into an empty site
	claims int   // config stores of claim in progress (sessions of one repository may race)

	sessMu   sync.Mutex
	sessions map[SessionID]*session // running replicate sessions, joinable
}

// NewServer opens (creating if needed) the site repository directory.
func NewServer(ctx context.Context, o ServerOptions) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("site server: no repository directory")
	}
	if o.MaxObjectSize <= 0 {
		o.MaxObjectSize = DefaultMaxObjectSize
	}
	if o.MaxOutstanding <= 0 {
		o.MaxOutstanding = MaxOutstanding
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 10 * time.Second
	}
	if o.BodyIdleTimeout <= 0 {
		o.BodyIdleTimeout = 10 * time.Minute
	}
	s := &Server{o: o, log: o.Logger, m: o.Metrics}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if o.Store != nil {
		s.store = o.Store
	} else {
		l, err := tiers.NewLocal(o.Dir)
		if err != nil {
			return nil, fmt.Errorf("site server: %w", err)
		}
		s.store, s.owned = l, true
	}
	st, err := openState(o.Dir, true)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("site server: %w", err)
	}
	s.state = st
	if c, err := repo.ReadConfig(ctx, s.store); err == nil {
		s.repoID = c.ID
	} else if !errors.Is(err, repo.ErrNotRepository) {
		s.Close()
		return nil, fmt.Errorf("site server: %s holds something that is not a drpipe repository: %w", o.Dir, err)
	}
	if ts, ok := s.store.(interface {
		RemoveStaleTemp(ctx context.Context, before time.Time) (int, int64, error)
	}); ok {
		// Objects being received when the site was killed left their
		// temporary files; no object of this server is being received
		// yet, and without the key no prune runs here to remove them.
		// Real time, not the clock option: file times are real.
		n, size, err := ts.RemoveStaleTemp(ctx, time.Now())
		if err != nil {
			s.log.Warn("remove temporary files of objects cut off by a stop", "err", err)
		} else if n > 0 {
			s.log.Info("removed temporary files of objects cut off by a stop", "files", n, "bytes", size)
		}
	}
	for _, r := range st.loadSnapshotRecords() {
		if _, err := s.store.Stat(ctx, tiers.Handle{Type: tiers.TypeSnapshot, Name: r.ID}); err == nil {
			s.m.snapshot(r.Host, float64(r.Time.UnixNano())/1e9)
		}
	}
	return s, nil
}

// Close releases the repository directory.
func (s *Server) Close() error {
	var err error
	if s.state != nil {
		err = s.state.close()
	}
	if s.owned && s.store != nil {
		err = errors.Join(err, s.store.Close())
	}
	return err
}

// Status reports what the site holds (see Status).
func (s *Server) Status(ctx context.Context) (*Status, error) {
	st, err := computeStatus(ctx, s.store, s.state, s.o.Now())
	if err != nil {
		return nil, err
	}
	st.Site = s.o.SiteName
	return st, nil
}

// takeSite lets a session of repository repo store an object of type t.
// Two primaries may both find the site empty at Hello: the first config
// admitted claims the site for its repository, and the other session's
// objects are refused from then on (its config would replace the first,
// its data would mix with the first repository's). release undoes a
// claim whose config was not stored.
func (s *Server) takeSite(repo id.ID, t tiers.Type) (release func(), err error) {
	s.repoMu.Lock()
	defer s.repoMu.Unlock()
	owner := s.repoID
	if owner.IsNull() {
		owner = s.claim
	}
	switch {
	case !owner.IsNull() && owner != repo:
		return nil, refusal(CodeRepoMismatch, "this site now holds repository %s, stored by another primary since this session began; this session replicates repository %s: use another site directory for it", owner.Short(), repo.Short())
	case s.repoID.IsNull() && t == tiers.TypeConfig:
		// The first config claims the empty site; further sessions of
		// the same repository storing their config meanwhile hold the
		// claim with it, so that one of them failing does not free the
		// site while another still stores.
		s.claim = repo
		s.claims++
		var once sync.Once
		return func() {
			once.Do(func() {
				s.repoMu.Lock()
				defer s.repoMu.Unlock()
				if s.claim != repo {
					return
				}
				if s.claims--; s.claims == 0 && s.repoID.IsNull() {
					s.claim = id.ID{}
				}
			})
		}, nil
	}
	return func() {}, nil
}

// noteConfig makes the site the repository whose config its store holds,
// if it holds one.
func (s *Server) noteConfig(ctx context.Context) {
	if c, err := repo.ReadConfig(ctx, s.store); err == nil {
		s.repoMu.Lock()
		s.repoID = c.ID
		s.repoMu.Unlock()
	}
}

func (s *Server) siteRepo() id.ID {
	s.repoMu.Lock()
	defer s.repoMu.Unlock()
	return s.repoID
}

// Serve accepts connections from l until ctx ends, serving each in its own
// goroutine. When ctx ends it stops accepting, lets running sessions
// finish for ShutdownGrace, then closes them (an object being received is
// discarded, never half-committed) and returns nil. It returns an error if
// accepting fails for another reason.
func (s *Server) Serve(ctx context.Context, l Listener) error {
	sessCtx, cancelSessions := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSessions()
	var wg sync.WaitGroup
	var acceptErr error
	if s.o.ScrubInterval > 0 {
		// Stopped when Serve returns, on an accept error as on ctx.
		scrubCtx, stopScrubs := context.WithCancel(ctx)
		var scrubs sync.WaitGroup
		scrubs.Go(func() { s.scrubLoop(scrubCtx) })
		defer func() {
			stopScrubs()
			scrubs.Wait()
		}()
	}
	for {
		c, err := l.Accept(ctx)
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("site server: accept on %s: %w", l.Addr(), err)
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.ServeConn(sessCtx, c)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.o.ShutdownGrace):
		s.log.Info("shutdown grace period over, closing sessions", "grace", s.o.ShutdownGrace)
		cancelSessions()
		<-done
	}
	return acceptErr
}

// session is the state of one replicate (or status) session: started by
// one connection, the owner, whose control stream carries the offers and
// seals; other connections of the same primary may join it and carry
// object streams.
type session struct {
	s    *Server
	id   SessionID
	peer string
	repo id.ID
	log  *slog.Logger

	mu          sync.Mutex
	outstanding map[tiers.Handle]int64
	pending     map[tiers.Type]int
	sealed      map[tiers.Type]bool
	ended       bool            // the owner is gone: no more joins or objects
	joined      map[Conn]string // joined connections -> remote address

	joins   sync.WaitGroup // joined connections still being served
	bytes   atomic.Int64
	objects atomic.Int64
}

// register gives ss a fresh random id and makes it joinable.
func (s *Server) register(ss *session) error {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.sessions == nil {
		s.sessions = map[SessionID]*session{}
	}
	for {
		if _, err := rand.Read(ss.id[:]); err != nil {
			return fmt.Errorf("draw a session id: %w", err)
		}
		if _, dup := s.sessions[ss.id]; !dup && !ss.id.IsZero() {
			break
		}
	}
	s.sessions[ss.id] = ss
	return nil
}

func (s *Server) unregister(ss *session) {
	s.sessMu.Lock()
	delete(s.sessions, ss.id)
	s.sessMu.Unlock()
}

// join adds c to the running session named by h, which must belong to
// the same primary and repository.
func (s *Server) join(c Conn, peer string, h Hello) (*session, error) {
	s.sessMu.Lock()
	ss := s.sessions[h.Session]
	s.sessMu.Unlock()
	if ss == nil || ss.peer != peer {
		// Another primary's session is as unknown as a finished one.
		return nil, refusal(CodeNoSession, "no running session %x of primary %s to join (it ended, or this is another primary's)", h.Session[:4], peer)
	}
	if ss.repo != h.RepoID {
		return nil, refusal(CodeRepoMismatch, "session %x replicates repository %s, the joining connection names %s", h.Session[:4], ss.repo.Short(), h.RepoID.Short())
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return nil, refusal(CodeNoSession, "session %x has ended", h.Session[:4])
	}
	ss.joined[c] = c.RemoteAddr().String()
	ss.joins.Add(1)
	return ss, nil
}

// leave removes a joined connection.
func (ss *session) leave(c Conn) {
	ss.mu.Lock()
	delete(ss.joined, c)
	ss.mu.Unlock()
	ss.joins.Done()
}

// end marks the session over, closes the connections that joined it and
// waits until they are done.
func (ss *session) end() {
	ss.mu.Lock()
	ss.ended = true
	conns := make([]Conn, 0, len(ss.joined))
	for c := range ss.joined {
		conns = append(conns, c)
	}
	ss.mu.Unlock()
	for _, c := range conns {
		c.CloseWithError(CodeShutdown, "the session this connection joined has ended")
	}
	ss.joins.Wait()
}

// ServeConn serves one connection until the client says Bye, the
// connection ends or ctx ends, and closes c. The connection either starts
// a session (replicate or status) or joins a running replicate session of
// the same primary; a session ends with the connection that started it,
// closing the connections that joined it. It returns why the connection
// ended (nil after Bye).
func (s *Server) ServeConn(ctx context.Context, c Conn) (err error) {
	// When ctx ends the connection is closed: that is what ends a session
	// waiting on its control stream, whose reads do not watch ctx.
	stopClose := context.AfterFunc(ctx, func() {
		c.CloseWithError(CodeShutdown, "the DR site is shutting down; run again to resume")
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	peer := c.Peer()
	log := s.log.With("peer", peer, "remote", c.RemoteAddr().String())
	start := s.o.Now()
	var streams sync.WaitGroup
	var ss *session
	owner := false
	defer func() {
		stopClose()
		cancel()
		if err != nil {
			code, msg := CodeBadFrame, err.Error()
			var re *RemoteError
			if errors.As(err, &re) {
				// The client reports the close as a RemoteError of its
				// own, which names the code: send the message alone.
				code, msg = re.Code, re.Message
			}
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				code = CodeShutdown
			}
			c.CloseWithError(code, msg)
		} else {
			c.CloseWithError(CodeOK, "bye")
		}
		streams.Wait()
		if ss != nil && !owner {
			ss.leave(c)
			log.Debug("joined connection ended", "session", fmt.Sprintf("%x", ss.id[:4]), "err", err)
			return
		}
		if ss != nil {
			s.unregister(ss)
			ss.end()
		}
		s.m.session(-1)
		var objs, bytes int64
		if ss != nil {
			objs, bytes = ss.objects.Load(), ss.bytes.Load()
		}
		if objs > 0 {
			if serr := s.state.addSession(peer, start, bytes, objs); serr != nil {
				log.Error("record session", "err", serr)
			}
		}
		lvl := slog.LevelInfo
		if err != nil {
			lvl = slog.LevelWarn
			s.m.Error("session")
		}
		log.Log(context.Background(), lvl, "session ended", "objects", objs, "bytes", bytes,
			"duration", s.o.Now().Sub(start).Round(time.Millisecond).String(), "err", err)
	}()
	owner = true // until a Join says otherwise
	s.m.session(1)

	hctx, hcancel := context.WithTimeout(ctx, s.o.HandshakeTimeout)
	ctl, err := c.AcceptStream(hctx)
	hcancel()
	if err != nil {
		return fmt.Errorf("wait for control stream: %w", err)
	}
	ctl.SetDeadline(s.o.Now().Add(s.o.HandshakeTimeout))
	f, err := ReadFrame(ctl)
	if err != nil {
		return fmt.Errorf("read Hello: %w", err)
	}
	if f.Type != FrameHello {
		return refuseOn(s, ctl, CodeBadFrame, "first frame is %s, want Hello", f.Type)
	}
	hello, err := decodeHello(f.Payload)
	if err != nil {
		return refuseOn(s, ctl, CodeBadFrame, "%v", err)
	}
	ctl.SetDeadline(time.Time{})
	site := s.siteRepo()
	switch hello.Purpose {
	case PurposeReplicate, PurposeJoin:
		if hello.RepoID.IsNull() {
			return refuseOn(s, ctl, CodeBadFrame, "Hello without a repository id")
		}
		if !site.IsNull() && site != hello.RepoID {
			return refuseOn(s, ctl, CodeRepoMismatch, "this site holds repository %s, the client sends repository %s; use another site directory for it", site.Short(), hello.RepoID.Short())
		}
	}
	if hello.Purpose == PurposeRead && !hello.RepoID.IsNull() && !site.IsNull() && site != hello.RepoID {
		return refuseOn(s, ctl, CodeRepoMismatch, "this site holds repository %s, the client reads repository %s", site.Short(), hello.RepoID.Short())
	}
	w := Welcome{RepoID: site, SiteName: s.o.SiteName, MaxObjectSize: uint64(s.o.MaxObjectSize)}
	switch hello.Purpose {
	case PurposeJoin:
		j, err := s.join(c, peer, hello)
		if err != nil {
			return refuseOnErr(s, ctl, err)
		}
		// From here the connection counts as part of j, not as a session.
		ss, owner = j, false
		s.m.session(-1)
		w.Session = ss.id
		log = ss.log.With("remote", c.RemoteAddr().String())
		log.Debug("connection joined session", "session", fmt.Sprintf("%x", ss.id[:4]))
	default:
		ss = &session{s: s, peer: peer, repo: hello.RepoID, log: log, outstanding: map[tiers.Handle]int64{},
			pending: map[tiers.Type]int{}, sealed: map[tiers.Type]bool{}, joined: map[Conn]string{}}
		if hello.Purpose == PurposeReplicate {
			if err := s.register(ss); err != nil {
				return refuseOn(s, ctl, CodeInternal, "%v", err)
			}
			w.Session = ss.id
		}
		s.m.sessionStarted()
		log.Info("session started", "purpose", hello.Purpose, "program", hello.Program)
	}
	if err := WriteFrame(ctl, FrameWelcome, w.encode()); err != nil {
		return err
	}
	if hello.Purpose == PurposeRead {
		streams.Add(1)
		go func() {
			defer streams.Done()
			s.acceptReads(ctx, c, log, &streams)
		}()
	} else if hello.Purpose != PurposeStatus {
		streams.Add(1)
		go func() {
			defer streams.Done()
			ss.acceptObjects(ctx, c, &streams)
		}()
	}
	for {
		f, err := ReadFrame(ctl)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("client closed the control stream without Bye")
			}
			return fmt.Errorf("read control stream: %w", err)
		}
		switch {
		case f.Type == FrameBye:
			ctl.CloseWrite()
			return nil
		case f.Type == FrameStatusRequest && hello.Purpose != PurposeJoin:
			st, err := s.Status(ctx)
			if err != nil {
				return ss.refuse(ctl, CodeInternal, "%v", err)
			}
			b, err := encodeStatus(st)
			if err != nil {
				return ss.refuse(ctl, CodeInternal, "%v", err)
			}
			if err := WriteFrame(ctl, FrameStatusReply, b); err != nil {
				return err
			}
		case hello.Purpose != PurposeReplicate:
			return ss.refuse(ctl, CodeBadFrame, "%s frame on the control stream of a connection that does not own a replicate session", f.Type)
		case f.Type == FrameOffer:
			m, err := decodeOffer(f.Payload)
			if err != nil {
				return ss.refuse(ctl, CodeBadFrame, "%v", err)
			}
			want, err := ss.offer(ctx, m)
			if err != nil {
				return ss.refuseErr(ctl, err)
			}
			if err := WriteFrame(ctl, FrameWant, want.encode()); err != nil {
				return err
			}
		case f.Type == FrameSeal:
			m, err := decodeSeal(f.Payload)
			if err != nil {
				return ss.refuse(ctl, CodeBadFrame, "%v", err)
			}
			if err := ss.seal(m.Type); err != nil {
				return ss.refuseErr(ctl, err)
			}
			if err := WriteFrame(ctl, FrameSealed, Sealed(m).encode()); err != nil {
				return err
			}
		default:
			return ss.refuse(ctl, CodeBadFrame, "unexpected %s frame on the control stream", f.Type)
		}
	}
}

// refuseOn sends an Error frame before a session exists and returns the
// error that ends the connection.
func refuseOn(s *Server, st Stream, code ErrorCode, format string, args ...any) error {
	re := &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
	s.m.Error(code.String())
	_ = WriteFrame(st, FrameError, encodeError(re.Code, re.Message))
	return re
}

func refuseOnErr(s *Server, st Stream, err error) error {
	var re *RemoteError
	if errors.As(err, &re) {
		return refuseOn(s, st, re.Code, "%s", re.Message)
	}
	return refuseOn(s, st, CodeInternal, "%v", err)
}

// refuse sends an Error frame and returns the error that ends the session.
func (ss *session) refuse(st Stream, code ErrorCode, format string, args ...any) error {
	re := &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
	ss.s.m.Error(code.String())
	_ = WriteFrame(st, FrameError, encodeError(re.Code, re.Message))
	return re
}

func (ss *session) refuseErr(st Stream, err error) error {
	var re *RemoteError
	if errors.As(err, &re) {
		return ss.refuse(st, re.Code, "%s", re.Message)
	}
	return ss.refuse(st, CodeInternal, "%v", err)
}

func refusal(code ErrorCode, format string, args ...any) error {
	return &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// offer answers which entries the site lacks and records them as
// outstanding.
func (ss *session) offer(ctx context.Context, m Offer) (Want, error) {
	ss.mu.Lock()
	sealed, outstanding := ss.sealed[m.Type], len(ss.outstanding)
	ss.mu.Unlock()
	if sealed {
		return Want{}, refusal(CodeOrder, "offer of %s after %s was sealed", m.Type, m.Type)
	}
	if max := ss.s.o.MaxOutstanding; outstanding+len(m.Entries) > max {
		// The names of wanted objects are held until they arrive: a
		// client offers data a window at a time (ReplicateOptions.Window).
		return Want{}, refusal(CodeBadFrame, "offer of %d more objects while %d wanted ones have not arrived: this site holds at most %d; send what was wanted first (a client older than this site offers everything at once: upgrade it)", len(m.Entries), outstanding, max)
	}
	want := Want{Want: make([]bool, len(m.Entries))}
	for i, e := range m.Entries {
		h := tiers.Handle{Type: m.Type, Name: e.Name}
		if err := CheckName(h); err != nil {
			return Want{}, refusal(CodeBadName, "offered object name refused: %v", err)
		}
		if e.Size > ss.s.o.MaxObjectSize {
			return Want{}, refusal(CodeTooLarge, "%s is %d bytes, this site accepts at most %d", h, e.Size, ss.s.o.MaxObjectSize)
		}
		oi, err := ss.s.store.Stat(ctx, h)
		// A held snapshot without a record (the site stopped between
		// its commit and the record's write) is wanted again, so that
		// its host and time come with it: it is a small object.
		if err == nil && oi.Size == e.Size && (h.Type != tiers.TypeSnapshot || ss.s.state.hasSnapshot(e.Name)) {
			continue
		}
		if err != nil && !errors.Is(err, tiers.ErrNotFound) {
			return Want{}, refusal(CodeInternal, "stat %s: %v", h, err)
		}
		want.Want[i] = true
		ss.mu.Lock()
		if _, dup := ss.outstanding[h]; !dup {
			ss.pending[h.Type]++
		}
		ss.outstanding[h] = e.Size
		ss.mu.Unlock()
	}
	return want, nil
}

// seal marks t complete when nothing of it is outstanding and every
// earlier class is sealed.
func (ss *session) seal(t tiers.Type) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, x := range phaseTypes {
		if x == t {
			break
		}
		if !ss.sealed[x] {
			return refusal(CodeOrder, "seal of %s before %s", t, x)
		}
	}
	if n := ss.pending[t]; n > 0 {
		return refusal(CodeIncomplete, "seal of %s with %d wanted objects not received", t, n)
	}
	ss.sealed[t] = true
	return nil
}

// admit checks that a Put may proceed now.
func (ss *session) admit(h tiers.Handle, size int64) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return refusal(CodeNoSession, "%s arrived after its session ended", h)
	}
	want, ok := ss.outstanding[h]
	if !ok {
		return refusal(CodeUnsolicited, "%s was not offered and wanted in this session", h)
	}
	if want != size {
		return refusal(CodeUnsolicited, "%s announced with %d bytes, offered with %d", h, size, want)
	}
	switch h.Type {
	case tiers.TypeIndex:
		if !ss.sealed[tiers.TypeData] {
			return refusal(CodeOrder, "index object %s before the data is sealed complete", h.Name)
		}
	case tiers.TypeSnapshot:
		if !ss.sealed[tiers.TypeIndex] {
			return refusal(CodeOrder, "snapshot %s before the data and index are sealed complete", h.Name)
		}
	}
	return nil
}

func (ss *session) committed(h tiers.Handle) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, ok := ss.outstanding[h]; ok {
		delete(ss.outstanding, h)
		ss.pending[h.Type]--
	}
}

func (ss *session) acceptObjects(ctx context.Context, c Conn, wg *sync.WaitGroup) {
	for {
		st, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ss.receive(ctx, st)
		}()
	}
}

// receive handles one object stream.
func (ss *session) receive(ctx context.Context, st Stream) {
	s := ss.s
	st.SetDeadline(s.o.Now().Add(s.o.HandshakeTimeout))
	f, err := ReadFrame(st)
	if err != nil {
		reason, lvl := streamEnded(err, "stream")
		ss.log.Log(ctx, lvl, "object stream", "err", err)
		s.m.Error(reason)
		st.Abort()
		return
	}
	st.SetDeadline(time.Time{})
	h, res, cut := ss.put(ctx, st, f)
	switch {
	case cut != nil:
		reason, lvl := streamEnded(cut, res.Code.String())
		s.m.Error(reason)
		ss.log.Log(ctx, lvl, "object not received", "object", h.String(), "why", reason, "err", cut)
	case res.Code != CodeOK:
		s.m.Error(res.Code.String())
		ss.log.Warn("object refused", "object", h.String(), "code", res.Code.String(), "reason", res.Message)
	}
	st.SetDeadline(s.o.Now().Add(s.o.HandshakeTimeout))
	if err := WriteFrame(st, FramePutResult, res.encode()); err != nil {
		st.Abort()
		return
	}
	st.CloseWrite()
	if res.Code != CodeOK {
		// The body may not have been read: stop receiving rather than
		// drain it; the result written above is still delivered.
		st.CancelRead()
		return
	}
	// The client ends its side right after the body; reading that end
	// completes the stream so it stops counting against the client.
	var one [1]byte
	if n, _ := io.ReadFull(st, one[:]); n > 0 {
		ss.log.Warn("object stream carries bytes after the object", "object", h.String())
		st.Abort()
	}
}

// streamEnded names why a stream failed with err, for the errors metric,
// and the level to log it at. A primary that aborted the stream (Ctrl-C,
// a restore reading no further) or whose connection ended sent nothing
// wrong: "aborted" and "disconnected" are logged at Info. A wait for its
// bytes that timed out is "timeout"; any other failure is counted as
// other.
func streamEnded(err error, other string) (reason string, lvl slog.Level) {
	switch {
	case errors.Is(err, ErrStreamAborted):
		return "aborted", slog.LevelInfo
	case errors.Is(err, net.ErrClosed):
		return "disconnected", slog.LevelInfo
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout", slog.LevelWarn
	}
	return other, slog.LevelWarn
}

// idleReader reads an object's body from st, bounding each wait for
// bytes by timeout.
type idleReader struct {
	st      Stream
	timeout time.Duration
	now     func() time.Time
}

func (r idleReader) Read(p []byte) (int, error) {
	r.st.SetDeadline(r.now().Add(r.timeout))
	return r.st.Read(p)
}

// idleWriter writes an object's body to st, bounding each wait for the
// peer to take more bytes by timeout.
type idleWriter struct {
	st      Stream
	timeout time.Duration
	now     func() time.Time
}

func (w idleWriter) Write(p []byte) (int, error) {
	w.st.SetDeadline(w.now().Add(w.timeout))
	return w.st.Write(p)
}

// put receives the object whose Put header is f and commits it once
// verified. The error is the stream's when the body could not be read
// (the stream failed): nothing was committed, and the result is what the
// site would answer.
func (ss *session) put(ctx context.Context, st Stream, f Frame) (tiers.Handle, PutResult, error) {
	s := ss.s
	if f.Type != FramePut {
		return tiers.Handle{}, PutResult{CodeBadFrame, fmt.Sprintf("first frame of an object stream is %s, want Put", f.Type)}, nil
	}
	m, err := decodePut(f.Payload)
	if err != nil {
		return tiers.Handle{}, PutResult{CodeBadFrame, err.Error()}, nil
	}
	h := tiers.Handle{Type: m.Type, Name: m.Name}
	if err := CheckName(h); err != nil {
		return h, PutResult{CodeBadName, fmt.Sprintf("object name refused: %v", err)}, nil
	}
	if err := ss.admit(h, m.Size); err != nil {
		re := err.(*RemoteError)
		return h, PutResult{re.Code, re.Message}, nil
	}
	release, err := s.takeSite(ss.repo, h.Type)
	if err != nil {
		re := err.(*RemoteError)
		return h, PutResult{re.Code, re.Message}, nil
	}
	stored := false
	defer func() {
		if !stored {
			release()
		}
	}()
	var extra func(*repo.Config, []byte) error
	if h.Type == tiers.TypeConfig {
		extra = func(c *repo.Config, raw []byte) error {
			if site := s.siteRepo(); !site.IsNull() {
				// Another session of the repository may have stored it
				// since this one was offered it: the same bytes again
				// replace nothing.
				if held, err := tiers.LoadAll(ctx, s.store, h, 0, 0); err == nil && bytes.Equal(held, raw) {
					return nil
				}
				return &VerifyError{h, fmt.Sprintf("the site already holds the config of repository %s; a config is never replaced", site.Short())}
			}
			if c.ID != ss.repo {
				// The site was claimed for the repository the session
				// declared: another one's config would make it that one's.
				// Not damage: the object is a sound config.
				return refusal(CodeRepoMismatch, "the config sent is of repository %s, but this session declared repository %s: "+
					"the source's config changed since the session began (another repository at that location?); check the source and run again",
					c.ID.Short(), ss.repo.Short())
			}
			return nil
		}
	}
	v, err := newVerifier(h, m.Size, extra)
	if err != nil {
		return h, PutResult{CodeVerify, err.Error()}, nil
	}
	// A snapshot the site holds already (a damaged copy being replaced,
	// or one another session delivered since the offer) keeps the host
	// and time asserted when it first arrived, recorded once it is
	// committed. A new one's are recorded before it is committed: status
	// and metrics go by the records of snapshots the site holds, so the
	// record counts only once the object is there, and a site stopped in
	// between cannot hold the snapshot without a record (which no later
	// replicate would give it: the snapshot is not sent again).
	held, recorded := false, false
	var rec SnapshotRecord
	if h.Type == tiers.TypeSnapshot && m.Meta != nil {
		_, err := s.store.Stat(ctx, h)
		held = err == nil
		rec = SnapshotRecord{ID: h.Name, Host: m.Meta.Host, Time: m.Meta.Time, AssertedBy: "client", Client: ss.peer,
			ReplicatedAt: s.o.Now(), SessionBytes: ss.bytes.Load() + m.Size}
		if !held {
			// Should this fail, it is tried again once committed.
			_, err := s.state.putSnapshot(rec, true)
			recorded = err == nil
		}
	}
	body := newCheckedReader(idleReader{st: st, timeout: s.o.BodyIdleTimeout, now: s.o.Now}, v, m.Size)
	if err := s.store.Put(ctx, h, body, m.Size); err != nil {
		if h.Type == tiers.TypeConfig {
			// A store may fail after committing (its directory sync):
			// a config it holds makes the site that repository's all
			// the same, or another repository's primary would find
			// "its" config there and mix its objects in.
			s.noteConfig(ctx)
		}
		if recorded {
			// The record of a snapshot that was not stored goes (one
			// whose store failed once committed stays with it).
			if _, serr := s.store.Stat(ctx, h); errors.Is(serr, tiers.ErrNotFound) {
				s.state.removeSnapshot(h.Name)
			}
		}
		var ve *VerifyError
		var re *RemoteError
		if body.done && errors.As(body.err, &re) {
			// The verdict on a complete body (not the stream's
			// error): a sound object refused with its own code.
			return h, PutResult{re.Code, re.Message}, nil
		}
		if errors.As(err, &ve) {
			return h, PutResult{CodeVerify, ve.Error()}, nil
		}
		if body.err != nil && !errors.As(body.err, &ve) {
			// The stream failed (cut, reset): nothing was committed.
			return h, PutResult{CodeBadFrame, fmt.Sprintf("object body: %v", body.err)}, body.err
		}
		return h, PutResult{CodeInternal, fmt.Sprintf("store %s: %v", h, err)}, nil
	}
	stored = true
	ss.committed(h)
	ss.bytes.Add(m.Size)
	ss.objects.Add(1)
	s.m.object(string(h.Type), m.Size)
	switch h.Type {
	case tiers.TypeConfig:
		s.noteConfig(ctx)
	case tiers.TypeSnapshot:
		if m.Meta == nil {
			break
		}
		// Written before unless held; written again if that failed, or
		// if a concurrent session whose store failed removed it.
		w, err := s.state.putSnapshot(rec, !held && !recorded)
		written := recorded || w
		if err != nil {
			ss.log.Error("record the host and time of a committed snapshot; site status counts it as a snapshot without them",
				"object", h.String(), "err", err)
		} else if written {
			s.m.snapshot(m.Meta.Host, float64(m.Meta.Time.UnixNano())/1e9)
		}
	}
	ss.log.Debug("object committed", "object", h.String(), "bytes", m.Size)
	return h, PutResult{Code: CodeOK}, nil
}
