package s3_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/drpipe/drpipe/tiers"
	s3tier "github.com/drpipe/drpipe/tiers/s3"
)

// A bucket whose object lock configuration gives new objects a default
// retention requires Content-MD5 on every upload (S3 refuses the others
// with InvalidRequest), also when drpipe sets no retention of its own
// (s3.object_lock_mode unset): every PutObject and UploadPart carries it,
// whichever way the object goes up.
func TestUploadsToABucketWithDefaultRetentionCarryContentMD5(t *testing.T) {
	ctx := t.Context()
	bucket := newBucket(t, true)
	if _, err := admin(srv.Endpoint).PutObjectLockConfiguration(ctx, &awss3.PutObjectLockConfigurationInput{
		Bucket: &bucket,
		ObjectLockConfiguration: &types.ObjectLockConfiguration{
			ObjectLockEnabled: types.ObjectLockEnabledEnabled,
			Rule:              &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{Mode: types.ObjectLockRetentionModeGovernance, Days: aws.Int32(1)}},
		},
	}); err != nil {
		t.Fatalf("set the bucket's default retention: %v", err)
	}
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	var puts, withMD5 int
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Query().Get("x-id") != "CreateMultipartUpload" && !r.URL.Query().Has("object-lock") {
			mu.Lock()
			puts++
			if r.Header.Get("Content-Md5") != "" {
				withMD5++
			}
			mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	c := baseConfig(bucket, "dflt")
	c.Endpoint = ts.URL
	c.PartSize = s3tier.MinPartSize
	be := open(t, c)
	defer be.Close()

	small := []byte("an index object")
	if err := tiers.PutBytes(ctx, be, tiers.Handle{Type: tiers.TypeIndex, Name: "i1"}, small); err != nil {
		t.Fatal(err)
	}
	// A reader that cannot seek goes up from a buffer; one over the part
	// size in parts.
	for i, n := range []int{len(small), s3tier.MinPartSize + 1} {
		body := bytes.Repeat([]byte{byte(i + 1)}, n)
		h := tiers.Handle{Type: tiers.TypeData, Name: []string{"s1", "s2"}[i]}
		if err := be.Put(ctx, h, struct{ io.Reader }{bytes.NewReader(body)}, int64(n)); err != nil {
			t.Fatalf("put %d bytes: %v", n, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if puts < 4 {
		t.Fatalf("saw %d uploads, want at least 4 (one object, one buffered, two parts)", puts)
	}
	if withMD5 != puts {
		t.Errorf("%d of %d uploads carried Content-MD5, want all: S3 refuses the others on a bucket with default retention", withMD5, puts)
	}
}
