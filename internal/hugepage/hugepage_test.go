package hugepage

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

// thpMode is the kernel's transparent huge page setting ("always",
// "madvise" or "never"), or "" where there is none.
func thpMode() string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return ""
	}
	s := string(b)
	if i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']'); i >= 0 && j > i {
		return s[i+1 : j]
	}
	return ""
}

// eligible reports whether the mapping holding addr may use huge pages,
// from the THPeligible line of /proc/self/smaps.
func eligible(t *testing.T, addr uintptr) bool {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatalf("smaps: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 && strings.Contains(line[:strings.IndexByte(line, ' ')], "-") {
			in = lo <= addr && addr < hi
			continue
		}
		if in && strings.HasPrefix(line, "THPeligible:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "THPeligible:")) == "1"
		}
	}
	t.Fatalf("no mapping with THPeligible holds %#x", addr)
	return false
}

func TestMakeZeroedAndSized(t *testing.T) {
	for _, n := range []int{0, 1, 4096, Size - 1, 2 * Size, 5*Size + 123} {
		b := Make(n)
		if len(b) != n {
			t.Fatalf("Make(%d): len %d", n, len(b))
		}
		for i, c := range b {
			if c != 0 {
				t.Fatalf("Make(%d): byte %d is %d", n, i, c)
			}
		}
		if c := MakeCap(n); len(c) != 0 || cap(c) < n {
			t.Fatalf("MakeCap(%d): len %d cap %d", n, len(c), cap(c))
		}
	}
}

// TestMakeAdvises checks that a large buffer's aligned interior is in a
// mapping the kernel may back with huge pages. (Advice stays with the
// addresses, so heap memory reused after such a buffer is eligible too;
// that is harmless and not checked.)
func TestMakeAdvises(t *testing.T) {
	mode := thpMode()
	if runtime.GOOS != "linux" || mode == "" || mode == "never" {
		t.Skipf("transparent huge pages unavailable here (%q): nothing to advise", mode)
	}
	b := Make(16 << 20)
	mid := uintptr(unsafe.Pointer(&b[len(b)/2]))
	if !eligible(t, mid) {
		t.Fatalf("buffer middle %#x is not in a huge-page-eligible mapping (mode %s)", mid, mode)
	}
	runtime.KeepAlive(b)
}

// TestPrimeLandsNextAllocation checks Prime's claim: the next allocation of
// the primed size likely reuses the advised region. Likely: the runtime's
// background work (the scavenger, a collection) can take or release the
// region first now and then, more often on a loaded machine (once in a
// make test run beside other packages; never in 160 runs alone), so one
// of three tries must land.
func TestPrimeLandsNextAllocation(t *testing.T) {
	mode := thpMode()
	if runtime.GOOS != "linux" || mode == "" || mode == "never" {
		t.Skipf("transparent huge pages unavailable here (%q)", mode)
	}
	if Prime(Size) {
		t.Fatal("Prime primed for less than two huge pages")
	}
	const n = 64 << 20
	var miss string
	for try := 0; try < 3; try++ {
		if !Prime(n) {
			t.Fatal("Prime(64 MiB) did nothing where huge pages are available")
		}
		b := make([]byte, n)
		miss = ""
		for _, at := range []int{Size, n / 2, n - Size - 1} {
			if p := uintptr(unsafe.Pointer(&b[at])); !eligible(t, p) && miss == "" {
				miss = fmt.Sprintf("byte %d of the allocation after Prime (%#x) is not huge-page eligible", at, p)
			}
		}
		runtime.KeepAlive(b)
		if miss == "" {
			return
		}
	}
	t.Fatalf("in three tries: %s", miss)
}
