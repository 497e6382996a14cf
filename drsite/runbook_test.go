package drsite

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunbookCommandsQuoting: the runbook's steps are pasted into a
// root shell at the DR site. A check from the inventory (from the
// primary site) that holds a line break or shell syntax must not become
// a command there, as it cannot in bringup.sh (TestLibvirtScriptQuoting).
func TestRunbookCommandsQuoting(t *testing.T) {
	p := planFrom(t, `
domain_type: test
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - name: "web;pwned #"
    vcpus: 1
    memory: 1GiB
    disks: [{file: /img/web.qcow2, format: qcow2, size: 1GiB}]
    verify: ["http ok\npwned", "tcp:$(pwned):80", "tcp:10.0.0.5:22;pwned"]
`)
	if b := p.BlockingIssues(); len(b) > 0 {
		t.Fatalf("blocking: %v", b)
	}
	dir := t.TempDir()
	bin, marker, _ := fakeVirshBin(t, dir)
	rb := BuildRunbook(p, RunbookOptions{BringupDir: filepath.Join(dir, "dr bringup")})
	for _, g := range rb.Groups {
		for _, s := range g.Steps[1:] { // the first runs drpipe
			script := filepath.Join(dir, "step.sh")
			if err := os.WriteFile(script, []byte(strings.Join(s.Commands, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := runScript(t, bin, script); err != nil {
				t.Errorf("group %d, %s: %v", g.Number, s.Title, err)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("group %d, %s: the commands run one smuggled in through the inventory:\n%s", g.Number, s.Title, strings.Join(s.Commands, "\n"))
			}
		}
	}
}

// TestRunbookHyperVScriptPathQuoting: the runbook's Hyper-V commands
// name bringup.ps1 under the bringup directory, which may hold spaces
// ("C:\DR bring-up"): pasted into PowerShell, the path must reach
// powershell -File as one argument, whatever it holds.
func TestRunbookHyperVScriptPathQuoting(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, "vms:\n"+vmYAML("db", 1, "1GiB", "1GiB", ""))
	if bi := p.BlockingIssues(); len(bi) > 0 {
		t.Fatalf("blocking: %v", bi)
	}
	rb := BuildRunbook(p, RunbookOptions{BringupDir: "/srv/DR bring-up $(x)"})
	cmds := rb.QuickStart[1:]
	for _, g := range rb.Groups {
		for _, st := range g.Steps {
			cmds = append(cmds, st.Commands...)
		}
	}
	n := 0
	for _, c := range cmds {
		_, arg, ok := strings.Cut(c, " -File ")
		if !ok {
			continue
		}
		n++
		if v, _, ok := psSingleQuoted(arg); !ok || v != `\srv\DR bring-up $(x)\dr-hv\bringup.ps1` {
			t.Errorf("the script path is not one quoted argument (%q): %s", v, c)
		}
	}
	if n != 3 {
		t.Errorf("%d commands run bringup.ps1, want 3 (quick path, define, start)", n)
	}
}
