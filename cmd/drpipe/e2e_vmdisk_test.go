package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/sample"
)

// Must-shows of issue 7 (VM disk formats and granular restore), driven
// through the real binary with images written by qemu-img.

const guestHello = "hello from inside the guest file system\n"

func needDiskTools(t *testing.T) {
	t.Helper()
	for _, c := range []string{"qemu-img", "qemu-io", "mkfs.ext4"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not installed: run 'make deps' (scripts/deps.sh installs it)", c)
		}
	}
}

func qimg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// guestImage makes a sparse raw image of size bytes holding an ext4 file
// system with hello.txt and dataBytes of random files.
func guestImage(t *testing.T, path string, size, dataBytes int64, seed uint64) {
	t.Helper()
	content := t.TempDir()
	if err := os.WriteFile(filepath.Join(content, "hello.txt"), []byte(guestHello), 0o644); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	for i := 0; dataBytes > 0; i++ {
		n := min(dataBytes, 4<<20)
		if err := os.WriteFile(filepath.Join(content, "data"+string(rune('a'+i%26))+".bin"), sample.Binary(rng, int(n)), 0o644); err != nil {
			t.Fatal(err)
		}
		dataBytes -= n
	}
	if err := sample.Ext4Image(context.Background(), path, size, content); err != nil {
		t.Fatal(err)
	}
}

// qfmt is qemu's name for a file's format, by our naming convention.
func qfmt(path string) string {
	switch filepath.Ext(path) {
	case ".vhd":
		return "vpc"
	case ".vhdx":
		return "vhdx"
	case ".qcow2":
		return "qcow2"
	}
	return "raw"
}

func qcompare(t *testing.T, a, b string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "compare", "-f", qfmt(a), "-F", qfmt(b), a, b).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Images are identical") {
		t.Errorf("qemu-img compare %s %s: %v\n%s", a, b, err, out)
	}
}

func qcheck(t *testing.T, p string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "-f", qfmt(p), p).CombinedOutput()
	if err != nil {
		t.Errorf("qemu-img check %s: %v\n%s", p, err, out)
	}
}

