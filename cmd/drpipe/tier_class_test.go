package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
)

// tiering.tiers[].storage_class is documented as the class of new data
// in an s3 tier: 'tier run' must upload the tier's shards in it, not in
// s3.storage_class (versitygw ignores storage classes, so a proxy records
// the class each upload asks for).
func TestTierStorageClassOfNewData(t *testing.T) {
	e := newEnv(t)
	srv := startS3(t)
	makeBucket(t, srv, "iab", false)
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	classes := map[string]string{} // data key -> requested class
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodPut || r.Method == http.MethodPost) && strings.Contains(r.URL.Path, "/repo/data/") && !r.URL.Query().Has("partNumber") {
			mu.Lock()
			c := r.Header.Get("X-Amz-Storage-Class")
			if c == "" {
				c = "STANDARD"
			}
			classes[r.URL.Path] = c
			mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	s3Env(e, srv)
	e.extra = append(e.extra, "DRPIPE_S3_ENDPOINT="+proxy.URL)
	repoDir := e.initRepo()
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 5}
    - name: cloud
      kind: s3
      location: s3://iab/repo
      storage_class: STANDARD_IA
      keep: {last: 5}
`, repoDir))
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 5, Bytes: 1 << 20, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	e.backup(repoDir, src)
	e.ok("--config", cfg, "tier", "run")
	mu.Lock()
	defer mu.Unlock()
	if len(classes) == 0 {
		t.Fatal("tier run stored no data in the bucket")
	}
	for k, c := range classes {
		if c != "STANDARD_IA" {
			t.Errorf("%s uploaded in class %s, want the tier's storage_class STANDARD_IA", k, c)
		}
	}
}
