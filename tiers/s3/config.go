package s3

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// Storage classes accepted for uploads. GLACIER and DEEP_ARCHIVE are
// archive classes: objects there must be restored (see Backend.Warmup)
// before they can be read.
const (
	ClassStandard    = "STANDARD"
	ClassStandardIA  = "STANDARD_IA"
	ClassGlacierIR   = "GLACIER_IR"
	ClassGlacier     = "GLACIER"
	ClassDeepArchive = "DEEP_ARCHIVE"
)

// StorageClasses lists the storage classes drpipe writes.
var StorageClasses = []string{ClassStandard, ClassStandardIA, ClassGlacierIR, ClassGlacier, ClassDeepArchive}

// IsArchiveClass reports whether objects of storage class c need a restore
// before they can be read.
func IsArchiveClass(c string) bool { return tiers.ArchiveClass(c) }

// Object lock modes (S3 Object Lock retention).
const (
	LockGovernance = "GOVERNANCE"
	LockCompliance = "COMPLIANCE"
)

// Checksum policies for the SDK's request checksums and response
// validation ("when_required" works with every S3-compatible server;
// "when_supported" is the SDK's default and adds CRC checksums to uploads,
// which some non-AWS servers reject).
const (
	ChecksumWhenRequired  = "when_required"
	ChecksumWhenSupported = "when_supported"
)

// Limits of multipart uploads.
const (
	// MinPartSize is the smallest part size S3 accepts (for all parts but
	// the last).
	MinPartSize = 5 << 20
	// MaxPartSize is the largest part size drpipe accepts (memory is
	// Concurrency x PartSize).
	MaxPartSize = 1 << 30
	// DefaultPartSize is the default part size; objects up to this size
	// are stored with a single PutObject.
	DefaultPartSize = 16 << 20
	// DefaultConcurrency is the default number of upload buffers (and
	// concurrent part uploads).
	DefaultConcurrency = 4
)

// Config configures a Backend. The zero value of every field but Bucket
// takes the default noted.
type Config struct {
	// Bucket must exist; drpipe never creates buckets.
	Bucket string
	// Prefix is prepended to every key ("" for the bucket root); it has
	// no leading or trailing slash.
	Prefix string

	// Endpoint is the server's URL, e.g. "https://s3.example.com:9000".
	// Empty uses AWS (or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).
	Endpoint string
	// Region defaults to AWS_REGION / the shared config's region, and to
	// us-east-1 when neither is set.
	Region string
	// PathStyle selects path-style addressing (http://host/bucket/key);
	// "auto" (or empty) uses it exactly when an endpoint is configured.
	PathStyle string
	// CAFile is a PEM file of extra CA certificates to trust.
	CAFile string

	// AccessKeyID and SecretAccessKey (and SessionToken) are static
	// credentials; when empty the standard AWS chain is used
	// (AWS_ACCESS_KEY_ID, shared credentials and config files, SSO, web
	// identity, container and instance roles). Profile selects a shared
	// config profile.
	AccessKeyID, SecretAccessKey, SessionToken string
	Profile                                    string

	// StorageClass is the storage class of data objects (pack shards),
	// default STANDARD. MetadataStorageClass is used for everything else
	// (config, keys, index, snapshots, tombstones), default STANDARD; it
	// may not be an archive class, so listing and opening a repository
	// never waits for a restore.
	StorageClass, MetadataStorageClass string

	// ObjectLockMode (GOVERNANCE or COMPLIANCE) and ObjectLockDays put
	// every object written under retention for that many days. The bucket
	// must have object lock enabled.
	ObjectLockMode string
	ObjectLockDays int

	// Concurrency bounds the upload buffers in use at once (and so memory:
	// Concurrency x PartSize) and the concurrent part uploads (default 4).
	Concurrency int
	// PartSize: objects larger than this are uploaded in parts of this
	// size (default 16 MiB, at least 5 MiB).
	PartSize int64

	// RequestChecksum and ResponseChecksum set the SDK's checksum
	// behaviour: when_required (default) or when_supported.
	RequestChecksum, ResponseChecksum string

	// ConnectTimeout bounds connecting (TCP and TLS) and the probe that
	// Open makes (default 10s). ResponseTimeout bounds the wait for the
	// response headers of each request, and how long an upload or a
	// download in progress may go without moving data (default 60s).
	ConnectTimeout, ResponseTimeout time.Duration

	// MaxAttempts is the number of attempts per part upload and per
	// abort of a multipart upload (default 5); whole operations are
	// retried by tiers.WithRetry around the backend.
	MaxAttempts int

	// RestoreDays is how long a restored copy of an archived object stays
	// readable (default 7); RestoreTier is the retrieval tier: Standard
	// (default), Bulk or Expedited.
	RestoreDays int
	RestoreTier string

	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ParseURL splits "s3://bucket/prefix" into bucket and prefix. The prefix
// is cleaned of leading, trailing and doubled slashes; "." and ".."
// components are rejected, as are bucket names S3 would refuse.
func ParseURL(loc string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(loc, "s3://")
	if !ok {
		return "", "", fmt.Errorf("s3 location %q: want s3://bucket/prefix", loc)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if err := validBucket(bucket); err != nil {
		return "", "", fmt.Errorf("s3 location %q: %w", loc, err)
	}
	prefix, err = cleanPrefix(prefix)
	if err != nil {
		return "", "", fmt.Errorf("s3 location %q: %w", loc, err)
	}
	return bucket, prefix, nil
}

// cleanPrefix drops empty components (leading, trailing and doubled
// slashes) and rejects "." and "..", control characters and characters
// that do not survive in URLs.
func cleanPrefix(prefix string) (string, error) {
	var parts []string
	for _, p := range strings.Split(prefix, "/") {
		switch p {
		case "":
			continue
		case ".", "..":
			return "", fmt.Errorf("prefix component %q not allowed", p)
		}
		for _, c := range p {
			if c < 0x20 || c == 0x7f || c == '\\' || c == '?' || c == '#' {
				return "", fmt.Errorf("prefix contains %q", c)
			}
		}
		parts = append(parts, p)
	}
	prefix = strings.Join(parts, "/")
	if len(prefix) > 512 {
		return "", errors.New("prefix longer than 512 bytes")
	}
	return prefix, nil
}

// validBucket applies S3's bucket naming rules (3-63 characters of
// lower-case letters, digits, '.', '-', starting and ending with a letter
// or digit), relaxed to also allow '_' and upper case, which some
// S3-compatible servers accept.
func validBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters", b)
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !alnum(c) && c != '.' && c != '-' && c != '_' {
			return fmt.Errorf("bucket name %q contains %q", b, c)
		}
	}
	if !alnum(b[0]) || !alnum(b[len(b)-1]) {
		return fmt.Errorf("bucket name %q must start and end with a letter or digit", b)
	}
	if strings.Contains(b, "..") {
		return fmt.Errorf("bucket name %q contains \"..\"", b)
	}
	return nil
}

