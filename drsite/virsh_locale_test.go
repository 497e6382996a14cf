package drsite

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVirshRunsUntranslated: the session compares what virsh prints
// ("running", "Active:", "error:") with English text, so virsh runs with
// LC_ALL=C whatever the DR host's locale, in the session and in the
// generated bringup.sh.
func TestVirshRunsUntranslated(t *testing.T) {
	bin := t.TempDir()
	// A stand-in virsh that answers every command with its LC_ALL.
	script := "#!/bin/sh\nwhile IFS= read -r line; do\n  case \"$line\" in\n    echo*) eval \"$line\";;\n    *) echo \"lc=${LC_ALL:-unset}\";;\n  esac\ndone\n"
	if err := os.WriteFile(filepath.Join(bin, "virsh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("LC_ALL", "de_DE.UTF-8")
	v, err := StartVirsh(t.Context(), "test:///default")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	out, err := v.Run(t.Context(), "domstate", "web")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "lc=C" {
		t.Errorf("virsh ran with %q, want lc=C", strings.TrimSpace(out))
	}
}

// TestLibvirtScriptRunsVirshUntranslated: bringup.sh compares virsh's
// domstate with "running"; on a DR host whose locale translates it, the
// script would wait for a VM that runs until boot_timeout and fail.
func TestLibvirtScriptRunsVirshUntranslated(t *testing.T) {
	// A virsh that speaks German unless told LC_ALL=C.
	fake := "#!/bin/sh\nif [ \"$3\" = domstate ]; then if [ \"${LC_ALL:-}\" = C ]; then echo running; else echo 'laufend'; fi; fi\nexit 0\n"
	if out, _, err := runLibvirtScript(t, webPlan(t, "4s"), fake, "LC_ALL=de_DE.UTF-8"); err != nil {
		t.Errorf("bringup.sh under a German locale: %v\n%s", err, out)
	}
}
