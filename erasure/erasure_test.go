package erasure

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/reedsolomon"
	"lukechampine.com/blake3"

	"github.com/drpipe/drpipe/internal/id"
)

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newRand(t testing.TB) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(len(t.Name())), 0x5eed))
}

func mustEncode(t testing.TB, p Params, pack []byte) (id.ID, [][]byte) {
	t.Helper()
	pid, shards, err := Encode(p, pack)
	if err != nil {
		t.Fatalf("Encode(%s, %d bytes): %v", p, len(pack), err)
	}
	return pid, shards
}

// cloneShards deep-copies shard objects so a test can damage them.
func cloneShards(shards [][]byte) [][]byte {
	out := make([][]byte, len(shards))
	for i, s := range shards {
		if s != nil {
			out[i] = bytes.Clone(s)
		}
	}
	return out
}

func TestParams(t *testing.T) {
	tests := []struct {
		in      string
		want    Params
		wantErr string
	}{
		{"4+2", Params{4, 2}, ""},
		{"1+0", Params{1, 0}, ""},
		{"10+4", Params{10, 4}, ""},
		{"128+127", Params{128, 127}, ""},
		{"04+2", Params{4, 2}, ""},
		{"0+2", Params{}, "K=0"},
		{"129+0", Params{}, "K=129"},
		{"4+128", Params{}, "M=128"},
		{"128+128", Params{}, "M=128"},
		{"200+55", Params{}, "K=200"},
		{"4", Params{}, "want \"K+M\""},
		{"", Params{}, "want \"K+M\""},
		{"4+", Params{}, "decimal"},
		{"+2", Params{}, "decimal"},
		{"4++2", Params{}, "decimal"},
		{"4+2+1", Params{}, "decimal"},
		{"4+-2", Params{}, "decimal"},
		{" 4+2", Params{}, "decimal"},
		{"4+2 ", Params{}, "decimal"},
		{"1000+2", Params{}, "decimal"},
		{"x+y", Params{}, "decimal"},
	}
	for _, tc := range tests {
		got, err := ParseParams(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "erasure: ") {
				t.Errorf("ParseParams(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseParams(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, err := ParseParams(got.String()); err != nil || back != got {
			t.Errorf("ParseParams(%q.String()=%q) = %v, %v", tc.in, got.String(), back, err)
		}
	}
	if err := (Params{127, 127}).Validate(); err != nil {
		t.Errorf("Params{127,127}.Validate() = %v, want nil", err)
	}
	if err := (Params{128, 127}).Validate(); err != nil {
		t.Errorf("Params{128,127}.Validate() = %v, want nil", err)
	}
	if got, want := DefaultParams.String(), "4+2"; got != want {
		t.Errorf("DefaultParams.String() = %q, want %q", got, want)
	}
	if got, want := (Params{-1, 3}).String(), "-1+3"; got != want {
		t.Errorf("Params{-1,3}.String() = %q, want %q", got, want)
	}
}

func TestHeaderSize(t *testing.T) {
	tests := []struct {
		p    Params
		want int
	}{
		{Params{4, 2}, 24 + 32*6},
		{Params{1, 0}, 24 + 32},
		{Params{128, 127}, MaxHeaderSize},
		{Params{0, 2}, 0},
		{Params{200, 100}, 0},
	}
	for _, tc := range tests {
		if got := HeaderSize(tc.p); got != tc.want {
			t.Errorf("HeaderSize(%s) = %d, want %d", tc.p, got, tc.want)
		}
	}
}

// TestGolden pins the byte layout of both shard versions with
// independently built objects: version 1 tables hold SHA-256 payload
// hashes, version 2 BLAKE3-256; the pack id is SHA-256 of the table.
func TestGolden(t *testing.T) {
	pack := []byte("hello")
	for v := MinVersion; v <= Version; v++ {
		pid, shards, err := EncodeVersion(v, Params{K: 2, M: 0}, pack, nil)
		if err != nil {
			t.Fatal(err)
		}
		payloads := [][]byte{[]byte("hel"), []byte("lo\x00")}
		var table []byte
		table = append(table, 'D', 'R', 'P', 'S', byte(v), 2, 0, 0)
		table = binary.LittleEndian.AppendUint64(table, 5)
		table = binary.LittleEndian.AppendUint32(table, 3)
		for _, p := range payloads {
			sum := sha256.Sum256(p)
			if v == 2 {
				sum = blake3.Sum256(p)
			}
			table = append(table, sum[:]...)
		}
		if got, want := pid, id.ID(sha256.Sum256(table)); got != want {
			t.Errorf("v%d: pack id = %s, want %s", v, got, want)
		}
		for i, p := range payloads {
			want := slices.Concat(table, []byte{byte(i), 0, 0, 0}, p)
			if !bytes.Equal(shards[i], want) {
				t.Errorf("v%d: shard %d =\n%x\nwant\n%x", v, i, shards[i], want)
			}
		}
		if got, want := ShardName(pid, 1), pid.String()+"-1"; got != want {
			t.Errorf("ShardName = %q, want %q", got, want)
		}
	}
}

var roundTripParams = []Params{
	{1, 0}, {1, 1}, {1, 3}, {2, 1}, {3, 2}, {4, 2}, {5, 0}, {6, 3}, {10, 4}, {17, 5}, {32, 32}, {128, 127},
}

func packLengths(r *rand.Rand, k int) []int {
	ls := []int{1, k, k + 1, 2*k - 1, 3*k + 2, 1000, 4096}
	if k > 1 {
		ls = append(ls, k-1)
	}
	for range 2 {
		ls = append(ls, 1+r.IntN(3<<20))
	}
	return ls
}

func TestRoundTrip(t *testing.T) {
	r := newRand(t)
	for _, p := range roundTripParams {
		for _, l := range packLengths(r, p.K) {
			if testing.Short() && l > 100000 {
				continue
			}
			t.Run(fmt.Sprintf("%s/L=%d", p, l), func(t *testing.T) {
				pack := randBytes(r, l)
				orig := bytes.Clone(pack)
				pid, shards := mustEncode(t, p, pack)
				if !bytes.Equal(pack, orig) {
					t.Fatal("Encode modified its input")
				}
				checkShards(t, p, pid, pack, shards)

				res, err := Reconstruct(pid, shards)
				if err != nil {
					t.Fatalf("Reconstruct: %v", err)
				}
				if !bytes.Equal(res.Pack, pack) {
					t.Fatalf("Reconstruct: pack differs (got %d bytes, want %d)", len(res.Pack), len(pack))
				}
				if len(res.Rebuilt) != 0 || len(res.Missing) != 0 || len(res.Corrupt) != 0 || len(res.Damage) != 0 {
					t.Errorf("Reconstruct of intact pack: rebuilt %d, missing %v, corrupt %v, damage %v; want none",
						len(res.Rebuilt), res.Missing, res.Corrupt, res.Damage)
				}
			})
		}
	}
}

// checkShards checks the shard objects of an encoding against the format
// description, independently of the package's own parser where possible.
func checkShards(t *testing.T, p Params, pid id.ID, pack []byte, shards [][]byte) {
	t.Helper()
	n, l := p.K+p.M, len(pack)
	s := (l + p.K - 1) / p.K
	hs := 24 + 32*n
	if len(shards) != n {
		t.Fatalf("got %d shards, want %d", len(shards), n)
	}
	payloads := make([][]byte, n)
	for i, sh := range shards {
		if got, want := len(sh), hs+s; got != want {
			t.Fatalf("shard %d is %d bytes, want %d", i, got, want)
		}
		if !bytes.Equal(sh[:hs-4], shards[0][:hs-4]) {
			t.Errorf("shard %d: table differs from shard 0", i)
		}
		if got, want := id.Hash(sh[:hs-4]), pid; got != want {
			t.Errorf("shard %d: table hash %s, want pack id %s", i, got.Short(), want.Short())
		}
		if got, want := sh[hs-4:hs], []byte{byte(i), 0, 0, 0}; !bytes.Equal(got, want) {
			t.Errorf("shard %d: index bytes %x, want %x", i, got, want)
		}
		payloads[i] = sh[hs:]
		if i < p.K {
			want := make([]byte, s)
			if i*s < l {
				copy(want, pack[i*s:min(l, (i+1)*s)])
			}
			if !bytes.Equal(payloads[i], want) {
				t.Errorf("data shard %d payload differs from pack[%d:%d]+padding", i, i*s, (i+1)*s)
			}
		}
		h, err := VerifyShard(pid, i, sh)
		if err != nil {
			t.Fatalf("VerifyShard(%d): %v", i, err)
		}
		if h.K != p.K || h.M != p.M || h.PackLen != int64(l) || h.ShardSize != s || h.Index != i || h.Version != Version ||
			h.Size() != hs || h.ObjectSize() != int64(hs+s) || h.PackID() != pid || HeaderSize(p) != hs {
			t.Errorf("shard %d: header %+v (size %d, object %d, id %s) does not match %s L=%d S=%d",
				i, h, h.Size(), h.ObjectSize(), h.PackID().Short(), p, l, s)
		}
	}
	if p.M > 0 {
		enc, err := reedsolomon.New(p.K, p.M)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := enc.Verify(payloads); !ok || err != nil {
			t.Errorf("reedsolomon Verify of parity = %v, %v; want true", ok, err)
		}
	}
}

// damage is one way to spoil a shard object.
type damage struct {
	name string
	fn   func(r *rand.Rand, obj []byte) []byte // nil result: missing
}

var damages = []damage{
	{"missing", func(*rand.Rand, []byte) []byte { return nil }},
	{"flip-header", func(r *rand.Rand, obj []byte) []byte {
		hs := len(obj) - shardSizeOf(obj)
		obj[r.IntN(hs)] ^= 1 << r.IntN(8)
		return obj
	}},
	{"flip-payload", func(r *rand.Rand, obj []byte) []byte {
		hs := len(obj) - shardSizeOf(obj)
		obj[hs+r.IntN(len(obj)-hs)] ^= 1 << r.IntN(8)
		return obj
	}},
	{"truncate", func(r *rand.Rand, obj []byte) []byte { return obj[:r.IntN(len(obj))] }},
	{"extend", func(r *rand.Rand, obj []byte) []byte { return append(obj, 0) }},
	{"empty", func(*rand.Rand, []byte) []byte { return []byte{} }},
}

func shardSizeOf(obj []byte) int { return int(binary.LittleEndian.Uint32(obj[16:20])) }

// checkReconstruct damages the slots in bad with the given damage kinds and
// checks that Reconstruct reports and repairs exactly those.
func checkReconstruct(t *testing.T, r *rand.Rand, p Params, pid id.ID, pack []byte, shards [][]byte, bad []int, kinds []damage) {
	t.Helper()
	in := cloneShards(shards)
	var wantMissing, wantCorrupt []int
	desc := ""
	for j, i := range bad {
		in[i] = kinds[j].fn(r, in[i])
		if in[i] == nil {
			wantMissing = append(wantMissing, i)
		} else {
			wantCorrupt = append(wantCorrupt, i)
		}
		desc += fmt.Sprintf(" %d:%s", i, kinds[j].name)
	}
	res, err := Reconstruct(pid, in)
	if res == nil {
		t.Fatalf("damage%s: Reconstruct returned nil result (err %v)", desc, err)
	}
	if !slices.Equal(res.Missing, wantMissing) || !slices.Equal(res.Corrupt, wantCorrupt) {
		t.Errorf("damage%s: missing %v corrupt %v, want %v and %v", desc, res.Missing, res.Corrupt, wantMissing, wantCorrupt)
	}
	for _, i := range wantCorrupt {
		if e := res.Damage[i]; !errors.Is(e, ErrCorrupt) {
			t.Errorf("damage%s: Damage[%d] = %v, want an ErrCorrupt", desc, i, e)
		} else if !strings.Contains(e.Error(), fmt.Sprintf("shard %d of pack %s", i, pid.Short())) {
			t.Errorf("damage%s: Damage[%d] = %q, does not name the shard", desc, i, e)
		}
	}
	if len(res.Damage) != len(wantCorrupt) {
		t.Errorf("damage%s: Damage has %d entries, want %d", desc, len(res.Damage), len(wantCorrupt))
	}
	if len(bad) > p.M {
		if !errors.Is(err, ErrTooFewShards) {
			t.Fatalf("damage%s: Reconstruct err = %v, want ErrTooFewShards", desc, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, "missing "+fmtList(wantMissing)) || !strings.Contains(msg, "corrupt "+fmtList(wantCorrupt)) {
			t.Errorf("damage%s: error %q does not list missing %v and corrupt %v", desc, msg, wantMissing, wantCorrupt)
		}
		if res.Pack != nil || res.Rebuilt != nil {
			t.Errorf("damage%s: failed Reconstruct returned a pack or rebuilt shards", desc)
		}
		return
	}
	if err != nil {
		t.Fatalf("damage%s: Reconstruct: %v", desc, err)
	}
	if !bytes.Equal(res.Pack, pack) {
		t.Fatalf("damage%s: rebuilt pack differs", desc)
	}
	if len(res.Rebuilt) != len(bad) {
		t.Errorf("damage%s: %d rebuilt shards, want %d", desc, len(res.Rebuilt), len(bad))
	}
	for _, i := range bad {
		if !bytes.Equal(res.Rebuilt[i], shards[i]) {
			t.Errorf("damage%s: rebuilt shard %d differs from the original (%d vs %d bytes)", desc, i, len(res.Rebuilt[i]), len(shards[i]))
		}
	}
	for i := range in {
		if in[i] != nil && !slices.Contains(bad, i) && !bytes.Equal(in[i], shards[i]) {
			t.Errorf("damage%s: Reconstruct modified input slot %d", desc, i)
		}
	}
}

// TestReconstruct4x2Exhaustive removes or corrupts every subset of the six
// shards of a 4+2 pack.
func TestReconstruct4x2Exhaustive(t *testing.T) {
	r := newRand(t)
	p := Params{4, 2}
	for _, l := range []int{1, 3, 4, 5, 10007} {
		pack := randBytes(r, l)
		pid, shards := mustEncode(t, p, pack)
		for mask := range 1 << 6 {
			var bad []int
			for i := range 6 {
				if mask&(1<<i) != 0 {
					bad = append(bad, i)
				}
			}
			for _, d := range damages {
				kinds := make([]damage, len(bad))
				for j := range kinds {
					kinds[j] = d
				}
				checkReconstruct(t, r, p, pid, pack, shards, bad, kinds)
			}
			// And a random mix of damage kinds.
			kinds := make([]damage, len(bad))
			for j := range kinds {
				kinds[j] = damages[r.IntN(len(damages))]
			}
			checkReconstruct(t, r, p, pid, pack, shards, bad, kinds)
		}
	}
}

func TestReconstructRandom(t *testing.T) {
	r := newRand(t)
	for _, p := range roundTripParams {
		n := p.K + p.M
		for _, l := range []int{1, p.K + 1, 1 + r.IntN(300000)} {
			pack := randBytes(r, l)
			pid, shards := mustEncode(t, p, pack)
			for range 8 {
				nbad := r.IntN(p.M + 1)
				if r.IntN(4) == 0 {
					nbad = min(n, p.M+1+r.IntN(3)) // too many
				}
				bad := r.Perm(n)[:nbad]
				slices.Sort(bad)
				kinds := make([]damage, nbad)
				for j := range kinds {
					kinds[j] = damages[r.IntN(len(damages))]
				}
				checkReconstruct(t, r, p, pid, pack, shards, bad, kinds)
			}
		}
	}
}

func TestReconstructMisplacedAndForeign(t *testing.T) {
	r := newRand(t)
	p := Params{4, 2}
	pack := randBytes(r, 5000)
	pid, shards := mustEncode(t, p, pack)
	_, other := mustEncode(t, p, randBytes(r, 5000))

	in := cloneShards(shards)
	in[0], in[1] = in[1], in[0] // swapped slots
	in[4] = other[4]            // shard of another pack
	res, err := Reconstruct(pid, in)
	if err == nil || !errors.Is(err, ErrTooFewShards) {
		t.Fatalf("3 bad shards of 4+2: err = %v, want ErrTooFewShards", err)
	}
	if want := []int{0, 1, 4}; !slices.Equal(res.Corrupt, want) {
		t.Errorf("Corrupt = %v, want %v", res.Corrupt, want)
	}
	for i, want := range map[int]string{0: "shard index 1, want 0", 1: "shard index 0, want 1", 4: "not to the pack ID"} {
		if e := res.Damage[i]; e == nil || !strings.Contains(e.Error(), want) {
			t.Errorf("Damage[%d] = %v, want it to say %q", i, e, want)
		}
	}

	in[4] = shards[4]
	res, err = Reconstruct(pid, in)
	if err != nil {
		t.Fatalf("2 swapped shards of 4+2: %v", err)
	}
	if !bytes.Equal(res.Pack, pack) || !bytes.Equal(res.Rebuilt[0], shards[0]) || !bytes.Equal(res.Rebuilt[1], shards[1]) {
		t.Errorf("2 swapped shards of 4+2: pack or rebuilt shards differ")
	}
}

func TestReconstructSlotCount(t *testing.T) {
	r := newRand(t)
	pid, shards := mustEncode(t, Params{4, 2}, randBytes(r, 100))
	tests := []struct {
		name  string
		slots [][]byte
		want  string
		is    error
	}{
		{"none", nil, "none of 0 slots", ErrTooFewShards},
		{"all-nil", make([][]byte, 6), "missing [0 1 2 3 4 5], corrupt none", ErrTooFewShards},
		{"short", shards[:5], "5 shard slots given, but the pack has 4+2=6 shards", nil},
		{"long", append(cloneShards(shards), nil), "7 shard slots given", nil},
		{"huge", make([][]byte, 256), "256 shard slots", nil},
	}
	for _, tc := range tests {
		res, err := Reconstruct(pid, tc.slots)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "erasure: ") {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.want)
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: err = %v, want it to wrap %v", tc.name, err, tc.is)
		}
		if res != nil && res.Pack != nil {
			t.Errorf("%s: got a pack with an error", tc.name)
		}
	}
}