// TestDiskImagesBackupRestore: must-show 1. qemu-made VHD (dynamic, fixed),
// VHDX and qcow2 images with ext4 inside and a qcow2 backing chain are
// backed up and restored in their own format, as raw, and converted.
func TestDiskImagesBackupRestore(t *testing.T) {
	needDiskTools(t)
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "4+2", "--pack-size", "8MiB")
	src := filepath.Join(e.dir, "images")
	os.MkdirAll(src, 0o755)
	raw := filepath.Join(e.dir, "guest.raw")
	guestImage(t, raw, 96<<20, 12<<20, 1)
	imgs := map[string][]string{
		"dyn.vhd":    {"-O", "vpc"},
		"fixed.vhd":  {"-O", "vpc", "-o", "subformat=fixed"},
		"disk.vhdx":  {"-O", "vhdx"},
		"disk.qcow2": {"-O", "qcow2"},
		"base.qcow2": {"-O", "qcow2", "-o", "compat=0.10"},
		"comp.qcow2": {"-c", "-O", "qcow2"},
	}
	for name, args := range imgs {
		qimg(t, append(append([]string{"convert", "-f", "raw"}, args...), raw, filepath.Join(src, name))...)
	}
	// A backing chain: base <- top, with new data and a zeroed range in top.
	top := filepath.Join(src, "top.qcow2")
	qimg(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x6b 40M 3M", "-c", "write -z 1M 512k", top).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	b := e.backup(repoDir, src)
	t.Logf("chain-mode backup: %d bytes read, %d total, %d new", b.BytesRead, b.BytesTotal, b.BytesNew)

	// Same format (original) — the chain is restored as a chain.
	orig := filepath.Join(e.dir, "r-orig")
	e.ok("restore", "--repo", repoDir, b.SnapshotID, "--target", orig)
	od := filepath.Join(orig, src)
	for name := range imgs {
		qcompare(t, filepath.Join(src, name), filepath.Join(od, name))
		if f := qfmt(name); f == "qcow2" || f == "vhdx" {
			qcheck(t, filepath.Join(od, name))
		}
	}
	qcompare(t, top, filepath.Join(od, "top.qcow2"))
	qcheck(t, filepath.Join(od, "top.qcow2"))
	if info := qimg(t, "info", filepath.Join(od, "top.qcow2")); !strings.Contains(info, "backing file: base.qcow2") {
		t.Errorf("restored overlay lost its backing file:\n%s", info)
	}
	if r := e.run("restore", "--repo", repoDir, b.SnapshotID, "--target", filepath.Join(e.dir, "r-again")); r.code != 0 || strings.Contains(r.stderr, "layer over") {
		t.Errorf("whole chain restored: exit %d, stderr:\n%s\nwant no warning about the layer", r.code, r.stderr)
	}
	// The overlay alone: restored, with a warning that names its parent.
	alone := filepath.Join(e.dir, "r-alone")
	r := e.run("restore", "--repo", repoDir, b.SnapshotID, "--target", alone, "--path", top)
	if r.code != 0 || !strings.Contains(r.stderr, "restored as a layer over "+filepath.Join(alone, src, "base.qcow2")) {
		t.Errorf("overlay restored without its parent: exit %d, stderr:\n%s\nwant exit 0 and a warning naming base.qcow2", r.code, r.stderr)
	}
	assertFixedVHD(t, filepath.Join(od, "fixed.vhd"))

	// Raw, qcow2 and vhdx targets: chains are flattened.
	for _, df := range []string{"raw", "qcow2", "vhdx"} {
		dst := filepath.Join(e.dir, "r-"+df)
		e.ok("restore", "--repo", repoDir, b.SnapshotID, "--target", dst, "--disk-format", df)
		dd := filepath.Join(dst, src)
		all := append(sortedKeys(imgs), "top.qcow2")
		taken, used := map[string]bool{}, map[string]bool{}
		for _, name := range all {
			taken[name] = true
		}
		for _, name := range all {
			out := filepath.Join(dd, name) // same format keeps the name
			if filepath.Ext(name) != "."+df {
				// dc01.vhdx -> dc01.raw; when that name is another entry's or
				// an earlier conversion's (disk.qcow2, disk.vhdx), dc01.vhdx.raw.
				conv := strings.TrimSuffix(name, filepath.Ext(name)) + "." + df
				if taken[conv] || used[conv] {
					conv = name + "." + df
				}
				used[conv] = true
				out = filepath.Join(dd, conv)
			}
			qcompare(t, filepath.Join(src, name), out)
			if df != "raw" {
				qcheck(t, out)
			}
		}
	}

	// --flatten: the overlay is stored as its merged disk.
	bf := e.backup(repoDir, "--flatten", top)
	flat := filepath.Join(e.dir, "r-flat")
	e.ok("restore", "--repo", repoDir, bf.SnapshotID, "--target", flat)
	ft := filepath.Join(flat, top)
	qcompare(t, top, ft)
	qcheck(t, ft)
	if info := qimg(t, "info", ft); strings.Contains(info, "backing file") {
		t.Errorf("flattened restore still has a backing file:\n%s", info)
	}
	if bf.BytesNew > b.BytesNew/10 {
		t.Errorf("flattened backup of an already backed-up chain added %d bytes (chain backup: %d): no dedupe?", bf.BytesNew, b.BytesNew)
	}
}

