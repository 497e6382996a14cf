package tape_test

import (
	"testing"

	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

func TestScratchConformance(t *testing.T) {
	tierstest.Run(t, func(t *testing.T) tiers.Backend {
		s, err := tape.NewScratch(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
