package mount

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/pipeline"
)

// TestSymlinkKeepsItsAttributes: a symlink shows its recorded owner,
// times and extended attributes, not only in the reply to the lookup
// that found it but also once the kernel asks for its attributes again
// (after the attribute timeout), as cp -a or tar copying it out do.
func TestSymlinkKeepsItsAttributes(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	r := testRepo(t)
	src := t.TempDir()
	link := filepath.Join(src, "link")
	if err := os.Symlink("some/target", link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(link, "trusted.note", []byte("kept"), 0); err != nil {
		t.Fatalf("set an attribute on the symlink: %v", err)
	}
	mtime := time.Date(2020, 3, 4, 5, 6, 7, 0, time.UTC)
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, link, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "h", Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	mnt := mountForTest(t, r)
	p := filepath.Join(mnt, "h", "latest", src, "link")

	// An O_PATH descriptor makes the kernel ask for the attributes of
	// the inode itself (GETATTR) rather than look the name up again.
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	check := func(when string) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("%s: owner %d:%d, want 1234:5678", when, st.Uid, st.Gid)
		}
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", when, got.UTC(), mtime)
		}
		if st.Size != int64(len("some/target")) {
			t.Errorf("%s: size %d, want %d", when, st.Size, len("some/target"))
		}
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(p, "trusted.note", buf)
		if err != nil || string(buf[:n]) != "kept" {
			t.Errorf("%s: trusted.note = %q, %v; want kept", when, buf[:max(n, 0)], err)
		}
	}
	check("right after lookup")
	time.Sleep(1500 * time.Millisecond) // past the attribute timeout
	check("after the attribute timeout")
}

// TestSpecialModeBitsAreShown: a setuid or setgid program and a sticky
// directory show those bits, as the snapshot recorded them and restore
// sets them, not only their permission bits.
func TestSpecialModeBitsAreShown(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	r := testRepo(t)
	src := t.TempDir()
	want := map[string]uint32{"suid": unix.S_ISUID | 0o750, "sgid": unix.S_ISGID | 0o755, "tmp": unix.S_ISVTX | 0o777}
	for _, n := range []string{"suid", "sgid"} {
		if err := os.WriteFile(filepath.Join(src, n), []byte("#!/bin/sh\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(src, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	for n, m := range want {
		if err := unix.Chmod(filepath.Join(src, n), m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "h", Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	mnt := mountForTest(t, r)
	for n, m := range want {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, "h", "latest", src, n), &st); err != nil {
			t.Fatal(err)
		}
		if got := st.Mode &^ unix.S_IFMT; got != m {
			t.Errorf("%s: mode %04o, want %04o", n, got, m)
		}
	}
}
