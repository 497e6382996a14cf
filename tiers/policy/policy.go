// Package policy owns drpipe's tiering policy: which snapshots each tier
// (the primary repository on hot disk, the DR site, cloud buckets with
// storage-class transitions, tape pools) should hold, what a run must copy,
// forget and transition to get there, and what the cloud tiers will cost.
//
// Plan is a pure function of the tiers' states and the clock, so a dry run
// (`drpipe tier plan`) and a golden test see exactly what `drpipe tier run`
// will do. Run carries a plan out through small Target interfaces that the
// command line wires to the real tiers (local directory, S3, DR site over
// QUIC, tape library); running it twice does nothing the second time.
package policy

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/drpipe/drpipe/retention"
)

// Kind is the kind of a tier.
type Kind string

// Tier kinds.
const (
	KindPrimary Kind = "primary" // the repository backups write to (hot disk)
	KindLocal   Kind = "local"   // another directory (second disk, NAS)
	KindS3      Kind = "s3"      // cloud bucket
	KindSite    Kind = "site"    // DR site over QUIC
	KindTape    Kind = "tape"    // tape pool
)

// Config is the tiering policy (config section "tiering").
type Config struct {
	// Prices are storage prices in currency units per GiB-month, by
	// storage class (S3) or tier kind ("local", "site", "tape",
	// "primary"). Missing entries use DefaultPrices.
	Prices map[string]float64 `mapstructure:"prices" json:"prices,omitempty"`
	Tiers  []Tier             `mapstructure:"tiers" json:"tiers"`
}

// Tier is one tier of the policy.
type Tier struct {
	Name     string `mapstructure:"name" json:"name"`
	Kind     Kind   `mapstructure:"kind" json:"kind"`
	Location string `mapstructure:"location" json:"location,omitempty"`
	// TLSDir for site tiers; Pool and Library for tape tiers.
	TLSDir  string `mapstructure:"tls_dir" json:"tls_dir,omitempty"`
	Library string `mapstructure:"library" json:"library,omitempty"`
	Pool    string `mapstructure:"pool" json:"pool,omitempty"`
	// Keep selects the snapshots this tier holds; GroupBy groups them
	// first (default "host,paths").
	Keep    Keep   `mapstructure:"keep" json:"keep"`
	GroupBy string `mapstructure:"group_by" json:"group_by,omitempty"`
	// StorageClass is the class new data gets in an S3 tier (default
	// STANDARD); Transitions move data to colder classes by age.
	StorageClass string       `mapstructure:"storage_class" json:"storage_class,omitempty"`
	Transitions  []Transition `mapstructure:"transitions" json:"transitions,omitempty"`
}

// Keep are the keep rules of a tier (see package retention).
type Keep struct {
	Last          int      `mapstructure:"last" json:"last,omitempty"`
	Hourly        int      `mapstructure:"hourly" json:"hourly,omitempty"`
	Daily         int      `mapstructure:"daily" json:"daily,omitempty"`
	Weekly        int      `mapstructure:"weekly" json:"weekly,omitempty"`
	Monthly       int      `mapstructure:"monthly" json:"monthly,omitempty"`
	Yearly        int      `mapstructure:"yearly" json:"yearly,omitempty"`
	Within        string   `mapstructure:"within" json:"within,omitempty"`
	WithinDaily   string   `mapstructure:"within_daily" json:"within_daily,omitempty"`
	WithinWeekly  string   `mapstructure:"within_weekly" json:"within_weekly,omitempty"`
	WithinMonthly string   `mapstructure:"within_monthly" json:"within_monthly,omitempty"`
	Tags          []string `mapstructure:"tags" json:"tags,omitempty"`
	// All keeps every snapshot (an archive tier that never forgets).
	All bool `mapstructure:"all" json:"all,omitempty"`
}

// Transition moves an S3 tier's data to Class once it is older than After
// (a retention duration such as "30d" or "6m").
type Transition struct {
	After string `mapstructure:"after" json:"after"`
	Class string `mapstructure:"class" json:"class"`
}

