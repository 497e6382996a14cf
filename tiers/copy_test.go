package tiers_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func hashName(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeRepo fills be with objects shaped like a repository's: a config,
// a key, packs erasure-coded 4+2 into shards, index and snapshot objects
// named by their hashes. It returns every handle with its bytes.
func fakeRepo(t *testing.T, be tiers.Backend, packs int, seed uint64) map[tiers.Handle][]byte {
	t.Helper()
	objs := map[tiers.Handle][]byte{}
	add := func(h tiers.Handle, b []byte) {
		if err := tiers.PutBytes(t.Context(), be, h, b); err != nil {
			t.Fatal(err)
		}
		objs[h] = b
	}
	add(tiers.Handle{Type: tiers.TypeConfig, Name: "config"}, []byte(fmt.Sprintf("config of repository %d", seed)))
	k := randBytes(seed, 300)
	add(tiers.Handle{Type: tiers.TypeKey, Name: hashName(k)}, k)
	for p := range packs {
		pid, shards, err := erasure.Encode(erasure.Params{K: 4, M: 2}, randBytes(seed*1000+uint64(p), 20000+p*3000))
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range shards {
			add(tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, i)}, s)
		}
		ix := randBytes(seed*2000+uint64(p), 500)
		add(tiers.Handle{Type: tiers.TypeIndex, Name: hashName(ix)}, ix)
	}
	sn := randBytes(seed*3000, 200)
	add(tiers.Handle{Type: tiers.TypeSnapshot, Name: hashName(sn)}, sn)
	return objs
}

