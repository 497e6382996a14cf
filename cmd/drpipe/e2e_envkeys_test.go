package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDiskFormatAdvice: a wrong --disk-format (or restore.disk_format)
// is refused with the values restore takes (README: original, raw, qcow2,
// vhdx), not advice to use vhd, which restore then refuses too.
func TestDiskFormatAdvice(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo()
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	writeFile(t, src, "f", "x")
	e.backup(r, src)
	res := e.run("restore", "--repo", r, "latest", "--target", filepath.Join(e.dir, "t1"), "--disk-format", "bogus")
	if res.code != 2 || strings.Contains(res.stderr, "vhd ") || !strings.Contains(res.stderr, "original") {
		t.Errorf("--disk-format bogus: exit %d, stderr %q; want exit 2 listing original, raw, qcow2, vhdx (not vhd)", res.code, res.stderr)
	}
	e.extra = []string{"DRPIPE_RESTORE_DISK_FORMAT=bogus"}
	res = e.run("restore", "--repo", r, "latest", "--target", filepath.Join(e.dir, "t2"))
	if res.code != 2 || !strings.Contains(res.stderr, "restore.disk_format") {
		t.Errorf("DRPIPE_RESTORE_DISK_FORMAT=bogus: exit %d, stderr %q; want exit 2 naming restore.disk_format (no --disk-format was given)", res.code, res.stderr)
	}
}

// TestTapeRestoreJSON: tape restore --json gives "the restore
// figures" of restore --json (README), bytes_written included.
func TestTapeRestoreJSON(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo("--ec", "2+1")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	writeFile(t, src, "f", strings.Repeat("drpipe tape\n", 1000))
	e.backup(r, src)
	lib := filepath.Join(e.dir, "vtl")
	e.ok("tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "8", "--drives", "2", "--mailslots", "2", "--capacity", "64MiB")
	e.ok("tape", "label", "--library", lib, "--pool", "p", "--count", "4")
	e.tapeWrite(lib, r, "--pool", "p", "--parity", "0")
	out := e.ok("tape", "restore", "--json", "--library", lib, "latest", "--target", filepath.Join(e.dir, "t"))
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("tape restore --json printed %q: %v", out, err)
	}
	for _, k := range []string{"snapshot_id", "target", "files", "dirs", "bytes_total", "bytes_written", "duration_s", "failed", "notices",
		"tapes_mounted", "tapes_unavailable", "packs_rebuilt", "bytes_read_from_tape", "read_s", "rebuild_s"} {
		if _, ok := m[k]; !ok {
			t.Errorf("tape restore --json lacks %q: %s", k, out)
		}
	}
	if u, ok := m["tapes_unavailable"].([]any); !ok || len(u) != 0 {
		t.Errorf("tape restore --json tapes_unavailable = %v, want an empty list", m["tapes_unavailable"])
	}
	if w, _ := m["bytes_written"].(float64); w != 12000 {
		t.Errorf("tape restore --json bytes_written = %v, want 12000", m["bytes_written"])
	}
}

