package mount

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
)

// dataRuns walks fd with SEEK_DATA and SEEK_HOLE and returns the data
// runs it finds, as [start, end) pairs.
func dataRuns(t *testing.T, fd int, size int64) [][2]int64 {
	t.Helper()
	var runs [][2]int64
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA at %d: %v", off, err)
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE at %d: %v", d, err)
		}
		if h <= d {
			t.Fatalf("SEEK_HOLE at %d gave %d, not past the data", d, h)
		}
		runs = append(runs, [2]int64{d, h})
		off = h
	}
	return runs
}

// TestSparseFilesSeekAndCountLikeTheSource: the mount answers SEEK_DATA
// and SEEK_HOLE with the holes backup recorded, for a small sparse file
// (extents in its node) and for one with so many runs that its extents
// are in content lists, and st_blocks counts the stored bytes, not the
// holes, once the file is open (for the small one from the first stat).
func TestSparseFilesSeekAndCountLikeTheSource(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	r := testRepo(t)
	src := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	write := func(name string, size int64, islands int, stride int64) {
		f, err := os.Create(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		for i := 0; i < islands; i++ {
			for k := range buf {
				buf[k] = byte(rng.Uint32() | 1)
			}
			if _, err := f.WriteAt(buf, int64(i)*stride+stride/2); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("small.img", 64<<20, 3, 16<<20)
	write("large.img", 700<<20, 600, 1<<20) // 1200 extents: content lists
	if _, err := pipeline.Backup(ctx, r, pipeline.BackupOptions{Host: "h", Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	mnt := mountForTest(t, r)
	for _, name := range []string{"small.img", "large.img"} {
		want, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		sf, err := os.Open(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		wantRuns := dataRuns(t, int(sf.Fd()), int64(len(want)))
		var wantSt unix.Stat_t
		if err := unix.Fstat(int(sf.Fd()), &wantSt); err != nil {
			t.Fatal(err)
		}
		sf.Close()

		mf, err := os.Open(filepath.Join(mnt, "h", "latest", src, name))
		if err != nil {
			t.Fatal(err)
		}
		defer mf.Close()
		gotRuns := dataRuns(t, int(mf.Fd()), int64(len(want)))
		if len(gotRuns) != len(wantRuns) {
			t.Fatalf("%s: %d data runs in the mount, %d in the source (first %v, want %v)", name, len(gotRuns), len(wantRuns), gotRuns[:min(3, len(gotRuns))], wantRuns[:min(3, len(wantRuns))])
		}
		for i := range wantRuns {
			if gotRuns[i] != wantRuns[i] {
				t.Fatalf("%s: data run %d is %v in the mount, %v in the source", name, i, gotRuns[i], wantRuns[i])
			}
		}
		if _, err := unix.Seek(int(mf.Fd()), int64(len(want)), unix.SEEK_HOLE); err != unix.ENXIO {
			t.Errorf("%s: SEEK_HOLE at the end: %v, want ENXIO", name, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(mf.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != int64(len(want)) || st.Blocks > wantSt.Blocks+wantSt.Blocks/20 || st.Blocks < wantSt.Blocks-wantSt.Blocks/20 {
			t.Errorf("%s: size %d, %d blocks in the mount; the source has %d, %d blocks", name, st.Size, st.Blocks, len(want), wantSt.Blocks)
		}
		got := make([]byte, len(want))
		if _, err := mf.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs from the source", name)
		}
	}
}

// TestSeekTakesTimeByTheRunsNotTheirSquare: a sparse copy of a file asks
// SEEK_DATA and SEEK_HOLE once per run; each answer must not cost a walk
// of all the file's extents, or a disk image of 100,000 runs takes
// minutes to copy (here, 50,000 runs must be walked within seconds).
func TestSeekTakesTimeByTheRunsNotTheirSquare(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t)
	const runs, run = 50000, 4096
	n := &repo.Node{Name: "img", Type: repo.NodeFile, Size: 2 * runs * run}
	for i := range runs {
		n.Content = append(n.Content, repo.Extent{ID: id.Hash([]byte(strconv.Itoa(i))), Len: run}, repo.Extent{Len: run, Zero: true})
	}
	f := &fileNode{m: &mfs{r: r}, n: n}
	start := time.Now()
	found := 0
	for off := uint64(0); off < uint64(n.Size); found++ {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%d of %d data runs found by seeking in 10s", found, runs)
		}
		d, errno := f.Lseek(ctx, nil, off, unix.SEEK_DATA)
		if errno == syscall.ENXIO && found == runs {
			break // the file ends in a hole
		}
		if errno != 0 {
			t.Fatalf("SEEK_DATA at %d: %v", off, errno)
		}
		h, errno := f.Lseek(ctx, nil, d, unix.SEEK_HOLE)
		if errno != 0 || d != uint64(found)*2*run || h != d+run {
			t.Fatalf("run %d: data at %d, hole at %d (%v); want %d, %d", found, d, h, errno, uint64(found)*2*run, uint64(found)*2*run+run)
		}
		off = h
	}
	if found != runs {
		t.Fatalf("%d data runs, want %d", found, runs)
	}
}
