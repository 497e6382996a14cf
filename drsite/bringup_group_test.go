package drsite

import (
	"context"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// domainDiskTypes returns the driver types a libvirt domain XML file
// gives its disks, in order.
func domainDiskTypes(t *testing.T, file string) []string {
	t.Helper()
	var d struct {
		Disks []struct {
			Driver struct {
				Type string `xml:"type,attr"`
			} `xml:"driver"`
		} `xml:"devices>disk"`
	}
	x, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(x, &d); err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, dk := range d.Disks {
		s = append(s, dk.Driver.Type)
	}
	return s
}

// TestDefinitionsOfPlacedGroupsKeepTheImageFormat: a disk without a
// format in the inventory takes the one its placed image's header gives.
// A run that restores another group (--group 2, as the runbook's steps
// by hand do) or none (--no-restore) writes every definition again; the
// definition of a group placed by an earlier run must still name the
// image as its header gives, not declare the qcow2 image raw, which
// bringup.sh then defines and starts with the container's bytes as the
// guest's disk.
func TestDefinitionsOfPlacedGroupsKeepTheImageFormat(t *testing.T) {
	needTool(t, "qemu-img")
	p := planFrom(t, `
domain_type: test
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - {name: db, vcpus: 1, memory: 1GiB, boot_priority: 1, disks: [{file: /img/db.img, size: 1MiB}]}
  - {name: app, vcpus: 1, memory: 1GiB, depends_on: [db], disks: [{file: /img/app.qcow2, format: qcow2, size: 1MiB}]}
`)
	if b := p.BlockingIssues(); len(b) > 0 {
		t.Fatalf("blocking: %v", b)
	}
	if p.VM("db").Group != 1 || p.VM("app").Group != 2 {
		t.Fatalf("groups: db %d, app %d", p.VM("db").Group, p.VM("app").Group)
	}
	out := t.TempDir()
	ctx := context.Background()
	res, err := Bringup(ctx, nil, p, BringupOptions{Out: out, NoRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	ho := res.Hosts[0]
	db, app := domainDiskFiles(t, ho.Domains["db"])[0], domainDiskFiles(t, ho.Domains["app"])[0]
	// Images as the runs of --group 1 and --group 2 place them: db's
	// image is a qcow2 (its header says so).
	os.MkdirAll(filepath.Dir(db), 0o755)
	os.MkdirAll(filepath.Dir(app), 0o755)
	for f, from := range map[string]string{db: "/img/db.img", app: "/img/app.qcow2"} {
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", f, "1M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
		if err := writeImageSource(f, imageSource{Snapshot: "0123abcd", Path: from}); err != nil {
			t.Fatal(err)
		}
	}
	p.VM("db").Data = &VMData{Snapshot: "0123abcd", Disks: []DiskData{{File: "/img/db.img", Path: "/img/db.img", Size: 1 << 20}}}
	p.VM("app").Data = &VMData{Snapshot: "0123abcd", Disks: []DiskData{{File: "/img/app.qcow2", Path: "/img/app.qcow2", Size: 1 << 20}}}
	for _, o := range []BringupOptions{{Out: out, Groups: []int{1}}, {Out: out, Groups: []int{2}}, {Out: out, NoRestore: true}} {
		res, err := Bringup(ctx, nil, p, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := domainDiskTypes(t, res.Hosts[0].Domains["db"]); len(got) != 1 || got[0] != "qcow2" {
			t.Errorf("groups %v, no restore %v: db's qcow2 image is defined as %q", o.Groups, o.NoRestore, got)
		}
	}
}

// TestExecuteStartsADefinedInactiveNetwork: a DR network defined on
// the host but not running (defined by an earlier run, not started since
// the host rebooted) is started before the VMs that use it, not taken
// as active because virsh net-info says "Persistent: yes".
func TestExecuteStartsADefinedInactiveNetwork(t *testing.T) {
	needTool(t, "virsh")
	ctx := context.Background()
	f := filepath.Join(t.TempDir(), "dr-lan.xml")
	x, err := NetworkXML(&Switch{Name: "dr-lan", Type: SwitchPrivate, Mode: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, x, 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := StartVirsh(ctx, "test:///default")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Run(ctx, "net-define", f); err != nil {
		t.Fatal(err)
	}
	if err := ensureNetwork(ctx, v, "dr-lan", f); err != nil {
		t.Fatal(err)
	}
	info, err := v.Run(ctx, "net-info", "dr-lan")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Active:\s+yes$`).MatchString(info) {
		t.Errorf("dr-lan was defined and inactive; after ensureNetwork:\n%s", info)
	}
}

// TestHyperVDynamicMemoryOnLibvirt: a Hyper-V VM with dynamic memory
// at Hyper-V's default maximum (1 TiB) is placed by its startup memory.
// On a libvirt DR host the domain must not get that maximum as its
// memory: qemu cannot set up 1 TiB of guest memory on a 64 GiB host
// ("cannot set up guest memory 'pc.ram': Cannot allocate memory"), and a
// Windows guest without a balloon driver would use all of it.
func TestHyperVDynamicMemoryOnLibvirt(t *testing.T) {
	doc := hyperVDoc(`[{"Name":"app01","Generation":2,"ProcessorCount":2,
		"Memory":{"Startup":4294967296,"DynamicMemoryEnabled":true,"Minimum":536870912,"Maximum":1099511627776},
		"HardDrives":[{"Path":"D:\\app01.vhdx","ControllerType":1,"VhdFormat":3,"Size":1073741824}]}]`)
	inv, err := Import("hv01.json", doc, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig("drsite.yaml", []byte("drsite:\n  domain_type: test\n  hosts:\n    - {name: dr-kvm, kind: libvirt, vcpus: 16, memory: 64GiB, storage: 1TiB}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := MakePlan(PlanInput{Config: cfg, Inventory: inv})
	if b := p.BlockingIssues(); len(b) > 0 {
		t.Fatalf("blocking: %v", b)
	}
	res, err := Bringup(context.Background(), nil, p, BringupOptions{Out: t.TempDir(), NoRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Memory int64 `xml:"memory"`
	}
	x, err := os.ReadFile(res.Hosts[0].Domains["app01"])
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(x, &d); err != nil {
		t.Fatal(err)
	}
	if got, placed := d.Memory<<10, p.VM("app01").MemoryBytes; got > placed {
		t.Errorf("the domain gets %s of memory; the plan placed it with %s on a host of 64 GiB", HumanBytes(got), HumanBytes(placed))
	}
}

// TestLibvirtScriptWaitsAtMostTheBootTimeout: bringup.sh waits for each
// VM to run and for its checks, as --execute does, but no longer than
// drsite.boot_timeout: a VM that stops at once (a disk it cannot boot
// from) fails the script with the VM named, instead of the script
// waiting for ever without a word.
func TestLibvirtScriptWaitsAtMostTheBootTimeout(t *testing.T) {
	// The domain starts and is shut off again at once.
	out, timedOut, err := runLibvirtScript(t, webPlan(t, "2s"), "#!/bin/sh\n[ \"$3\" = domstate ] && echo 'shut off'\nexit 0\n")
	if timedOut {
		t.Fatalf("bringup.sh still waits after 30s for a VM that does not run (boot_timeout 2s):\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "web") {
		t.Errorf("bringup.sh: %v, output %q; want a failure naming web", err, out)
	}
}

// webPlan is a plan of one VM, web, on one libvirt DR host, with the
// boot_timeout given.
func webPlan(t *testing.T, bootTimeout string) *Plan {
	t.Helper()
	return planFrom(t, `
domain_type: test
boot_timeout: `+bootTimeout+`
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - {name: web, vcpus: 1, memory: 1GiB, disks: [{file: /img/web.qcow2, format: qcow2, size: 1GiB}]}
`)
}

// runLibvirtScript writes p's bring-up without restoring anything and
// runs its bringup.sh with /bin/sh, the shell script fakeVirsh as virsh
// and env added, for at most 30 s.
func runLibvirtScript(t *testing.T, p *Plan, fakeVirsh string, env ...string) (out []byte, timedOut bool, err error) {
	t.Helper()
	dir := t.TempDir()
	res, err := Bringup(context.Background(), nil, p, BringupOptions{Out: filepath.Join(dir, "out"), NoRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	if err := os.WriteFile(filepath.Join(bin, "virsh"), []byte(fakeVirsh), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, needTool(t, "sh"), res.Hosts[0].Script)
	cmd.Env = append(append(os.Environ(), "PATH="+bin+":/usr/bin:/bin"), env...)
	out, err = cmd.CombinedOutput()
	return out, ctx.Err() != nil, err
}
