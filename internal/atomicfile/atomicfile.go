// Package atomicfile owns replacing a small local file so that readers,
// and a crash at any point, see either the old content or the new one in
// full: the catalogs and library state of the tape tier, the definitions,
// scripts and records the DR-site bring-up writes. (Repository objects go
// through tiers.Backend, whose local directory backend does the same for
// its own objects.)
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFile replaces path with data durably: it writes a temporary file
// beside it, syncs it, gives it mode perm, renames it over path and
// syncs the directory. On error the temporary file is removed and path is
// as it was (unless only the directory sync failed: the error says so). A
// file system that cannot sync a directory at all (EINVAL, ENOTSUP) is
// not an error.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, perm)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s to sync it after writing %s: %w", dir, filepath.Base(path), err)
	}
	err = syncDir(d)
	d.Close()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		// The file system has no sync for directories (VirtualBox shared
		// folders, some 9p mounts): the rename is as durable as it can
		// make it.
		err = nil
	}
	if err != nil {
		return fmt.Errorf("sync directory %s after writing %s: %w", dir, filepath.Base(path), err)
	}
	return nil
}

// syncDir syncs an open directory; tests stand in for a file system
// without directory sync.
var syncDir = (*os.File).Sync
