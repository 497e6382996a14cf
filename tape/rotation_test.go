package tape_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/drpipe/drpipe/erasure"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tape"
	"github.com/drpipe/drpipe/tiers"
	"github.com/drpipe/drpipe/tiers/tierstest"
)

func gfsPool() tape.Pool {
	return tape.Pool{Name: "gfs", Daily: 7, Weekly: 4, Monthly: 12, Yearly: 3, WeeklyOn: time.Friday,
		Offsite: []tape.Level{tape.LevelWeekly, tape.LevelMonthly, tape.LevelYearly}}
}

func TestGFSSchedule(t *testing.T) {
	p := gfsPool()
	d := func(m time.Month, day int) time.Time { return time.Date(2026, m, day, 22, 0, 0, 0, time.UTC) }
	// Daily runs from Thursday 1 January 2026.
	cases := []struct {
		at      time.Time
		level   tape.Level
		expires time.Time
	}{
		{d(1, 1), tape.LevelYearly, time.Date(2029, 1, 1, 22, 0, 0, 0, time.UTC)},
		{d(1, 2), tape.LevelWeekly, d(1, 30)}, // Friday: a new week
		{d(1, 3), tape.LevelDaily, d(1, 10)},
		{d(1, 8), tape.LevelDaily, d(1, 15)},
		{d(1, 9), tape.LevelWeekly, d(2, 6)},
		{d(1, 31), tape.LevelDaily, d(2, 7)},
		{d(2, 1), tape.LevelMonthly, time.Date(2027, 2, 1, 22, 0, 0, 0, time.UTC)}, // Sunday, first of the month
		{d(2, 2), tape.LevelDaily, d(2, 9)},
		{d(2, 6), tape.LevelWeekly, d(3, 6)},
		{d(3, 1), tape.LevelMonthly, time.Date(2027, 3, 1, 22, 0, 0, 0, time.UTC)},
	}
	var hist []tape.SetRecord
	next := 0
	for day := d(1, 1); !day.After(d(3, 1)); day = day.AddDate(0, 0, 1) {
		l, err := p.LevelFor(day, hist)
		if err != nil {
			t.Fatal(err)
		}
		hist = append(hist, tape.SetRecord{Created: day, Level: l})
		if next < len(cases) && cases[next].at.Equal(day) {
			c := cases[next]
			if l != c.level {
				t.Errorf("%s: got level %s, want %s", day.Format("Mon 2006-01-02"), l, c.level)
			}
			if e := p.Expires(l, day); !e.Equal(c.expires) {
				t.Errorf("%s: %s set expires %s, want %s", day.Format("2006-01-02"), l, e.Format("2006-01-02"), c.expires.Format("2006-01-02"))
			}
			next++
		}
	}
	if next != len(cases) {
		t.Fatalf("checked %d of %d cases", next, len(cases))
	}
	// A missed Friday makes Saturday the weekly.
	hist = []tape.SetRecord{{Created: d(1, 1), Level: tape.LevelYearly}, {Created: d(1, 8), Level: tape.LevelDaily}}
	if l, _ := p.LevelFor(d(1, 10), hist); l != tape.LevelWeekly {
		t.Errorf("Saturday after a missed Friday: got %s, want weekly", l)
	}
	// A pool with only dailies never promotes.
	only := tape.Pool{Name: "d", Daily: 14}
	if l, _ := only.LevelFor(d(1, 1), nil); l != tape.LevelDaily {
		t.Errorf("daily-only pool: got %s", l)
	}
	// A weekly-only pool refuses a second run in the same week.
	wk := tape.Pool{Name: "w", Weekly: 4, WeeklyOn: time.Monday}
	if _, err := wk.LevelFor(d(1, 6), []tape.SetRecord{{Created: d(1, 5), Level: tape.LevelWeekly}}); err == nil {
		t.Errorf("weekly-only pool accepted a second run in one week")
	}
}