// TestReconstructManyPatternsBoundedMemory rebuilds a 128+127 pack with
// many different sets of lost data shards, as a long-running reader meets
// them over time: the process must not keep state per set.
func TestReconstructManyPatternsBoundedMemory(t *testing.T) {
	r := newRand(t)
	p := Params{128, 127}
	pack := randBytes(r, 128)
	pid, shards := mustEncode(t, p, pack)
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	in := cloneShards(shards)
	if _, err := Reconstruct(pid, in); err != nil {
		t.Fatal(err)
	}
	before := heap()
	n := 0
	for i := 0; i < 128 && n < 600; i++ {
		for j := i + 1; j < 128 && n < 600; j += 7 {
			in := slices.Clone(shards)
			in[i], in[j] = nil, nil
			res, err := Reconstruct(pid, in)
			if err != nil || !bytes.Equal(res.Pack, pack) {
				t.Fatalf("lost %d and %d: %v", i, j, err)
			}
			n++
		}
	}
	if grew := int64(heap()) - int64(before); grew > 4<<20 {
		t.Errorf("after rebuilding with %d different lost shard pairs, the heap grew by %d MiB and stays", n, grew>>20)
	}
}

// TestReconstructInconsistent builds a pack whose shards all verify but
// whose parity was computed from other data: rebuilding a data shard from
// it must fail instead of returning a wrong pack.
func TestReconstructInconsistent(t *testing.T) {
	r := newRand(t)
	p := Params{4, 2}
	_, shards := mustEncode(t, p, randBytes(r, 4000))
	h, err := ParseHeader(shards[0])
	if err != nil {
		t.Fatal(err)
	}
	hs := h.Size()
	shards[4][hs] ^= 0xff // damage parity 4 and re-sign the table
	h.Hashes[4] = h.PayloadHash(shards[4][hs:])
	for i, sh := range shards {
		h.putHeader(sh, i)
	}
	pid := h.PackID()
	for i, sh := range shards {
		if _, err := VerifyShard(pid, i, sh); err != nil {
			t.Fatalf("forged shard %d does not verify: %v", i, err)
		}
	}
	in := cloneShards(shards)
	in[0] = nil
	in[5] = nil
	res, err := Reconstruct(pid, in)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "inconsistent") {
		t.Fatalf("Reconstruct of inconsistent pack: err = %v, want ErrCorrupt saying inconsistent", err)
	}
	if res != nil && (res.Pack != nil || res.Rebuilt != nil) {
		t.Errorf("Reconstruct of inconsistent pack returned a pack or rebuilt shards")
	}
}

