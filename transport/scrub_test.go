package transport

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

// A shard the site's scrub rebuilt but storage kept damaged is logged as
// not stored, and the scrub's summary counts it, not logged as rebuilt
// with nothing to say what damage is left.
func TestSiteScrubLogsShardsNotStored(t *testing.T) {
	p := newPrimary(t)
	p.backup("hv01", 3, 64<<10)
	var shard tiers.Handle
	err := p.be.List(t.Context(), tiers.TypeData, func(oi tiers.ObjectInfo) error {
		shard = oi.Handle
		return nil
	})
	if err != nil || shard.Name == "" {
		t.Fatalf("no shard in the repository (%v)", err)
	}
	b, err := tiers.LoadAll(t.Context(), p.be, shard, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0x40
	if err := tiers.PutBytes(t.Context(), p.be, shard, b); err != nil {
		t.Fatal(err)
	}
	store := tierstest.NewFaulty(p.be, 1)
	store.Inject(tierstest.Fault{Op: tierstest.OpPut, Type: tiers.TypeData, Kind: tierstest.Truncate})
	var log bytes.Buffer
	s, err := NewServer(context.Background(), ServerOptions{Dir: p.dir, Store: store, Logger: slog.New(slog.NewTextHandler(&log, nil)), Metrics: NewMetrics()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rep := s.scrubOnce(t.Context())
	if rep.ShardsNotStored != 1 {
		t.Fatalf("report %+v: want one shard not stored", rep)
	}
	for _, want := range []string{"not_stored=[", "shards_not_stored=1", "retention"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("site log lacks %q:\n%s", want, log.String())
		}
	}
}

// Serve returns when accepting fails, its scrubs stopped: it does not
// wait for the next scrub forever.
func TestServeWithScrubsReturnsWhenAcceptFails(t *testing.T) {
	s, err := NewServer(context.Background(), ServerOptions{Dir: t.TempDir(), ScrubInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := &pipeListener{conns: make(chan Conn), done: make(chan struct{})}
	close(l.done)
	served := make(chan error, 1)
	go func() { served <- s.Serve(t.Context(), l) }()
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "accept") {
			t.Errorf("Serve: %v, want the accept error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after accepting failed")
	}
}
