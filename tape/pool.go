package tape

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Level is a GFS retention level of a media set.
type Level string

// The GFS levels, lowest first.
const (
	LevelDaily   Level = "daily"
	LevelWeekly  Level = "weekly"
	LevelMonthly Level = "monthly"
	LevelYearly  Level = "yearly"
)

// Levels lists the levels lowest first.
var Levels = []Level{LevelDaily, LevelWeekly, LevelMonthly, LevelYearly}

func (l Level) rank() int {
	for i, x := range Levels {
		if x == l {
			return i
		}
	}
	return -1
}

func (l Level) valid() bool { return l.rank() >= 0 }

// ParseLevel parses a level name.
func ParseLevel(s string) (Level, error) {
	l := Level(strings.ToLower(strings.TrimSpace(s)))
	if !l.valid() {
		return "", fmt.Errorf("unknown retention level %q: want daily, weekly, monthly or yearly", s)
	}
	return l, nil
}

// Pool is a media pool: the cartridges labelled for it and the policy
// its media sets follow.
//
// GFS: each `tape write` into the pool makes one media set whose level is
// the highest enabled level whose period has no set of that level (or
// higher) yet: the first run of a calendar year is yearly, the first of a
// month monthly, the first run of a week (weeks start on WeeklyOn) weekly,
// and every other run daily. A set expires Daily days, Weekly weeks,
// Monthly months or Yearly years after it was written; a level with
// retention 0 is disabled (its runs fall to the next lower enabled level).
// Tapes are overwritten only after their set expired; WORM tapes never.
type Pool struct {
	Name     string       `json:"name"`
	Daily    int          `json:"daily"`   // days a daily set is kept
	Weekly   int          `json:"weekly"`  // weeks a weekly set is kept
	Monthly  int          `json:"monthly"` // months a monthly set is kept
	Yearly   int          `json:"yearly"`  // years a yearly set is kept
	WeeklyOn time.Weekday `json:"weekly_on"`
	// Offsite lists the levels whose tapes go offsite once written.
	Offsite []Level `json:"offsite"`
	// WORM pools use write-once cartridges only.
	WORM bool `json:"worm"`
	// Location is the time zone the calendar periods are computed in
	// (default UTC).
	Location *time.Location `json:"-"`
}

// DefaultPool is the policy of the pool named "default" when the config
// defines none: GFS keeping 7 daily, 4 weekly, 12 monthly and 7 yearly
// sets, weeks starting on Friday, weekly and older sets offsite.
func DefaultPool(name string) Pool {
	return Pool{Name: name, Daily: 7, Weekly: 4, Monthly: 12, Yearly: 7, WeeklyOn: time.Friday,
		Offsite: []Level{LevelWeekly, LevelMonthly, LevelYearly}}
}

// Validate checks the policy.
func (p Pool) Validate() error {
	if err := validPoolName(p.Name); err != nil {
		return err
	}
	if p.Daily < 0 || p.Weekly < 0 || p.Monthly < 0 || p.Yearly < 0 {
		return fmt.Errorf("pool %s: retention counts must not be negative", p.Name)
	}
	if p.Daily+p.Weekly+p.Monthly+p.Yearly == 0 {
		return fmt.Errorf("pool %s: every level has retention 0; set at least one of daily, weekly, monthly, yearly", p.Name)
	}
	if p.WeeklyOn < time.Sunday || p.WeeklyOn > time.Saturday {
		return fmt.Errorf("pool %s: weekly_on is not a weekday", p.Name)
	}
	for _, l := range p.Offsite {
		if !l.valid() {
			return fmt.Errorf("pool %s: offsite level %q unknown", p.Name, l)
		}
	}
	return nil
}

func validPoolName(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("pool name %q: want 1..64 characters", s)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("pool name %q: only letters, digits, '-', '_' and '.' are allowed", s)
		}
	}
	return nil
}

func (p Pool) loc() *time.Location {
	if p.Location == nil {
		return time.UTC
	}
	return p.Location
}

