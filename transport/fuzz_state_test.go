package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// FuzzSiteState feeds arbitrary site state files (the snapshot and client
// records under StateDirName) to the readers: loadSnapshotRecords at
// server start, computeStatus and addSession. They must never panic or
// fail on a bad record, must not accept invalid JSON, and what they accept
// must write back (writeJSON) to a file that reads as the same record.
func FuzzSiteState(f *testing.F) {
	// writeJSON fsyncs every file: use tmpfs when there is one so that
	// fuzzing is not bound by the disk.
	dir, err := os.MkdirTemp("/dev/shm", "drpipe-fuzz-state-")
	if err != nil {
		dir = f.TempDir()
	} else {
		f.Cleanup(func() { os.RemoveAll(dir) })
	}
	st, err := openState(dir, true)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.close() })
	ctx := context.Background()
	be := tierstest.NewMemory()
	snapID := id.Hash([]byte("snapshot"))
	if err := tiers.PutBytes(ctx, be, tiers.Handle{Type: tiers.TypeSnapshot, Name: snapID.String()}, []byte("sealed")); err != nil {
		f.Fatal(err)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	snapRel := "snapshots/" + snapID.String() + ".json"
	clientRel := "clients/primary.json"

	// Seeds are files written by the site itself.
	rec := SnapshotRecord{ID: snapID.String(), Host: "hv01", Time: now.Add(-time.Hour), AssertedBy: "client", Client: "primary",
		ReplicatedAt: now.Add(-time.Minute), SessionBytes: 1 << 30}
	if _, err := st.putSnapshot(rec, true); err != nil {
		f.Fatal(err)
	}
	if err := st.addSession("primary", now, 100, 3); err != nil {
		f.Fatal(err)
	}
	if got := st.loadSnapshotRecords(); len(got) != 1 || got[0] != rec {
		f.Fatalf("snapshot record round trip: %+v", got)
	}
	var seedSnap, seedClient []byte
	for rel, p := range map[string]*[]byte{snapRel: &seedSnap, clientRel: &seedClient} {
		if *p, err = os.ReadFile(filepath.Join(dir, StateDirName, filepath.FromSlash(rel))); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(seedSnap, seedClient)
	f.Add([]byte(`{"id":"nothex","host":"h"}`), []byte(`{"sessions":-1,"bytes_received":9223372036854775807}`))
	f.Add([]byte(`{"id":"`+snapID.String()+`","time":"0000-01-01T00:00:00Z"}`), []byte(`{"last_session":"2025-06-01T12:00:00+24:00"}`))
	f.Add([]byte(`[]`), []byte(`null`))
	f.Add([]byte{}, []byte(`{"name":"x"`))

	write := func(t *testing.T, rel string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, StateDirName, filepath.FromSlash(rel)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// rewrite writes v as the site does and checks that it reads back to
	// the same encoding.
	rewrite := func(t *testing.T, rel string, v, fresh any) {
		e1, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return // e.g. a time that parses but does not format
		}
		if err := st.writeJSON(rel, v); err != nil {
			t.Fatalf("write back %s: %v", rel, err)
		}
		if err := st.readJSON(rel, fresh); err != nil {
			t.Fatalf("written %s does not read: %v", rel, err)
		}
		if e2, _ := json.MarshalIndent(fresh, "", "  "); !bytes.Equal(e1, e2) {
			t.Fatalf("%s re-encoding is not stable:\n%s\n%s", rel, e1, e2)
		}
	}
	f.Fuzz(func(t *testing.T, snap, client []byte) {
		write(t, snapRel, snap)
		write(t, clientRel, client)

		var sr SnapshotRecord
		serr := st.readJSON(snapRel, &sr)
		if serr == nil && !json.Valid(snap) {
			t.Fatal("invalid JSON accepted as a snapshot record")
		}
		var cr ClientRecord
		cerr := st.readJSON(clientRel, &cr)
		if cerr == nil && !json.Valid(client) {
			t.Fatal("invalid JSON accepted as a client record")
		}

		recs := st.loadSnapshotRecords()
		if len(recs) > 1 || len(recs) == 1 && serr != nil {
			t.Fatalf("loaded %d records from one file (read error %v)", len(recs), serr)
		}
		for _, r := range recs {
			if _, err := id.Parse(r.ID); err != nil {
				t.Fatalf("record with bad id %q loaded", r.ID)
			}
		}
		s, err := computeStatus(ctx, be, st, now)
		if err != nil {
			t.Fatalf("status with a bad record: %v", err)
		}
		meta, clients := 0, 0
		if serr == nil && sr.ID == snapID.String() {
			meta = 1
		}
		if cerr == nil {
			clients = 1
		}
		if s.Snapshots != 1 || s.SnapshotsWithoutMeta != 1-meta || len(s.Hosts) != meta || len(s.Clients) != clients {
			t.Fatalf("status %+v for records %+v (%v), %+v (%v)", s, sr, serr, cr, cerr)
		}

		if serr == nil {
			rewrite(t, snapRel, sr, &SnapshotRecord{})
		}
		if cerr == nil {
			rewrite(t, clientRel, cr, &ClientRecord{})
			write(t, clientRel, client)
		}
		// A session always counts, even over an unreadable record.
		if err := st.addSession("primary", now, 10, 1); err != nil {
			t.Fatalf("add session over a bad record: %v", err)
		}
		var after ClientRecord
		if err := st.readJSON(clientRel, &after); err != nil {
			t.Fatalf("client record after a session: %v", err)
		}
		want := int64(1)
		if cerr == nil {
			want = cr.Sessions + 1
		}
		if after.Name != "primary" || after.Sessions != want {
			t.Fatalf("client record after a session: %+v (before %+v, %v)", after, cr, cerr)
		}
	})
}