func sortedKeys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestDiskDedupeAcrossContainers: must-show 2. The same virtual disk as
// raw, VHDX, VHD and qcow2 adds only format metadata after the first, and
// a thin image is read only where it is allocated.
func TestDiskDedupeAcrossContainers(t *testing.T) {
	needDiskTools(t)
	e := newEnv(t)
	repoDir := e.initRepo()
	dir := filepath.Join(e.dir, "src")
	os.MkdirAll(dir, 0o755)
	raw := filepath.Join(dir, "vm.raw")
	guestImage(t, raw, 1<<30, 48<<20, 2)
	conv := map[string][]string{"vm.vhdx": {"-O", "vhdx"}, "vm.vhd": {"-O", "vpc"}, "vm.qcow2": {"-O", "qcow2"}}
	for name, args := range conv {
		qimg(t, append(append([]string{"convert", "-f", "raw"}, args...), raw, filepath.Join(e.dir, name))...)
	}
	first := e.backup(repoDir, raw)
	t.Logf("raw: %d bytes new, %d read of %d", first.BytesNew, first.BytesRead, first.BytesTotal)
	if first.BytesNew < 40<<20 {
		t.Fatalf("first backup stored only %d bytes", first.BytesNew)
	}
	for _, name := range []string{"vm.vhdx", "vm.vhd", "vm.qcow2"} {
		p := filepath.Join(e.dir, name)
		st, _ := os.Stat(p)
		b := e.backup(repoDir, p)
		pct := 100 * float64(b.BytesNew) / float64(first.BytesNew)
		t.Logf("%s: %d bytes new (%.2f%% of the raw backup), %d bytes read of a %d-byte virtual disk (container file %d bytes)",
			name, b.BytesNew, pct, b.BytesRead, b.BytesTotal, st.Size())
		if pct > 3 {
			t.Errorf("%s added %.2f%% of the first backup; want only format metadata (<3%%)", name, pct)
		}
		// qemu rounds a VHD up to whole CHS cylinders.
		if b.BytesTotal != 1<<30 && !(name == "vm.vhd" && b.BytesTotal > 1<<30 && b.BytesTotal < 1<<30+(16<<20)) {
			t.Errorf("%s: backed up %d bytes, want the virtual size %d", name, b.BytesTotal, 1<<30)
		}
		if name == "vm.qcow2" && b.BytesRead > 2*first.BytesRead {
			t.Errorf("thin qcow2: read %d bytes, the allocated data is about %d", b.BytesRead, first.BytesRead)
		}
		if b.BytesRead > b.BytesTotal/4 {
			t.Errorf("%s: read %d of %d virtual bytes: unallocated space was read", name, b.BytesRead, b.BytesTotal)
		}
	}
	// --no-disk-images: the container is an opaque file again.
	nb := e.backup(repoDir, "--no-disk-images", filepath.Join(e.dir, "vm.vhdx"))
	if nb.BytesTotal == 1<<30 {
		t.Errorf("--no-disk-images still backed up the virtual disk")
	}
}

