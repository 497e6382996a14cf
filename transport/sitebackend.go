package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// ErrSiteReadUnsupported is returned by OpenSiteBackend when the site runs
// a drpipe that predates the read capability (it refuses Hello purpose
// read).
var ErrSiteReadUnsupported = errors.New("the DR site does not serve reads (it runs an older drpipe; upgrade drpipe at the site)")

// SiteBackendOptions configure OpenSiteBackend.
type SiteBackendOptions struct {
	// Location names the site in messages (e.g. "site://host:port").
	Location string
	// RepoID, if set, is the repository the client expects; the site
	// refuses the session if it holds another.
	RepoID id.ID
	// Program is announced to the site, for its logs.
	Program string
	// Timeout bounds the session handshake, each request's wait for the
	// site's first answer and each wait for more of an object's bytes
	// (default one minute).
	Timeout time.Duration
}

// SiteBackend is a read-only tiers.Backend over a read session with the DR
// site: Load (ranges included), Stat and List of the objects the site has
// committed. Put and Remove fail with tiers.ErrReadOnly: objects reach the
// site only by replication. Every request is a stream of its own, so the
// backend is safe for concurrent use. It owns the connection: Close ends
// the session and closes it.
type SiteBackend struct {
	c       Conn
	ctl     Stream
	w       Welcome
	loc     string
	timeout time.Duration
}

var _ tiers.Backend = (*SiteBackend)(nil)

// OpenSiteBackend opens a read session over c. On error c is left open.
func OpenSiteBackend(ctx context.Context, c Conn, o SiteBackendOptions) (*SiteBackend, error) {
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.Program == "" {
		o.Program = "drpipe site read"
	}
	if o.Location == "" {
		o.Location = "site://" + c.RemoteAddr().String()
	}
	ctl, w, err := openSession(ctx, c, Hello{Purpose: PurposeRead, RepoID: o.RepoID, Program: o.Program}, o.Timeout)
	if err != nil {
		var re *RemoteError
		if errors.As(err, &re) && re.Code == CodeBadFrame && strings.Contains(re.Message, "unknown purpose") {
			return nil, fmt.Errorf("%s: %w", o.Location, ErrSiteReadUnsupported)
		}
		return nil, fmt.Errorf("%s: %w", o.Location, err)
	}
	return &SiteBackend{c: c, ctl: ctl, w: w, loc: o.Location, timeout: o.Timeout}, nil
}

// RepoID is the id of the repository the site holds (zero if none).
func (b *SiteBackend) RepoID() id.ID { return b.w.RepoID }

// SiteName is the name the site announced.
func (b *SiteBackend) SiteName() string { return b.w.SiteName }

// Location implements tiers.Backend.
func (b *SiteBackend) Location() string { return b.loc }

// Put implements tiers.Backend: the site is read-only here.
func (b *SiteBackend) Put(_ context.Context, h tiers.Handle, _ io.Reader, _ int64) error {
	if err := h.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("put %s to %s: %w: objects reach the DR site only by replication (drpipe replicate, tier run)", h, b.loc, tiers.ErrReadOnly)
}

// Remove implements tiers.Backend: the site is read-only here.
func (b *SiteBackend) Remove(_ context.Context, h tiers.Handle) error {
	if err := h.Validate(); err != nil {
		return err
	}
	return fmt.Errorf("remove %s from %s: %w: the DR site's objects are removed only at the site", h, b.loc, tiers.ErrReadOnly)
}

// Close ends the read session and closes the connection.
func (b *SiteBackend) Close() error {
	b.ctl.SetDeadline(time.Now().Add(5 * time.Second))
	if WriteFrame(b.ctl, FrameBye, nil) == nil {
		b.ctl.CloseWrite()
		_, _ = io.Copy(io.Discard, io.LimitReader(b.ctl, MaxFramePayload))
	}
	return b.c.CloseWithError(CodeOK, "done")
}

// replicated reports whether objects of t can be at the site at all.
func replicated(t tiers.Type) bool {
	_, ok := typeCode(t)
	return ok
}

// absent reports why h cannot be at a site at all (nil if it can): its
// type is not replicated, or its name is not one the site accepts (a
// shard name for data, a SHA-256 digest for keys, index and snapshots).
// Such an object is simply not there, so reads say ErrNotFound.
func absent(h tiers.Handle) error {
	if !replicated(h.Type) {
		return fmt.Errorf("%w: %s objects are not replicated to the site", tiers.ErrNotFound, h.Type)
	}
	if _, err := tiers.NewObjectVerifier(h); err != nil {
		return fmt.Errorf("%w: no %s object of that name can be stored at a site (%v)", tiers.ErrNotFound, h.Type, err)
	}
	return nil
}

func (b *SiteBackend) wrap(op, prep string, h tiers.Handle, err error) error {
	var re *RemoteError
	if errors.As(err, &re) {
		switch re.Code {
		case CodeNotFound:
			err = fmt.Errorf("%w: %s", tiers.ErrNotFound, re.Message)
		case CodeShortRead:
			err = fmt.Errorf("%w: %s", tiers.ErrShortRead, re.Message)
		case CodeBadName:
			err = fmt.Errorf("%w: %s", tiers.ErrInvalidHandle, re.Message)
		}
	}
	return fmt.Errorf("%s %s %s %s: %w", op, h, prep, b.loc, err)
}

