package drsite

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
			// Run in the operator's session, to take a PSCredential.
			if _, arg, ok = strings.Cut(c, "; & "); !ok {
				continue
			}
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

// examplePlan plans the shipped example DR site (configs/drsite.yaml)
// for the hand-written inventory of hv02 (testdata/yaml/hv02.yaml).
func examplePlan(t *testing.T) *Plan {
	t.Helper()
	b, err := os.ReadFile("../configs/drsite.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig("configs/drsite.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	inv := mustImport(t, "yaml/hv02.yaml", "")
	return MakePlan(PlanInput{Config: cfg, Inventory: inv, Now: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)})
}

// TestRunbookReIPBeforeServiceChecks: a libvirt guest keeps its
// primary-site address until the operator re-addresses it, so the
// runbook's service check at the DR address can only pass after the
// re-IP it gives: followed top to bottom, the re-IP comes first.
func TestRunbookReIPBeforeServiceChecks(t *testing.T) {
	p := examplePlan(t)
	v := p.VM("dns01")
	if v.Blocked || v.Group == 0 || v.DRKind != KindLibvirt {
		t.Fatalf("dns01: blocked %v, group %d, on %s (%s); issues %v", v.Blocked, v.Group, v.DRHost, v.DRKind, p.Issues)
	}
	rb := BuildRunbook(p, RunbookOptions{})
	steps := rb.Groups[v.Group-1].Steps
	verify := steps[len(steps)-1].Commands
	reip, check := -1, -1
	for i, c := range verify {
		switch {
		case reip < 0 && strings.Contains(c, "re-IP inside the guest") && strings.HasPrefix(c, "# dns01:"):
			reip = i
		case check < 0 && strings.HasPrefix(c, "nc -z -w 3 10.50.10.53 53"):
			check = i
		}
	}
	if reip < 0 || check < 0 {
		t.Fatalf("no re-IP (%d) or service check (%d) of dns01 in:\n%s", reip, check, strings.Join(verify, "\n"))
	}
	if check < reip {
		t.Errorf("the service check at the DR address comes before the re-IP that gives the guest that address:\n%s", strings.Join(verify, "\n"))
	}
}

// TestRunbookGuestCredentialReachesScript: bringup.ps1 -GuestCredential
// takes the PSCredential Get-Credential returns. A new powershell process
// (powershell -File) receives its arguments as text: the credential would
// arrive as the string "System.Management.Automation.PSCredential", taken
// as a user name, and every guest's re-IP through PowerShell Direct would
// fail. The runbook's commands that pass it run the script in the
// operator's own PowerShell session.
func TestRunbookGuestCredentialReachesScript(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, "vms:\n"+vmYAML("db", 1, "1GiB", "1GiB", ""))
	if bi := p.BlockingIssues(); len(bi) > 0 {
		t.Fatalf("blocking: %v", bi)
	}
	rb := BuildRunbook(p, RunbookOptions{BringupDir: "/srv/dr"})
	cmds := append([]string(nil), rb.QuickStart...)
	for _, g := range rb.Groups {
		for _, st := range g.Steps {
			cmds = append(cmds, st.Commands...)
		}
	}
	n := 0
	for _, c := range cmds {
		code, _, _ := strings.Cut(c, "#")
		if !strings.Contains(code, "-GuestCredential") {
			continue
		}
		n++
		if strings.Contains(code, "-File ") || !strings.Contains(code, "& ") {
			t.Errorf("the credential does not reach bringup.ps1 as a PSCredential (the script must run in this session, with &): %s", c)
		}
	}
	if n != 2 {
		t.Errorf("%d commands pass -GuestCredential, want 2 (quick path, start)", n)
	}
}

