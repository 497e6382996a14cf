package tape_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/tape"
)

// TestPlanRestoreSetWithoutTapes: a set whose write stopped before its
// first tape was finished has a manifest and no tape. Restoring a
// snapshot only it lists says so and points to an earlier set, instead of
// "none of the 0 tapes ... is in the library: ; import them".
func TestPlanRestoreSetWithoutTapes(t *testing.T) {
	ref := tape.SnapshotRef{Set: &tape.SetInfo{ID: "0123456789abcdef0123456789abcdef"}, Manifest: &tape.Manifest{}}
	_, err := tape.PlanRestore(nil, ref, func(string) bool { return true })
	if !errors.Is(err, tape.ErrMissingTapes) || !strings.Contains(err.Error(), "no tape written") || strings.Contains(err.Error(), "import them") {
		t.Fatalf("plan of a set without tapes: %v", err)
	}
}
