<#
.SYNOPSIS
    Collects the Hyper-V inventory drpipe needs to rebuild this host's VMs
    at the DR site: virtual switches, and per VM its generation, processors,
    memory, disks, network adapters with VLANs and guest IP configuration.

.DESCRIPTION
    Run on the Hyper-V host before each backup (as Administrator) and pass
    the output to drpipe:

        .\hyperv-inventory.ps1 -OutFile C:\ProgramData\drpipe\hyperv-inventory.json
        drpipe backup --repo R --host hv01 --inventory C:\ProgramData\drpipe\hyperv-inventory.json D:\VMs

    The JSON is what ConvertTo-Json emits for the objects built below
    (enums as numbers, GUIDs as strings); -Depth 8 keeps every nested
    object (the default depth of 2 would truncate adapters and VLANs to
    type names, which drpipe rejects).

    DR attributes that Hyper-V has no field for are read from lines in the
    VM's Notes:
        drpipe.priority: 1
        drpipe.depends: dc01, dns01
        drpipe.anti-affinity: dc
        drpipe.verify: tcp:10.0.10.10:389

    Static guest addresses come from the Hyper-V data exchange integration
    service (Msvm_GuestNetworkAdapterConfiguration); they are present only
    for running VMs with integration services.

.PARAMETER OutFile
    Where to write the JSON (UTF-8). Default: standard output.

.PARAMETER VMName
    Only these VMs (wildcards allowed). Default: all.
#>
[CmdletBinding()]
param(
    [string]$OutFile,
    [string[]]$VMName = @('*')
)

$ErrorActionPreference = 'Stop'
Import-Module Hyper-V

$vmHost = Get-VMHost
$ns = 'root\virtualization\v2'

function Get-GuestNetworkConfiguration([Microsoft.HyperV.PowerShell.VirtualMachine]$VM) {
    # MAC address (12 hex digits) -> guest IP configuration, via WMI.
    $result = @{}
    try {
        $cs = Get-CimInstance -Namespace $ns -ClassName Msvm_ComputerSystem -Filter "Name='$($VM.Id)'"
        $vssd = Get-CimAssociatedInstance -InputObject $cs -ResultClassName Msvm_VirtualSystemSettingData |
            Where-Object { $_.VirtualSystemType -eq 'Microsoft:Hyper-V:System:Realized' }
        foreach ($port in @(Get-CimAssociatedInstance -InputObject $vssd -ResultClassName Msvm_SyntheticEthernetPortSettingData)) {
            $cfg = Get-CimAssociatedInstance -InputObject $port -ResultClassName Msvm_GuestNetworkAdapterConfiguration
            if ($cfg) {
                $result[$port.Address] = [ordered]@{
                    DHCPEnabled     = $cfg.DHCPEnabled
                    IPAddresses     = @($cfg.IPAddresses)
                    Subnets         = @($cfg.Subnets)
                    DefaultGateways = @($cfg.DefaultGateways)
                    DNSServers      = @($cfg.DNSServers)
                }
            }
        }
    } catch {
        Write-Warning "guest network configuration of $($VM.Name): $_"
    }
    return $result
}

$switches = @(Get-VMSwitch | ForEach-Object {
    $uplink = $null
    if ($_.NetAdapterInterfaceDescription) {
        $uplink = (Get-NetAdapter -InterfaceDescription $_.NetAdapterInterfaceDescription -ErrorAction SilentlyContinue).Name
    }
    [ordered]@{
        Name                           = $_.Name
        Id                             = $_.Id.ToString()
        SwitchType                     = $_.SwitchType            # 0 Private, 1 Internal, 2 External
        NetAdapterInterfaceDescription = $_.NetAdapterInterfaceDescription
        NetAdapterName                 = $uplink
        AllowManagementOS              = $_.AllowManagementOS
        Notes                          = $_.Notes
    }
})