// DefaultPrices are list prices in USD per GiB-month (AWS S3 us-east-1
// storage; local, site and tape set to 0 — configure your own).
var DefaultPrices = map[string]float64{
	"STANDARD":     0.023,
	"STANDARD_IA":  0.0125,
	"GLACIER_IR":   0.004,
	"GLACIER":      0.0036,
	"DEEP_ARCHIVE": 0.00099,
	"primary":      0,
	"local":        0,
	"site":         0,
	"tape":         0,
}

// StorageClasses in order from hottest to coldest.
var StorageClasses = []string{"STANDARD", "STANDARD_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"}

func classRank(c string) int {
	for i, x := range StorageClasses {
		if x == c {
			return i
		}
	}
	return -1
}

// policy returns the tier's retention policy.
func (k Keep) policy() (retention.Policy, error) {
	p := retention.Policy{Last: k.Last, Hourly: k.Hourly, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly, Yearly: k.Yearly}
	if k.All {
		p.Last = -1
	}
	for _, d := range []struct {
		s   string
		dst *retention.Duration
		n   string
	}{{k.Within, &p.Within, "within"}, {k.WithinDaily, &p.WithinDaily, "within_daily"}, {k.WithinWeekly, &p.WithinWeekly, "within_weekly"}, {k.WithinMonthly, &p.WithinMonthly, "within_monthly"}} {
		if d.s == "" {
			continue
		}
		v, err := retention.ParseDuration(d.s)
		if err != nil {
			return p, fmt.Errorf("keep.%s: %w", d.n, err)
		}
		*d.dst = v
	}
	for _, t := range k.Tags {
		p.Tags = append(p.Tags, retention.SplitTags(t))
	}
	return p, p.Validate()
}

// Validate checks the policy and says what and where is wrong. It also
// puts the price keys in canonical form (storage classes upper case, tier
// kinds lower case): configuration loaders lowercase map keys, so
// "DEEP_ARCHIVE" in a file arrives as "deep_archive".
func (c *Config) Validate() error {
	if len(c.Tiers) == 0 {
		return fmt.Errorf("tiering.tiers is empty: define at least the primary tier and one other")
	}
	if err := c.canonicalPrices(); err != nil {
		return err
	}
	names := map[string]bool{}
	primaries := 0
	for i, t := range c.Tiers {
		where := fmt.Sprintf("tiering.tiers[%d] (%s)", i, t.Name)
		if t.Name == "" {
			return fmt.Errorf("tiering.tiers[%d]: name is missing", i)
		}
		if names[t.Name] {
			return fmt.Errorf("%s: duplicate tier name", where)
		}
		names[t.Name] = true
		switch t.Kind {
		case KindPrimary:
			primaries++
		case KindLocal, KindS3, KindSite:
			if t.Location == "" {
				return fmt.Errorf("%s: location is missing", where)
			}
		case KindTape:
			if t.Library == "" || t.Pool == "" {
				return fmt.Errorf("%s: a tape tier needs library and pool", where)
			}
		default:
			return fmt.Errorf("%s: unknown kind %q (use primary, local, s3, site, tape)", where, t.Kind)
		}
		p, err := t.Keep.policy()
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if p.Empty() {
			return fmt.Errorf("%s: no keep rule: a tier that keeps nothing is surely a mistake (use keep.all: true to keep everything)", where)
		}
		if _, err := retention.ParseGroupBy(t.GroupBy); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if t.StorageClass != "" && classRank(t.StorageClass) < 0 {
			return fmt.Errorf("%s: unknown storage class %q (use %s)", where, t.StorageClass, strings.Join(StorageClasses, ", "))
		}
		if t.StorageClass != "" && t.Kind != KindS3 {
			// Only buckets have storage classes: elsewhere the key
			// would be ignored, by the copy and the cost estimate alike.
			return fmt.Errorf("%s: storage_class is only for s3 tiers (a %s tier is priced by its kind in tiering.prices)", where, t.Kind)
		}
		if archiveClass(t.StorageClass) {
			// Tree packs (directory listings) uploaded there could not be
			// read without a restore, and the tier's prune walks them on
			// every run: it would fail each time, and hold back the
			// primary's retention with it.
			return fmt.Errorf("%s: storage_class %s is an archive class, whose objects cannot be read without a restore; the tier's prune must read its directory listings: "+
				"set storage_class to STANDARD, STANDARD_IA or GLACIER_IR and add transitions: [{after: 1d, class: %s}], which move file data there and keep the listings readable", where, t.StorageClass, t.StorageClass)
		}
		if len(t.Transitions) > 0 && t.Kind != KindS3 {
			return fmt.Errorf("%s: transitions are only for s3 tiers", where)
		}
		last := classRank(t.storageClass())
		var lastAge time.Duration
		for j, tr := range t.Transitions {
			d, err := retention.ParseDuration(tr.After)
			if err != nil {
				return fmt.Errorf("%s: transitions[%d].after: %w", where, j, err)
			}
			r := classRank(tr.Class)
			if r < 0 {
				return fmt.Errorf("%s: transitions[%d]: unknown class %q", where, j, tr.Class)
			}
			if r <= last {
				return fmt.Errorf("%s: transitions[%d]: %s is not colder than the previous class", where, j, tr.Class)
			}
			age := approx(d)
			switch {
			case age <= 0:
				return fmt.Errorf("%s: transitions[%d]: after %s: a transition comes after some time (data is stored in %s first; set storage_class to store it elsewhere)", where, j, tr.After, t.storageClass())
			case age <= lastAge:
				return fmt.Errorf("%s: transitions[%d]: after %s is not later than the previous transition", where, j, tr.After)
			}
			last, lastAge = r, age
		}
	}
	if primaries != 1 {
		return fmt.Errorf("tiering.tiers: need exactly one tier of kind primary (the repository backups write to), found %d", primaries)
	}
	return nil
}

