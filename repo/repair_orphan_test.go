package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"runtime"
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

// TestRepairOrphanHeaderClaimsHugePack: shard objects of a few bytes
// whose (unauthenticated) headers claim a pack of gigabytes, which anyone
// who can write the storage can plant without the key, do not make
// repair allocate what the headers claim: no pack this repository writes
// is that large, so they are not read as one.
func TestRepairOrphanHeaderClaimsHugePack(t *testing.T) {
	ctx := context.Background()
	mem := tierstest.NewMemory()
	p := erasure.Params{K: 2, M: 1}
	r := testRepo(t, mem, InitOptions{EC: p, PackSize: 1 << 20})
	smallSnapshot(t, r)
	const shardSize = 1 << 30
	table := []byte(erasure.Magic)
	table = append(table, erasure.Version, byte(p.K), byte(p.M), 0)
	table = binary.LittleEndian.AppendUint64(table, uint64(p.K)*shardSize)
	table = binary.LittleEndian.AppendUint32(table, shardSize)
	for i := 0; i < p.Shards(); i++ {
		table = append(table, bytes.Repeat([]byte{byte(i + 1)}, 32)...)
	}
	pid := id.Hash(table)
	for i := 0; i < p.Shards(); i++ {
		obj := append(append([]byte(nil), table...), byte(i), 0, 0, 0)
		if _, err := erasure.ParseHeader(obj); err != nil {
			t.Fatalf("planted header does not parse: %v", err)
		}
		if err := tiers.PutBytes(ctx, mem, tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, i)}, obj); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rep, err := r.Repair(ctx, CheckOptions{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	if rep.PacksReindexed != 0 {
		t.Errorf("re-indexed %d packs from planted headers", rep.PacksReindexed)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 256<<20 {
		t.Errorf("repair allocated %d MiB for %d planted shard headers claiming %d-byte shards, want under 256 MiB", n>>20, p.Shards(), shardSize)
	}
}
