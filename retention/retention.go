// Package retention decides which snapshots a keep policy keeps. It owns
// the keep rules shared by `drpipe forget` and the per-tier retention of
// the tiering policy (a tape pool's rotation is its own); it knows nothing
// of repositories and works on any list of (time, host, tags, paths).
//
// The rules follow restic's documented semantics so that admins moving
// from restic get the same result for the same flags:
//
//   - snapshots are grouped (by host and paths by default) and each group is
//     evaluated on its own, newest first;
//   - keep-last N keeps the N newest;
//   - keep-hourly/daily/weekly/monthly/yearly N keep the newest snapshot of
//     each of the last N hours/days/ISO weeks/months/years that have
//     snapshots; if a rule still has count left when the oldest snapshot
//     of the group is reached, the oldest is kept too;
//   - keep-within D keeps everything newer than (newest snapshot − D), and
//     keep-within-hourly/daily/... D keep the newest per period inside that
//     window, and the group's oldest snapshot too when it is inside it;
//   - keep-tag T keeps every snapshot carrying all tags of T ("a,b": both;
//     spaces around names are ignored, an empty name is refused);
//   - N = -1 means unlimited;
//   - snapshots with the same time are taken in ID order, so decisions do
//     not depend on the order of the input.
package retention

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Item is one snapshot as retention sees it.
type Item struct {
	ID    string
	Time  time.Time
	Host  string
	Tags  []string
	Paths []string
}

// Duration is a calendar duration like restic's "1y5m7d2h".
type Duration struct {
	Years, Months, Days, Hours int
}

// Zero reports whether d is empty.
func (d Duration) Zero() bool { return d == Duration{} }

// String renders d like "1y6m" (the form ParseDuration reads).
func (d Duration) String() string {
	var b strings.Builder
	for _, p := range []struct {
		n int
		u string
	}{{d.Years, "y"}, {d.Months, "m"}, {d.Days, "d"}, {d.Hours, "h"}} {
		if p.n != 0 {
			fmt.Fprintf(&b, "%d%s", p.n, p.u)
		}
	}
	if b.Len() == 0 {
		return "0h"
	}
	return b.String()
}

// before returns t moved back by d.
func (d Duration) before(t time.Time) time.Time {
	return t.AddDate(-d.Years, -d.Months, -d.Days).Add(-time.Duration(d.Hours) * time.Hour)
}

// maxDurationUnit bounds each unit of a Duration, also when a unit is
// given more than once: beyond it the hours would overflow the clock and
// wrap round into a window that keeps nothing.
const maxDurationUnit = 100000

// ParseDuration parses "1y5m7d2h" (any subset, in any order; numbers
// followed by y, m, d or h; a unit given twice adds up).
func ParseDuration(s string) (Duration, error) {
	var d Duration
	s = strings.TrimSpace(s)
	if s == "" {
		return d, errors.New("empty duration: use e.g. 7d, 2y6m, 36h")
	}
	num := ""
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			num += string(c)
		case strings.ContainsRune("ymdh", c):
			if num == "" {
				return Duration{}, fmt.Errorf("duration %q: unit %q without a number", s, c)
			}
			n, err := strconv.Atoi(num)
			if err != nil || n > maxDurationUnit {
				return Duration{}, fmt.Errorf("duration %q: number %q out of range", s, num)
			}
			var dst *int
			switch c {
			case 'y':
				dst = &d.Years
			case 'm':
				dst = &d.Months
			case 'd':
				dst = &d.Days
			case 'h':
				dst = &d.Hours
			}
			if *dst += n; *dst > maxDurationUnit {
				return Duration{}, fmt.Errorf("duration %q: %d%c in all is out of range (at most %d of each unit)", s, *dst, c, maxDurationUnit)
			}
			num = ""
		default:
			return Duration{}, fmt.Errorf("duration %q: unexpected %q (use numbers with y, m, d, h, e.g. 1y6m)", s, c)
		}
	}
	if num != "" {
		return Duration{}, fmt.Errorf("duration %q: number %s has no unit (y, m, d or h)", s, num)
	}
	return d, nil
}

// Policy is a set of keep rules. Counts of 0 disable a rule; -1 means
// unlimited.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int

	Within                                                               Duration
	WithinHourly, WithinDaily, WithinWeekly, WithinMonthly, WithinYearly Duration

	// Tags: keep snapshots that carry every tag of any of these lists.
	Tags [][]string
}

