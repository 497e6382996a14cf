#!/usr/bin/env bash
# Regenerates the libvirt fixtures exactly as libvirt writes them: the
# test driver's built-in domain and network, virt-install --print-xml
# output, and our source definitions after a define/dumpxml round through
# libvirt. Run from this directory; needs virsh and virt-install.
set -euo pipefail
U=test:///default
virsh -c $U dumpxml test > test-default.xml
virsh -c $U net-dumpxml default > net-default.xml
virt-install --connect $U --print-xml --name web01 --memory 4096,maxmemory=8192 \
  --vcpus 4,sockets=1,cores=2,threads=2 \
  --disk path=/var/lib/libvirt/images/web01.qcow2,size=40,format=qcow2,bus=virtio \
  --disk path=/var/lib/libvirt/images/web01-data.raw,size=100,format=raw,bus=scsi \
  --network network=default,mac=52:54:00:3a:10:01,model=virtio \
  --network bridge=br-dmz,mac=52:54:00:3a:10:02 \
  --osinfo linux2022 --import --noautoconsole > web01-virtinst.xml
for d in dc01 fs01; do
  virsh -q -c $U "define src/$d.xml; dumpxml $d" | sed -n '/^<domain/,/^<\/domain>/p' > $d.xml
done
for n in lan backup; do
  virsh -q -c $U "net-define src/net-$n.xml; net-dumpxml $n" | sed -n '/^<network/,/^<\/network>/p' > net-$n.xml
done
