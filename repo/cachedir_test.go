package repo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drpipe/drpipe/tiers/tierstest"
)

// Without $HOME the cache falls back to the temporary directory, which
// anyone may write: a directory someone else prepared there (here: one
// everyone may write) is refused, not used.
func TestSharedCacheFallbackMustBePrivate(t *testing.T) {
	be := tierstest.NewMemory()
	testRepo(t, be, InitOptions{}).Close()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("HOME", "")
	t.Setenv("XDG_CACHE_HOME", "")
	planted := filepath.Join(tmp, fmt.Sprintf("drpipe-cache-%d", os.Getuid()))
	if err := os.Mkdir(planted, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(planted, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	_, err := Open(context.Background(), be, Options{Password: []byte("pw"), KDF: testKDF})
	if err == nil || !strings.Contains(err.Error(), "not private") {
		t.Fatalf("open with a world-writable cache fallback: %v, want a refusal", err)
	}
	if err := os.Chmod(planted, 0o700); err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), be, Options{Password: []byte("pw"), KDF: testKDF})
	if err != nil {
		t.Fatalf("open with a private cache fallback: %v", err)
	}
	r.Close()
}