// mutate returns a copy of obj changed by fn.
func mutate(obj []byte, fn func(b []byte) []byte) []byte { return fn(bytes.Clone(obj)) }

func TestVerifyShardErrors(t *testing.T) {
	r := newRand(t)
	p := Params{4, 2}
	pid, shards := mustEncode(t, p, randBytes(r, 1001))
	obj := shards[2]
	hs := HeaderSize(p)
	tt := hs - 4
	put64 := func(off int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint64(b[off:], v); return b }
	}
	put32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }
	}
	set := func(off int, v byte) func([]byte) []byte {
		return func(b []byte) []byte { b[off] = v; return b }
	}
	tests := []struct {
		name  string
		obj   []byte
		index int
		want  string
	}{
		{"ok", obj, 2, ""},
		{"nil", nil, 2, "truncated header: have 0 bytes, need at least 20"},
		{"prefix19", obj[:19], 2, "have 19 bytes, need at least 20"},
		{"prefix-table", obj[:100], 2, fmt.Sprintf("have 100 bytes, need %d for a 4+2 header", hs)},
		{"magic", mutate(obj, set(0, 'X')), 2, `offset 0: magic "XRPS"`},
		{"version", mutate(obj, set(4, 3)), 2, "offset 4: format version 3, this drpipe reads 1..2"},
		{"version 0", mutate(obj, set(4, 0)), 2, "offset 4: format version 0, this drpipe reads 1..2"},
		{"k0", mutate(obj, set(5, 0)), 2, "offset 5: K=0"},
		{"k129", mutate(obj, set(5, 129)), 2, "offset 5: K=129"},
		{"m200", mutate(obj, set(6, 200)), 2, "offset 6: M=200"},
		{"sum", mutate(obj, func(b []byte) []byte { b[5], b[6] = 128, 128; return b }), 2, "offset 6: M=128"},
		{"k128m127", mutate(obj, func(b []byte) []byte { b[5], b[6] = 128, 127; return b }), 2, "offset 16: shard size 251, want ceil(1001/128)=8"},
		{"reserved7", mutate(obj, set(7, 1)), 2, "offset 7: reserved byte 0x01"},
		{"len0", mutate(obj, put64(8, 0)), 2, "offset 8: pack length 0"},
		{"len-huge", mutate(obj, put64(8, 1<<60)), 2, "offset 8: pack length 1152921504606846976 is too large"},
		{"len-max", mutate(obj, put64(8, math.MaxUint64)), 2, "too large"},
		{"len-mismatch", mutate(obj, put64(8, 2000)), 2, "offset 16: shard size 251, want ceil(2000/4)=500"},
		{"size-mismatch", mutate(obj, put32(16, 252)), 2, "offset 16: shard size 252, want ceil(1001/4)=251"},
		{"huge-consistent", mutate(obj, func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[8:], 4*uint64(hugeS))
			binary.LittleEndian.PutUint32(b[16:], hugeS)
			return b
		}), 2, "not to the pack ID"},
		{"index-range", mutate(obj, set(tt, 6)), 2, fmt.Sprintf("offset %d: shard index 6, want 0..5", tt)},
		{"index-other", mutate(obj, set(tt, 3)), 2, fmt.Sprintf("offset %d: shard index 3, want 2", tt)},
		{"index-arg", obj, 7, "shard index 2, want 7"},
		{"index-neg", obj, -1, "shard index 2, want -1"},
		{"reserved-idx", mutate(obj, set(tt+2, 9)), 2, fmt.Sprintf("offset %d: reserved bytes 00 09 00", tt+1)},
		{"table", mutate(obj, set(40, obj[40]^1)), 2, fmt.Sprintf("shard table [0:%d) hashes to", tt)},
		{"long", append(bytes.Clone(obj), 0), 2, fmt.Sprintf("object is %d bytes, want %d (%d-byte header + 251-byte payload)", hs+252, hs+251, hs)},
		{"short", obj[:len(obj)-1], 2, fmt.Sprintf("object is %d bytes, want %d", hs+250, hs+251)},
		{"payload", mutate(obj, set(hs+7, obj[hs+7]^0x80)), 2, fmt.Sprintf("payload [%d:%d) hashes to", hs, hs+251)},
	}
	for _, tc := range tests {
		h, err := VerifyShard(pid, tc.index, tc.obj)
		if tc.want == "" {
			if err != nil || h.Index != tc.index {
				t.Errorf("%s: VerifyShard = %+v, %v; want success", tc.name, h, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: VerifyShard succeeded, want error containing %q", tc.name, tc.want)
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v does not wrap ErrCorrupt", tc.name, err)
		}
		prefix := fmt.Sprintf("erasure: corrupt shard: shard %d of pack %s: ", tc.index, pid.Short())
		if got := err.Error(); !strings.HasPrefix(got, prefix) || !strings.Contains(got, tc.want) {
			t.Errorf("%s: got error %q, want %q…%q", tc.name, got, prefix, tc.want)
		}
	}
}

func TestParseHeader(t *testing.T) {
	r := newRand(t)
	p := Params{10, 4}
	pid, shards := mustEncode(t, p, randBytes(r, 12345))
	hs := HeaderSize(p)
	obj := shards[11]
	// Every prefix shorter than the header is "short"; the header alone parses.
	for n := 0; n < hs; n++ {
		_, err := ParseHeader(obj[:n])
		if !errors.Is(err, ErrShortHeader) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("ParseHeader(prefix %d of %d) err = %v, want ErrShortHeader", n, hs, err)
		}
		if want := fmt.Sprintf("have %d bytes", n); !strings.Contains(err.Error(), want) {
			t.Fatalf("ParseHeader(prefix %d) err = %q, want it to contain %q", n, err, want)
		}
	}
	for _, b := range [][]byte{obj[:hs], obj} {
		h, err := ParseHeader(b)
		if err != nil {
			t.Fatalf("ParseHeader(%d bytes): %v", len(b), err)
		}
		if h.Index != 11 || h.PackID() != pid || h.K != 10 || h.M != 4 || h.PackLen != 12345 || h.ShardSize != 1235 || len(h.Hashes) != 14 {
			t.Errorf("ParseHeader(%d bytes) = %+v", len(b), h)
		}
	}
	// Malformed headers are ErrCorrupt even when short.
	bad := bytes.Clone(obj[:30])
	bad[4] = 9
	if _, err := ParseHeader(bad); !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(err.Error(), "erasure: corrupt shard: header offset 4:") {
		t.Errorf("ParseHeader(bad version) = %v, want ErrCorrupt at offset 4", err)
	}
}

