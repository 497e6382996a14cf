package main

import (
	"strings"
	"testing"
)

const testFstab = `# /etc/fstab
UUID=1111 / ext4 errors=remount-ro 0 1
UUID=2222 none swap sw 0 0
/dev/sdb1 /mnt/nas ext4 defaults 0 2
nas:/export /mnt/nas/deep nfs defaults 0 0
/dev/sdc1 /srv/back\040ups xfs noauto 0 2
tmpfs /tmp tmpfs defaults 0 0
`

const testMountinfo = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:40 / /tmp rw - tmpfs tmpfs rw
`

// TestUnmountedMountPoint: a directory at or below a mount point that
// /etc/fstab lists is refused while nothing is mounted there, by the
// deepest such mount point; mounted, or on no listed mount point, it is
// not; names with escaped spaces are matched.
func TestUnmountedMountPoint(t *testing.T) {
	for _, tc := range []struct {
		dir, mountinfo, want string
	}{
		{"/mnt/nas", testMountinfo, "/mnt/nas"},
		{"/mnt/nas/drpipe", testMountinfo, "/mnt/nas"},
		{"/mnt/nas/deep/drpipe", testMountinfo, "/mnt/nas/deep"},
		{"/mnt/nas/deep/drpipe", testMountinfo + "50 27 8:17 / /mnt/nas rw - ext4 /dev/sdb1 rw\n", "/mnt/nas/deep"},
		{"/mnt/nas/drpipe", testMountinfo + "50 27 8:17 / /mnt/nas rw - ext4 /dev/sdb1 rw\n", ""},
		{"/mnt/nasty", testMountinfo, ""},
		{"/srv/back ups/hv01", testMountinfo, "/srv/back ups"},
		{"/srv/back ups/hv01", testMountinfo + "51 27 8:33 / /srv/back\\040ups rw - xfs /dev/sdc1 rw\n", ""},
		{"/tmp/tier", testMountinfo, ""},
		{"/var/backups", testMountinfo, ""},
	} {
		got, ok := unmountedMountPoint(tc.dir, strings.NewReader(testFstab), strings.NewReader(tc.mountinfo), func(p string) string { return p })
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: %q, %v; want %q", tc.dir, got, ok, tc.want)
		}
	}
}

// FuzzMountTables feeds arbitrary bytes to the fstab and mountinfo
// readers: they never panic, and every mount point they return is an
// absolute, clean path.
func FuzzMountTables(f *testing.F) {
	f.Add(testFstab, testMountinfo, "/mnt/nas/x")
	f.Add("a \\ b\n#\n\\0\\777 /x\\04 y", "1 2 3 4 \\", "/")
	f.Fuzz(func(t *testing.T, fstab, mountinfo, dir string) {
		points, err := fstabMountPoints(strings.NewReader(fstab))
		if err != nil {
			t.Fatalf("fstab of %d bytes: %v", len(fstab), err)
		}
		for _, m := range points {
			if !strings.HasPrefix(m, "/") {
				t.Fatalf("fstab mount point %q is not absolute", m)
			}
		}
		if _, err := mountedPoints(strings.NewReader(mountinfo)); err != nil {
			t.Fatalf("mountinfo of %d bytes: %v", len(mountinfo), err)
		}
		if m, ok := unmountedMountPoint("/"+dir, strings.NewReader(fstab), strings.NewReader(mountinfo), func(p string) string { return p }); ok && (m == "/" || !strings.HasPrefix(m, "/")) {
			t.Fatalf("unmounted mount point %q", m)
		}
	})
}

// TestUnmountedMountPointThroughSymlinks: a mount point fstab names
// through a symbolic link (/mnt -> /media) is mounted where the link
// leads, which is where mountinfo lists it and where the tier's resolved
// directory lies.
func TestUnmountedMountPointThroughSymlinks(t *testing.T) {
	resolve := func(p string) string { return strings.Replace(p, "/mnt/", "/media/", 1) }
	mounted := testMountinfo + "50 27 8:17 / /media/nas rw - ext4 /dev/sdb1 rw\n"
	if m, ok := unmountedMountPoint("/media/nas/drpipe", strings.NewReader(testFstab), strings.NewReader(mounted), resolve); ok {
		t.Errorf("a mounted file system named through a symlink taken for unmounted: %s", m)
	}
	if m, ok := unmountedMountPoint("/media/nas/drpipe", strings.NewReader(testFstab), strings.NewReader(testMountinfo), resolve); !ok || m != "/mnt/nas" {
		t.Errorf("an unmounted one named through a symlink: %q, %v; want /mnt/nas", m, ok)
	}
}

// TestMountTablesLongLines: a line longer than 64 KiB (an overlay mount
// with many layers in mountinfo, a long comment in fstab) does not end
// the reading of the table: the mount points after it count.
func TestMountTablesLongLines(t *testing.T) {
	long := "60 27 0:50 / /var/lib/containers/overlay rw - overlay overlay rw,lowerdir=" + strings.Repeat("/l/x:", 20<<10) + "\n"
	mounted := testMountinfo + long + "50 27 8:17 / /mnt/nas rw - ext4 /dev/sdb1 rw\n"
	if m, ok := unmountedMountPoint("/mnt/nas/drpipe", strings.NewReader(testFstab), strings.NewReader(mounted), func(p string) string { return p }); ok {
		t.Errorf("a file system mounted after a %d-byte mountinfo line taken for unmounted: %s", len(long), m)
	}
	fstab := "# " + strings.Repeat("x", 70<<10) + "\n" + testFstab
	if m, ok := unmountedMountPoint("/mnt/nas/drpipe", strings.NewReader(fstab), strings.NewReader(testMountinfo), func(p string) string { return p }); !ok || m != "/mnt/nas" {
		t.Errorf("an unmounted file system listed after a 70 KiB fstab line: %q, %v; want /mnt/nas", m, ok)
	}
	// A table longer than the bound read whole tells nothing: not a
	// mount point taken for unmounted because its line was cut off.
	huge := testMountinfo + strings.Repeat("70 27 0:60 / /run/x rw - tmpfs tmpfs rw\n", maxMountTable/40) + "50 27 8:17 / /mnt/nas rw - ext4 /dev/sdb1 rw\n"
	if m, ok := unmountedMountPoint("/mnt/nas/drpipe", strings.NewReader(testFstab), strings.NewReader(huge), func(p string) string { return p }); ok {
		t.Errorf("a file system mounted after %d bytes of mountinfo taken for unmounted: %s", len(huge), m)
	}
}