func (t Tier) storageClass() string {
	if t.StorageClass == "" {
		return "STANDARD"
	}
	return t.StorageClass
}

// approx converts a calendar duration to a time.Duration for ordering.
func approx(d retention.Duration) time.Duration {
	return time.Duration(d.Years)*365*24*time.Hour + time.Duration(d.Months)*30*24*time.Hour +
		time.Duration(d.Days)*24*time.Hour + time.Duration(d.Hours)*time.Hour
}

// classAt returns the storage class data of this age should be in.
func (t Tier) classAt(created, now time.Time) string { return t.classFor(created, now, false) }

// readableClassAt is classAt without the archive classes: the class data
// of this age that must stay readable (tree packs) should be in.
func (t Tier) readableClassAt(created, now time.Time) string { return t.classFor(created, now, true) }

// classFor is the class of the last transition due for data created at
// created, skipping archive classes when readable is set.
func (t Tier) classFor(created, now time.Time, readable bool) string {
	c := t.storageClass()
	for _, tr := range t.Transitions {
		d, err := retention.ParseDuration(tr.After)
		if err != nil || readable && archiveClass(tr.Class) {
			continue
		}
		// created + d <= now
		if !created.AddDate(d.Years, d.Months, d.Days).Add(time.Duration(d.Hours) * time.Hour).After(now) {
			c = tr.Class
		}
	}
	return c
}

// canonicalPrices rewrites c.Prices with canonical keys and rejects keys
// that name neither a storage class nor a tier kind, and negative prices.
func (c *Config) canonicalPrices() error {
	if len(c.Prices) == 0 {
		return nil
	}
	out := make(map[string]float64, len(c.Prices))
	for _, k := range sortedKeys(c.Prices) {
		key := strings.ToUpper(k)
		if classRank(key) < 0 {
			key = strings.ToLower(k)
			if _, ok := DefaultPrices[key]; !ok {
				return fmt.Errorf("tiering.prices: unknown key %q (want a storage class, %s, or a tier kind: primary, local, site, tape)", k, strings.Join(StorageClasses, ", "))
			}
		}
		if _, dup := out[key]; dup {
			return fmt.Errorf("tiering.prices: %q is given twice", key)
		}
		if p := c.Prices[k]; p < 0 {
			return fmt.Errorf("tiering.prices.%s: negative price %g", k, p)
		}
		out[key] = c.Prices[k]
	}
	c.Prices = out
	return nil
}

func (c *Config) price(key string) float64 {
	if p, ok := c.Prices[key]; ok {
		return p
	}
	return DefaultPrices[key]
}

// sortedKeys returns m's keys sorted.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
