package s3_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/drpipe/drpipe/internal/versitygw"
	"github.com/drpipe/drpipe/tiers"
	s3tier "github.com/drpipe/drpipe/tiers/s3"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// srv is the versitygw server shared by the tests of this package
// (versioning enabled, so buckets with object lock behave as on AWS).
var srv *versitygw.Server

func TestMain(m *testing.M) {
	work, err := os.MkdirTemp("", "drpipe-s3-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv, err = versitygw.Start(context.Background(), work, versitygw.Options{Versioning: true})
	if err != nil {
		// Fail, never skip: the S3 tier must be tested against a real server.
		fmt.Fprintf(os.Stderr, "FAIL: cannot start the S3 test server: %v\n", err)
		os.RemoveAll(work)
		os.Exit(1)
	}
	code := m.Run()
	srv.Stop()
	os.RemoveAll(work)
	os.Exit(code)
}

// admin returns a plain SDK client for setting up buckets.
func admin(endpoint string) *awss3.Client {
	return awss3.New(awss3.Options{
		Region: versitygw.Region, BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(versitygw.AccessKey, versitygw.SecretKey, ""),
	})
}

var bucketSeq atomic.Int64

// newBucket creates a bucket (with object lock when lock is set).
func newBucket(t *testing.T, lock bool) string {
	t.Helper()
	name := fmt.Sprintf("b%d-%d", os.Getpid()%100000, bucketSeq.Add(1))
	in := &awss3.CreateBucketInput{Bucket: aws.String(name)}
	if lock {
		in.ObjectLockEnabledForBucket = aws.Bool(true)
	}
	if _, err := admin(srv.Endpoint).CreateBucket(t.Context(), in); err != nil {
		t.Fatalf("create bucket %s: %v\n%s", name, err, srv.Log())
	}
	return name
}

func baseConfig(bucket, prefix string) s3tier.Config {
	return s3tier.Config{
		Bucket: bucket, Prefix: prefix, Endpoint: srv.Endpoint, Region: versitygw.Region,
		AccessKeyID: versitygw.AccessKey, SecretAccessKey: versitygw.SecretKey,
		ConnectTimeout: 5 * time.Second,
	}
}

func open(t *testing.T, c s3tier.Config) *s3tier.Backend {
	t.Helper()
	be, err := s3tier.Open(t.Context(), c)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return be
}

var prefixSeq atomic.Int64

func conformance(t *testing.T, bucket string, mod func(*s3tier.Config), wrap func(tiers.Backend) tiers.Backend) {
	tierstest.Run(t, func(t *testing.T) tiers.Backend {
		c := baseConfig(bucket, fmt.Sprintf("repo%d/x", prefixSeq.Add(1)))
		if mod != nil {
			mod(&c)
		}
		be := open(t, c)
		if wrap != nil {
			return wrap(be)
		}
		return be
	})
}

func TestConformance(t *testing.T) {
	conformance(t, newBucket(t, false), nil, nil)
}

// Parts of 5 MiB: the suite's 5 MiB+3 object goes up in two parts.
func TestConformanceMultipart(t *testing.T) {
	conformance(t, newBucket(t, false), func(c *s3tier.Config) { c.PartSize = s3tier.MinPartSize; c.Concurrency = 2 }, nil)
}

// A bucket with object lock enabled is versioned: Remove must delete every
// version, or an overwritten config would reappear.
func TestConformanceVersionedBucket(t *testing.T) {
	conformance(t, newBucket(t, true), nil, nil)
}

// The stack drpipe uses: the retry wrapper around the backend.
func TestConformanceWithRetry(t *testing.T) {
	conformance(t, newBucket(t, false), nil, func(be tiers.Backend) tiers.Backend {
		return tiers.WithRetry(be, tiers.RetryPolicy{BaseDelay: time.Millisecond})
	})
}

// The SDK's default request checksums (CRC32 on every upload) also work
// against versitygw, because the backend always sends seekable bodies.
func TestConformanceSDKDefaultChecksums(t *testing.T) {
	conformance(t, newBucket(t, false), func(c *s3tier.Config) {
		c.RequestChecksum, c.ResponseChecksum = s3tier.ChecksumWhenSupported, s3tier.ChecksumWhenSupported
	}, nil)
}

func TestLayout(t *testing.T) {
	bucket := newBucket(t, false)
	be := open(t, baseConfig(bucket, "/site-a//repo/"))
	defer be.Close()
	if be.Location() != "s3://"+bucket+"/site-a/repo" {
		t.Errorf("Location() = %q", be.Location())
	}
	ctx := t.Context()
	for _, h := range []tiers.Handle{
		{Type: tiers.TypeConfig, Name: "config"}, {Type: tiers.TypeKey, Name: "k1"},
		{Type: tiers.TypeData, Name: "ab12cd-0"}, {Type: tiers.TypeData, Name: "a"}, {Type: tiers.TypeIndex, Name: "i1"},
	} {
		if err := tiers.PutBytes(ctx, be, h, []byte(h.Name)); err != nil {
			t.Fatal(err)
		}
	}
	// A foreign object in the data folder is not listed.
	if _, err := admin(srv.Endpoint).PutObject(ctx, &awss3.PutObjectInput{Bucket: &bucket, Key: aws.String("site-a/repo/data/zz/ab12cd-0"), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	got, err := srv.Objects(bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	want := "site-a/repo/config site-a/repo/data/a/a site-a/repo/data/ab/ab12cd-0 site-a/repo/data/zz/ab12cd-0 site-a/repo/index/i1 site-a/repo/keys/k1"
	if strings.Join(got, " ") != want {
		t.Errorf("keys on the server:\n got %q\nwant %q", strings.Join(got, " "), want)
	}
	var names []string
	if err := be.List(ctx, tiers.TypeData, func(oi tiers.ObjectInfo) error {
		names = append(names, oi.Handle.Name)
		if oi.StorageClass != s3tier.ClassStandard {
			t.Errorf("%v: storage class %q", oi.Handle, oi.StorageClass)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, " ") != "a ab12cd-0" {
		t.Errorf("List data: %q", names)
	}
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct{ in, bucket, prefix string }{
		{"s3://bkt", "bkt", ""}, {"s3://bkt/", "bkt", ""}, {"s3://bkt/a/b", "bkt", "a/b"}, {"s3://my.bucket-1//a//b/", "my.bucket-1", "a/b"},
	} {
		b, p, err := s3tier.ParseURL(c.in)
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", c.in, b, p, err, c.bucket, c.prefix)
		}
	}
	for _, in := range []string{"bkt/a", "s3://", "s3://ab", "s3://-bad/x", "s3://bkt/../x", "s3://bkt/a/./b", "s3://b\x00kt/x", "s3://bkt/a?b", "s3://bkt/a\nb", "s3://b..b/x"} {
		if _, _, err := s3tier.ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) succeeded", in)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, mod := range []func(*s3tier.Config){
		func(c *s3tier.Config) { c.StorageClass = "COLD" },
		func(c *s3tier.Config) { c.MetadataStorageClass = s3tier.ClassGlacier },
		func(c *s3tier.Config) { c.ObjectLockMode = "forever"; c.ObjectLockDays = 1 },
		func(c *s3tier.Config) { c.ObjectLockMode = "governance" },
		func(c *s3tier.Config) { c.ObjectLockDays = 3 },
		func(c *s3tier.Config) { c.PartSize = 1 << 20 },
		func(c *s3tier.Config) { c.Concurrency = -1 },
		func(c *s3tier.Config) { c.RequestChecksum = "always" },
		func(c *s3tier.Config) { c.Endpoint = "ftp://x" },
		func(c *s3tier.Config) { c.PathStyle = "maybe" },
		func(c *s3tier.Config) { c.SecretAccessKey = "" },
		func(c *s3tier.Config) { c.RestoreTier = "fast" },
	} {
		c := baseConfig("bucket", "")
		mod(&c)
		if be, err := s3tier.Open(t.Context(), c); err == nil {
			be.Close()
			t.Errorf("Open accepted %+v", c)
		}
	}
}

// --- object lock ---

func TestObjectLock(t *testing.T) {
	ctx := t.Context()
	bucket := newBucket(t, true)
	for _, mode := range []string{"governance", "compliance"} {
		t.Run(mode, func(t *testing.T) {
			c := baseConfig(bucket, mode)
			c.ObjectLockMode, c.ObjectLockDays = mode, 2
			c.PartSize = s3tier.MinPartSize
			be := open(t, c)
			defer be.Close()
			small := []byte("snapshot record")
			big := bytes.Repeat([]byte("0123456789abcdef"), (6<<20)/16) // multipart
			hs := tiers.Handle{Type: tiers.TypeSnapshot, Name: "s1"}
			hb := tiers.Handle{Type: tiers.TypeData, Name: "bb-0"}
			start := time.Now()
			for h, b := range map[tiers.Handle][]byte{hs: small, hb: big} {
				if err := tiers.PutBytes(ctx, be, h, b); err != nil {
					t.Fatalf("Put %v: %v", h, err)
				}
				until, err := be.RetainUntil(ctx, h)
				if err != nil {
					t.Fatal(err)
				}
				if want := start.Add(48 * time.Hour); until.Before(want.Add(-2*time.Second)) || until.After(want.Add(time.Minute)) {
					t.Errorf("%v retained until %v, want about %v", h, until, want)
				}
				err = be.Remove(ctx, h)
				if !errors.Is(err, tiers.ErrLocked) {
					t.Fatalf("Remove of a locked object: %v, want ErrLocked", err)
				}
				for _, s := range []string{h.String(), bucket, srv.Endpoint, "until", strings.ToLower(mode)} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %q", err, s)
					}
				}
				// Still there, whole.
				got, err := tiers.LoadAll(ctx, be, h, 0, 0)
				if err != nil || !bytes.Equal(got, b) {
					t.Errorf("Load after refused Remove: %d bytes, %v", len(got), err)
				}
				// Re-putting the same content-addressed object is fine.
				if err := tiers.PutBytes(ctx, be, h, b); err != nil {
					t.Errorf("second Put of a locked object: %v", err)
				}
			}
			// The retry wrapper does not retry a locked removal.
			rb := tiers.WithRetry(be, tiers.RetryPolicy{BaseDelay: time.Hour})
			if err := rb.Remove(ctx, hs); !errors.Is(err, tiers.ErrLocked) {
				t.Errorf("Remove through retry: %v", err)
			}
		})
	}
	// Without retention configured, nothing is locked on the same bucket.
	be := open(t, baseConfig(bucket, "unlocked"))
	h := tiers.Handle{Type: tiers.TypeIndex, Name: "i"}
	if err := tiers.PutBytes(ctx, be, h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if until, err := be.RetainUntil(ctx, h); err != nil || !until.IsZero() {
		t.Errorf("RetainUntil without lock: %v, %v", until, err)
	}
	if err := be.Remove(ctx, h); err != nil {
		t.Errorf("Remove: %v", err)
	}
}

func TestObjectLockNeedsLockBucket(t *testing.T) {
	c := baseConfig(newBucket(t, false), "p")
	c.ObjectLockMode, c.ObjectLockDays = "governance", 1
	_, err := s3tier.Open(t.Context(), c)
	if !errors.Is(err, s3tier.ErrNoObjectLock) || !strings.Contains(err.Error(), c.Bucket) {
		t.Errorf("Open with retention on a bucket without object lock: %v", err)
	}
}

// --- errors at open ---

func TestOpenErrors(t *testing.T) {
	bucket := newBucket(t, false)
	refused := closedPort(t)
	hang := hangingServer(t)
	cases := []struct {
		name string
		mod  func(*s3tier.Config)
		want error
	}{
		{"bad secret", func(c *s3tier.Config) { c.SecretAccessKey = "wrong" }, s3tier.ErrAuth},
		{"unknown access key", func(c *s3tier.Config) { c.AccessKeyID = "NOBODY" }, s3tier.ErrAuth},
		{"unknown bucket", func(c *s3tier.Config) { c.Bucket = "no-such-bucket" }, s3tier.ErrNoBucket},
		{"wrong region", func(c *s3tier.Config) { c.Region = "eu-west-1" }, s3tier.ErrWrongRegion},
		{"connection refused", func(c *s3tier.Config) { c.Endpoint = "http://" + refused }, s3tier.ErrUnreachable},
		{"server never answers", func(c *s3tier.Config) { c.Endpoint = "http://" + hang; c.ConnectTimeout = 2 * time.Second }, s3tier.ErrUnreachable},
		{"unknown host", func(c *s3tier.Config) { c.Endpoint = "http://no-such-host.invalid:9000" }, s3tier.ErrUnreachable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := baseConfig(bucket, "p")
			tc.mod(&c)
			start := time.Now()
			be, err := s3tier.Open(t.Context(), c)
			el := time.Since(start)
			if err == nil {
				be.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			for _, s := range []string{c.Endpoint, "s3://" + c.Bucket} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
			if el > c.ConnectTimeout+2*time.Second {
				t.Errorf("took %v, want within %v", el, c.ConnectTimeout)
			}
			t.Logf("%v: %v", el.Round(time.Millisecond), err)
		})
	}
}

func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// hangingServer accepts connections and never answers.
func hangingServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

// --- multipart ---

// patternReader yields n deterministic bytes without holding them.
type patternReader struct{ n, off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := min(int64(len(b)), p.n-p.off)
	for i := range k {
		x := p.off + i
		b[i] = byte(x*7 + x>>13)
	}
	p.off += k
	return int(k), nil
}

func TestMultipartBoundedMemory(t *testing.T) {
	ctx := t.Context()
	c := baseConfig(newBucket(t, false), "mp")
	c.PartSize, c.Concurrency = s3tier.MinPartSize, 2
	be := open(t, c)
	defer be.Close()
	const size = 96 << 20
	h := tiers.Handle{Type: tiers.TypeData, Name: "big-0"}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := be.Put(ctx, h, &patternReader{n: size}, size); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// Two 5 MiB buffers plus request overhead; far below the object.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 40<<20 {
		t.Errorf("uploading %d MiB allocated %d MiB, want a bounded amount", size>>20, alloc>>20)
	}
	oi, err := be.Stat(ctx, h)
	if err != nil || oi.Size != size {
		t.Fatalf("Stat: %+v %v", oi, err)
	}
	// Content check through a ranged load across a part boundary.
	off := int64(s3tier.MinPartSize - 100)
	got, err := tiers.LoadAll(ctx, be, h, off, 300)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 300)
	pr := &patternReader{n: size, off: off}
	io.ReadFull(pr, want)
	if !bytes.Equal(got, want) {
		t.Error("ranged load across a part boundary differs")
	}
}

func TestMultipartFailureLeavesNothing(t *testing.T) {
	ctx := t.Context()
	bucket := newBucket(t, false)
	c := baseConfig(bucket, "mp")
	c.PartSize, c.Concurrency = s3tier.MinPartSize, 2
	be := open(t, c)
	defer be.Close()
	h := tiers.Handle{Type: tiers.TypeData, Name: "fail-0"}
	boom := errors.New("disk read error")
	rd := io.MultiReader(&patternReader{n: 12 << 20}, iotestErr{boom})
	if err := be.Put(ctx, h, rd, 20<<20); !errors.Is(err, boom) {
		t.Fatalf("Put: %v, want the reader's error", err)
	}
	// Too short, and too long, over several parts.
	if err := be.Put(ctx, h, &patternReader{n: 11 << 20}, 12<<20); !errors.Is(err, tiers.ErrSizeMismatch) {
		t.Errorf("short multipart Put: %v", err)
	}
	if err := be.Put(ctx, h, &patternReader{n: 12<<20 + 1}, 12<<20); !errors.Is(err, tiers.ErrSizeMismatch) {
		t.Errorf("long multipart Put: %v", err)
	}
	if _, err := be.Stat(ctx, h); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Stat after failed Puts: %v", err)
	}
	ups, err := admin(srv.Endpoint).ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("%d multipart uploads left behind", len(ups.Uploads))
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// --- retries, throttling and archive classes through a proxy ---

// proxy sits between the backend and versitygw and rewrites responses to
// simulate what versitygw does not do: throttling and archive classes.
type proxy struct {
	*httptest.Server
	mu        sync.Mutex
	throttle  int             // answer this many requests with 503 SlowDown
	glacier   map[string]bool // keys shown as GLACIER
	restoring map[string]bool // restore requested
	restored  map[string]bool // restore finished
	requests  int
}

func newProxy(t *testing.T) *proxy {
	target, _ := url.Parse(srv.Endpoint)
	p := &proxy{glacier: map[string]bool{}, restoring: map[string]bool{}, restored: map[string]bool{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.requests++
		key := strings.TrimPrefix(r.URL.Path, "/")
		if _, k, ok := strings.Cut(key, "/"); ok {
			key = k
		}
		if p.throttle > 0 {
			p.throttle--
			p.mu.Unlock()
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		cold := p.glacier[key]
		restoring, restored := p.restoring[key], p.restored[key]
		p.mu.Unlock()
		if cold {
			switch {
			case r.Method == http.MethodPost && r.URL.Query().Has("restore"):
				p.mu.Lock()
				already := p.restoring[key]
				p.restoring[key] = true
				p.mu.Unlock()
				if already {
					w.WriteHeader(http.StatusConflict)
					io.WriteString(w, `<Error><Code>RestoreAlreadyInProgress</Code><Message>Object restore is already in progress</Message></Error>`)
					return
				}
				w.WriteHeader(http.StatusAccepted)
				return
			case r.Method == http.MethodGet && !restored:
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `<Error><Code>InvalidObjectState</Code><Message>The operation is not valid for the object's storage class</Message></Error>`)
				return
			case r.Method == http.MethodHead:
				rw := &headerRewriter{ResponseWriter: w, set: map[string]string{"X-Amz-Storage-Class": "GLACIER"}}
				if restoring && !restored {
					rw.set["X-Amz-Restore"] = `ongoing-request="true"`
				} else if restored {
					rw.set["X-Amz-Restore"] = `ongoing-request="false", expiry-date="Fri, 10 Jan 2031 00:00:00 GMT"`
				}
				rp.ServeHTTP(rw, r)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

type headerRewriter struct {
	http.ResponseWriter
	set map[string]string
}

func (h *headerRewriter) WriteHeader(code int) {
	for k, v := range h.set {
		h.Header().Set(k, v)
	}
	h.ResponseWriter.WriteHeader(code)
}

func TestThrottlingIsRetried(t *testing.T) {
	ctx := t.Context()
	p := newProxy(t)
	c := baseConfig(newBucket(t, false), "throttle")
	c.Endpoint = p.URL
	raw := open(t, c)
	var retries atomic.Int32
	be := tiers.WithRetry(raw, tiers.RetryPolicy{BaseDelay: time.Millisecond, Notify: func(string, tiers.Handle, int, time.Duration, error) { retries.Add(1) }})
	defer be.Close()
	h := tiers.Handle{Type: tiers.TypeIndex, Name: "i1"}
	p.mu.Lock()
	p.throttle = 3
	p.mu.Unlock()
	if err := tiers.PutBytes(ctx, be, h, []byte("index")); err != nil {
		t.Fatalf("Put through throttling: %v", err)
	}
	p.mu.Lock()
	p.throttle = 2
	p.mu.Unlock()
	if got, err := tiers.LoadAll(ctx, be, h, 0, 0); err != nil || string(got) != "index" {
		t.Fatalf("Load through throttling: %q %v", got, err)
	}
	if retries.Load() != 5 {
		t.Errorf("%d retries, want 5", retries.Load())
	}
	// Throttled for longer than the policy allows: a clear error.
	p.mu.Lock()
	p.throttle = 100
	p.mu.Unlock()
	_, err := be.Stat(ctx, h)
	if err == nil || !strings.Contains(err.Error(), "gave up after 5 attempts") || tiers.IsRetriable(err) {
		t.Errorf("Stat under constant throttling: %v", err)
	}
	p.mu.Lock()
	p.throttle = 0
	p.mu.Unlock()
}

func TestWarmupArchivedObjects(t *testing.T) {
	ctx := t.Context()
	p := newProxy(t)
	bucket := newBucket(t, false)
	c := baseConfig(bucket, "cold")
	c.Endpoint = p.URL
	c.StorageClass = s3tier.ClassGlacier
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c.Now = func() time.Time { return now }
	be := open(t, c)
	defer be.Close()
	hot := tiers.Handle{Type: tiers.TypeIndex, Name: "i1"}
	cold := []tiers.Handle{{Type: tiers.TypeData, Name: "aa-0"}, {Type: tiers.TypeData, Name: "bb-1"}}
	for _, h := range append([]tiers.Handle{hot}, cold...) {
		if err := tiers.PutBytes(ctx, be, h, []byte(h.Name)); err != nil {
			t.Fatal(err)
		}
	}
	p.mu.Lock()
	for _, h := range cold {
		p.glacier["cold/data/"+h.Name[:2]+"/"+h.Name] = true
	}
	p.mu.Unlock()
	// Reading an archived object: not ready, not retried; the read
	// requests its restore and says when it will be ready.
	_, err := tiers.LoadAll(ctx, be, cold[0], 0, 0)
	if !errors.Is(err, tiers.ErrNotReady) || !strings.Contains(err.Error(), "restore requested, ready in about 5h0m0s") || tiers.IsRetriable(err) {
		t.Fatalf("Load of an archived object: %v", err)
	}
	p.mu.Lock()
	if len(p.restoring) != 1 {
		t.Errorf("after reading one archived object: %d restore requests, want 1", len(p.restoring))
	}
	p.mu.Unlock()
	ready, pending, err := be.Warmup(ctx, append([]tiers.Handle{hot}, cold...))
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 2 || !ready.Equal(now.Add(5*time.Hour)) {
		t.Errorf("Warmup: ready %v, pending %v; want both cold objects, ready in 5h", ready, pending)
	}
	// Polling again does not request twice and still reports pending.
	_, pending, err = be.Warmup(ctx, cold)
	if err != nil || len(pending) != 2 {
		t.Errorf("second Warmup: %v, %v", pending, err)
	}
	p.mu.Lock()
	if len(p.restoring) != 2 {
		t.Errorf("%d restore requests, want 2", len(p.restoring))
	}
	for _, h := range cold {
		p.restored["cold/data/"+h.Name[:2]+"/"+h.Name] = true
	}
	p.mu.Unlock()
	ready, pending, err = be.Warmup(ctx, cold)
	if err != nil || len(pending) != 0 || !ready.Equal(now) {
		t.Errorf("Warmup after restore: %v, %v, %v", ready, pending, err)
	}
	if got, err := tiers.LoadAll(ctx, be, cold[1], 0, 0); err != nil || string(got) != cold[1].Name {
		t.Errorf("Load after restore: %q %v", got, err)
	}
}

func TestSetStorageClass(t *testing.T) {
	ctx := t.Context()
	be := open(t, baseConfig(newBucket(t, false), "sc"))
	defer be.Close()
	h := tiers.Handle{Type: tiers.TypeData, Name: "cc-2"}
	data := bytes.Repeat([]byte("shard"), 1000)
	if err := tiers.PutBytes(ctx, be, h, data); err != nil {
		t.Fatal(err)
	}
	if err := be.SetStorageClass(ctx, h, "standard_ia"); err != nil {
		t.Fatalf("SetStorageClass: %v", err)
	}
	if got, err := tiers.LoadAll(ctx, be, h, 0, 0); err != nil || !bytes.Equal(got, data) {
		t.Errorf("after SetStorageClass: %d bytes, %v", len(got), err)
	}
	if err := be.SetStorageClass(ctx, h, "TAPE"); err == nil {
		t.Error("SetStorageClass accepted an unknown class")
	}
}

// --- TLS with a private CA ---

func TestCAFile(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certFile, keyFile)
	tsrv, err := versitygw.Start(t.Context(), filepath.Join(dir, "gw"), versitygw.Options{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	defer tsrv.Stop()
	if err := tsrv.MakeBucket("tlsbucket"); err != nil {
		t.Fatal(err)
	}
	c := baseConfig("tlsbucket", "r")
	c.Endpoint = tsrv.Endpoint
	if _, err := s3tier.Open(t.Context(), c); !errors.Is(err, s3tier.ErrUnreachable) || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("Open of a server with an unknown CA: %v", err)
	}
	c.CAFile = certFile
	be := open(t, c)
	defer be.Close()
	h := tiers.Handle{Type: tiers.TypeKey, Name: "k"}
	if err := tiers.PutBytes(t.Context(), be, h, []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	if got, err := tiers.LoadAll(t.Context(), be, h, 0, 0); err != nil || string(got) != "over TLS" {
		t.Errorf("Load over TLS: %q %v", got, err)
	}
}

func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "drpipe test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Seekable readers are sent without a copy; their length is still checked
// before anything is sent.
func TestPutSeekableSizeChecked(t *testing.T) {
	ctx := t.Context()
	be := open(t, baseConfig(newBucket(t, false), "seek"))
	defer be.Close()
	h := tiers.Handle{Type: tiers.TypeIndex, Name: "i"}
	data := []byte("0123456789")
	for _, size := range []int64{9, 11} {
		if err := be.Put(ctx, h, bytes.NewReader(data), size); !errors.Is(err, tiers.ErrSizeMismatch) {
			t.Errorf("Put of 10 seekable bytes as %d: %v", size, err)
		}
	}
	if _, err := be.Stat(ctx, h); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("Stat after refused Puts: %v", err)
	}
	// A reader positioned in the middle sends the rest.
	rd := bytes.NewReader(data)
	rd.Seek(4, io.SeekStart)
	if err := be.Put(ctx, h, rd, 6); err != nil {
		t.Fatal(err)
	}
	if got, err := tiers.LoadAll(ctx, be, h, 0, 0); err != nil || string(got) != "456789" {
		t.Errorf("Load: %q %v", got, err)
	}
}
