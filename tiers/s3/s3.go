// Package s3 is drpipe's cloud bucket tier: a tiers.Backend on an S3
// bucket (AWS or any S3-compatible server), built on aws-sdk-go-v2.
//
// Data model: a repository lives under a key prefix of one bucket, with
// the same layout as a local tier, so the two are interchangeable object
// for object:
//
//	<prefix>/config
//	<prefix>/keys/<name>
//	<prefix>/data/<first two bytes of name>/<name>   (pack shards)
//	<prefix>/index/<name>
//	<prefix>/snapshots/<name>
//	<prefix>/tombstones/<name>
//
// Uploads: an object up to Config.PartSize is stored with one PutObject,
// sent straight from the caller's reader when it can seek (the caller holds
// the bytes: a *bytes.Reader, a file section) and read into a buffer first
// otherwise; a larger one is stored with a multipart upload whose
// parts are read into buffers of PartSize and sent Config.Concurrency at a
// time. Buffers come from one pool per backend of Concurrency buffers, so
// memory stays within Concurrency x PartSize however many Puts run. A
// buffered body is seekable, so the SDK can sign it over plain HTTP and
// no request checksum is needed (the SDK's default CRC checksums, sent as
// aws-chunked trailers, break some S3-compatible servers; the default here
// is when_required). S3 makes an object visible only when PutObject or
// CompleteMultipartUpload succeeds, and the reader is checked against the
// announced size before that, so Put is atomic.
//
// Retries: the SDK's own retryer is disabled; classify decides which
// failures are transient and marks them with tiers.Retriable, and callers
// wrap the backend in tiers.WithRetry (parts of a multipart upload are
// retried here, by the same rule, so a failed part does not resend the
// whole object).
//
// Storage classes: data objects get Config.StorageClass, everything else
// Config.MetadataStorageClass. Objects in GLACIER and DEEP_ARCHIVE must be
// restored before reading: Load returns an error wrapping tiers.ErrNotReady
// and Warmup requests the restores (tiers.Warmer). SetStorageClass moves an
// object to another class (for tiering policies).
//
// Object lock: with Config.ObjectLockMode every object is written with a
// retention date ObjectLockDays ahead (and a Content-MD5, which S3 requires
// for such uploads). Remove deletes every version of the key (so a
// versioned bucket does not just hide the object behind a delete marker)
// and returns an error wrapping tiers.ErrLocked for an object under
// retention. RetainUntil reports an object's retention date
// (tiers.Retainer).
package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/drpipe/drpipe/tiers"
)

// Backend is a tiers.Backend on an S3 bucket. It is safe for concurrent
// use.
type Backend struct {
	cli       *awss3.Client
	cfg       Config
	loc       string // s3://bucket/prefix
	endpoint  string // for messages
	versioned atomic.Bool
	// lockDefault: the bucket gives new objects a default retention,
	// so every upload carries Content-MD5, which S3 requires then (set
	// by Open, before any upload).
	lockDefault bool
	transport   atomic.Pointer[http.Transport]
	bufs        chan []byte // pool of Concurrency upload buffers, each PartSize
	closed      atomic.Bool
}

var (
	_ tiers.Backend  = (*Backend)(nil)
	_ tiers.Warmer   = (*Backend)(nil)
	_ tiers.Retainer = (*Backend)(nil)
)

// Open connects to the bucket described by cfg and checks, within
// cfg.ConnectTimeout, that the endpoint answers, the credentials are
// accepted, the bucket exists in the configured region and, when
// retention is configured, that it has object lock enabled. Each failure
// yields an error naming the endpoint and bucket and wrapping ErrAuth,
// ErrNoBucket, ErrWrongRegion, ErrUnreachable or ErrNoObjectLock.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	c, err := cfg.normalize()
	if err != nil {
		return nil, fmt.Errorf("s3 configuration: %w", err)
	}
	b := &Backend{cfg: c, loc: "s3://" + c.Bucket}
	if c.Prefix != "" {
		b.loc += "/" + c.Prefix
	}
	if err := b.newClient(ctx); err != nil {
		return nil, err
	}
	b.bufs = make(chan []byte, c.Concurrency)
	for range c.Concurrency {
		b.bufs <- nil // allocated on first use
	}
	if err := b.probe(ctx); err != nil {
		b.closeIdle()
		return nil, err
	}
	return b, nil
}

