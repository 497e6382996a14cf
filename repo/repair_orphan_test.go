package repo

import (
	"context"
	"io"
	"sync/atomic"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// loadCounter counts the bytes read from one object.
type loadCounter struct {
	tiers.Backend
	name string
	n    atomic.Int64
}

func (b *loadCounter) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(io.Reader) error) error {
	return b.Backend.Load(ctx, h, offset, length, func(rd io.Reader) error {
		if h.Name != b.name {
			return fn(rd)
		}
		return fn(io.TeeReader(rd, writerFunc(func(p []byte) (int, error) {
			b.n.Add(int64(len(p)))
			return len(p), nil
		})))
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestRepairReadsOrphanShardHeaderOnly: an object named like a shard of a
// pack no index lists, far larger than any shard (a stray file, or
// damage), is not read whole into memory to find out whether the pack
// can be indexed again: its header says it cannot.
func TestRepairReadsOrphanShardHeaderOnly(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	stray := erasure.ShardName(id.Hash([]byte("no pack")), 0)
	be := &loadCounter{Backend: mem, name: stray}
	r := testRepo(t, be, InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20})
	smallSnapshot(t, r)
	big := make([]byte, 64<<20)
	if err := tiers.PutBytes(ctx, mem, tiers.Handle{Type: tiers.TypeData, Name: stray}, big); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Repair(ctx, CheckOptions{})
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	if rep.PacksReindexed != 0 {
		t.Errorf("re-indexed %d packs from a stray object", rep.PacksReindexed)
	}
	if n := be.n.Load(); n > erasure.MaxHeaderSize {
		t.Errorf("repair read %d bytes of the %d-byte stray data/%s, want at most a header (%d)", n, len(big), stray, erasure.MaxHeaderSize)
	}
}