// TestMountDiskImage: must-show 4. A snapshot is mounted, the raw view of
// a qcow2 image is loop-mounted read-only and a file is read from the
// ext4 inside; a file whose chunks are damaged beyond repair reads EIO.
func TestMountDiskImage(t *testing.T) {
	needDiskTools(t)
	needFUSE(t)
	if os.Geteuid() != 0 {
		t.Fatal("this test loop-mounts the exposed disk image and must run as root (CI does)")
	}
	e := newEnv(t)
	repoDir := e.initRepo("--ec", "4+2", "--pack-size", "4MiB")
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	raw := filepath.Join(e.dir, "guest.raw")
	guestImage(t, raw, 64<<20, 4<<20, 3)
	qimg(t, "convert", "-f", "raw", "-O", "qcow2", raw, filepath.Join(src, "web.qcow2"))
	plain := sample.Binary(rand.New(rand.NewPCG(9, 9)), 24<<20)
	os.WriteFile(filepath.Join(src, "notes.bin"), plain, 0o640)
	if err := syscall.Setxattr(filepath.Join(src, "notes.bin"), "user.origin", []byte("hv01:/srv"), 0); err != nil {
		t.Fatalf("set an extended attribute on the source (ext4 keeps them): %v", err)
	}
	e.backup(repoDir, src)

	mnt := filepath.Join(e.dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	stop := startMount(t, e, mnt, "--repo", repoDir)
	snap := filepath.Join(mnt, "hv01", "latest")
	got, err := os.ReadFile(filepath.Join(snap, src, "notes.bin"))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("read notes.bin through the mount: %v (equal %v)", err, bytes.Equal(got, plain))
	}
	// The recorded extended attributes are served: size probe, value, list.
	notes := filepath.Join(snap, src, "notes.bin")
	if n, err := syscall.Getxattr(notes, "user.origin", nil); err != nil || n != len("hv01:/srv") {
		t.Errorf("size of user.origin through the mount: %d, %v", n, err)
	}
	xv := make([]byte, 64)
	if n, err := syscall.Getxattr(notes, "user.origin", xv); err != nil || string(xv[:n]) != "hv01:/srv" {
		t.Errorf("user.origin through the mount: %q, %v", xv[:max(n, 0)], err)
	}
	if n, err := syscall.Listxattr(notes, xv); err != nil || string(xv[:n]) != "user.origin\x00" {
		t.Errorf("xattr list through the mount: %q, %v", xv[:max(n, 0)], err)
	}
	if _, err := syscall.Getxattr(notes, "user.none", xv); err != syscall.ENODATA {
		t.Errorf("missing attribute through the mount: %v, want ENODATA", err)
	}
	rawView := filepath.Join(snap, src, "web.qcow2.raw")
	st, err := os.Stat(rawView)
	if err != nil || st.Size() != 64<<20 {
		t.Fatalf("raw view of web.qcow2: %v, size %d", err, st.Size())
	}
	guest := filepath.Join(e.dir, "guest")
	os.MkdirAll(guest, 0o755)
	if out, err := exec.Command("mount", "-o", "loop,ro", "-t", "ext4", rawView, guest).CombinedOutput(); err != nil {
		stop()
		t.Fatalf("loop-mount the raw view: %v\n%s", err, out)
	}
	hello, err := os.ReadFile(filepath.Join(guest, "hello.txt"))
	if out, uerr := exec.Command("umount", guest).CombinedOutput(); uerr != nil {
		t.Errorf("umount guest: %v\n%s", uerr, out)
	}
	if err != nil || string(hello) != guestHello {
		t.Errorf("hello.txt from the guest file system: %q, %v", hello, err)
	}
	stop()

	// Damage beyond repair: 3 of the 6 shards of the largest data pack.
	packs := shardFiles(t, repoDir)
	var victim string
	var best int64
	for p, shards := range packs {
		var sz int64
		for _, s := range shards {
			if fi, err := os.Stat(s); err == nil {
				sz += fi.Size()
			}
		}
		if sz > best {
			victim, best = p, sz
		}
	}
	for _, s := range packs[victim][:3] {
		os.Remove(s)
	}
	stop = startMount(t, e, mnt, "--repo", repoDir)
	defer stop()
	f, err := os.Open(filepath.Join(snap, src, "notes.bin"))
	if err != nil {
		t.Fatalf("open notes.bin: %v\nmount's stderr:\n%s", err, stop())
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var rerr error
	var good int64
	for off := int64(0); off < int64(len(plain)); off += int64(len(buf)) {
		n, err := f.ReadAt(buf, off)
		if err != nil {
			rerr = err
			break
		}
		if !bytes.Equal(buf[:n], plain[off:off+int64(n)]) {
			t.Fatalf("read at %d returned wrong bytes instead of an error", off)
		}
		good += int64(n)
	}
	if !errorsIsEIO(rerr) {
		t.Fatalf("reading a file whose pack lost 3 of 6 shards: err %v after %d good bytes, want EIO", rerr, good)
	}
	t.Logf("damaged file: %d bytes read fine, then %v", good, rerr)
}

func errorsIsEIO(err error) bool {
	var pe *os.PathError
	if err == nil {
		return false
	}
	if e, ok := err.(*os.PathError); ok {
		pe = e
		return pe.Err == syscall.EIO
	}
	return strings.Contains(err.Error(), "input/output error")
}

// needFUSE fails the test unless drpipe mount can work here: /dev/fuse
// and fusermount3.
func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("this test mounts a snapshot with FUSE and needs /dev/fuse: %v", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatal("fusermount3 not installed: run 'make deps' (package fuse3)")
	}
}

