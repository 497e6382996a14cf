package pipeline

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestChangeInTheSameSecondIsReadAgain: on a file system that keeps whole
// seconds (ext4 with 128-byte inodes here, FAT, HFS+; and within a clock
// tick any file system on kernels before Linux 6.13), a file rewritten
// at the same size right after a backup read it keeps its size, times and
// inode. The next backup must read it again rather than keep the content
// of the first.
func TestChangeInTheSameSecondIsReadAgain(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount -o loop)")
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-I", "128", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 (run 'make deps', package e2fsprogs): %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount a file system here: %v: %s", err, out)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	src := filepath.Join(mnt, "src")
	os.Mkdir(src, 0o755)
	p := filepath.Join(src, "f")

	ctx := context.Background()
	r, _ := newRepo(t)
	for try := 0; ; try++ {
		// Early in a second, so that both writes and the backup between
		// them fall in it.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
		start := time.Now()
		if err := os.WriteFile(p, []byte("version 1"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}}); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("version 2"), 0o644); err != nil {
			t.Fatal(err)
		}
		if time.Now().Truncate(time.Second).Equal(start.Truncate(time.Second)) {
			break
		}
		if try == 3 {
			t.Skip("the backup took longer than a second each time")
		}
	}
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if _, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dst, p))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "version 2" {
		t.Errorf("second backup holds %q for a file that reads %q: the change was skipped", got, "version 2")
	}
}
