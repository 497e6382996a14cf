package pipeline

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// TestRestoreDeltaGroupWritableByAnotherGroup: the snapshot records a
// root:root 0664 file; in the target it is root:4242 0664, so every member
// of group 4242 could have opened it for writing before the restore and
// keep writing after. The group bits count only for the recorded group:
// the file is replaced, not written in place.
func TestRestoreDeltaGroupWritableByAnotherGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	p := filepath.Join(src, "f")
	os.WriteFile(p, []byte("snapshot content"), 0o664)
	os.Chmod(p, 0o664)
	os.Chown(p, 0, 0)
	sn, dst := backupRestore(t, r, src)
	at := filepath.Join(dst, p)
	if err := os.Chown(at, 0, 4242); err != nil {
		t.Fatal(err)
	}
	os.Chmod(at, 0o664)
	// A member of group 4242 opens it for writing now ...
	held, err := os.OpenFile(at, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := Restore(ctx, r, sn, RestoreOptions{Target: dst, Delta: true}); err != nil {
		t.Fatal(err)
	}
	a, _ := held.Stat()
	b, _ := os.Stat(at)
	if os.SameFile(a, b) {
		held.WriteAt([]byte("WRITTEN BY GROUP 4242"), 0)
		got, _ := os.ReadFile(at)
		t.Errorf("a file group 4242 could write (root:4242 0664, snapshot root:0 0664) was reused; a descriptor opened before the restore now writes the restored file: %q", got)
	}
}

// TestRestoreDeltaAllocatedZerosStayAllocated: where the snapshot has a
// hole a full restore leaves a hole, and so does a delta restore over a
// copy that holds allocated zeros there (a copy made without holes, a
// preallocated disk image): the zeros are punched, not kept as equal.
func TestRestoreDeltaAllocatedZerosStayAllocated(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 3))
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	p := filepath.Join(src, "sparse")
	f, _ := os.Create(p)
	f.WriteAt(sample.Binary(rng, 1<<20), 0)
	f.WriteAt(sample.Binary(rng, 1<<20), 33<<20)
	f.Close()
	sn, dst := backupRestore(t, r, src)
	at := filepath.Join(dst, p)
	// Fill the hole with allocated zeros, as a non-sparse copy would.
	g, _ := os.OpenFile(at, os.O_WRONLY, 0)
	if err := unix.Fallocate(int(g.Fd()), unix.FALLOC_FL_ZERO_RANGE, 1<<20, 32<<20); err != nil {
		g.WriteAt(make([]byte, 32<<20), 1<<20)
	}
	g.Close()
	before, _ := sample.AllocatedBytes(at)
	if _, err := Restore(ctx, r, sn, RestoreOptions{Target: dst, Delta: true}); err != nil {
		t.Fatal(err)
	}
	compare(t, src, filepath.Join(dst, src))
	srcAlloc, _ := sample.AllocatedBytes(p)
	after, _ := sample.AllocatedBytes(at)
	if after > srcAlloc+(1<<20) {
		t.Errorf("preallocated: after the delta restore the file has %d bytes allocated (before %d), the snapshot's %d: the snapshot's hole stays allocated", after, before, srcAlloc)
	}
	// Zeros written (a copy made without holes).
	g, _ = os.OpenFile(at, os.O_WRONLY, 0)
	g.WriteAt(make([]byte, 32<<20), 1<<20)
	g.Close()
	before, _ = sample.AllocatedBytes(at)
	if _, err := Restore(ctx, r, sn, RestoreOptions{Target: dst, Delta: true}); err != nil {
		t.Fatal(err)
	}
	compare(t, src, filepath.Join(dst, src))
	after, _ = sample.AllocatedBytes(at)
	if after > srcAlloc+(1<<20) {
		t.Errorf("written zeros: after the delta restore the file has %d bytes allocated (before %d), the snapshot's %d: the snapshot's hole stays allocated", after, before, srcAlloc)
	}
}

