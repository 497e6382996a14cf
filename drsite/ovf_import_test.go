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

// TestOVFVirtualBoxFirmware: VirtualBox writes a VM's firmware only into
// its own machine section (vbox:Machine/Hardware/Firmware); an EFI VM is
// imported as UEFI, not as a BIOS VM that would not boot at the DR site.
func TestOVFVirtualBoxFirmware(t *testing.T) {
	doc := func(firmware string) string {
		return `<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
    <File ovf:id="file1" ovf:href="web02-disk001.vmdk"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="21474836480" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" vbox:uuid="3e1c07c5-5a0e-4f4e-9d1a-6c2f3c8d9b10"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="web02">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="96">
      <Info>The kind of installed guest operating system</Info>
      <Description>Debian_64</Description>
      <vbox:OSType ovf:required="false">Debian_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>web02</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>2 virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>2048 MB of memory</rasd:Caption>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>Ethernet adapter on 'NAT'</rasd:Caption>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:Caption>disk1</rasd:Caption>
        <rasd:Description>Disk Image</rasd:Description>
        <rasd:ElementName>disk1</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.19-linux" uuid="{5b0d3f5e-7e0c-4f8a-9a2d-3c1e6f7a8b9c}" name="web02" OSType="Debian_64" snapshotFolder="Snapshots" lastStateChange="2026-11-30T09:12:44Z">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <Hardware>
        <CPU count="2">
          <PAE enabled="false"/>
          <LongMode enabled="true"/>
          <HardwareVirtExLargePages enabled="true"/>
        </CPU>
        <Memory RAMSize="2048"/>
` + firmware + `        <Boot>
          <Order position="1" device="HardDisk"/>
          <Order position="2" device="None"/>
        </Boot>
        <Network>
          <Adapter slot="0" enabled="true" MACAddress="080027A1B2C3" type="82540EM">
            <NAT localhost-reachable="true"/>
          </Adapter>
        </Network>
      </Hardware>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
`
	}
	for _, c := range []struct{ firmware, want string }{
		{`        <Firmware type="EFI"/>` + "\n", FirmwareUEFI},
		{`        <Firmware type="EFI64"/>` + "\n", FirmwareUEFI},
		{"", FirmwareBIOS},
	} {
		inv, err := Import("web02.ovf", []byte(doc(c.firmware)), ImportOptions{Host: "vbox01"})
		if err != nil {
			t.Fatal(err)
		}
		if got := inv.VMs[0].Firmware; got != c.want {
			t.Errorf("%q: firmware %s, want %s", strings.TrimSpace(c.firmware), got, c.want)
		}
	}
}
