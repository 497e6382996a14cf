package pipeline

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/internal/sample"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/retention"
)

// digestTree maps relative paths of regular files to their SHA-256.
func digestTree(t *testing.T, root string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	return out
}

// TestBackupsWhileForgetAndPrune runs backups from several goroutines into
// one repository while forget + prune (grace 0) run in a loop. Every
// snapshot that survives must restore byte-identical to what was backed
// up, and check --read-data must pass.
func TestBackupsWhileForgetAndPrune(t *testing.T) {
	iterations := 6
	if !testing.Short() {
		iterations = 15
	}
	if os.Getenv("DRPIPE_LONG") != "" {
		iterations = 60
	}
	ctx := context.Background()
	r0, be := newRepo(t)
	const hosts = 3
	srcs := make([]string, hosts)
	for h := range srcs {
		srcs[h] = filepath.Join(t.TempDir(), fmt.Sprintf("host%d", h))
		if _, err := sample.Tree(srcs[h], sample.TreeOptions{Files: 12, Bytes: 3 << 20, Seed: uint64(h)}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	expected := map[id.ID]map[string][32]byte{}
	srcOf := map[id.ID]int{}

	stop := make(chan struct{})
	var pruneErr error
	prunes, removed := 0, 0
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		rp, err := repo.Open(ctx, be, repo.Options{Password: []byte("pw"), CacheDir: t.TempDir()})
		if err != nil {
			pruneErr = err
			return
		}
		defer rp.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			all, err := rp.ListSnapshots(ctx)
			if err != nil {
				pruneErr = err
				return
			}
			var items []retention.Item
			for _, s := range all {
				items = append(items, retention.Item{ID: s.ID().String(), Time: s.Time, Host: s.Host, Paths: s.Paths})
			}
			for _, ds := range retention.Group(items, retention.GroupBy{Host: true}, retention.Policy{Last: 2}, time.Now()) {
				for _, d := range ds {
					if !d.Keep {
						x, _ := id.Parse(d.Item.ID)
						if err := rp.ForgetSnapshot(ctx, x); err != nil {
							pruneErr = err
							return
						}
					}
				}
			}
			rep, err := rp.Prune(ctx, repo.PruneOptions{GraceSet: true, ClockSkew: 50 * time.Millisecond, ClockSkewSet: true})
			if err != nil {
				pruneErr = err
				return
			}
			prunes++
			removed += rep.Removed
			time.Sleep(20 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	errs := make([]error, hosts)
	for h := 0; h < hosts; h++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(h), 7))
			for i := 0; i < iterations; i++ {
				// Change one file per round.
				files, _ := filepath.Glob(filepath.Join(srcs[h], "*", "*"))
				sort.Strings(files)
				if len(files) > 0 {
					f := files[rng.IntN(len(files))]
					if fi, err := os.Lstat(f); err == nil && fi.Mode().IsRegular() {
						os.Chmod(f, 0o644)
						os.WriteFile(f, sample.Binary(rng, 200<<10+rng.IntN(400<<10)), 0o644)
					}
				}
				want := digestTree(t, srcs[h])
				ri, err := repo.Open(ctx, be, repo.Options{Password: []byte("pw"), CacheDir: t.TempDir()})
				if err != nil {
					errs[h] = err
					return
				}
				res, err := Backup(ctx, ri, BackupOptions{Host: fmt.Sprintf("h%d", h), Paths: []string{srcs[h]}})
				ri.Close()
				if err != nil {
					errs[h] = fmt.Errorf("host %d round %d: %w", h, i, err)
					return
				}
				mu.Lock()
				expected[res.Snapshot.ID()] = want
				srcOf[res.Snapshot.ID()] = h
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	pwg.Wait()
	if err := errors.Join(append(errs, pruneErr)...); err != nil {
		t.Fatal(err)
	}
	if err := r0.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	survivors, err := r0.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d backups, %d prune runs removed %d packs; %d snapshots survive", len(expected), prunes, removed, len(survivors))
	if len(survivors) == 0 || len(survivors) == len(expected) {
		t.Fatalf("%d of %d snapshots survive: forget did not run concurrently", len(survivors), len(expected))
	}
	for _, sn := range survivors {
		want, ok := expected[sn.ID()]
		if !ok {
			t.Fatalf("unknown snapshot %s", sn.ID().Short())
		}
		dst := t.TempDir()
		if _, err := Restore(ctx, r0, sn, RestoreOptions{Target: dst}); err != nil {
			t.Fatalf("restore %s: %v", sn.ID().Short(), err)
		}
		got := digestTree(t, filepath.Join(dst, srcs[srcOf[sn.ID()]]))
		if len(got) != len(want) {
			t.Fatalf("snapshot %s restored %d files, want %d", sn.ID().Short(), len(got), len(want))
		}
		for p, d := range want {
			if got[p] != d {
				t.Fatalf("snapshot %s: %s differs after concurrent prune", sn.ID().Short(), p)
			}
		}
	}
	if rep, err := r0.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check --read-data: %v\n%v\n%+v", err, rep.Errors, rep.Damaged)
	}
}