// fakeSource is a repository-shaped object store for rotation runs: one
// config object and one single-shard pack per run.
func fakePlan(t *testing.T, be tiers.Backend, run int) *tape.WritePlan {
	ctx := context.Background()
	cfg := tiers.Handle{Type: tiers.TypeConfig, Name: "config"}
	if _, err := be.Stat(ctx, cfg); err != nil {
		tiers.PutBytes(ctx, be, cfg, []byte(`{"format":"fake"}`))
	}
	pack := make([]byte, 64<<10)
	rand.Read(pack)
	pid, shards, err := erasure.Encode(erasure.Params{K: 1, M: 0}, pack)
	if err != nil {
		t.Fatal(err)
	}
	h := tiers.Handle{Type: tiers.TypeData, Name: erasure.ShardName(pid, 0)}
	if err := tiers.PutBytes(ctx, be, h, shards[0]); err != nil {
		t.Fatal(err)
	}
	snap := id.ID(sha256.Sum256([]byte(fmt.Sprint(run))))
	return &tape.WritePlan{
		Meta:     []tape.PlanObject{{Handle: cfg, Size: 17}},
		Packs:    []tape.PlanPack{{ID: pid, K: 1, M: 0, ShardSize: int64(len(shards[0]))}},
		Manifest: tape.Manifest{Snapshots: []tape.ManifestSnapshot{{ID: snap, Time: time.Unix(int64(run), 0), Packs: []int{0}}}, Packs: []tape.ManifestPack{{ID: pid, K: 1}}},
	}
}

