package id

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary strings, as object names and JSON fields
// hold them, to Parse and UnmarshalText: they must never panic, must
// agree, and must accept exactly the 64 hex digits of String in either
// case.
func FuzzParse(f *testing.F) {
	x := Hash([]byte("x"))
	f.Add(x.String())
	f.Add(strings.ToUpper(x.String()))
	f.Add(x.String()[:63])
	f.Add(x.String() + "0")
	f.Add(strings.Repeat("g", 64))
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		var u ID
		uerr := u.UnmarshalText([]byte(s))
		if (err == nil) != (uerr == nil) || got != u {
			t.Fatalf("Parse(%q) = %s, %v; UnmarshalText gives %s, %v", s, got, err, u, uerr)
		}
		if err != nil {
			if len(err.Error()) > 500 {
				t.Fatalf("error of %d bytes for a string of %d bytes", len(err.Error()), len(s))
			}
			return
		}
		if got.String() != strings.ToLower(s) {
			t.Fatalf("Parse(%q) = %s", s, got)
		}
		if b, _ := got.MarshalText(); string(b) != got.String() {
			t.Fatalf("MarshalText %q, String %q", b, got.String())
		}
	})
}
