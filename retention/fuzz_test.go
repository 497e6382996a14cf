package retention

import "testing"

// FuzzParseDuration feeds arbitrary retention periods, as config files
// and flags hold them, to ParseDuration: it must never panic, must keep
// every unit within its bound, and what it accepts must print (String)
// as a period that parses to the same Duration.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "1y6m", "36h", "1y5m7d2h", " 2d ", "0h", "3d3d", "100000y", "100001d", "99999d2d", "5", "d", "1w", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		for _, n := range []int{d.Years, d.Months, d.Days, d.Hours} {
			if n < 0 || n > maxDurationUnit {
				t.Fatalf("ParseDuration(%q) = %+v: a unit out of 0..%d", s, d, maxDurationUnit)
			}
		}
		again, err := ParseDuration(d.String())
		if err != nil || again != d {
			t.Fatalf("ParseDuration(%q) = %+v prints as %q, which parses to %+v (%v)", s, d, d.String(), again, err)
		}
	})
}