// TestGFSYear runs a year of nightly tape writes with a simulated clock:
// each night a set, then export (courier takes the offsite levels), and
// the vault returns expired tapes, which are imported and reused.
func TestGFSYear(t *testing.T) {
	if testing.Short() {
		t.Skip("a year of nightly runs")
	}
	ctx := context.Background()
	dir := memDir(t)
	libDir := filepath.Join(dir, "lib")
	if _, err := tape.InitVirtual(libDir, tape.VirtualConfig{Generation: tape.LTO8, Slots: 40, Drives: 1, MailSlots: 8, Capacity: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	lib, err := tape.OpenVirtual(libDir)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	cat, err := tape.OpenCatalog(filepath.Join(libDir, "catalog"))
	if err != nil {
		t.Fatal(err)
	}
	p := gfsPool()
	pools := func(string) (tape.Pool, error) { return p, nil }
	start := time.Date(2026, 1, 1, 22, 0, 0, 0, time.UTC)
	if _, err := tape.LabelTapes(ctx, lib, cat, tape.LabelOptions{Pool: p, Count: 40, Now: func() time.Time { return start }}); err != nil {
		t.Fatal(err)
	}
	be := tierstest.NewMemory()
	var hist []tape.SetRecord
	writes := map[string]int{} // barcode → sets written to it
	offsite := map[string]bool{}
	levels := map[tape.Level]int{}
	for day := 0; day < 365; day++ {
		now := start.AddDate(0, 0, day)
		level, err := p.LevelFor(now, hist)
		if err != nil {
			t.Fatal(err)
		}
		// Before writing: what each tape holds.
		before := map[string]*tape.SetInfo{}
		all, _ := cat.AllMedia()
		for _, m := range all {
			if m.SetID != "" {
				s, _ := cat.Set(m.SetID)
				before[m.Barcode] = s
			}
		}
		res, err := tape.WriteSet(ctx, lib, cat, be, fakePlan(t, be, day), tape.WriteOptions{Pool: p, Level: level, Parity: 0, Now: func() time.Time { return now }, BufferSize: 4 << 20})
		if err != nil {
			t.Fatalf("day %d (%s): %v", day, now.Format("2006-01-02"), err)
		}
		hist = append(hist, tape.SetRecord{Created: now, Level: level})
		levels[level]++
		for _, st := range res.Set.Tapes {
			if old := before[st.Barcode]; old != nil && !old.Expired(now) {
				t.Fatalf("day %d: tape %s held set %s (%s, expires %s) and was overwritten on %s", day, st.Barcode, old.ID[:8], old.Level, old.Expires, now)
			}
			if offsite[st.Barcode] {
				t.Fatalf("day %d: wrote to tape %s which is offsite", day, st.Barcode)
			}
			writes[st.Barcode]++
		}
		// Export: exactly this set's tapes when its level goes offsite.
		ex, err := tape.Export(ctx, lib, cat, pools, now)
		if err != nil {
			t.Fatal(err)
		}
		var got, want []string
		for _, it := range append(ex.Exported, ex.Waiting...) {
			got = append(got, it.Barcode)
		}
		if p.GoesOffsite(level) {
			for _, st := range res.Set.Tapes {
				want = append(want, st.Barcode)
			}
		}
		sort.Strings(got)
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("day %d (%s, %s): export list %v, want %v", day, now.Format("2006-01-02"), level, got, want)
		}
		taken, _ := lib.TakeMailSlots()
		for _, b := range taken {
			offsite[b] = true
		}
		if err := tape.Reconcile(ctx, lib, cat); err != nil {
			t.Fatal(err)
		}
		// Recall: exactly the offsite tapes whose set expired.
		rec, err := tape.DueForRecall(cat, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range rec {
			if it.Expires.After(now) {
				t.Fatalf("day %d: recall list has %s whose set expires %s", day, it.Barcode, it.Expires)
			}
		}
		for b := range offsite {
			m, _ := cat.Media(b)
			s, _ := cat.Set(m.SetID)
			expired := s == nil || s.Expired(now)
			listed := false
			for _, it := range rec {
				listed = listed || it.Barcode == b
			}
			if expired != listed {
				t.Fatalf("day %d: offsite tape %s expired=%v but recall listed=%v", day, b, expired, listed)
			}
		}
		for _, it := range rec {
			if _, err := lib.Insert(it.Barcode); err != nil {
				t.Fatal(err)
			}
			delete(offsite, it.Barcode)
		}
		imp, err := tape.Import(ctx, lib, cat, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(imp.Scratch) != len(rec) || len(imp.Kept) != 0 {
			t.Fatalf("day %d: imported %v scratch, %v kept; want the %d recalled tapes as scratch", day, imp.Scratch, imp.Kept, len(rec))
		}
		// Retention bounds: no more live sets of a level than the policy keeps (+1 for today's).
		sets, _ := cat.Sets()
		live := map[tape.Level]int{}
		for _, s := range sets {
			if !s.Expired(now) && len(s.Tapes) > 0 {
				live[s.Level]++
			}
		}
		for l, n := range map[tape.Level]int{tape.LevelDaily: p.Daily, tape.LevelWeekly: p.Weekly + 1, tape.LevelMonthly: p.Monthly + 1, tape.LevelYearly: p.Yearly} {
			if live[l] > n {
				t.Fatalf("day %d: %d live %s sets, the policy keeps %d", day, live[l], l, n)
			}
		}
	}
	reused := 0
	for _, n := range writes {
		if n > 1 {
			reused++
		}
	}
	t.Logf("a year: levels %v, %d tapes used, %d reused after expiry, %d offsite at the end", levels, len(writes), reused, len(offsite))
	if levels[tape.LevelYearly] != 1 || levels[tape.LevelMonthly] != 11 || levels[tape.LevelWeekly] < 50 {
		t.Errorf("levels over the year: %v; want 1 yearly, 11 monthly, about 52 weekly", levels)
	}
	if reused < 5 {
		t.Errorf("only %d tapes were reused after expiry", reused)
	}
	if len(writes) > 40 {
		t.Errorf("used %d tapes", len(writes))
	}
}

// memDir returns a directory in memory (tmpfs) when the machine has one,
// for tests that make thousands of small files.
func memDir(t *testing.T) string {
	if d, err := os.MkdirTemp("/dev/shm", "drpipe-tape-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return t.TempDir()
}
