package main

import (
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
