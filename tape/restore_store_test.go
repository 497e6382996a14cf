package tape_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tape"
)

// TestRestoreStoreFailureIsNotTheTapes: when the objects read off a tape
// cannot be stored (the restore's work directory is full or broken), the
// restore stops with that error, instead of counting every tape it reads
// as failed, reading the set's other tapes only to fail again, and ending
// with missing tapes to import.
func TestRestoreStoreFailureIsNotTheTapes(t *testing.T) {
	w := newWorld(t, erasure.Params{K: 2, M: 1}, tape.VirtualConfig{Generation: tape.LTO9, Slots: 6, Drives: 1, MailSlots: 1}, 20, 1<<20)
	pool := tape.DefaultPool("daily")
	w.label(pool, 4)
	w.write(pool, 1, time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC))
	ctx := context.Background()
	refs, err := tape.FindSnapshots(w.cat, "latest", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(w.dir, "scratch")
	be, err := tape.NewScratch(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The directory for data objects is a file: every data object read
	// off tape fails to be stored, whichever tape it comes from.
	if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := tape.Restore(ctx, w.lib, w.cat, refs, func(string) bool { return true }, be, nil)
	if err == nil {
		t.Fatal("restore into a scratch directory that cannot take data objects succeeded")
	}
	if !strings.Contains(err.Error(), "could not be stored") {
		t.Errorf("restore error %q does not say what was read could not be stored", err)
	}
	if errors.Is(err, tape.ErrMissingTapes) {
		t.Errorf("restore blamed the tapes for its own store failing: %v", err)
	}
	var te *tape.TapeError
	if errors.As(err, &te) {
		t.Errorf("store failure reported as tape %s failing: %v", te.Barcode, err)
	}
	if len(res.Failed) != 0 {
		t.Errorf("tapes counted as failed: %v; none is at fault", res.Failed)
	}
}
