package s3_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/drpipe/drpipe/tiers"
)

// A versioned bucket whose versioning the credentials may not read (a
// policy without s3:GetBucketVersioning, as backup tools are often
// given) is still recognised as one: Remove deletes every version of the
// key, as on any versioned bucket, instead of only hiding it behind a
// delete marker while prune reports the space freed.
func TestRemoveOnVersionedBucketWhoseVersioningIsDenied(t *testing.T) {
	ctx := t.Context()
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("versioning") {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)

	bucket := newBucket(t, true) // object lock: versioned
	c := baseConfig(bucket, "denied")
	c.Endpoint = ts.URL
	be := open(t, c)
	defer be.Close()
	h := tiers.Handle{Type: tiers.TypeIndex, Name: "i1"}
	for _, b := range []string{"first", "again"} {
		if err := tiers.PutBytes(ctx, be, h, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := be.Remove(ctx, h); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	key := "denied/index/i1"
	out, err := admin(srv.Endpoint).ListObjectVersions(ctx, &awss3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &key})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(out.Versions) + len(out.DeleteMarkers); n > 0 {
		t.Errorf("after Remove the bucket keeps %d versions and %d delete markers of %s, want none", len(out.Versions), len(out.DeleteMarkers), key)
		for _, v := range out.Versions {
			t.Logf("version %s (%d bytes)", aws.ToString(v.VersionId), aws.ToInt64(v.Size))
		}
	}
	// A second Remove of the now missing object is still fine.
	if err := be.Remove(ctx, h); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}