func equalContent(t *testing.T, be tiers.Backend, objs map[tiers.Handle][]byte) {
	t.Helper()
	n := 0
	for _, typ := range tiers.AllTypes {
		if err := be.List(t.Context(), typ, func(oi tiers.ObjectInfo) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if n != len(objs) {
		t.Errorf("destination holds %d objects, want %d", n, len(objs))
	}
	for h, b := range objs {
		got, err := tiers.LoadAll(t.Context(), be, h, 0, 0)
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%v at destination: %d bytes, %v", h, len(got), err)
		}
	}
}

type countProgress struct {
	planned     atomic.Int64
	transferred atomic.Int64
}

func (c *countProgress) Planned(_ tiers.Type, n int, _ int64) { c.planned.Add(int64(n)) }
func (c *countProgress) Transferred(_ tiers.Handle, n int64)  { c.transferred.Add(1) }

func TestCopyIdempotentAndOrdered(t *testing.T) {
	ctx := t.Context()
	src := tierstest.NewMemory()
	objs := fakeRepo(t, src, 8, 1)
	dst := tierstest.NewCounting(tierstest.NewMemory())
	var pr countProgress
	st, err := tiers.Copy(ctx, src, dst, tiers.CopyOptions{Workers: 3, Progress: &pr})
	if err != nil {
		t.Fatal(err)
	}
	if st.Total.Copied != len(objs) || st.Total.Present != 0 || st.Total.Source != len(objs) || pr.transferred.Load() != int64(len(objs)) {
		t.Errorf("first copy: %+v, progress %d", st.Total, pr.transferred.Load())
	}
	equalContent(t, dst, objs)
	// Data before index before snapshots.
	order := map[tiers.Type]int{}
	for i, typ := range tiers.AllTypes {
		order[typ] = i
	}
	stored := dst.Stored()
	for i := 1; i < len(stored); i++ {
		if order[stored[i].Type] < order[stored[i-1].Type] {
			t.Fatalf("stored %v after %v", stored[i], stored[i-1])
		}
	}
	// Again: nothing is sent.
	dst.Reset()
	st, err = tiers.Copy(ctx, src, dst, tiers.CopyOptions{})
	if err != nil || st.Total.Copied != 0 || st.Total.Present != len(objs) {
		t.Errorf("second copy: %+v, %v", st.Total, err)
	}
	if c := dst.Total(); c.Puts != 0 || c.BytesPut != 0 {
		t.Errorf("second copy put %d objects", c.Puts)
	}
	// Objects lost at the destination are sent again, and only those.
	var lost []tiers.Handle
	for h := range objs {
		if h.Type == tiers.TypeData && len(lost) < 7 {
			lost = append(lost, h)
			dst.Remove(ctx, h)
		}
	}
	dst.Reset()
	st, err = tiers.Copy(ctx, src, dst, tiers.CopyOptions{})
	if err != nil || st.Total.Copied != len(lost) {
		t.Errorf("copy after losses: %+v, %v", st.Total, err)
	}
	got := dst.Stored()
	slices.SortFunc(got, func(a, b tiers.Handle) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(lost, func(a, b tiers.Handle) int { return strings.Compare(a.Name, b.Name) })
	if !slices.Equal(got, lost) {
		t.Errorf("re-sent %v, want %v", got, lost)
	}
}

func TestCopyResumesAfterFailure(t *testing.T) {
	ctx := t.Context()
	src, _ := tiers.NewLocal(t.TempDir())
	objs := fakeRepo(t, src, 10, 2)
	mem := tierstest.NewMemory()
	f := tierstest.NewFaulty(mem, 7)
	stop := errors.New("link down")
	f.Inject(tierstest.Fault{Op: tierstest.OpPut, Type: tiers.TypeData, Skip: 25, Err: stop})
	st, err := tiers.Copy(ctx, src, f, tiers.CopyOptions{Workers: 2})
	if !errors.Is(err, tiers.ErrCopyIncomplete) || !errors.Is(err, stop) {
		t.Fatalf("copy over a failing link: %v", err)
	}
	// No index or snapshot reached the destination: they could reference
	// the data that did not.
	for _, typ := range []tiers.Type{tiers.TypeIndex, tiers.TypeSnapshot} {
		mem.List(ctx, typ, func(oi tiers.ObjectInfo) error {
			t.Errorf("%v copied although data failed", oi.Handle)
			return nil
		})
	}
	before := 0
	for _, typ := range tiers.AllTypes {
		mem.List(ctx, typ, func(tiers.ObjectInfo) error { before++; return nil })
	}
	if st.Total.Copied != before || before < 25 {
		t.Errorf("copied %d, destination holds %d", st.Total.Copied, before)
	}
	// The link is back: exactly the rest is sent.
	c := tierstest.NewCounting(mem)
	st, err = tiers.Copy(ctx, src, c, tiers.CopyOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.Total.Present != before || st.Total.Copied != len(objs)-before || int(c.Total().Puts) != len(objs)-before {
		t.Errorf("resumed copy: %+v with %d puts; %d were present of %d", st.Total, c.Total().Puts, before, len(objs))
	}
	equalContent(t, mem, objs)
}

func TestCopyVerifiesObjects(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		typ  tiers.Type
		off  int64
	}{{"shard payload", tiers.TypeData, 4000}, {"shard header", tiers.TypeData, 30}, {"index", tiers.TypeIndex, 10}, {"key", tiers.TypeKey, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			src := tierstest.NewMemory()
			objs := fakeRepo(t, src, 3, 3)
			var bad tiers.Handle
			for h, b := range objs {
				if h.Type == tc.typ {
					bad = h
					c := slices.Clone(b)
					c[tc.off] ^= 1
					tiers.PutBytes(ctx, src, h, c)
					break
				}
			}
			dst := tierstest.NewMemory()
			st, err := tiers.Copy(ctx, src, dst, tiers.CopyOptions{MemLimit: 1024}) // larger objects go through a spool file
			if !errors.Is(err, tiers.ErrCopyIncomplete) || !errors.Is(err, tiers.ErrVerify) || !strings.Contains(err.Error(), bad.String()) {
				t.Fatalf("copy of a damaged %v: %v", bad, err)
			}
			if st.Total.Failed != 1 {
				t.Errorf("failed %d, want 1", st.Total.Failed)
			}
			if _, err := dst.Stat(ctx, bad); !errors.Is(err, tiers.ErrNotFound) {
				t.Errorf("damaged object was stored: %v", err)
			}
			if _, err := dst.Stat(ctx, tiers.Handle{Type: tiers.TypeSnapshot, Name: func() string {
				for h := range objs {
					if h.Type == tiers.TypeSnapshot {
						return h.Name
					}
				}
				return ""
			}()}); !errors.Is(err, tiers.ErrNotFound) {
				t.Errorf("snapshot copied although an object it may need failed: %v", err)
			}
		})
	}
}

func TestCopyRefusesOtherRepository(t *testing.T) {
	src, dst := tierstest.NewMemory(), tierstest.NewMemory()
	fakeRepo(t, src, 1, 4)
	fakeRepo(t, dst, 1, 5)
	if _, err := tiers.Copy(t.Context(), src, dst, tiers.CopyOptions{}); !errors.Is(err, tiers.ErrDifferentRepository) {
		t.Errorf("copy onto another repository: %v", err)
	}
}

func TestCopyDryRunAndCancel(t *testing.T) {
	src := tierstest.NewMemory()
	objs := fakeRepo(t, src, 4, 6)
	dst := tierstest.NewCounting(tierstest.NewMemory())
	var pr countProgress
	st, err := tiers.Copy(t.Context(), src, dst, tiers.CopyOptions{DryRun: true, Progress: &pr})
	if err != nil || dst.Total().Puts != 0 || pr.planned.Load() != int64(len(objs)) || st.Total.Copied != 0 {
		t.Errorf("dry run: %+v, %d puts, planned %d, %v", st.Total, dst.Total().Puts, pr.planned.Load(), err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := tiers.Copy(ctx, src, dst, tiers.CopyOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled copy: %v", err)
	}
}

func TestObjectVerifier(t *testing.T) {
	pid, shards, err := erasure.Encode(erasure.Params{K: 3, M: 2}, randBytes(9, 50000))
	if err != nil {
		t.Fatal(err)
	}
	feed := func(v *tiers.ObjectVerifier, b []byte, chunk int) {
		for len(b) > 0 {
			k := min(chunk, len(b))
			v.Write(b[:k])
			b = b[k:]
		}
	}
	for i, s := range shards {
		h := tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, i)}
		v, err := tiers.NewObjectVerifier(h)
		if err != nil {
			t.Fatal(err)
		}
		for _, chunk := range []int{1, 7, 4096, len(s)} {
			v.Reset()
			feed(v, s, chunk)
			if err := v.Check(int64(len(s))); err != nil {
				t.Errorf("shard %d in chunks of %d: %v", i, chunk, err)
			}
		}
		// Every damage is caught: flips, truncation, extension, wrong index.
		for _, bad := range [][]byte{
			append(slices.Clone(s[:len(s)-1]), s[len(s)-1]^1), append(slices.Clone(s[:5]), append([]byte{s[5] ^ 4}, s[6:]...)...),
			s[:len(s)-1], append(slices.Clone(s), 0), s[:10],
		} {
			v.Reset()
			feed(v, bad, 1000)
			if err := v.Check(-1); !errors.Is(err, tiers.ErrVerify) {
				t.Errorf("damaged shard %d (%d bytes) passed: %v", i, len(bad), err)
			}
		}
		other := shards[(i+1)%len(shards)]
		v.Reset()
		feed(v, other, 100)
		if err := v.Check(-1); err == nil {
			t.Errorf("shard %d accepted under the name of shard %d", (i+1)%len(shards), i)
		}
	}
	if _, err := tiers.NewObjectVerifier(tiers.Handle{Type: tiers.TypeData, Name: "notashard"}); err == nil {
		t.Error("data object named notashard accepted")
	}
	if _, err := tiers.NewObjectVerifier(tiers.Handle{Type: tiers.TypeIndex, Name: strings.Repeat("A", 64)}); err == nil {
		t.Error("upper-case index name accepted")
	}
}

// FuzzObjectVerifier: shard objects are outside bytes. The verifier never
// panics and accepts exactly what erasure.VerifyShard accepts, however
// the bytes are split into writes.
func FuzzObjectVerifier(f *testing.F) {
	pid, shards, err := erasure.Encode(erasure.Params{K: 2, M: 1}, randBytes(1, 300))
	if err != nil {
		f.Fatal(err)
	}
	name := erasure.ShardName(pid, 1)
	f.Add(shards[1], uint16(7))
	f.Add(shards[0], uint16(1))
	f.Add(shards[1][:40], uint16(100))
	f.Add([]byte("DRPS"), uint16(2))
	f.Fuzz(func(t *testing.T, obj []byte, chunk uint16) {
		v, err := tiers.NewObjectVerifier(tiers.Handle{Type: tiers.TypeData, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		c := int(chunk%4096) + 1
		for b := obj; len(b) > 0; {
			k := min(c, len(b))
			v.Write(b[:k])
			b = b[k:]
		}
		got := v.Check(int64(len(obj)))
		_, want := erasure.VerifyShard(pid, 1, obj)
		if (got == nil) != (want == nil) {
			t.Errorf("verifier says %v, VerifyShard says %v", got, want)
		}
	})
}

// TestCopyBeforeIndexStops: when BeforeIndex fails (the copy's session
// in the destination lapsed, so a prune may have removed packs), the
// copy stops with the data copied and no index object or snapshot
// written.
func TestCopyBeforeIndexStops(t *testing.T) {
	ctx := t.Context()
	src := tierstest.NewMemory()
	fakeRepo(t, src, 4, 1)
	dst := tierstest.NewCounting(tierstest.NewMemory())
	lapsed := errors.New("session lapsed")
	st, err := tiers.Copy(ctx, src, dst, tiers.CopyOptions{BeforeIndex: func() error { return lapsed }})
	if !errors.Is(err, lapsed) || st == nil || st.ByType[tiers.TypeData].Copied == 0 {
		t.Fatalf("copy whose BeforeIndex fails: %v, %+v", err, st)
	}
	for _, h := range dst.Stored() {
		if h.Type == tiers.TypeIndex || h.Type == tiers.TypeSnapshot {
			t.Errorf("%v written after BeforeIndex failed", h)
		}
	}
}

// TestCopyChecksAgainBeforeSnapshots: a session that lapses while the
// index objects are copied stops the copy before the snapshots.
func TestCopyChecksAgainBeforeSnapshots(t *testing.T) {
	ctx := t.Context()
	src := tierstest.NewMemory()
	fakeRepo(t, src, 4, 1)
	dst := tierstest.NewCounting(tierstest.NewMemory())
	lapsed := errors.New("session lapsed")
	calls := 0
	check := func() error {
		if calls++; calls > 1 {
			return lapsed
		}
		return nil
	}
	st, err := tiers.Copy(ctx, src, dst, tiers.CopyOptions{BeforeIndex: check})
	if !errors.Is(err, lapsed) || st == nil || st.ByType[tiers.TypeIndex].Copied == 0 {
		t.Fatalf("copy whose session lapses during the index: %v, %+v", err, st)
	}
	for _, h := range dst.Stored() {
		if h.Type == tiers.TypeSnapshot {
			t.Errorf("%v written after the session lapsed", h)
		}
	}
}

// rewritingIndex is a source on which a prune rewrites the index while a
// copy runs: the first index object the copy reads is replaced by a new
// one (listing what the old one listed of the packs that stay) and is
// gone when read.
type rewritingIndex struct {
	tiers.Backend
	t        *testing.T
	once     atomic.Bool
	replaced tiers.Handle
}

func (r *rewritingIndex) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(io.Reader) error) error {
	if h.Type == tiers.TypeIndex && r.once.CompareAndSwap(false, true) {
		b := randBytes(99, 400)
		r.replaced = tiers.Handle{Type: tiers.TypeIndex, Name: hashName(b)}
		if err := tiers.PutBytes(ctx, r.Backend, r.replaced, b); err != nil {
			r.t.Fatal(err)
		}
		if err := r.Backend.Remove(ctx, h); err != nil {
			r.t.Fatal(err)
		}
	}
	return r.Backend.Load(ctx, h, offset, length, fn)
}

// TestCopyIndexReplacedMeanwhile: an index object that a prune of the
// source replaced during the copy is not taken for one that simply went:
// the snapshots, which may need the packs only the replacement lists, do
// not land without it.
func TestCopyIndexReplacedMeanwhile(t *testing.T) {
	ctx := t.Context()
	mem := tierstest.NewMemory()
	objs := fakeRepo(t, mem, 4, 5)
	src := &rewritingIndex{Backend: mem, t: t}
	dst := tierstest.NewMemory()
	_, err := tiers.Copy(ctx, src, dst, tiers.CopyOptions{Workers: 1})
	hasSnapshot := false
	dst.List(ctx, tiers.TypeSnapshot, func(tiers.ObjectInfo) error { hasSnapshot = true; return nil })
	_, serr := dst.Stat(ctx, src.replaced)
	if hasSnapshot && serr != nil {
		t.Errorf("the snapshot was copied without the index object that replaced one during the copy (copy error: %v)", err)
	}
	if err == nil && serr != nil {
		t.Errorf("copy succeeded without the index object that replaced one during the copy")
	}
	// A copy run again completes the destination.
	if _, err := tiers.Copy(ctx, mem, dst, tiers.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	for h := range objs {
		if h.Type == tiers.TypeSnapshot {
			if _, err := dst.Stat(ctx, h); err != nil {
				t.Errorf("%v: %v", h, err)
			}
		}
	}
	if _, err := dst.Stat(ctx, src.replaced); err != nil {
		t.Errorf("replacement index: %v", err)
	}
}

// endless serves every object followed by zeros without end, as a
// damaged source may, counting the bytes it serves.
type endless struct {
	tiers.Backend
	served atomic.Int64
}

func (e *endless) Load(ctx context.Context, h tiers.Handle, off, n int64, fn func(io.Reader) error) error {
	return e.Backend.Load(ctx, h, off, n, func(rd io.Reader) error {
		zeros := io.LimitReader(zeroReader{}, 1<<30) // ends, so a test of old code ends too
		return fn(&countingReader{r: io.MultiReader(rd, zeros), n: &e.served})
	})
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// TestCopyReadsNoMoreThanListed: an object that holds more than its
// listing gave is not read beyond that: a source serving an endless
// object must not fill memory or the spool disk. The copy fails naming
// it, and nothing is stored under its name.
func TestCopyReadsNoMoreThanListed(t *testing.T) {
	ctx := t.Context()
	src, dst := tierstest.NewMemory(), tierstest.NewMemory()
	objs := fakeRepo(t, src, 1, 7)
	var listed int64
	for _, b := range objs {
		listed += int64(len(b)) + 1
	}
	e := &endless{Backend: src}
	_, err := tiers.Copy(ctx, e, dst, tiers.CopyOptions{})
	if err == nil || !strings.Contains(err.Error(), "more than the") {
		t.Fatalf("copy from a source whose objects never end: %v", err)
	}
	if got := e.served.Load(); got > listed+1<<20 {
		t.Errorf("read %d bytes from the source, whose objects are listed as %d in all", got, listed)
	}
	n := 0
	for _, typ := range []tiers.Type{tiers.TypeData, tiers.TypeIndex, tiers.TypeSnapshot, tiers.TypeKey} {
		dst.List(ctx, typ, func(tiers.ObjectInfo) error { n++; return nil })
	}
	if n != 0 {
		t.Errorf("%d objects stored from a source that served more than it listed", n)
	}
}
