package s3_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/drpipe/drpipe/tiers"
)

// TestRangedLoadWithoutContentLengthCutShort: a ranged answer
// without Content-Length (chunked, through a proxy) whose body ends
// before the range does is a transfer cut short: Load must say so (and
// let the retry wrapper try again), not hand the caller fewer bytes than
// it asked for as if the object ended there.
func TestRangedLoadWithoutContentLengthCutShort(t *testing.T) {
	ctx := t.Context()
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && resp.Request.Header.Get("Range") != "" {
			resp.Header.Del("Content-Length")
			resp.ContentLength = -1
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.LimitReader(resp.Body, 5), resp.Body}
		}
		return nil
	}
	ts := httptest.NewServer(rp)
	defer ts.Close()
	c := baseConfig(newBucket(t, false), "cut")
	c.Endpoint = ts.URL
	be := open(t, c)
	defer be.Close()
	h := tiers.Handle{Type: tiers.TypeIndex, Name: "i1"}
	data := bytes.Repeat([]byte("0123456789"), 1000)
	if err := tiers.PutBytes(ctx, be, h, data); err != nil {
		t.Fatal(err)
	}
	got, err := tiers.LoadAll(ctx, be, h, 10, 20)
	if err == nil {
		t.Fatalf("ranged Load of 20 bytes cut after 5: %q and no error", got)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) && !tiers.IsRetriable(err) {
		t.Errorf("ranged Load cut short: %v; want an unexpected EOF the retry wrapper retries", err)
	}
}
