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
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

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
	cmd := newRootCmd()
	err := cmd.ExecuteContext(ctx)
	code := exitCode(err)
	stop()
	if code != exitOK {
		os.Exit(code)
	}
}

// exitCode maps an error to the documented exit code and prints it with a
// hint.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var se silentError
	if errors.As(err, &se) {
		return se.code
	}
	fmt.Fprintf(os.Stderr, "drpipe: %v\n", err)
	if h := hint(err); h != "" {
		fmt.Fprintf(os.Stderr, "hint: %s\n", h)
	}
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, repo.ErrBadSnapshotRef):
		return exitUsage
	case errors.Is(err, repo.ErrWrongPassword):
		return exitAuth
	case errors.Is(err, pipeline.ErrPartial), errors.Is(err, pipeline.ErrRestoreIncomplete):
		return exitIncomplete
	}
	return exitFailure
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
