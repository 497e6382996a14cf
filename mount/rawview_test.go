package mount

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/pipeline"
)

// TestRawViewServesTheVirtualDisk: the raw view of a qcow2 overlay whose
// parent is in the same snapshot reads, at any offset and from many
// readers at once, exactly what qemu-img makes of the chain, ends at the
// virtual size, and keeps the same attributes however the kernel asks
// for them.
func TestRawViewServesTheVirtualDisk(t *testing.T) {
	needFUSE(t)
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: run 'make deps' (package qemu-utils)", tool)
		}
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	ctx := context.Background()
	r := testRepo(t)
	src := t.TempDir()
	base, top := filepath.Join(src, "base.qcow2"), filepath.Join(src, "top.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 5M", base)
	run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top, "24M")
	run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 3M 4M", "-c", "write -P 0x33 15M 3M", top)
	if err := os.Chmod(top, 0o600); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(t.TempDir(), "want.raw")
	run("qemu-img", "convert", "-O", "raw", top, want)
	wantb, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "h", Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	mnt := mountForTest(t, r)
	p := filepath.Join(mnt, "h", "latest", src, "top.qcow2.raw")

	var lookup unix.Stat_t
	if err := unix.Stat(p, &lookup); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantb) {
		t.Fatalf("raw view: %d bytes differ from qemu-img's %d", len(got), len(wantb))
	}

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			buf := make([]byte, 300<<10)
			for range 50 {
				off := rng.Int64N(int64(len(wantb)) + 1<<20)
				n, err := f.ReadAt(buf[:1+rng.IntN(len(buf))], off)
				if err != nil && err != io.EOF {
					t.Errorf("read at %d: %v", off, err)
					return
				}
				end := min(off+int64(n), int64(len(wantb)))
				if off >= int64(len(wantb)) {
					if n != 0 {
						t.Errorf("read at %d past the end: %d bytes", off, n)
					}
					continue
				}
				if !bytes.Equal(buf[:n], wantb[off:end]) {
					t.Errorf("read at %d (+%d) differs", off, n)
				}
			}
		})
	}
	wg.Wait()

	time.Sleep(1500 * time.Millisecond) // past the attribute timeout
	var later unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &later); err != nil {
		t.Fatal(err)
	}
	if lookup.Mode != later.Mode || lookup.Size != later.Size || lookup.Size != int64(len(wantb)) {
		t.Errorf("raw view: mode %o size %d at lookup, mode %o size %d later; want one mode and size %d", lookup.Mode, lookup.Size, later.Mode, later.Size, len(wantb))
	}
	// What the two layers hold, and holes around it: 0-5M in the
	// parent, 3-7M and 15-18M in the overlay.
	const mib = 1 << 20
	if runs, want := dataRuns(t, int(f.Fd()), int64(len(wantb))), [][2]int64{{0, 7 * mib}, {15 * mib, 18 * mib}}; !slices.Equal(runs, want) {
		t.Errorf("raw view: data runs %v, want %v", runs, want)
	}
	if later.Blocks != 10*mib/512 {
		t.Errorf("raw view: %d blocks once open, want %d (the 10 MiB the layers hold)", later.Blocks, 10*mib/512)
	}
}
