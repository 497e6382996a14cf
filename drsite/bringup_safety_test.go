package drsite

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fakeVirshBin writes stand-ins for virsh and nc that behave like the
// real ones as far as bringup.sh uses them (a started domain stays
// running; starting it again fails, as libvirt does), and a "pwned"
// command that leaves a marker when anything runs it.
func fakeVirshBin(t *testing.T, dir string) (bin, marker, state string) {
	t.Helper()
	bin, state = filepath.Join(dir, "bin"), filepath.Join(dir, "state")
	marker = filepath.Join(dir, "PWNED")
	os.MkdirAll(bin, 0o755)
	os.MkdirAll(state, 0o755)
	scripts := map[string]string{
		"virsh": `#!/bin/sh
shift 2 # -c URI
case "$1" in
start) if [ -e "` + state + `/$2" ]; then echo "error: Requested operation is not valid: domain is already running" >&2; exit 1; fi
       echo running > "` + state + `/$2" ;;
domstate) if [ -e "` + state + `/$2" ]; then echo running; else echo "shut off"; fi ;;
esac
exit 0
`,
		"nc":    "#!/bin/sh\nexit 0\n",
		"pwned": "#!/bin/sh\ntouch " + marker + "\n",
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin, marker, state
}

func runScript(t *testing.T, bin, script string) error {
	t.Helper()
	cmd := exec.Command(needTool(t, "sh"), script)
	cmd.Env = append(os.Environ(), "PATH="+bin+":/usr/bin:/bin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return errors.New(err.Error() + ": " + string(out))
	}
	return nil
}

// TestLibvirtScriptQuoting: VM names and checks come from the
// inventory, i.e. from the primary site. A newline in them must not turn
// into a command of the bringup.sh the operator runs as root at the DR
// site. (A VM name with a line break is refused at import: see
// TestVMNamesThatLeaveTheirFolder.)
func TestLibvirtScriptQuoting(t *testing.T) {
	p := planFrom(t, `
domain_type: test
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - name: "web;pwned #"
    vcpus: 1
    memory: 1GiB
    disks: [{file: /img/web.qcow2, format: qcow2, size: 1GiB}]
    verify: ["tcp:10.0.0.5:22\npwned", "tcp:10.0.0.5:22 # x\npwned"]
`)
	if b := p.BlockingIssues(); len(b) > 0 {
		t.Fatalf("blocking: %v", b)
	}
	dir := t.TempDir()
	res, err := Bringup(context.Background(), nil, p, BringupOptions{Out: filepath.Join(dir, "out"), NoRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	bin, marker, _ := fakeVirshBin(t, dir)
	if err := runScript(t, bin, res.Hosts[0].Script); err != nil {
		t.Fatalf("bringup.sh: %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		s, _ := os.ReadFile(res.Hosts[0].Script)
		t.Fatalf("bringup.sh ran a command smuggled in through the inventory:\n%s", s)
	}
	for _, s := range []string{"a\nb", "a\rb", "x", "it's", "$(id)", ""} {
		out, err := exec.Command("sh", "-c", "printf %s "+shq(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("shq(%q) = %s reads back as %q (%v)", s, shq(s), out, err)
		}
	}
}

// TestLibvirtBringupRerun: bringup's help and its hint say to run it
// again after resolving issues (placed images are kept). A VM started by
// the first run is running then; the second run must not fail on it, with
// --execute nor through bringup.sh.
func TestLibvirtBringupRerun(t *testing.T) {
	virsh := needTool(t, "virsh")
	_ = virsh
	p := planFrom(t, `
domain_type: test
virsh_uri: test:///default
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - {name: dc01, vcpus: 1, memory: 1GiB, boot_priority: 1, disks: [{file: /img/dc01.qcow2, format: qcow2, size: 1GiB}]}
  - {name: app01, vcpus: 1, memory: 1GiB, depends_on: [dc01], disks: [{file: /img/app01.qcow2, format: qcow2, size: 1GiB}]}
`)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	ctx := context.Background()
	o := BringupOptions{Out: out, NoRestore: true, Execute: true, CheckInterval: 10 * time.Millisecond}
	if _, err := Bringup(ctx, nil, p, o); err != nil {
		t.Fatalf("first run: %v", err)
	}
	// test:///default forgets its domains with the connection: the
	// second run's session starts with dc01 running, as a real host
	// would still have it.
	o.StartVirsh = func(ctx context.Context, uri string) (*Virsh, error) {
		v, err := StartVirsh(ctx, uri)
		if err != nil {
			return nil, err
		}
		if _, err := v.Run(ctx, "define", filepath.Join(out, "dr-kvm", "domains", "dc01.xml")); err != nil {
			return nil, err
		}
		if _, err := v.Run(ctx, "start", "dc01"); err != nil {
			return nil, err
		}
		return v, nil
	}
	res, err := Bringup(ctx, nil, p, o)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if strings.Join(res.Started, ",") != "app01" && strings.Join(res.Started, ",") != "dc01,app01" {
		t.Errorf("second run started %v", res.Started)
	}
	// The same through the script.
	bin, _, _ := fakeVirshBin(t, dir)
	script := res.Hosts[0].Script
	if err := runScript(t, bin, script); err != nil {
		t.Fatalf("bringup.sh, first run: %v", err)
	}
	if err := runScript(t, bin, script); err != nil {
		t.Fatalf("bringup.sh, second run: %v", err)
	}
}

// TestSameDiskFileNames: a VM whose disks have the same file name
// in different directories (data.qcow2 on two volumes) must get two
// images at the DR site, not one image written twice.
func TestSameDiskFileNames(t *testing.T) {
	for _, kind := range []string{KindLibvirt, KindHyperV} {
		t.Run(kind, func(t *testing.T) {
			p := planFrom(t, `
domain_type: test
hosts:
  - {name: dr1, kind: `+kind+`, vcpus: 8, memory: 16GiB, storage: 1TiB}
`, `vms:
  - name: sql01
    vcpus: 2
    memory: 4GiB
    generation: 2
    disks:
      - {file: 'D:\VMs\sql01\disk.vhdx', format: vhdx, size: 10GiB, controller: scsi, unit: 0}
      - {file: 'E:\Data\sql01\disk.vhdx', format: vhdx, size: 10GiB, controller: scsi, unit: 1}
      - {file: 'E:\Logs\sql01\DISK.vhdx', format: vhdx, size: 10GiB, controller: scsi, unit: 2}
`)
			res, err := Bringup(context.Background(), nil, p, BringupOptions{Out: t.TempDir(), NoRestore: true})
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			if kind == KindLibvirt {
				files = domainDiskFiles(t, res.Hosts[0].Domains["sql01"])
			} else {
				s, _ := os.ReadFile(res.Hosts[0].Script)
				for _, l := range strings.Split(string(s), "\r\n") {
					if _, path, ok := strings.Cut(l, "Add-VMHardDiskDrive -VMName 'sql01'"); ok {
						files = append(files, path[strings.Index(path, "-Path"):])
					}
				}
			}
			if len(files) != 3 {
				t.Fatalf("disks %q", files)
			}
			seen := map[string]bool{}
			for _, f := range files {
				if seen[strings.ToLower(f)] {
					t.Errorf("two disks of sql01 share the DR image %s: %q", f, files)
				}
				seen[strings.ToLower(f)] = true
			}
		})
	}
}

// psSingleQuoted reads a PowerShell single-quoted string literal at the
// start of s the way PowerShell's tokenizer does (CharTraits.IsSingleQuote:
// ' U+2018 U+2019 U+201A U+201B all open and close it; two in a row stand
// for the second) and returns its value and what follows it.
func psSingleQuoted(s string) (val, rest string, ok bool) {
	isQ := func(r rune) bool { return strings.ContainsRune("'\u2018\u2019\u201a\u201b", r) }
	rs := []rune(s)
	if len(rs) == 0 || !isQ(rs[0]) {
		return "", s, false
	}
	var b strings.Builder
	for i := 1; i < len(rs); i++ {
		if isQ(rs[i]) {
			if i+1 < len(rs) && isQ(rs[i+1]) {
				i++
				b.WriteRune(rs[i])
				continue
			}
			return b.String(), string(rs[i+1:]), true
		}
		b.WriteRune(rs[i])
	}
	return "", "", false
}

// TestPowerShellQuoting: names and notes with typographic quotes
// (Hyper-V notes typed in Word or Outlook: "Don’t shut down") and names
// with line breaks must not break out of the quoting or comments of
// bringup.ps1. PowerShell parses the whole script before it runs any of
// it, so one broken string stops the whole DR bring-up.
func TestPowerShellQuoting(t *testing.T) {
	for _, s := range []string{"it's", "Don\u2019t shut down", "\u2018x\u2019", "a\u201a\u201bb", "''", ""} {
		if v, rest, ok := psSingleQuoted(psq(s)); !ok || v != s || rest != "" {
			t.Errorf("psq(%q) = %s reads back as %q + %q (ok %v)", s, psq(s), v, rest, ok)
		}
	}
	vm := &VM{Name: "DC01\nRemove-Item -Recurse C:\\ #> Stop-Computer <#", VCPUs: 1, Generation: 2, Memory: Memory{StartupBytes: 1 << 30},
		Notes: "Don\u2019t shut down", Verify: []string{"by hand: Don\u2019t Stop-Computer"}}
	s := string(HyperVScript(&DRHost{Name: "dr-hv1", Kind: KindHyperV}, nil, []GroupVMs{{Number: 1, VMs: []*VM{vm}}}, 10*time.Minute, time.Unix(0, 0)))
	code := psCode(t, s)
	for _, bad := range []string{"Remove-Item", "Stop-Computer", "shut down"} {
		if strings.Contains(code, bad) {
			t.Errorf("%q from the inventory is PowerShell code in bringup.ps1 (outside strings and comments):\n%s", bad, code)
		}
	}
}

// psCode returns a PowerShell script with its comments and string
// literals removed: what PowerShell runs as code.
func psCode(t *testing.T, s string) string {
	t.Helper()
	var b strings.Builder
	for len(s) > 0 {
		r := []rune(s)[0]
		switch {
		case strings.HasPrefix(s, "<#"):
			i := strings.Index(s, "#>")
			if i < 0 {
				t.Fatalf("unterminated block comment")
			}
			s = s[i+2:]
		case r == '#':
			i := strings.IndexAny(s, "\r\n")
			if i < 0 {
				i = len(s)
			}
			s = s[i:]
		case strings.ContainsRune("'\u2018\u2019\u201a\u201b", r):
			_, rest, ok := psSingleQuoted(s)
			if !ok {
				t.Fatalf("unterminated string at %.40q", s)
			}
			s = rest
			b.WriteString("''")
		case r == '"':
			i := 1
			for i < len(s) && s[i] != '"' {
				if s[i] == '`' {
					i++
				}
				i++
			}
			s = s[min(i+1, len(s)):]
			b.WriteString(`""`)
		default:
			b.WriteRune(r)
			s = s[len(string(r)):]
		}
	}
	return b.String()
}

// TestStorageOverflow: disk sizes are added up for placement; huge
// sizes must not wrap around to a negative need that fits any host.
func TestStorageOverflow(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr1, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 100GiB}
`, `vms:
  - name: big
    vcpus: 1
    memory: 1GiB
    disks:
      - {file: /img/a.qcow2, format: qcow2, size: 4096PiB}
      - {file: /img/b.qcow2, format: qcow2, size: 4096PiB}
`)
	if v := p.VM("big"); v.DRHost != "" || v.StorageBytes <= 0 {
		t.Errorf("big (two 4096 PiB disks) placed on %q with storage need %d", v.DRHost, v.StorageBytes)
	}
	if len(issuesOf(p, IssueCapacity)) == 0 {
		t.Errorf("no capacity issue: %v", p.Issues)
	}
}

// TestRunbookGatewayFamily: the runbook's re-IP commands for an
// IPv6 address must use the IPv6 gateway (New-NetIPAddress and ip route
// refuse a gateway of the other family).
func TestRunbookGatewayFamily(t *testing.T) {
	p := planFrom(t, `
hosts:
  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}
networks:
  - {name: dr-lan, type: external, bridge: br0}
network_map:
  - {from: {switch: lan}, to: {network: dr-lan}}
reip:
  - {from: 10.0.10.0/24, to: 10.50.10.0/24, gateway: 10.50.10.1}
  - {from: 'fd00:10::/64', to: 'fd00:50::/64', gateway: 'fd00:50::1'}
`, `vms:
  - name: web
    vcpus: 1
    memory: 1GiB
    disks: [{file: /img/web.qcow2, format: qcow2, size: 1GiB}]
    nics: [{mac: '52:54:00:00:00:01', switch: lan, ipv4: [10.0.10.5/24], ipv6: ['fd00:10::5/64'], gateway4: 10.0.10.1, gateway6: 'fd00:10::1'}]
`)
	if b := p.BlockingIssues(); len(b) > 0 {
		t.Fatalf("blocking: %v", b)
	}
	rb := BuildRunbook(p, RunbookOptions{})
	found := 0
	for _, g := range rb.Groups {
		for _, s := range g.Steps {
			for _, c := range s.Commands {
				if strings.Contains(c, "fd00:50::5") && (strings.Contains(c, "ip addr replace") || strings.Contains(c, "New-NetIPAddress")) {
					found++
					if !strings.Contains(c, "fd00:50::1") || strings.Contains(c, "10.50.10.1") {
						t.Errorf("IPv6 re-IP command with the wrong gateway: %s", c)
					}
				}
			}
		}
	}
	if found != 2 {
		t.Errorf("found %d IPv6 re-IP commands, want 2 (Linux and Windows)", found)
	}
}

// TestVMNamesThatLeaveTheirFolder: a VM's name names its files at the DR
// site (domains/NAME.xml, images/NAME/), written by bringup as root. A
// name from a compromised source host that holds a path separator, a
// line break or is a dot-name is refused, at import and when decoded from
// a snapshot; a disk file name that is a dot-name gets a plain one.
func TestVMNamesThatLeaveTheirFolder(t *testing.T) {
	for _, name := range []string{"../../etc/cron.d/x", "a/b", `a\b`, "..", ".", "web\npwned"} {
		y := fmt.Sprintf("vms:\n  - name: %q\n    vcpus: 1\n    memory: 1GiB\n", name)
		if _, err := Import("inv.yaml", []byte(y), ImportOptions{Host: "hv01"}); err == nil || !strings.Contains(err.Error(), "rename the VM") {
			t.Errorf("import of VM %q: %v, want refused", name, err)
		}
		inv := &Inventory{Format: InventoryFormat, Version: InventoryVersion, VMs: []VM{{Name: name, VCPUs: 1}}}
		b, err := json.Marshal(inv)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeInventory(b); err == nil {
			t.Errorf("decoding an inventory with VM %q: no error", name)
		}
	}
	if _, err := Import("inv.yaml", []byte("vms:\n  - {name: 'sql 01 (prod)', vcpus: 1, memory: 1GiB}\n"), ImportOptions{Host: "hv01"}); err != nil {
		t.Errorf("an ordinary VM name: %v", err)
	}
	for _, f := range []string{"/img/..", `C:\VMs\..`, "/"} {
		if b := winBaseOrUnix(f); b != "disk" {
			t.Errorf("image name of disk file %q: %q", f, b)
		}
	}
}

// TestDetectImageFormatBackingIsRaw: bringup restores disks flattened, so
// a restored image that names a backing file was a raw disk whose guest
// wrote an image header; declaring it qcow2 would make the DR hypervisor
// open the DR host file the header names. It is raw.
func TestDetectImageFormatBackingIsRaw(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not installed: run 'make deps' (package qemu-utils)")
	}
	dir := t.TempDir()
	plain, over := filepath.Join(dir, "plain.img"), filepath.Join(dir, "over.img")
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", plain, "4M"},
		{"create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", over, "4M"},
	} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
		}
	}
	if f := detectImageFormat(plain); f != "qcow2" {
		t.Errorf("a qcow2 without backing file detected as %q", f)
	}
	if f := detectImageFormat(over); f != "raw" {
		t.Errorf("a restored disk whose header names a backing file detected as %q, want raw", f)
	}
}

// TestHyperVDiskSlots: a libvirt VM's virtio disks all read as controller
// 0, location 0; on a Hyper-V DR host each must get its own slot, a
// generation 1 VM its boot disk and DVD drive on IDE (it boots only from
// IDE), and SCSI controllers beyond the first must be added.
func TestHyperVDiskSlots(t *testing.T) {
	for _, c := range []struct {
		name, vm string
		want     []string
	}{
		{"libvirt virtio disks, BIOS", `  - name: kvm1
    vcpus: 1
    memory: 1GiB
    disks:
      - {file: /img/data.qcow2, format: qcow2, size: 1GiB, controller: virtio}
      - {file: /img/root.qcow2, format: qcow2, size: 1GiB, controller: virtio, boot_order: 1}
      - {file: /img/logs.qcow2, format: qcow2, size: 1GiB, controller: virtio}
      - {file: /img/tools.iso, format: raw, device: cdrom, controller: sata}
`, []string{"HardDisk SCSI 0 0 data", "HardDisk IDE 0 0 root", "HardDisk SCSI 0 1 logs", "Dvd IDE 0 1 tools"}},
		{"Hyper-V generation 2 with a second SCSI controller", `  - name: hv2
    vcpus: 1
    memory: 1GiB
    generation: 2
    disks:
      - {file: 'C:\VMs\os.vhdx', format: vhdx, size: 1GiB, controller: scsi, boot_order: 1}
      - {file: 'C:\VMs\db.vhdx', format: vhdx, size: 1GiB, controller: scsi, controller_index: 1, unit: 0}
`, []string{"HardDisk SCSI 0 0 os", "HardDisk SCSI 1 0 db"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, s := hyperVDiskSlots(t, c.vm)
			if strings.Join(got, "; ") != strings.Join(c.want, "; ") {
				t.Errorf("disk slots %q, want %q", got, c.want)
			}
			scsi := strings.Contains(s, "Add-VMScsiController")
			if want := strings.Contains(strings.Join(c.want, " "), "SCSI"); scsi != want {
				t.Errorf("SCSI controllers added: %v, want %v:\n%s", scsi, want, s)
			}
		})
	}
}

// TestHyperVRefusesWindowsInvalidVMNames: a VM's name names its folder
// on a Hyper-V DR host; "web:1" (fine on libvirt) would name an NTFS
// stream there. The plan blocks such a VM on a Hyper-V host only.
func TestHyperVRefusesWindowsInvalidVMNames(t *testing.T) {
	inv := "vms:\n  - {name: 'web:1', vcpus: 1, memory: 1GiB, generation: 2, disks: [{file: 'C:\\VMs\\web.vhdx', format: vhdx, size: 1GiB, controller: scsi}]}\n"
	p := planFrom(t, "hosts:\n  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}\n", inv)
	if v := p.VM("web:1"); !v.Blocked || len(p.BlockingIssues()) != 1 || !strings.Contains(p.BlockingIssues()[0].Message, "Windows does not allow") {
		t.Errorf("web:1 on Hyper-V: blocked %v, issues %v", v.Blocked, p.BlockingIssues())
	}
	p = planFrom(t, "hosts:\n  - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 1TiB}\n", inv)
	if v := p.VM("web:1"); v.Blocked {
		t.Errorf("web:1 on libvirt blocked: %v", p.BlockingIssues())
	}
}

// domainDiskFiles returns the disk image paths a libvirt domain XML file
// attaches, in order.
func domainDiskFiles(t *testing.T, file string) []string {
	t.Helper()
	var d struct {
		Disks []struct {
			Source struct {
				File string `xml:"file,attr"`
			} `xml:"source"`
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
		s = append(s, dk.Source.File)
	}
	return s
}

// hyperVDiskSlots brings up the VMs of inventory YAML vms (the list's
// entries) on one Hyper-V DR host and returns the disk attachments of
// bringup.ps1 ("HardDisk SCSI 0 1 data": kind, controller type, number,
// location, image name) and the script.
func hyperVDiskSlots(t *testing.T, vms string) ([]string, string) {
	t.Helper()
	p := planFrom(t, "hosts:\n  - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 16GiB, storage: 1TiB}\n", "vms:\n"+vms)
	res, err := Bringup(context.Background(), nil, p, BringupOptions{Out: t.TempDir(), NoRestore: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.ReadFile(res.Hosts[0].Script)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`Add-VM(HardDisk|Dvd)Drive -VMName '[^']*' -ControllerType (\w+) -ControllerNumber (\d+) -ControllerLocation (\d+) -Path \(Join-Path \$ImageRoot '[^']*\\(\w+)\.\w+'\)`)
	var got []string
	for _, m := range re.FindAllStringSubmatch(string(s), -1) {
		got = append(got, strings.Join(m[1:], " "))
	}
	return got, string(s)
}
