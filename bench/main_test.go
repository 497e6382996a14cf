package main

import (
	"slices"
	"strings"
	"testing"
)

// A -suites list selects those suites in report order; a name that is no
// suite (a typo) is refused, naming it and the suites there are, instead
// of a run that benchmarks nothing and exits 0.
func TestSelectSuites(t *testing.T) {
	names := func(ss []Suite) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out
	}
	all, err := selectSuites("")
	if err != nil || !slices.Equal(names(all), suiteNames()) {
		t.Fatalf("empty list: %q, %v; want every suite", names(all), err)
	}
	got, err := selectSuites("drsite, core,")
	if err != nil || !slices.Equal(names(got), []string{"core", "drsite"}) {
		t.Fatalf("drsite, core: %q, %v; want core, drsite", names(got), err)
	}
	for _, list := range []string{"cor", "core,s4", "Core"} {
		got, err := selectSuites(list)
		if err == nil {
			t.Errorf("-suites %s selected %q, want an error", list, names(got))
			continue
		}
		if !strings.Contains(err.Error(), strings.Join(suiteNames(), ",")) {
			t.Errorf("-suites %s: %v; want the error to list the suites", list, err)
		}
	}
}