func (b *Backend) newClient(ctx context.Context) error {
	c := b.cfg
	var pool *x509.CertPool
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return fmt.Errorf("s3.ca_file: %w", err)
		}
		pool, err = x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("s3.ca_file %s: no PEM certificates found", c.CAFile)
		}
	}
	// A BuildableClient, so that the SDK can still add AWS_CA_BUNDLE.
	hc := awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) {
		d.Timeout = c.ConnectTimeout
		d.KeepAlive = 30 * time.Second
	}).WithTransportOptions(func(tr *http.Transport) {
		tr.TLSHandshakeTimeout = c.ConnectTimeout
		tr.ResponseHeaderTimeout = c.ResponseTimeout
		tr.ExpectContinueTimeout = time.Second
		tr.MaxIdleConns = 4*c.Concurrency + 16
		tr.MaxIdleConnsPerHost = 4*c.Concurrency + 16
		tr.IdleConnTimeout = 90 * time.Second
		if pool != nil {
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		dial := tr.DialContext
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &stallConn{Conn: conn, timeout: c.ResponseTimeout}, nil
		}
	}).WithTimeout(0)

	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithHTTPClient(hc),
		awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		awsconfig.WithRequestChecksumCalculation(reqChecksum(c.RequestChecksum)),
		awsconfig.WithResponseChecksumValidation(respChecksum(c.ResponseChecksum)),
	}
	if c.Region != "" {
		opts = append(opts, awsconfig.WithRegion(c.Region))
	}
	if c.Profile != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(c.Profile))
	}
	if c.AccessKeyID != "" || c.SecretAccessKey != "" {
		if c.AccessKeyID == "" || c.SecretAccessKey == "" {
			return errors.New("s3 configuration: set both s3.access_key_id and s3.secret_access_key, or neither (to use the AWS credential chain)")
		}
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
	}
	acfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return fmt.Errorf("s3 configuration: load AWS settings: %w", err)
	}
	if bc, ok := acfg.HTTPClient.(*awshttp.BuildableClient); ok {
		// Capture the transport actually used, to close idle connections.
		acfg.HTTPClient = bc.WithTransportOptions(func(tr *http.Transport) { b.transport.Store(tr) })
	}
	if acfg.Region == "" {
		acfg.Region = "us-east-1"
	}
	endpoint := c.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL_S3")
	}
	if endpoint == "" && acfg.BaseEndpoint != nil {
		endpoint = *acfg.BaseEndpoint
	}
	if endpoint != "" {
		b.endpoint = endpoint
	} else {
		b.endpoint = "AWS S3 " + acfg.Region
	}
	b.cfg.Region = acfg.Region
	b.cli = awss3.NewFromConfig(acfg, func(o *awss3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.UsePathStyle = c.pathStyle(endpoint != "")
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return nil
}

func reqChecksum(s string) aws.RequestChecksumCalculation {
	if s == ChecksumWhenSupported {
		return aws.RequestChecksumCalculationWhenSupported
	}
	return aws.RequestChecksumCalculationWhenRequired
}

func respChecksum(s string) aws.ResponseChecksumValidation {
	if s == ChecksumWhenSupported {
		return aws.ResponseChecksumValidationWhenSupported
	}
	return aws.ResponseChecksumValidationWhenRequired
}

// stallConn is a connection on which a Write that cannot hand its data
// to the network within timeout fails: an upload that stops moving with
// the connection open (a hung server or middlebox) fails with an error
// worth retrying instead of hanging, however long the object. Reads are
// bounded by the transport's ResponseHeaderTimeout and, for response
// bodies, by stallReader.
type stallConn struct {
	net.Conn
	timeout time.Duration
}

func (c *stallConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("the upload stalled: no data sent for %v (s3.response_timeout): %w", c.timeout, err)
	}
	return n, err
}

// where names the bucket location and endpoint for messages.
func (b *Backend) where() string { return b.loc + " at " + b.endpoint }

// probe makes one listing request (and, with retention configured, reads
// the bucket's lock configuration) to turn configuration mistakes into
// clear errors at once.
func (b *Backend) probe(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	_, err := b.cli.ListObjectsV2(pctx, &awss3.ListObjectsV2Input{Bucket: &b.cfg.Bucket, Prefix: aws.String(b.key(tiers.Handle{Type: tiers.TypeConfig, Name: "config"})), MaxKeys: aws.Int32(1)})
	if err != nil {
		return b.openError(ctx, pctx, err)
	}
	if v, err := b.cli.GetBucketVersioning(pctx, &awss3.GetBucketVersioningInput{Bucket: &b.cfg.Bucket}); err == nil {
		b.versioned.Store(v.Status == types.BucketVersioningStatusEnabled || v.Status == types.BucketVersioningStatusSuspended)
	} else if ctx.Err() != nil {
		return fmt.Errorf("open %s: %w", b.where(), ctx.Err())
	}
	if b.cfg.ObjectLockMode != "" {
		lc, err := b.cli.GetObjectLockConfiguration(pctx, &awss3.GetObjectLockConfigurationInput{Bucket: &b.cfg.Bucket})
		if code, _ := apiCode(err); code == "ObjectLockConfigurationNotFoundError" ||
			(err == nil && (lc.ObjectLockConfiguration == nil || lc.ObjectLockConfiguration.ObjectLockEnabled != types.ObjectLockEnabledEnabled)) {
			return fmt.Errorf("open %s: %w: s3.object_lock_mode is %s but the bucket was not created with object lock enabled (create a new bucket with object lock, or unset s3.object_lock_mode)",
				b.where(), ErrNoObjectLock, strings.ToLower(b.cfg.ObjectLockMode))
		}
		if err != nil {
			return b.openError(ctx, pctx, err)
		}
		b.versioned.Store(true) // object lock implies versioning
	} else if lc, err := b.cli.GetObjectLockConfiguration(pctx, &awss3.GetObjectLockConfigurationInput{Bucket: &b.cfg.Bucket}); err == nil &&
		lc.ObjectLockConfiguration != nil && lc.ObjectLockConfiguration.ObjectLockEnabled == types.ObjectLockEnabledEnabled {
		// Locked objects drpipe did not ask for: a bucket's default
		// retention. A refusal to say (no s3:GetBucketObjectLockConfiguration)
		// leaves uploads as they were.
		b.versioned.Store(true)
		b.lockDefault = lc.ObjectLockConfiguration.Rule != nil && lc.ObjectLockConfiguration.Rule.DefaultRetention != nil
	} else if ctx.Err() != nil {
		return fmt.Errorf("open %s: %w", b.where(), ctx.Err())
	}
	return nil
}