// startMount runs drpipe mount with flags (e.g. --repo R) in the
// background until the snapshot tree appears; the returned stop sends
// SIGINT, checks a clean unmount and returns what the command wrote to
// standard error.
func startMount(t *testing.T, e *env, mnt string, flags ...string) func() string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	c := e.cmd(ctx, append(append([]string{"mount"}, flags...), mnt)...)
	var se bytes.Buffer
	c.Stderr = &se
	if err := c.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(mnt, "hv01", "latest")); err == nil {
			break
		}
		select {
		case err := <-exited:
			cancel()
			t.Fatalf("drpipe mount exited early: %v\n%s", err, se.String())
		default:
		}
		if time.Now().After(deadline) {
			c.Process.Kill()
			cancel()
			t.Fatalf("mount did not appear in 30s\n%s", se.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopped := false
	return func() string {
		if stopped {
			return se.String()
		}
		stopped = true
		defer cancel()
		c.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("drpipe mount after SIGINT: %v\n%s", err, se.String())
			}
		case <-time.After(30 * time.Second):
			c.Process.Kill()
			t.Errorf("drpipe mount did not exit after SIGINT\n%s", se.String())
		}
		if m, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(m), " "+mnt+" ") {
			t.Errorf("%s is still mounted after drpipe mount exited", mnt)
			exec.Command("fusermount3", "-u", mnt).Run()
		}
		if !strings.Contains(se.String(), "unmounted") {
			t.Errorf("drpipe mount did not report unmounting:\n%s", se.String())
		}
		return se.String()
	}
}

var _ = json.Marshal

// assertFixedVHD checks that path is still a fixed VHD: the file is the
// virtual disk followed by a 512-byte footer whose disk type is 2 (fixed),
// not a dynamic VHD (type 3) with a BAT.
func assertFixedVHD(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	footer := make([]byte, 512)
	if _, err := f.ReadAt(footer, fi.Size()-512); err != nil {
		t.Fatalf("%s: read footer: %v", path, err)
	}
	cookie := string(footer[:8])
	size := int64(binary.BigEndian.Uint64(footer[48:56]))
	typ := binary.BigEndian.Uint32(footer[60:64])
	if cookie != "conectix" || typ != 2 || fi.Size() != size+512 {
		t.Errorf("%s restored as cookie %q, disk type %d, file %d bytes for a %d-byte disk; want a fixed VHD (type 2, disk + 512-byte footer)", path, cookie, typ, fi.Size(), size)
	}
}

// TestLayerMapSurvivesPrune: an overlay whose layer map is too long to
// keep in its node (more than 256 runs) stores the map in a blob of its
// own. A later backup reuses the unchanged overlay's record while its
// directory's tree changes; once the first snapshot is forgotten and
// pruned, the map must still be there. It was not known to prune (the
// pack holding it and the old trees was deleted, restore then failed
// with "load layer map ... not in any index") nor to check.
func TestLayerMapSurvivesPrune(t *testing.T) {
	needDiskTools(t)
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "images")
	os.MkdirAll(src, 0o755)
	base := filepath.Join(src, "base.qcow2")
	qimg(t, "create", "-q", "-f", "qcow2", base, "64M")
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64M", base).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	top := filepath.Join(src, "top.qcow2")
	qimg(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	args := []string{"-f", "qcow2"}
	for c := 0; c < 600; c += 2 { // every other 64 KiB cluster: 300 runs
		args = append(args, "-c", fmt.Sprintf("write -P 0x22 %d 64k", c<<16))
	}
	if out, err := exec.Command("qemu-io", append(args, top)...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	first := e.backup(repoDir, src)
	os.WriteFile(filepath.Join(src, "notes.txt"), []byte("changes the directory's tree"), 0o644)
	second := e.backup(repoDir, src)
	e.ok("forget", "--repo", repoDir, first.SnapshotID)
	e.ok("prune", "--repo", repoDir, "--grace", "0")
	e.ok("check", "--repo", repoDir)
	dst := filepath.Join(e.dir, "restored")
	e.ok("restore", "--repo", repoDir, second.SnapshotID, "--target", dst)
	qcompare(t, top, filepath.Join(dst, top))
}

// TestMountWarnsOfUnreadableSnapshots: a snapshot that cannot be read is
// left out of the mount, and the user is told that latest may then not
// be the newest snapshot.
func TestMountWarnsOfUnreadableSnapshots(t *testing.T) {
	needFUSE(t)
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("first"), 0o644)
	older := e.backup(repoDir, src)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("second"), 0o644)
	newer := e.backup(repoDir, src)
	var olderTime string
	for _, s := range e.snapshotsJSON(repoDir) {
		if s["id"] == older.SnapshotID {
			tm, err := time.Parse(time.RFC3339Nano, s["time"].(string))
			if err != nil {
				t.Fatal(err)
			}
			olderTime = tm.UTC().Format("2006-01-02T15:04:05Z")
		}
	}
	if olderTime == "" {
		t.Fatalf("snapshot %s not listed", older.SnapshotID)
	}
	obj := filepath.Join(repoDir, "snapshots", newer.SnapshotID)
	os.Chmod(obj, 0o600)
	if err := os.WriteFile(obj, bytes.Repeat([]byte{0x5a}, 200), 0o600); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(e.dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	stop := startMount(t, e, mnt, "--repo", repoDir)
	link, err := os.Readlink(filepath.Join(mnt, "hv01", "latest"))
	got, rerr := os.ReadFile(filepath.Join(mnt, "hv01", "latest", src, "a.txt"))
	stderr := stop()
	if err != nil || link != olderTime || rerr != nil || string(got) != "first" {
		t.Errorf("latest -> %q (%v), a.txt %q (%v); want the older snapshot %s", link, err, got, rerr, olderTime)
	}
	if !strings.Contains(stderr, "some snapshots could not be read") || !strings.Contains(stderr, newer.SnapshotID[:8]) {
		t.Errorf("mount did not warn about the unreadable snapshot %s:\n%s", newer.SnapshotID[:8], stderr)
	}
}

