package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
	s3tier "github.com/drpipe/drpipe/tiers/s3"
)

// chunkedProxy forwards to the test server and drops Content-Length from
// every response, so bodies arrive chunked, as through some reverse
// proxies and gateways. cut > 0 also ends the body of every object read
// after cut bytes (a transfer cut short).
func chunkedProxy(t *testing.T, cut int64) string {
	t.Helper()
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet {
			resp.Header.Del("Content-Length")
			resp.ContentLength = -1
			if cut > 0 && (resp.Request.Header.Get("Range") != "" || resp.Request.URL.Query().Get("x-id") == "GetObject") {
				resp.Body = struct {
					io.Reader
					io.Closer
				}{io.LimitReader(resp.Body, cut), resp.Body}
			}
		}
		return nil
	}
	ts := httptest.NewServer(rp)
	t.Cleanup(ts.Close)
	return ts.URL
}

// indexThroughProxy stores a 10,000-byte index object through a bucket
// reached at endpoint and returns the backend, the handle and the bytes.
func indexThroughProxy(t *testing.T, endpoint string) (*s3tier.Backend, tiers.Handle, []byte) {
	t.Helper()
	c := baseConfig(newBucket(t, false), "proxied")
	c.Endpoint = endpoint
	be := open(t, c)
	t.Cleanup(func() { be.Close() })
	h := tiers.Handle{Type: tiers.TypeIndex, Name: "i1"}
	data := bytes.Repeat([]byte("0123456789"), 1000)
	if err := tiers.PutBytes(t.Context(), be, h, data); err != nil {
		t.Fatal(err)
	}
	return be, h, data
}

// A response without Content-Length (chunked) is a body of unknown
// length, not an empty one: Load must deliver the object's bytes.
func TestLoadWithoutContentLength(t *testing.T) {
	ctx := t.Context()
	be, h, data := indexThroughProxy(t, chunkedProxy(t, 0))
	got, err := tiers.LoadAll(ctx, be, h, 0, 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("whole-object Load through a chunked response: %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
	got, err = tiers.LoadAll(ctx, be, h, 100, 0)
	if err != nil || !bytes.Equal(got, data[100:]) {
		t.Errorf("Load from offset 100 through a chunked response: %d bytes, %v; want %d bytes", len(got), err, len(data)-100)
	}
	got, err = tiers.LoadAll(ctx, be, h, 10, 20)
	if err != nil || !bytes.Equal(got, data[10:30]) {
		t.Errorf("ranged Load through a chunked response: %q, %v", got, err)
	}
}

// rangeShiftProxy forwards to the test server but answers every ranged
// read of the object indexThroughProxy stores with a range of the same
// length from the start of the object, saying so in Content-Range, as a
// proxy or cache that mangles ranges does.
func rangeShiftProxy(t *testing.T) string {
	t.Helper()
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	data := bytes.Repeat([]byte("0123456789"), 1000) // what indexThroughProxy stores
	rp.ModifyResponse = func(resp *http.Response) error {
		var first, last, total int64
		if resp.StatusCode != http.StatusPartialContent {
			return nil
		}
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &first, &last, &total); err != nil {
			return nil
		}
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(data[:last-first+1]))
		resp.Header.Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", last-first, total))
		return nil
	}
	ts := httptest.NewServer(rp)
	t.Cleanup(ts.Close)
	return ts.URL
}

// A ranged answer for another range than the one asked for is refused:
// its bytes are not those at the offset the caller reads.
func TestLoadRefusesAnotherRange(t *testing.T) {
	ctx := t.Context()
	be, h, data := indexThroughProxy(t, rangeShiftProxy(t))
	if got, err := tiers.LoadAll(ctx, be, h, 0, 20); err != nil || !bytes.Equal(got, data[:20]) {
		t.Fatalf("range from the start: %q, %v", got, err)
	}
	for _, rg := range [][2]int64{{15, 20}, {9990, 0}} {
		got, err := tiers.LoadAll(ctx, be, h, rg[0], rg[1])
		if err == nil {
			t.Errorf("Load of %d bytes at %d answered with another range: %q (want %q) without an error", rg[1], rg[0], got, data[rg[0]:rg[0]+int64(len(got))])
		}
	}
}

