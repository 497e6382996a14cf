package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A restore from the bucket counts only when all it restored matches the
// source, the file tree as well as disk.raw: a restore that left a tree
// file out, changed one or added one fails.
func TestS3RestoreComparesTheTree(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	target := filepath.Join(dir, "restore")
	for name, data := range map[string]string{"disk.raw": "disk", "tree/a": "alpha", "tree/d/b": "beta"} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	restored := filepath.Join(target, strings.TrimPrefix(src, "/"))
	ctx := context.Background()
	for _, c := range []struct{ name, script string }{
		{"a tree file left out", "rm " + filepath.Join(restored, "tree", "a")},
		{"a tree file changed", "echo betA > " + filepath.Join(restored, "tree", "d", "b")},
		{"a file the source lacks", "echo x > " + filepath.Join(restored, "tree", "extra")},
	} {
		os.RemoveAll(target)
		// The fake restore copies the source, then spoils it.
		script := "mkdir -p " + filepath.Dir(restored) + " && cp -r " + src + " " + restored + " && " + c.script
		if _, err := s3Restore(ctx, nil, "fake", src, target, "sh", "-c", script); err == nil {
			t.Errorf("a restore with %s passed", c.name)
		}
	}
	os.RemoveAll(target)
	script := "mkdir -p " + filepath.Dir(restored) + " && cp -r " + src + " " + restored
	if _, err := s3Restore(ctx, nil, "fake", src, target, "sh", "-c", script); err != nil {
		t.Errorf("a whole restore: %v", err)
	}
}
