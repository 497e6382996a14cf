package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/drpipe/drpipe/internal/sample"
)

// tapeSuite: sustained write and read rate through the virtual LTO-9
// drive from/to the local repository, the writer's starvation time, and
// tar to a file on the same disk as the peer (tar to tape is the classic
// way), all on the same data in the same run.
var tapeSuite = Suite{
	Name:  "tape",
	Title: "Tape: sustained write and read rate through the virtual LTO-9 drive",
	About: "A repository holding ~1.5 GiB of incompressible VM-like data (4+2 erasure coding) is written to a virtual LTO-9\n" +
		"library and restored from tape alone. Rates count object bytes moved through the drives. Starvation is the time the\n" +
		"drives waited for the read-ahead (summed over drives). The peer is tar writing/reading the repository's data\n" +
		"directory to/from one file on the same disk. LTO-9 native rate is 400 MB/s; caches are dropped before each step.",
	Run: runTapeBench,
}

func runTapeBench(ctx context.Context, env *Env) ([]Table, error) {
	src := env.Path("src")
	rng := rand.New(rand.NewPCG(42, 7))
	var total int64
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < 6; i++ {
		b := sample.Binary(rng, 256<<20)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("disk%d.raw", i)), b, 0o644); err != nil {
			return nil, err
		}
		total += int64(len(b))
	}
	repoDir, cache, lib := env.Path("repo"), env.Path("cache"), env.Path("vtl")
	pw := []string{"DRPIPE_PASSWORD=bench"}
	dp := func(args ...string) (*Measurement, error) {
		return Run(ctx, pw, env.Drpipe, append([]string{"--cache-dir", cache}, args...)...)
	}
	if _, err := dp("init", "--repo", repoDir, "--ec", "4+2"); err != nil {
		return nil, err
	}
	if _, err := dp("backup", "--repo", repoDir, "--host", "hv01", src); err != nil {
		return nil, err
	}
	os.RemoveAll(src)
	if _, err := dp("tape", "library", "init", "--library", lib, "--generation", "LTO-9", "--slots", "12", "--drives", "3", "--mailslots", "2"); err != nil {
		return nil, err
	}
	if _, err := dp("tape", "label", "--library", lib, "--pool", "bench", "--count", "8"); err != nil {
		return nil, err
	}
	type writeOut struct {
		Bytes    int64   `json:"bytes"`
		Duration float64 `json:"duration_s"`
		Starved  float64 `json:"starved_s"`
		Tapes    []any   `json:"tapes"`
		wall     float64 // the process's, start to exit
	}
	write := func(lib, parity, when string) (*writeOut, error) {
		DropCaches()
		m, err := Run(ctx, append(pw, "DRPIPE_TAPE_NOW="+when), env.Drpipe, "--cache-dir", cache, "tape", "write", "--json", "--library", lib,
			"--repo", repoDir, "--pool", "bench", "--parity", parity, "--level", "daily")
		if err != nil {
			return nil, err
		}
		var w writeOut
		if err := json.Unmarshal([]byte(m.Stdout), &w); err != nil {
			return nil, fmt.Errorf("tape write --json: %w", err)
		}
		w.wall = m.Wall.Seconds()
		return &w, nil
	}
	// Single column (parity 0) first; the parity-1 set is written after
	// that set expired (8 days on) and is the one restored.
	w0, err := write(lib, "0", "2026-01-01T00:00:00Z")
	if err != nil {
		return nil, err
	}
	w1, err := write(lib, "1", "2026-01-09T00:00:00Z")
	if err != nil {
		return nil, err
	}
	// The same parity-1 write with the cartridges in memory: the three
	// drives then do not share the disk with the repository being read,
	// which shows the writer's own rate where the disk allows it.
	var wMem *writeOut
	if memLib, err := os.MkdirTemp("/dev/shm", "drpipe-bench-vtl-"); err == nil {
		defer os.RemoveAll(memLib)
		// A small /dev/shm (containers) skips the row, not the suite.
		_, err := dp("tape", "library", "init", "--library", memLib, "--generation", "LTO-9", "--slots", "4", "--drives", "3", "--mailslots", "1")
		if err == nil {
			_, err = dp("tape", "label", "--library", memLib, "--pool", "bench", "--count", "3")
		}
		if err == nil {
			wMem, err = write(memLib, "1", "2026-01-09T00:00:00Z")
		}
		if err != nil {
			wMem = nil
			fmt.Fprintf(os.Stderr, "tape: skipping the in-RAM write (%v)\n", err)
		}
		os.RemoveAll(memLib)
	}
	DropCaches()
	restoreDir := env.Path("restore")
	m, err := dp("tape", "restore", "--json", "--library", lib, "latest", "--target", restoreDir, "--work", env.Path("work"))
	if err != nil {
		return nil, err
	}
	var r struct {
		Read     float64  `json:"read_s"`
		Bytes    int64    `json:"bytes_read_from_tape"`
		Duration float64  `json:"duration_s"`
		Tapes    []string `json:"tapes_mounted"`
	}
	if err := json.Unmarshal([]byte(m.Stdout), &r); err != nil {
		return nil, fmt.Errorf("tape restore --json: %w", err)
	}
	os.RemoveAll(restoreDir)
	// Peer: tar of the repository's shard objects to one file and back.
	tarFile := env.Path("peer.tar")
	DropCaches()
	t0 := time.Now()
	if _, err := Run(ctx, nil, "sh", "-c", fmt.Sprintf("tar cf %s -C %s data && sync %s", tarFile, repoDir, tarFile)); err != nil {
		return nil, err
	}
	tarW := time.Since(t0)
	st, _ := os.Stat(tarFile)
	DropCaches()
	out := env.Path("untar")
	os.MkdirAll(out, 0o755)
	t0 = time.Now()
	if _, err := Run(ctx, nil, "tar", "xf", tarFile, "-C", out); err != nil {
		return nil, err
	}
	tarR := time.Since(t0)
	os.RemoveAll(out)
	os.Remove(tarFile)

	const lto9 = 400e6
	rate := func(b int64, s float64) float64 { return float64(b) / max(s, 1e-9) }
	tarWR, tarRR := rate(st.Size(), tarW.Seconds()), rate(st.Size(), tarR.Seconds())
	// s and MB/s are the drives' time for drpipe's steps (what an LTO
	// drive would see); "vs tar" compares whole processes, start to exit,
	// as tar's is timed (shell and sync included): wall is drpipe's
	// process time, 0 where no like-for-like peer step exists.
	row := func(name string, b int64, s, wall, starved float64, peer float64, tapes string) []string {
		rt := rate(b, s)
		sv := "-"
		if starved >= 0 {
			sv = fmt.Sprintf("%.2f", starved)
		}
		vs := "-"
		if wall > 0 {
			vs = Ratio(rate(b, wall), peer)
		}
		return []string{name, tapes, MiB(b), fmt.Sprintf("%.2f", s), fmt.Sprintf("%.0f", rt/1e6), fmt.Sprintf("%.2f×", rt/lto9), vs, sv}
	}
	t := Table{
		Caption: fmt.Sprintf("Tape rates (%s of source data; MB/s = 10^6 bytes/s)", MiB(total)+" MiB"),
		Header:  []string{"step", "tapes", "MiB", "s", "MB/s", "vs LTO-9 native", "vs tar", "drives starved s"},
		Rows: [][]string{
			row("drpipe tape write, parity 1 (3 columns on 3 drives)", w1.Bytes, w1.Duration, w1.wall, w1.Starved, tarWR, fmt.Sprint(len(w1.Tapes))),
			row("drpipe tape write, parity 0 (1 drive)", w0.Bytes, w0.Duration, w0.wall, w0.Starved, tarWR, fmt.Sprint(len(w0.Tapes))),
		},
	}
	if wMem != nil {
		t.Rows = append(t.Rows, row("drpipe tape write, parity 1, 3 drives, cartridges in RAM (/dev/shm)", wMem.Bytes, wMem.Duration, wMem.wall, wMem.Starved, tarWR, fmt.Sprint(len(wMem.Tapes))))
	}
	t.Rows = append(t.Rows, [][]string{
		row("drpipe tape read (restore: fewest tapes, read in parallel, into a scratch repository)", r.Bytes, r.Read, 0, -1, tarRR, fmt.Sprint(len(r.Tapes))),
		{"drpipe tape restore, end to end (read + rebuild packs from parity + restore files)", "-", MiB(total), fmt.Sprintf("%.2f", r.Duration), fmt.Sprintf("%.0f", rate(total, r.Duration)/1e6), "-", "-", "-"},
		row("tar c of the repository's data to a file (peer)", st.Size(), tarW.Seconds(), tarW.Seconds(), -1, tarWR, "-"),
		row("tar x of that file (peer)", st.Size(), tarR.Seconds(), tarR.Seconds(), -1, tarRR, "-"),
	}...)
	t.Notes = []string{"Write rate includes the metadata copied to every tape; the disk is shared by the repository being read and the cartridge files being written, " +
		"so the drives' rate is bounded by the disk's mixed read/write rate (the tar peer sees the same bound). The RAM row takes the cartridge writes off the disk. " +
		"Tape read is the drives' read time (the tapes of the plan are read in parallel, one per drive); the end-to-end row adds rebuilding packs from parity and restoring the files. " +
		"s and MB/s of drpipe's steps are the drives' time; \"vs tar\" compares whole processes, start to exit, for drpipe's writes as for tar (drpipe's start-up, key derivation and planning, tar's shell and sync); " +
		"a tape restore does more than tar x (it restores the files), so its read has no tar ratio."}
	return []Table{t}, nil
}
