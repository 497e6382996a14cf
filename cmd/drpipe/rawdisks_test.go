package main

import (
	"testing"

	"github.com/drpipe/drpipe/drsite"
)

// TestRawDisksLibvirtWithoutDriverType: libvirt reads a disk whose
// <driver> gives no type as raw (format probing was removed after
// CVE-2010-2237), so its guest writes every byte of it, an image header
// too. backup must read it as raw, as it does a disk with type='raw':
// probed, a qcow2 header its guest wrote names any host file as the
// backing file, and that file's bytes go into the VM's backup.
func TestRawDisksLibvirtWithoutDriverType(t *testing.T) {
	inv, err := drsite.Import("guest.xml", []byte(`<domain type='kvm'>
  <name>guest</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu'/>
      <source file='/var/lib/libvirt/images/guest.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/data.img'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/sys.img'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
  </devices>
</domain>`), drsite.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := rawDisks(inv)
	for f, want := range map[string]bool{
		"/var/lib/libvirt/images/guest.img": true,
		"/var/lib/libvirt/images/data.img":  true,
		"/var/lib/libvirt/images/sys.img":   false,
	} {
		if m[f] != want {
			t.Errorf("rawDisks[%s] = %v, want %v (libvirt reads a disk without a driver type as raw)", f, m[f], want)
		}
	}
}
