package transport

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// TestStatusCountsASnapshotRecordOnce: a snapshot record file whose id is
// not its file's (a copy of a record under another name: damaged local
// state) does not count its snapshot a second time, which made
// SnapshotsWithoutMeta negative and a host's snapshot count too high.
func TestStatusCountsASnapshotRecordOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := openState(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	be := tierstest.NewMemory()
	snapID := id.Hash([]byte("snapshot"))
	if err := tiers.PutBytes(ctx, be, tiers.Handle{Type: tiers.TypeSnapshot, Name: snapID.String()}, []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	if _, err := st.putSnapshot(SnapshotRecord{ID: snapID.String(), Host: "hv01", Time: now.Add(-time.Hour), Client: "primary"}, true); err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(dir, StateDirName, "snapshots", snapID.String()+".json")
	b, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	other := id.Hash([]byte("other")).String()
	if err := os.WriteFile(filepath.Join(dir, StateDirName, "snapshots", other+".json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := computeStatus(ctx, be, st, now)
	if err != nil {
		t.Fatal(err)
	}
	if s.Snapshots != 1 || s.SnapshotsWithoutMeta != 0 || len(s.Hosts) != 1 || s.Hosts[0].Snapshots != 1 {
		t.Errorf("status: %d snapshots, %d without meta, hosts %+v; want 1, 0, hv01 with 1", s.Snapshots, s.SnapshotsWithoutMeta, s.Hosts)
	}
	if recs := st.loadSnapshotRecords(); len(recs) != 1 {
		t.Errorf("loaded %d snapshot records, want 1: %+v", len(recs), recs)
	}
}
