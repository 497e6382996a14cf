package s3_test

import (
	"strings"
	"testing"
	"time"

	s3tier "github.com/drpipe/drpipe/tiers/s3"
)

// FuzzParseRestoreHeader: the x-amz-restore header comes from the server.
// Parsing never panics; accepted headers re-render to an equivalent form.
func FuzzParseRestoreHeader(f *testing.F) {
	for _, s := range []string{
		`ongoing-request="true"`,
		`ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`,
		`ongoing-request="false",expiry-date="Fri, 21 Dec 2012 00:00:00 GMT", restore-tier="Standard"`,
		`ongoing-request=true`,
		`expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`,
		`ongoing-request="tru`,
		`=`, ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := s3tier.ParseRestoreHeader(s)
		if err != nil {
			return
		}
		out := `ongoing-request="` + map[bool]string{true: "true", false: "false"}[st.Ongoing] + `"`
		if !st.Expiry.IsZero() {
			out += `, expiry-date="` + st.Expiry.UTC().Format(time.RFC1123) + `"`
		}
		st2, err := s3tier.ParseRestoreHeader(out)
		if err != nil || st2.Ongoing != st.Ongoing || !st2.Expiry.Equal(st.Expiry.UTC().Truncate(time.Second)) {
			t.Errorf("%q -> %+v -> %q -> %+v, %v", s, st, out, st2, err)
		}
	})
}

// FuzzParseURL: repository locations come from operators and config files.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"s3://bucket", "s3://bucket/a/b", "s3://b.c-d//x/./y", "s3://bkt/../x", "s3://", "s3:///x", "http://x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, p, err := s3tier.ParseURL(s)
		if err != nil {
			return
		}
		if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
			t.Errorf("ParseURL(%q) prefix %q not clean", s, p)
		}
		for _, c := range strings.Split(p, "/") {
			if c == "." || c == ".." {
				t.Errorf("ParseURL(%q) prefix %q has %q", s, p, c)
			}
		}
		loc := "s3://" + b
		if p != "" {
			loc += "/" + p
		}
		b2, p2, err := s3tier.ParseURL(loc)
		if err != nil || b2 != b || p2 != p {
			t.Errorf("round trip %q -> %q: %q %q %v", s, loc, b2, p2, err)
		}
	})
}