func (b *Backend) openError(ctx, pctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("open %s: %w", b.where(), ctx.Err())
	}
	if pctx.Err() != nil {
		return fmt.Errorf("open %s: %w: no answer within %v (s3.connect_timeout); check s3.endpoint and the network: %w",
			b.where(), ErrUnreachable, b.cfg.ConnectTimeout, err)
	}
	err = classify(err)
	switch {
	case errors.Is(err, ErrAuth):
		return fmt.Errorf("open %s: %w: check s3.access_key_id/s3.secret_access_key or the AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...): %w", b.where(), ErrAuth, detail(err))
	case errors.Is(err, ErrNoBucket):
		return fmt.Errorf("open %s: bucket %q does not exist; create it first (drpipe never creates buckets): %w", b.where(), b.cfg.Bucket, err)
	case errors.Is(err, ErrWrongRegion):
		return fmt.Errorf("open %s: bucket %q is not in region %s; set s3.region (or AWS_REGION): %w", b.where(), b.cfg.Bucket, b.cfg.Region, err)
	case errors.Is(err, ErrUnreachable):
		return fmt.Errorf("open %s: cannot connect; check s3.endpoint, s3.ca_file and the network: %w", b.where(), err)
	}
	return fmt.Errorf("open %s: %w", b.where(), err)
}

// detail returns the wrapped SDK error of an error made by classify as
// "<sentinel>: <err>", to avoid repeating the sentinel in messages.
func detail(err error) error {
	if uw, ok := err.(interface{ Unwrap() []error }); ok {
		if es := uw.Unwrap(); len(es) == 2 {
			return es[1]
		}
	}
	return err
}

// Location returns "s3://bucket/prefix".
func (b *Backend) Location() string { return b.loc }

// Endpoint returns the endpoint URL (or "AWS S3 <region>").
func (b *Backend) Endpoint() string { return b.endpoint }

// Versioned reports whether the bucket keeps object versions, as read at
// Open or, where the credentials may not read it, found by a Remove.
func (b *Backend) Versioned() bool { return b.versioned.Load() }

// Close releases idle connections. Further calls fail.
func (b *Backend) Close() error {
	if !b.closed.Swap(true) {
		b.closeIdle()
	}
	return nil
}

func (b *Backend) closeIdle() {
	if tr := b.transport.Load(); tr != nil {
		tr.CloseIdleConnections()
	}
}

// key returns the object key of a valid handle.
func (b *Backend) key(h tiers.Handle) string {
	var rel string
	switch h.Type {
	case tiers.TypeConfig:
		rel = "config"
	case tiers.TypeData:
		rel = path.Join("data", dataPrefix(h.Name), h.Name)
	default:
		rel = path.Join(string(h.Type), h.Name)
	}
	if b.cfg.Prefix == "" {
		return rel
	}
	return b.cfg.Prefix + "/" + rel
}

func dataPrefix(name string) string {
	if len(name) < 2 {
		return name
	}
	return name[:2]
}

// typePrefix is the key prefix listing objects of type t.
func (b *Backend) typePrefix(t tiers.Type) string {
	if b.cfg.Prefix == "" {
		return string(t) + "/"
	}
	return b.cfg.Prefix + "/" + string(t) + "/"
}

func (b *Backend) wrap(op, prep string, h tiers.Handle, err error) error {
	s := h.String()
	if h.Validate() != nil {
		s = strconv.Quote(s)
	}
	return fmt.Errorf("%s %s %s %s: %w", op, s, prep, b.where(), err)
}

func (b *Backend) check(ctx context.Context) error {
	if b.closed.Load() {
		return errors.New("backend is closed")
	}
	return ctx.Err()
}

func (b *Backend) classFor(t tiers.Type) types.StorageClass {
	if t == tiers.TypeData {
		return types.StorageClass(b.cfg.StorageClass)
	}
	return types.StorageClass(b.cfg.MetadataStorageClass)
}

// retention returns the retention date for an object written now.
// locked reports whether uploads are under object lock retention, set
// by drpipe (s3.object_lock_mode) or by the bucket's default: S3 then
// requires Content-MD5 on every upload.
func (b *Backend) locked() bool { return b.cfg.ObjectLockMode != "" || b.lockDefault }

func (b *Backend) retention() *time.Time {
	if b.cfg.ObjectLockMode == "" {
		return nil
	}
	t := b.cfg.Now().Add(time.Duration(b.cfg.ObjectLockDays) * 24 * time.Hour).UTC().Truncate(time.Second)
	return &t
}

// --- Put ---

