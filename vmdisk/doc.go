// Package vmdisk reads and writes virtual machine disk images: VHD (fixed,
// dynamic, differencing), VHDX (fixed, dynamic, differencing), qcow2
// (versions 2 and 3, backing files, compressed clusters, extended L2
// entries) and sparse raw.
//
// # Model
//
// An image file is a container around a virtual disk: a linear run of
// VirtualSize bytes that the guest sees. A container maps some ranges of the
// virtual disk to bytes in the file (allocated data), declares some ranges
// to be zero, and leaves the rest unallocated. In a differencing image
// (qcow2 overlay, VHD/VHDX differencing disk) unallocated ranges are read
// from the parent image, which may itself have a parent: a chain, ordered
// from the top (the file the VM writes to) to the base.
//
// A Layer is one opened container. Its own map (Layer.Runs) lists the Data
// and Zero runs it defines; everything else is unallocated. A Disk is an
// opened chain of layers and implements io.ReaderAt over the flattened
// virtual disk; Disk.Allocated lists the ranges that may hold non-zero
// data, so a backup reads only those. Layer.ReaderAt reads one layer alone
// (unallocated and zero ranges read as zeros).
//
// Formats are detected from the file's bytes (Detect), never from its name.
// Every parser validates sizes and offsets against the file size and fixed
// limits (Limits) before it allocates or loops, so a malformed or hostile
// image gives an error naming the field and the file, not a hang or a huge
// allocation. Backing chains are bounded in depth and checked for cycles.
//
// Writers (Write) produce raw (sparse), qcow2 (v3), VHDX and VHD (fixed and
// dynamic) images from a Source: a virtual disk as an io.ReaderAt with its
// data ranges, or a single layer with its own map and a backing file name.
//
// Concurrency: a Disk and its Layers are safe for concurrent ReadAt calls
// (table caches are locked). Writers are single-threaded.
package vmdisk
