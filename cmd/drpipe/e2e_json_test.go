package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/repo"
)

// nullableJSON names the fields --json prints as null by design: objects
// that are absent, not lists (backup's inventory without --inventory,
// forget's prune report without --prune).
var nullableJSON = map[string]bool{"inventory": true, "prune": true}

// nullLists returns the paths in the JSON document out where a value is
// null, other than the fields in nullableJSON.
func nullLists(t *testing.T, out string) []string {
	t.Helper()
	var nulls []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case nil:
			if i := strings.LastIndexByte(path, '.'); !nullableJSON[path[i+1:]] {
				nulls = append(nulls, path)
			}
		case map[string]any:
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out)
		}
		walk("", v)
	}
	return nulls
}

// TestJSONListsNeverNull runs the commands that print --json where most
// of their lists are empty (a repository of one snapshot, a tape library
// with nothing to import, export or check, tiers with nothing to copy, an
// inventory without VMs) and requires every list to print as [], never
// null: scripts iterate over these fields.
func TestJSONListsNeverNull(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	js := func(args ...string) string {
		t.Helper()
		out := e.ok(append([]string{"--json"}, args...)...)
		if nulls := nullLists(t, out); len(nulls) > 0 {
			t.Errorf("drpipe --json %s prints null for %s:\n%s", strings.Join(args, " "), strings.Join(nulls, ", "), out)
		}
		return out
	}
	if out := js("snapshots", "--repo", repoDir); strings.TrimSpace(out) != "[]" {
		t.Errorf("snapshots --json of an empty repository: %q, want []", out)
	}
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	writeFile(t, src, "a", "hello")
	js("backup", "--repo", repoDir, "--host", "hv01", src)
	// An inventory of a network alone: no VMs, so no boot groups.
	js("backup", "--repo", repoDir, "--host", "hv01", "--inventory", "../../drsite/testdata/libvirt/net-lan.xml", src)
	js("drsite", "import", "../../drsite/testdata/libvirt/net-lan.xml")
	ds := drsiteConfigFile(t, e.dir, "drsite:\n  hosts:\n    - {name: dr-kvm1, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}\n")
	js("drsite", "plan", "--config", ds, "--repo", repoDir)
	for _, args := range [][]string{
		{"snapshots"}, {"stats"}, {"check"}, {"repair"}, {"key", "list"},
		{"forget", "--keep-last", "1", "--dry-run"}, {"forget", "--keep-last", "5"},
		{"prune", "--dry-run"}, {"scrub"},
		{"restore", "latest", "--target", filepath.Join(e.dir, "restored")},
		{"copy", "--to", filepath.Join(e.dir, "copy")},
		{"site", "status"},
	} {
		js(append(args, "--repo", repoDir)...)
	}
	js("site", "init", "--dir", filepath.Join(e.dir, "tls"), "--name", "dr", "--primary", "hv01")

	lib := filepath.Join(e.dir, "vtl")
	js("tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "8", "--drives", "1", "--mailslots", "2")
	js("tape", "label", "--library", lib, "--pool", "vault", "--count", "4")
	for _, args := range [][]string{
		{"library", "status"}, {"inventory"}, {"import"}, {"export"}, {"check"}, {"catalog", "rebuild"},
	} {
		js(append(append([]string{"tape"}, args...), "--library", lib)...)
	}
	js("tape", "write", "--library", lib, "--repo", repoDir, "--pool", "vault", "latest")
	js("tape", "check", "--library", lib)
	js("tape", "restore", "--library", lib, "latest", "--target", filepath.Join(e.dir, "from-tape"))

	if err := os.Mkdir(filepath.Join(e.dir, "nas"), 0o700); err != nil { // tier run does not create it
		t.Fatal(err)
	}
	cfg := writeFile(t, e.dir, "drpipe.yaml", fmt.Sprintf(`repo: %s
tiering:
  tiers:
    - name: hot
      kind: primary
      keep: {last: 5}
    - name: nas
      kind: local
      location: %s
      keep: {last: 5}
`, repoDir, filepath.Join(e.dir, "nas")))
	js("--config", cfg, "tier", "plan")
	js("--config", cfg, "tier", "run")
	js("--config", cfg, "tier", "plan")
	js("--config", cfg, "tier", "run")
}

// TestVersionJSON: --version --json prints the release, the Go version and
// the zstd encoder and decoder as JSON; without --json a line of text.
func TestVersionJSON(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{{"--version", "--json"}, {"--json", "--version"}} {
		out := e.ok(args...)
		var v struct {
			Release     string `json:"release"`
			Go          string `json:"go"`
			ZstdEncoder string `json:"zstd_encoder"`
			ZstdDecoder string `json:"zstd_decoder"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("drpipe %s prints no JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
		if v.Release != version || v.Go != runtime.Version() || v.ZstdEncoder != repo.ZstdEncoder || v.ZstdDecoder != repo.ZstdDecoder {
			t.Errorf("drpipe %s: %+v", strings.Join(args, " "), v)
		}
	}
	if out := e.ok("--version"); !strings.HasPrefix(out, "drpipe version "+version+" (") || strings.Count(out, "\n") != 1 {
		t.Errorf("drpipe --version: %q", out)
	}
}

// TestJSONErrors: under --json the error that ends a command is one JSON
// object on stderr with the exit code the process exits with, and stdout
// holds no text; without --json it stays the drpipe: and hint: lines.
func TestJSONErrors(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo()
	missing := filepath.Join(e.dir, "empty") // a directory, but no repository
	if err := os.Mkdir(missing, 0o755); err != nil {
		t.Fatal(err)
	}
	wrong := newEnv(t)
	wrong.cache, wrong.pw = e.cache, "wrong password"
	for _, c := range []struct {
		name     string
		e        *env
		args     []string
		code     int
		say      string
		wantHint bool
	}{
		{"no repository", e, []string{"snapshots", "--repo", missing, "--json"}, exitFailure, "not a drpipe repository", true},
		{"wrong password", wrong, []string{"snapshots", "--repo", repoDir, "--json"}, exitAuth, "wrong password", true},
		{"unknown flag before --json", e, []string{"snapshots", "--bogus", "--json"}, exitUsage, "unknown flag: --bogus", false},
		{"json from the environment", &env{t: t, dir: e.dir, cache: e.cache, pw: e.pw, extra: []string{"DRPIPE_JSON=true"}}, []string{"snapshots", "--repo", missing}, exitFailure, "not a drpipe repository", true},
		{"unknown flag before --json=true", e, []string{"snapshots", "--bogus", "--json=true"}, exitUsage, "unknown flag: --bogus", false},
		{"unknown flag, json from the environment", &env{t: t, dir: e.dir, cache: e.cache, pw: e.pw, extra: []string{"DRPIPE_JSON=true"}}, []string{"snapshots", "--bogus"}, exitUsage, "unknown flag: --bogus", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.e.run(c.args...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\nstderr: %s", r.code, c.code, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout holds %q, want nothing", r.stdout)
			}
			var got struct {
				Error    string `json:"error"`
				Hint     string `json:"hint"`
				ExitCode int    `json:"exit_code"`
			}
			dec := json.NewDecoder(strings.NewReader(r.stderr))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("stderr is not one JSON object: %v\n%s", err, r.stderr)
			}
			if dec.More() {
				t.Errorf("stderr holds more than one object: %s", r.stderr)
			}
			if got.ExitCode != c.code || !strings.Contains(got.Error, c.say) || (got.Hint != "") != c.wantHint {
				t.Errorf("got %+v, want exit_code %d, an error saying %q, a hint: %v", got, c.code, c.say, c.wantHint)
			}
		})
	}
	r := e.run("snapshots", "--repo", missing)
	if !strings.HasPrefix(r.stderr, "drpipe: not a drpipe repository") || !strings.Contains(r.stderr, "\nhint: ") {
		t.Errorf("without --json stderr is %q, want the drpipe: and hint: lines", r.stderr)
	}
}
