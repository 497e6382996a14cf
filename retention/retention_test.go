package retention

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// year returns a simulated year of snapshots: one every day at 23:00 UTC
// in 2025, plus hourly ones on the last day, plus two tagged ones.
func year() []Item {
	var out []Item
	start := time.Date(2025, 1, 1, 23, 0, 0, 0, time.UTC)
	for d := 0; d < 365; d++ {
		t := start.AddDate(0, 0, d)
		it := Item{ID: t.Format("2006-01-02T15"), Time: t, Host: "hv01", Paths: []string{"/images"}}
		if t.Month() == time.March && t.Day() == 15 {
			it.Tags = []string{"pre-upgrade", "keep"}
		}
		out = append(out, it)
	}
	last := time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)
	for h := 0; h < 23; h++ {
		t := last.Add(time.Duration(h) * time.Hour)
		out = append(out, Item{ID: t.Format("2006-01-02T15"), Time: t, Host: "hv01", Paths: []string{"/images"}})
	}
	return out
}

func kept(ds []Decision) []string {
	var ids []string
	for _, d := range ds {
		if d.Keep {
			ids = append(ids, d.Item.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// newestPer returns, for the n most recent periods that have snapshots,
// the id of the newest snapshot in each: the documented meaning of
// keep-<period> n, computed independently of Apply.
func newestPer(items []Item, period func(time.Time) string, n int) []string {
	best := map[string]Item{}
	for _, it := range items {
		k := period(it.Time)
		if b, ok := best[k]; !ok || it.Time.After(b.Time) {
			best[k] = it
		}
	}
	var keys []string
	for k := range best {
		keys = append(keys, k)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(keys)))
	var ids []string
	for i, k := range keys {
		if n >= 0 && i >= n {
			break
		}
		ids = append(ids, best[k].ID)
	}
	// "If a rule has count left when the oldest snapshot is reached, the
	// oldest is kept additionally."
	if n < 0 || len(keys) < n {
		ids = append(ids, oldest(items).ID)
	}
	return ids
}

func oldest(items []Item) Item {
	o := items[0]
	for _, it := range items {
		if it.Time.Before(o.Time) {
			o = it
		}
	}
	return o
}

func union(lists ...[]string) []string {
	m := map[string]bool{}
	for _, l := range lists {
		for _, x := range l {
			m[x] = true
		}
	}
	var out []string
	for x := range m {
		out = append(out, x)
	}
	sort.Strings(out)
	return out
}

func fmtDay(t time.Time) string   { return t.Format("2006-01-02") }
func fmtHour(t time.Time) string  { return t.Format("2006-01-02T15") }
func fmtMonth(t time.Time) string { return t.Format("2006-01") }
func fmtYear(t time.Time) string  { return t.Format("2006") }
func fmtWeek(t time.Time) string  { y, w := t.ISOWeek(); return fmt.Sprintf("%04d-W%02d", y, w) }

func TestKeepRulesOverAYear(t *testing.T) {
	items := year()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	newest := time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC)
	within := func(d time.Duration) []string {
		var ids []string
		for _, it := range items {
			if it.Time.After(newest.Add(-d)) {
				ids = append(ids, it.ID)
			}
		}
		return ids
	}
	last := func(n int) []string {
		s := append([]Item(nil), items...)
		sort.Slice(s, func(i, j int) bool { return s[i].Time.After(s[j].Time) })
		var ids []string
		for _, it := range s[:n] {
			ids = append(ids, it.ID)
		}
		return ids
	}
	for _, tc := range []struct {
		name string
		p    Policy
		want []string
	}{
		{"last 5", Policy{Last: 5}, last(5)},
		{"hourly 10", Policy{Hourly: 10}, newestPer(items, fmtHour, 10)},
		{"daily 7", Policy{Daily: 7}, newestPer(items, fmtDay, 7)},
		{"weekly 4", Policy{Weekly: 4}, newestPer(items, fmtWeek, 4)},
		{"monthly 12", Policy{Monthly: 12}, newestPer(items, fmtMonth, 12)},
		{"monthly 13 keeps the oldest too", Policy{Monthly: 13}, newestPer(items, fmtMonth, 13)},
		{"yearly 3 keeps the oldest too", Policy{Yearly: 3}, newestPer(items, fmtYear, 3)},
		{"monthly unlimited", Policy{Monthly: -1}, union(newestPer(items, fmtMonth, 100), []string{oldest(items).ID})},
		{"GFS 7d 4w 6m 1y", Policy{Daily: 7, Weekly: 4, Monthly: 6, Yearly: 1},
			union(newestPer(items, fmtDay, 7), newestPer(items, fmtWeek, 4), newestPer(items, fmtMonth, 6), newestPer(items, fmtYear, 1))},
		{"within 10d", Policy{Within: Duration{Days: 10}}, within(10 * 24 * time.Hour)},
		{"within 36h", Policy{Within: Duration{Hours: 36}}, within(36 * time.Hour)},
		{"tag", Policy{Tags: [][]string{{"keep", "pre-upgrade"}}}, []string{"2025-03-15T23"}},
		{"tag needs all", Policy{Tags: [][]string{{"keep", "other"}}}, nil},
		{"last 2 + tag", Policy{Last: 2, Tags: [][]string{{"keep"}}}, union(last(2), []string{"2025-03-15T23"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := kept(Apply(items, tc.p, now))
			want := union(tc.want)
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("kept %d: %v\nwant %d: %v", len(got), got, len(want), want)
			}
		})
	}
}

func TestWithinPeriods(t *testing.T) {
	items := year()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// keep-within-weekly 2m: newest per ISO week among snapshots newer than
	// newest-2 months (Oct 31 23:00), plus nothing older.
	cut := time.Date(2025, 10, 31, 23, 0, 0, 0, time.UTC)
	var in []Item
	for _, it := range items {
		if it.Time.After(cut) {
			in = append(in, it)
		}
	}
	want := newestPer(in, fmtWeek, 1000)
	want = want[:len(want)-1] // newestPer appended the window's oldest; Apply keeps the group's oldest only if it is inside
	got := kept(Apply(items, Policy{WithinWeekly: Duration{Months: 2}}, now))
	if strings.Join(got, " ") != strings.Join(union(want), " ") {
		t.Errorf("within-weekly 2m kept %v\nwant %v", got, union(want))
	}
}

func TestFutureSnapshotDoesNotAnchorWithin(t *testing.T) {
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	items := []Item{
		{ID: "old", Time: now.Add(-48 * time.Hour)},
		{ID: "recent", Time: now.Add(-1 * time.Hour)},
		{ID: "future", Time: now.Add(72 * time.Hour)},
	}
	got := kept(Apply(items, Policy{Within: Duration{Hours: 24}}, now))
	// Anchored at "recent": both recent and future are newer than recent-24h.
	if strings.Join(got, " ") != "future recent" {
		t.Errorf("kept %v, want [future recent]", got)
	}
}

func TestGroupingAndParsing(t *testing.T) {
	now := time.Now()
	items := []Item{
		{ID: "a1", Time: now.Add(-3 * time.Hour), Host: "a", Paths: []string{"/x"}},
		{ID: "a2", Time: now.Add(-2 * time.Hour), Host: "a", Paths: []string{"/x"}},
		{ID: "b1", Time: now.Add(-1 * time.Hour), Host: "b", Paths: []string{"/x"}},
	}
	g, err := ParseGroupBy("host,paths")
	if err != nil {
		t.Fatal(err)
	}
	res := Group(items, g, Policy{Last: 1}, now)
	var all []string
	for _, ds := range res {
		all = append(all, kept(ds)...)
	}
	sort.Strings(all)
	if strings.Join(all, " ") != "a2 b1" {
		t.Errorf("grouped keep-last 1 kept %v, want [a2 b1]", all)
	}
	for _, tc := range []struct {
		in   string
		want Duration
		ok   bool
	}{
		{"1y5m7d2h", Duration{1, 5, 7, 2}, true}, {"36h", Duration{Hours: 36}, true}, {"2m", Duration{Months: 2}, true},
		{"", Duration{}, false}, {"5", Duration{}, false}, {"d", Duration{}, false}, {"1w", Duration{}, false},
	} {
		got, err := ParseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if _, err := ParseGroupBy("host,color"); err == nil {
		t.Error("unknown group-by field accepted")
	}
	if !(Policy{}).Empty() || (Policy{Daily: 1}).Empty() {
		t.Error("Empty() wrong")
	}
}

// TestTiesDoNotDependOnInputOrder: two snapshots with the same time give
// the same decisions whatever order they come in (the tiering plan feeds
// Apply from a map).
func TestTiesDoNotDependOnInputOrder(t *testing.T) {
	at := time.Date(2026, 5, 1, 20, 0, 0, 0, time.UTC)
	a := Item{ID: "aa", Time: at}
	b := Item{ID: "bb", Time: at}
	older := Item{ID: "cc", Time: at.Add(-time.Hour)}
	for _, in := range [][]Item{{a, b, older}, {b, a, older}, {older, b, a}} {
		ds := Apply(in, Policy{Last: 1}, at.Add(time.Hour))
		if got := strings.Join(kept(ds), " "); got != "aa" {
			t.Errorf("input %s %s %s: keep-last 1 kept %q, want aa (ties in ID order)", in[0].ID, in[1].ID, in[2].ID, got)
		}
		if ds[0].Item.ID != "aa" || ds[1].Item.ID != "bb" || ds[2].Item.ID != "cc" {
			t.Errorf("decision order %s %s %s, want aa bb cc", ds[0].Item.ID, ds[1].Item.ID, ds[2].Item.ID)
		}
	}
}

// TestWithinWindowKeepsTheOldestInside: keep-within-daily keeps the
// newest snapshot of each day in the window, and the group's oldest when
// the window reaches it, as the counted rules do (restic 0.17's rule); an
// oldest snapshot outside the window is not kept.
func TestWithinWindowKeepsTheOldestInside(t *testing.T) {
	items := []Item{
		{ID: "may1-08", Time: time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)},
		{ID: "may1-20", Time: time.Date(2026, 5, 1, 20, 0, 0, 0, time.UTC)},
		{ID: "may2-20", Time: time.Date(2026, 5, 2, 20, 0, 0, 0, time.UTC)},
	}
	now := time.Date(2026, 5, 3, 0, 0, 0, 0, time.UTC)
	ds := Apply(items, Policy{WithinDaily: Duration{Days: 30}}, now)
	if got := strings.Join(kept(ds), " "); got != "may1-08 may1-20 may2-20" {
		t.Errorf("within-daily 30d kept %q, want all three (the oldest is inside the window)", got)
	}
	for _, d := range ds {
		if d.Item.ID == "may1-08" && !slices.Contains(d.Reasons, "oldest daily within 30d") {
			t.Errorf("the oldest is kept for %q, want \"oldest daily within 30d\"", d.Reasons)
		}
	}
	// A window that ends after the oldest does not keep it.
	if got := strings.Join(kept(Apply(items, Policy{WithinDaily: Duration{Hours: 30}}, now)), " "); got != "may1-20 may2-20" {
		t.Errorf("within-daily 30h kept %q, want may1-20 may2-20", got)
	}
	// A count with some left still keeps the oldest.
	if got := strings.Join(kept(Apply(items, Policy{Daily: 5}, now)), " "); got != "may1-08 may1-20 may2-20" {
		t.Errorf("keep-daily 5 kept %q, want all three (the oldest while a count is left)", got)
	}
}

// TestGroupKeysAreUnambiguous: lists that join to the same text are
// different groups.
func TestGroupKeysAreUnambiguous(t *testing.T) {
	g := GroupBy{Host: true, Paths: true, Tags: true}
	pairs := [][2]Item{
		{{Paths: []string{"/a:/b"}}, {Paths: []string{"/a", "/b"}}},
		{{Tags: []string{"x,y"}}, {Tags: []string{"x", "y"}}},
		{{Host: "h paths=/x"}, {Host: "h", Paths: []string{"/x"}}},
		{{Paths: []string{""}}, {Paths: nil}},
	}
	for _, p := range pairs {
		if k0, k1 := g.Key(p[0]), g.Key(p[1]); k0 == k1 {
			t.Errorf("%+v and %+v share the group key %q", p[0], p[1], k0)
		}
	}
	if k := g.Key(Item{Host: "hv01", Paths: []string{"/var/lib/libvirt/images", "/etc/libvirt"}, Tags: []string{"nightly"}}); k != "host=hv01 paths=/etc/libvirt:/var/lib/libvirt/images tags=nightly" {
		t.Errorf("plain key %q: ordinary names should read as before", k)
	}
}

// TestKeepTagParsing: spaces around tag names are ignored and an empty
// name is an error, not a rule that matches nothing (which would forget
// the whole group).
func TestKeepTagParsing(t *testing.T) {
	if got := SplitTags(" nightly , keep"); strings.Join(got, "|") != "nightly|keep" {
		t.Errorf("SplitTags = %q", got)
	}
	for _, v := range []string{"", "a,", ",b", " , "} {
		p := Policy{Tags: [][]string{SplitTags(v)}}
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "empty tag name") {
			t.Errorf("keep-tag %q: Validate() = %v, want an empty-tag error", v, err)
		}
	}
	items := []Item{{ID: "t", Time: time.Unix(100, 0), Tags: []string{"nightly", "keep"}}, {ID: "u", Time: time.Unix(200, 0), Tags: []string{"nightly"}}}
	if got := strings.Join(kept(Apply(items, Policy{Tags: [][]string{SplitTags("nightly, keep")}}, time.Unix(300, 0))), " "); got != "t" {
		t.Errorf("keep-tag \"nightly, keep\" kept %q, want t", got)
	}
}

// TestDurationSumsStayInRange: repeated units add up, and a sum too large
// for the clock is refused, not wrapped round into a window that keeps
// nothing (forget would remove the whole group).
func TestDurationSumsStayInRange(t *testing.T) {
	if d, err := ParseDuration("1d1d2h"); err != nil || d != (Duration{Days: 2, Hours: 2}) {
		t.Errorf("ParseDuration(1d1d2h) = %v, %v; want 2d2h", d, err)
	}
	for _, s := range []string{strings.Repeat("100000h", 26), strings.Repeat("100000y", 3000), "99999d2d"} {
		if d, err := ParseDuration(s); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("ParseDuration(%.20s...) = %v, %v; want an out-of-range error", s, d, err)
		}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	items := []Item{{ID: "a", Time: now.Add(-time.Hour)}, {ID: "b", Time: now.Add(-2 * time.Hour)}}
	widest, err := ParseDuration("100000y100000m100000d100000h")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(kept(Apply(items, Policy{Within: widest}, now)), " "); got != "a b" {
		t.Errorf("keep-within %v kept %q, want a b", widest, got)
	}
}
