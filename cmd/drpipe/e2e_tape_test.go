package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/internal/sample"
)

// The tape must-shows, driven through the real binary on the virtual
// library.

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type tapeWriteJSON struct {
	SetID     string  `json:"set_id"`
	Columns   int     `json:"columns"`
	Complete  bool    `json:"complete"`
	Rewritten int     `json:"rewritten_objects"`
	Starved   float64 `json:"starved_s"`
	Bytes     int64   `json:"bytes"`
	Tapes     []struct {
		Barcode   string `json:"barcode"`
		Column    int    `json:"column"`
		ColumnSeq int    `json:"column_seq"`
	} `json:"tapes"`
}

func (e *env) tapeWrite(lib, repoDir string, args ...string) tapeWriteJSON {
	e.t.Helper()
	out := e.ok(append([]string{"tape", "write", "--json", "--library", lib, "--repo", repoDir}, args...)...)
	var w tapeWriteJSON
	if err := json.Unmarshal([]byte(out), &w); err != nil {
		e.t.Fatalf("tape write --json printed %q: %v", out, err)
	}
	return w
}

// imageSeries backs up a VM image three times with guest writes in
// between and returns the snapshot ids and the image's SHA-256 at each.
func imageSeries(e *env, repoDir string) (ids, sums []string, img string) {
	t := e.t
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	img = makeImage(t, src, 1<<30, 40<<20, 11)
	for i := 0; i < 3; i++ {
		if i > 0 {
			if err := sample.Rewrite(img, int64(i)*97<<20, 6<<20, uint64(i)); err != nil {
				t.Fatal(err)
			}
		}
		b := e.backup(repoDir, src)
		ids = append(ids, b.SnapshotID)
		sums = append(sums, fileSHA(t, img))
	}
	return ids, sums, img
}

func catalogFiles(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			b, _ := os.ReadFile(p)
			out[rel] = string(b)
		}
		return err
	})
	return out
}

