package pipeline

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBackupStdinCancelledWhileInputQuiet: a backup of standard input
// stops when it is cancelled (Ctrl-C, SIGTERM) even though its producer
// has gone quiet without closing the pipe (pg_dump waiting on a lock),
// instead of waiting for the next byte or the end of the input.
func TestBackupStdinCancelledWhileInputQuiet(t *testing.T) {
	r, _ := newRepo(t)
	// A blocking pipe, as a shell hands standard input over: a Read of
	// it cannot be interrupted.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	in, w := os.NewFile(uintptr(p[0]), "stdin"), os.NewFile(uintptr(p[1]), "producer")
	defer in.Close()
	defer w.Close()
	if _, err := w.Write([]byte("COPY public.orders FROM stdin;\n")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		res *BackupResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := Backup(ctx, r, BackupOptions{Host: "db", Stdin: in, StdinName: "dump.sql"})
		done <- result{res, err}
	}()
	// Cancelled once the backup has taken the line and waits for more.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if n, err := unix.IoctlGetInt(p[0], unix.TIOCINQ); err != nil || n == 0 || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	var got result
	select {
	case got = <-done:
	case <-time.After(10 * time.Second):
		w.Close() // let the backup finish before the repository is closed
		<-done
		t.Fatal("backup of a quiet standard input still running 10 s after it was cancelled")
	}
	if got.res != nil || !errors.Is(got.err, context.Canceled) {
		t.Fatalf("cancelled backup of standard input: %v, %v; want no result and context.Canceled", got.res, got.err)
	}
}
