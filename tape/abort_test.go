package tape_test

import (
	"context"
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