// request opens a read stream, sends f and ends the sending side; the
// stream is reset when ctx ends until stop is called.
func (b *SiteBackend) request(ctx context.Context, t FrameType, payload []byte) (Stream, func() bool, error) {
	// OpenStream need not look at ctx when a stream is free, and the abort
	// below runs asynchronously: a cancelled caller must not start a
	// request that could still be answered.
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	octx, cancel := context.WithTimeout(ctx, b.timeout)
	st, err := b.c.OpenStream(octx)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("open read stream: %w", err)
	}
	stop := context.AfterFunc(ctx, st.Abort)
	st.SetDeadline(time.Now().Add(b.timeout))
	if err := WriteFrame(st, t, payload); err != nil {
		stop()
		st.Abort()
		return nil, nil, err
	}
	st.CloseWrite()
	return st, stop, nil
}

// get sends a Get and reads its reply; the caller reads the body.
func (b *SiteBackend) get(ctx context.Context, m Get) (Stream, func() bool, GetReply, error) {
	st, stop, err := b.request(ctx, FrameGet, m.encode())
	if err != nil {
		return nil, nil, GetReply{}, err
	}
	f, err := readReply(st, FrameGetReply)
	var r GetReply
	if err == nil {
		r, err = decodeGetReply(f.Payload)
	}
	if err == nil && !m.Head {
		want := m.Length
		if want == 0 {
			want = r.Size - m.Offset
		}
		if r.Length != want {
			err = fmt.Errorf("%w: GetReply announces %d bytes, asked for %d", ErrProtocol, r.Length, want)
		}
	}
	if err != nil {
		stop()
		st.Abort()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, nil, GetReply{}, err
	}
	st.SetDeadline(time.Time{})
	return st, stop, r, nil
}

// Load implements tiers.Backend: fn reads length bytes of h at offset (0:
// to the end) as the site streams them.
func (b *SiteBackend) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	if err := h.Validate(); err != nil {
		return b.wrap("load", "from", h, err)
	}
	if offset < 0 || length < 0 {
		return b.wrap("load", "from", h, fmt.Errorf("%w: invalid range: offset %d, length %d", tiers.ErrInvalidHandle, offset, length))
	}
	if err := absent(h); err != nil {
		return b.wrap("load", "from", h, err)
	}
	st, stop, r, err := b.get(ctx, Get{Type: h.Type, Name: h.Name, Offset: offset, Length: length})
	if err != nil {
		return b.wrap("load", "from", h, err)
	}
	defer stop()
	// Each wait for more of the body is bounded as the first answer
	// was: a site whose storage hangs, its connection alive, must not
	// hold a restore for ever.
	body := &exactReader{r: io.LimitReader(idleReader{st: st, timeout: b.timeout, now: time.Now}, r.Length), left: r.Length}
	err = fn(body)
	if body.left > 0 || err != nil {
		st.Abort()
	} else {
		st.CancelRead()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return b.wrap("load", "from", h, err)
	}
	return nil
}

// exactReader turns a body that ends early into io.ErrUnexpectedEOF.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = fmt.Errorf("site stream ended %d bytes early: %w", e.left, io.ErrUnexpectedEOF)
	}
	return n, err
}

// Stat implements tiers.Backend.
func (b *SiteBackend) Stat(ctx context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	if err := h.Validate(); err != nil {
		return tiers.ObjectInfo{}, b.wrap("stat", "in", h, err)
	}
	if err := absent(h); err != nil {
		return tiers.ObjectInfo{}, b.wrap("stat", "in", h, err)
	}
	st, stop, r, err := b.get(ctx, Get{Type: h.Type, Name: h.Name, Head: true})
	if err != nil {
		return tiers.ObjectInfo{}, b.wrap("stat", "in", h, err)
	}
	stop()
	st.CancelRead()
	return tiers.ObjectInfo{Handle: h, Size: r.Size, ModTime: r.ModTime}, nil
}

// List implements tiers.Backend: the site streams the names and sizes of
// its committed objects of t in pages, fn is called as they arrive.
func (b *SiteBackend) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	lh := tiers.Handle{Type: t}
	if !t.Valid() {
		return b.wrap("list", "in", lh, fmt.Errorf("%w: unknown object type %q", tiers.ErrInvalidHandle, t))
	}
	if !replicated(t) {
		return nil // tombstones and sessions never reach the site
	}
	st, stop, err := b.request(ctx, FrameList, List{Type: t}.encode())
	if err != nil {
		return b.wrap("list", "in", lh, err)
	}
	defer stop()
	for {
		st.SetDeadline(time.Now().Add(b.timeout))
		f, err := readReply(st, FrameListPage)
		var p ListPage
		if err == nil {
			p, err = decodeListPage(f.Payload)
		}
		if err != nil {
			st.Abort()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return b.wrap("list", "in", lh, err)
		}
		if err := ctx.Err(); err != nil {
			st.Abort() // cancelled while the page was on its way
			return b.wrap("list", "in", lh, err)
		}
		for _, e := range p.Entries {
			h := tiers.Handle{Type: t, Name: e.Name}
			if err := CheckName(h); err != nil {
				st.Abort()
				return b.wrap("list", "in", lh, fmt.Errorf("%w: site listed %v", ErrProtocol, err))
			}
			if err := fn(tiers.ObjectInfo{Handle: h, Size: e.Size}); err != nil {
				st.Abort()
				return err
			}
		}
		if p.Done {
			st.CancelRead()
			return nil
		}
	}
}
