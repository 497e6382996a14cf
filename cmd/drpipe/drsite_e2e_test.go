package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drpipe/drpipe/drsite"
)

// These tests drive drpipe's DR-site bring-up end to end with real
// components: libvirt's test driver through virsh, virt-xml-validate,
// qemu-system-x86_64 (TCG) and headless Chromium.

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/deps.sh (make deps)", tool)
		}
	}
}

// bootSector returns a 512-byte x86 boot sector, assembled here, that
// writes marker to COM1 (port 0x3f8) and halts:
//
//	cli; xor ax,ax; mov ds,ax; cld; mov si,msg; mov dx,0x3f8
//	l: lodsb; test al,al; jz h; out dx,al; jmp l
//	h: hlt; jmp h
func bootSector(marker string) []byte {
	code := []byte{
		0xFA,       // cli
		0x31, 0xC0, // xor ax,ax
		0x8E, 0xD8, // mov ds,ax
		0xFC,             // cld
		0xBE, 0x00, 0x00, // mov si,imm16 (patched below)
		0xBA, 0xF8, 0x03, // mov dx,0x3f8
		0xAC,       // l: lodsb
		0x84, 0xC0, // test al,al
		0x74, 0x03, // jz h
		0xEE,       // out dx,al
		0xEB, 0xF8, // jmp l
		0xF4,       // h: hlt
		0xEB, 0xFD, // jmp h
	}
	msg := 0x7C00 + len(code)
	code[7], code[8] = byte(msg), byte(msg>>8)
	s := make([]byte, 512)
	copy(s, code)
	copy(s[len(code):], marker+"\r\n\x00")
	s[510], s[511] = 0x55, 0xAA
	return s
}

// writeBootImage writes a raw disk image: the boot sector, some data
// further in and a sparse tail.
func writeBootImage(t *testing.T, path, marker string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(bootSector(marker)); err != nil {
		t.Fatal(err)
	}
	rng := newRandSource(7)
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if _, err := f.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// virshDumpXML defines xml in libvirt's test driver and returns the XML
// libvirt writes for it (so inventories are exactly what virsh dumpxml
// produces).
func virshDumpXML(t *testing.T, dir, xml, name string) []byte {
	t.Helper()
	src := filepath.Join(dir, name+"-src.xml")
	os.WriteFile(src, []byte(xml), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := drsite.StartVirsh(ctx, "test:///default")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Run(ctx, "define", src); err != nil {
		t.Fatal(err)
	}
	out, err := v.Run(ctx, "dumpxml", name)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(out + "\n")
}

func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// TestDrsiteBackupInventory: --inventory is parsed by the importers;
// bad input fails the backup with the file and field named and nothing
// written to the repository; good input lands in the snapshot as the
// versioned model.
func TestDrsiteBackupInventory(t *testing.T) {
	e := newEnv(t)
	r := e.initRepo()
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "dc01.qcow2"), []byte("not really a qcow2"), 0o644)
	good, _ := os.ReadFile("../../drsite/testdata/libvirt/dc01.xml")
	bad := bytes.Replace(good, []byte("52:54:00:0a:10:0a'/>"), []byte("52:54:00:0a:10:zz'/>"), 1)
	os.WriteFile(filepath.Join(e.dir, "dc01.xml"), good, 0o644)
	os.WriteFile(filepath.Join(e.dir, "bad.xml"), bad, 0o644)
	before := listFiles(t, r)
	res := e.run("backup", "--repo", r, "--host", "kvm01", "--inventory", filepath.Join(e.dir, "bad.xml"), src)
	if res.code != 2 || !strings.Contains(res.stderr, "bad.xml") || !strings.Contains(res.stderr, "devices/interface[1]/mac/@address") {
		t.Fatalf("bad inventory: exit %d, stderr %q; want exit 2 naming bad.xml and the MAC field", res.code, res.stderr)
	}
	if after := listFiles(t, r); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("a failed inventory wrote to the repository:\nbefore %v\nafter  %v", before, after)
	}
	res = e.run("backup", "--repo", r, "--host", "kvm01", "--inventory", filepath.Join(e.dir, "missing.xml"), src)
	if res.code != 2 || !strings.Contains(res.stderr, "missing.xml") {
		t.Fatalf("missing inventory file: exit %d %q", res.code, res.stderr)
	}
	out := e.ok("backup", "--json", "--repo", r, "--host", "kvm01", "--inventory", filepath.Join(e.dir, "dc01.xml"),
		"--inventory", "../../drsite/testdata/libvirt/net-lan.xml", "--inventory", "../../drsite/testdata/hyperv/hv01-inventory.json", src)
	var bj struct {
		SnapshotID string `json:"snapshot_id"`
		Inventory  struct {
			VMs      []string `json:"vms"`
			Warnings []string `json:"warnings"`
		} `json:"inventory"`
	}
	if err := json.Unmarshal([]byte(out), &bj); err != nil {
		t.Fatal(err)
	}
	if strings.Join(bj.Inventory.VMs, ",") != "DC02,LEGACY01,SQL01,dc01" || len(bj.Inventory.Warnings) == 0 {
		t.Errorf("backup --json inventory: %+v", bj.Inventory)
	}
	// The snapshot object carries the model JSON: read it back.
	js := e.ok("drsite", "import", "--json", filepath.Join(e.dir, "dc01.xml"))
	var inv drsite.Inventory
	if err := json.Unmarshal([]byte(js), &inv); err != nil || inv.Format != drsite.InventoryFormat || inv.Version != 1 || inv.VMs[0].Name != "dc01" {
		t.Errorf("drsite import --json: %v %+v", err, inv)
	}
}

func drsiteConfigFile(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "drsite.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// stopSite stops a site started by startSite with SIGTERM and requires a
// clean exit (startSite's cleanup then finds the process gone).
func stopSite(t *testing.T, sp *siteProc) {
	t.Helper()
	if err := sp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sp.cmd.Wait() }()
	select {
	case err := <-done:
		log, _ := os.ReadFile(sp.log.Name())
		if err != nil || !bytes.Contains(log, []byte("DR site stopped")) {
			t.Fatalf("site serve after SIGTERM: %v\n%s", err, log)
		}
	case <-time.After(time.Minute):
		sp.cmd.Process.Kill()
		<-done
		t.Fatal("site serve did not stop within a minute of SIGTERM")
	}
}

