package main

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type randSource = rand.Rand

func newRandSource(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5bd1e995)) }

func sortByShard(paths []string) {
	idx := func(p string) int {
		_, n, _ := strings.Cut(filepath.Base(p), "-")
		i, _ := strconv.Atoi(n)
		return i
	}
	sort.Slice(paths, func(i, j int) bool { return idx(paths[i]) < idx(paths[j]) })
}

func corruptAt(path string, off int64) error {
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 0x55
	_, err = f.WriteAt(b, off)
	return err
}

// runAsNobody runs "drpipe backup" as uid/gid 65534 so that a mode-000
// file is really unreadable (root bypasses permissions). The repository
// and cache are made accessible to that user for the run.
func (e *env) runAsNobody(t *testing.T, repoDir, src string) result {
	t.Helper()
	exec.Command("chmod", "a+rx", e.dir).Run()
	for _, d := range []string{repoDir, e.cache, src} {
		exec.Command("chmod", "-R", "a+rwX", d).Run()
	}
	// The unreadable file must stay unreadable.
	os.Chmod(filepath.Join(src, "unreadable.bin"), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "backup", "--repo", repoDir, "--host", "hv01", src)
	c.Env = append(c.Env, "HOME="+e.dir)
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	// The test binary's temp dir must be traversable.
	exec.Command("chmod", "a+rx", filepath.Dir(drpipeBin)).Run()
	for d := filepath.Dir(e.dir); d != "/"; d = filepath.Dir(d) {
		exec.Command("chmod", "a+x", d).Run()
	}
	out, err := c.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{stdout: string(out), stderr: string(out), code: code}
}