func TestLocate(t *testing.T) {
	r := newRand(t)
	for _, p := range []Params{{1, 0}, {3, 1}, {4, 2}, {10, 4}} {
		for _, l := range []int{1, p.K, p.K + 1, 9999} {
			pack := randBytes(r, l)
			_, shards := mustEncode(t, p, pack)
			h, err := ParseHeader(shards[0])
			if err != nil {
				t.Fatal(err)
			}
			ranges := [][2]int{{0, l}, {0, 0}, {l, 0}, {l - 1, 1}, {0, 1}}
			for range 50 {
				off := r.IntN(l + 1)
				ranges = append(ranges, [2]int{off, r.IntN(l - off + 1)})
			}
			for _, rg := range ranges {
				off, n := rg[0], rg[1]
				spans, err := h.Locate(int64(off), int64(n))
				if err != nil {
					t.Fatalf("%s L=%d: Locate(%d, %d): %v", p, l, off, n, err)
				}
				var got []byte
				for _, sp := range spans {
					if sp.Shard < 0 || sp.Shard >= p.K || sp.Len <= 0 {
						t.Fatalf("%s L=%d: Locate(%d, %d): bad span %+v", p, l, off, n, sp)
					}
					got = append(got, shards[sp.Shard][sp.ObjOffset:sp.ObjOffset+sp.Len]...)
				}
				if !bytes.Equal(got, pack[off:off+n]) {
					t.Fatalf("%s L=%d: Locate(%d, %d) spans %+v read %d bytes that differ from pack[%d:%d]", p, l, off, n, spans, len(got), off, off+n)
				}
				if len(spans) > p.K {
					t.Errorf("%s L=%d: Locate(%d, %d): %d spans for %d data shards", p, l, off, n, len(spans), p.K)
				}
			}
		}
	}

	h, _ := ParseHeader(mustShard(t))
	for _, rg := range [][2]int64{{-1, 1}, {0, -1}, {0, 101}, {100, 1}, {101, 0}, {1, math.MaxInt64}, {math.MaxInt64, math.MaxInt64}, {math.MinInt64, 1}} {
		if spans, err := h.Locate(rg[0], rg[1]); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("Locate(%d, %d) = %v, %v; want out of range error", rg[0], rg[1], spans, err)
		}
	}
	if _, err := (Header{}).Locate(0, 0); err == nil {
		t.Errorf("zero Header: Locate succeeded, want error")
	}
	if _, err := (Header{K: 2, M: 1, PackLen: 10, ShardSize: 0}).Locate(0, 1); err == nil {
		t.Errorf("ShardSize 0: Locate succeeded, want error")
	}
}

