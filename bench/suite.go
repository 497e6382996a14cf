package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/drpipe/drpipe/internal/sample"
)

// Suite is one benchmark group. Register new suites in suites; each lives
// in its own file.
type Suite struct {
	Name  string
	Title string
	About string
	Run   func(ctx context.Context, env *Env) ([]Table, error)
}

// suites is the registry, in report order. Each suite file adds itself
// here with one line.
var suites = []Suite{
	coreSuite,
	vmdiskSuite,
	s3Suite,
	quicSuite,
	tapeSuite,
	drsiteSuite,
}

func suiteNames() []string {
	var out []string
	for _, s := range suites {
		out = append(out, s.Name)
	}
	return out
}

// Env is what a suite works with.
type Env struct {
	Work   string // the suite's own work directory
	Drpipe string // absolute path of the drpipe binary
}

func (e *Env) sub(dir string) *Env { c := *e; c.Work = dir; return &c }

// Path joins elements onto the work directory.
func (e *Env) Path(elem ...string) string { return filepath.Join(append([]string{e.Work}, elem...)...) }

// Measurement is the outcome of one timed command.
type Measurement struct {
	Wall    time.Duration
	MaxRSS  int64 // bytes
	UserCPU time.Duration
	SysCPU  time.Duration
	Stdout  string
	Stderr  string
}

// MedianWall returns the measurement with the median wall time of ms (the
// upper middle one when there is an even number); ms must not be empty.
func MedianWall(ms []*Measurement) *Measurement {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b *Measurement) int { return cmp.Compare(a.Wall, b.Wall) })
	return s[len(s)/2]
}

// Run executes a command with env additions and measures wall time, CPU
// and peak RSS (see timed).
func Run(ctx context.Context, env []string, name string, args ...string) (*Measurement, error) {
	return run(ctx, env, nil, "", name, args...)
}

// RunStdin is Run with a file as standard input.
func RunStdin(ctx context.Context, env []string, stdin string, name string, args ...string) (*Measurement, error) {
	f, err := os.Open(stdin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return run(ctx, env, f, "", name, args...)
}

// run is Run with an optional standard input and working directory.
func run(ctx context.Context, env []string, stdin *os.File, dir, name string, args ...string) (*Measurement, error) {
	c, finish := timed(ctx, name, args...)
	c.Env = toolEnv(env)
	c.Dir = dir
	if stdin != nil {
		c.Stdin = stdin
	}
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	start := time.Now()
	err := c.Run()
	m := &Measurement{Wall: time.Since(start), Stdout: so.String(), Stderr: se.String()}
	finish(m)
	if err != nil {
		return m, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(se.String(), 2000))
	}
	return m, nil
}

// toolEnv returns the environment for a benchmarked command: the bench's
// own without the variables drpipe, restic and borg take settings from
// (DRPIPE_*, RESTIC_*, BORG_*), then add. Each tool runs with the
// settings the report states, not with what the shell that started the
// benchmark exports (DRPIPE_COMPRESSION, RESTIC_COMPRESSION,
// DRPIPE_CPU_PROFILE, ...).
func toolEnv(add []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DRPIPE_") && !strings.HasPrefix(kv, "RESTIC_") && !strings.HasPrefix(kv, "BORG_") {
			env = append(env, kv)
		}
	}
	return append(env, add...)
}

// timeBin is GNU time, through which commands are started when present.
const timeBin = "/usr/bin/time"

// timed returns the command for name and args and a function that fills
// in its peak RSS and CPU times once it has run. Linux charges a child
// started by vfork+exec (how os/exec starts processes) with the parent's
// peak RSS at exec time, so a bench process that once held a large buffer
// would inflate every later command's figure; GNU time, started in
// between, forks the command from its own small address space and reports
// the command's own peak. Without GNU time the child's rusage is used.
func timed(ctx context.Context, name string, args ...string) (*exec.Cmd, func(*Measurement)) {
	out, err := os.CreateTemp("", "drpipe-bench-time-")
	if _, lerr := os.Stat(timeBin); err != nil || lerr != nil {
		if out != nil {
			out.Close()
			os.Remove(out.Name())
		}
		c := exec.CommandContext(ctx, name, args...)
		return c, func(m *Measurement) { fillRusage(c, m) }
	}
	out.Close()
	c := exec.CommandContext(ctx, timeBin, append([]string{"-f", "%M %U %S", "-o", out.Name(), "--", name}, args...)...)
	// On cancellation kill the whole group: GNU time and the command it
	// runs (which would otherwise keep the output pipes open).
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 5 * time.Second
	return c, func(m *Measurement) {
		defer os.Remove(out.Name())
		b, err := os.ReadFile(out.Name())
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		var kb int64
		var u, sy float64
		if err == nil && len(lines) > 0 {
			if n, _ := fmt.Sscanf(lines[len(lines)-1], "%d %f %f", &kb, &u, &sy); n == 3 {
				m.MaxRSS = kb << 10
				m.UserCPU = time.Duration(u * float64(time.Second))
				m.SysCPU = time.Duration(sy * float64(time.Second))
				return
			}
		}
		fillRusage(c, m)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// DirSize returns the apparent size of all regular files under dir.
func DirSize(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// SameTree compares the regular files under dst with those under src: it
// returns an error naming the first file missing from dst or with other
// bytes, or the count when dst has files src does not.
func SameTree(src, dst string) error {
	files := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		files++
		got := filepath.Join(dst, strings.TrimPrefix(p, src))
		same, err := sample.SameContent(p, got)
		if err != nil || !same {
			return fmt.Errorf("%s differs from %s (%v)", got, p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	n := 0
	err = filepath.WalkDir(dst, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		return err
	}
	if n != files {
		return fmt.Errorf("%s holds %d files, %s %d", dst, n, src, files)
	}
	return nil
}

// dropCachesFile is the kernel's switch for dropping the page cache (a
// variable so that tests do not drop the machine's cache).
var dropCachesFile = "/proc/sys/vm/drop_caches"

// DropCaches writes dirty pages back (sync) and asks the kernel to drop the
// page cache, so each tool starts cold. It needs root: main checks once,
// before any suite runs, that it works, and the suites call it without
// looking at the error.
func DropCaches() error {
	if out, err := exec.Command("sync").CombinedOutput(); err != nil {
		return fmt.Errorf("sync: %w: %s", err, out)
	}
	f, err := os.OpenFile(dropCachesFile, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString("3\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("drop the page cache: %w (run the benchmark as root, on a kernel that lets root write %s)", err, dropCachesFile)
	}
	return nil
}

// Have reports whether a command exists.
func Have(name string) bool { _, err := exec.LookPath(name); return err == nil }

// Table is a Markdown table.
type Table struct {
	Caption string
	Header  []string
	Rows    [][]string
	Notes   []string
}

// Markdown renders the table.
func (t Table) Markdown() string {
	var b strings.Builder
	if t.Caption != "" {
		fmt.Fprintf(&b, "**%s**\n\n", t.Caption)
	}
	b.WriteString("| " + strings.Join(t.Header, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat(" --- |", len(t.Header)) + "\n")
	for _, r := range t.Rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	for _, n := range t.Notes {
		b.WriteString("\n" + n + "\n")
	}
	return b.String()
}

// MiB formats bytes as MiB with one decimal.
func MiB(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

// Secs formats a duration in seconds.
func Secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

// Rate formats bytes per duration as MiB/s.
func Rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(n)/(1<<20)/d.Seconds())
}

// Ratio formats a/b.
func Ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

var errSkip = errors.New("skipped")