// bootDomain is what the drill reads from a generated libvirt domain to
// start QEMU.
type bootDomain struct {
	Name   string `xml:"name"`
	UUID   string `xml:"uuid"`
	Memory struct {
		Unit  string `xml:"unit,attr"`
		Value int64  `xml:",chardata"`
	} `xml:"memory"`
	VCPU int `xml:"vcpu"`
	OS   struct {
		Firmware string `xml:"firmware,attr"`
		Type     struct {
			Arch    string `xml:"arch,attr"`
			Machine string `xml:"machine,attr"`
			Value   string `xml:",chardata"`
		} `xml:"type"`
	} `xml:"os"`
	Disks   []domainDisk `xml:"devices>disk"`
	Serials []struct {
		Target struct {
			Port string `xml:"port,attr"`
		} `xml:"target"`
	} `xml:"devices>serial"`
	Consoles []struct {
		Target struct {
			Type string `xml:"type,attr"`
			Port string `xml:"port,attr"`
		} `xml:"target"`
	} `xml:"devices>console"`
}

type domainDisk struct {
	Device string `xml:"device,attr"`
	Driver struct {
		Type string `xml:"type,attr"`
	} `xml:"driver"`
	Source struct {
		File string `xml:"file,attr"`
	} `xml:"source"`
	Target struct {
		Dev string `xml:"dev,attr"`
		Bus string `xml:"bus,attr"`
	} `xml:"target"`
	Boot *struct {
		Order int `xml:"order,attr"`
	} `xml:"boot"`
}

