package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/internal/versitygw"
)

// These tests run the drpipe binary against a real S3 server (versitygw)
// on loopback, one server per test.

func startS3(t *testing.T) *versitygw.Server {
	t.Helper()
	srv, err := versitygw.Start(context.Background(), t.TempDir(), versitygw.Options{Versioning: true})
	if err != nil {
		t.Fatalf("start the S3 test server: %v", err) // fail, never skip
	}
	t.Cleanup(srv.Stop)
	return srv
}

// s3Env points drpipe at srv through the documented environment keys.
func s3Env(e *env, srv *versitygw.Server) {
	e.extra = append(e.extra,
		"DRPIPE_S3_ENDPOINT="+srv.Endpoint,
		"DRPIPE_S3_ACCESS_KEY_ID="+versitygw.AccessKey,
		"DRPIPE_S3_SECRET_ACCESS_KEY="+versitygw.SecretKey,
		"DRPIPE_S3_REGION="+versitygw.Region,
		"DRPIPE_S3_CONNECT_TIMEOUT=3s",
	)
}

func makeBucket(t *testing.T, srv *versitygw.Server, name string, lock bool) {
	t.Helper()
	if !lock {
		if err := srv.MakeBucket(name); err != nil {
			t.Fatal(err)
		}
		return
	}
	cli := awss3.New(awss3.Options{
		Region: versitygw.Region, BaseEndpoint: aws.String(srv.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(versitygw.AccessKey, versitygw.SecretKey, ""),
	})
	if _, err := cli.CreateBucket(t.Context(), &awss3.CreateBucketInput{Bucket: aws.String(name), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
}

type copyJSONOut struct {
	Objects     int   `json:"objects"`
	Present     int   `json:"present"`
	ToCopy      int   `json:"to_copy"`
	Copied      int   `json:"copied"`
	BytesCopied int64 `json:"bytes_copied"`
	Failed      int   `json:"failed"`
	Announced   bool  `json:"announced"`
}

func (e *env) copyJSON(args ...string) copyJSONOut {
	e.t.Helper()
	out := e.ok(append([]string{"copy", "--json"}, args...)...)
	var c copyJSONOut
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		e.t.Fatalf("copy --json printed %q: %v", out, err)
	}
	return c
}

// Must show 1: init, backup, restore and check entirely on s3://.
func TestS3RepositoryRoundTrip(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t)
	s3Env(e, srv)
	makeBucket(t, srv, "backups", false)
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 60, Bytes: 6 << 20, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	makeImage(t, src, 64<<20, 4<<20, 12)
	loc := "s3://backups/site-a/hv01"
	e.ok("init", "--repo", loc, "--pack-size", "2MiB")
	if r := e.run("init", "--repo", loc); r.code == 0 || !strings.Contains(r.stderr, "already holds a drpipe repository") {
		t.Errorf("second init: exit %d, %s", r.code, r.stderr)
	}
	b1 := e.backup(loc, src)
	// A second backup with a changed file dedupes against the bucket.
	writeFile(t, src, "new.txt", "added after the first backup")
	b2 := e.backup(loc, src)
	if b2.BytesNew >= b1.BytesNew/4 {
		t.Errorf("second backup added %d bytes, first %d: no deduplication", b2.BytesNew, b1.BytesNew)
	}
	var snaps []map[string]any
	if err := json.Unmarshal([]byte(e.ok("snapshots", "--repo", loc, "--json")), &snaps); err != nil || len(snaps) != 2 {
		t.Fatalf("snapshots: %v %v", snaps, err)
	}
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", loc, "latest", "--target", target)
	if n := compareTrees(t, src, restored(target, src)); n < 60 {
		t.Errorf("compared %d files", n)
	}
	out := e.ok("check", "--repo", loc, "--read-data")
	if !strings.Contains(out, "no errors found") {
		t.Errorf("check: %s", out)
	}
	// The objects are where the layout says, under the prefix.
	objs, err := srv.Objects("backups", "site-a/hv01")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[strings.Split(strings.TrimPrefix(o, "site-a/hv01/"), "/")[0]]++
	}
	if kinds["config"] != 1 || kinds["keys"] != 1 || kinds["data"] < 6 || kinds["index"] < 1 || kinds["snapshots"] != 2 {
		t.Errorf("objects in the bucket: %v", kinds)
	}
	// init refuses a prefix that holds foreign objects.
	if err := os.MkdirAll(filepath.Join(srv.Dir, "backups", "other", "data", "ab"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(srv.Dir, "backups", "other", "data", "ab", "abcd"), []byte("x"), 0o644)
	if r := e.run("init", "--repo", "s3://backups/other"); r.code == 0 || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("init on a non-empty prefix: exit %d, %s", r.code, r.stderr)
	}
}

