package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/drpipe/drpipe/mount"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/vmdisk"
)

// VM disk image flags of backup and restore, and the mount command.

func addDiskBackupFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Bool("flatten", false, "back up differencing disk chains (qcow2 overlays, VHD/VHDX differencing disks) as one merged disk (config key backup.flatten)")
	f.Bool("no-disk-images", false, "back up VM disk image containers as plain files instead of chunking their virtual disk (config key backup.no_disk_images)")
}

func (a *app) diskBackupFlags(cmd *cobra.Command) (flatten, noDisk bool) {
	flatten, noDisk = a.v.GetBool("backup.flatten"), a.v.GetBool("backup.no_disk_images")
	if cmd.Flags().Changed("flatten") {
		flatten, _ = cmd.Flags().GetBool("flatten")
	}
	if cmd.Flags().Changed("no-disk-images") {
		noDisk, _ = cmd.Flags().GetBool("no-disk-images")
	}
	return flatten, noDisk
}

func addDiskFormatFlag(cmd *cobra.Command) {
	cmd.Flags().String("disk-format", "original", "container for VM disk images: original, raw, qcow2 or vhdx (config key restore.disk_format); "+
		"a format other than the original gets that extension and flattens differencing chains; "+
		"a layer already in that format stays a layer only if its parent is in it too")
}

func (a *app) diskFormatFlag(cmd *cobra.Command) (string, error) {
	df, from := a.v.GetString("restore.disk_format"), "config key restore.disk_format (DRPIPE_RESTORE_DISK_FORMAT)"
	if cmd.Flags().Changed("disk-format") {
		df, _ = cmd.Flags().GetString("disk-format")
		from = "--disk-format"
	}
	switch df {
	case "", pipeline.DiskFormatOriginal:
		return pipeline.DiskFormatOriginal, nil
	case "vhd", "vpc":
		return "", usagef("%s vhd is not offered (VHD is restored only as original); use original, vhdx, qcow2 or raw", from)
	}
	f, err := vmdisk.ParseFormat(df)
	if err != nil {
		return "", usagef("%s: unknown disk format %q: use original, raw, qcow2 or vhdx", from, df)
	}
	return string(f), nil
}

func (a *app) mountCmd() *cobra.Command {
	var debug, fromTiers bool
	cmd := &cobra.Command{
		Use:   "mount --repo R [--tiers] DIR",
		Short: "Browse all snapshots as a read-only file system (FUSE)",
		Long: "Mount the repository's snapshots read-only at DIR, an empty directory: DIR/<host>/<time>/ holds each snapshot's files as they\n" +
			"were, DIR/<host>/latest points at the newest. Every VM disk image that backup recognised (VHD, VHDX, qcow2)\n" +
			"appears next to its name as <image>.raw, its flattened virtual disk, read on demand from the repository, so\n" +
			"one file can be copied out of a guest file system without restoring the VM:\n\n" +
			"  losetup --find --show --read-only --partscan DIR/hv01/latest/vms/dc01.vhdx.raw\n" +
			"  mount -o ro /dev/loop0p1 /mnt/dc01   (or mount -o loop,ro ... for a disk without partitions)\n\n" +
			"A read whose chunks are damaged beyond repair fails with EIO (never wrong bytes). The command runs until\n" +
			"interrupted (Ctrl-C, SIGTERM) or unmounted with 'fusermount3 -u DIR', and unmounts cleanly.\n" +
			"With --tiers (and --config holding a tiering policy) every object is read from the first tier that has it\n" +
			"intact, as restore --tiers does: browse a snapshot whose data is only at the DR site, in a bucket or on tape;\n" +
			"on unmount drpipe says which tiers served.",
		Example: "  drpipe mount --repo /srv/drpipe/repo /mnt/drpipe &\n" +
			"  drpipe mount --config /etc/drpipe/drpipe.yaml --tiers /mnt/drpipe &   (objects from any tier)\n" +
			"  mount -o loop,ro /mnt/drpipe/hv01/latest/var/lib/libvirt/images/web.qcow2.raw /mnt/web\n" +
			"  cp /mnt/web/etc/nginx/nginx.conf . && umount /mnt/web && kill %1",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			dir := args[0]
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return usagef("mount point %s must be an existing directory", dir)
			}
			if f, err := os.Open(dir); err == nil {
				names, _ := f.Readdirnames(1)
				f.Close()
				if len(names) > 0 {
					return usagef("mount point %s is not empty (it holds %s): the snapshots would hide its files until the unmount; use an empty directory", dir, names[0])
				}
			}
			cache, err := parseSize(a.v.GetString("mount.cache_size"))
			if err != nil {
				return usagef("mount.cache_size: %w", err)
			}
			r, fb, err := a.openMaybeTiered(ctx, fromTiers)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			srv, err := mount.Mount(ctx, r, dir, mount.Options{CacheBytes: cache, Debug: debug, OnError: func(p string, err error) {
				fmt.Fprintf(a.stderr, "read error: %s: %v\n", p, err)
			}})
			if err != nil {
				return err
			}
			if srv.Unreadable != nil {
				fmt.Fprintf(a.stderr, "warning: some snapshots could not be read and are not shown; each host's latest link names its newest readable snapshot, which may not be its newest (run 'drpipe check'): %v\n", srv.Unreadable)
			}
			if a.jsonOut() {
				out := map[string]any{"mountpoint": dir, "mounted": true}
				if srv.Unreadable != nil {
					out["unreadable_snapshots"] = srv.Unreadable.Error()
				}
				if err := a.printJSON(out); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stderr, "mounted at %s; press Ctrl-C (or send SIGTERM) to unmount\n", dir)
			}
			done := make(chan struct{})
			go func() { srv.Wait(); close(done) }()
			select {
			case <-done: // unmounted from outside (fusermount3 -u)
				return nil
			case <-ctx.Done():
			}
			// A second Ctrl-C, also while the unmount is retried, stops
			// serving a detached mount point.
			again := make(chan os.Signal, 1)
			signal.Notify(again, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(again)
			if err := srv.Unmount(); errors.Is(err, mount.ErrDetached) {
				fmt.Fprintf(a.stderr, "%s is still in use: detached it from the file system tree; serving the programs still inside it until they leave (Ctrl-C again to stop now: they then get errors)\n", dir)
				select {
				case <-done:
				case <-again:
					return fmt.Errorf("stopped while %s was still in use: the programs inside it now get 'transport endpoint is not connected'", dir)
				}
			} else if err != nil {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
			<-done
			if !a.jsonOut() {
				fmt.Fprintf(a.stderr, "unmounted %s\n", dir)
				a.printTierUsage(a.stderr, fb)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&debug, "debug", false, "log every FUSE request to stderr")
	cmd.Flags().BoolVar(&fromTiers, "tiers", false, "read each object from the first tier of the tiering policy (--config) that has it intact")
	return cmd
}
