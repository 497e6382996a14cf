package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

func (a *app) demoCmd() *cobra.Command {
	var dir string
	var keep bool
	var imageSize string
	cmd := &cobra.Command{
		Use:   "demo [--dir DIR] [--keep]",
		Short: "Run the whole pipeline on generated data in a temporary directory and print what it did",
		Long: "demo generates a host backup (a sparse raw VM disk image with an ext4 file system and a file tree),\n" +
			"creates a repository, backs up twice (showing deduplication), restores and verifies byte for byte,\n" +
			"damages shards and shows that parity keeps the data readable, then repairs; then replicates to a DR site on\n" +
			"loopback (restoring there, and healing a damaged shard there with a scrub that needs no key), copies to a\n" +
			"directory standing in for a bucket, writes and restores a tape set on the virtual library and plans tiering\n" +
			"over them all. It needs no configuration.",
		Example: "  drpipe demo\n  drpipe demo --dir /tmp/drpipe-demo --keep",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.jsonOut() {
				return usagef("demo tells what it does as text; it has no --json output (each command it shows has)")
			}
			size, err := parseSize(imageSize)
			if err != nil {
				return usagef("--image-size: %w", err)
			}
			if dir == "" {
				d, err := os.MkdirTemp("", "drpipe-demo-")
				if err != nil {
					return err
				}
				dir = d
				if !keep {
					defer os.RemoveAll(d)
				}
			} else if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			d := &demo{a: a, dir: dir, imageSize: size}
			err = d.run(cmd.Context())
			if err != nil {
				return fmt.Errorf("demo failed: %w", err)
			}
			if keep {
				a.printf("\nkept everything in %s\n", dir)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "work directory (default: a new temporary directory, removed afterwards)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the work directory")
	cmd.Flags().StringVar(&imageSize, "image-size", "2GiB", "virtual size of the generated VM disk image")
	return cmd
}

type demo struct {
	a         *app
	dir       string
	imageSize int64
	step      int
}

func (d *demo) say(format string, args ...any) {
	d.step++
	d.a.printf("\n[%d] %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *demo) info(format string, args ...any) {
	d.a.printf("    %s\n", fmt.Sprintf(format, args...))
}

func (d *demo) run(ctx context.Context) error {
	start := time.Now()
	src := filepath.Join(d.dir, "host")
	files := filepath.Join(src, "etc-and-configs")
	images := filepath.Join(src, "images")
	for _, p := range []string{files, images} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	d.a.printf("drpipe demo in %s\n", d.dir)

	d.say("generating a host backup: a file tree and a sparse VM disk image")
	n, err := sample.Tree(files, sample.TreeOptions{Files: 400, Bytes: 24 << 20, Seed: 1})
	if err != nil {
		return err
	}
	d.info("file tree: 400 files, %s, with symlinks and varied modes", humanBytes(n))
	img := filepath.Join(images, "vm01-disk0.raw")
	if sample.HaveMkfs() {
		content := filepath.Join(d.dir, "guest-content")
		if _, err := sample.Tree(content, sample.TreeOptions{Files: 300, Bytes: 120 << 20, Seed: 2}); err != nil {
			return err
		}
		if err := sample.Ext4Image(ctx, img, d.imageSize, content); err != nil {
			return err
		}
		os.RemoveAll(content)
		alloc, _ := sample.AllocatedBytes(img)
		d.info("VM disk: %s virtual, ext4 inside, %s allocated (the rest are holes)", humanBytes(d.imageSize), humanBytes(alloc))
	} else {
		f, err := os.Create(img)
		if err != nil {
			return err
		}
		f.Truncate(d.imageSize)
		f.Close()
		for i := int64(0); i < 8; i++ {
			if err := sample.Rewrite(img, i*(d.imageSize/8), 8<<20, uint64(i)); err != nil {
				return err
			}
		}
		d.info("VM disk: %s virtual, sparse (mkfs.ext4 not found: random extents instead of ext4)", humanBytes(d.imageSize))
	}

	repoDir := filepath.Join(d.dir, "repo")
	pw := []byte("drpipe-demo-password")
	d.say("drpipe init --repo %s --ec 4+2", repoDir)
	be, err := tiers.NewLocal(repoDir)
	if err != nil {
		return err
	}
	opts := repo.Options{Password: pw, CacheDir: filepath.Join(d.dir, "cache")}
	r, err := repo.Init(ctx, be, repo.InitOptions{EC: erasure.Params{K: 4, M: 2}}, opts)
	if err != nil {
		return err
	}
	d.info("repository %s: each pack is 4 data + 2 parity shards; any 4 rebuild it", r.Config().ID.Short())

	backup := func(label string) (*pipeline.BackupResult, error) {
		res, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "hv01", Tags: []string{label}, Paths: []string{src}, Program: "drpipe demo"})
		if err != nil {
			return nil, err
		}
		s := res.Summary
		d.info("snapshot %s: %d files, %s total, %s read from disk, %s added to the repository, %.2fs",
			res.Snapshot.ID().Short(), s.Files, humanBytes(s.BytesTotal), humanBytes(s.BytesRead), humanBytes(s.BytesNew), s.DurationSec)
		return res, nil
	}
	d.say("drpipe backup --host hv01 --tag day0 %s", src)
	b0, err := backup("day0")
	if err != nil {
		return err
	}
	if b0.Summary.BytesRead >= d.imageSize {
		return errors.New("backup read the holes of the sparse image")
	}
	d.info("holes and zero blocks were skipped: read %s of %s", humanBytes(b0.Summary.BytesRead), humanBytes(b0.Summary.BytesTotal))

	d.say("the guest rewrites 4 MiB in place and a config file is added; drpipe backup again")
	if err := sample.Rewrite(img, d.imageSize/3, 4<<20, 99); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(files, "new-vm.xml"), []byte("<domain type='kvm'><name>new-vm</name></domain>\n"), 0o644); err != nil {
		return err
	}
	b1, err := backup("day1")
	if err != nil {
		return err
	}
	d.info("deduplication: the second backup stored %s for %s of source (%.2f%%)", humanBytes(b1.Summary.BytesNew), humanBytes(b1.Summary.BytesTotal),
		100*float64(b1.Summary.BytesNew)/float64(max(b1.Summary.BytesTotal, 1)))

	d.say("drpipe diff %s %s (from the trees alone, no file read)", b0.Snapshot.ID().Short(), b1.Snapshot.ID().Short())
	var changed []string
	err = pipeline.DiffSnapshots(ctx, r, b0.Snapshot, b1.Snapshot, func(c pipeline.DiffEntry) error {
		if c.Change != pipeline.Metadata { // the directories whose times changed
			changed = append(changed, fmt.Sprintf("%s %s", diffMark[c.Change], c.Path))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(changed) != 2 {
		return fmt.Errorf("diff found %d changed files, want the image and the new file: %v", len(changed), changed)
	}
	for _, c := range changed {
		d.info("%s", c)
	}

	target := filepath.Join(d.dir, "restore")
	d.say("drpipe restore latest --target %s", target)
	if err := d.restoreAndVerify(ctx, r, b1.Snapshot, src, target); err != nil {
		return err
	}

	d.say("drpipe check --read-data")
	rep, err := r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		return err
	}
	d.info("%d packs, %d shards, %s read and verified: no errors", rep.Packs, rep.Shards, humanBytes(rep.BytesRead))

	d.say("damage: delete shard 0 and corrupt shard 5 of every pack (2 of 6 shards, the parity limit)")
	var packs []repo.PackInfo
	_ = r.EachPack(func(p repo.PackInfo) error { packs = append(packs, p); return nil })
	for _, p := range packs {
		if err := be.Remove(ctx, p.ShardHandle(0)); err != nil {
			return err
		}
		path := filepath.Join(repoDir, "data", p.ShardHandle(5).Name[:2], p.ShardHandle(5).Name)
		if err := corruptFile(path); err != nil {
			return err
		}
	}
	rep, err = r.Check(ctx, repo.CheckOptions{ReadData: true})
	if !errors.Is(err, repo.ErrCheckFailed) {
		return fmt.Errorf("check did not notice the damage (err=%v)", err)
	}
	d.info("check found %d damaged packs, all repairable; e.g. pack %s: missing %v corrupt %v, affects %d files",
		len(rep.Damaged), rep.Damaged[0].Pack.Short(), rep.Damaged[0].Missing, rep.Damaged[0].Corrupt, len(rep.Damaged[0].Files))
	target2 := filepath.Join(d.dir, "restore-damaged")
	d.info("restoring from the damaged repository (blobs are rebuilt from parity on the fly):")
	if err := d.restoreAndVerify(ctx, r, b1.Snapshot, src, target2); err != nil {
		return err
	}

	d.say("drpipe repair")
	rr, err := r.Repair(ctx, repo.CheckOptions{})
	if err != nil {
		return err
	}
	d.info("rewrote %d shards of %d packs", rr.ShardsRewritten, len(rr.PacksRepaired))
	if _, err := r.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil {
		return fmt.Errorf("check after repair: %w", err)
	}
	d.info("check --read-data after repair: no errors, full redundancy")

	st, err := r.Stats(ctx)
	if err != nil {
		return err
	}
	d.say("drpipe stats")
	d.info("%d snapshots, %s logical, %d unique chunks, %d packs, %s stored (%s parity)", st.Snapshots, humanBytes(st.LogicalBytes), st.Chunks, st.Packs, humanBytes(st.StoredBytes), humanBytes(st.ParityBytes))
	r.Close()
	be.Close()
	if err := d.offsite(ctx, repoDir, src, string(pw)); err != nil {
		return err
	}
	d.a.printf("\ndemo finished in %.1fs: backup, dedupe, diff, restore, verify, damage, self-heal, repair, DR site, scrub, bucket, tape and tiering all worked\n", time.Since(start).Seconds())
	return nil
}

func (d *demo) restoreAndVerify(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, src, target string) error {
	res, err := pipeline.Restore(ctx, r, sn, pipeline.RestoreOptions{Target: target})
	if err != nil {
		return err
	}
	d.info("restored %d files (%s, %s written)", res.Files, humanBytes(res.BytesTotal), humanBytes(res.BytesWritten))
	restoredRoot := filepath.Join(target, strings.TrimPrefix(src, "/"))
	var checked int
	err = filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(restoredRoot, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		fq, err := os.Lstat(q)
		if err != nil {
			return fmt.Errorf("restored copy of %s: %w", rel, err)
		}
		if fi.Mode() != fq.Mode() {
			return fmt.Errorf("%s: mode %v, restored %v", rel, fi.Mode(), fq.Mode())
		}
		if fi.Mode().IsRegular() {
			same, err := sample.SameContent(p, q)
			if err != nil {
				return err
			}
			if !same {
				return fmt.Errorf("%s: restored content differs", rel)
			}
			checked++
		}
		return nil
	})
	if err != nil {
		return err
	}
	img := filepath.Join(restoredRoot, "images", "vm01-disk0.raw")
	orig, err := sample.AllocatedBytes(filepath.Join(src, "images", "vm01-disk0.raw"))
	if err != nil {
		return err
	}
	got, err := sample.AllocatedBytes(img)
	if err != nil {
		return err
	}
	// All-zero blocks come back as holes, so the copy may allocate less;
	// more than a few percent over the source means holes were filled.
	if got > orig+orig/20 {
		return fmt.Errorf("restored image allocates %s, source %s: it did not stay sparse", humanBytes(got), humanBytes(orig))
	}
	d.info("verified %d files byte for byte, modes equal; restored image allocates %s (source %s): still sparse", checked, humanBytes(got), humanBytes(orig))
	return nil
}

func corruptFile(path string) error {
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	b := make([]byte, 1)
	off := fi.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 0xff
	_, err = f.WriteAt(b, off)
	return err
}
