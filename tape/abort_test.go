package tape_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
)

// cancelOnStow cancels a context the first time a cartridge leaves a
// drive for a slot: Ctrl-C while the first column's tape is put away.
type cancelOnStow struct {
	tape.Changer
	once   sync.Once
	cancel context.CancelFunc
}

func (c *cancelOnStow) Move(ctx context.Context, from, to tape.Element) error {
	err := c.Changer.Move(ctx, from, to)
	if from.Kind == tape.ElemDrive && to.Kind == tape.ElemSlot {
		c.once.Do(c.cancel)
	}
	return err
}

// TestCancelBetweenColumnsLeavesSetIncomplete: a two-column set written with one
// drive, interrupted after the first column's tape is done and before
// the second column starts, must not be recorded as complete.
func TestCancelBetweenColumnsLeavesSetIncomplete(t *testing.T) {
	w := newBadWorld(t)
	w.label("DRP001L7", "DRP002L7")
	bg := context.Background()
	cfg := tiers.Handle{Type: tiers.TypeConfig, Name: "config"}
	tiers.PutBytes(bg, w.be, cfg, []byte(`{"format":"fake"}`))
	pack := make([]byte, 64<<10)
	pid, shards, err := erasure.Encode(erasure.Params{K: 1, M: 1}, pack)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range shards {
		tiers.PutBytes(bg, w.be, tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, i)}, s)
	}
	plan := &tape.WritePlan{
		Meta:     []tape.PlanObject{{Handle: cfg, Size: 17}},
		Packs:    []tape.PlanPack{{ID: pid, K: 1, M: 1, ShardSize: int64(len(shards[0]))}},
		Manifest: tape.Manifest{Snapshots: []tape.ManifestSnapshot{{ID: id.ID{1}, Time: time.Unix(1, 0), Packs: []int{0}}}, Packs: []tape.ManifestPack{{ID: pid, K: 1, M: 1}}},
	}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	ch := &cancelOnStow{Changer: w.lib, cancel: cancel}
	res, err := tape.WriteSet(ctx, ch, w.cat, w.be, plan, tape.WriteOptions{Pool: w.pool, Level: tape.LevelDaily, Parity: 1, Now: func() time.Time { return w.now }})
	if ctx.Err() == nil {
		t.Fatal("the write was not interrupted: the changer never stowed a tape")
	}
	s, _ := w.cat.Set(res.Set.ID)
	t.Logf("err=%v set=%+v", err, s)
	if err == nil || (s != nil && s.Complete) {
		t.Fatalf("interrupted write: err %v, set complete=%v with %d of %d columns' tapes", err, s != nil && s.Complete, len(s.Tapes), s.Columns)
	}
}

// TestKilledWriterSetTapesReused: a write killed outright (SIGKILL, a
// power cut) leaves an incomplete set with no reason recorded. Once its
// writer is known to be gone (no such process on this host, or the host
// restarted since), the pool reuses its tapes as an aborted set's; while
// the writer may still run, never.
func TestKilledWriterSetTapesReused(t *testing.T) {
	w := newBadWorld(t)
	w.label("DRP001L7")
	res, restoreSource := w.abortedWrite()
	restoreSource()
	s, _ := w.cat.Set(res.Set.ID)
	if s == nil || s.Writer == "" {
		t.Fatalf("set %+v: want its writer recorded", s)
	}
	host, _ := os.Hostname()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	ns, _ := os.Readlink("/proc/self/ns/pid")
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		writer string
		reuse  bool
	}{
		{fmt.Sprintf("%s %s %d %s", host, strings.TrimSpace(string(boot)), os.Getpid(), ns), false},     // still running
		{fmt.Sprintf("elsewhere %s %d", strings.TrimSpace(string(boot)), dead.Process.Pid), false},      // cannot be told
		{fmt.Sprintf("%s %s %d %s", host, strings.TrimSpace(string(boot)), dead.Process.Pid, ns), true}, // no such process
		{fmt.Sprintf("%s 00000000-0000-0000-0000-000000000000 %d", host, os.Getpid()), true},            // restarted since
	} {
		s.Aborted, s.Writer = "", c.writer // as a killed write leaves it
		if err := w.cat.PutSet(s); err != nil {
			t.Fatal(err)
		}
		if got := s.WriterGone(); got != c.reuse {
			t.Errorf("writer %q: gone %v, want %v", c.writer, got, c.reuse)
		}
		if c.reuse {
			continue
		}
		if _, err := w.write(); err == nil || !strings.Contains(err.Error(), "no writable tape") {
			t.Errorf("writer %q may still run: write got %v, want no writable tape", c.writer, err)
		}
	}
	res2, err := w.write()
	if err != nil || len(res2.Set.Tapes) != 1 || res2.Set.Tapes[0].Barcode != "DRP001L7" {
		t.Fatalf("write after the writer was gone: %v, %+v; want DRP001L7 reused", err, res2)
	}
}
