package pipeline

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/vmdisk"
)

// FuzzParseDiskMeta feeds arbitrary disk records (repo.Node.Disk, read
// from snapshots) to the decoder and the layer-map validation.
func FuzzParseDiskMeta(f *testing.F) {
	m := DiskMeta{Version: DiskMetaVersion, Info: vmdisk.Info{Format: vmdisk.QCOW2, VirtualSize: 1 << 20, Backing: "base.qcow2",
		QCOW2: &vmdisk.QCOW2Params{Version: 3, ClusterBits: 16}}, Layer: true, Own: []diskRun{{0, 65536, 2}, {131072, 65536, 1}}}
	b, _ := json.Marshal(m)
	f.Add(b, int64(1<<20))
	f.Add([]byte(`{"v":1,"format":"vhdx","virtual_size":5,"vhdx":{"block_size":1048576}}`), int64(5))
	f.Fuzz(func(t *testing.T, raw []byte, size int64) {
		n := &repo.Node{Name: "x", Size: size, Disk: raw}
		m, err := ParseDiskMeta(n)
		if err != nil || m == nil {
			return
		}
		if m.VirtualSize != size {
			t.Fatalf("accepted virtual size %d for a %d-byte node", m.VirtualSize, size)
		}
		if m.OwnBlob != nil {
			return
		}
		runs, err := m.ownRuns(context.Background(), nil)
		if err != nil {
			return
		}
		var prev int64
		for _, r := range runs {
			if r.Off < prev || r.Len <= 0 || r.End() > size {
				t.Fatalf("accepted bad run %+v", r)
			}
			prev = r.End()
		}
	})
}

// TestDiskRefsFromRecord: a reused disk record names its layer map in the
// node's refs even when the parent node, written before nodes had refs,
// does not (prune, copy and check know blobs only through refs).
func TestDiskRefsFromRecord(t *testing.T) {
	x := id.Hash([]byte("layer map"))
	rec, _ := json.Marshal(DiskMeta{Version: DiskMetaVersion, Info: vmdisk.Info{Format: vmdisk.QCOW2, VirtualSize: 1 << 30, Backing: "base.qcow2",
		QCOW2: &vmdisk.QCOW2Params{Version: 3, ClusterBits: 16}}, Layer: true, OwnBlob: &x})
	old := &repo.Node{Name: "top.qcow2", Type: repo.NodeFile, Size: 1 << 30, Disk: rec}
	if got := diskRefs(old); len(got) != 1 || got[0] != x {
		t.Fatalf("refs of a record with an out-of-line layer map: %v, want [%s]", got, x.Short())
	}
	inline, _ := json.Marshal(DiskMeta{Version: DiskMetaVersion, Info: vmdisk.Info{Format: vmdisk.QCOW2, VirtualSize: 1 << 20,
		QCOW2: &vmdisk.QCOW2Params{Version: 3, ClusterBits: 16}}})
	if got := diskRefs(&repo.Node{Name: "flat.qcow2", Type: repo.NodeFile, Size: 1 << 20, Disk: inline}); got != nil {
		t.Fatalf("refs of a flat record: %v", got)
	}
}
