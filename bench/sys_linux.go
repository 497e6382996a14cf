package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dataAt reports whether offset off of f lies in an allocated range.
func dataAt(f *os.File, off int64) (bool, error) {
	d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if err != nil {
		return false, nil
	}
	return d == off, nil
}

// fillRusage sets m's peak RSS and CPU times from the child's rusage.
func fillRusage(c *exec.Cmd, m *Measurement) {
	if c.ProcessState == nil {
		return
	}
	if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.MaxRSS = ru.Maxrss * 1024
		m.UserCPU = time.Duration(ru.Utime.Nano())
		m.SysCPU = time.Duration(ru.Stime.Nano())
	}
}

// touchCost drops the page cache, maps n bytes of fresh anonymous memory,
// writes one byte to each 4 KiB page and returns the time this took per
// MiB. It is the price every benchmarked process pays for memory it
// touches for the first time (heap, buffers, page cache). On a virtual
// machine that hands freed memory back to its host (virtio-balloon free
// page reporting) that price is milliseconds per MiB and changes from
// minute to minute, which shows in the processes' system time.
func touchCost(n int) (time.Duration, error) {
	if err := DropCaches(); err != nil {
		return 0, err
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(b)
	start := time.Now()
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return time.Since(start) / time.Duration(n>>20), nil
}

// memoryFS returns the name of the in-memory file system (tmpfs, ramfs)
// dir lies on, or "" when it is on another: the page cache of a file system
// in memory is its only copy, and no cache drop evicts it.
func memoryFS(dir string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", fmt.Errorf("file system of the work directory: %w", err)
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs", nil
	case unix.RAMFS_MAGIC:
		return "ramfs", nil
	}
	return "", nil
}