// mustShard returns shard 0 of a 4+2 pack of 100 bytes.
func mustShard(t *testing.T) []byte {
	_, shards := mustEncode(t, Params{4, 2}, make([]byte, 100))
	return shards[0]
}

func TestShardName(t *testing.T) {
	r := newRand(t)
	for range 20 {
		var pid id.ID
		copy(pid[:], randBytes(r, 32))
		for _, i := range []int{0, 1, 9, 10, 99, 100, 254} {
			name := ShardName(pid, i)
			gotID, gotI, err := ParseShardName(name)
			if err != nil || gotID != pid || gotI != i {
				t.Fatalf("ParseShardName(%q) = %s, %d, %v; want %s, %d", name, gotID, gotI, err, pid, i)
			}
		}
	}
	h := strings.Repeat("ab", 32)
	junk := []string{
		"", "-", "-1", h, h + "-", h + "-01", h + "-+1", h + "--1", h + "-255", h + "-1000", h + "-1-2",
		h + "-1 ", " " + h + "-1", h + "-x", h[:63] + "-1", h + "a-1", strings.ToUpper(h) + "-1",
		strings.Repeat("g", 64) + "-1", h + "-１", h + "-0x1", h + "-1e2", strings.Repeat("x", 10000),
	}
	for _, name := range junk {
		if pid, i, err := ParseShardName(name); err == nil {
			t.Errorf("ParseShardName(%q) = %s, %d; want error", name, pid, i)
		} else if !strings.HasPrefix(err.Error(), "erasure: shard name ") || len(err.Error()) > 400 {
			t.Errorf("ParseShardName(%q) error %q: want a short message starting \"erasure: shard name \"", name, err)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		p    Params
		pack []byte
		want string
	}{
		{Params{4, 2}, nil, "empty pack"},
		{Params{4, 2}, []byte{}, "empty pack"},
		{Params{0, 2}, []byte{1}, "K=0"},
		{Params{4, -1}, []byte{1}, "M=-1"},
		{Params{200, 100}, []byte{1}, "K=200"},
		{Params{128, 128}, []byte{1}, "M=128"},
	}
	for _, tc := range tests {
		pid, shards, err := Encode(tc.p, tc.pack)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "erasure: ") {
			t.Errorf("Encode(%s, %d bytes) = %s, %d shards, %v; want error containing %q", tc.p, len(tc.pack), pid.Short(), len(shards), err, tc.want)
		}
	}
}

