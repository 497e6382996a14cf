package s3_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// stallingProxy forwards to the test server, but once stall is set it
// answers object reads with their headers and first 100 bytes and then
// sends nothing more, and takes object uploads without reading their
// bodies, as a server or middlebox that hangs mid-transfer does with the
// connection kept open.
type stallingProxy struct {
	*httptest.Server
	mu    sync.Mutex
	stall bool
}

func newStallingProxy(t *testing.T) *stallingProxy {
	t.Helper()
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	release := make(chan struct{})
	p := &stallingProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		stall := p.stall
		p.mu.Unlock()
		object := strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1 && len(r.URL.Query()) <= 1
		switch {
		case stall && object && r.Method == http.MethodGet:
			rp.ServeHTTP(&stallingWriter{ResponseWriter: w, left: 100, release: release, done: r.Context().Done()}, r)
			return
		case stall && object && r.Method == http.MethodPut:
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets stalled handlers end
	return p
}

// stallingWriter passes left bytes of a response body and then blocks.
type stallingWriter struct {
	http.ResponseWriter
	left    int
	release <-chan struct{}
	done    <-chan struct{}
}

func (s *stallingWriter) Write(b []byte) (int, error) {
	n := min(len(b), s.left)
	if n > 0 {
		if _, err := s.ResponseWriter.Write(b[:n]); err != nil {
			return 0, err
		}
		s.left -= n
		s.ResponseWriter.(http.Flusher).Flush()
	}
	if n < len(b) {
		select {
		case <-s.release:
		case <-s.done:
		}
		return n, errors.New("stalled")
	}
	return n, nil
}

// A transfer that stops moving, the connection still open, fails within
// s3.response_timeout with an error worth retrying; it does not hang the
// read or the upload (and so the restore, copy or tier run) for ever.
func TestStalledTransferTimesOut(t *testing.T) {
	ctx := t.Context()
	p := newStallingProxy(t)
	c := baseConfig(newBucket(t, false), "stall")
	c.Endpoint = p.URL
	c.ResponseTimeout = time.Second
	be := open(t, c)
	defer be.Close()
	h := tiers.Handle{Type: tiers.TypeIndex, Name: "i1"}
	data := bytes.Repeat([]byte("0123456789"), 100_000)
	if err := tiers.PutBytes(ctx, be, h, data); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.stall = true
	p.mu.Unlock()

	within := func(what string, f func() error) {
		t.Helper()
		res := make(chan error, 1)
		go func() { res <- f() }()
		select {
		case err := <-res:
			if err == nil {
				t.Errorf("%s through a stalled transfer succeeded", what)
			} else if !tiers.IsRetriable(err) {
				t.Errorf("%s through a stalled transfer: %v; want a retriable error", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s through a stalled transfer still running after 10s with s3.response_timeout 1s", what)
		}
	}
	within("Load", func() error {
		return be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
			_, err := io.Copy(io.Discard, rd)
			return err
		})
	})
	big := bytes.Repeat([]byte("x"), 12<<20)
	within("Put", func() error {
		return tiers.PutBytes(ctx, be, tiers.Handle{Type: tiers.TypeIndex, Name: "i2"}, big)
	})
}