// Empty reports whether p has no rule at all (forget refuses to run with
// an empty policy rather than removing everything).
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 &&
		p.Within.Zero() && p.WithinHourly.Zero() && p.WithinDaily.Zero() && p.WithinWeekly.Zero() &&
		p.WithinMonthly.Zero() && p.WithinYearly.Zero() && len(p.Tags) == 0
}

// Validate rejects negative counts other than -1 and empty tag names: a
// keep-tag rule that can match nothing must not pass for a rule (forget
// would remove the whole group).
func (p Policy) Validate() error {
	for name, n := range map[string]int{"last": p.Last, "hourly": p.Hourly, "daily": p.Daily, "weekly": p.Weekly, "monthly": p.Monthly, "yearly": p.Yearly} {
		if n < -1 {
			return fmt.Errorf("keep-%s %d: use a positive count or -1 (unlimited)", name, n)
		}
	}
	for _, tl := range p.Tags {
		if len(tl) == 0 || slices.Contains(tl, "") {
			return fmt.Errorf("keep-tag %q: empty tag name (give tag names separated by commas, e.g. prod,monthly)", strings.Join(tl, ","))
		}
	}
	return nil
}

// SplitTags parses one keep-tag value, "a,b" or "a, b": the tags a
// snapshot must all carry. Empty names are left for Validate to reject.
func SplitTags(s string) []string {
	tags := strings.Split(s, ",")
	for i, t := range tags {
		tags[i] = strings.TrimSpace(t)
	}
	return tags
}

// Decision is the outcome for one snapshot.
type Decision struct {
	Item    Item
	Keep    bool
	Reasons []string // why it is kept ("daily", "within 7d", "oldest monthly", "tag prod", ...)
}

// period functions map a time to its bucket.
func hourOf(t time.Time) int  { return t.Year()*1000000 + int(t.Month())*10000 + t.Day()*100 + t.Hour() }
func dayOf(t time.Time) int   { return t.Year()*10000 + int(t.Month())*100 + t.Day() }
func weekOf(t time.Time) int  { y, w := t.ISOWeek(); return y*100 + w }
func monthOf(t time.Time) int { return t.Year()*100 + int(t.Month()) }
func yearOf(t time.Time) int  { return t.Year() }

// Apply evaluates p over one group of items and returns a decision per
// item, newest first. now bounds "newest" (snapshots in the future do not
// anchor keep-within).
func Apply(items []Item, p Policy, now time.Time) []Decision {
	list := append([]Item(nil), items...)
	// Newest first; snapshots of the same time in ID order, so that the
	// decisions do not depend on the order items come in.
	sort.Slice(list, func(i, j int) bool {
		if !list[i].Time.Equal(list[j].Time) {
			return list[i].Time.After(list[j].Time)
		}
		return list[i].ID < list[j].ID
	})
	out := make([]Decision, len(list))
	if len(list) == 0 {
		return out
	}
	var newest time.Time
	for _, it := range list {
		if it.Time.After(newest) && it.Time.Before(now) {
			newest = it.Time
		}
	}
	type counter struct {
		left   int
		period func(time.Time) int
		last   int
		name   string
		seen   bool
	}
	counters := []*counter{
		{left: p.Last, name: "last"},
		{left: p.Hourly, period: hourOf, name: "hourly"},
		{left: p.Daily, period: dayOf, name: "daily"},
		{left: p.Weekly, period: weekOf, name: "weekly"},
		{left: p.Monthly, period: monthOf, name: "monthly"},
		{left: p.Yearly, period: yearOf, name: "yearly"},
	}
	type window struct {
		d      Duration
		period func(time.Time) int
		last   int
		seen   bool
		name   string
	}
	windows := []*window{
		{d: p.WithinHourly, period: hourOf, name: "hourly"},
		{d: p.WithinDaily, period: dayOf, name: "daily"},
		{d: p.WithinWeekly, period: weekOf, name: "weekly"},
		{d: p.WithinMonthly, period: monthOf, name: "monthly"},
		{d: p.WithinYearly, period: yearOf, name: "yearly"},
	}
	for i, it := range list {
		d := Decision{Item: it}
		oldest := i == len(list)-1
		for _, tl := range p.Tags {
			if hasAll(it.Tags, tl) {
				d.Keep = true
				d.Reasons = append(d.Reasons, "tag "+strings.Join(tl, ","))
			}
		}
		if !p.Within.Zero() && it.Time.After(p.Within.before(newest)) {
			d.Keep = true
			d.Reasons = append(d.Reasons, "within "+p.Within.String())
		}
		for _, c := range counters {
			if c.left == 0 {
				continue
			}
			var bucket int
			if c.period == nil {
				bucket = i // every snapshot is its own bucket for keep-last
			} else {
				bucket = c.period(it.Time)
			}
			newBucket := !c.seen || bucket != c.last
			if newBucket || oldest {
				d.Keep = true
				reason := c.name
				if !newBucket {
					reason = "oldest " + c.name
				}
				d.Reasons = append(d.Reasons, reason)
				c.last, c.seen = bucket, true
				if c.left > 0 {
					c.left--
				}
			}
		}
		for _, w := range windows {
			if w.d.Zero() || !it.Time.After(w.d.before(newest)) {
				continue
			}
			// Like the counted rules, a window also keeps the group's
			// oldest snapshot when that is inside it.
			bucket := w.period(it.Time)
			newBucket := !w.seen || bucket != w.last
			if newBucket || oldest {
				d.Keep = true
				reason := w.name + " within " + w.d.String()
				if !newBucket {
					reason = "oldest " + reason
				}
				d.Reasons = append(d.Reasons, reason)
				w.last, w.seen = bucket, true
			}
		}
		out[i] = d
	}
	return out
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// GroupBy names the fields items are grouped by.
type GroupBy struct{ Host, Paths, Tags bool }

// ParseGroupBy parses "host,paths" (any of host, paths, tags; "" = no
// grouping).
func ParseGroupBy(s string) (GroupBy, error) {
	var g GroupBy
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "":
		case "host":
			g.Host = true
		case "paths", "path":
			g.Paths = true
		case "tags", "tag":
			g.Tags = true
		default:
			return g, fmt.Errorf("group-by %q: unknown field %q (use host, paths, tags)", s, f)
		}
	}
	return g, nil
}