$vms = @(Get-VM -Name $VMName | ForEach-Object {
    $vm = $_
    $guest = Get-GuestNetworkConfiguration $vm
    $proc = Get-VMProcessor -VM $vm
    $mem = Get-VMMemory -VM $vm
    $firmware = $null
    $bios = $null
    if ($vm.Generation -eq 2) {
        $fw = Get-VMFirmware -VM $vm
        $firmware = [ordered]@{
            SecureBoot         = $fw.SecureBoot               # 0 On, 1 Off
            SecureBootTemplate = $fw.SecureBootTemplate
            BootOrder          = @($fw.BootOrder | ForEach-Object {
                [ordered]@{
                    BootType = $_.BootType                    # 1 Drive, 2 Network, 3 File
                    Path     = if ($_.Device -and $_.Device.Path) { $_.Device.Path } else { $null }
                    MacAddress = if ($_.Device -and $_.Device.MacAddress) { $_.Device.MacAddress } else { $null }
                }
            })
        }
    } else {
        $bios = [ordered]@{ StartupOrder = @((Get-VMBios -VM $vm).StartupOrder) }   # 0 Floppy, 1 CD, 2 IDE, 3 LegacyNetworkAdapter
    }
    $drives = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object {
        $vhd = $null
        if ($_.Path) { $vhd = Get-VHD -Path $_.Path -ErrorAction SilentlyContinue }
        [ordered]@{
            Path               = $_.Path
            ControllerType     = $_.ControllerType            # 0 IDE, 1 SCSI
            ControllerNumber   = $_.ControllerNumber
            ControllerLocation = $_.ControllerLocation
            VhdFormat          = if ($vhd) { $vhd.VhdFormat } else { $null }   # 2 VHD, 3 VHDX
            VhdType            = if ($vhd) { $vhd.VhdType } else { $null }     # 2 Fixed, 3 Dynamic, 4 Differencing
            Size               = if ($vhd) { $vhd.Size } else { $null }
            FileSize           = if ($vhd) { $vhd.FileSize } else { $null }
            ParentPath         = if ($vhd) { $vhd.ParentPath } else { $null }
        }
    })
    $dvds = @(Get-VMDvdDrive -VM $vm | ForEach-Object {
        [ordered]@{
            Path               = $_.Path
            ControllerType     = $_.ControllerType
            ControllerNumber   = $_.ControllerNumber
            ControllerLocation = $_.ControllerLocation
        }
    })
    $nics = @(Get-VMNetworkAdapter -VM $vm | ForEach-Object {
        $vlan = Get-VMNetworkAdapterVlan -VMNetworkAdapter $_
        [ordered]@{
            Name                     = $_.Name
            Id                       = $_.Id
            MacAddress               = $_.MacAddress
            DynamicMacAddressEnabled = $_.DynamicMacAddressEnabled
            SwitchName               = $_.SwitchName
            IsLegacy                 = $_.IsLegacy
            IPAddresses              = @($_.IPAddresses)
            Vlan                     = [ordered]@{
                OperationMode           = $vlan.OperationMode       # 0 Untagged, 1 Access, 2 Trunk, 3 Private
                AccessVlanId            = $vlan.AccessVlanId
                NativeVlanId            = $vlan.NativeVlanId
                AllowedVlanIdList       = @($vlan.AllowedVlanIdList)
                AllowedVlanIdListString = $vlan.AllowedVlanIdListString
            }
            GuestNetworkConfiguration = $guest[$_.MacAddress]
        }
    })
    [ordered]@{
        Name                  = $vm.Name
        Id                    = $vm.Id.ToString()
        Generation            = $vm.Generation
        Version               = $vm.Version
        State                 = $vm.State
        Path                  = $vm.Path
        Notes                 = $vm.Notes
        AutomaticStartAction  = $vm.AutomaticStartAction    # 0 Nothing, 1 StartIfRunning, 2 Start
        AutomaticStartDelay   = $vm.AutomaticStartDelay
        ProcessorCount        = $vm.ProcessorCount
        Processor             = [ordered]@{
            Count                          = $proc.Count
            Reserve                        = $proc.Reserve
            Maximum                        = $proc.Maximum
            RelativeWeight                 = $proc.RelativeWeight
            CompatibilityForMigrationEnabled = $proc.CompatibilityForMigrationEnabled
            ExposeVirtualizationExtensions = $proc.ExposeVirtualizationExtensions
        }
        Memory                = [ordered]@{
            Startup              = $mem.Startup
            DynamicMemoryEnabled = $mem.DynamicMemoryEnabled
            Minimum              = $mem.Minimum
            Maximum              = $mem.Maximum
            Buffer               = $mem.Buffer
            Priority             = $mem.Priority
        }
        Firmware              = $firmware
        BIOS                  = $bios
        HardDrives            = $drives
        DvdDrives             = $dvds
        NetworkAdapters       = $nics
    }
})

$storage = @(Get-Volume | Where-Object { $_.DriveLetter -and $_.DriveType -eq 'Fixed' } | ForEach-Object {
    [ordered]@{ DriveLetter = [string]$_.DriveLetter; Size = $_.Size; SizeRemaining = $_.SizeRemaining }
})

$inventory = [ordered]@{
    Collector        = 'drpipe-hyperv-inventory'
    CollectorVersion = 1
    ComputerName     = $env:COMPUTERNAME
    CollectedAt      = (Get-Date).ToUniversalTime().ToString('o')
    Host             = [ordered]@{
        LogicalProcessorCount = $vmHost.LogicalProcessorCount
        MemoryCapacity        = $vmHost.MemoryCapacity
        VirtualHardDiskPath   = $vmHost.VirtualHardDiskPath
        VirtualMachinePath    = $vmHost.VirtualMachinePath
        Volumes               = $storage
    }
    Switches         = $switches
    VMs              = $vms
}

$json = $inventory | ConvertTo-Json -Depth 8
if ($OutFile) {
    $dir = Split-Path -Parent $OutFile
    if ($dir -and -not (Test-Path $dir)) { New-Item -ItemType Directory -Path $dir | Out-Null }
    [System.IO.File]::WriteAllText($OutFile, $json, (New-Object System.Text.UTF8Encoding($false)))
    Write-Host "wrote $($vms.Count) VMs and $($switches.Count) switches to $OutFile"
} else {
    $json
}