func TestTapeEndToEnd(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "4+2", "--pack-size", "4MiB")
	ids, sums, img := imageSeries(e, repoDir)
	lib := filepath.Join(e.dir, "vtl")
	e.ok("tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "16", "--drives", "2", "--mailslots", "4")
	e.ok("tape", "label", "--library", lib, "--pool", "offsite", "--count", "12")
	w := e.tapeWrite(lib, repoDir, "--pool", "offsite", "--parity", "2", ids[0], ids[1], ids[2])
	if w.Columns != 6 || len(w.Tapes) != 6 || !w.Complete {
		t.Fatalf("set: %d columns, %d tapes, complete %v; want a complete 6-tape set (4+2, parity 2)", w.Columns, len(w.Tapes), w.Complete)
	}
	t.Logf("wrote %d bytes, starved %.2fs", w.Bytes, w.Starved)
	// Must show 1: check the catalog, restore from tape alone.
	out := e.ok("tape", "check", "--library", lib, "--read-data")
	if !strings.Contains(out, "no errors found") {
		t.Errorf("tape check: %s", out)
	}
	os.RemoveAll(repoDir)
	os.RemoveAll(e.cache)
	restoreSum := func(ref string, want string) result {
		t.Helper()
		target := filepath.Join(e.dir, "restore-"+ref[:min(8, len(ref))])
		os.RemoveAll(target)
		r := e.run("tape", "restore", "--library", lib, ref, "--target", target)
		if r.code == 0 {
			if got := fileSHA(t, restored(target, img)); got != want {
				t.Errorf("snapshot %s restored from tape: image SHA-256 %s, want %s", ref, got, want)
			}
		}
		return r
	}
	if r := restoreSum(ids[0], sums[0]); r.code != 0 {
		t.Fatalf("restore first snapshot from tape: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := restoreSum("latest", sums[2]); r.code != 0 {
		t.Fatalf("restore latest from tape: exit %d\n%s", r.code, r.stderr)
	}
	// Must show 2: lose any 2 tapes → still byte-identical; 3 → error naming them.
	away := filepath.Join(e.dir, "away")
	os.MkdirAll(away, 0o755)
	hide := func(bcs ...string) {
		for _, b := range bcs {
			if err := os.Rename(filepath.Join(lib, b+".tape"), filepath.Join(away, b+".tape")); err != nil {
				t.Fatal(err)
			}
		}
	}
	bringBack := func() {
		ents, _ := os.ReadDir(away)
		var bcs []string
		for _, en := range ents {
			os.Rename(filepath.Join(away, en.Name()), filepath.Join(lib, en.Name()))
			bcs = append(bcs, strings.TrimSuffix(en.Name(), ".tape"))
		}
		e.ok(append([]string{"tape", "import", "--library", lib}, bcs...)...)
	}
	for _, pair := range [][2]int{{0, 1}, {1, 4}, {3, 5}} {
		hide(w.Tapes[pair[0]].Barcode, w.Tapes[pair[1]].Barcode)
		if r := restoreSum(ids[1], sums[1]); r.code != 0 {
			t.Fatalf("restore without tapes %s and %s: exit %d\n%s", w.Tapes[pair[0]].Barcode, w.Tapes[pair[1]].Barcode, r.code, r.stderr)
		}
		bringBack()
	}
	lost := []string{w.Tapes[0].Barcode, w.Tapes[2].Barcode, w.Tapes[5].Barcode}
	hide(lost...)
	r := restoreSum("latest", sums[2])
	if r.code == 0 {
		t.Fatalf("restore with 3 of 6 tapes (parity 2) succeeded")
	}
	for _, b := range lost {
		if !strings.Contains(r.stderr, b) {
			t.Errorf("error does not name missing tape %s:\n%s", b, r.stderr)
		}
	}
	bringBack()
	// Must show 4: catalog loss → rebuild reproduces it; restore works.
	catDir := filepath.Join(lib, "catalog")
	before := catalogFiles(t, catDir)
	os.RemoveAll(catDir)
	if r := e.run("tape", "restore", "--library", lib, "latest", "--target", filepath.Join(e.dir, "x")); r.code == 0 {
		t.Errorf("restore without a catalog succeeded")
	}
	e.ok("tape", "catalog", "rebuild", "--library", lib)
	after := catalogFiles(t, catDir)
	var names []string
	for k := range before {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if before[k] != after[k] {
			t.Errorf("catalog file %s differs after rebuild:\nbefore: %.400s\nafter:  %.400s", k, before[k], after[k])
		}
	}
	if len(after) != len(before) {
		t.Errorf("rebuild made %d catalog files, had %d", len(after), len(before))
	}
	if r := restoreSum(ids[2], sums[2]); r.code != 0 {
		t.Fatalf("restore after catalog rebuild: exit %d\n%s", r.code, r.stderr)
	}
}

// Must show 3: the end of the medium in the middle of an object.
func TestTapeEndOfMedia(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "2+1", "--pack-size", "4MiB")
	src := filepath.Join(e.dir, "src")
	if _, err := sample.Tree(src, sample.TreeOptions{Files: 300, Bytes: 60 << 20, Seed: 3, BinaryFraction: 0.9}); err != nil {
		t.Fatal(err)
	}
	b := e.backup(repoDir, src)
	lib := filepath.Join(e.dir, "vtl")
	// 12 MiB cartridges with a 256 KiB early-warning zone: 2 MiB shards
	// reach the physical end mid-object.
	e.ok("tape", "library", "init", "--library", lib, "--generation", "LTO-6", "--slots", "30", "--drives", "1", "--capacity", "12MiB", "--early-warning", "256KiB")
	e.ok("tape", "label", "--library", lib, "--pool", "p", "--count", "30")
	w := e.tapeWrite(lib, repoDir, "--pool", "p", "--parity", "1")
	if w.Rewritten == 0 || !w.Complete {
		t.Fatalf("no object was cut by the end of the medium (rewritten %d, complete %v)", w.Rewritten, w.Complete)
	}
	perCol := map[int]int{}
	for _, tp := range w.Tapes {
		perCol[tp.Column]++
	}
	t.Logf("%d tapes over %d columns, %d objects rewritten whole on the next tape", len(w.Tapes), w.Columns, w.Rewritten)
	if out := e.ok("tape", "check", "--library", lib, "--read-data"); !strings.Contains(out, "no errors found") {
		t.Errorf("check: %s", out)
	}
	os.RemoveAll(repoDir)
	target := filepath.Join(e.dir, "restore")
	e.ok("tape", "restore", "--library", lib, b.SnapshotID, "--target", target)
	if n := compareTrees(t, src, restored(target, src)); n < 300 {
		t.Errorf("compared %d files", n)
	}
	// And a rebuild of the catalog scans tapes whose catalog did not fit.
	os.RemoveAll(filepath.Join(lib, "catalog"))
	e.ok("tape", "catalog", "rebuild", "--library", lib)
	if out := e.ok("tape", "check", "--library", lib); !strings.Contains(out, "no errors found") {
		t.Errorf("check after rebuild: %s", out)
	}
}