// Put stores size bytes read from rd as h; see tiers.Backend. Objects up
// to Config.PartSize go up in one request, larger ones in parts. The
// object becomes visible only when complete. Putting an existing
// content-addressed object that is under retention (and so cannot be
// replaced on an unversioned bucket) succeeds if the stored object has the
// same size, since its name guarantees the same bytes.
func (b *Backend) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	if err := h.Validate(); err != nil {
		return b.wrap("put", "to", h, err)
	}
	if size < 0 {
		return b.wrap("put", "to", h, fmt.Errorf("negative size %d", size))
	}
	if err := b.check(ctx); err != nil {
		return b.wrap("put", "to", h, err)
	}
	src := &ctxReader{ctx: ctx, r: rd}
	var err error
	rs, seekable := rd.(io.ReadSeeker)
	switch {
	case size <= b.cfg.PartSize && seekable:
		err = b.putSeekable(ctx, h, rs, size)
	case size <= b.cfg.PartSize:
		err = b.putSingle(ctx, h, src, size)
	default:
		err = b.putMultipart(ctx, h, src, size)
	}
	if err != nil && errors.Is(err, tiers.ErrLocked) && h.Type != tiers.TypeConfig {
		if oi, serr := b.Stat(ctx, h); serr == nil && oi.Size == size {
			return nil
		}
	}
	if err != nil {
		return b.wrap("put", "to", h, err)
	}
	return nil
}

// putSeekable stores a small object whose reader can seek (the caller
// already holds its bytes, e.g. a *bytes.Reader or a file section): it is
// sent as it is, without a copy into an upload buffer. The remaining
// length is checked against size before anything is sent.
func (b *Backend) putSeekable(ctx context.Context, h tiers.Handle, rs io.ReadSeeker, size int64) error {
	cur, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("read object body: %w", err)
	}
	end, err := rs.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("read object body: %w", err)
	}
	if _, err := rs.Seek(cur, io.SeekStart); err != nil {
		return fmt.Errorf("read object body: %w", err)
	}
	if end-cur != size {
		return fmt.Errorf("%w: reader holds %d bytes, want %d", tiers.ErrSizeMismatch, end-cur, size)
	}
	in := &awss3.PutObjectInput{
		Bucket:        &b.cfg.Bucket,
		Key:           aws.String(b.key(h)),
		Body:          rs,
		ContentLength: aws.Int64(size),
		StorageClass:  b.classFor(h.Type),
	}
	if b.locked() {
		sum := md5.New()
		if _, err := io.Copy(sum, rs); err != nil {
			return fmt.Errorf("read object body: %w", err)
		}
		if _, err := rs.Seek(cur, io.SeekStart); err != nil {
			return fmt.Errorf("read object body: %w", err)
		}
		in.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(sum.Sum(nil)))
	}
	if until := b.retention(); until != nil {
		in.ObjectLockMode = types.ObjectLockMode(b.cfg.ObjectLockMode)
		in.ObjectLockRetainUntilDate = until
	}
	_, err = b.cli.PutObject(ctx, in)
	return classify(err)
}

