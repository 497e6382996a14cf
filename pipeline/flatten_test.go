package pipeline

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreFlattenLayers: with Flatten, an overlay restored without its
// parent is a self-contained disk with the overlay's content; without it,
// the overlay stays a layer and the restore notes the missing parent.
func TestRestoreFlattenLayers(t *testing.T) {
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed: run 'make deps' (package qemu-utils)", tool)
		}
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "vms")
	os.MkdirAll(src, 0o755)
	base, top := filepath.Join(src, "base.qcow2"), filepath.Join(src, "top.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", base)
	run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 2M 4M", top)
	res, err := Backup(ctx, r, BackupOptions{Host: "h", Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	for _, flatten := range []bool{true, false} {
		dst := filepath.Join(t.TempDir(), "dst")
		rr, err := Restore(ctx, r, res.Snapshot, RestoreOptions{Target: dst, Include: []string{top}, Flatten: flatten})
		if err != nil {
			t.Fatalf("flatten %v: %v", flatten, err)
		}
		got := filepath.Join(dst, top)
		info := run("qemu-img", "info", got)
		if flatten {
			if strings.Contains(info, "backing file") || len(rr.Notices) != 0 {
				t.Errorf("flattened restore: notices %v, image:\n%s\nwant a self-contained image and no notice", rr.Notices, info)
			}
			run("qemu-img", "compare", "-q", top, got)
			continue
		}
		if !strings.Contains(info, "backing file: base.qcow2") || len(rr.Notices) != 1 || !strings.Contains(rr.Notices[0].Err.Error(), "which is not there") {
			t.Errorf("layer restore: notices %v, image:\n%s\nwant the layer and one notice about base.qcow2", rr.Notices, info)
		}
	}
}