// Must show 5 at the command line: two weeks of nightly runs with a GFS
// pool defined in the config file, the export and recall lists, reuse.
func TestTapeRotationCLI(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "1+1", "--pack-size", "1MiB")
	src := filepath.Join(e.dir, "src")
	sample.Tree(src, sample.TreeOptions{Files: 20, Bytes: 1 << 20, Seed: 5})
	cfg := filepath.Join(e.dir, "drpipe.yaml")
	os.WriteFile(cfg, []byte("tape:\n  parity: 0\n  pools:\n    gfs:\n      daily: 3\n      weekly: 1\n      monthly: 1\n      yearly: 0\n      weekly_on: friday\n      offsite: [weekly, monthly]\n"), 0o644)
	lib := filepath.Join(e.dir, "vtl")
	e.ok("--config", cfg, "tape", "library", "init", "--library", lib, "--generation", "LTO-8", "--slots", "12", "--drives", "1", "--mailslots", "4", "--capacity", "64MiB")
	e.ok("--config", cfg, "tape", "label", "--library", lib, "--pool", "gfs", "--count", "8")
	writes := map[string]int{}
	byDay := map[int][]string{}
	for day := 1; day <= 14; day++ { // Thursday 1 ... Wednesday 14 October 2026
		now := "DRPIPE_TAPE_NOW=2026-10-" + twoDigits(day) + "T22:00:00Z"
		e.extra = []string{now}
		e.backup(repoDir, src)
		w := e.tapeWrite(lib, repoDir, "--config", cfg, "--pool", "gfs")
		for _, tp := range w.Tapes {
			writes[tp.Barcode]++
			byDay[day] = append(byDay[day], tp.Barcode)
		}
		var ex struct {
			Exported []struct {
				Barcode string `json:"barcode"`
				Level   string `json:"level"`
			} `json:"exported"`
			Recall []struct {
				Barcode string `json:"barcode"`
			} `json:"recall"`
		}
		if err := json.Unmarshal([]byte(e.ok("--config", cfg, "tape", "export", "--library", lib, "--json")), &ex); err != nil {
			t.Fatal(err)
		}
		wantOff := day == 1 || day == 2 || day == 9 // monthly (1 Oct), weekly (Fridays 2 and 9)
		if got := len(ex.Exported) > 0; got != wantOff {
			t.Errorf("day %d: exported %v, want offsite=%v", day, ex.Exported, wantOff)
		}
		// The weekly of Friday 2 expires after a week; it is recalled on the 9th.
		if day == 9 && (len(ex.Recall) != 1 || ex.Recall[0].Barcode != byDay[2][0]) {
			t.Errorf("day 9: recall list %v, want the weekly of Friday 2 October (%v), expired after a week", ex.Recall, byDay[2])
		}
		if day != 9 && len(ex.Recall) > 0 {
			t.Errorf("day %d: recall list %v, want none (the monthly keeps a month)", day, ex.Recall)
		}
		if len(ex.Recall) > 0 {
			var bcs []string
			for _, r := range ex.Recall {
				bcs = append(bcs, r.Barcode)
			}
			out := e.ok(append([]string{"--config", cfg, "tape", "import", "--library", lib, "--json"}, bcs...)...)
			var imp struct {
				Scratch []string `json:"scratch"`
			}
			json.Unmarshal([]byte(out), &imp)
			if len(imp.Scratch) != len(bcs) {
				t.Errorf("day %d: imported %v as scratch, recalled %v", day, imp.Scratch, bcs)
			}
		}
	}
	reused := 0
	for _, n := range writes {
		if n > 1 {
			reused++
		}
	}
	if reused == 0 {
		t.Errorf("no tape was reused after its set expired: %v", writes)
	}
	inv := e.ok("tape", "inventory", "--library", lib)
	if !strings.Contains(inv, "offsite") {
		t.Errorf("inventory shows no offsite tapes:\n%s", inv)
	}
}

func twoDigits(n int) string { return string([]byte{byte('0' + n/10), byte('0' + n%10)}) }

