package repo

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/drpipe/drpipe/internal/cpus"
	"github.com/drpipe/drpipe/internal/sample"
)

// cDecoder reports whether this build decodes blobs with the C library.
var cDecoder = strings.HasPrefix(ZstdDecoder, "libzstd")

// TestDecompressZstdAgreesWithGo checks the fast blob decoder against the
// Go decoder that decodes everything else: on frames from both encoders at
// every level it returns the same bytes after what dst holds; it declines
// (so the Go decoder decides) for anything but one standard frame, for too
// little room and for a frame larger than the room; on damaged frames that
// both accept, both return the same bytes; and a damaged frame only the C
// library accepts is refused by the blob's content check.
func TestDecompressZstdAgreesWithGo(t *testing.T) {
	codecs()
	t.Logf("decoder: %s", ZstdDecoder)
	goEnc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{
		"byte":   {42},
		"text":   logText(1, 100_000),
		"words":  sample.Text(rand.New(rand.NewPCG(7, 2)), 300_000),
		"zeros":  make([]byte, 1<<20),
		"random": randBytesSeeded(3 << 20),
		"big":    logText(2, 6<<20),
	}
	type frame struct {
		name  string
		plain []byte
		fr    []byte
	}
	var frames []frame
	for name, p := range inputs {
		for _, c := range []Compression{CompressAuto, CompressFastest, CompressMax} {
			frames = append(frames, frame{fmt.Sprintf("%s/level%d", name, c), p, zstdFrame(p, c)})
		}
		frames = append(frames, frame{name + "/go-crc", p, goEnc.EncodeAll(p, nil)})
	}
	prefix := []byte{7, 7, 7}
	for _, f := range frames {
		dst := append(make([]byte, 0, len(prefix)+len(f.plain)+1), prefix...)
		out, ok := decompressZstd(dst, f.fr, len(f.plain)+1)
		if !cDecoder {
			if ok {
				t.Fatalf("%s: pure-Go build decoded with C", f.name)
			}
			continue
		}
		if !ok {
			t.Fatalf("%s: declined or failed", f.name)
		}
		if !bytes.Equal(out[:len(prefix)], prefix) || !bytes.Equal(out[len(prefix):], f.plain) {
			t.Fatalf("%s: decoded to other bytes (%d of %d)", f.name, len(out)-len(prefix), len(f.plain))
		}
		// Too little room: declined before decoding, nothing written.
		if _, ok := decompressZstd(make([]byte, 0, len(f.plain)), f.fr, len(f.plain)+1); ok {
			t.Fatalf("%s: decoded without the room asked for", f.name)
		}
		// Room for less than the frame holds: left to the Go decoder, not
		// a short result.
		if len(f.plain) > 1 {
			if out, ok := decompressZstd(make([]byte, 0, len(f.plain)), f.fr, len(f.plain)-1); ok {
				t.Fatalf("%s: frame larger than the room decoded to %d bytes", f.name, len(out))
			}
		}
	}

	// Anything but one standard frame is left to the Go decoder.
	one := zstdFrame(inputs["text"], CompressAuto)
	skippable := append([]byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}, one...)
	legacy := append([]byte{0x27, 0xb5, 0x2f, 0xfd}, one[4:]...) // v0.7 magic
	for name, src := range map[string][]byte{
		"two frames":      append(append([]byte(nil), one...), one...),
		"skippable first": skippable,
		"legacy magic":    legacy,
		"truncated":       one[:len(one)-1],
		"trailing byte":   append(append([]byte(nil), one...), 0),
		"empty":           {},
		"magic only":      one[:4],
	} {
		if _, ok := decompressZstd(make([]byte, 0, 1<<20), src, 1<<20); ok {
			t.Errorf("%s: decoded by the C library, want the Go decoder to decide", name)
		}
	}

	// Damaged frames: what both decoders accept decodes to the same bytes.
	// The decoders differ in how strictly they refuse some malformed
	// frames; what only one accepts must fail the blob's content check.
	r := newFuzzRepo(t, t.TempDir())
	defer r.Close()
	rng := rand.New(rand.NewPCG(9, 9))
	plain := inputs["words"]
	src := zstdFrame(plain, CompressAuto)
	n := len(plain)
	id := r.BlobID(plain)
	var both, onlyC, onlyGo int
	for i := range 2000 {
		bad := append([]byte(nil), src...)
		for range 1 + i%3 {
			bad[4+rng.IntN(len(bad)-4)] ^= byte(1 + rng.IntN(255))
		}
		got, cOK := decompressZstd(make([]byte, 0, n+1), bad, n+1)
		want, gerr := sizedDecoder.DecodeAll(bad, make([]byte, 0, n+1))
		switch {
		case cOK && gerr == nil:
			both++
			if !bytes.Equal(got, want) {
				t.Fatalf("damage %d: the decoders returned different bytes (%d and %d)", i, len(got), len(want))
			}
		case cOK:
			onlyC++
		case gerr == nil:
			onlyGo++
		}
		if (cOK || gerr == nil) && !bytes.Equal(got, plain) && !bytes.Equal(want, plain) {
			sealed := r.key.sealAs(kindBlob, nil, append([]byte{compZstd}, bad...))
			if _, err := r.decodeBlob(nil, sealed, n, id); err == nil {
				t.Fatalf("damage %d: a frame that decodes to other bytes passed the content check", i)
			}
		}
	}
	t.Logf("2000 damaged frames: both decoders accepted %d, only C %d, only Go %d", both, onlyC, onlyGo)
}