// Must show 1: a local repository copied to the bucket restores from the
// bucket alone; and the bucket copies back to a directory (any tier to any
// tier).
func TestS3CopyLocalToBucketRestoreFromBucketAlone(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t)
	s3Env(e, srv)
	makeBucket(t, srv, "offsite", false)
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 80, Bytes: 8 << 20, Seed: 21}); err != nil {
		t.Fatal(err)
	}
	local := e.initRepo("--pack-size", "1MiB")
	e.backup(local, src)
	c := e.copyJSON("--repo", local, "--to", "s3://offsite/hv01")
	if c.Copied != c.Objects || c.Present != 0 || c.Failed != 0 || c.Copied < 10 {
		t.Errorf("copy: %+v", c)
	}
	// The local repository and its cache are gone: only the bucket is left.
	os.RemoveAll(local)
	os.RemoveAll(e.cache)
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", "s3://offsite/hv01", "latest", "--target", target)
	compareTrees(t, src, restored(target, src))
	if out := e.ok("check", "--repo", "s3://offsite/hv01", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check of the bucket: %s", out)
	}
	// Bucket to directory.
	back := filepath.Join(e.dir, "back")
	c2 := e.copyJSON("--repo", "s3://offsite/hv01", "--to", back)
	if c2.Copied != c.Objects {
		t.Errorf("copy back: %+v, want %d objects", c2, c.Objects)
	}
	if out := e.ok("check", "--repo", back, "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check of the copy: %s", out)
	}
}

