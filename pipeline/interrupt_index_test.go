package pipeline

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// cancelAfter cancels a backup once it has done n bytes.
type cancelAfter struct {
	NoProgress
	n      int64
	done   atomic.Int64
	cancel context.CancelFunc
}

func (c *cancelAfter) AddDone(_, b int64) {
	if c.done.Add(b) >= c.n {
		c.cancel()
	}
}

// TestInterruptedBackupIndexesWhatItStored: a backup interrupted (Ctrl-C)
// after it stored packs, and before the index object that would list
// them was due, indexes them as it stops, so the next backup deduplicates
// against them instead of storing that data again beside orphans.
func TestInterruptedBackupIndexesWhatItStored(t *testing.T) {
	ctx := context.Background()
	be, err := tiers.NewLocal(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	// No index object is due during the run: only the end writes one.
	opts := repo.Options{Password: []byte("pw"), CacheDir: t.TempDir(), KDF: fastKDF, IndexEvery: 1 << 20, IndexInterval: time.Hour}
	r, err := repo.Init(ctx, be, repo.InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(9, 9))
	const files, size = 32, 512 << 10
	for i := range files {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(src, string(rune('a'+i%26))+string(rune('a'+i/26))), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &cancelAfter{n: files * size / 2, cancel: cancel}
	if _, err := Backup(cctx, r, BackupOptions{Host: "h", Paths: []string{src}, Progress: p, Workers: 2}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted backup: %v, want context.Canceled", err)
	}
	indexed := 0
	if err := be.List(ctx, tiers.TypeIndex, func(tiers.ObjectInfo) error { indexed++; return nil }); err != nil {
		t.Fatal(err)
	}
	if indexed == 0 {
		t.Fatal("the interrupted backup left no index object: its packs are orphans the next backup does not use")
	}
	r2, err := repo.Open(ctx, be, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	res, err := Backup(ctx, r2, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	// The run stored at least a quarter of the data before it stopped;
	// the next one stores only the rest again (with 1.5× parity).
	if limit := int64(files*size) * 3 / 4 * 3 / 2; res.Summary.BytesNew > limit {
		t.Errorf("the next backup stored %d bytes, over %d: it did not reuse what the interrupted one stored", res.Summary.BytesNew, limit)
	}
}
