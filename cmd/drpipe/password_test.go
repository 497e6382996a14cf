package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A password file is read up to maxSecretFile bytes: a larger one, or a
// device that never ends, is refused, not read until memory runs out.
func TestPasswordFileIsReadUpToABound(t *testing.T) {
	dir := t.TempDir()
	fit := filepath.Join(dir, "fit")
	key := bytes.Repeat([]byte{'k'}, maxSecretFile-2)
	if err := os.WriteFile(fit, append(key, "\r\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := readSecretFile(fit); err != nil || !bytes.Equal(p, key) {
		t.Fatalf("key file of %d bytes with CRLF: %d bytes, %v", maxSecretFile, len(p), err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, append(key, "kkk"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readSecretFile(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("file of %d bytes: %v, want refused as too large", maxSecretFile+1, err)
	}
}