func readBootDomain(t *testing.T, path string) *bootDomain {
	t.Helper()
	x, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d bootDomain
	if err := xml.Unmarshal(x, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &d
}

// bootDisk is the disk the firmware boots: the one with the lowest boot
// order, else the first.
func (d *bootDomain) bootDisk(t *testing.T) domainDisk {
	t.Helper()
	best := -1
	for i, dk := range d.Disks {
		if dk.Device != "disk" {
			continue
		}
		if best < 0 || dk.Boot != nil && (d.Disks[best].Boot == nil || dk.Boot.Order < d.Disks[best].Boot.Order) {
			best = i
		}
	}
	if best < 0 {
		t.Fatalf("domain %s has no disk", d.Name)
	}
	return d.Disks[best]
}

// serialPort is the port of the serial device the console is attached to.
func (d *bootDomain) serialPort(t *testing.T) string {
	t.Helper()
	if len(d.Serials) == 0 || len(d.Consoles) == 0 || d.Consoles[0].Target.Type != "serial" {
		t.Fatalf("domain %s has no serial console: serials %+v consoles %+v", d.Name, d.Serials, d.Consoles)
	}
	for _, s := range d.Serials {
		if s.Target.Port == d.Consoles[0].Target.Port {
			if _, err := strconv.Atoi(s.Target.Port); err != nil {
				t.Fatalf("domain %s: serial port %q", d.Name, s.Target.Port)
			}
			return s.Target.Port
		}
	}
	t.Fatalf("domain %s: the console's serial port %s has no <serial>", d.Name, d.Consoles[0].Target.Port)
	return ""
}

// libvirtBytes converts a libvirt memory size to bytes.
func libvirtBytes(t *testing.T, unit string, v int64) int64 {
	t.Helper()
	mul := map[string]int64{"": 1 << 10, "b": 1, "bytes": 1, "KB": 1e3, "k": 1 << 10, "KiB": 1 << 10, "MB": 1e6, "M": 1 << 20, "MiB": 1 << 20,
		"GB": 1e9, "G": 1 << 30, "GiB": 1 << 30, "TB": 1e12, "T": 1 << 40, "TiB": 1 << 40}[unit]
	if mul == 0 {
		t.Fatalf("libvirt memory unit %q", unit)
	}
	return v * mul
}

// TestDrsiteBootDrill is the DR drill: a bootable disk image and its
// libvirt inventory are backed up, the repository is replicated over QUIC
// to a DR site ("site init", "site serve", "replicate"), the primary's
// image, repository and cache are lost, drsite bringup restores the disk
// from the site's repository and defines and starts the VM through virsh
// (test driver), and QEMU (TCG) boots the restored disk with the machine,
// disk, vCPUs, memory and serial port of the generated domain XML and
// prints the marker on the serial console.
func TestDrsiteBootDrill(t *testing.T) {
	needTools(t, "virsh", "qemu-system-x86_64", "virt-xml-validate", "xmllint")
	e := newEnv(t)
	images := filepath.Join(e.dir, "primary", "var", "lib", "libvirt", "images")
	os.MkdirAll(images, 0o755)
	img := filepath.Join(images, "drill01.raw")
	marker := fmt.Sprintf("DRPIPE-DRILL-%d", time.Now().UnixNano())
	writeBootImage(t, img, marker, 32<<20)
	orig, _ := os.ReadFile(img)
	domXML := virshDumpXML(t, e.dir, `<domain type='kvm'>
  <name>drill01</name>
  <uuid>0b4f1c2e-7d3a-4e59-9a1b-2c3d4e5f6a7b</uuid>
  <metadata>
    <drpipe:vm xmlns:drpipe="urn:drpipe:inventory:1">
      <drpipe:boot_priority>1</drpipe:boot_priority>
      <drpipe:nic mac="52:54:00:d1:00:01">
        <drpipe:ipv4>10.0.10.77/24</drpipe:ipv4>
        <drpipe:gateway4>10.0.10.1</drpipe:gateway4>
      </drpipe:nic>
    </drpipe:vm>
  </metadata>
  <memory unit='MiB'>96</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='`+img+`'/><target dev='vda' bus='virtio'/></disk>
    <interface type='network'><mac address='52:54:00:d1:00:01'/><source network='lan'/><vlan><tag id='10'/></vlan><virtualport type='openvswitch'/><model type='virtio'/></interface>
  </devices>
</domain>`, "drill01")
	invFile := filepath.Join(e.dir, "drill01.xml")
	os.WriteFile(invFile, domXML, 0o644)
	netFile := filepath.Join(e.dir, "net-lan.xml")
	lan, _ := os.ReadFile("../../drsite/testdata/libvirt/net-lan.xml")
	os.WriteFile(netFile, lan, 0o644)

	primary := e.initRepo()
	bk := e.backup(primary, "--inventory", invFile, "--inventory", netFile, images)
	// Replicate to the DR site over QUIC: the site's CA and the primary's
	// bundle from "site init", "site serve" as a separate process, and
	// "replicate" with the primary's bundle.
	tlsDir := filepath.Join(e.dir, "site-tls")
	e.ok("site", "init", "--dir", tlsDir, "--name", "dr-drill", "--primary", "hv01")
	dr := filepath.Join(e.dir, "dr-repo")
	sp := e.startSite(t, tlsDir, dr)
	rep := e.replicate(t, primary, sp.addr, filepath.Join(tlsDir, "clients", "hv01"))
	want := repoObjects(t, primary)
	if got := repoObjects(t, dr); rep.ObjectsSent == 0 || rep.ObjectsSent != int64(len(want)) || len(got) != len(want) ||
		rep.Hosts["hv01"].Latest != bk.SnapshotID {
		t.Fatalf("replicate: sent %d objects (%d bytes), the site holds %d, the primary %d; site's latest for hv01 %q, want %s",
			rep.ObjectsSent, rep.BytesSent, len(got), len(want), rep.Hosts["hv01"].Latest, bk.SnapshotID)
	}
	t.Logf("replicated %d objects, %d bytes (%d on the wire) in %.2fs", rep.ObjectsSent, rep.BytesSent, rep.WireBytesSent, rep.Duration)
	stopSite(t, sp)
	// Site loss: the primary host's images, its repository and its cache.
	os.RemoveAll(filepath.Join(e.dir, "primary"))
	os.RemoveAll(primary)
	os.RemoveAll(e.cache)
	e.cache = filepath.Join(e.dir, "dr-cache")

	cfg := drsiteConfigFile(t, e.dir, `drsite:
  virsh_uri: test:///default
  domain_type: kvm
  boot_timeout: 1m
  hosts:
    - {name: dr-kvm1, kind: libvirt, vcpus: 8, memory: 16GiB, storage: 200GiB}
  networks:
    - {name: dr-lan, type: external, bridge: ovsbr-dr, openvswitch: true, subnets: [10.50.0.0/16]}
  network_map:
    - from: {switch: lan, vlan: 10}
      to: {network: dr-lan, vlan: 110}
  reip:
    - {from: 10.0.10.0/24, to: 10.50.10.0/24, gateway: 10.50.10.1}
`)
	plan := e.ok("drsite", "plan", "--config", cfg, "--repo", dr)
	if !regexp.MustCompile(`drill01\s+hv01\s+dr-kvm1\s+1\s+2\s+96.0 MiB`).MatchString(plan) || !strings.Contains(plan, "10.0.10.77/24→10.50.10.77/24") {
		t.Fatalf("plan:\n%s", plan)
	}
	out := filepath.Join(e.dir, "dr-out")
	res := e.ok("drsite", "bringup", "--json", "--config", cfg, "--repo", dr, "--out", out, "--execute")
	var br struct {
		Restored []drsite.RestoredDisk `json:"restored"`
		Defined  []string              `json:"defined"`
		Started  []string              `json:"started"`
		Checks   []drsite.CheckResult  `json:"checks"`
	}
	if err := json.Unmarshal([]byte(res), &br); err != nil {
		t.Fatalf("%v: %s", err, res)
	}
	if len(br.Restored) != 1 || strings.Join(br.Started, ",") != "drill01" || len(br.Checks) != 1 || !br.Checks[0].OK {
		t.Fatalf("bringup: %s", res)
	}
	domFile := filepath.Join(out, "dr-kvm1", "domains", "drill01.xml")
	netOut := filepath.Join(out, "dr-kvm1", "networks", "dr-lan.xml")
	for kind, f := range map[string]string{"domain": domFile, "network": netOut} {
		if o, err := exec.Command("virt-xml-validate", f, kind).CombinedOutput(); err != nil {
			t.Errorf("virt-xml-validate %s: %v %s", f, err, o)
		}
	}
	x, _ := os.ReadFile(domFile)
	gen, err := drsite.Import("drill01.xml", x, drsite.ImportOptions{Host: "dr-kvm1"})
	if err != nil {
		t.Fatal(err)
	}
	vm := gen.VMs[0]
	if vm.VCPUs != 2 || vm.Memory.StartupBytes != 96<<20 || len(vm.Disks) != 1 || vm.NICs[0].Switch != "dr-lan" || vm.NICs[0].VLAN.ID != 110 ||
		vm.NICs[0].IPv4[0] != "10.50.10.77/24" || vm.NICs[0].MAC != "52:54:00:d1:00:01" {
		t.Fatalf("generated definition: %+v %+v", vm, vm.NICs)
	}
	restored, err := os.ReadFile(vm.Disks[0].File)
	if err != nil || !bytes.Equal(restored, orig) {
		t.Fatalf("restored disk %s differs from the original (%v)", vm.Disks[0].File, err)
	}

	// Boot the restored disk as the generated definition says: machine,
	// memory, vCPUs, disk (file, format, bus, boot order) and the serial
	// port come from the domain XML bringup wrote, read here with
	// encoding/xml. Where libvirt would give the serial port a pty, the
	// test gives it a file. The NICs are left out (-nodefaults, no -netdev):
	// their OVS bridge does not exist on this machine.
	dom := readBootDomain(t, domFile)
	disk := dom.bootDisk(t)
	if disk.Source.File != vm.Disks[0].File {
		t.Fatalf("domain XML boots %s, the restored disk is %s", disk.Source.File, vm.Disks[0].File)
	}
	serialPort := dom.serialPort(t)
	devModel := map[string]string{"virtio": "virtio-blk-pci", "ide": "ide-hd"}[disk.Target.Bus]
	if dom.OS.Type.Arch != "x86_64" || dom.OS.Type.Value != "hvm" || dom.OS.Firmware != "" || dom.VCPU < 1 || devModel == "" {
		t.Fatalf("generated domain is not a BIOS x86_64 guest with a virtio or IDE boot disk: os %+v vcpu %d disk bus %q", dom.OS, dom.VCPU, disk.Target.Bus)
	}
	memMiB := libvirtBytes(t, dom.Memory.Unit, dom.Memory.Value) >> 20
	if memMiB != vm.Memory.StartupBytes>>20 || dom.VCPU != vm.VCPUs || dom.OS.Type.Machine != vm.Machine {
		t.Fatalf("domain XML says %d MiB, %d vCPUs, machine %q; re-imported %+v", memMiB, dom.VCPU, dom.OS.Type.Machine, vm)
	}
	serial := filepath.Join(e.dir, "serial.log")
	drive := "drive-" + disk.Target.Dev
	dev := devModel + ",drive=" + drive
	if disk.Boot != nil && disk.Boot.Order > 0 {
		dev += ",bootindex=" + strconv.Itoa(disk.Boot.Order)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	q := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-name", dom.Name, "-uuid", dom.UUID,
		"-machine", dom.OS.Type.Machine, "-smp", strconv.Itoa(dom.VCPU), "-m", strconv.FormatInt(memMiB, 10),
		"-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
		"-drive", "file="+disk.Source.File+",format="+disk.Driver.Type+",if=none,id="+drive, "-device", dev,
		"-chardev", "file,id=charserial"+serialPort+",path="+serial, "-device", "isa-serial,chardev=charserial"+serialPort+",index="+serialPort)
	t.Logf("qemu: %s", strings.Join(q.Args, " "))
	var qerr bytes.Buffer
	q.Stderr = &qerr
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		q.Process.Kill()
		q.Wait()
	}()
	deadline := time.Now().Add(150 * time.Second)
	for {
		b, _ := os.ReadFile(serial)
		if bytes.Contains(b, []byte(marker)) {
			t.Logf("serial console: %q", strings.TrimSpace(string(b[bytes.Index(b, []byte("DRPIPE")):])))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no marker on the serial console after 150s; console %q, qemu: %s", b, qerr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tenVMInventory writes a hand-written YAML inventory for host hv-a and a
// Hyper-V-free libvirt host hv-b with small disk images, and returns the
// inventory files and the image directories per host.
func tenVMInventory(t *testing.T, dir string) (invA, invB, imgA, imgB string) {
	t.Helper()
	imgA, imgB = filepath.Join(dir, "hv-a", "images"), filepath.Join(dir, "hv-b", "images")
	os.MkdirAll(imgA, 0o755)
	os.MkdirAll(imgB, 0o755)
	type vmSpec struct {
		name, host   string
		vcpus        int
		mem          string
		prio         int
		deps         string
		anti, sw, ip string
		vlan         int
	}
	vms := []vmSpec{
		{"dc01", "a", 2, "4GiB", 1, "", "dc", "lan", "10.0.10.10", 10},
		{"dc02", "b", 2, "4GiB", 1, "", "dc", "lan", "10.0.10.11", 10},
		{"dns01", "a", 1, "2GiB", 1, "", "", "lan", "10.0.10.53", 10},
		{"sql01", "a", 8, "48GiB", 2, "dc01", "", "lan", "10.0.20.50", 20},
		{"sql02", "b", 8, "48GiB", 2, "dc02", "", "lan", "10.0.20.51", 20},
		{"app01", "a", 4, "16GiB", 3, "sql01", "app", "lan", "10.0.20.60", 20},
		{"app02", "b", 4, "16GiB", 3, "sql02", "app", "lan", "10.0.20.61", 20},
		{"web01", "a", 2, "8GiB", 4, "app01", "", "dmz", "10.0.40.80", 40},
		{"web02", "b", 2, "8GiB", 4, "app02", "", "dmz", "10.0.40.81", 40},
		{"mon01", "b", 2, "8GiB", 0, "dns01", "", "mgmt", "10.0.99.5", 0},
	}
	var ya, yb strings.Builder
	ya.WriteString("version: 1\nhost: hv-a\nswitches:\n  - {name: lan, type: external, uplink: eno1, vlans: [10, 20]}\n  - {name: dmz, type: external, uplink: eno2, vlans: [40]}\nvms:\n")
	yb.WriteString("version: 1\nhost: hv-b\nswitches:\n  - {name: lan, type: external, uplink: eno1, vlans: [10, 20]}\n  - {name: dmz, type: external, uplink: eno2, vlans: [40]}\n  - {name: mgmt, type: internal}\nvms:\n")
	for i, v := range vms {
		img := filepath.Join(map[string]string{"a": imgA, "b": imgB}[v.host], v.name+".raw")
		f, _ := os.Create(img)
		rng := newRandSource(uint64(i + 1))
		buf := make([]byte, (i+1)<<19)
		for k := range buf {
			buf[k] = byte(rng.Uint32())
		}
		f.Write(buf)
		f.Truncate(64 << 20)
		f.Close()
		y := map[string]*strings.Builder{"a": &ya, "b": &yb}[v.host]
		fmt.Fprintf(y, "  - name: %s\n    vcpus: %d\n    memory: %s\n    disks: [{file: %s, format: raw, size: 40GiB, controller: virtio, boot_order: 1}]\n", v.name, v.vcpus, v.mem, img)
		vl := ""
		if v.vlan != 0 {
			vl = fmt.Sprintf(", vlan: %d", v.vlan)
		}
		gw := v.ip[:strings.LastIndex(v.ip, ".")] + ".1"
		fmt.Fprintf(y, "    nics: [{mac: '52:54:00:00:%02x:01', switch: %s%s, ipv4: [%s/24], gateway4: %s, dns: [10.0.10.53]}]\n", i, v.sw, vl, v.ip, gw)
		if v.prio > 0 {
			fmt.Fprintf(y, "    boot_priority: %d\n", v.prio)
		}
		if v.deps != "" {
			fmt.Fprintf(y, "    depends_on: [%s]\n", v.deps)
		}
		if v.anti != "" {
			fmt.Fprintf(y, "    anti_affinity: %s\n", v.anti)
		}
		if v.name == "dns01" {
			fmt.Fprintf(y, "    verify: [\"tcp:%s:53\"]\n", v.ip)
		}
	}
	invA, invB = filepath.Join(dir, "hv-a.yaml"), filepath.Join(dir, "hv-b.yaml")
	os.WriteFile(invA, []byte(ya.String()), 0o644)
	os.WriteFile(invB, []byte(yb.String()), 0o644)
	return
}

// tenVMSite backs up the ten VMs of tenVMInventory (hosts hv-a and
// hv-b) into a new repository and writes tenVMConfig: it returns the
// repository and the config file.
func (e *env) tenVMSite() (repo, cfg string) {
	e.t.Helper()
	invA, invB, imgA, imgB := tenVMInventory(e.t, e.dir)
	repo = e.initRepo()
	e.ok("backup", "--repo", repo, "--host", "hv-a", "--inventory", invA, imgA)
	e.ok("backup", "--repo", repo, "--host", "hv-b", "--inventory", invB, imgB)
	return repo, drsiteConfigFile(e.t, e.dir, tenVMConfig)
}

const tenVMConfig = `drsite:
  virsh_uri: test:///default
  expected_boot: 90s
  hosts:
    - {name: dr-kvm1, kind: libvirt, vcpus: 24, memory: 80GiB, storage: 1TiB}
    - {name: dr-kvm2, kind: libvirt, vcpus: 24, memory: 80GiB, storage: 1TiB}
    - {name: dr-hv1, kind: hyperv, vcpus: 16, memory: 64GiB, storage: 1TiB, image_dir: 'D:\DR'}
  networks:
    - {name: dr-lan, type: external, bridge: ovsbr0, openvswitch: true, uplink: 'SLOT 1', subnets: [10.50.0.0/16]}
    - {name: dr-dmz, type: external, bridge: ovsbr1, openvswitch: true, uplink: 'SLOT 2', subnets: [10.50.40.0/24]}
    - {name: dr-mgmt, type: internal, address: 10.50.99.1/24, subnets: [10.50.99.0/24]}
  network_map:
    - {from: {switch: lan, vlan: 10}, to: {network: dr-lan, vlan: 110}}
    - {from: {switch: lan, vlan: 20}, to: {network: dr-lan, vlan: 120}}
    - {from: {switch: dmz}, to: {network: dr-dmz, vlan: 140}}
    - {from: {switch: mgmt}, to: {network: dr-mgmt, vlan: 0}}
  reip:
    - {from: 10.0.10.0/24, to: 10.50.10.0/24, gateway: 10.50.10.1, dns: [10.50.10.53]}
    - {from: 10.0.20.0/24, to: 10.50.20.0/24, gateway: 10.50.20.1, dns: [10.50.10.53]}
    - {from: 10.0.40.0/24, to: 10.50.40.0/24, gateway: 10.50.40.1}
    - {from: 10.0.99.0/24, to: 10.50.99.0/24, gateway: 10.50.99.1}
`

// TestDrsiteRunbookChromium generates the runbook for a 10-VM inventory
// across 3 DR hosts and renders it in headless Chromium: the DOM shows
// every VM with its DR host, boot group and RPO, every host, network and
// boot group, and a screenshot is written.
func TestDrsiteRunbookChromium(t *testing.T) {
	needTools(t, "chromium")
	e := newEnv(t)
	invA, invB, imgA, imgB := tenVMInventory(t, e.dir)
	r := e.initRepo()
	e.ok("backup", "--repo", r, "--host", "hv-a", "--inventory", invA, imgA)
	time.Sleep(1100 * time.Millisecond) // distinct RPOs per host
	e.ok("backup", "--repo", r, "--host", "hv-b", "--inventory", invB, imgB)
	cfg := drsiteConfigFile(t, e.dir, tenVMConfig)

	pj := e.ok("drsite", "plan", "--json", "--config", cfg, "--repo", r)
	var plan struct {
		VMs []struct {
			Name   string `json:"name"`
			DRHost string `json:"dr_host"`
			Group  int    `json:"boot_group"`
			RPO    int64  `json:"rpo_ns"`
			Data   struct {
				Snapshot string `json:"snapshot"`
			} `json:"data"`
		} `json:"vms"`
		Hosts    []struct{ Name string } `json:"hosts"`
		Groups   []struct{ Number int }  `json:"boot_groups"`
		Networks []struct {
			Host    string `json:"host"`
			Network string `json:"network"`
		} `json:"networks"`
		Issues []drsite.Issue `json:"issues"`
	}
	if err := json.Unmarshal([]byte(pj), &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.VMs) != 10 || len(plan.Hosts) != 3 || len(plan.Groups) < 4 || len(plan.Issues) != 0 {
		t.Fatalf("plan: %d VMs, %d hosts, %d groups, issues %v", len(plan.VMs), len(plan.Hosts), len(plan.Groups), plan.Issues)
	}
	used := map[string]bool{}
	for _, v := range plan.VMs {
		used[v.DRHost] = true
		if v.Group == 0 || v.Data.Snapshot == "" {
			t.Errorf("VM %s: group %d snapshot %q", v.Name, v.Group, v.Data.Snapshot)
		}
	}
	if len(used) != 3 {
		t.Errorf("placement uses hosts %v, want all 3", used)
	}

	rbDir := filepath.Join(e.dir, "runbook")
	e.ok("drsite", "runbook", "--config", cfg, "--repo", r, "--out", rbDir)
	html := filepath.Join(rbDir, "runbook.html")
	md, _ := os.ReadFile(filepath.Join(rbDir, "runbook.md"))
	profile := filepath.Join(e.dir, "chromium-profile")
	os.MkdirAll(profile, 0o700)
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--no-first-run", "--user-data-dir=" + profile}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dom, err := exec.CommandContext(ctx, "chromium", append(flags, "--dump-dom", "file://"+html)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	shot := filepath.Join(e.dir, "runbook.png")
	sc := exec.CommandContext(ctx, "chromium", append(flags, "--screenshot="+shot, "--window-size=1400,5000", "file://"+html)...)
	if out, err := sc.CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 10000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s: %d bytes, %v", shot, len(png), err)
	}
	d := string(dom)
	if !strings.Contains(d, "<h1>DR bring-up runbook</h1>") {
		t.Fatalf("DOM is not the runbook: %.300s", d)
	}
	// Every VM row shows its DR host, boot group and RPO (as the plan has
	// them, in the rendered DOM).
	rowRE := regexp.MustCompile(`<tr class="vm" data-vm="([^"]+)"><td>[^<]*</td><td>[^<]*</td><td class="drhost">([^<]*)</td><td class="group">([^<]*)</td>(?:<td>[^<]*</td>){4}<td class="rpo">([^<]*)</td><td>([0-9a-f]{8}) `)
	rows := map[string][]string{}
	for _, m := range rowRE.FindAllStringSubmatch(d, -1) {
		rows[m[1]] = m[2:]
	}
	for _, v := range plan.VMs {
		row, ok := rows[v.Name]
		if !ok {
			t.Errorf("VM %s has no row in the rendered runbook", v.Name)
			continue
		}
		rpo := time.Duration(v.RPO)
		if row[0] != v.DRHost || row[1] != strconv.Itoa(v.Group) || row[3] != v.Data.Snapshot[:8] || !regexp.MustCompile(`^\d+s$|^\dm\d\ds$|^&lt;1s$`).MatchString(row[2]) {
			t.Errorf("VM %s row %q; plan has host %s group %d snapshot %s RPO %s", v.Name, row, v.DRHost, v.Group, v.Data.Snapshot[:8], rpo)
		}
		if !strings.Contains(string(md), "| "+v.Name+" | ") {
			t.Errorf("Markdown runbook lacks VM %s", v.Name)
		}
	}
	// hv-a was backed up earlier: its VMs' RPO is at least as large.
	secs := func(vm string) int {
		n, _ := strconv.Atoi(strings.TrimSuffix(rows[vm][2], "s")) // "<1s" counts as 0
		return n
	}
	if secs("dc01") < 1 || secs("dc01") < secs("dc02") {
		t.Errorf("RPO of dc01 (%s) is below dc02's (%s) though hv-a was backed up first", rows["dc01"][2], rows["dc02"][2])
	}
	for _, h := range plan.Hosts {
		if !strings.Contains(d, `<tr class="host"><td>`+h.Name+`</td>`) {
			t.Errorf("DR host %s missing from the DOM", h.Name)
		}
	}
	for _, n := range plan.Networks {
		if !strings.Contains(d, `<tr class="network"><td>`+n.Host+`</td><td>`+n.Network+`</td>`) {
			t.Errorf("network %s on %s missing from the DOM", n.Network, n.Host)
		}
	}
	for _, g := range plan.Groups {
		if !strings.Contains(d, fmt.Sprintf(`<div class="bootgroup" id="group-%d"><h3>Boot group %d:`, g.Number, g.Number)) {
			t.Errorf("boot group %d missing from the DOM", g.Number)
		}
	}
	for _, want := range []string{"virsh -c test:///default define", "drpipe drsite bringup --config", "--group 1", "bringup.ps1", "nc -z", "10.0.20.50/24 → 10.50.20.50/24"} {
		if !strings.Contains(d, strings.ReplaceAll(want, ">", "&gt;")) && !strings.Contains(string(md), want) {
			t.Errorf("runbook lacks %q", want)
		}
	}
}

// TestDrsitePlanVerdicts runs plan on a site that is too small and
// misconfigured: exit code 3, every problem under UNRESOLVED.
func TestDrsitePlanVerdicts(t *testing.T) {
	e := newEnv(t)
	invA, invB, imgA, imgB := tenVMInventory(t, e.dir)
	r := e.initRepo()
	e.ok("backup", "--repo", r, "--host", "hv-a", "--inventory", invA, imgA)
	e.ok("backup", "--repo", r, "--host", "hv-b", "--inventory", invB, imgB)
	cfg := strings.Replace(tenVMConfig, "- {name: dr-hv1, kind: hyperv, vcpus: 16, memory: 64GiB", "- {name: dr-hv1, kind: hyperv, vcpus: 4, memory: 8GiB", 1)
	cfg = strings.Replace(cfg, "    - {from: {switch: dmz}, to: {network: dr-dmz, vlan: 140}}\n", "", 1)
	res := e.run("drsite", "plan", "--config", drsiteConfigFile(t, e.dir, cfg), "--repo", r)
	if res.code != 3 {
		t.Fatalf("plan exit %d, want 3\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	for _, want := range []string{"UNRESOLVED", "BLOCKING unmapped-network web01", `switch "dmz" VLAN 40 has no drsite.network_map entry`, "BLOCKED"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("plan output lacks %q:\n%s", want, res.stdout)
		}
	}
	// The runbook is written, and says the same with its exit code.
	rbDir := filepath.Join(e.dir, "runbook")
	res = e.run("drsite", "runbook", "--config", drsiteConfigFile(t, e.dir, cfg), "--repo", r, "--out", rbDir)
	if _, err := os.Stat(filepath.Join(rbDir, "runbook.md")); res.code != 3 || err != nil {
		t.Errorf("runbook with a blocked VM: exit %d (want 3), runbook.md: %v\n%s\n%s", res.code, err, res.stdout, res.stderr)
	}
}

// TestDrsiteBringupConversions: a Hyper-V VHDX VM brought up on a
// libvirt host is converted to qcow2, a libvirt qcow2 VM on a Hyper-V host
// to VHDX, a disk without a format in the inventory is recognised from its
// header; contents compare equal with qemu-img, and a second run keeps
// the placed images.
func TestDrsiteBringupConversions(t *testing.T) {
	needTools(t, "qemu-img", "virsh")
	e := newEnv(t)
	imgs := filepath.Join(e.dir, "src")
	os.MkdirAll(imgs, 0o755)
	raw := filepath.Join(e.dir, "seed.raw")
	writeBootImage(t, raw, "CONVERT", 16<<20)
	mk := func(name, format string) string {
		p := filepath.Join(imgs, name)
		if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", format, raw, p).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
		return p
	}
	vhdx, qcow, nofmt := mk("app.vhdx", "vhdx"), mk("web.qcow2", "qcow2"), mk("nofmt.img", "qcow2")
	// Recognised as VHDX, so converted: its image's name is known only
	// from the header, which a second run must find again.
	nofmtVHDX := mk("nofmt2.img", "vhdx")
	inv := filepath.Join(e.dir, "inv.yaml")
	os.WriteFile(inv, []byte(fmt.Sprintf(`host: hv01
vms:
  - {name: hvvm, generation: 2, vcpus: 2, memory: 2GiB, boot_priority: 1, disks: [{file: %s, format: vhdx, size: 16MiB, controller: scsi, boot_order: 1}]}
  - {name: kvmvm, vcpus: 2, memory: 24GiB, boot_priority: 2, disks: [{file: %s, format: qcow2, size: 16MiB, controller: virtio, boot_order: 1}]}
  - {name: nofmt, vcpus: 1, memory: 1GiB, boot_priority: 3, disks: [{file: %s, size: 16MiB, controller: virtio}]}
  - {name: nofmt2, vcpus: 1, memory: 1GiB, boot_priority: 4, disks: [{file: %s, size: 16MiB, controller: virtio}]}
`, vhdx, qcow, nofmt, nofmtVHDX)), 0o644)
	r := e.initRepo()
	e.backup(r, "--inventory", inv, imgs)
	cfg := drsiteConfigFile(t, e.dir, `drsite:
  virsh_uri: test:///default
  hosts:
    - {name: dr-kvm, kind: libvirt, vcpus: 8, memory: 8GiB, storage: 100GiB}
    - {name: dr-hv, kind: hyperv, vcpus: 8, memory: 32GiB, storage: 100GiB}
`)
	out := filepath.Join(e.dir, "out")
	js := e.ok("drsite", "bringup", "--json", "--config", cfg, "--repo", r, "--out", out, "--execute")
	var br struct {
		Restored []drsite.RestoredDisk `json:"restored"`
		Started  []string              `json:"started"`
	}
	if err := json.Unmarshal([]byte(js), &br); err != nil {
		t.Fatal(err)
	}
	byVM := map[string]drsite.RestoredDisk{}
	for _, d := range br.Restored {
		byVM[d.VM] = d
	}
	same := func(a, b string) {
		t.Helper()
		if o, err := exec.Command("qemu-img", "compare", a, b).CombinedOutput(); err != nil {
			t.Errorf("qemu-img compare %s %s: %v %s", a, b, err, o)
		}
	}
	if d := byVM["hvvm"]; !d.Converted || d.Format != "qcow2" || !strings.HasSuffix(d.Path, filepath.Join("dr-kvm", "images", "hvvm", "app.qcow2")) {
		t.Errorf("hvvm disk: %+v", d)
	} else {
		same(d.Path, vhdx)
	}
	if d := byVM["kvmvm"]; !d.Converted || d.Format != "vhdx" || !strings.HasSuffix(d.Path, filepath.Join("dr-hv", "images", "kvmvm", "web.vhdx")) {
		t.Errorf("kvmvm disk: %+v", d)
	} else {
		same(d.Path, qcow)
	}
	if d := byVM["nofmt"]; d.Converted || d.Format != "qcow2" {
		t.Errorf("nofmt disk: %+v", d)
	}
	if d := byVM["nofmt2"]; !d.Converted || d.Format != "qcow2" || !strings.HasSuffix(d.Path, filepath.Join("dr-kvm", "images", "nofmt2", "nofmt2.qcow2")) {
		t.Errorf("nofmt2 disk: %+v", d)
	} else {
		same(d.Path, nofmtVHDX)
	}
	x, _ := os.ReadFile(filepath.Join(out, "dr-kvm", "domains", "nofmt.xml"))
	if !strings.Contains(string(x), `<driver name="qemu" type="qcow2">`) {
		t.Errorf("nofmt domain does not declare qcow2:\n%s", x)
	}
	x, _ = os.ReadFile(filepath.Join(out, "dr-kvm", "domains", "hvvm.xml"))
	if !strings.Contains(string(x), `<os firmware="efi">`) || !strings.Contains(string(x), `type="qcow2"`) {
		t.Errorf("hvvm domain:\n%s", x)
	}
	ps, _ := os.ReadFile(filepath.Join(out, "dr-hv", "bringup.ps1"))
	// kvmvm has BIOS firmware: generation 1, which boots only from IDE.
	if !strings.Contains(string(ps), `Add-VMHardDiskDrive -VMName 'kvmvm' -ControllerType IDE -ControllerNumber 0 -ControllerLocation 0 -Path (Join-Path $ImageRoot 'kvmvm\web.vhdx')`) {
		t.Errorf("bringup.ps1:\n%s", ps)
	}
	if strings.Join(br.Started, ",") != "hvvm,nofmt,nofmt2" {
		t.Errorf("started %v, want the libvirt VMs hvvm,nofmt,nofmt2", br.Started)
	}
	// A second run keeps what is in place.
	js = e.ok("drsite", "bringup", "--json", "--config", cfg, "--repo", r, "--out", out)
	if err := json.Unmarshal([]byte(js), &br); err != nil {
		t.Fatal(err)
	}
	for _, d := range br.Restored {
		if !d.Kept {
			t.Errorf("second run restored %s again", d.Path)
		}
		if (d.VM == "nofmt" || d.VM == "nofmt2") && d.Format != "qcow2" {
			t.Errorf("kept %s image format %q", d.VM, d.Format)
		}
	}
	if len(br.Restored) != 4 {
		t.Errorf("second run: %d disks, want 4: %+v", len(br.Restored), br.Restored)
	}
}

// TestBackupInventoryRawDiskNotProbed: a disk the --inventory gives as
// raw is backed up as its bytes even when its guest wrote a qcow2 header
// naming a host file as its backing file.
func TestBackupInventoryRawDiskNotProbed(t *testing.T) {
	needTools(t, "qemu-img")
	e := newEnv(t)
	secret := filepath.Join(e.dir, "host-secret")
	os.WriteFile(secret, bytes.Repeat([]byte("HOST SECRET "), 1<<17), 0o600)
	imgs := filepath.Join(e.dir, "images")
	os.MkdirAll(imgs, 0o755)
	disk := filepath.Join(imgs, "guest.img")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", disk, "2M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	os.Truncate(disk, 2<<20)
	inv := filepath.Join(e.dir, "inv.yaml")
	os.WriteFile(inv, []byte(fmt.Sprintf("host: hv01\nvms:\n  - {name: guest, vcpus: 1, memory: 1GiB, disks: [{file: %s, format: raw, size: 2MiB}]}\n", disk)), 0o644)
	r := e.initRepo()
	res := e.run("backup", "--repo", r, "--host", "hv01", "--inventory", inv, imgs)
	if res.code != 0 || !strings.Contains(res.stderr, "is a raw disk (the VM inventory gives it as raw)") {
		t.Fatalf("backup: exit %d\n%s", res.code, res.stderr)
	}
	dst := filepath.Join(e.dir, "dst")
	e.ok("restore", "--repo", r, "--target", dst, "latest")
	want, _ := os.ReadFile(disk)
	if got, err := os.ReadFile(filepath.Join(dst, disk)); err != nil || !bytes.Equal(got, want) {
		t.Errorf("restored raw disk differs from the source (%d bytes, want %d; %v)", len(got), len(want), err)
	}
}

// TestDrsiteRunbookByHand follows the runbook's steps as an operator
// would paste them: each boot group's restore command, run by the shell,
// puts that group's disks (and no later group's) where the definitions
// the define commands name point, and the define and start commands of
// every group, run in one virsh session of the test driver, bring every
// libvirt VM up.
func TestDrsiteRunbookByHand(t *testing.T) {
	needTools(t, "virsh", "qemu-img")
	e := newEnv(t)
	r, cfg := e.tenVMSite()
	out := filepath.Join(e.dir, "dr out") // a space: the commands quote it
	rbDir := filepath.Join(e.dir, "runbook")
	e.ok("drsite", "runbook", "--config", cfg, "--repo", r, "--out", rbDir, "--bringup-dir", out)
	md, err := os.ReadFile(filepath.Join(rbDir, "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Each boot group's commands, from its section's code blocks.
	type group struct {
		n     int
		lines []string
	}
	var groups []group
	inCode := false
	for _, l := range strings.Split(string(md), "\n") {
		if n, ok := strings.CutPrefix(l, "### Boot group "); ok {
			num, _ := strconv.Atoi(n[:strings.Index(n, ":")])
			groups = append(groups, group{n: num})
			continue
		}
		if strings.HasPrefix(l, "```") {
			inCode = !inCode
			continue
		}
		if inCode && len(groups) > 0 && l != "" && !strings.HasPrefix(l, "#") {
			groups[len(groups)-1].lines = append(groups[len(groups)-1].lines, l)
		}
	}
	if len(groups) < 4 {
		t.Fatalf("runbook has %d boot groups, want at least 4:\n%s", len(groups), md)
	}
	bin := filepath.Join(e.dir, "bin")
	os.MkdirAll(bin, 0o755)
	if err := os.Symlink(drpipeBin, filepath.Join(bin, "drpipe")); err != nil {
		t.Fatal(err)
	}
	shell := func(line string) {
		t.Helper()
		c := exec.Command("sh", "-c", line)
		c.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "DRPIPE_PASSWORD="+e.pw, "XDG_CACHE_HOME="+e.cache)
		if o, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, o)
		}
	}
	// diskFiles lists the image files a domain XML boots from.
	diskFiles := func(domFile string) []string {
		x, err := os.ReadFile(domFile)
		if err != nil {
			t.Fatalf("the runbook defines %s, which is not there: %v", domFile, err)
		}
		inv, err := drsite.Import(filepath.Base(domFile), x, drsite.ImportOptions{Host: "dr"})
		if err != nil || len(inv.VMs) != 1 {
			t.Fatalf("%s: %v", domFile, err)
		}
		var files []string
		for _, d := range inv.VMs[0].Disks {
			files = append(files, d.File)
		}
		return files
	}
	exists := func(f string) bool { _, err := os.Stat(f); return err == nil }
	// The test driver keeps what is defined only within one connection,
	// and both libvirt hosts use it: each host's virsh commands of the
	// runbook run in one session of their own.
	batch := map[string][]string{} // DR host -> virsh commands
	hostOf := map[string]string{}  // VM or network -> DR host
	for i, g := range groups {
		restore := 0
		for _, l := range g.lines {
			if strings.HasPrefix(l, "drpipe ") {
				shell(l)
				restore++
			}
		}
		if restore == 0 {
			t.Fatalf("boot group %d has no drpipe command to restore its disks: %q", g.n, g.lines)
		}
		for _, l := range g.lines {
			if !strings.HasPrefix(l, "virsh ") {
				continue
			}
			for _, part := range strings.Split(strings.SplitN(l, "   #", 2)[0], " && ") {
				f := strings.Fields(part)
				if len(f) < 4 || f[0] != "virsh" || f[1] != "-c" {
					t.Fatalf("runbook line %q is not a virsh -c URI command", l)
				}
				arg := strings.Trim(strings.Join(f[4:], " "), "'")
				switch f[3] {
				case "define", "net-define":
					host := filepath.Base(filepath.Dir(filepath.Dir(arg)))
					hostOf[strings.TrimSuffix(filepath.Base(arg), ".xml")] = host
					batch[host] = append(batch[host], strings.Join(f[3:], " "))
				default:
					batch[hostOf[arg]] = append(batch[hostOf[arg]], strings.Join(f[3:], " "))
				}
				if f[3] != "define" {
					continue
				}
				domFile := arg
				for _, d := range diskFiles(domFile) {
					if !exists(d) {
						t.Errorf("boot group %d: after its restore command, %s names %s, which is not there", g.n, domFile, d)
					}
				}
			}
		}
		// The disks of the next groups are not restored yet.
		for _, ng := range groups[i+1:] {
			for _, l := range ng.lines {
				if f := strings.Fields(l); len(f) >= 5 && f[0] == "virsh" && f[3] == "define" {
					for _, d := range diskFiles(strings.Trim(strings.Join(f[4:], " "), "'")) {
						if exists(d) {
							t.Errorf("%s of boot group %d is there after the restore of group %d", d, ng.n, g.n)
						}
					}
				}
			}
		}
	}
	if res := e.run("drsite", "bringup", "--config", cfg, "--repo", r, "--out", out, "--group", "99"); res.code != 2 || !strings.Contains(res.stderr, "no boot group 99") {
		t.Errorf("bringup --group 99: exit %d, want 2\n%s", res.code, res.stderr)
	}
	if res := e.run("drsite", "bringup", "--config", cfg, "--repo", r, "--out", out, "--dr-host", "nope"); res.code != 2 || !strings.Contains(res.stderr, "--dr-host nope") {
		t.Errorf("bringup --dr-host nope: exit %d, want 2\n%s", res.code, res.stderr)
	}
	if len(batch) != 2 || batch[""] != nil {
		t.Fatalf("virsh commands for hosts %v, want dr-kvm1 and dr-kvm2 only", slices.Collect(maps.Keys(batch)))
	}
	for host, cmds := range batch {
		o, err := exec.Command("virsh", "-c", "test:///default", strings.Join(cmds, " ; ")).CombinedOutput()
		if err != nil || strings.Contains(string(o), "error") || strings.Count(string(o), "running") != strings.Count(strings.Join(cmds, "\n"), "domstate") {
			t.Fatalf("%s: the runbook's virsh commands did not bring every VM up (%v):\n%s\n%s", host, err, strings.Join(cmds, "\n"), o)
		}
	}
}

// TestDrsiteBringupNamesEveryVMWhoseDisksFail: when the data of a boot
// group's disks is lost, bringup fails naming each VM whose disk did not
// restore (the batch of one snapshot holds several VMs), and says how to
// go on.
func TestDrsiteBringupNamesEveryVMWhoseDisksFail(t *testing.T) {
	e := newEnv(t)
	r, cfg := e.tenVMSite()
	// The K data shards of every pack holding hv-a's disk data are lost
	// (more than M, and none left to read a blob from directly, so every
	// blob in them is lost: with only M+1 gone, the blobs of a surviving
	// data shard still read, and check, which names every file with
	// blobs in a pack it does not read, named disks the restore then got
	// whole); the others (trees, inventories, hv-b's disks) stay, so the
	// plan holds and the restore gets as far as the disks. Which packs
	// hold what, check says of each pack lost alone.
	var lose []string
	lost := map[string]bool{} // group 1's VMs of hv-a whose disk data goes
	for _, shards := range shardFiles(t, r) {
		saved := map[string][]byte{}
		for _, s := range shards[:4] {
			b, err := os.ReadFile(s)
			if err != nil {
				t.Fatal(err)
			}
			saved[s] = b
			os.Remove(s)
		}
		res := e.run("check", "--json", "--repo", r)
		var chk struct {
			Damaged []struct {
				Files []string `json:"files"`
			} `json:"damaged_packs"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &chk); err != nil || len(chk.Damaged) != 1 {
			t.Fatalf("check --json with one pack lost: %v\n%s\n%s", err, res.stdout, res.stderr)
		}
		for s, b := range saved {
			os.WriteFile(s, b, 0o644)
		}
		if slices.ContainsFunc(chk.Damaged[0].Files, func(f string) bool { return strings.HasSuffix(f, ".raw") && strings.Contains(f, "/hv-a/") }) {
			lose = append(lose, shards[:4]...)
			for _, f := range chk.Damaged[0].Files {
				if vm := strings.TrimSuffix(filepath.Base(f), ".raw"); vm == "dc01" || vm == "dns01" {
					lost[vm] = true
				}
			}
		}
	}
	// A disk's data in a pack that also holds trees is not lost here
	// (check could not name its files with the trees gone): usually
	// both disks are, and then the error must name both.
	if len(lost) == 0 {
		t.Fatal("no pack holds only group 1's disk data of hv-a")
	}
	if len(lose) == 0 {
		t.Fatal("no pack holds disk data")
	}
	for _, s := range lose {
		os.Remove(s)
	}
	res := e.run("drsite", "bringup", "--config", cfg, "--repo", r, "--out", filepath.Join(e.dir, "out"), "--group", "1")
	if res.code == 0 {
		t.Fatalf("bringup succeeded without the disks' data:\n%s", res.stdout)
	}
	// dc01 and dns01 come from one snapshot of hv-a, restored together.
	want := []string{"drsite.exclude", "run bringup again"}
	for vm := range lost {
		want = append(want, "VM "+vm+" disk ")
	}
	t.Logf("disks lost: %v", lost)
	for _, want := range want {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("bringup's error lacks %q:\n%s", want, res.stderr)
		}
	}
}
