package vmdisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeImage(t *testing.T, dir, name string, f Format, size int64, src Source, o WriteOptions) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if src.R == nil {
		content := make([]byte, size)
		for i := int64(0); i < size; i += 4096 {
			content[i] = byte(i>>12) | 1
		}
		src = Source{Size: size, R: bytes.NewReader(content)}
	}
	o.Format = f
	if _, err := Write(context.Background(), p, src, o); err != nil {
		t.Fatal(err)
	}
	return p
}

func mutate(t *testing.T, p string, fn func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, fn(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

// openAndRead opens path with its chain and reads it all, returning the
// first error; it fails the test if that takes long.
func openAndRead(t *testing.T, p string) error {
	t.Helper()
	start := time.Now()
	defer func() {
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("%s: took %v", p, el)
		}
	}()
	d, err := Open(p, Limits{})
	if err != nil {
		return err
	}
	defer d.Close()
	if _, err := d.Allocated(); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		if _, err := d.ReadAt(buf, off); err != nil && off+int64(len(buf)) < d.Size() {
			return err
		}
	}
	return nil
}

func TestMalformedImages(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		make func() string
		want []string // substrings of the error
		is   error
	}{
		{"vhd truncated BAT", func() string {
			p := writeImage(t, dir, "tbat.vhd", VHD, 64<<20, Source{}, WriteOptions{})
			// Keep the footer copy at 0 and the header; cut into the BAT.
			mutate(t, p, func(b []byte) []byte { return b[:1536+40] })
			return p
		}, []string{"truncated"}, ErrMalformed},
		{"vhd huge BAT", func() string {
			p := writeImage(t, dir, "hbat.vhd", VHD, 8<<20, Source{}, WriteOptions{})
			mutate(t, p, func(b []byte) []byte {
				// Absurd current size in both footers (checksums fixed).
				for _, at := range []int{0, len(b) - 512} {
					ft := b[at : at+512]
					copy(ft[28:32], "win ")
					binary.BigEndian.PutUint64(ft[48:], 1<<61)
					binary.BigEndian.PutUint32(ft[64:], vhdChecksum(ft, 64))
				}
				return b
			})
			return p
		}, []string{"beyond the limit"}, ErrMalformed},
		{"fixed vhd size with the top bit set", func() string {
			// Read as int64 this size was negative, which passed the limit
			// and the fixed-disk length checks (found by FuzzVHDFooter).
			b := make([]byte, 1<<20+512) // 1 MiB of data, then the footer
			ft := b[1<<20:]
			copy(ft, "conectix")
			copy(ft[28:32], "win ")
			binary.BigEndian.PutUint64(ft[48:], 1<<63|512)
			binary.BigEndian.PutUint32(ft[60:], vhdFixed)
			binary.BigEndian.PutUint32(ft[64:], vhdChecksum(ft, 64))
			p := filepath.Join(dir, "neg.vhd")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"beyond any disk"}, ErrMalformed},
		{"qcow2 L1 beyond EOF", func() string {
			p := writeImage(t, dir, "l1.qcow2", QCOW2, 8<<20, Source{}, WriteOptions{})
			mutate(t, p, func(b []byte) []byte { binary.BigEndian.PutUint64(b[40:], 1<<40); return b })
			return p
		}, []string{"L1 table"}, ErrMalformed},
		{"qcow2 absurd size", func() string {
			p := writeImage(t, dir, "big.qcow2", QCOW2, 8<<20, Source{}, WriteOptions{})
			mutate(t, p, func(b []byte) []byte { binary.BigEndian.PutUint64(b[24:], 1<<62); return b })
			return p
		}, []string{"beyond the limit"}, ErrMalformed},
		{"qcow2 huge L1", func() string {
			p := writeImage(t, dir, "hl1.qcow2", QCOW2, 8<<20, Source{}, WriteOptions{})
			mutate(t, p, func(b []byte) []byte {
				binary.BigEndian.PutUint64(b[24:], 60<<40)
				binary.BigEndian.PutUint32(b[20:], 9) // 512-byte clusters: a 2^31-entry L1
				binary.BigEndian.PutUint32(b[36:], 1<<31)
				return b
			})
			return p
		}, []string{"too large"}, ErrMalformed},
		{"qcow2 truncated data", func() string {
			p := writeImage(t, dir, "trunc.qcow2", QCOW2, 8<<20, Source{}, WriteOptions{})
			mutate(t, p, func(b []byte) []byte { return b[:len(b)/2] })
			return p
		}, []string{"truncated"}, ErrMalformed},
		{"qcow2 shared L2", func() string {
			p := writeImage(t, dir, "shared.qcow2", QCOW2, 8<<20, Source{}, WriteOptions{QCOW2: &QCOW2Params{ClusterBits: 9}})
			mutate(t, p, func(b []byte) []byte {
				l1 := binary.BigEndian.Uint64(b[40:])
				first := binary.BigEndian.Uint64(b[l1:])
				binary.BigEndian.PutUint64(b[l1+8:], first)
				return b
			})
			return p
		}, []string{"more than one L1 entry"}, ErrMalformed},
		{"vhdx dirty log", func() string {
			p := writeImage(t, dir, "dirty.vhdx", VHDX, 8<<20, Source{}, WriteOptions{})
			mutate(t, p, func(b []byte) []byte {
				for _, off := range []int{vhdxHeader1, vhdxHeader2} {
					h := b[off : off+vhdxHeaderLen]
					copy(h[48:64], "0123456789abcdef") // LogGuid
					clear(h[4:8])
					binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(h, crc32c))
				}
				return b
			})
			return p
		}, []string{"log is not empty", "replay"}, ErrUnsupported},
		{"vhdx bad headers", func() string {
			p := writeImage(t, dir, "badhdr.vhdx", VHDX, 8<<20, Source{}, WriteOptions{})
			mutate(t, p, func(b []byte) []byte { b[vhdxHeader1+100]++; b[vhdxHeader2+100]++; return b })
			return p
		}, []string{"checksum"}, ErrMalformed},
		{"vhdx truncated BAT", func() string {
			p := writeImage(t, dir, "tbat.vhdx", VHDX, 8<<20, Source{}, WriteOptions{})
			mutate(t, p, func(b []byte) []byte { return b[:3<<20+100] })
			return p
		}, []string{"truncated"}, ErrMalformed},
		{"backing cycle", func() string {
			a, b := filepath.Join(dir, "cyc-a.qcow2"), filepath.Join(dir, "cyc-b.qcow2")
			content := bytes.Repeat([]byte{1}, 1<<20)
			src := Source{Size: 1 << 20, R: bytes.NewReader(content), Own: []Run{{0, 65536, Data}}}
			src.Backing = "cyc-b.qcow2"
			if _, err := Write(context.Background(), a, src, WriteOptions{Format: QCOW2}); err != nil {
				t.Fatal(err)
			}
			src.Backing = "cyc-a.qcow2"
			if _, err := Write(context.Background(), b, src, WriteOptions{Format: QCOW2}); err != nil {
				t.Fatal(err)
			}
			return a
		}, []string{"cycle"}, ErrChain},
		{"self backing", func() string {
			a := filepath.Join(dir, "self.qcow2")
			src := Source{Size: 1 << 20, R: bytes.NewReader(make([]byte, 1<<20)), Own: []Run{{0, 65536, Zero}}, Backing: "self.qcow2"}
			if _, err := Write(context.Background(), a, src, WriteOptions{Format: QCOW2}); err != nil {
				t.Fatal(err)
			}
			return a
		}, []string{"cycle"}, ErrChain},
		{"missing parent", func() string {
			a := filepath.Join(dir, "orphan.qcow2")
			src := Source{Size: 1 << 20, R: bytes.NewReader(make([]byte, 1<<20)), Own: []Run{{0, 65536, Zero}}, Backing: "gone.qcow2"}
			if _, err := Write(context.Background(), a, src, WriteOptions{Format: QCOW2}); err != nil {
				t.Fatal(err)
			}
			return a
		}, []string{"gone.qcow2", "backing"}, ErrChain},
		{"vhdx parent replaced", func() string {
			base := writeImage(t, dir, "pbase.vhdx", VHDX, 8<<20, Source{}, WriteOptions{})
			top := filepath.Join(dir, "ptop.vhdx")
			src := Source{Size: 8 << 20, R: bytes.NewReader(make([]byte, 8<<20)), Own: []Run{{0, 1 << 20, Zero}}, Backing: "pbase.vhdx", BackingFormat: VHDX}
			o := WriteOptions{Format: VHDX, VHDX: &VHDXParams{ParentLinkage: "{11111111-2222-3333-4444-555555555555}"}}
			if _, err := Write(context.Background(), top, src, o); err != nil {
				t.Fatal(err)
			}
			_ = base
			return top
		}, []string{"identity"}, ErrChain},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.make()
			err := openAndRead(t, p)
			if err == nil {
				t.Fatalf("%s: no error", p)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %v does not wrap %v", err, c.is)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), filepath.Base(p)) {
				t.Errorf("error %q does not name the file", err)
			}
			t.Logf("%v", err)
		})
	}
}

// TestChainTooDeep builds a chain longer than the limit.
func TestChainTooDeep(t *testing.T) {
	dir := t.TempDir()
	prev := ""
	for i := 0; i < 6; i++ {
		p := filepath.Join(dir, "l"+string(rune('0'+i))+".qcow2")
		src := Source{Size: 1 << 20, R: bytes.NewReader(make([]byte, 1<<20)), Data: []Range{}}
		if prev != "" {
			src = Source{Size: 1 << 20, R: bytes.NewReader(make([]byte, 1<<20)), Own: []Run{{0, 65536, Zero}}, Backing: filepath.Base(prev)}
		}
		if _, err := Write(context.Background(), p, src, WriteOptions{Format: QCOW2}); err != nil {
			t.Fatal(err)
		}
		prev = p
	}
	if _, err := Open(prev, Limits{MaxChain: 4}); err == nil || !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "deeper") {
		t.Fatalf("chain of 6 with limit 4: %v", err)
	}
	d, err := Open(prev, Limits{})
	if err != nil || len(d.Layers) != 6 {
		t.Fatalf("chain of 6: %v", err)
	}
	d.Close()
}
