package s3

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/drpipe/drpipe/tiers"
)

// RestoreStatus is the decoded x-amz-restore header of an archived object.
type RestoreStatus struct {
	// Ongoing is true while the restore is in progress.
	Ongoing bool
	// Expiry is when the restored copy goes away (zero while ongoing).
	Expiry time.Time
}

// ParseRestoreHeader decodes an x-amz-restore header such as
//
//	ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"
//
// Unknown keys are ignored; a missing ongoing-request, an unterminated
// quote or an unparsable date is an error.
func ParseRestoreHeader(s string) (RestoreStatus, error) {
	var st RestoreStatus
	if len(s) > 4096 {
		return st, fmt.Errorf("x-amz-restore header of %d bytes is too long", len(s))
	}
	seen := false
	rest := strings.TrimSpace(s)
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return RestoreStatus{}, fmt.Errorf("x-amz-restore %q: want key=\"value\" pairs", clip(s))
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimSpace(rest[eq+1:])
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return RestoreStatus{}, fmt.Errorf("x-amz-restore %q: unterminated quote", clip(s))
			}
			val, rest = rest[1:1+end], rest[2+end:]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val, rest = strings.TrimSpace(rest[:end]), rest[end:]
		}
		rest = strings.TrimSpace(rest)
		if rest != "" {
			if rest[0] != ',' {
				return RestoreStatus{}, fmt.Errorf("x-amz-restore %q: want ',' between pairs", clip(s))
			}
			rest = strings.TrimSpace(rest[1:])
		}
		switch key {
		case "ongoing-request":
			switch strings.ToLower(val) {
			case "true":
				st.Ongoing = true
			case "false":
				st.Ongoing = false
			default:
				return RestoreStatus{}, fmt.Errorf("x-amz-restore %q: ongoing-request %q, want true or false", clip(s), clip(val))
			}
			seen = true
		case "expiry-date":
			t, err := time.Parse(time.RFC1123, val)
			if err != nil {
				return RestoreStatus{}, fmt.Errorf("x-amz-restore %q: expiry-date: %w", clip(s), err)
			}
			st.Expiry = t
		}
	}
	if !seen {
		return RestoreStatus{}, fmt.Errorf("x-amz-restore %q: no ongoing-request", clip(s))
	}
	return st, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// RestoreETA is the typical time S3 takes to restore an object of an
// archive class with the given retrieval tier (Standard, Bulk, Expedited),
// used to tell the operator when to come back.
func RestoreETA(class, tier string) time.Duration {
	switch class {
	case ClassDeepArchive:
		if tier == "Bulk" {
			return 48 * time.Hour
		}
		return 12 * time.Hour
	case ClassGlacier:
		switch tier {
		case "Expedited":
			return 5 * time.Minute
		case "Bulk":
			return 12 * time.Hour
		}
		return 5 * time.Hour
	}
	return 0
}

// Warmup makes the objects hs readable: objects in archive classes
// (GLACIER, DEEP_ARCHIVE) that are neither restored nor being restored get
// a RestoreObject request (Config.RestoreTier, Config.RestoreDays). It
// returns the objects still not readable and when they are expected to be
// (now plus the typical restore time of their class and tier); with no
// pending objects ready is now. Calling it again polls: restores already
// requested are not requested twice. See tiers.Warmer.
func (b *Backend) Warmup(ctx context.Context, hs []tiers.Handle) (ready time.Time, pending []tiers.Handle, err error) {
	now := b.cfg.Now()
	ready = now
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 2*b.cfg.Concurrency)
		errs []error
	)
	for _, h := range hs {
		if err := h.Validate(); err != nil {
			return time.Time{}, nil, b.wrap("warm up", "in", h, err)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return time.Time{}, nil, fmt.Errorf("warm up objects in %s: %w", b.where(), ctx.Err())
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			eta, err := b.warmOne(ctx, h)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if eta > 0 {
				pending = append(pending, h)
				if t := now.Add(eta); t.After(ready) {
					ready = t
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return ready, pending, errors.Join(errs...)
	}
	return ready, pending, nil
}

// warmOne returns 0 if h is readable, else the expected wait.
func (b *Backend) warmOne(ctx context.Context, h tiers.Handle) (time.Duration, error) {
	key := b.key(h)
	out, err := b.cli.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &b.cfg.Bucket, Key: &key})
	if err != nil {
		return 0, b.wrap("warm up", "in", h, classify(err))
	}
	class := className(string(out.StorageClass))
	if !IsArchiveClass(class) {
		return 0, nil
	}
	tier := b.cfg.RestoreTier
	if class == ClassDeepArchive && tier == "Expedited" {
		tier = "Standard" // not offered for DEEP_ARCHIVE
	}
	eta := RestoreETA(class, tier)
	if r := aws.ToString(out.Restore); r != "" {
		st, err := ParseRestoreHeader(r)
		if err != nil {
			return 0, b.wrap("warm up", "in", h, err)
		}
		if st.Ongoing {
			return eta, nil
		}
		if st.Expiry.IsZero() || st.Expiry.After(b.cfg.Now()) {
			return 0, nil
		}
	}
	_, err = b.cli.RestoreObject(ctx, &awss3.RestoreObjectInput{
		Bucket: &b.cfg.Bucket, Key: &key,
		RestoreRequest: &types.RestoreRequest{
			Days:                 aws.Int32(int32(b.cfg.RestoreDays)),
			GlacierJobParameters: &types.GlacierJobParameters{Tier: types.Tier(tier)},
		},
	})
	if code, _ := apiCode(err); code == "RestoreAlreadyInProgress" {
		return eta, nil
	}
	if err != nil {
		return 0, b.wrap("request restore of", "in", h, classify(err))
	}
	return eta, nil
}
