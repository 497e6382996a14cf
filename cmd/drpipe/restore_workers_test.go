package main

import (
	"testing"

	"github.com/spf13/viper"

	"github.com/drpipe/drpipe/internal/cpus"
)

// TestRestoreWorkers: a restore from a local directory keeps pipeline's
// default (0: 2 per CPU); from a bucket, or through the tiers, it reads
// with at least remoteRestoreWorkers; restore.workers, when set, wins.
func TestRestoreWorkers(t *testing.T) {
	remote := max(2*cpus.N(), remoteRestoreWorkers)
	for _, c := range []struct {
		repo      string
		workers   int
		fromTiers bool
		want      int
	}{
		{"/srv/drpipe/repo", 0, false, 0},
		{"file:///srv/drpipe/repo", 0, false, 0},
		{"/srv/drpipe/repo", 0, true, remote},
		{"s3://bucket/hv01", 0, false, remote},
		{"s3://bucket/hv01", 3, false, 3},
		{"/srv/drpipe/repo", 5, true, 5},
	} {
		a := &app{v: viper.New()}
		a.v.Set("repo", c.repo)
		a.v.Set("restore.workers", c.workers)
		if got := a.restoreWorkers(c.fromTiers); got != c.want {
			t.Errorf("repo %s, restore.workers %d, tiers %v: %d readers, want %d", c.repo, c.workers, c.fromTiers, got, c.want)
		}
	}
}