func (p Pool) retention(l Level) int {
	switch l {
	case LevelDaily:
		return p.Daily
	case LevelWeekly:
		return p.Weekly
	case LevelMonthly:
		return p.Monthly
	case LevelYearly:
		return p.Yearly
	}
	return 0
}

// Expires returns when a set of level l written at created expires.
func (p Pool) Expires(l Level, created time.Time) time.Time {
	c := created.In(p.loc())
	n := p.retention(l)
	switch l {
	case LevelDaily:
		return c.AddDate(0, 0, n)
	case LevelWeekly:
		return c.AddDate(0, 0, 7*n)
	case LevelMonthly:
		return c.AddDate(0, n, 0)
	default:
		return c.AddDate(n, 0, 0)
	}
}

// periodStart returns the start of the calendar period of level l that
// contains t.
func (p Pool) periodStart(l Level, t time.Time) time.Time {
	t = t.In(p.loc())
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, p.loc())
	switch l {
	case LevelWeekly:
		back := (int(day.Weekday()) - int(p.WeeklyOn) + 7) % 7
		return day.AddDate(0, 0, -back)
	case LevelMonthly:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, p.loc())
	case LevelYearly:
		return time.Date(t.Year(), 1, 1, 0, 0, 0, 0, p.loc())
	}
	return day
}

// SetRecord is what LevelFor needs to know about earlier sets.
type SetRecord struct {
	Created time.Time
	Level   Level
}

// PoolHistory returns the sets of pool among sets as LevelFor's history.
// A set whose write stopped (aborted, or its writer gone) does not count:
// its tapes go back to the pool, so it must not take its period's level
// from the run that writes that period's set again.
func PoolHistory(sets []*SetInfo, pool string) []SetRecord {
	var hist []SetRecord
	for _, s := range sets {
		if s.Pool != pool || !s.Complete && (s.Aborted != "" || s.WriterGone()) {
			continue
		}
		hist = append(hist, SetRecord{Created: s.Created, Level: s.Level})
	}
	return hist
}

// ErrLevelDisabled is returned by LevelFor when the run falls on a level
// the pool does not keep and no lower level is enabled.
var ErrLevelDisabled = errors.New("pool keeps no sets of this level")

// LevelFor decides the level of a set written at now, given the pool's
// earlier sets (any order; expired ones included).
func (p Pool) LevelFor(now time.Time, history []SetRecord) (Level, error) {
	for i := len(Levels) - 1; i >= 1; i-- {
		l := Levels[i]
		if p.retention(l) == 0 {
			continue
		}
		start := p.periodStart(l, now)
		taken := false
		for _, h := range history {
			if h.Level.rank() >= l.rank() && !h.Created.Before(start) && !h.Created.After(now) {
				taken = true
				break
			}
		}
		if !taken {
			return l, nil
		}
	}
	if p.Daily > 0 {
		return LevelDaily, nil
	}
	return "", fmt.Errorf("%w: pool %s keeps no daily sets and this period's weekly/monthly/yearly set exists; give --level with a level the pool keeps to write another set anyway", ErrLevelDisabled, p.Name)
}

// GoesOffsite reports whether sets of level l leave the site.
func (p Pool) GoesOffsite(l Level) bool {
	for _, x := range p.Offsite {
		if x == l {
			return true
		}
	}
	return false
}

// ParseWeekday parses "friday", "fri" or "5".
func ParseWeekday(s string) (time.Weekday, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	for d := time.Sunday; d <= time.Saturday; d++ {
		n := strings.ToLower(d.String())
		if t == n || t == n[:3] || t == fmt.Sprint(int(d)) {
			return d, nil
		}
	}
	return 0, fmt.Errorf("%q is not a weekday", s)
}

// sortLevels orders levels lowest first and removes duplicates.
func sortLevels(ls []Level) []Level {
	sort.Slice(ls, func(i, j int) bool { return ls[i].rank() < ls[j].rank() })
	out := ls[:0]
	for i, l := range ls {
		if i == 0 || l != ls[i-1] {
			out = append(out, l)
		}
	}
	return out
}