// TestMountPointMustBeAnEmptyDirectory: a mount point that is missing,
// not a directory, or holds files is refused with a usage error naming
// it (exit 2), instead of the snapshots being mounted over the files it
// holds, which then vanish from view until the unmount.
func TestMountPointMustBeAnEmptyDirectory(t *testing.T) {
	needFUSE(t)
	e := newEnv(t)
	repoDir := e.initRepo()
	full := filepath.Join(e.dir, "full")
	os.MkdirAll(full, 0o755)
	file := writeFile(t, full, "notes.txt", "kept")
	for _, c := range []struct{ dir, want string }{
		{filepath.Join(e.dir, "none"), "must be an existing directory"},
		{file, "must be an existing directory"},
		{full, "is not empty"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var se bytes.Buffer
		c2 := e.cmd(ctx, "mount", "--repo", repoDir, c.dir)
		c2.Stderr = &se
		err := c2.Run()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(se.String(), c.want) || !strings.Contains(se.String(), c.dir) {
			t.Errorf("mount at %s: %v, stderr:\n%s\nwant exit 2 with %q", c.dir, err, se.String(), c.want)
		}
		if ctx.Err() != nil {
			exec.Command("umount", "-l", c.dir).Run()
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "kept" {
		t.Errorf("%s after the refused mount: %q, %v", file, b, err)
	}
}

// TestLayerRestoreNotices: a layer is kept only where its parent keeps its
// name, and the notice after a restore says what is wrong with the parent
// a restored layer names (found by review):
//  1. a qcow2 overlay over a VHDX parent, restored with --disk-format
//     qcow2: the parent becomes base.qcow2, so the overlay is flattened
//     and opens;
//  2. a qcow2 overlay over qcow2 restored alone with --disk-format qcow2
//     stays a layer, and the notice does not suggest qcow2 to flatten it;
//  3. an overlay naming its parent by an absolute path, restored into a
//     target: alone, it would read the live source file; with the chain,
//     it still names the live file, not the restored one.
func TestLayerRestoreNotices(t *testing.T) {
	needDiskTools(t)
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "images")
	os.MkdirAll(src, 0o755)
	qimg(t, "create", "-q", "-f", "vhdx", filepath.Join(src, "base.vhdx"), "16M")
	qimg(t, "create", "-q", "-f", "qcow2", "-b", "base.vhdx", "-F", "vhdx", filepath.Join(src, "top.qcow2"))
	qimg(t, "create", "-q", "-f", "qcow2", filepath.Join(src, "b2.qcow2"), "16M")
	qimg(t, "create", "-q", "-f", "qcow2", "-b", "b2.qcow2", "-F", "qcow2", filepath.Join(src, "t2.qcow2"))
	qimg(t, "create", "-q", "-f", "qcow2", filepath.Join(src, "ab.qcow2"), "16M")
	qimg(t, "create", "-q", "-f", "qcow2", "-b", filepath.Join(src, "ab.qcow2"), "-F", "qcow2", filepath.Join(src, "at.qcow2"))
	for _, f := range []string{"top.qcow2", "t2.qcow2", "at.qcow2"} {
		if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x6b 1M 2M", filepath.Join(src, f)).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io: %v\n%s", err, out)
		}
	}
	b := e.backup(repoDir, src)

	d1 := filepath.Join(e.dir, "r1")
	r := e.run("restore", "--repo", repoDir, b.SnapshotID, "--target", d1, "--disk-format", "qcow2")
	if r.code != 0 || strings.Contains(r.stderr, "top.qcow2: restored as a layer") {
		t.Errorf("case 1: exit %d, stderr:\n%s\nwant exit 0 and no notice for top.qcow2", r.code, r.stderr)
	}
	if out, err := exec.Command("qemu-img", "info", "--backing-chain", filepath.Join(d1, src, "top.qcow2")).CombinedOutput(); err != nil || strings.Contains(string(out), "backing file") {
		t.Errorf("case 1: top.qcow2 after a whole restore to qcow2: %v\n%s\nwant a self-contained disk", err, out)
	}
	qcompare(t, filepath.Join(src, "top.qcow2"), filepath.Join(d1, src, "top.qcow2"))

	d2 := filepath.Join(e.dir, "r2")
	r = e.run("restore", "--repo", repoDir, b.SnapshotID, "--target", d2, "--disk-format", "qcow2", "--path", filepath.Join(src, "t2.qcow2"))
	if r.code != 0 || !strings.Contains(r.stderr, "t2.qcow2: restored as a layer over "+filepath.Join(d2, src, "b2.qcow2")+", which is not there") || strings.Contains(r.stderr, "or qcow2") {
		t.Errorf("case 2: exit %d, stderr:\n%s\nwant a notice naming b2.qcow2 that does not suggest qcow2", r.code, r.stderr)
	}

	d3 := filepath.Join(e.dir, "r3")
	r = e.run("restore", "--repo", repoDir, b.SnapshotID, "--target", d3, "--path", filepath.Join(src, "at.qcow2"))
	if r.code != 0 || !strings.Contains(r.stderr, "restored as a layer over "+filepath.Join(src, "ab.qcow2")+", outside the restore target") {
		t.Errorf("case 3, overlay alone: exit %d, stderr:\n%s\nwant a notice that it reads the live parent", r.code, r.stderr)
	}
	d4 := filepath.Join(e.dir, "r4")
	r = e.run("restore", "--repo", repoDir, b.SnapshotID, "--target", d4, "--path", filepath.Join(src, "at.qcow2"), "--path", filepath.Join(src, "ab.qcow2"))
	if r.code != 0 || !strings.Contains(r.stderr, "the restored parent is "+filepath.Join(d4, src, "ab.qcow2")) {
		t.Errorf("case 3, with its parent: exit %d, stderr:\n%s\nwant a notice naming the restored parent", r.code, r.stderr)
	}
}

