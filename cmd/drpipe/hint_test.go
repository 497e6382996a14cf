package main

import (
	"errors"
	"strings"
	"testing"
)

// TestSiteHintMatchesOnlyTLSFailures: the certificate hint is for TLS
// failures, not for any message that happens to say "expired".
func TestSiteHintMatchesOnlyTLSFailures(t *testing.T) {
	for _, c := range []struct {
		err  string
		want string
	}{
		{"tls: failed to verify certificate: x509: certificate has expired or is not yet valid", "--tls-dir"},
		{"CRYPTO_ERROR 0x12d (remote): tls: expired certificate", "--tls-dir"},
		{"tls: certificate signed by unknown authority", "--tls-dir"},
		{"pool bench has no writable tape in the library; label blank tapes or import expired ones with 'drpipe tape import'", ""},
		{"snapshot abc expired under the keep rules", ""},
	} {
		got := siteHint(errors.New(c.err))
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("siteHint(%q) = %q, want %q", c.err, got, c.want)
		}
	}
}