// TestEncodedSize checks EncodedSize against what Encode produces, and that
// it is 0 for every pack Encode refuses.
func TestEncodedSize(t *testing.T) {
	r := newRand(t)
	for _, p := range []Params{{1, 0}, {2, 1}, {4, 2}, {10, 4}} {
		for _, l := range []int{1, p.K - 1, p.K, p.K + 1, 1000} {
			if l < 1 {
				continue
			}
			_, shards := mustEncode(t, p, randBytes(r, l))
			total := 0
			for _, s := range shards {
				total += len(s)
			}
			if got := EncodedSize(p, l); got != total {
				t.Errorf("EncodedSize(%s, %d) = %d, Encode wrote %d bytes", p, l, got, total)
			}
		}
	}
	for _, tc := range []struct {
		p Params
		l int
	}{
		{Params{4, 2}, 0},
		{Params{0, 2}, 1},
		{Params{1, 0}, MaxShardSize + 1},
		{Params{4, 2}, 4*MaxShardSize + 1},
		{Params{1, 254}, math.MaxInt / 200},
	} {
		if got := EncodedSize(tc.p, tc.l); got != 0 {
			t.Errorf("EncodedSize(%s, %d) = %d, want 0: Encode refuses such a pack", tc.p, tc.l, got)
		}
	}
}

