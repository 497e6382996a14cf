// Command bench runs drpipe's benchmarks against its peers (restic, borg,
// rsync, ...) on the same data in the same run and writes a Markdown
// report with ratios. Run it through `make bench`.
//
// Each suite lives in its own file and registers itself in suites (see
// suite.go). A suite gets an Env (work directory, the drpipe binary,
// helpers to run and time commands) and returns tables.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

func main() { os.Exit(benchMain(os.Args[1:])) }

// benchMain runs the benchmark with the command-line arguments args and
// returns the exit code: 0 when every selected suite ran, 1 when one
// failed or the run could not start or write its report, 2 for bad
// arguments. It returns instead of exiting so that its deferred clean-ups
// run: the temporary work directory of a failed or interrupted run holds
// gigabytes of images, repositories and restores.
func benchMain(args []string) int {
	fl := flag.NewFlagSet("bench", flag.ContinueOnError)
	drpipe := fl.String("drpipe", "bin/drpipe", "drpipe binary to benchmark")
	out := fl.String("out", "bench/results", "directory for the Markdown report")
	work := fl.String("work", "", "work directory (default: a temporary directory)")
	only := fl.String("suites", "", "comma-separated suites to run (default: all): "+strings.Join(suiteNames(), ","))
	keep := fl.Bool("keep", false, "keep the work directory")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	selected, err := selectSuites(*only)
	if err == nil && fl.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments %q: name the suites with -suites a,b", fl.Args())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	fatal := func(err error) int {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}

	// Every timed step starts from a dropped page cache, as the report
	// says; a run that cannot drop it (not root) would time warm caches.
	if err := DropCaches(); err != nil {
		return fatal(fmt.Errorf("the timed steps cannot start from a cold page cache: %w", err))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	bin, err := filepath.Abs(*drpipe)
	if err != nil {
		return fatal(err)
	}
	// The binary is checked before any suite spends minutes generating
	// its data, and the report names its version.
	version, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return fatal(fmt.Errorf("drpipe binary %s: %w (build it with make build, or name it with -drpipe)", bin, err))
	}
	// The suites run commands in other directories (borg extract in its
	// target) and compare restores made below their targets at the
	// sources' absolute paths, so the work directory is absolute.
	wd, err := filepath.Abs(*work)
	if err != nil {
		return fatal(err)
	}
	if *work == "" {
		wd, err = os.MkdirTemp("", "drpipe-bench-")
		if err != nil {
			return fatal(err)
		}
		if !*keep {
			defer os.RemoveAll(wd)
		}
	} else if err := os.MkdirAll(wd, 0o755); err != nil {
		return fatal(err)
	}
	if fs, err := memoryFS(wd); err != nil {
		return fatal(err)
	} else if fs != "" {
		return fatal(fmt.Errorf("work directory %s is on %s, which lives in memory: dropping the page cache cannot make its files cold, so every tool would read and write RAM; name a directory on a disk with -work", wd, fs))
	}
	env := &Env{Work: wd, Drpipe: bin}
	report := &strings.Builder{}
	fmt.Fprintf(report, "# drpipe benchmark — %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(report, "Machine: %s\n\n", machine())
	touchNote := func(when string) {
		if d, err := touchCost(touchProbe); err == nil {
			fmt.Fprintf(report, "First touch of %d MiB of fresh memory after dropping the page cache (%s): %.2f ms/MiB\n\n", touchProbe>>20, when, float64(d)/float64(time.Millisecond))
		}
	}
	touchNote("before the suites")
	fmt.Fprintf(report, "Binary: %s\n\n", strings.TrimSpace(string(version)))
	failed := false
	for _, s := range selected {
		if ctx.Err() != nil {
			failed = true
			fmt.Fprintf(report, "**interrupted:** suite %s and those after it did not run\n\n", s.Name)
			fmt.Fprintf(os.Stderr, "bench: interrupted; suite %s and those after it did not run\n", s.Name)
			break
		}
		fmt.Fprintf(os.Stderr, "== suite %s\n", s.Name)
		start := time.Now()
		sd := filepath.Join(wd, s.Name)
		if err := os.MkdirAll(sd, 0o755); err != nil {
			return fatal(err)
		}
		tables, err := s.Run(ctx, env.sub(sd))
		fmt.Fprintf(report, "## %s\n\n%s\n\n", s.Title, s.About)
		for _, t := range tables {
			report.WriteString(t.Markdown())
			report.WriteString("\n")
		}
		if err != nil {
			failed = true
			fmt.Fprintf(report, "**suite failed:** %v\n\n", err)
			fmt.Fprintf(os.Stderr, "suite %s failed: %v\n", s.Name, err)
		}
		fmt.Fprintf(os.Stderr, "== suite %s done in %s\n", s.Name, time.Since(start).Truncate(time.Second))
	}
	touchNote("after the suites")
	fmt.Print(report.String())
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return fatal(err)
		}
		name := filepath.Join(*out, time.Now().UTC().Format("2006-01-02T1504")+".md")
		if err := os.WriteFile(name, []byte(report.String()), 0o644); err != nil {
			return fatal(err)
		}
		fmt.Fprintf(os.Stderr, "report written to %s\n", name)
	}
	if failed {
		return 1
	}
	return 0
}

// selectSuites returns the suites named in the comma-separated list, in
// report order, or all of them for an empty list. A name that is no suite
// is an error: a run that quietly benchmarks nothing would still write a
// report and exit 0.
func selectSuites(list string) ([]Suite, error) {
	want := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		if name = strings.TrimSpace(name); name != "" {
			want[name] = true
		}
	}
	if len(want) == 0 {
		return suites, nil
	}
	var out []Suite
	for _, s := range suites {
		if want[s.Name] {
			out = append(out, s)
			delete(want, s.Name)
		}
	}
	if len(want) > 0 {
		var unknown []string
		for name := range want {
			unknown = append(unknown, name)
		}
		slices.Sort(unknown)
		return nil, fmt.Errorf("-suites: no suite named %s; the suites are %s", strings.Join(unknown, ", "), strings.Join(suiteNames(), ","))
	}
	return out, nil
}

// touchProbe is the size of the memory first-touch probe (see touchCost).
const touchProbe = 256 << 20

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
	}
	return fmt.Sprintf("%s, %d cores%s, %s/%s, %s", cpu, runtime.NumCPU(), mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
