package vmdisk

import (
	"bytes"
	"testing"
)

// TestVHDSizeFromFooter: only Virtual PC ("vpc ") and qemu's old creator
// ("qemu") size a VHD by its CHS geometry; every other creator, Azure's
// "wa\0\0" and VirtualBox's "vbox" among them, uses the footer's current
// size. Sizing those by the geometry would cut the end off the disk (a
// GPT's backup header lives there) and back up a shorter disk.
func TestVHDSizeFromFooter(t *testing.T) {
	dir := t.TempDir()
	const size = 30 << 20 // the geometry of 30 MiB covers 61404 of its 61440 sectors
	content := bytes.Repeat([]byte{0x5A}, size)
	cyl, heads, secs := vhdGeometry(size)
	chs := int64(cyl*heads*secs) * 512
	if chs >= size {
		t.Fatalf("geometry %d/%d/%d covers the whole disk: pick another size", cyl, heads, secs)
	}
	for _, c := range []struct {
		creator string
		want    int64
	}{
		{"wa\x00\x00", size},
		{"vbox", size},
		{"win ", size},
		{"qem2", size},
		{"vpc ", chs},
		{"qemu", chs},
	} {
		for _, typ := range []string{"fixed", "dynamic"} {
			p := writeImage(t, dir, "disk.vhd", VHD, size, Source{Size: size, R: bytes.NewReader(content)},
				WriteOptions{VHD: &VHDParams{Type: typ, CreatorApp: c.creator}})
			d, err := Open(p, Limits{})
			if err != nil {
				t.Fatalf("%q %s: %v", c.creator, typ, err)
			}
			if d.Size() != c.want {
				t.Errorf("%q %s: virtual size %d, want %d", c.creator, typ, d.Size(), c.want)
			}
			d.Close()
		}
	}
	// A footer size recorded beyond the disk (a snapshot taken when such
	// an image was sized by its geometry) is not written back: the image
	// would claim more than it holds.
	chsContent := content[:chs]
	p := writeImage(t, dir, "old.vhd", VHD, chs, Source{Size: chs, R: bytes.NewReader(chsContent)},
		WriteOptions{VHD: &VHDParams{Type: "fixed", CreatorApp: "wa\x00\x00", Cylinders: cyl, Heads: heads, Sectors: secs, CurrentSize: size}})
	d, err := Open(p, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != chs {
		t.Errorf("rewritten with a footer size beyond the disk: virtual size %d, want %d", d.Size(), chs)
	}
}
