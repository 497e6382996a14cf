// Package drsite owns DR-site bring-up: the VM inventory model and its
// importers, placement of VMs on DR hosts, network mapping and re-IP,
// the runbook, and the hypervisor definitions (libvirt domain and network
// XML, Hyper-V PowerShell) that rebuild the VMs from a repository.
//
// # Data model
//
// An Inventory describes what runs on the primary site: per source host
// its virtual switches (name, type external/internal/private, uplink,
// VLANs, subnets) and resources; per VM its firmware/generation, vCPUs and
// CPU topology, memory (startup, dynamic min/max), disks (file, format,
// virtual size, controller, boot order), NICs (MAC, switch, VLAN mode and
// ids, static IPv4/IPv6 addresses, gateways, DNS), boot priority,
// dependencies, anti-affinity group and notes. Its JSON form is versioned
// ({"format":"drpipe-inventory","version":1,...}) and is stored verbatim in
// every snapshot taken with `drpipe backup --inventory FILE`
// (repo.Snapshot.Inventory).
//
// Importers turn what hypervisors write into the model: libvirt domain and
// network XML (as `virsh dumpxml` and `virt-install --print-xml` write
// it), Hyper-V inventory JSON (from configs/hyperv-inventory.ps1, in the
// shape ConvertTo-Json emits), OVF descriptors, a hand-written YAML form
// and the model's own JSON. The format is detected from the content.
// Values that are malformed are errors naming the file and field; fields
// that are unknown or missing are reported as Warnings in the inventory,
// never guessed silently.
//
// # DR site
//
// A Config (configs/drsite.yaml) lists the DR hosts with their capacity,
// the DR networks, how source switches/VLANs map onto them, and re-IP
// rules. Plan places VMs (boot priority first, then first-fit-decreasing
// on memory, vCPUs and storage, honouring anti-affinity groups), derives
// boot groups from dependencies, maps every NIC and re-addresses it, and
// lists every unresolved item with the reason. WriteRunbook renders a plan
// as Markdown and self-contained HTML; Bringup restores disks, writes
// libvirt XML or a Hyper-V script per DR host and can define and start the
// VMs through virsh in boot-group order.
//
// The package never prints or exits; long operations take a
// context.Context and report progress through callbacks.
package drsite
