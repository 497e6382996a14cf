package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// FuzzStatusReply feeds arbitrary payloads to the decoder of a site's
// status reply (what 'drpipe site status --to' prints). It must never
// panic, must refuse what is not JSON with ErrProtocol, and what it
// accepts must encode as the site encodes a status (encodeStatus) to
// bytes that decode and encode again to the same.
func FuzzStatusReply(f *testing.F) {
	// Seeds: replies the site makes, from its own state.
	ctx := context.Background()
	st, err := openState(f.TempDir(), true)
	if err != nil {
		f.Fatal(err)
	}
	defer st.close()
	be := tierstest.NewMemory()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for i, host := range []string{"hv01", "hv02", "sql 01"} {
		sid := id.Hash([]byte(host))
		if err := tiers.PutBytes(ctx, be, tiers.Handle{Type: tiers.TypeSnapshot, Name: sid.String()}, []byte("sealed")); err != nil {
			f.Fatal(err)
		}
		if i == 2 {
			continue // a snapshot without a record
		}
		rec := SnapshotRecord{ID: sid.String(), Host: host, Time: now.Add(-time.Duration(i+1) * time.Hour), AssertedBy: "client", Client: "primary",
			ReplicatedAt: now.Add(-time.Minute), SessionBytes: 1 << 30}
		if _, err := st.putSnapshot(rec, true); err != nil {
			f.Fatal(err)
		}
	}
	if err := st.addSession("primary", now, 100, 3); err != nil {
		f.Fatal(err)
	}
	for _, s := range []*siteState{st, nil} { // with records, and without
		status, err := computeStatus(ctx, be, s, now)
		if err != nil {
			f.Fatal(err)
		}
		status.Site = "dr1"
		b, err := encodeStatus(status)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`null`))
	f.Add([]byte(`{"hosts":[{"lag_s":1e308,"session_bytes":-1}],"now":"9999-12-31T23:59:59+23:59"}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := decodeStatus(p)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if !json.Valid(p) {
			t.Fatal("invalid JSON accepted as a status reply")
		}
		b1, err := encodeStatus(s)
		if err != nil {
			return // a time that parses but does not format, a status too large for a frame
		}
		s2, err := decodeStatus(b1)
		if err != nil {
			t.Fatalf("an encoded status does not decode: %v\n%s", err, b1)
		}
		b2, err := encodeStatus(s2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("status re-encoding is not stable (%v):\n%s\n%s", err, b1, b2)
		}
	})
}