// TestRunbookHyperVImagesCopiedToImageDir: bringup restores a Hyper-V
// host's images under OUT/HOST/images, and bringup.ps1 attaches them from
// its -ImageRoot, the host's image_dir when set. Run by hand before the
// images are there, it creates the VM and stops at Add-VMHardDiskDrive; run
// again, it leaves the VM "as it is" and -Start boots it without its disks.
// The runbook says where the group's images are and where to copy them
// before the step that creates the VMs.
func TestRunbookHyperVImagesCopiedToImageDir(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB, image_dir: 'D:\DR\VMs'}
`, "vms:\n"+vmYAML("app", 1, "1GiB", "1GiB", "")+vmYAML("db", 1, "1GiB", "1GiB", ""))
	if bi := p.BlockingIssues(); len(bi) > 0 {
		t.Fatalf("blocking: %v", bi)
	}
	rb := BuildRunbook(p, RunbookOptions{BringupDir: "/srv/dr"})
	restore, define := rb.Groups[0].Steps[0], rb.Groups[0].Steps[1]
	if strings.Contains(restore.Expect, "image_dir") && !strings.Contains(restore.Expect, "libvirt") {
		t.Errorf("the restore step says the images go to the host's image_dir, where bringup does not put a Hyper-V host's: %s", restore.Expect)
	}
	copyAt, createAt := -1, -1
	for i, c := range define.Commands {
		if copyAt < 0 && strings.Contains(c, "/srv/dr/dr-hv/images/db") && strings.Contains(c, `D:\DR\VMs\db`) {
			copyAt = i
		}
		if createAt < 0 && !strings.HasPrefix(c, "#") && strings.Contains(c, "bringup.ps1") {
			createAt = i
		}
	}
	if copyAt < 0 || createAt < 0 || copyAt > createAt {
		t.Errorf("the define step does not copy db's images from /srv/dr/dr-hv/images/db to D:\\DR\\VMs\\db before bringup.ps1 creates it:\n%s", strings.Join(define.Commands, "\n"))
	}
}

// TestRunbookNetworkStartsWhenDefinedBefore: a bring-up resumed by hand
// finds its DR networks defined already, perhaps not started (a host
// rebooted, the earlier run stopped between the two). Pasted line by
// line, the runbook's define step must still start each network: the
// define fails as the network exists, and the start may not hang on it.
func TestRunbookNetworkStartsWhenDefinedBefore(t *testing.T) {
	p := examplePlan(t)
	dir := t.TempDir()
	bin, state := filepath.Join(dir, "bin"), filepath.Join(dir, "state")
	os.MkdirAll(bin, 0o755)
	os.MkdirAll(state, 0o755)
	virsh := `#!/bin/sh
shift 2 # -c URI
case "$1" in
net-define) n=$(basename "$2" .xml)
  if [ -e "` + state + `/net-$n" ]; then echo "error: network '$n' already exists" >&2; exit 1; fi
  echo defined > "` + state + `/net-$n" ;;
net-start) if [ ! -e "` + state + `/net-$2" ]; then echo "error: network not found" >&2; exit 1; fi
  if grep -q active "` + state + `/net-$2"; then echo "error: network is already active" >&2; exit 1; fi
  echo active > "` + state + `/net-$2" ;;
esac
exit 0
`
	if err := os.WriteFile(filepath.Join(bin, "virsh"), []byte(virsh), 0o755); err != nil {
		t.Fatal(err)
	}
	rb := BuildRunbook(p, RunbookOptions{BringupDir: filepath.Join(dir, "out")})
	nets := 0
	for _, g := range rb.Groups {
		for _, s := range g.Steps[1:] {
			for _, c := range s.Commands {
				f := strings.Fields(c)
				if len(f) < 5 || f[0] != "virsh" || f[3] != "net-define" {
					continue
				}
				n := strings.TrimSuffix(filepath.Base(strings.Trim(f[4], "'")), ".xml")
				if err := os.WriteFile(filepath.Join(state, "net-"+n), []byte("defined\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				nets++
			}
			for _, c := range s.Commands { // one at a time, as pasted
				script := filepath.Join(dir, "line.sh")
				os.WriteFile(script, []byte(c+"\n"), 0o644)
				_ = runScript(t, bin, script)
			}
		}
	}
	if nets == 0 {
		t.Fatal("the example plan's runbook defines no network")
	}
	ents, _ := os.ReadDir(state)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(state, e.Name()))
		if !strings.Contains(string(b), "active") {
			t.Errorf("%s defined before the runbook ran is not started by it", strings.TrimPrefix(e.Name(), "net-"))
		}
	}
}

// TestRunbookHyperVChecksArePowerShell: the verify step of a Hyper-V
// group runs in PowerShell (Get-VM), so its reachability and service
// checks are PowerShell too (Test-Connection, Test-NetConnection), not
// ping -c and nc, which PowerShell on Windows does not have.
func TestRunbookHyperVChecksArePowerShell(t *testing.T) {
	b, err := os.ReadFile("../configs/drsite.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig("configs/drsite.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	var hv []DRHost
	for _, h := range cfg.Hosts {
		if h.Kind == KindHyperV {
			hv = append(hv, h)
		}
	}
	if len(hv) == 0 {
		t.Fatal("configs/drsite.yaml has no Hyper-V host")
	}
	cfg.Hosts = hv
	p := MakePlan(PlanInput{Config: cfg, Inventory: mustImport(t, "yaml/hv02.yaml", ""), Now: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)})
	rb := BuildRunbook(p, RunbookOptions{})
	ps := 0
	for _, g := range rb.Groups {
		for _, st := range g.Steps {
			for _, c := range st.Commands {
				code, _, _ := strings.Cut(c, "#")
				if strings.HasPrefix(code, "ping ") || strings.HasPrefix(code, "nc ") {
					t.Errorf("group %d, %s: %q in a Hyper-V runbook", g.Number, st.Title, c)
				}
				if strings.HasPrefix(code, "Test-Connection ") || strings.HasPrefix(code, "Test-NetConnection ") {
					ps++
				}
			}
		}
	}
	if ps == 0 {
		t.Errorf("no PowerShell check in the runbook of a Hyper-V site; issues %v", p.Issues)
	}
}