// getBuf takes an upload buffer from the pool, waiting for one.
func (b *Backend) getBuf(ctx context.Context) ([]byte, error) {
	select {
	case buf := <-b.bufs:
		if buf == nil {
			buf = make([]byte, b.cfg.PartSize)
		}
		return buf, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *Backend) putBuf(buf []byte) { b.bufs <- buf }

// fill reads exactly len(p) bytes from src; a short reader is a size
// mismatch, a failing one the reader's error.
func fill(src *ctxReader, p []byte, done, size int64) error {
	n, err := io.ReadFull(src, p)
	if err == nil {
		return nil
	}
	if src.err != nil {
		return fmt.Errorf("read object body after %d bytes: %w", done+int64(n), src.err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: reader yielded %d bytes, want %d", tiers.ErrSizeMismatch, done+int64(n), size)
	}
	return err
}

// atEOF checks that src yields no more bytes.
func atEOF(src *ctxReader, size int64) error {
	var one [1]byte
	n, err := io.ReadFull(src, one[:])
	if n > 0 {
		return fmt.Errorf("%w: reader yields more than %d bytes", tiers.ErrSizeMismatch, size)
	}
	if src.err != nil {
		return fmt.Errorf("read object body at end: %w", src.err)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read object body at end: %w", err)
	}
	return nil
}

func (b *Backend) putSingle(ctx context.Context, h tiers.Handle, src *ctxReader, size int64) error {
	buf, err := b.getBuf(ctx)
	if err != nil {
		return err
	}
	defer b.putBuf(buf)
	body := buf[:size]
	if err := fill(src, body, 0, size); err != nil {
		return err
	}
	if err := atEOF(src, size); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	in := &awss3.PutObjectInput{
		Bucket:        &b.cfg.Bucket,
		Key:           aws.String(b.key(h)),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(size),
		StorageClass:  b.classFor(h.Type),
	}
	if until := b.retention(); until != nil {
		in.ObjectLockMode = types.ObjectLockMode(b.cfg.ObjectLockMode)
		in.ObjectLockRetainUntilDate = until
	}
	if b.locked() {
		in.ContentMD5 = contentMD5(body)
	}
	_, err = b.cli.PutObject(ctx, in)
	return classify(err)
}

func contentMD5(b []byte) *string {
	s := md5.Sum(b)
	return aws.String(base64.StdEncoding.EncodeToString(s[:]))
}

func (b *Backend) putMultipart(ctx context.Context, h tiers.Handle, src *ctxReader, size int64) error {
	key := b.key(h)
	cin := &awss3.CreateMultipartUploadInput{Bucket: &b.cfg.Bucket, Key: &key, StorageClass: b.classFor(h.Type)}
	if until := b.retention(); until != nil {
		cin.ObjectLockMode = types.ObjectLockMode(b.cfg.ObjectLockMode)
		cin.ObjectLockRetainUntilDate = until
	}
	// Read the first part before creating the upload, so a reader that
	// fails at once leaves nothing to abort.
	first, err := b.getBuf(ctx)
	if err != nil {
		return err
	}
	if err := fill(src, first, 0, size); err != nil {
		b.putBuf(first)
		return err
	}
	out, err := b.cli.CreateMultipartUpload(ctx, cin)
	if err != nil {
		b.putBuf(first)
		return fmt.Errorf("start multipart upload: %w", classify(err))
	}
	uploadID := out.UploadId
	completed := false
	defer func() {
		if !completed {
			b.abort(ctx, key, uploadID)
		}
	}()

	nparts := int((size + b.cfg.PartSize - 1) / b.cfg.PartSize)
	parts := make([]types.CompletedPart, nparts)
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	// Parts in flight are not cancelled when another part or the reader
	// fails: they finish (bounded by Concurrency), then the upload is
	// aborted, so no part can land after the abort (some servers would
	// then keep it). Cancelling ctx still stops them at once.
	pctx := ctx
	failed := func() bool {
		errMu.Lock()
		defer errMu.Unlock()
		return firstErr != nil
	}
	setErr := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	var done int64
	for i := range nparts {
		if failed() {
			break
		}
		n := min(b.cfg.PartSize, size-done)
		var buf []byte
		if i == 0 {
			buf = first
		} else {
			buf, err = b.getBuf(pctx)
			if err != nil {
				setErr(err)
				break
			}
			if err := fill(src, buf[:n], done, size); err != nil {
				b.putBuf(buf)
				setErr(err)
				break
			}
		}
		done += n
		if i == nparts-1 {
			if err := atEOF(src, size); err != nil {
				b.putBuf(buf)
				setErr(err)
				break
			}
		}
		wg.Add(1)
		go func(num int32, body []byte, buf []byte) {
			defer wg.Done()
			defer b.putBuf(buf)
			etag, err := b.uploadPart(pctx, key, uploadID, num, body)
			if err != nil {
				setErr(fmt.Errorf("upload part %d of %d: %w", num, nparts, err))
				return
			}
			parts[num-1] = types.CompletedPart{ETag: etag, PartNumber: aws.Int32(num)}
		}(int32(i+1), buf[:n], buf)
	}
	wg.Wait()
	if firstErr != nil {
		if ctx.Err() != nil && !errors.Is(firstErr, ctx.Err()) {
			return fmt.Errorf("%w: %w", ctx.Err(), firstErr)
		}
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err = b.cli.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{
		Bucket: &b.cfg.Bucket, Key: &key, UploadId: uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return fmt.Errorf("complete multipart upload: %w", classify(err))
	}
	completed = true
	return nil
}

// uploadPart sends one part, retrying transient failures.
func (b *Backend) uploadPart(ctx context.Context, key string, uploadID *string, num int32, body []byte) (*string, error) {
	in := &awss3.UploadPartInput{Bucket: &b.cfg.Bucket, Key: &key, UploadId: uploadID, PartNumber: aws.Int32(num), ContentLength: aws.Int64(int64(len(body)))}
	if b.locked() {
		in.ContentMD5 = contentMD5(body)
	}
	var last error
	for attempt := 1; attempt <= b.cfg.MaxAttempts; attempt++ {
		in.Body = bytes.NewReader(body)
		out, err := b.cli.UploadPart(ctx, in)
		if err == nil {
			return out.ETag, nil
		}
		last = classify(err)
		if !tiers.IsRetriable(last) || attempt == b.cfg.MaxAttempts {
			break
		}
		t := time.NewTimer(tiers.RetryPolicy{}.Backoff(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w; retry abandoned: %w", last, ctx.Err())
		}
	}
	return nil, last
}

// abort cancels a multipart upload so its parts do not linger (and cost);
// it runs even when ctx is cancelled.
func (b *Backend) abort(ctx context.Context, key string, uploadID *string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*b.cfg.ConnectTimeout)
	defer cancel()
	for attempt := 1; attempt <= b.cfg.MaxAttempts; attempt++ {
		_, err := b.cli.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{Bucket: &b.cfg.Bucket, Key: &key, UploadId: uploadID})
		if err == nil || !tiers.IsRetriable(classify(err)) || actx.Err() != nil {
			return
		}
		time.Sleep(tiers.RetryPolicy{}.Backoff(attempt))
	}
}

// ctxReader reads from r until ctx is done and remembers r's error.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	err error // the error of r or ctx, not io.EOF
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// --- Load ---

// Load calls fn with a reader over length bytes of h at offset (0 = to the
// end); see tiers.Backend. A body that ends early (connection lost) makes
// Load fail with a retriable error. An archived object that is not
// restored yields an error wrapping tiers.ErrNotReady, after Load has
// requested its restore (see Warmup) and saying when it will be ready.
func (b *Backend) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	if err := h.Validate(); err != nil {
		return b.wrap("load", "from", h, err)
	}
	if offset < 0 || length < 0 {
		return b.wrap("load", "from", h, fmt.Errorf("invalid range: offset %d, length %d", offset, length))
	}
	if err := b.check(ctx); err != nil {
		return b.wrap("load", "from", h, err)
	}
	in := &awss3.GetObjectInput{Bucket: &b.cfg.Bucket, Key: aws.String(b.key(h))}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out, err := b.cli.GetObject(rctx, in)
	if err != nil {
		err = classify(err)
		if errors.Is(err, tiers.ErrShortRead) {
			return b.loadBeyond(ctx, h, offset, length, fn)
		}
		if errors.Is(err, tiers.ErrNotReady) {
			// Ask for the restore now (idempotent: a restore in progress
			// is not requested twice) and say when to come back.
			switch eta, werr := b.warmOne(ctx, h); {
			case werr != nil:
				err = fmt.Errorf("%w (archived in a cold storage class; requesting its restore failed: %v; run drpipe warmup to retry)", err, werr)
			case eta > 0:
				err = fmt.Errorf("%w (archived in a cold storage class: restore requested, ready in about %s; drpipe warmup --wait polls until then)", err, eta)
			default:
				err = fmt.Errorf("%w (archived in a cold storage class; its restore has just completed: retry)", err)
			}
		}
		return b.wrap("load", "from", h, err)
	}
	defer out.Body.Close()
	// A response without Content-Length (chunked, e.g. through a proxy)
	// has a body of unknown length, not an empty one.
	got := int64(-1)
	if out.ContentLength != nil {
		got = *out.ContentLength
	}
	var body io.Reader = &stallReader{r: out.Body, timeout: b.cfg.ResponseTimeout, cancel: cancel}
	var first, last int64
	_, rerr := fmt.Sscanf(aws.ToString(out.ContentRange), "bytes %d-%d/", &first, &last)
	hasRange := out.ContentRange != nil && rerr == nil && last >= first
	if in.Range != nil && rerr == nil && (!hasRange || first != offset || length > 0 && last > offset+length-1) {
		// Bytes from elsewhere in the object are not those at offset.
		return b.wrap("load", "from", h, fmt.Errorf("asked for %s, the server answered with %s: the endpoint is not a compatible S3 server or a proxy alters its answers",
			aws.ToString(in.Range), aws.ToString(out.ContentRange)))
	}
	if in.Range != nil && out.ContentRange == nil {
		// The server ignored the range and sent the whole object.
		if got >= 0 && got < offset+length {
			return b.wrap("load", "from", h, fmt.Errorf("%w: object has %d bytes, want %d at offset %d", tiers.ErrShortRead, got, length, offset))
		}
		if _, err := io.CopyN(io.Discard, body, offset); err != nil {
			return b.wrap("load", "from", h, tiers.Retriable(fmt.Errorf("skip to offset %d: %w", offset, err)))
		}
		if got >= 0 {
			got -= offset
		}
		if length > 0 {
			body, got = io.LimitReader(body, length), length
		}
	}
	if got < 0 {
		// A ranged answer of unknown length carries its range, and the
		// size of a whole object is known to a HEAD: a body that ends
		// before that was cut short (worth another try), not an object
		// that ends there.
		switch {
		case hasRange:
			got = last - first + 1
		case length > 0:
			got = length
		default:
			oi, err := b.Stat(ctx, h)
			if err != nil {
				return err
			}
			if got = oi.Size - offset; got < 0 {
				return b.wrap("load", "from", h, fmt.Errorf("%w: object has %d bytes, want those from offset %d", tiers.ErrShortRead, oi.Size, offset))
			}
		}
	}
	if length > 0 && got >= 0 && got < length {
		return b.wrap("load", "from", h, fmt.Errorf("%w: %d bytes available at offset %d, want %d", tiers.ErrShortRead, got, offset, length))
	}
	br := &bodyReader{ctx: ctx, r: body, left: got}
	if err := fn(br); err != nil {
		if br.err != nil && !errors.Is(err, context.Canceled) {
			// The transfer broke, not the callback: worth another try.
			return b.wrap("load", "from", h, tiers.Retriable(err))
		}
		return b.wrap("load", "from", h, err)
	}
	return nil
}

// loadBeyond handles a range the server refused (416): it is fine only
// for an empty range exactly at the end of the object.
func (b *Backend) loadBeyond(ctx context.Context, h tiers.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	oi, err := b.Stat(ctx, h)
	if err != nil {
		return err
	}
	if length == 0 && offset == oi.Size {
		if err := fn(bytes.NewReader(nil)); err != nil {
			return b.wrap("load", "from", h, err)
		}
		return nil
	}
	want := length
	if want == 0 {
		want = oi.Size - offset
	}
	return b.wrap("load", "from", h, fmt.Errorf("%w: object has %d bytes, want %d at offset %d", tiers.ErrShortRead, oi.Size, want, offset))
}

// stallReader reads a response body and cancels its request (cancel)
// when a Read gets no data within timeout: a transfer that stops moving
// with the connection open (a hung server or middlebox) fails with an
// error worth retrying instead of hanging. The time between Reads, the
// caller's, does not count.
type stallReader struct {
	r       io.Reader
	timeout time.Duration
	cancel  context.CancelFunc
	timer   *time.Timer
	stalled atomic.Bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.timer == nil {
		s.timer = time.AfterFunc(s.timeout, func() {
			s.stalled.Store(true)
			s.cancel()
		})
	} else {
		s.timer.Reset(s.timeout)
	}
	n, err := s.r.Read(p)
	s.timer.Stop()
	if err != nil && err != io.EOF && s.stalled.Load() {
		return n, tiers.Retriable(fmt.Errorf("the download stalled: no data received for %v (s3.response_timeout)", s.timeout))
	}
	return n, err
}

// bodyReader reads a response body, turning an early end into
// io.ErrUnexpectedEOF and remembering transfer errors.
type bodyReader struct {
	ctx  context.Context
	r    io.Reader
	left int64 // bytes still expected, -1 if unknown
	err  error
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		r.err = err
		return 0, err
	}
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.left > 0 && int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	if r.left > 0 {
		r.left -= int64(n)
	}
	if err == io.EOF && r.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		r.err = classify(err)
		return n, r.err
	}
	return n, err
}