// Key returns the group key of it.
func (g GroupBy) Key(it Item) string {
	var parts []string
	if g.Host {
		parts = append(parts, "host="+it.Host)
	}
	if g.Paths {
		ps := append([]string(nil), it.Paths...)
		sort.Strings(ps)
		parts = append(parts, "paths="+joinQuoted(ps, ":"))
	}
	if g.Tags {
		ts := append([]string(nil), it.Tags...)
		sort.Strings(ts)
		parts = append(parts, "tags="+joinQuoted(ts, ","))
	}
	return strings.Join(parts, " ")
}

// joinQuoted joins xs with sep, quoting (Go syntax) the elements that
// contain a separator, a space, a quote or an unprintable character, so
// that different lists never give the same key: ["/a:/b"] is not
// ["/a", "/b"].
func joinQuoted(xs []string, sep string) string {
	out := make([]string, len(xs))
	for i, x := range xs {
		if x == "" || strings.ContainsAny(x, ":, \"=") || strconv.Quote(x) != `"`+x+`"` {
			x = strconv.Quote(x)
		}
		out[i] = x
	}
	return strings.Join(out, sep)
}

// KeepsNothing describes the groups of which the decisions keep nothing,
// in key order: "all 3 snapshots of group "host=a paths=/x"", or "the only
// snapshot of group ..."; groups without decisions are left out. Keep
// rules that keep nothing of a group (a keep-tag none of its snapshots
// carries, a typo) would remove a host's every backup: callers refuse
// them, as restic does.
func KeepsNothing(groups map[string][]Decision) []string {
	var out []string
	for _, grp := range slices.Sorted(maps.Keys(groups)) {
		ds := groups[grp]
		if len(ds) == 0 || slices.ContainsFunc(ds, func(d Decision) bool { return d.Keep }) {
			continue
		}
		what := fmt.Sprintf("all %d snapshots", len(ds))
		if len(ds) == 1 {
			what = "the only snapshot"
		}
		out = append(out, fmt.Sprintf("%s of group %q", what, grp))
	}
	return out
}

// Group applies p to every group of items and returns the decisions per
// group key.
func Group(items []Item, g GroupBy, p Policy, now time.Time) map[string][]Decision {
	groups := map[string][]Item{}
	for _, it := range items {
		k := g.Key(it)
		groups[k] = append(groups[k], it)
	}
	out := map[string][]Decision{}
	for k, its := range groups {
		out[k] = Apply(its, p, now)
	}
	return out
}
