package tiers

import (
	"os"

	"golang.org/x/sys/unix"
)

// willNeed asks the kernel to read f into the page cache in the
// background.
func willNeed(f *os.File) {
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_WILLNEED)
}