// --- Stat, List, Remove ---

// Stat returns the size, modification time and storage class of h.
func (b *Backend) Stat(ctx context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	if err := h.Validate(); err != nil {
		return tiers.ObjectInfo{}, b.wrap("stat", "in", h, err)
	}
	if err := b.check(ctx); err != nil {
		return tiers.ObjectInfo{}, b.wrap("stat", "in", h, err)
	}
	out, err := b.cli.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &b.cfg.Bucket, Key: aws.String(b.key(h))})
	if err != nil {
		return tiers.ObjectInfo{}, b.wrap("stat", "in", h, classify(err))
	}
	return tiers.ObjectInfo{Handle: h, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified), StorageClass: className(string(out.StorageClass))}, nil
}

func className(s string) string {
	if s == "" {
		return ClassStandard
	}
	return s
}

// List calls fn for every object of type t; keys that do not map back to
// a valid handle (foreign objects under the prefix, keys outside it from
// a server that ignores the prefix) are skipped. An error
// from fn is returned as is.
func (b *Backend) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	return b.ListAfter(ctx, t, "", fn)
}

// ListAfter implements tiers.ListerAfter: it lists the objects of type t
// whose names come after after ("" for all), in ascending order of name.
// S3 lists keys in ascending order, and a key orders as its name does
// (data keys are data/<first two characters of the name>/<name>) for the
// names drpipe writes, which are longer than one character; a name of
// one character may order otherwise, which a retried listing notices.
func (b *Backend) ListAfter(ctx context.Context, t tiers.Type, after string, fn func(tiers.ObjectInfo) error) error {
	lh := tiers.Handle{Type: t}
	if !t.Valid() {
		return b.wrap("list", "in", lh, fmt.Errorf("%w: unknown object type %q", tiers.ErrInvalidHandle, t))
	}
	if err := b.check(ctx); err != nil {
		return b.wrap("list", "in", lh, err)
	}
	if t == tiers.TypeConfig {
		h := tiers.Handle{Type: t, Name: "config"}
		if after >= h.Name {
			return nil
		}
		oi, err := b.Stat(ctx, h)
		if errors.Is(err, tiers.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(oi)
	}
	prefix := b.typePrefix(t)
	in := &awss3.ListObjectsV2Input{Bucket: &b.cfg.Bucket, Prefix: &prefix}
	var startAfter string
	if after != "" {
		startAfter = b.key(tiers.Handle{Type: t, Name: after})
		in.StartAfter = aws.String(startAfter)
	}
	for {
		page, err := b.cli.ListObjectsV2(ctx, in)
		if err != nil {
			return b.wrap("list", "in", lh, classify(err))
		}
		for _, o := range page.Contents {
			// A server that ignores start-after (some S3-compatible
			// ones) answers from the start: the keys up to it were
			// passed by the listing this one resumes.
			if startAfter != "" && aws.ToString(o.Key) <= startAfter {
				continue
			}
			// A server that ignores the prefix answers the whole
			// bucket: keys outside it are no objects of type t.
			rel, ok := strings.CutPrefix(aws.ToString(o.Key), prefix)
			if !ok {
				continue
			}
			name := rel
			if t == tiers.TypeData {
				dir, n, ok := strings.Cut(rel, "/")
				if !ok || dir != dataPrefix(n) {
					continue
				}
				name = n
			}
			h := tiers.Handle{Type: t, Name: name}
			if h.Validate() != nil {
				continue
			}
			oi := tiers.ObjectInfo{Handle: h, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified), StorageClass: className(string(o.StorageClass))}
			if err := fn(oi); err != nil {
				return err
			}
		}
		if !aws.ToBool(page.IsTruncated) {
			return nil
		}
		// A short listing is worse than none: prune would take what it
		// misses for garbage. A server that says there is more but gives
		// no new continuation token cannot be listed to the end.
		next := aws.ToString(page.NextContinuationToken)
		if next == "" || next == aws.ToString(in.ContinuationToken) {
			return b.wrap("list", "in", lh, fmt.Errorf("the server reports a truncated listing but no new continuation token (%q): "+
				"the listing cannot be completed; the endpoint is not a compatible S3 server or a proxy alters its answers", next))
		}
		in.ContinuationToken = aws.String(next)
	}
}

