//go:build !linux

package tiers

import "os"

// willNeed is a no-op where the kernel offers no read-ahead hint.
func willNeed(*os.File) {}
