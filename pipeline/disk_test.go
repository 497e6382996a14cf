package pipeline

import (
	"context"
	"encoding/json"
	"testing"

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