// TestDrsiteEnvDurations: configs/drsite.yaml says scalar drsite keys
// can be overridden as DRPIPE_DRSITE_<KEY>; expected_boot and boot_timeout
// are scalar keys of that file.
func TestDrsiteEnvDurations(t *testing.T) {
	e := newEnv(t)
	r, cfg := e.tenVMSite()
	e.extra = []string{"DRPIPE_DRSITE_EXPECTED_BOOT=5h"}
	res := e.run("drsite", "plan", "--json", "--config", cfg, "--repo", r)
	var p struct {
		Groups []struct {
			Expected time.Duration `json:"expected_ns"`
		} `json:"boot_groups"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &p); err != nil || len(p.Groups) == 0 {
		t.Fatalf("drsite plan --json: exit %d, %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
	}
	for i, g := range p.Groups {
		if g.Expected < 5*time.Hour {
			t.Errorf("boot group %d expected %v with DRPIPE_DRSITE_EXPECTED_BOOT=5h (config: 90s): the variable was ignored", i+1, g.Expected)
		}
	}
	e.extra = []string{"DRPIPE_DRSITE_BOOT_TIMEOUT=soon"}
	res = e.run("drsite", "plan", "--config", cfg, "--repo", r)
	if res.code != 2 || !strings.Contains(res.stderr, "DRPIPE_DRSITE_BOOT_TIMEOUT") {
		t.Errorf("DRPIPE_DRSITE_BOOT_TIMEOUT=soon: exit %d, stderr %q; want exit 2 naming the variable", res.code, res.stderr)
	}
}

// TestSiteAllowEnvList: site.allow from the environment
// (DRPIPE_SITE_ALLOW) takes a comma-separated list, as the other list keys
// do (DRPIPE_TAPE_POOLS_<POOL>_OFFSITE=monthly,yearly, DRPIPE_BACKUP_TAGS);
// "hv01,hv02" must not become one name that refuses both primaries.
func TestSiteAllowEnvList(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	writeFile(t, src, "f", "site allow")
	e.backup(repoDir, src)
	tlsDir := filepath.Join(e.dir, "tls")
	e.ok("site", "init", "--dir", tlsDir, "--primary", "hv01")
	t.Setenv("DRPIPE_SITE_ALLOW", "hv01,hv02")
	sp := e.startSite(t, tlsDir, filepath.Join(e.dir, "dr"))
	res := e.run("replicate", "--repo", repoDir, "--to", sp.addr, "--tls-dir", filepath.Join(tlsDir, "clients", "hv01"), "--connections", "1")
	if res.code != 0 {
		log, _ := os.ReadFile(filepath.Join(e.dir, "site-dr.log"))
		t.Fatalf("replicate from hv01 with DRPIPE_SITE_ALLOW=hv01,hv02: exit %d\n%s\nsite log:\n%s", res.code, res.stderr, log)
	}
}

// TestTapeBadSettings: bad tape settings are usage errors (exit 2,
// README's exit codes) naming where they came from, and change nothing:
// a record size outside 256KiB..1MiB, a negative or too large parity, and
// label --count 0 (which labelled one tape).
func TestTapeBadSettings(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo("--ec", "2+1")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	writeFile(t, src, "f", "tape settings")
	e.backup(r, src)
	lib := filepath.Join(e.dir, "vtl")
	e.ok("tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "8", "--drives", "2", "--mailslots", "2", "--capacity", "64MiB")
	res := e.run("tape", "label", "--library", lib, "--pool", "p", "--count", "0")
	if res.code != 2 || strings.Contains(res.stdout, "labelled") {
		t.Errorf("tape label --count 0: exit %d, stdout %q, stderr %q; want exit 2 and nothing labelled", res.code, res.stdout, res.stderr)
	}
	e.ok("tape", "label", "--library", lib, "--pool", "p", "--count", "4")
	for _, c := range []struct {
		env  string
		args []string
		want string
	}{
		{"DRPIPE_TAPE_RECORD_SIZE=4MiB", nil, "tape.record_size"},
		{"", []string{"--parity", "-1"}, "--parity"},
		{"", []string{"--parity", "2"}, "--parity"},
		{"DRPIPE_TAPE_PARITY=2", nil, "tape.parity"},
	} {
		e.extra = nil
		if c.env != "" {
			e.extra = []string{c.env}
		}
		res := e.run(append([]string{"tape", "write", "--library", lib, "--repo", r, "--pool", "p"}, c.args...)...)
		if res.code != 2 || !strings.Contains(res.stderr, c.want) {
			t.Errorf("tape write %s %v: exit %d, stderr %q; want exit 2 naming %s", c.env, c.args, res.code, res.stderr, c.want)
		}
	}
	e.extra = nil
	if out := e.ok("tape", "inventory", "--library", lib); strings.Contains(out, "full") {
		t.Errorf("a refused tape write reached a tape:\n%s", out)
	}
}

// TestConfigValueErrors: a bad value from the environment is refused
// (exit 2) naming the key or variable and the value as given.
func TestConfigValueErrors(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo()
	e.extra = []string{"DRPIPE_COMPRESSION=zstd"}
	res := e.run("snapshots", "--repo", r)
	if res.code != 2 || !strings.Contains(res.stderr, "compression (DRPIPE_COMPRESSION)") {
		t.Errorf("DRPIPE_COMPRESSION=zstd: exit %d, stderr %q; want exit 2 naming the key", res.code, res.stderr)
	}
	e.extra = []string{"DRPIPE_MOUNT_CACHE_SIZE=big"}
	os.MkdirAll(filepath.Join(e.dir, "mnt"), 0o755)
	res = e.run("mount", "--repo", r, filepath.Join(e.dir, "mnt"))
	if res.code != 2 || !strings.Contains(res.stderr, `"big"`) {
		t.Errorf("DRPIPE_MOUNT_CACHE_SIZE=big: exit %d, stderr %q; want exit 2 quoting the value as given", res.code, res.stderr)
	}
}

// TestConfigNumberBoolErrors: a number or true/false key given a value
// that is neither is refused (exit 2) naming the key, wherever it comes
// from, rather than read as 0 or false: DRPIPE_TAPE_PARITY=one wrote a
// tape set that survives the loss of no tape.
func TestConfigNumberBoolErrors(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo()
	for _, c := range []struct {
		env, file, want string
	}{
		{env: "DRPIPE_TAPE_PARITY=one", want: "tape.parity (DRPIPE_TAPE_PARITY)"},
		{env: "DRPIPE_WORKERS=many", want: "workers (DRPIPE_WORKERS)"},
		{env: "DRPIPE_JSON=maybe", want: "json (DRPIPE_JSON)"},
		{env: "DRPIPE_S3_RETRIES=lots", want: "s3.retries (DRPIPE_S3_RETRIES)"},
		{file: "restore:\n  workers: 2.5\n", want: "restore.workers (DRPIPE_RESTORE_WORKERS)"},
		{file: "backup:\n  flatten: sometimes\n", want: "backup.flatten (DRPIPE_BACKUP_FLATTEN)"},
		{file: "copy:\n  workers: [1, 2]\n", want: "copy.workers (DRPIPE_COPY_WORKERS)"},
	} {
		e.extra = nil
		args := []string{"snapshots", "--repo", r}
		if c.env != "" {
			e.extra = []string{c.env}
		}
		if c.file != "" {
			cfg := filepath.Join(e.dir, "drpipe.yaml")
			if err := os.WriteFile(cfg, []byte(c.file), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--config", cfg)
		}
		res := e.run(args...)
		if res.code != 2 || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%s%q: exit %d, stderr %q; want exit 2 naming %s", c.env, c.file, res.code, res.stderr, c.want)
		}
	}
	e.extra = []string{"DRPIPE_TAPE_PARITY=2", "DRPIPE_JSON=1", "DRPIPE_WORKERS=3"}
	e.ok("snapshots", "--repo", r)
}

// TestInitBadCompressionCreatesNothing: init with a compression setting it
// does not know is refused before the repository directory is made: it
// used to create data/, index/, keys/ ... and then fail, and the next init
// with the setting fixed refused the directory as not empty.
func TestInitBadCompressionCreatesNothing(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.dir, "repo")
	e.extra = []string{"DRPIPE_COMPRESSION=maxx"}
	if res := e.run("init", "--repo", dir); res.code != 2 || !strings.Contains(res.stderr, "DRPIPE_COMPRESSION") {
		t.Errorf("init with DRPIPE_COMPRESSION=maxx: exit %d, stderr %q; want exit 2 naming the variable", res.code, res.stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused init left %s behind (stat: %v)", dir, err)
	}
	e.extra = nil
	e.ok("init", "--repo", dir)
}

// TestConfigErrorsNameTheKey: a bad value of a key that also has a flag,
// given in the config file or the environment, is refused naming the key
// (and its variable), not a flag the operator did not give: with
// pack_size: 100k in the file, "--pack-size 100k" sent them looking at a
// command line that has no --pack-size; a bad init.ec named nothing.
func TestConfigErrorsNameTheKey(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.dir, "repo")
	cfg := filepath.Join(e.dir, "drpipe.yaml")
	for _, c := range []struct {
		env, file string
		args      []string
		want, not string
	}{
		{file: "init:\n  pack_size: 100k\n", args: []string{"init", "--repo", dir}, want: "config key init.pack_size (DRPIPE_INIT_PACK_SIZE)", not: "--pack-size"},
		{env: "DRPIPE_INIT_CHUNK_SIZES=big", args: []string{"init", "--repo", dir}, want: "config key init.chunk_sizes (DRPIPE_INIT_CHUNK_SIZES)", not: "--chunk-sizes"},
		{env: "DRPIPE_INIT_EC=4-2", args: []string{"init", "--repo", dir}, want: "config key init.ec (DRPIPE_INIT_EC)"},
		{file: "copy:\n  workers: 0\n", args: []string{"copy", "--repo", dir, "--to", filepath.Join(e.dir, "copy")}, want: "config key copy.workers (DRPIPE_COPY_WORKERS)", not: "--workers"},
	} {
		e.extra = nil
		args := c.args
		if c.env != "" {
			e.extra = []string{c.env}
		}
		if c.file != "" {
			if err := os.WriteFile(cfg, []byte(c.file), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--config", cfg)
		}
		res := e.run(args...)
		if res.code != 2 || !strings.Contains(res.stderr, c.want) || c.not != "" && strings.Contains(res.stderr, c.not) {
			t.Errorf("%s%q: exit %d, stderr %q; want exit 2 naming %s", c.env, c.file, res.code, res.stderr, c.want)
		}
	}
	e.extra = nil
	res := e.run("init", "--repo", dir, "--pack-size", "100k")
	if res.code != 2 || !strings.Contains(res.stderr, "--pack-size 100k") {
		t.Errorf("--pack-size 100k: exit %d, stderr %q; want exit 2 naming the flag", res.code, res.stderr)
	}
}

// TestSiteDurationsAboveZero: a duration or size of the site and
// replicate sections that is zero or negative is refused naming the key,
// instead of quietly replaced by the built-in default (replicate.timeout
// -1m was a timeout of 2m, site.shutdown_grace 0s a grace of 10s).
func TestSiteDurationsAboveZero(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo()
	tls := filepath.Join(e.dir, "no-tls")
	for _, c := range []struct {
		env  string
		args []string
		want string
	}{
		{"DRPIPE_REPLICATE_TIMEOUT=-1m", []string{"replicate", "--repo", r, "--to", "127.0.0.1:9", "--tls-dir", tls}, "replicate.timeout"},
		{"DRPIPE_REPLICATE_IDLE_TIMEOUT=0s", []string{"site", "status", "--to", "127.0.0.1:9", "--tls-dir", e.dir}, "replicate.idle_timeout"},
		{"DRPIPE_SITE_SHUTDOWN_GRACE=-5s", []string{"site", "serve", "--repo", filepath.Join(e.dir, "dr"), "--tls-dir", tls}, "site.shutdown_grace"},
		{"DRPIPE_SITE_MAX_OBJECT_SIZE=0", []string{"site", "serve", "--repo", filepath.Join(e.dir, "dr"), "--tls-dir", tls}, "site.max_object_size"},
	} {
		e.extra = []string{c.env}
		if res := e.run(c.args...); res.code != 2 || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 naming %s", c.env, res.code, res.stderr, c.want)
		}
	}
}

// TestReplicateErrorsNameTheKey: a bad replicate.bwlimit or
// replicate.interval from the environment is refused naming that key,
// not --bwlimit or --interval, which the command line did not give.
func TestReplicateErrorsNameTheKey(t *testing.T) {
	e := newEnv(t)
	r := filepath.Join(e.dir, "repo")
	tls := filepath.Join(e.dir, "no-tls")
	for _, c := range []struct{ env, want, not string }{
		{"DRPIPE_REPLICATE_BWLIMIT=10x", "config key replicate.bwlimit (DRPIPE_REPLICATE_BWLIMIT) \"10x\"", "--bwlimit"},
		{"DRPIPE_REPLICATE_INTERVAL=0s", "config key replicate.interval (DRPIPE_REPLICATE_INTERVAL) \"0s\"", "--interval"},
	} {
		e.extra = []string{c.env}
		res := e.run("replicate", "--repo", r, "--to", "127.0.0.1:9", "--tls-dir", tls)
		if res.code != 2 || !strings.Contains(res.stderr, c.want) || strings.Contains(res.stderr, c.not) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 naming %s", c.env, res.code, res.stderr, c.want)
		}
	}
	e.extra = nil
	if res := e.run("replicate", "--repo", r, "--to", "127.0.0.1:9", "--tls-dir", tls, "--bwlimit", "10x"); res.code != 2 || !strings.Contains(res.stderr, "--bwlimit \"10x\"") {
		t.Errorf("--bwlimit 10x: exit %d, stderr %q; want exit 2 naming the flag", res.code, res.stderr)
	}
}