// normalize checks c and fills in defaults.
func (c Config) normalize() (Config, error) {
	var errs []error
	if err := validBucket(c.Bucket); err != nil {
		errs = append(errs, err)
	}
	if p, err := cleanPrefix(c.Prefix); err != nil {
		errs = append(errs, err)
	} else {
		c.Prefix = p
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("s3.endpoint %q: want http://host[:port] or https://host[:port]", c.Endpoint))
		}
	}
	switch strings.ToLower(c.PathStyle) {
	case "", "auto", "true", "false", "1", "0", "yes", "no":
	default:
		errs = append(errs, fmt.Errorf("s3.path_style %q: want auto, true or false", c.PathStyle))
	}
	var err error
	if c.StorageClass, err = normClass(c.StorageClass, "s3.storage_class"); err != nil {
		errs = append(errs, err)
	}
	if c.MetadataStorageClass, err = normClass(c.MetadataStorageClass, "s3.metadata_storage_class"); err != nil {
		errs = append(errs, err)
	} else if IsArchiveClass(c.MetadataStorageClass) {
		errs = append(errs, fmt.Errorf("s3.metadata_storage_class %s is an archive class: metadata must stay readable (use STANDARD, STANDARD_IA or GLACIER_IR)", c.MetadataStorageClass))
	}
	c.ObjectLockMode = strings.ToUpper(strings.TrimSpace(c.ObjectLockMode))
	switch c.ObjectLockMode {
	case "", "NONE", "OFF":
		c.ObjectLockMode = ""
		if c.ObjectLockDays != 0 {
			errs = append(errs, errors.New("s3.object_lock_days is set but s3.object_lock_mode is not (governance or compliance)"))
		}
	case LockGovernance, LockCompliance:
		if c.ObjectLockDays <= 0 || c.ObjectLockDays > 36500 {
			errs = append(errs, fmt.Errorf("s3.object_lock_days %d: want 1 to 36500 with s3.object_lock_mode %s", c.ObjectLockDays, strings.ToLower(c.ObjectLockMode)))
		}
	default:
		errs = append(errs, fmt.Errorf("s3.object_lock_mode %q: want governance or compliance", c.ObjectLockMode))
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		errs = append(errs, fmt.Errorf("s3.concurrency %d: want 1 to 256", c.Concurrency))
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.PartSize < MinPartSize || c.PartSize > MaxPartSize {
		errs = append(errs, fmt.Errorf("s3.part_size %d: want 5MiB to 1GiB", c.PartSize))
	}
	for _, p := range []*string{&c.RequestChecksum, &c.ResponseChecksum} {
		*p = strings.ToLower(strings.TrimSpace(*p))
		switch *p {
		case "":
			*p = ChecksumWhenRequired
		case ChecksumWhenRequired, ChecksumWhenSupported:
		default:
			errs = append(errs, fmt.Errorf("s3 checksum setting %q: want when_required or when_supported", *p))
		}
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.ResponseTimeout <= 0 {
		c.ResponseTimeout = 60 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > 100 {
		errs = append(errs, fmt.Errorf("s3.retries %d: want 1 to 100 attempts per operation (0: the default, 5)", c.MaxAttempts))
	}
	if c.RestoreDays == 0 {
		c.RestoreDays = 7
	}
	if c.RestoreDays < 1 {
		errs = append(errs, fmt.Errorf("s3.restore_days %d: want at least 1", c.RestoreDays))
	}
	switch strings.ToLower(c.RestoreTier) {
	case "", "standard":
		c.RestoreTier = "Standard"
	case "bulk":
		c.RestoreTier = "Bulk"
	case "expedited":
		c.RestoreTier = "Expedited"
	default:
		errs = append(errs, fmt.Errorf("s3.restore_tier %q: want standard, bulk or expedited", c.RestoreTier))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, errors.Join(errs...)
}

func normClass(s, key string) (string, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if s == "" {
		return ClassStandard, nil
	}
	for _, c := range StorageClasses {
		if s == c {
			return s, nil
		}
	}
	return "", fmt.Errorf("%s %q: want one of %s", key, s, strings.Join(StorageClasses, ", "))
}

// pathStyle resolves the PathStyle setting.
func (c Config) pathStyle(endpointSet bool) bool {
	switch strings.ToLower(c.PathStyle) {
	case "true", "1", "yes":
		return true
	case "false", "0", "no":
		return false
	}
	return endpointSet
}
