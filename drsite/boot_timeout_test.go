package drsite

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestScriptBootTimeoutRoundsUp: a boot_timeout under a second, or not a
// whole number of seconds, waits the next whole second in bringup.sh, not
// 0 (which gave up after one look at a VM that was still starting).
func TestScriptBootTimeoutRoundsUp(t *testing.T) {
	for _, c := range []struct{ timeout, want string }{{"500ms", "TIMEOUT=${DRPIPE_BOOT_TIMEOUT:-1}"}, {"2500ms", "TIMEOUT=${DRPIPE_BOOT_TIMEOUT:-3}"}, {"10m", "TIMEOUT=${DRPIPE_BOOT_TIMEOUT:-600}"}} {
		res, err := Bringup(context.Background(), nil, webPlan(t, c.timeout), BringupOptions{Out: filepath.Join(t.TempDir(), "out"), NoRestore: true})
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(res.Hosts[0].Script)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), c.want) {
			t.Errorf("boot_timeout %s: bringup.sh lacks %q", c.timeout, c.want)
		}
	}
}