// TestMountBusyAtCtrlC: Ctrl-C while a program still has its working
// directory in the mount used to fail the unmount, exit, and leave a dead
// mount point ("transport endpoint is not connected"). The mount point is
// now detached lazily, drpipe keeps serving the program until it leaves,
// then exits 0.
func TestMountBusyAtCtrlC(t *testing.T) {
	needFUSE(t)
	e := newEnv(t)
	repoDir := e.initRepo()
	src := filepath.Join(e.dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("inside"), 0o644)
	e.backup(repoDir, src)
	mnt := filepath.Join(e.dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	stop := startMount(t, e, mnt, "--repo", repoDir)
	defer stop()
	inside := filepath.Join(mnt, "hv01", "latest", src)
	sh := exec.Command("sh", "-c", "read x; cat a.txt") // waits in the mount until told
	sh.Dir = inside
	stdin, _ := sh.StdinPipe()
	var out bytes.Buffer
	sh.Stdout = &out
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer sh.Process.Kill()
	mounted := func() bool {
		b, _ := os.ReadFile("/proc/self/mountinfo")
		return strings.Contains(string(b), " "+mnt+" ")
	}
	// stop() sends SIGINT and waits for drpipe to exit; it must not
	// exit while the shell is inside, so run it aside.
	stderr := make(chan string, 1)
	go func() { stderr <- stop() }()
	deadline := time.Now().Add(20 * time.Second)
	for mounted() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if mounted() {
		t.Fatalf("the busy mount point is still mounted 20 s after Ctrl-C")
	}
	select {
	case se := <-stderr:
		t.Fatalf("drpipe mount exited while a program was still inside the mount:\n%s", se)
	default:
	}
	io.WriteString(stdin, "go\n") // the shell reads from the detached mount, then leaves
	stdin.Close()
	if err := sh.Wait(); err != nil || out.String() != "inside" {
		t.Errorf("the program inside the detached mount: %v, read %q", err, out.String())
	}
	select {
	case se := <-stderr:
		if !strings.Contains(se, "still in use: detached") || !strings.Contains(se, "unmounted") {
			t.Errorf("drpipe mount's messages:\n%s", se)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("drpipe mount did not exit after the last program left the detached mount")
	}
}

// TestMountReadersInterruptedBySignals: the kernel interrupts a FUSE
// request when a signal reaches the thread waiting on it (the Go
// runtime's preemption signal, SIGURG, does so to Go readers; a SIGCHLD
// may). The request must still be answered with its data: abandoning
// it failed the reader with EIO (TestMountDiskImage failed in CI with
// "open notes.bin: input/output error" and no read error reported by
// the mount). Here the reading thread gets SIGURG every 200 µs, so
// nearly every request is interrupted; each round drops the kernel's
// caches (as root) so that every directory is looked up again.
func TestMountReadersInterruptedBySignals(t *testing.T) {
	needFUSE(t)
	e := newEnv(t)
	e.extra = append(e.extra, "DRPIPE_MOUNT_CACHE_SIZE=4MiB")
	repoDir := e.initRepo("--pack-size", "4MiB")
	src := filepath.Join(e.dir, "src")
	rng := rand.New(rand.NewPCG(31, 32))
	want := map[string][]byte{}
	for d := range 20 {
		dir := filepath.Join(src, fmt.Sprintf("d%02d", d))
		os.MkdirAll(dir, 0o755)
		for f := range 8 {
			b := sample.Binary(rng, 2048+rng.IntN(64<<10))
			if d == 0 && f == 0 {
				b = sample.Binary(rng, 16<<20)
			}
			p := filepath.Join(dir, fmt.Sprintf("f%d", f))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			want[p] = b
		}
	}
	e.backup(repoDir, src)
	mnt := filepath.Join(e.dir, "mnt")
	os.MkdirAll(mnt, 0o755)
	stop := startMount(t, e, mnt, "--repo", repoDir)
	defer stop()

	snap := filepath.Join(mnt, "hv01", "latest")
	type outcome struct {
		rounds   int
		failures []string
	}
	tid := make(chan int, 1)
	res := make(chan outcome, 1)
	go func() {
		runtime.LockOSThread() // the signals go to this thread
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		var o outcome
		for end := time.Now().Add(4 * time.Second); time.Now().Before(end) && len(o.failures) == 0; o.rounds++ {
			os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) // as root only; the first round counts anyway
			for p, b := range want {
				got, err := os.ReadFile(filepath.Join(snap, p))
				if err != nil {
					o.failures = append(o.failures, err.Error())
				} else if !bytes.Equal(got, b) {
					o.failures = append(o.failures, p+": wrong bytes")
				}
			}
		}
		res <- o
	}()
	reader := <-tid
	var o outcome
	signals := 0
	for tick := time.NewTicker(200 * time.Microsecond); ; signals++ {
		select {
		case o = <-res:
			tick.Stop()
		case <-tick.C:
			unix.Tgkill(os.Getpid(), reader, unix.SIGURG)
			continue
		}
		break
	}
	if len(o.failures) > 0 {
		t.Fatalf("reading through the mount while signals arrive, round %d: %s\nmount's stderr:\n%s", o.rounds, strings.Join(o.failures, "\n"), stop())
	}
	if se := stop(); strings.Contains(se, "read error") {
		t.Errorf("interrupted requests were reported as read errors:\n%s", se)
	}
	t.Logf("%d rounds of %d files, %d signals", o.rounds, len(want), signals)
}
