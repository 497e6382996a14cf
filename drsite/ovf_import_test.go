package drsite

import (
	"strings"
	"testing"
)

// TestOVFDefaultDeploymentConfiguration: an appliance descriptor offers
// several deployment configurations (ovf:configuration on its items) and
// ranges (ovf:bound); the default configuration's normal values are
// imported, not whichever item comes last.
func TestOVFDefaultDeploymentConfiguration(t *testing.T) {
	doc := `<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="f1" ovf:href="app-disk1.vmdk"/></References>
  <DiskSection><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="40" ovf:capacityAllocationUnits="byte * 2^30" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <DeploymentOptionSection>
    <Configuration ovf:id="tiny"><Label>Tiny</Label></Configuration>
    <Configuration ovf:id="small" ovf:default="true"><Label>Small</Label></Configuration>
    <Configuration ovf:id="large"><Label>Large</Label></Configuration>
  </DeploymentOptionSection>
  <VirtualSystem ovf:id="app">
    <Name>app</Name>
    <VirtualHardwareSection>
      <Item ovf:configuration="tiny small"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="large"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>16</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="small"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>4096</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="small" ovf:bound="max"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>8192</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="large"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>65536</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType><rasd:Address>0</rasd:Address></Item>
      <Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:Parent>3</rasd:Parent><rasd:AddressOnParent>0</rasd:AddressOnParent></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>`
	inv, err := Import("app.ovf", []byte(doc), ImportOptions{Host: "esx01"})
	if err != nil {
		t.Fatal(err)
	}
	v := inv.VMs[0]
	if v.VCPUs != 2 || v.Memory.StartupBytes != 4*GiB {
		t.Errorf("%d vCPUs and %d bytes of memory, want the default configuration's 2 and 4 GiB", v.VCPUs, v.Memory.StartupBytes)
	}
	found := false
	for _, w := range inv.Warnings {
		found = found || strings.Contains(w.Message, `"small"`)
	}
	if !found {
		t.Errorf("no warning naming the configuration imported: %v", inv.Warnings)
	}
}