// Must show 6 at the command line: bad tapes are refused, nothing is
// overwritten.
func TestTapeBadInputCLI(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "1+1", "--pack-size", "1MiB")
	src := filepath.Join(e.dir, "src")
	sample.Tree(src, sample.TreeOptions{Files: 10, Bytes: 1 << 20, Seed: 5})
	e.backup(repoDir, src)
	lib := filepath.Join(e.dir, "vtl")
	e.ok("tape", "library", "init", "--library", lib, "--generation", "LTO-7", "--slots", "4", "--drives", "1", "--capacity", "64MiB")
	e.ok("tape", "label", "--library", lib, "--pool", "p", "--barcode", "DRP001L7", "--barcode", "DRP002L7")
	cart := func(bc string) string { return filepath.Join(lib, bc+".tape") }
	read := func(bc string) []byte { b, _ := os.ReadFile(cart(bc)); return b }
	refuse := func(words ...string) {
		t.Helper()
		b1, b2 := read("DRP001L7"), read("DRP002L7")
		r := e.run("tape", "write", "--library", lib, "--repo", repoDir, "--pool", "p", "--parity", "0")
		if r.code == 0 {
			t.Fatalf("write succeeded, want a refusal mentioning %v", words)
		}
		for _, w := range words {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("error does not mention %q:\n%s", w, r.stderr)
			}
		}
		if !bytes.Equal(b1, read("DRP001L7")) || !bytes.Equal(b2, read("DRP002L7")) {
			t.Errorf("a refused write modified a cartridge")
		}
	}
	// Write-protected tapes.
	e.ok("tape", "library", "protect", "--library", lib, "DRP001L7", "DRP002L7")
	refuse("write-protected")
	e.ok("tape", "library", "protect", "--library", lib, "--off", "DRP001L7", "DRP002L7")
	// Corrupted label.
	good := read("DRP001L7")
	bad := append([]byte(nil), good...)
	i := bytes.Index(bad, []byte(`"barcode"`))
	bad[i+3] ^= 1
	os.WriteFile(cart("DRP001L7"), bad, 0o644)
	os.WriteFile(cart("DRP002L7"), bad, 0o644) // and the other one: wrong tape + corrupt
	refuse("DRP001L7", "checksum")
	os.WriteFile(cart("DRP001L7"), good, 0o644)
	// The wrong cartridge behind a barcode: DRP002L7's slot holds a copy of DRP001L7.
	e.ok("tape", "write", "--library", lib, "--repo", repoDir, "--pool", "p", "--parity", "0")
	os.WriteFile(cart("DRP002L7"), read("DRP001L7"), 0o644)
	refuse("wrong tape", "DRP002L7", "DRP001L7")
	// An unknown library directory is a usage error.
	if r := e.run("tape", "inventory", "--library", filepath.Join(e.dir, "nope")); r.code != 2 || !strings.Contains(r.stderr, "library init") {
		t.Errorf("inventory of a missing library: exit %d %s", r.code, r.stderr)
	}
}

// tape restore --work takes a new or empty directory and removes only
// what it put there: a directory holding anything else is refused before
// a tape is read, and a --target inside the work directory stays.
func TestTapeRestoreWorkDir(t *testing.T) {
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "1+1", "--pack-size", "1MiB")
	src := filepath.Join(e.dir, "src")
	sample.Tree(src, sample.TreeOptions{Files: 10, Bytes: 1 << 20, Seed: 5})
	e.backup(repoDir, src)
	lib := filepath.Join(e.dir, "vtl")
	e.ok("tape", "library", "init", "--library", lib, "--generation", "LTO-7", "--slots", "4", "--drives", "1", "--capacity", "64MiB")
	e.ok("tape", "label", "--library", lib, "--pool", "p", "--count", "2")
	e.ok("tape", "write", "--library", lib, "--repo", repoDir, "--pool", "p", "--parity", "0")
	work := filepath.Join(e.dir, "scratch")
	os.MkdirAll(work, 0o755)
	mine := filepath.Join(work, "notes.txt")
	if err := os.WriteFile(mine, []byte("the operator's"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(e.dir, "restore")
	r := e.run("tape", "restore", "--library", lib, "latest", "--target", target, "--work", work)
	if r.code != 2 || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("tape restore --work into a directory holding a file: exit %d, want 2 and a refusal\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Fatalf("tape restore --work %s removed a file it did not create: %v", work, err)
	}
	// An empty directory is used, and stays.
	os.Remove(mine)
	e.ok("tape", "restore", "--library", lib, "latest", "--target", target, "--work", work)
	if ents, err := os.ReadDir(work); err != nil || len(ents) != 0 {
		t.Errorf("work directory after the restore: %v %v, want it there and empty", ents, err)
	}
	// A new one goes, but not the target restored into it.
	work = filepath.Join(e.dir, "new")
	target = filepath.Join(work, "restore")
	e.ok("tape", "restore", "--library", lib, "latest", "--target", target, "--work", work)
	if _, err := os.Stat(restored(target, src)); err != nil {
		t.Errorf("the tree restored under the work directory is gone: %v", err)
	}
	for _, d := range []string{"repo", "cache"} {
		if _, err := os.Stat(filepath.Join(work, d)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s/%s is still there after the restore (%v)", work, d, err)
		}
	}
}
