package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/drpipe/drpipe/drsite"
	"github.com/drpipe/drpipe/repo"
)

type jsonInner struct {
	Names []string `json:"names"`
}

type JSONEmbedded struct {
	Promoted []int `json:"promoted"`
}

type jsonOuter struct {
	JSONEmbedded
	List     []string         `json:"list"`
	Omitted  []string         `json:"omitted,omitempty"`
	Zero     []string         `json:"zero,omitzero"`
	Skipped  []string         `json:"-"`
	Bytes    []byte           `json:"bytes"`
	Map      map[string]int   `json:"map"`
	Ptr      *jsonInner       `json:"ptr"`
	Inner    *jsonInner       `json:"inner"`
	Values   []jsonInner      `json:"values"`
	Array    [2]jsonInner     `json:"array"`
	Any      any              `json:"any"`
	ByKey    map[string][]int `json:"by_key"`
	Time     time.Time        `json:"time"`
	Raw      json.RawMessage  `json:"raw"`
	Nested   [][]string       `json:"nested"`
	Ifaces   []any            `json:"ifaces"`
	Anything map[string]any   `json:"anything"`
	private  []string
	Rows     map[string]*jsonInner `json:"rows"`
}

// TestPrintJSONEmptyLists: printJSON prints every nil slice it reaches as
// [], through struct fields, pointers, interfaces, maps, slices and
// arrays, and leaves nil maps, pointers and interfaces, []byte, omitempty
// and omitzero fields as the encoder prints them, without changing the
// value it was given.
func TestPrintJSONEmptyLists(t *testing.T) {
	v := &jsonOuter{
		Inner:    &jsonInner{},
		Values:   []jsonInner{{}, {Names: []string{"a"}}},
		Any:      jsonInner{},
		ByKey:    map[string][]int{"k": nil},
		Nested:   [][]string{nil},
		Ifaces:   []any{nil, []string(nil), map[string]any{"x": []int(nil)}},
		Anything: map[string]any{"nil": nil, "list": []string(nil), "ptr": (*jsonInner)(nil)},
		Rows:     map[string]*jsonInner{"r": {}},
	}
	var buf bytes.Buffer
	a := &app{stdout: &buf, jsonLines: true}
	if err := a.printJSON(v); err != nil {
		t.Fatal(err)
	}
	const want = `{"promoted":[],"list":[],"bytes":null,"map":null,"ptr":null,"inner":{"names":[]},` +
		`"values":[{"names":[]},{"names":["a"]}],"array":[{"names":[]},{"names":[]}],"any":{"names":[]},` +
		`"by_key":{"k":[]},"time":"0001-01-01T00:00:00Z","raw":null,"nested":[[]],"ifaces":[null,[],{"x":[]}],` +
		`"anything":{"list":[],"nil":null,"ptr":null},"rows":{"r":{"names":[]}}}` + "\n"
	if got := buf.String(); got != want {
		t.Errorf("printJSON:\n got %s\nwant %s", got, want)
	}
	if v.List != nil || v.Inner.Names != nil || v.Values[0].Names != nil || v.ByKey["k"] != nil || v.Nested[0] != nil ||
		v.Ifaces[1].([]string) != nil || v.Anything["list"].([]string) != nil || v.Rows["r"].Names != nil {
		t.Errorf("printJSON changed the value it printed: %+v", v)
	}
	// A top-level nil slice and nil are printed as [] and null.
	buf.Reset()
	a.printJSON([]string(nil))
	a.printJSON(nil)
	if got := buf.String(); got != "[]\nnull\n" {
		t.Errorf("printJSON of a nil slice and nil: %q", got)
	}
}

// TestPrintJSONCycles: a value that refers to itself ends in the encoder's
// error, not in an endless walk.
func TestPrintJSONCycles(t *testing.T) {
	type node struct {
		Next *node `json:"next"`
		L    []int `json:"l"`
	}
	n := &node{}
	n.Next = n
	m := map[string]any{}
	m["self"] = m
	s := []any{nil}
	s[0] = s
	for name, v := range map[string]any{"pointer": n, "map": m, "slice": s} {
		var buf bytes.Buffer
		a := &app{stdout: &buf}
		done := make(chan error, 1)
		go func() { done <- a.printJSON(v) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "cycle") {
				t.Errorf("%s cycle: printJSON returned %v, want the encoder's cycle error", name, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s cycle: printJSON does not return", name)
		}
	}
}

// TestJSONReportsListEveryList: the reports of check, repair, prune and
// drsite bringup print each of their lists, [] when empty, as README
// promises, instead of leaving it out (jq '.errors[]' on a clean check
// failed: "Cannot iterate over null").
func TestJSONReportsListEveryList(t *testing.T) {
	for name, c := range map[string]struct {
		v    any
		keys []string
	}{
		"check":   {&repo.CheckReport{Damaged: []repo.PackDamage{{}}}, []string{`"errors":[]`, `"damaged_packs":[{`, `"unreferenced_packs":[]`, `"damaged_indexes":[]`, `"missing_shards":[]`, `"corrupt_shards":[]`, `"files":[]`, `"snapshots":[]`}},
		"repair":  {&repo.RepairReport{}, []string{`"packs_repaired":[]`, `"lost":[]`, `"held":[]`, `"not_stored":[]`}},
		"prune":   {&repo.PruneReport{}, []string{`"waiting_for":[]`, `"locked":[]`}},
		"bringup": {&drsite.BringupResult{}, []string{`"defined":[]`, `"started":[]`, `"checks":[]`, `"skipped":[]`}},
	} {
		var buf bytes.Buffer
		a := &app{stdout: &buf, jsonLines: true}
		if err := a.printJSON(c.v); err != nil {
			t.Fatal(err)
		}
		for _, k := range c.keys {
			if !strings.Contains(buf.String(), k) {
				t.Errorf("%s --json: no %s in %s", name, k, buf.String())
			}
		}
	}
}
