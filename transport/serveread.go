package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// The site's read path (Hello purpose read). Every request is a stream of
// its own whose first frame is List or Get; the site answers and closes
// the stream. Reads go through the site's store (tiers.Local over an
// os.Root of the repository directory), names must pass CheckName, and
// only replicated object classes are served, so nothing outside the
// repository directory — not the .drpipe-site metadata, not the hidden
// temporary files of objects being received — is ever listed or read:
// every object served was committed by a verified Put.

func (s *Server) acceptReads(ctx context.Context, c Conn, log *slog.Logger, wg *sync.WaitGroup) {
	for {
		st, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveRead(ctx, st, log)
		}()
	}
}

// serveRead answers one read stream.
func (s *Server) serveRead(ctx context.Context, st Stream, log *slog.Logger) {
	st.SetDeadline(s.o.Now().Add(s.o.HandshakeTimeout))
	f, err := ReadFrame(st)
	if err != nil {
		reason, lvl := streamEnded(err, "stream")
		log.Log(ctx, lvl, "read stream", "err", err)
		s.m.Error(reason)
		st.Abort()
		return
	}
	st.SetDeadline(time.Time{})
	switch f.Type {
	case FrameList:
		m, err := decodeList(f.Payload)
		if err == nil {
			err = s.serveList(ctx, st, m)
		}
		s.endRead(st, log, "list", err)
	case FrameGet:
		m, err := decodeGet(f.Payload)
		if err == nil {
			err = s.serveGet(ctx, st, m)
		}
		s.endRead(st, log, "get", err)
	default:
		s.endRead(st, log, "read", refusal(CodeBadFrame, "first frame of a read stream is %s, want List or Get", f.Type))
	}
}

// endRead finishes a read stream: on error it sends an Error frame if it
// still can (nothing of a body was sent yet) or resets the stream.
func (s *Server) endRead(st Stream, log *slog.Logger, op string, err error) {
	st.CancelRead()
	if err == nil {
		st.CloseWrite()
		return
	}
	var re *RemoteError
	switch {
	case errors.As(err, &re):
		if re.Code != CodeNotFound && re.Code != CodeShortRead {
			s.m.Error(re.Code.String())
			log.Warn("read refused", "op", op, "code", re.Code.String(), "reason", re.Message)
		}
		st.SetDeadline(s.o.Now().Add(s.o.HandshakeTimeout))
		if WriteFrame(st, FrameError, encodeError(re.Code, re.Message)) == nil {
			st.CloseWrite()
			return
		}
	case errors.Is(err, ErrProtocol):
		s.m.Error(CodeBadFrame.String())
		st.SetDeadline(s.o.Now().Add(s.o.HandshakeTimeout))
		if WriteFrame(st, FrameError, encodeError(CodeBadFrame, err.Error())) == nil {
			st.CloseWrite()
			return
		}
	default:
		reason, lvl := streamEnded(err, "stream")
		log.Log(context.Background(), lvl, "read stream", "op", op, "err", err)
		s.m.Error(reason)
	}
	st.Abort()
}

func (s *Server) serveList(ctx context.Context, st Stream, m List) error {
	page := ListPage{Entries: make([]OfferEntry, 0, 256)}
	flush := func() error {
		err := WriteFrame(st, FrameListPage, page.encode())
		page.Entries = page.Entries[:0]
		return err
	}
	sent := false // a page went out: an error can no longer be a frame
	err := s.store.List(ctx, m.Type, func(oi tiers.ObjectInfo) error {
		if CheckName(oi.Handle) != nil {
			return nil // not an object the site could have committed
		}
		page.Entries = append(page.Entries, OfferEntry{Name: oi.Handle.Name, Size: oi.Size})
		if len(page.Entries) == MaxListPage {
			sent = true
			return flush()
		}
		return nil
	})
	if err != nil {
		if sent {
			return err
		}
		return refusal(CodeInternal, "list %s: %v", m.Type, err)
	}
	page.Done = true
	return flush()
}

func (s *Server) serveGet(ctx context.Context, st Stream, m Get) error {
	h := tiers.Handle{Type: m.Type, Name: m.Name}
	if err := CheckName(h); err != nil {
		return refusal(CodeBadName, "object name refused: %v", err)
	}
	oi, err := s.store.Stat(ctx, h)
	if errors.Is(err, tiers.ErrNotFound) {
		return refusal(CodeNotFound, "the site holds no %s", h)
	}
	if err != nil {
		return refusal(CodeInternal, "stat %s: %v", h, err)
	}
	n := m.Length
	if n == 0 {
		n = oi.Size - m.Offset
	}
	if m.Offset > oi.Size || n > oi.Size-m.Offset {
		return refusal(CodeShortRead, "%s has %d bytes, want %d at offset %d", h, oi.Size, n, m.Offset)
	}
	if m.Head {
		return WriteFrame(st, FrameGetReply, GetReply{Size: oi.Size, ModTime: oi.ModTime}.encode())
	}
	started := false
	// The request's own length (0 = to the end) goes to the store, so a
	// whole-object read stays one (the local tier reads those through the
	// page cache, with the kernel's read-ahead).
	err = s.store.Load(ctx, h, m.Offset, m.Length, func(rd io.Reader) error {
		started = true
		if err := WriteFrame(st, FrameGetReply, GetReply{Size: oi.Size, ModTime: oi.ModTime, Length: n}.encode()); err != nil {
			return err
		}
		w, err := io.Copy(idleWriter{st: st, timeout: s.o.BodyIdleTimeout, now: s.o.Now}, rd)
		if err == nil && w != n {
			err = fmt.Errorf("%s: %d of %d bytes read", h, w, n)
		}
		return err
	})
	if err != nil && !started {
		if errors.Is(err, tiers.ErrNotFound) {
			return refusal(CodeNotFound, "the site holds no %s", h)
		}
		if errors.Is(err, tiers.ErrShortRead) {
			return refusal(CodeShortRead, "%v", err)
		}
		return refusal(CodeInternal, "load %s: %v", h, err)
	}
	return err
}