// listingProxy forwards to the test server but answers listings of the
// snapshots folder itself with page, a ListObjectsV2 result.
func listingProxy(t *testing.T, page func(token string) string) string {
	t.Helper()
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method == http.MethodGet && q.Get("list-type") == "2" && strings.HasSuffix(q.Get("prefix"), "/snapshots/") {
			w.Header().Set("Content-Type", "application/xml")
			io.WriteString(w, page(q.Get("continuation-token")))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

func listPage(key, next string, truncated bool) string {
	s := `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>` +
		fmt.Sprintf(`<KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>%v</IsTruncated>`, truncated)
	if next != "" {
		s += `<NextContinuationToken>` + next + `</NextContinuationToken>`
	}
	return s + `<Contents><Key>` + key + `</Key><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>`
}

// A listing the server says is truncated but gives no way to continue
// (no continuation token), or that repeats its token, must fail: a
// silently short listing of snapshots or index objects makes prune take
// data still in use for garbage, and a repeating one never ends.
func TestListTruncatedWithoutProgress(t *testing.T) {
	for _, c := range []struct {
		name string
		page func(token string) string
	}{
		{"no token", func(string) string { return listPage("pfx/snapshots/s1", "", true) }},
		{"same token", func(string) string { return listPage("pfx/snapshots/s1", "t1", true) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			cfg := baseConfig(newBucket(t, false), "pfx")
			cfg.Endpoint = listingProxy(t, c.page)
			be := open(t, cfg)
			defer be.Close()
			n := 0
			err := be.List(ctx, tiers.TypeSnapshot, func(tiers.ObjectInfo) error { n++; return nil })
			if err == nil || ctx.Err() != nil {
				t.Errorf("List of a truncated listing without progress: %d objects, error %v; want an error saying the listing is incomplete", n, err)
			}
		})
	}
}

// Listings longer than one page (1000 keys) are followed to the end.
func TestListPaginates(t *testing.T) {
	ctx := t.Context()
	be := open(t, baseConfig(newBucket(t, false), "many"))
	defer be.Close()
	const n = 1003
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- tiers.PutBytes(ctx, be, tiers.Handle{Type: tiers.TypeIndex, Name: fmt.Sprintf("i%04d", i)}, []byte("x"))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	if err := be.List(ctx, tiers.TypeIndex, func(oi tiers.ObjectInfo) error { seen[oi.Handle.Name] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Errorf("List found %d of %d objects", len(seen), n)
	}
	// A listing after a name (what a retried listing resumes with) has
	// the names after it, in order, across pages.
	var after []string
	if err := be.ListAfter(ctx, tiers.TypeIndex, "i0500", func(oi tiers.ObjectInfo) error { after = append(after, oi.Handle.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(after) != n-501 || after[0] != "i0501" || !slices.IsSorted(after) {
		t.Errorf("ListAfter i0500: %d names from %q, sorted %v; want %d from i0501", len(after), after[:min(1, len(after))], slices.IsSorted(after), n-501)
	}
	// Data keys have the name's first two characters as a directory,
	// and order as the names do.
	names := []string{"ab12.0", "ab12.1", "ac00.0", "b000.2"}
	for _, name := range names {
		if err := tiers.PutBytes(ctx, be, tiers.Handle{Type: tiers.TypeData, Name: name}, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	var data []string
	if err := be.ListAfter(ctx, tiers.TypeData, "ab12.0", func(oi tiers.ObjectInfo) error { data = append(data, oi.Handle.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(data, names[1:]) {
		t.Errorf("data ListAfter ab12.0: %q, want %q", data, names[1:])
	}
}

// A version listing the server says is truncated but gives no new
// markers for fails Remove instead of asking for the same page forever.
func TestRemoveVersionsTruncatedWithoutProgress(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); r.Method == http.MethodGet && q.Has("versions") {
			w.Header().Set("Content-Type", "application/xml")
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>`+
				`<Prefix>`+q.Get("prefix")+`</Prefix><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>`+
				`<Version><Key>`+q.Get("prefix")+`</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest><Size>1</Size></Version></ListVersionsResult>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	cfg := baseConfig(newBucket(t, true), "ver")
	cfg.Endpoint = ts.URL
	be := open(t, cfg)
	defer be.Close()
	h := tiers.Handle{Type: tiers.TypeSnapshot, Name: strings.Repeat("ab", 32)}
	if err := tiers.PutBytes(ctx, be, h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	err := be.Remove(ctx, h)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("Remove with a version listing that does not progress: %v (context: %v); want an error naming the truncated listing", err, ctx.Err())
	}
}

// TestRangedLoadWithoutContentLengthCutShort: a ranged answer
// without Content-Length (chunked, through a proxy) whose body ends
// before the range does is a transfer cut short: Load must say so (and
// let the retry wrapper try again), not hand the caller fewer bytes than
// it asked for as if the object ended there.
func TestRangedLoadWithoutContentLengthCutShort(t *testing.T) {
	be, h, _ := indexThroughProxy(t, chunkedProxy(t, 5))
	got, err := tiers.LoadAll(t.Context(), be, h, 10, 20)
	if err == nil {
		t.Fatalf("ranged Load of 20 bytes cut after 5: %q and no error", got)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) && !tiers.IsRetriable(err) {
		t.Errorf("ranged Load cut short: %v; want an unexpected EOF the retry wrapper retries", err)
	}
}

// A server that ignores start-after (it answers the whole folder, as
// some S3-compatible servers and proxies do) must not make ListAfter pass
// the names at or before after: a retried listing resumes with ListAfter
// and would pass those objects twice (prune then rewrites an index object
// it already rewrote and takes it for another prune's doing).
func TestListAfterIgnoredByTheServerPassesOnlyLaterNames(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var startAfter []string
	var mu sync.Mutex
	page := func(string) string {
		s := `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>` +
			`<KeyCount>4</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>`
		for _, k := range []string{"s1", "s2", "s3", "s4"} {
			s += `<Contents><Key>pfx/snapshots/` + k + `</Key><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>`
		}
		return s + `</ListBucketResult>`
	}
	cfg := baseConfig(newBucket(t, false), "pfx")
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method == http.MethodGet && q.Get("list-type") == "2" && strings.HasSuffix(q.Get("prefix"), "/snapshots/") {
			mu.Lock()
			startAfter = append(startAfter, q.Get("start-after"))
			mu.Unlock()
			w.Header().Set("Content-Type", "application/xml")
			io.WriteString(w, page(q.Get("continuation-token")))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	cfg.Endpoint = ts.URL
	be := open(t, cfg)
	defer be.Close()
	var got []string
	if err := be.ListAfter(ctx, tiers.TypeSnapshot, "s2", func(oi tiers.ObjectInfo) error { got = append(got, oi.Handle.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"s3", "s4"}; !slices.Equal(got, want) {
		t.Errorf("ListAfter s2 from a server ignoring start-after (asked %q): %q, want %q", startAfter, got, want)
	}
}

// A chunked answer to a read to the end of the object, whole or from an
// offset, that ends early is a transfer cut short, never a shorter
// object: Load must fail (retriably), not hand the caller the bytes that
// came as if they were all.
func TestLoadToEndWithoutContentLengthCutShort(t *testing.T) {
	ctx := t.Context()
	be, h, data := indexThroughProxy(t, chunkedProxy(t, 50))
	for _, off := range []int64{0, 100} {
		got, err := tiers.LoadAll(ctx, be, h, off, 0)
		if err == nil {
			t.Errorf("Load from offset %d of a %d-byte object, cut after 50 bytes: %d bytes and no error; want an error", off, len(data), len(got))
			continue
		}
		if !tiers.IsRetriable(err) {
			t.Errorf("Load from offset %d cut short: %v; want a retriable error", off, err)
		}
	}
}

// A server that ignores the prefix (it answers the whole bucket, as some
// S3-compatible servers and proxies do) must not make List pass keys
// outside the type's folder as objects of that type: a key at the bucket
// root is no snapshot of the repository.
func TestListIgnoredPrefixPassesOnlyKeysUnderIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	page := `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>` +
		`<KeyCount>4</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>`
	for _, k := range []string{"pfx/config", "pfx/snapshots/s1", "s2", "snapshots/s3"} {
		page += `<Contents><Key>` + k + `</Key><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>`
	}
	page += `</ListBucketResult>`
	cfg := baseConfig(newBucket(t, false), "pfx")
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method == http.MethodGet && q.Get("list-type") == "2" && strings.HasSuffix(q.Get("prefix"), "/snapshots/") {
			w.Header().Set("Content-Type", "application/xml")
			io.WriteString(w, page)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	cfg.Endpoint = ts.URL
	be := open(t, cfg)
	defer be.Close()
	var got []string
	if err := be.List(ctx, tiers.TypeSnapshot, func(oi tiers.ObjectInfo) error { got = append(got, oi.Handle.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"s1"}; !slices.Equal(got, want) {
		t.Errorf("List of snapshots from a server ignoring the prefix: %q, want %q", got, want)
	}
}
