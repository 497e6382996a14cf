package main

import (
	"context"
	"testing"
	"time"
)

// A cancelled run kills the measured command, not only GNU time above it
// (which would leave it holding the output pipes until it exits).
func TestRunCancelKillsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Run(ctx, nil, "sleep", "5"); err == nil {
		t.Fatal("cancelled run reported success")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("cancelled run returned after %v, want soon after the 300 ms deadline", el)
	}
}

// Peak RSS is the command's own, not the bench process's.
func TestRunPeakRSSIsTheCommands(t *testing.T) {
	ballast := make([]byte, 256<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	m, err := Run(context.Background(), nil, "true")
	if err != nil {
		t.Fatal(err)
	}
	if m.MaxRSS > 64<<20 {
		t.Errorf("peak RSS of true: %d MiB (the bench process holds %d MiB)", m.MaxRSS>>20, len(ballast)>>20)
	}
	_ = ballast[len(ballast)-1]
}