// Must show 2: a copy killed mid-transfer is resumed by running it again,
// which sends only what the bucket lacks.
func TestS3CopyKilledAndResumed(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t)
	s3Env(e, srv)
	makeBucket(t, srv, "drsite", false)
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	if err := os.WriteFile(filepath.Join(src, "disk.raw"), sample.Binary(newRandSource(31), 48<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	local := e.initRepo("--pack-size", "1MiB")
	e.backup(local, src)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.cmd(ctx, "copy", "--repo", local, "--to", "s3://drsite/r", "--workers", "1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	killed := false
	for !killed {
		select {
		case err := <-done:
			t.Fatalf("copy finished before it could be killed (%v, %s); the test needs more data", err, stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		objs, _ := srv.Objects("drsite", "r/data")
		if len(objs) >= 40 {
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
			killed = true
		}
	}
	// What the server holds after the kill: only complete objects. A PUT
	// whose body was sent before the kill may still be committed by the
	// server a moment later, so wait until the listing stops changing.
	// The killed copy's session object (it announced itself, a password
	// being given) stays behind, as a crashed backup's does, until a
	// prune finds it stale; it is not one of the repository's objects.
	replicated := func() ([]string, error) {
		objs, err := srv.Objects("drsite", "r")
		return slices.DeleteFunc(objs, func(o string) bool { return strings.HasPrefix(o, "r/sessions/") }), err
	}
	before, err := replicated()
	if err != nil {
		t.Fatal(err)
	}
	// Counted by their own prefix: a PUT the server commits between two
	// listings would count as a session object otherwise.
	if sess, _ := srv.Objects("drsite", "r/sessions"); len(sess) != 1 {
		t.Errorf("the killed copy left %d session objects in the bucket (%v), want its own", len(sess), sess)
	}
	for settle := time.Now().Add(10 * time.Second); time.Now().Before(settle); {
		time.Sleep(300 * time.Millisecond)
		now, err := replicated()
		if err != nil {
			t.Fatal(err)
		}
		if len(now) == len(before) {
			break
		}
		before = now
	}
	// A dry run reports what is missing and sends nothing.
	dry := e.copyJSON("--repo", local, "--to", "s3://drsite/r", "--dry-run")
	if still, _ := replicated(); dry.ToCopy != dry.Objects-len(before) || dry.Copied != 0 || len(still) != len(before) {
		t.Errorf("dry run: %+v; server held %d objects, now %d", dry, len(before), len(still))
	}
	c := e.copyJSON("--repo", local, "--to", "s3://drsite/r")
	if c.Present != len(before) || c.Copied != c.Objects-len(before) || c.Copied == 0 || c.Failed != 0 {
		t.Errorf("resumed copy: %+v; the server held %d objects after the kill", c, len(before))
	}
	after, _ := replicated()
	if len(after) != c.Objects {
		t.Errorf("server holds %d objects, source %d", len(after), c.Objects)
	}
	t.Logf("killed with %d of %d objects in the bucket; the re-run sent %d (%d bytes)", len(before), c.Objects, c.Copied, c.BytesCopied)
	if out := e.ok("check", "--repo", "s3://drsite/r", "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check --read-data of the bucket: %s", out)
	}
	// A third run has nothing to do.
	// It announces itself in the bucket, which holds the repository (a
	// password is given), and leaves no session object behind.
	all, _ := srv.Objects("drsite", "r")
	if c3 := e.copyJSON("--repo", local, "--to", "s3://drsite/r"); c3.Copied != 0 || c3.Present != c.Objects || !c3.Announced {
		t.Errorf("third copy: %+v", c3)
	}
	if objs, _ := srv.Objects("drsite", "r"); len(objs) != len(all) {
		t.Errorf("the bucket holds %d objects after the announced copy, %d before", len(objs), len(all))
	}
	target := filepath.Join(e.dir, "restore")
	e.ok("restore", "--repo", "s3://drsite/r", "latest", "--target", target)
	compareTrees(t, src, restored(target, src))
}

// Must show 3: with object lock retention, deleting a locked object is
// refused and reported clearly, and nothing is lost.
func TestS3ObjectLockRefusesDelete(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t)
	s3Env(e, srv)
	makeBucket(t, srv, "immutable", true)
	e.extra = append(e.extra, "DRPIPE_S3_OBJECT_LOCK_MODE=governance", "DRPIPE_S3_OBJECT_LOCK_DAYS=30")
	loc := "s3://immutable/hv01"
	e.ok("init", "--repo", loc)
	pw2 := filepath.Join(e.dir, "pw2")
	os.WriteFile(pw2, []byte("second password"), 0o600)
	e.ok("key", "add", "--repo", loc, "--new-password-file", pw2, "--label", "second")
	var keys []map[string]any
	json.Unmarshal([]byte(e.ok("key", "list", "--repo", loc, "--json")), &keys)
	var second string
	for _, k := range keys {
		if k["label"] == "second" {
			second, _ = k["id"].(string)
		}
	}
	if second == "" {
		t.Fatalf("key list: %v", keys)
	}
	r := e.run("key", "remove", "--repo", loc, second[:8])
	if r.code != 1 {
		t.Errorf("key remove of a locked key: exit %d", r.code)
	}
	for _, s := range []string{"locked by retention", "until", "governance", "s3://immutable/hv01", srv.Endpoint, "hint:"} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr does not say %q:\n%s", s, r.stderr)
		}
	}
	json.Unmarshal([]byte(e.ok("key", "list", "--repo", loc, "--json")), &keys)
	if len(keys) != 2 {
		t.Errorf("%d key slots after the refused removal, want 2", len(keys))
	}
	// The bucket's own view: the key object is still there.
	objs, _ := srv.Objects("immutable", "hv01/keys")
	if len(objs) != 2 {
		t.Errorf("server holds %d key objects", len(objs))
	}
	// Backups still work on the locked bucket.
	src := filepath.Join(e.dir, "src")
	sample.Tree(src, sample.TreeOptions{Files: 10, Bytes: 1 << 20, Seed: 41})
	e.backup(loc, src)
	if out := e.ok("check", "--repo", loc, "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check: %s", out)
	}
}

