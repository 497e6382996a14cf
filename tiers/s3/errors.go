package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/drpipe/drpipe/tiers"
)

// Errors of the S3 tier beyond the tiers sentinels. Every error a Backend
// returns names the operation, the object, the bucket location and the
// endpoint; these sentinels let callers pick a hint with errors.Is.
var (
	// ErrAuth: the server rejected the credentials (unknown access key,
	// wrong secret, expired token, access denied) or none were found.
	ErrAuth = errors.New("S3 authentication failed")
	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("S3 bucket does not exist")
	// ErrWrongRegion: the bucket lives in another region than configured.
	ErrWrongRegion = errors.New("S3 bucket is in another region")
	// ErrUnreachable: no connection to the endpoint (refused, timed out,
	// unknown host, TLS failure).
	ErrUnreachable = errors.New("S3 endpoint unreachable")
	// ErrNoObjectLock: object lock retention is configured but the bucket
	// was not created with object lock enabled.
	ErrNoObjectLock = errors.New("bucket has no object lock")
)

// apiCode returns the S3 error code and message of err, if it carries one.
func apiCode(err error) (code, msg string) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode(), ae.ErrorMessage()
	}
	return "", ""
}

// httpStatus returns the HTTP status of the response that produced err (0
// if there was none).
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

var regionRE = regexp.MustCompile(`expecting '([a-z0-9-]+)'|expecting "([a-z0-9-]+)"`)

// classify maps an SDK error to drpipe's error model. It is the only place
// that decides which S3 failures are transient (the result is then marked
// with tiers.Retriable, which tiers.IsRetriable honours) and which map to
// tiers sentinels. The returned error wraps err.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	code, msg := apiCode(err)
	status := httpStatus(err)
	switch code {
	case "NoSuchKey", "NotFound", "NoSuchVersion":
		return fmt.Errorf("%w: %w", tiers.ErrNotFound, err)
	case "NoSuchBucket":
		return fmt.Errorf("%w: %w", ErrNoBucket, err)
	case "InvalidRange":
		return fmt.Errorf("%w: %w", tiers.ErrShortRead, err)
	case "InvalidObjectState":
		return fmt.Errorf("%w: %w", tiers.ErrNotReady, err)
	case "ObjectLocked":
		return fmt.Errorf("%w: %w", tiers.ErrLocked, err)
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "XAdminUserNotFound", "ExpiredToken", "InvalidToken",
		"TokenRefreshRequired", "InvalidClientTokenId", "AccountProblem", "AllAccessDisabled", "UnrecognizedClientException":
		return fmt.Errorf("%w: %w", ErrAuth, err)
	case "AccessDenied", "Forbidden":
		if strings.Contains(strings.ToLower(msg), "object lock") {
			return fmt.Errorf("%w: %w", tiers.ErrLocked, err)
		}
		return fmt.Errorf("%w: %w", ErrAuth, err)
	case "AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException":
		if m := regionRE.FindStringSubmatch(msg); m != nil {
			return fmt.Errorf("%w (it is in %s%s): %w", ErrWrongRegion, m[1], m[2], err)
		}
		return fmt.Errorf("%w: %w", ErrWrongRegion, err)
	case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
		"RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "OperationAborted":
		return tiers.Retriable(err)
	}
	switch {
	case status == http.StatusMovedPermanently:
		return fmt.Errorf("%w: %w", ErrWrongRegion, err)
	case status == http.StatusForbidden:
		return fmt.Errorf("%w: %w", ErrAuth, err)
	case status == http.StatusNotFound && code == "":
		return fmt.Errorf("%w: %w", tiers.ErrNotFound, err)
	case status == http.StatusTooManyRequests || status >= 500:
		return tiers.Retriable(err)
	case status != 0:
		return err // another 4xx: permanent
	}
	// No response: a transport failure.
	if isUnreachable(err) {
		return tiers.Retriable(fmt.Errorf("%w: %w", ErrUnreachable, err))
	}
	var se *smithyhttp.RequestSendError
	if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return tiers.Retriable(err)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return tiers.Retriable(err)
	}
	if strings.Contains(err.Error(), "failed to refresh cached credentials") || strings.Contains(err.Error(), "no EC2 IMDS role") ||
		strings.Contains(err.Error(), "failed to retrieve credentials") {
		return fmt.Errorf("%w: no usable credentials: %w", ErrAuth, err)
	}
	return err
}

// isUnreachable reports connection-level failures: refused, unknown host,
// timeouts while connecting, TLS handshake failures.
func isUnreachable(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "tls: ") || strings.Contains(s, "x509: ") || strings.Contains(s, "timeout awaiting response headers") ||
		strings.Contains(s, "TLS handshake timeout")
}
