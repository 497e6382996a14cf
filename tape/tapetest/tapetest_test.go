package tapetest

import (
	"testing"

	"github.com/drpipe/drpipe/tape"
)

func TestMemoryDrive(t *testing.T) {
	DriveSuite(t, func(t *testing.T, c Cartridge) tape.Drive {
		d := NewDrive(c.Capacity, c.EarlyWarning)
		d.WriteProtected, d.WORM = c.WriteProtected, c.WORM
		return d
	})
}