// hugeS is the largest shard size a header may claim on this platform
// (2^32-1 where int has 64 bits).
var hugeS = uint32(min(uint64(math.MaxUint32), uint64(math.MaxInt-MaxHeaderSize)))

// TestHugeClaims checks that headers claiming enormous sizes are rejected by
// comparison with the bytes actually given, without allocating for them.
func TestHugeClaims(t *testing.T) {
	r := newRand(t)
	p := Params{128, 127}
	_, shards := mustEncode(t, p, randBytes(r, 1000))
	obj := bytes.Clone(shards[3])
	binary.LittleEndian.PutUint64(obj[8:], 128*uint64(hugeS))
	binary.LittleEndian.PutUint32(obj[16:], hugeS)
	h, err := ParseHeader(obj)
	if err != nil {
		t.Fatalf("ParseHeader of a self-consistent huge header: %v", err)
	}
	if h.ObjectSize() != int64(MaxHeaderSize)+int64(hugeS) {
		t.Errorf("ObjectSize = %d, want %d", h.ObjectSize(), int64(MaxHeaderSize)+int64(hugeS))
	}
	pid := h.PackID() // the table is authentic for this (forged) pack ID
	allocs := testing.AllocsPerRun(5, func() {
		_, err = VerifyShard(pid, 3, obj)
	})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("object is %d bytes, want %d", len(obj), h.ObjectSize())) {
		t.Errorf("VerifyShard(huge claim) = %v, want length mismatch", err)
	}
	if allocs > 20 {
		t.Errorf("VerifyShard(huge claim) made %v allocations", allocs)
	}
	slots := make([][]byte, 255)
	slots[3] = obj
	res, err := Reconstruct(pid, slots)
	if !errors.Is(err, ErrTooFewShards) || !slices.Equal(res.Corrupt, []int{3}) {
		t.Errorf("Reconstruct(huge claim) = %v, corrupt %v; want ErrTooFewShards, corrupt [3]", err, res.Corrupt)
	}
	spans, err := h.Locate(0, h.PackLen)
	if err != nil || len(spans) != 128 {
		t.Errorf("Locate(whole huge pack) = %d spans, %v; want 128 spans", len(spans), err)
	}
}