// TestRestoreDeltaUnremovableSecurityXattr: a delta restore removes the
// extended attributes the snapshot lacks, but one of the security
// namespace that cannot be removed (without CAP_SYS_ADMIN never, EPERM;
// security.selinux by no one on an SELinux host, EACCES) is left, as a new
// file would carry the policy's label, and does not fail the file. Run
// here without SELinux: a non-root delta restore over a file with a
// security.* attribute.
func TestRestoreDeltaUnremovableSecurityXattr(t *testing.T) {
	if phase := os.Getenv("DRPIPE_TEST_DELTA_PHASE"); phase != "" {
		deltaChild(t, phase)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (to run a phase as nobody and to set a security.* attribute)")
	}
	base, err := os.MkdirTemp("", "drpipe-delta-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o755)
	os.Chown(base, 65534, 65534)
	// The test binary, where nobody may run it.
	bin := filepath.Join(base, "pipeline.test")
	if b, err := os.ReadFile(os.Args[0]); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatalf("copy the test binary: %v", err)
	}
	run := func(phase string) (string, error) {
		cmd := exec.Command(bin, "-test.run=^TestRestoreDeltaUnremovableSecurityXattr$", "-test.v")
		cmd.Env = append(os.Environ(), "DRPIPE_TEST_DELTA_PHASE="+phase, "DRPIPE_TEST_DELTA_BASE="+base, "HOME="+base, "XDG_CACHE_HOME="+base+"/cache")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("setup"); err != nil {
		t.Fatalf("setup as nobody: %v\n%s", err, out)
	}
	f := filepath.Join(base, "dst", base, "src", "f")
	if err := unix.Setxattr(f, "security.drpipetest", []byte("label"), 0); err != nil {
		t.Skipf("cannot set a security.* attribute here: %v", err)
	}
	out, err := run("delta")
	if err != nil {
		t.Errorf("delta restore as nobody over a file with a security.* attribute the snapshot lacks: %v\n%s", err, out)
	}
}

func deltaChild(t *testing.T, phase string) {
	ctx := context.Background()
	base := os.Getenv("DRPIPE_TEST_DELTA_BASE")
	be, err := tiers.NewLocal(filepath.Join(base, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	ro := repo.Options{Password: []byte("pw"), CacheDir: filepath.Join(base, "cache"), KDF: fastKDF}
	src := filepath.Join(base, "src")
	dst := filepath.Join(base, "dst")
	if phase == "setup" {
		r, err := repo.Init(ctx, be, repo.InitOptions{EC: erasure.Params{K: 3, M: 2}, PackSize: 1 << 20}, ro)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		os.MkdirAll(src, 0o755)
		os.WriteFile(filepath.Join(src, "f"), []byte("content"), 0o644)
		res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
			t.Fatal(err)
		}
		return
	}
	r, err := repo.Open(ctx, be, ro)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sn, err := r.FindSnapshot(ctx, "latest", "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Restore(ctx, r, sn, RestoreOptions{Target: dst, Delta: true})
	if err != nil {
		for _, f := range res.Failed {
			t.Logf("failed: %s: %v", f.Path, f.Err)
		}
		t.Fatal(err)
	}
}

// TestRestoreDeltaReadableByOthers: the snapshot records a 0600 file; in
// the target it is 0644 (an older copy, before its mode was tightened).
// Anyone who opened it for reading before the restore would read the
// restored, private content through that descriptor: the file is
// replaced by a fresh 0600 inode, as a full restore does, not written in
// place.
func TestRestoreDeltaReadableByOthers(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	p := filepath.Join(src, "key")
	secret := []byte("-----BEGIN PRIVATE KEY----- snapshot secret")
	os.WriteFile(p, secret, 0o600)
	sn, dst := backupRestore(t, r, src)
	at := filepath.Join(dst, p)
	os.WriteFile(at, []byte("an older, public version of the file......."), 0o644)
	os.Chmod(at, 0o644)
	// Another user opens it now (o+r allows it) ...
	held, err := os.Open(at)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := Restore(ctx, r, sn, RestoreOptions{Target: dst, Delta: true}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(secret))
	n, _ := held.ReadAt(got, 0)
	if string(got[:n]) == string(secret) {
		t.Errorf("a descriptor opened while the file was 0644 reads the restored 0600 content: %q", got[:n])
	}
}

// TestRestoreDeltaBindMountedFile: a file bind-mounted over a restored
// file is not written in place (that would write the mount's source,
// outside the target); the restore treats it as a full restore does.
func TestRestoreDeltaBindMountedFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount --bind)")
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "f"), []byte("snapshot content"), 0o644)
	sn, dst := backupRestore(t, r, src)
	outside := filepath.Join(t.TempDir(), "outside")
	os.WriteFile(outside, []byte("outside, not to be written"), 0o644)
	at := filepath.Join(dst, src, "f")
	if err := unix.Mount(outside, at, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount a file here: %v", err)
	}
	defer unix.Unmount(at, unix.MNT_DETACH)
	rr, _ := Restore(ctx, r, sn, RestoreOptions{Target: dst, Delta: true})
	if b, _ := os.ReadFile(outside); string(b) != "outside, not to be written" {
		t.Errorf("the bind mount's source now holds %q", b)
	}
	if rr == nil || rr.FilesKept != 0 {
		t.Errorf("delta restore kept files in place: %+v", rr)
	}
}