// Remove deletes h: on a versioned bucket every version of the key (and
// every delete marker), otherwise the object. A missing object is not an
// error. An object under retention yields an error wrapping
// tiers.ErrLocked that names the retention date.
func (b *Backend) Remove(ctx context.Context, h tiers.Handle) error {
	if err := h.Validate(); err != nil {
		return b.wrap("remove", "from", h, err)
	}
	if err := b.check(ctx); err != nil {
		return b.wrap("remove", "from", h, err)
	}
	key := b.key(h)
	if !b.versioned.Load() {
		out, err := b.cli.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &b.cfg.Bucket, Key: &key})
		if err != nil {
			return b.wrap("remove", "from", h, b.lockedError(ctx, key, nil, classify(err)))
		}
		if !aws.ToBool(out.DeleteMarker) {
			return nil
		}
		// The bucket keeps versions, though Open could not read its
		// versioning (credentials without s3:GetBucketVersioning): the
		// delete only hid the object behind a marker. Its versions go,
		// the marker too, as on any versioned bucket.
		b.versioned.Store(true)
	}
	var versions []*string
	in := &awss3.ListObjectVersionsInput{Bucket: &b.cfg.Bucket, Prefix: &key}
	for {
		page, err := b.cli.ListObjectVersions(ctx, in)
		if err != nil {
			return b.wrap("remove", "from", h, fmt.Errorf("list versions: %w", classify(err)))
		}
		for _, v := range page.Versions {
			if aws.ToString(v.Key) == key {
				versions = append(versions, v.VersionId)
			}
		}
		for _, m := range page.DeleteMarkers {
			if aws.ToString(m.Key) == key {
				versions = append(versions, m.VersionId)
			}
		}
		if !aws.ToBool(page.IsTruncated) {
			break
		}
		// As in List: a truncated page without new markers would be
		// asked for again forever.
		nk, nv := aws.ToString(page.NextKeyMarker), aws.ToString(page.NextVersionIdMarker)
		if (nk == "" && nv == "") || (nk == aws.ToString(in.KeyMarker) && nv == aws.ToString(in.VersionIdMarker)) {
			return b.wrap("remove", "from", h, fmt.Errorf("list versions: the server reports a truncated listing but no new markers (%q, %q): "+
				"the versions cannot all be found; the endpoint is not a compatible S3 server or a proxy alters its answers", nk, nv))
		}
		in.KeyMarker, in.VersionIdMarker = aws.String(nk), nil
		if nv != "" { // an empty version-id-marker is not sent
			in.VersionIdMarker = aws.String(nv)
		}
	}
	for _, v := range versions {
		_, err := b.cli.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &b.cfg.Bucket, Key: &key, VersionId: v})
		if err != nil {
			err = classify(err)
			if errors.Is(err, tiers.ErrNotFound) {
				continue
			}
			return b.wrap("remove", "from", h, b.lockedError(ctx, key, v, err))
		}
	}
	return nil
}