func TestEncodeBufReusesDirtyBuffer(t *testing.T) {
	p := Params{K: 4, M: 2}
	for _, n := range []int{1, 3, 4, 5, 1000, 4097} {
		pack := make([]byte, n)
		for i := range pack {
			pack[i] = byte(i*7 + 1)
		}
		wantID, want, err := Encode(p, pack)
		if err != nil {
			t.Fatal(err)
		}
		dirty := make([]byte, EncodedSize(p, n)+100)
		for i := range dirty {
			dirty[i] = 0xAA
		}
		gotID, got, err := EncodeBuf(p, pack, dirty)
		if err != nil {
			t.Fatal(err)
		}
		if gotID != wantID {
			t.Fatalf("len %d: pack id %s with a dirty buffer, want %s", n, gotID.Short(), wantID.Short())
		}
		for i := range want {
			if string(got[i]) != string(want[i]) {
				t.Fatalf("len %d: shard %d differs with a reused buffer", n, i)
			}
			if &got[i][0] != &dirty[i*len(want[0])] {
				t.Fatalf("len %d: shard %d does not alias the given buffer", n, i)
			}
		}
	}
}

// TestShardVersions checks both shard versions: version 1 tables hold
// SHA-256 payload hashes, version 2 BLAKE3-256; each verifies, detects a
// flipped payload bit and rebuilds lost shards byte-identically in its own
// version; unknown versions are refused.
func TestShardVersions(t *testing.T) {
	r := newRand(t)
	pack := randBytes(r, 100_000)
	p := Params{4, 2}
	for v := MinVersion; v <= Version; v++ {
		pid, shards, err := EncodeVersion(v, p, pack, nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ParseHeader(shards[0])
		if err != nil || h.Version != v || int(shards[0][4]) != v {
			t.Fatalf("v%d: header version %d (byte %d), %v", v, h.Version, shards[0][4], err)
		}
		hs := h.Size()
		var want id.ID
		if v == 1 {
			want = sha256.Sum256(shards[3][hs:])
		} else {
			want = blake3.Sum256(shards[3][hs:])
		}
		if h.Hashes[3] != want {
			t.Errorf("v%d: table hash of shard 3 is not the version's payload hash", v)
		}
		for i, sh := range shards {
			if _, err := VerifyShard(pid, i, sh); err != nil {
				t.Fatalf("v%d shard %d: %v", v, i, err)
			}
		}
		bad := bytes.Clone(shards[1])
		bad[hs+10] ^= 1
		if _, err := VerifyShard(pid, 1, bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("v%d: flipped payload bit: %v, want ErrCorrupt", v, err)
		}
		in := cloneShards(shards)
		in[0], in[5] = nil, bad
		res, err := Reconstruct(pid, in)
		if err != nil || !bytes.Equal(res.Pack, pack) {
			t.Fatalf("v%d: reconstruct: %v", v, err)
		}
		for i, sh := range res.Rebuilt {
			if !bytes.Equal(sh, shards[i]) {
				t.Errorf("v%d: rebuilt shard %d differs from the original", v, i)
			}
		}
	}
	if _, _, err := EncodeVersion(Version+1, p, pack, nil); err == nil {
		t.Error("EncodeVersion accepted an unknown version")
	}
	_, shards, _ := Encode(p, pack)
	shards[0][4] = Version + 1
	if _, err := ParseHeader(shards[0]); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "newer drpipe") {
		t.Errorf("unknown shard version: %v, want ErrCorrupt naming a newer drpipe", err)
	}
}