// TestSizedDecoderSizedByCPUs checks that the Go decoder's pool is sized by
// the CPU count, not by the doubled GOMAXPROCS a restore runs with
// (cpus.Oversubscribe comes before the first decode). codecs runs once per
// process, so the check runs in a child process.
func TestSizedDecoderSizedByCPUs(t *testing.T) {
	if os.Getenv("DRPIPE_TEST_CHILD") == "sized-decoder" {
		cpus.Oversubscribe()
		codecs()
		f := reflect.ValueOf(sizedDecoder).Elem().FieldByName("decoders")
		if !f.IsValid() || f.Kind() != reflect.Chan {
			fmt.Println("DECODERS=unknown")
			return
		}
		fmt.Printf("DECODERS=%d\n", f.Cap())
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSizedDecoderSizedByCPUs$")
	cmd.Env = append(os.Environ(), "DRPIPE_TEST_CHILD=sized-decoder", "GOMAXPROCS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := fmt.Sprintf("DECODERS=%d\n", cpus.N())
	if !strings.Contains(string(out), want) {
		t.Fatalf("child says %q, want %q (klauspost/compress changed its Decoder?)", out, want)
	}
}

// BenchmarkDecodeBlobZstd compares the two decoders on frames as a
// file-tree backup writes them (whole small files at level 2, chunks at
// level 3) of the benchmark tree's text: the numbers behind
// decompressZstd.
func BenchmarkDecodeBlobZstd(b *testing.B) {
	codecs()
	for _, n := range []int{16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		in := make([][]byte, 64)
		for i := range in {
			in[i] = zstdFrame(sample.Text(rand.New(rand.NewPCG(uint64(200+i), 2)), n), CompressAuto)
		}
		dst := make([]byte, 0, n+1)
		b.Run(fmt.Sprintf("%dKiB/go", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for i := 0; b.Loop(); i++ {
				if _, err := sizedDecoder.DecodeAll(in[i%len(in)], dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("%dKiB/c", n>>10), func(b *testing.B) {
			if !cDecoder {
				b.Skip("pure-Go build: no C decoder")
			}
			b.SetBytes(int64(n))
			for i := 0; b.Loop(); i++ {
				if _, ok := decompressZstd(dst[:0], in[i%len(in)], n+1); !ok {
					b.Fatal("the C library refused a frame")
				}
			}
		})
	}
}