// Must show 4: bad credentials, unknown bucket, unreachable or silent
// endpoints give a clear error naming endpoint and bucket, a non-zero
// exit, within a bounded time.
func TestS3ErrorsAreClearAndBounded(t *testing.T) {
	srv := startS3(t)
	makeBucket(t, srv, "present", false)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		hang.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	cases := []struct {
		name, repo, endpoint string
		env                  []string
		want                 string
	}{
		{"bad secret", "s3://present/r", srv.Endpoint, []string{"DRPIPE_S3_SECRET_ACCESS_KEY=wrong"}, "authentication failed"},
		{"unknown key", "s3://present/r", srv.Endpoint, []string{"DRPIPE_S3_ACCESS_KEY_ID=NOBODY"}, "authentication failed"},
		{"unknown bucket", "s3://absent/r", srv.Endpoint, nil, "does not exist"},
		{"wrong region", "s3://present/r", srv.Endpoint, []string{"DRPIPE_S3_REGION=eu-west-1"}, "region"},
		{"connection refused", "s3://present/r", "http://" + refused, nil, "cannot connect"},
		{"silent server", "s3://present/r", "http://" + hang.Addr().String(), nil, "no answer within 3s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			s3Env(e, srv)
			e.extra = append(e.extra, "DRPIPE_S3_ENDPOINT="+tc.endpoint)
			e.extra = append(e.extra, tc.env...)
			for _, args := range [][]string{{"snapshots", "--repo", tc.repo}, {"init", "--repo", tc.repo}} {
				start := time.Now()
				r := e.run(args...)
				el := time.Since(start)
				if r.code != 1 {
					t.Errorf("%s: exit %d, want 1", args[0], r.code)
				}
				bucket := strings.Split(strings.TrimPrefix(tc.repo, "s3://"), "/")[0]
				for _, s := range []string{tc.endpoint, "s3://" + bucket, tc.want, "hint:"} {
					if !strings.Contains(r.stderr, s) {
						t.Errorf("%s: stderr does not say %q:\n%s", args[0], s, r.stderr)
					}
				}
				if el > 8*time.Second {
					t.Errorf("%s took %v; want it bounded by s3.connect_timeout (3s)", args[0], el)
				}
			}
		})
	}
}

func TestS3ConfigFileKeys(t *testing.T) {
	srv := startS3(t)
	makeBucket(t, srv, "cfg", false)
	e := newEnv(t)
	cfg := filepath.Join(e.dir, "drpipe.yaml")
	os.WriteFile(cfg, []byte("s3:\n  endpoint: "+srv.Endpoint+"\n  region: us-east-1\n  path_style: true\n  access_key_id: AK\n  secret_access_key: SK\n  part_size: 8MiB\n  concurrency: 2\n  storage_class: standard_ia\ncopy:\n  workers: 2\n"), 0o600)
	e.ok("--config", cfg, "init", "--repo", "s3://cfg/x")
	os.WriteFile(cfg, []byte("s3:\n  endpoint: "+srv.Endpoint+"\n  endpoitn: typo\n"), 0o600)
	if r := e.run("--config", cfg, "snapshots", "--repo", "s3://cfg/x"); r.code != 2 || !strings.Contains(r.stderr, "s3.endpoitn") {
		t.Errorf("unknown s3 key: exit %d, %s", r.code, r.stderr)
	}
	e.extra = append(e.extra, "DRPIPE_S3_ENDPOINT="+srv.Endpoint, "DRPIPE_S3_ACCESS_KEY_ID=AK", "DRPIPE_S3_SECRET_ACCESS_KEY=SK", "DRPIPE_S3_STORAGE_CLASS=ICE")
	if r := e.run("snapshots", "--repo", "s3://cfg/x"); r.code != 2 || !strings.Contains(r.stderr, "s3.storage_class") {
		t.Errorf("bad storage class: exit %d, %s", r.code, r.stderr)
	}
	// The standard AWS variables work too.
	e2 := newEnv(t)
	e2.extra = append(e2.extra, "AWS_ENDPOINT_URL="+srv.Endpoint, "AWS_ACCESS_KEY_ID=AK", "AWS_SECRET_ACCESS_KEY=SK", "AWS_REGION=us-east-1")
	e2.pw = e.pw
	e2.cache = e.cache
	if out := e2.ok("snapshots", "--repo", "s3://cfg/x"); !strings.Contains(out, "0 snapshots") {
		t.Errorf("snapshots with AWS_* variables: %s", out)
	}
}

// configs/s3.yaml holds only known keys with valid values.
func TestS3ExampleConfig(t *testing.T) {
	srv := startS3(t)
	makeBucket(t, srv, "dr-backups", false)
	e := newEnv(t)
	b, err := os.ReadFile("../../configs/s3.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(e.dir, "s3.yaml")
	os.WriteFile(cfg, []byte(strings.Replace(string(b), "ca_file: /etc/drpipe/storage-ca.pem", `ca_file: ""`, 1)), 0o600)
	s3Env(e, srv) // the endpoint and credentials of the test server
	e.ok("--config", cfg, "init")
	if out := e.ok("--config", cfg, "snapshots"); !strings.Contains(out, "0 snapshots") {
		t.Errorf("snapshots: %s", out)
	}
}