// lockedError adds the retention date to an ErrLocked error.
func (b *Backend) lockedError(ctx context.Context, key string, version *string, err error) error {
	if !errors.Is(err, tiers.ErrLocked) {
		return err
	}
	out, herr := b.cli.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &b.cfg.Bucket, Key: &key, VersionId: version})
	if herr == nil && out.ObjectLockRetainUntilDate != nil {
		return fmt.Errorf("%w (%s) until %s; it can be removed after that date: %w",
			tiers.ErrLocked, strings.ToLower(string(out.ObjectLockMode)), out.ObjectLockRetainUntilDate.UTC().Format(time.RFC3339), detail(err))
	}
	return err
}

// RetainUntil returns the retention date of h's current version (zero if
// it has none); see tiers.Retainer.
func (b *Backend) RetainUntil(ctx context.Context, h tiers.Handle) (time.Time, error) {
	if err := h.Validate(); err != nil {
		return time.Time{}, b.wrap("retention of", "in", h, err)
	}
	out, err := b.cli.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &b.cfg.Bucket, Key: aws.String(b.key(h))})
	if err != nil {
		return time.Time{}, b.wrap("retention of", "in", h, classify(err))
	}
	return aws.ToTime(out.ObjectLockRetainUntilDate), nil
}

// SetStorageClass moves h to storage class class (one of StorageClasses)
// by copying the object onto itself, as tiering policies do. On a
// versioned bucket the old version stays until removed by a lifecycle
// rule.
func (b *Backend) SetStorageClass(ctx context.Context, h tiers.Handle, class string) error {
	if err := h.Validate(); err != nil {
		return b.wrap("set storage class of", "in", h, err)
	}
	c, err := normClass(class, "storage class")
	if err != nil {
		return b.wrap("set storage class of", "in", h, err)
	}
	key := b.key(h)
	head, err := b.cli.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &b.cfg.Bucket, Key: &key})
	if err != nil {
		return b.wrap("set storage class of", "in", h, classify(err))
	}
	// REPLACE with the same metadata: servers that ignore storage classes
	// refuse a copy onto itself that changes nothing else.
	in := &awss3.CopyObjectInput{
		Bucket: &b.cfg.Bucket, Key: &key, CopySource: aws.String(b.cfg.Bucket + "/" + key),
		StorageClass: types.StorageClass(c), MetadataDirective: types.MetadataDirectiveReplace,
		Metadata: head.Metadata, ContentType: head.ContentType,
	}
	if until := b.retention(); until != nil {
		in.ObjectLockMode = types.ObjectLockMode(b.cfg.ObjectLockMode)
		in.ObjectLockRetainUntilDate = until
	}
	if _, err := b.cli.CopyObject(ctx, in); err != nil {
		return b.wrap("set storage class of", "in", h, classify(err))
	}
	return nil
}
