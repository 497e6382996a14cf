package pipeline

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"reflect"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers/tierstest"
	"github.com/drpipe/drpipe/vmdisk"
)

// checkRuns fails unless runs are sorted, disjoint, non-empty and inside
// a size-byte disk (computed without overflowing).
func checkRuns(t *testing.T, runs []vmdisk.Run, size int64) {
	t.Helper()
	var prev int64
	for _, r := range runs {
		if r.Off < prev || r.Len <= 0 || r.Off > size || r.Len > size-r.Off || r.Kind != vmdisk.Data && r.Kind != vmdisk.Zero {
			t.Fatalf("accepted bad run %+v in a %d-byte disk", r, size)
		}
		prev = r.Off + r.Len
	}
}

// FuzzDiskLayerMapBlob covers the layer map stored in its own tree blob
// (DiskMeta.OwnBlob, used when a layer has more than inlineRuns runs): the
// record is parsed by ParseDiskMeta and the map loaded by ownRuns through
// the repository, as restore does. The map read from a blob must be
// validated exactly like an inline one.
func FuzzDiskLayerMapBlob(f *testing.F) {
	base := f.TempDir()
	ctx := context.Background()
	var r *repo.Repository
	uses := 0
	f.Cleanup(func() {
		if r != nil {
			r.Close()
		}
	})
	// getRepo returns a repository, replaced now and then so that the
	// packs written per input do not pile up.
	getRepo := func(tb testing.TB) *repo.Repository {
		tb.Helper()
		if r == nil || uses >= 500 {
			if r != nil {
				r.Close()
			}
			dir, err := os.MkdirTemp(base, "cache")
			if err != nil {
				tb.Fatal(err)
			}
			r, err = repo.Init(ctx, tierstest.NewMemory(), repo.InitOptions{EC: erasure.Params{K: 2, M: 1}, PackSize: 1 << 20},
				repo.Options{Password: []byte("pw"), CacheDir: dir, KDF: fastKDF})
			if err != nil {
				tb.Fatal(err)
			}
			uses = 0
		}
		uses++
		return r
	}
	// store saves a layer map blob and returns a node whose disk record
	// points at it, as openDisk writes them.
	store := func(tb testing.TB, raw []byte, size int64) *repo.Node {
		tb.Helper()
		r := getRepo(tb)
		x, _, err := r.SaveBlob(ctx, repo.TreeBlob, raw, id.ID{})
		if err == nil {
			err = r.Flush(ctx)
		}
		if err != nil {
			tb.Fatal(err)
		}
		m := DiskMeta{Version: DiskMetaVersion, Info: vmdisk.Info{Format: vmdisk.QCOW2, VirtualSize: size, Backing: "base.qcow2",
			QCOW2: &vmdisk.QCOW2Params{Version: 3, ClusterBits: 16}}, Layer: true, OwnBlob: &x}
		rec, err := json.Marshal(m)
		if err != nil {
			tb.Fatal(err)
		}
		return &repo.Node{Name: "top.qcow2", Type: repo.NodeFile, Size: size, Disk: rec}
	}
	load := func(tb testing.TB, n *repo.Node) ([]vmdisk.Run, error) {
		tb.Helper()
		m, err := ParseDiskMeta(n)
		if err != nil || m == nil || m.OwnBlob == nil {
			tb.Fatalf("disk record with a layer map blob does not parse: %v", err)
		}
		return m.ownRuns(ctx, r)
	}

	// A real long map, encoded the way openDisk encodes it.
	const size = 1 << 30
	var own []diskRun
	for i := int64(0); i < inlineRuns+44; i++ {
		own = append(own, diskRun{i * 1 << 20, 64 << 10, int64(vmdisk.Data - vmdisk.Kind(i%2))})
	}
	raw, err := json.Marshal(own)
	if err != nil {
		f.Fatal(err)
	}
	runs, err := load(f, store(f, raw, size))
	if err != nil || len(runs) != len(own) {
		f.Fatalf("layer map round trip: %d runs, %v", len(runs), err)
	}
	for i, x := range own {
		if runs[i] != (vmdisk.Run{Off: x[0], Len: x[1], Kind: vmdisk.Kind(x[2])}) {
			f.Fatalf("run %d: %+v, stored %v", i, runs[i], x)
		}
	}
	// A record naming a blob that is not stored fails cleanly.
	lost := store(f, []byte("[]"), 0)
	lost.Disk, _ = json.Marshal(DiskMeta{Version: DiskMetaVersion, Layer: true, OwnBlob: &id.ID{1}})
	if _, err := load(f, lost); err == nil {
		f.Fatal("missing layer map blob accepted")
	}
	f.Add(raw, int64(size))
	f.Add([]byte(`[[0,65536,2],[131072,65536,1]]`), int64(1<<20))
	// Overflow: off+len wraps past MaxInt64 (found by this target).
	f.Add([]byte(`[[0,65536,2],[65536,9223372036854775807,2],[0,65536,2]]`), int64(4<<20))
	f.Add([]byte(`[[1,5,2]]`), int64(math.MinInt64)) // negative disk size
	f.Add([]byte(`[]`), int64(0))
	f.Add([]byte(`null`), int64(5))
	f.Add([]byte(`[[4096,1,2],[0,-5,9]]`), int64(4096))
	f.Add([]byte(`[[0,1,3]]`), int64(1))
	f.Add([]byte(`[[0,1,2,7]]`), int64(1))
	f.Add([]byte(`{"own":[[0,1,2]]}`), int64(1))
	f.Fuzz(func(t *testing.T, raw []byte, size int64) {
		runs, err := load(t, store(t, raw, size))
		// The same map inline must be judged the same way.
		var inline []diskRun
		jerr := json.Unmarshal(raw, &inline)
		if jerr == nil {
			im := DiskMeta{Version: DiskMetaVersion, Info: vmdisk.Info{VirtualSize: size}, Layer: true, Own: inline}
			iruns, ierr := im.ownRuns(ctx, nil)
			if (ierr == nil) != (err == nil) || err == nil && !reflect.DeepEqual(iruns, runs) {
				t.Fatalf("blob map: %v, %v; inline map: %v, %v", runs, err, iruns, ierr)
			}
		}
		if err != nil {
			return
		}
		if jerr != nil {
			t.Fatalf("layer map blob %q accepted though it is not a run list: %v", raw, jerr)
		}
		checkRuns(t, runs, size)
		// Re-encoding the accepted map loads the same runs again.
		again := make([]diskRun, len(runs))
		for i, x := range runs {
			again[i] = diskRun{x.Off, x.Len, int64(x.Kind)}
		}
		b, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		runs2, err := load(t, store(t, b, size))
		if err != nil || !reflect.DeepEqual(runs2, runs) {
			t.Fatalf("re-encoded layer map: %v, %v; first %v", runs2, err, runs)
		}
	})
}
