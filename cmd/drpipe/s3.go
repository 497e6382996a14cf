package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/drpipe/drpipe/tiers"
	s3tier "github.com/drpipe/drpipe/tiers/s3"
)

// s3Keys are the config keys of the s3 section (README and
// configs/s3.yaml document them); loadConfig rejects others.
var s3Keys = map[string]bool{
	"s3.endpoint": true, "s3.region": true, "s3.path_style": true, "s3.ca_file": true,
	"s3.access_key_id": true, "s3.secret_access_key": true, "s3.session_token": true, "s3.profile": true,
	"s3.storage_class": true, "s3.metadata_storage_class": true,
	"s3.object_lock_mode": true, "s3.object_lock_days": true,
	"s3.concurrency": true, "s3.part_size": true,
	"s3.request_checksum": true, "s3.response_checksum": true,
	"s3.connect_timeout": true, "s3.response_timeout": true, "s3.retries": true,
	"s3.restore_days": true, "s3.restore_tier": true,
}

// copyKeys are the config keys of the copy section.
var copyKeys = map[string]bool{"copy.workers": true}

// numberKeys are the s3 and copy keys that take a whole number (the other
// sections' number keys have defaults that say so).
var numberKeys = []string{"s3.object_lock_days", "s3.concurrency", "s3.retries", "s3.restore_days", "copy.workers"}

// s3Config builds the S3 tier configuration for loc from the s3.* keys.
func (a *app) s3Config(loc string) (s3tier.Config, error) {
	bucket, prefix, err := s3tier.ParseURL(loc)
	if err != nil {
		return s3tier.Config{}, usageError{err}
	}
	v := a.v
	c := s3tier.Config{
		Bucket: bucket, Prefix: prefix,
		Endpoint: v.GetString("s3.endpoint"), Region: v.GetString("s3.region"),
		PathStyle: v.GetString("s3.path_style"), CAFile: v.GetString("s3.ca_file"),
		AccessKeyID: v.GetString("s3.access_key_id"), SecretAccessKey: v.GetString("s3.secret_access_key"),
		SessionToken: v.GetString("s3.session_token"), Profile: v.GetString("s3.profile"),
		StorageClass: v.GetString("s3.storage_class"), MetadataStorageClass: v.GetString("s3.metadata_storage_class"),
		ObjectLockMode: v.GetString("s3.object_lock_mode"), ObjectLockDays: v.GetInt("s3.object_lock_days"),
		Concurrency:     v.GetInt("s3.concurrency"),
		RequestChecksum: v.GetString("s3.request_checksum"), ResponseChecksum: v.GetString("s3.response_checksum"),
		MaxAttempts: v.GetInt("s3.retries"),
		RestoreDays: v.GetInt("s3.restore_days"), RestoreTier: v.GetString("s3.restore_tier"),
	}
	if s := v.GetString("s3.part_size"); s != "" {
		n, err := parseSize(s)
		if err != nil {
			return c, usagef("s3.part_size: %w", err)
		}
		c.PartSize = n
	}
	for key, dst := range map[string]*time.Duration{"s3.connect_timeout": &c.ConnectTimeout, "s3.response_timeout": &c.ResponseTimeout} {
		if s := v.GetString(key); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return c, usagef("%s %q: want a duration such as 10s or 2m", key, s)
			}
			*dst = d
		}
	}
	return c, nil
}

// openS3Raw opens the bucket named by an s3:// location without the retry
// wrapper (for the optional Warmer and Retainer interfaces). mods adjust
// the configuration built from the s3.* keys (e.g. a tier's storage
// class).
func (a *app) openS3Raw(ctx context.Context, loc string, mods ...func(*s3tier.Config)) (*s3tier.Backend, error) {
	c, err := a.s3Config(loc)
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		m(&c)
	}
	be, err := s3tier.Open(ctx, c)
	if err != nil {
		if strings.HasPrefix(err.Error(), "s3 configuration") {
			return nil, usageError{err}
		}
		return nil, err
	}
	return be, nil
}

// openS3 opens an s3:// location as a repository tier: the bucket backend
// wrapped in tiers.WithRetry (backoff on throttling, 5xx and dropped
// connections; s3.retries attempts per operation).
func (a *app) openS3(ctx context.Context, loc string) (tiers.Backend, error) {
	be, err := a.openS3Raw(ctx, loc)
	if err != nil {
		return nil, err
	}
	return tiers.WithRetry(be, tiers.RetryPolicy{MaxAttempts: a.v.GetInt("s3.retries")}), nil
}

// tierHint returns an operator hint for errors of the tiers (S3, copy).
func tierHint(err error) string {
	switch {
	case errors.Is(err, tiers.ErrLocked):
		return "the object is under S3 Object Lock retention (s3.object_lock_mode/s3.object_lock_days when it was written); it can be removed only after its retention date"
	case errors.Is(err, tiers.ErrNotReady):
		return "the data is in an archive storage class (GLACIER, DEEP_ARCHIVE): the read requested the restore of what it touched; 'drpipe warmup --repo R --wait' requests the rest and waits until all is ready, then retry"
	case errors.Is(err, s3tier.ErrAuth):
		return "set s3.access_key_id and s3.secret_access_key (env DRPIPE_S3_ACCESS_KEY_ID, DRPIPE_S3_SECRET_ACCESS_KEY) or the AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...)"
	case errors.Is(err, s3tier.ErrNoBucket):
		return "create the bucket first (drpipe never creates buckets), or fix the bucket name in s3://bucket/prefix"
	case errors.Is(err, s3tier.ErrWrongRegion):
		return "set s3.region (env DRPIPE_S3_REGION or AWS_REGION) to the bucket's region"
	case errors.Is(err, s3tier.ErrNoObjectLock):
		return "object lock can only be enabled when a bucket is created: create a bucket with object lock, or unset s3.object_lock_mode"
	case errors.Is(err, s3tier.ErrUnreachable):
		return "check s3.endpoint (or AWS_ENDPOINT_URL), s3.ca_file for a private CA, and the network; s3.connect_timeout bounds the wait"
	case errors.Is(err, tiers.ErrDifferentRepository):
		return "copy into an empty location or into a replica of the same repository"
	case errors.Is(err, tiers.ErrCopyIncomplete):
		return "run the same drpipe copy again: it sends only what is still missing; damaged source objects need 'drpipe repair' on the source first"
	}
	return ""
}

// humanETA renders a wait such as "about 5 hours".
func humanETA(d time.Duration) string {
	switch {
	case d <= 0:
		return "now"
	case d < time.Hour:
		return fmt.Sprintf("about %d minutes", int(d.Minutes()+0.5))
	default:
		return fmt.Sprintf("about %d hours", int(d.Hours()+0.5))
	}
}
