// Command drpipe is the disaster-recovery replication and offsite tiering
// pipeline: it backs up host backups (VM disk images, VM configuration,
// virtual-network setup) into an encrypted, deduplicated, erasure-coded
// repository and carries it to the DR site, cloud buckets and tape.
//
// This package only wires flags and configuration (cobra and viper) to the
// engine packages and renders their results; see README.md for every
// command.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/spf13/cast"

	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
)

// Exit codes, documented in README.md.
const (
	exitOK         = 0
	exitFailure    = 1
	exitUsage      = 2
	exitIncomplete = 3
	exitAuth       = 4
)

// usageError marks bad flags, arguments or configuration.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// silentError carries an exit code whose message was already printed.
type silentError struct{ code int }

func (s silentError) Error() string { return fmt.Sprintf("exit status %d", s.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if stopProfile := startProfile(); stopProfile != nil {
		defer stopProfile()
	}
	cmd, a := newRootCmd()
	err := cmd.ExecuteContext(ctx)
	// A flag error can come before --json was parsed, and before the
	// configuration was read: it counts as given.
	var ue usageError
	asJSON := a.jsonOut() || errors.As(err, &ue) && jsonAsked(os.Args[1:])
	code := exitCode(err, asJSON)
	stop()
	if code != exitOK {
		os.Exit(code)
	}
}

// jsonAsked reports whether args or DRPIPE_JSON ask for JSON output, as
// the configuration would once read: a --json or --json=VALUE flag (the
// last one counts, up to --), else DRPIPE_JSON.
func jsonAsked(args []string) bool {
	asked, _ := cast.ToBoolE(os.Getenv("DRPIPE_JSON"))
	for _, arg := range args {
		if arg == "--" {
			break
		}
		if arg == "--json" {
			asked = true
		} else if v, ok := strings.CutPrefix(arg, "--json="); ok {
			if b, err := cast.ToBoolE(v); err == nil {
				asked = b
			}
		}
	}
	return asked
}

// exitCode maps an error to the documented exit code and prints it to
// stderr with a hint: as two lines of text, or under --json (asJSON) as
// one JSON object with the code, so that a script reading JSON gets the
// failure in JSON too.
func exitCode(err error, asJSON bool) int {
	if err == nil {
		return exitOK
	}
	var se silentError
	if errors.As(err, &se) {
		return se.code
	}
	code := exitFailure
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, repo.ErrBadSnapshotRef):
		code = exitUsage
	case errors.Is(err, repo.ErrWrongPassword):
		code = exitAuth
	case errors.Is(err, pipeline.ErrPartial), errors.Is(err, pipeline.ErrRestoreIncomplete):
		code = exitIncomplete
	}
	h := hint(err)
	if asJSON {
		b, _ := json.Marshal(struct {
			Error    string `json:"error"`
			Hint     string `json:"hint,omitempty"`
			ExitCode int    `json:"exit_code"`
		}{err.Error(), h, code})
		fmt.Fprintf(os.Stderr, "%s\n", b)
		return code
	}
	fmt.Fprintf(os.Stderr, "drpipe: %v\n", err)
	if h != "" {
		fmt.Fprintf(os.Stderr, "hint: %s\n", h)
	}
	return code
}

func hint(err error) string {
	if h := tierHint(err); h != "" {
		return h
	}
	if h := scrubHint(err); h != "" {
		return h
	}
	switch {
	case errors.Is(err, repo.ErrWrongPassword):
		return "check --password-file / DRPIPE_PASSWORD_FILE / DRPIPE_PASSWORD; list key slots with 'drpipe key list' using a working password"
	case errors.Is(err, repo.ErrNotRepository):
		return "create a repository with 'drpipe init --repo R' or point --repo at an existing one"
	case errors.Is(err, repo.ErrUnsupportedVersion):
		return "this repository was written by a newer drpipe; upgrade drpipe to read it"
	case errors.Is(err, repo.ErrCheckFailed):
		return "run 'drpipe repair --repo R' to rebuild damaged shards and indexes; a pack marked LOST or NOT REPAIRABLE cannot be rebuilt from this repository: restore the files it names from another tier (drpipe restore --tiers), or back them up again once repair has removed the chunks that cannot be read from the index"
	case errors.Is(err, repo.ErrTooLarge):
		return "the object named above is larger than drpipe reads for its kind: it is damaged or was not written by drpipe; the message says what to do for that kind (an index, for one, is rebuilt from the packs by 'drpipe repair --repo R')"
	case errors.Is(err, repo.ErrBlobLost):
		return "the data is damaged beyond this repository's parity; restore from another tier (DR site, bucket, tape), or run 'drpipe repair --repo R' and back the files up again"
	case errors.Is(err, context.Canceled):
		return "interrupted; a backup keeps everything stored so far and the next run reuses it; a restore removed the files it had not finished (with --delta it keeps them, and the next --delta run goes on from them)"
	}
	return siteHint(err)
}

// startProfile writes a CPU profile to $DRPIPE_CPU_PROFILE when set (for
// performance work; undocumented for operators).
func startProfile() func() {
	path := os.Getenv("DRPIPE_CPU_PROFILE")
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "drpipe: cpu profile: %v\n", err)
		return nil
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "drpipe: cpu profile: %v\n", err)
		f.Close()
		return nil
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
