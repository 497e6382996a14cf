package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/drpipe/drpipe/internal/sample"
)

// The second half of the demo runs drpipe's own commands, exactly as an
// operator would, and prints them: the DR site over QUIC on loopback, a
// directory standing in for the cloud bucket, the file-backed tape library,
// and the tiering plan.

type demoCLI struct {
	d     *demo
	bin   string
	env   []string
	cache string
}

func (d *demo) cli(pw string) (*demoCLI, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// The commands run on the built-in defaults, in the demo's directory:
	// the operator's DRPIPE_* settings (DRPIPE_CONFIG, DRPIPE_REPO,
	// DRPIPE_TAPE_CATALOG, ...) would point them at real repositories and
	// catalogs, or fail them on a config file the demo cannot read.
	env := slices.DeleteFunc(os.Environ(), func(v string) bool { return strings.HasPrefix(v, "DRPIPE_") })
	return &demoCLI{d: d, bin: bin, env: append(env, "DRPIPE_PASSWORD="+pw, "DRPIPE_NO_PROGRESS=true"), cache: filepath.Join(d.dir, "cache")}, nil
}

// run executes a drpipe command, prints it and its output (indented).
func (c *demoCLI) run(ctx context.Context, args ...string) (string, error) {
	c.d.a.printf("    $ drpipe %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"--cache-dir", c.cache}, args...)...)
	cmd.Env = c.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	n := 0
	for sc.Scan() {
		if n < 14 {
			c.d.a.printf("      %s\n", sc.Text())
		}
		n++
	}
	if n > 14 {
		c.d.a.printf("      … (%d more lines)\n", n-14)
	}
	if err != nil {
		return out.String(), fmt.Errorf("drpipe %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

func freeLoopbackUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

func (d *demo) offsite(ctx context.Context, repoDir, src, pw string) error {
	c, err := d.cli(pw)
	if err != nil {
		return err
	}

	// DR site over QUIC on loopback.
	d.say("DR site over QUIC on loopback: init the site CA, serve, replicate, status, restore at the DR site")
	tls := filepath.Join(d.dir, "site-tls")
	drRepo := filepath.Join(d.dir, "dr-site")
	if _, err := c.run(ctx, "site", "init", "--dir", tls, "--name", "dr1", "--primary", "hv01", "--host", "127.0.0.1"); err != nil {
		return err
	}
	port, err := freeLoopbackUDPPort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srvCtx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	srv := exec.CommandContext(srvCtx, c.bin, "site", "serve", "--listen", addr, "--repo", drRepo, "--tls-dir", tls)
	srv.Env = c.env
	var srvLog bytes.Buffer
	srv.Stdout, srv.Stderr = &srvLog, &srvLog
	srv.Cancel = func() error { return srv.Process.Signal(os.Interrupt) }
	d.a.printf("    $ drpipe site serve --listen %s --repo %s --tls-dir %s &\n", addr, drRepo, tls)
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { stopSrv(); _ = srv.Wait() }()
	var repErr error
	for i := 0; i < 50; i++ { // the server needs a moment to listen
		time.Sleep(100 * time.Millisecond)
		if _, repErr = c.run(ctx, "replicate", "--repo", repoDir, "--to", addr, "--tls-dir", tls); repErr == nil {
			break
		}
	}
	if repErr != nil {
		return fmt.Errorf("%w\nsite log:\n%s", repErr, srvLog.String())
	}
	if _, err := c.run(ctx, "site", "status", "--to", addr, "--tls-dir", tls); err != nil {
		return err
	}
	drTarget := filepath.Join(d.dir, "restore-at-dr")
	if _, err := c.run(ctx, "restore", "--repo", drRepo, "latest", "--target", drTarget); err != nil {
		return err
	}
	if err := verifySame(src, filepath.Join(drTarget, strings.TrimPrefix(src, "/"))); err != nil {
		return fmt.Errorf("restore at the DR site: %w", err)
	}
	d.info("restored at the DR site from its own repository: byte-identical")

	// Bit rot at the site, found and healed without the key.
	d.say("bit rot at the DR site: one shard there is damaged; drpipe scrub, which needs no password, finds it and rebuilds it from the pack's parity")
	shards, _ := filepath.Glob(filepath.Join(drRepo, "data", "*", "*"))
	if len(shards) == 0 {
		return fmt.Errorf("the DR site holds no pack shards")
	}
	if err := corruptFile(shards[0]); err != nil {
		return err
	}
	keyless := *c
	keyless.env = slices.DeleteFunc(slices.Clone(c.env), func(v string) bool { return strings.HasPrefix(v, "DRPIPE_PASSWORD=") })
	out, err := keyless.run(ctx, "scrub", "--repo", drRepo)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "rebuilt 1 shards") {
		return fmt.Errorf("scrub did not rebuild the damaged shard:\n%s", out)
	}
	d.info("scrub rebuilt the damaged shard byte-identical from the others, at the site, without the key")

	// Cloud bucket (a local directory stands in for it).
	bucket := filepath.Join(d.dir, "bucket")
	d.say("cloud copy: drpipe copy to a directory standing in for the S3 bucket (s3://bucket/prefix works the same)")
	if _, err := c.run(ctx, "copy", "--repo", repoDir, "--to", bucket); err != nil {
		return err
	}
	if _, err := c.run(ctx, "copy", "--repo", repoDir, "--to", bucket); err != nil {
		return err
	}
	d.info("the second copy sends nothing: copies are idempotent and resumable")

	// Tape.
	lib := filepath.Join(d.dir, "tape-library")
	d.say("LTO tape set on the file-backed virtual library, then a restore from tape alone")
	steps := [][]string{
		{"tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "8", "--drives", "3", "--mailslots", "2"},
		{"tape", "label", "--library", lib, "--pool", "offsite", "--count", "6"},
		{"tape", "write", "--library", lib, "--repo", repoDir, "--pool", "offsite", "--parity", "1"},
		{"tape", "inventory", "--library", lib},
	}
	for _, s := range steps {
		if _, err := c.run(ctx, s...); err != nil {
			return err
		}
	}
	tapeTarget := filepath.Join(d.dir, "restore-from-tape")
	// The repository read from the tapes goes in the demo's directory, not
	// a temporary one of its own: an interrupted demo kills the restore
	// before it can remove that, and removes its directory with it.
	work := filepath.Join(d.dir, "tape-restore-work")
	if _, err := c.run(ctx, "tape", "restore", "--library", lib, "--work", work, "latest", "--target", tapeTarget); err != nil {
		return err
	}
	if err := verifySame(src, filepath.Join(tapeTarget, strings.TrimPrefix(src, "/"))); err != nil {
		return fmt.Errorf("restore from tape: %w", err)
	}
	d.info("restored from the tapes alone (they carry config, keys, index and data): byte-identical")

	// Tiering plan over all of it.
	d.say("tiering: one policy for hot disk, DR site, bucket and tape; the plan says what each tier holds and costs")
	cfg := filepath.Join(d.dir, "tiering.yaml")
	policy := fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - {name: hot, kind: primary, keep: {last: 2}}
    - {name: bucket, kind: local, location: %s, keep: {daily: 30, monthly: 12}}
    - {name: vault, kind: tape, library: %s, pool: offsite, keep: {monthly: 12}}
`, repoDir, bucket, lib)
	if err := os.WriteFile(cfg, []byte(policy), 0o600); err != nil {
		return err
	}
	if _, err := c.run(ctx, "--config", cfg, "tier", "plan"); err != nil {
		return err
	}
	return nil
}

// verifySame compares two trees' regular files byte for byte.
func verifySame(a, b string) error {
	n := 0
	err := filepath.Walk(a, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		same, err := sample.SameContent(p, filepath.Join(b, rel))
		if err != nil {
			return err
		}
		if !same {
			return fmt.Errorf("%s differs", rel)
		}
		n++
		return nil
	})
	if err == nil && n == 0 {
		return errors.New("nothing compared")
	}
	return err
}
