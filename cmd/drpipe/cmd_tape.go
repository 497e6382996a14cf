package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cast"
	"github.com/spf13/cobra"

	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tape"
)

// tapeDefaults are the tape section's config keys (documented in
// configs/drpipe.yaml and README "Tape").
var tapeDefaults = map[string]any{
	"tape.library":     "",
	"tape.catalog":     "",
	"tape.parity":      1,
	"tape.record_size": "1MiB",
	"tape.buffer":      "256MiB",
	"tape.file_size":   "16GiB",
}

// poolKeys are the keys of a tape pool's section, tape.pools.NAME.
var poolKeys = []string{"daily", "weekly", "monthly", "yearly", "weekly_on", "offsite", "worm"}

// tapeEnv is an open library and catalog.
type tapeEnv struct {
	lib *tape.VirtualLibrary
	cat *tape.Catalog
}

func (t *tapeEnv) close() { t.lib.Close() }

func (a *app) libraryDir() (string, error) {
	d := a.v.GetString("tape.library")
	if d == "" {
		return "", usagef("no tape library: give --library DIR, set DRPIPE_TAPE_LIBRARY or tape.library in the config file")
	}
	return d, nil
}

func (a *app) openTape() (*tapeEnv, error) {
	dir, err := a.libraryDir()
	if err != nil {
		return nil, err
	}
	lib, err := tape.OpenVirtual(dir)
	if err != nil {
		if errors.Is(err, tape.ErrNotLibrary) {
			return nil, usageError{err}
		}
		return nil, err
	}
	cd := a.v.GetString("tape.catalog")
	if cd == "" {
		cd = filepath.Join(dir, "catalog")
	}
	cat, err := tape.OpenCatalog(cd)
	if err != nil {
		lib.Close()
		return nil, err
	}
	return &tapeEnv{lib: lib, cat: cat}, nil
}

// tapeNow is the clock of the tape commands: the wall clock, or
// DRPIPE_TAPE_NOW (RFC 3339) for rotation drills and tests.
func tapeNow() (time.Time, error) {
	if s := os.Getenv("DRPIPE_TAPE_NOW"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return time.Time{}, usagef("DRPIPE_TAPE_NOW=%q: want an RFC 3339 time such as 2026-01-31T22:00:00Z", s)
		}
		return t, nil
	}
	return time.Now(), nil
}

// pool returns the named pool's policy from tape.pools.NAME.* (the
// config file, or DRPIPE_TAPE_POOLS_NAME_KEY in the environment, which
// wins) or the built-in default for what neither sets.
func (a *app) pool(name string) (tape.Pool, error) {
	p := tape.DefaultPool(name)
	key := "tape.pools." + strings.ToLower(name)
	if a.v.IsSet(key) {
		sub := a.v.Sub(key)
		if sub == nil {
			return p, usagef("config %s: want a section with %s", key, strings.Join(poolKeys, ", "))
		}
		for _, k := range sub.AllKeys() {
			if !slices.Contains(poolKeys, k) {
				return p, usagef("config %s: unknown key %q (want %s)", key, k, strings.Join(poolKeys, ", "))
			}
		}
	}
	// Each key through a.v, not the section: viper's sections do not see
	// the environment, its keys do.
	set := func(k string) bool { return a.v.IsSet(key + "." + k) }
	for _, lv := range []struct {
		k string
		n *int
	}{{"daily", &p.Daily}, {"weekly", &p.Weekly}, {"monthly", &p.Monthly}, {"yearly", &p.Yearly}} {
		if set(lv.k) {
			v, err := wholeNumber(a.v.Get(key + "." + lv.k))
			if err != nil {
				return p, usagef("config %s.%s: want a whole number of periods to keep (0 disables the level): %v", key, lv.k, err)
			}
			*lv.n = v
		}
	}
	if set("weekly_on") {
		d, err := tape.ParseWeekday(a.v.GetString(key + ".weekly_on"))
		if err != nil {
			return p, usagef("config %s.weekly_on: %w", key, err)
		}
		p.WeeklyOn = d
	}
	if set("offsite") {
		p.Offsite = nil
		for _, s := range a.v.GetStringSlice(key + ".offsite") {
			for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
				if f == "none" { // the environment cannot give an empty list
					continue
				}
				l, err := tape.ParseLevel(f)
				if err != nil {
					return p, usagef("config %s.offsite: %w", key, err)
				}
				p.Offsite = append(p.Offsite, l)
			}
		}
	}
	if set("worm") {
		w, err := cast.ToBoolE(a.v.Get(key + ".worm"))
		if err != nil {
			return p, usagef("config %s.worm: want true or false: %v", key, err)
		}
		p.WORM = w
	}
	if err := p.Validate(); err != nil {
		return p, usageError{err}
	}
	return p, nil
}

// wholeNumber is a config value that must be a whole number: an integer
// from the config file, or decimal digits from the environment (not
// octal: "010" is ten).
func wholeNumber(v any) (int, error) {
	switch x := v.(type) {
	case int:
		return x, nil
	case int64:
		return int(x), nil
	case uint64:
		return int(x), nil
	case float64:
		if x != float64(int(x)) {
			return 0, fmt.Errorf("%v is not a whole number", x)
		}
		return int(x), nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("%q is not a whole number", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%v (%T) is not a whole number", v, v)
}

// poolWORM reports whether pool name is a WORM pool (its tapes are never
// reused).
func (a *app) poolWORM(name string) bool {
	p, err := a.pool(name)
	return err == nil && p.WORM
}

// tapeProgress draws tape progress on a terminal.
type tapeProgress struct {
	mu    sync.Mutex
	bytes atomic.Int64
	cur   string
	start time.Time
	stop  chan struct{}
	done  chan struct{}
	a     *app
	verb  string
}

func (a *app) startTapeProgress(verb string) *tapeProgress {
	p := &tapeProgress{start: time.Now(), a: a, verb: verb}
	if !a.progressEnabled() {
		return p
	}
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.draw()
				fmt.Fprintln(a.stderr)
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
	return p
}

func (p *tapeProgress) draw() {
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()
	el := time.Since(p.start)
	n := p.bytes.Load()
	fmt.Fprintf(p.a.stderr, "\r\033[K%s %s  %s/s  tape %s  %s", p.verb, humanBytes(n), humanBytes(int64(float64(n)/max(el.Seconds(), 0.001))), cur, el.Truncate(time.Second))
}

func (p *tapeProgress) Tape(bc string, col, seq int) {
	p.mu.Lock()
	p.cur = bc
	p.mu.Unlock()
}

func (p *tapeProgress) Bytes(n int64) { p.bytes.Add(n) }

func (p *tapeProgress) Stop() {
	if p.stop != nil {
		close(p.stop)
		<-p.done
	}
}

func (a *app) tapeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tape",
		Short: "Write repository snapshots to LTO tape sets, rotate them offsite, restore from tape alone",
		Long: "Tape sets hold everything needed to restore their snapshots: the repository config, the password-wrapped keys,\n" +
			"the indexes and snapshots on every tape, and each pack's erasure-coded shards spread over the set's tapes so\n" +
			"that the set survives the loss of --parity tapes. Media pools rotate sets by a GFS policy; export and import\n" +
			"tell the operator which tapes go offsite and which come back. All commands take --library DIR: a virtual\n" +
			"library directory (one file per cartridge, named after its barcode).",
	}
	cmd.PersistentFlags().String("library", "", "tape library directory (config key tape.library)")
	cmd.PersistentFlags().String("catalog", "", "catalog database directory (config key tape.catalog; default LIBRARY/catalog)")
	_ = a.v.BindPFlag("tape.library", cmd.PersistentFlags().Lookup("library"))
	_ = a.v.BindPFlag("tape.catalog", cmd.PersistentFlags().Lookup("catalog"))
	cmd.AddCommand(a.tapeLibraryCmd(), a.tapeLabelCmd(), a.tapeWriteCmd(), a.tapeExportCmd(), a.tapeImportCmd(),
		a.tapeInventoryCmd(), a.tapeRestoreCmd(), a.tapeCatalogCmd(), a.tapeCheckCmd())
	return cmd
}

func (a *app) tapeLibraryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "library", Short: "Create and inspect the tape library"}
	var gen, capS, ewS, prefix string
	var slots, drives, mail, carts, worm int
	initC := &cobra.Command{
		Use:   "init --library DIR --generation LTO-9 --slots N --drives N --mailslots N",
		Short: "Create a virtual tape library with blank cartridges",
		Long: "Create a virtual library in DIR: library.json (slots, drives, mail slots) and one cartridge file per tape,\n" +
			"named after its barcode (DRP001L9.tape ...). --capacity shrinks the cartridges below the generation's native\n" +
			"capacity (for drills and tests); --early-warning sets the early-warning zone before the end of the medium.",
		Example: "  drpipe tape library init --library /srv/vtl --generation LTO-9 --slots 24 --drives 2 --mailslots 4\n" +
			"  drpipe tape library init --library /tmp/vtl --generation LTO-6 --slots 8 --drives 1 --capacity 64MiB --worm 2",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := a.libraryDir()
			if err != nil {
				return err
			}
			g, err := tape.ParseGeneration(gen)
			if err != nil {
				return usageError{err}
			}
			c := tape.VirtualConfig{Generation: g, Slots: slots, Drives: drives, MailSlots: mail, Cartridges: carts, WORM: worm, Prefix: prefix}
			if capS != "" {
				if c.Capacity, err = parseSize(capS); err != nil {
					return usagef("--capacity: %w", err)
				}
			}
			if ewS != "" {
				if c.EarlyWarning, err = parseSize(ewS); err != nil {
					return usagef("--early-warning: %w", err)
				}
			}
			made, err := tape.InitVirtual(dir, c)
			if err != nil {
				return usageError{err}
			}
			if a.jsonOut() {
				return a.printJSON(map[string]any{"library": dir, "generation": g.String(), "cartridges": made})
			}
			a.printf("created virtual %s library %s: %d slots, %d drives, %d mail slots, %d blank cartridges (%s ... %s)\n",
				g, dir, slots, drives, mail, len(made), first(made), last(made))
			a.printf("next: label tapes for a pool with 'drpipe tape label --library %s --pool NAME --count N'\n", dir)
			return nil
		},
	}
	f := initC.Flags()
	f.StringVar(&gen, "generation", "LTO-9", "LTO generation: LTO-6 ... LTO-10")
	f.IntVar(&slots, "slots", 24, "storage slots")
	f.IntVar(&drives, "drives", 1, "drives")
	f.IntVar(&mail, "mailslots", 4, "import/export mail slots")
	f.IntVar(&carts, "cartridges", 0, "blank cartridges to create (default: one per slot)")
	f.IntVar(&worm, "worm", 0, "how many of the cartridges are WORM")
	f.StringVar(&capS, "capacity", "", "cartridge capacity (default: the generation's native capacity)")
	f.StringVar(&ewS, "early-warning", "", "early-warning zone before the end of the medium (default 2% of the capacity)")
	f.StringVar(&prefix, "prefix", "DRP", "barcode prefix")

	status := &cobra.Command{
		Use:     "status --library DIR",
		Short:   "Show slots, drives and mail slots with their cartridges",
		Example: "  drpipe tape library status --library /srv/vtl --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			ctx := cmd.Context()
			inv, err := te.lib.Inventory(ctx)
			if err != nil {
				return err
			}
			outside, _ := te.lib.Outside()
			capy, ew := te.lib.Capacity()
			if a.jsonOut() {
				return a.printJSON(map[string]any{"generation": te.lib.Generation().String(), "capacity": capy, "early_warning": ew, "inventory": inv, "outside": outside})
			}
			a.printf("virtual %s library %s, cartridges of %s (early warning %s before the end)\n", te.lib.Generation(), te.lib.Dir(), humanBytes(capy), humanBytes(ew))
			tw := a.table()
			fmt.Fprintln(tw, "ELEMENT\tBARCODE\tUSED\tFLAGS")
			for _, l := range [][]tape.ElementStatus{inv.Drives, inv.Slots, inv.MailSlots} {
				for _, e := range l {
					used, flags := "", ""
					if e.Full {
						if ci, err := te.lib.Cartridge(e.Barcode); err == nil {
							used = humanBytes(ci.Used)
							if ci.WORM {
								flags += "WORM "
							}
							if ci.WriteProtected {
								flags += "write-protected"
							}
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Element, e.Barcode, used, flags)
				}
			}
			tw.Flush()
			if len(outside) > 0 {
				a.printf("outside the library (shelf/vault): %s\n", strings.Join(outside, " "))
			}
			return nil
		},
	}
	var off bool
	protect := &cobra.Command{
		Use:     "protect --library DIR BARCODE... [--off]",
		Short:   "Set (or with --off clear) the write-protect tab of virtual cartridges",
		Example: "  drpipe tape library protect --library /srv/vtl DRP003L9",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			for _, bc := range args {
				if err := te.lib.SetWriteProtect(bc, !off); err != nil {
					return err
				}
			}
			if !a.jsonOut() {
				a.printf("write protection %s on %s\n", map[bool]string{true: "cleared", false: "set"}[off], strings.Join(args, " "))
			}
			return nil
		},
	}
	protect.Flags().BoolVar(&off, "off", false, "clear the write-protect tab")
	cmd.AddCommand(initC, status, protect)
	return cmd
}

func first(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return s[len(s)-1]
}

func (a *app) tapeLabelCmd() *cobra.Command {
	var poolName string
	var count int
	var barcodes []string
	var force bool
	cmd := &cobra.Command{
		Use:   "label --library DIR --pool P [--count N] [--barcode B]... [--force]",
		Short: "Label blank cartridges for a media pool",
		Long: "Write a volume label (barcode, pool, a new volume id) on blank cartridges in the library and record them as\n" +
			"scratch tapes of the pool. Tapes holding unexpired sets are never relabelled; foreign tapes and drpipe tapes\n" +
			"the catalog does not know are refused unless --force is given.",
		Example: "  drpipe tape label --library /srv/vtl --pool offsite --count 6\n  drpipe tape label --library /srv/vtl --pool vault --barcode DRP010LZ",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if poolName == "" {
				return usagef("label needs --pool NAME")
			}
			if count < 1 {
				return usagef("--count %d: give how many blank cartridges to label, 1 or more", count)
			}
			p, err := a.pool(poolName)
			if err != nil {
				return err
			}
			now, err := tapeNow()
			if err != nil {
				return err
			}
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			res, err := tape.LabelTapes(cmd.Context(), te.lib, te.cat, tape.LabelOptions{Pool: p, Count: count, Barcodes: barcodes, Force: force, Now: func() time.Time { return now }})
			if res != nil {
				if a.jsonOut() {
					if jerr := a.printJSON(res); jerr != nil {
						return jerr
					}
				} else {
					a.printf("labelled %d tapes for pool %s: %s\n", len(res.Labeled), p.Name, strings.Join(res.Labeled, " "))
					var sk []string
					for bc := range res.Skipped {
						sk = append(sk, bc)
					}
					sort.Strings(sk)
					for _, bc := range sk {
						a.printf("skipped %s: %s\n", bc, res.Skipped[bc])
					}
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&poolName, "pool", "", "media pool (policy from tape.pools.NAME in the config; built-in GFS default otherwise)")
	cmd.Flags().IntVar(&count, "count", 1, "how many blank cartridges to label")
	cmd.Flags().StringArrayVar(&barcodes, "barcode", nil, "label exactly this cartridge (repeatable)")
	cmd.Flags().BoolVar(&force, "force", false, "also relabel foreign tapes and drpipe tapes unknown to the catalog")
	return cmd
}

func (a *app) tapeWriteCmd() *cobra.Command {
	var poolName, levelS string
	var parity int
	cmd := &cobra.Command{
		Use:   "write --library DIR --repo R --pool P [--parity M] [--level L] [SNAPSHOT...]",
		Short: "Write snapshots to a new tape set of a pool",
		Long: "Write a new media set holding the given snapshots (default: the latest snapshot of every host) with\n" +
			"everything needed to restore them from the tapes alone. --parity M spreads each pack's erasure-coded shards\n" +
			"over the set's tapes so that any M tapes can be lost (M cannot exceed the repository's parity shards; a 4+2\n" +
			"repository needs 3 tapes per set for M=1 and 6 for M=2). The level (daily/weekly/monthly/yearly) follows the\n" +
			"pool's GFS policy unless --level names one the pool keeps. Objects are streamed through a bounded buffer; the time the drives\n" +
			"waited for data is reported as starvation. An object cut by the end of a tape is written whole on the next.",
		Example: "  drpipe tape write --library /srv/vtl --repo /srv/drpipe/repo --pool offsite --parity 1\n" +
			"  drpipe tape write --library /srv/vtl --repo /srv/drpipe/repo --pool vault --level monthly 3fa2c1d9 --json",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if poolName == "" {
				return usagef("write needs --pool NAME")
			}
			p, err := a.pool(poolName)
			if err != nil {
				return err
			}
			var wo tape.WriteOptions
			if err := a.tapeWriteSettings(&wo); err != nil {
				return err
			}
			parityFrom := "config key tape.parity (DRPIPE_TAPE_PARITY)"
			if cmd.Flags().Changed("parity") {
				if parity < 0 {
					return usagef("--parity %d: give the number of tapes of a set that may be lost, 0 or more", parity)
				}
				wo.Parity, parityFrom = parity, "--parity"
			}
			parity = wo.Parity
			now, err := tapeNow()
			if err != nil {
				return err
			}
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			if ec := r.Config().EC; parity > ec.M {
				return usagef("%s %d exceeds the repository's erasure coding %s: a tape set can lose at most %d tapes; "+
					"lower it or create a repository with more parity shards (drpipe init --ec %d+%d)", parityFrom, parity, ec, ec.M, ec.K, parity)
			}
			snaps, err := selectSnapshots(ctx, r, args)
			if err != nil {
				return err
			}
			level := tape.Level(levelS)
			if levelS != "" {
				if level, err = tape.ParseLevel(levelS); err != nil {
					return usageError{err}
				}
			} else {
				sets, err := te.cat.Sets()
				if err != nil {
					return err
				}
				hist := tape.PoolHistory(sets, p.Name)
				if level, err = p.LevelFor(now, hist); err != nil {
					return usageError{err}
				}
			}
			plan, err := tape.BuildPlan(ctx, r, snaps)
			if err != nil {
				return err
			}
			prog := a.startTapeProgress("tape write")
			wo.Pool, wo.Level, wo.Now, wo.Progress = p, level, func() time.Time { return now }, prog
			res, err := tape.WriteSet(ctx, te.lib, te.cat, r.Backend(), plan, wo)
			prog.Stop()
			if res == nil {
				return err
			}
			return a.printWrite(res, snaps, err)
		},
	}
	f := cmd.Flags()
	f.StringVar(&poolName, "pool", "", "media pool to write to")
	f.IntVar(&parity, "parity", 1, "tapes of the set that may be lost (config key tape.parity)")
	f.StringVar(&levelS, "level", "", "force the GFS level: daily, weekly, monthly or yearly")
	return cmd
}

// tapeWriteSettings sets o's record size, read-ahead buffer and data
// file size from tape.record_size, tape.buffer and tape.file_size; a value
// that is no size, or a record size outside what drives take, is a usage
// error naming the key.
func (a *app) tapeWriteSettings(o *tape.WriteOptions) error {
	parity := a.v.GetInt("tape.parity")
	if parity < 0 {
		return usagef("config key tape.parity (DRPIPE_TAPE_PARITY) %d: give the number of tapes of a set that may be lost, 0 or more", parity)
	}
	o.Parity = parity
	recSize, err := parseSize(a.v.GetString("tape.record_size"))
	if err != nil {
		return usagef("tape.record_size: %w", err)
	}
	if recSize < tape.MinRecordSize || recSize > tape.MaxRecordSize {
		return usagef("config key tape.record_size (DRPIPE_TAPE_RECORD_SIZE) %s: must be from %s to %s",
			a.v.GetString("tape.record_size"), humanBytes(tape.MinRecordSize), humanBytes(tape.MaxRecordSize))
	}
	bufSize, err := parseSize(a.v.GetString("tape.buffer"))
	if err != nil {
		return usagef("tape.buffer: %w", err)
	}
	fileSize, err := parseSize(a.v.GetString("tape.file_size"))
	if err != nil {
		return usagef("tape.file_size: %w", err)
	}
	o.RecordSize, o.BufferSize, o.FileSize = int(recSize), bufSize, fileSize
	return nil
}

func (a *app) printWrite(res *tape.WriteResult, snaps []*repo.Snapshot, werr error) error {
	s := res.Set
	rate := float64(res.ObjectBytes) / max(res.Duration.Seconds(), 0.001)
	if a.jsonOut() {
		var ids []string
		for _, sn := range snaps {
			ids = append(ids, sn.ID().String())
		}
		out := map[string]any{"set_id": s.ID, "pool": s.Pool, "level": s.Level, "created": s.Created, "expires": s.Expires,
			"columns": s.Columns, "parity": s.Parity, "per_tape": s.PerTape, "tapes": s.Tapes, "complete": s.Complete,
			"snapshots": ids, "objects": res.Objects, "bytes": res.ObjectBytes, "duration_s": res.Duration.Seconds(),
			"rate_bytes_per_s": rate, "starved_s": res.Starved.Seconds(), "rewritten_objects": res.Rewritten, "no_catalog_on_tape": res.NoCatalog}
		if werr != nil {
			out["error"] = werr.Error()
		}
		if jerr := a.printJSON(out); jerr != nil {
			return jerr
		}
		return werr
	}
	state := "complete"
	switch {
	case !s.Complete && len(s.Tapes) == 0 && s.Aborted == "":
		state = "NOT WRITTEN (nothing reached a tape)"
	case !s.Complete && a.poolWORM(s.Pool):
		state = "INCOMPLETE (WORM: its tapes are never reused; what reached them can still be restored)"
	case !s.Complete:
		state = "INCOMPLETE (its tapes go back to the pool when it has no scratch or expired tape left; what reached them can still be restored until then)"
	}
	a.printf("tape set %s (%s) %s: pool %s, level %s, expires %s\n", s.ID[:8], s.ID, state, s.Pool, s.Level, s.Expires.Format("2006-01-02"))
	a.printf("  %d snapshots, %d objects, %s in %.1fs (%s/s), drives starved %.2fs\n", len(snaps), res.Objects, humanBytes(res.ObjectBytes), res.Duration.Seconds(), humanBytes(int64(rate)), res.Starved.Seconds())
	a.printf("  layout: %d columns, survives the loss of any %d tape(s) (at most %d shard(s) of a pack per tape)\n", s.Columns, s.Parity, s.PerTape)
	for _, t := range s.Tapes {
		a.printf("  tape %s  column %d #%d  %d objects  %s\n", t.Barcode, t.Column, t.ColumnSeq, t.Objects, humanBytes(t.Bytes))
	}
	if res.Rewritten > 0 {
		a.printf("  %d objects reached the end of a tape and were written whole on the next one\n", res.Rewritten)
	}
	if len(res.NoCatalog) > 0 {
		a.printf("  no room for the on-tape catalog on %s (the catalog database has it)\n", strings.Join(res.NoCatalog, " "))
	}
	return werr
}

// selectSnapshots resolves the arguments, or the latest of each host.
func selectSnapshots(ctx context.Context, r *repo.Repository, args []string) ([]*repo.Snapshot, error) {
	if len(args) > 0 {
		var out []*repo.Snapshot
		seen := map[string]bool{}
		for _, a := range args {
			s, err := r.FindSnapshot(ctx, a, "")
			if err != nil {
				return nil, err
			}
			if !seen[s.ID().String()] {
				seen[s.ID().String()] = true
				out = append(out, s)
			}
		}
		return out, nil
	}
	all, err := r.ListSnapshots(ctx)
	if err != nil && len(all) == 0 {
		return nil, err
	}
	latest := map[string]*repo.Snapshot{}
	for _, s := range all {
		if l := latest[s.Host]; l == nil || !s.Time.Before(l.Time) {
			latest[s.Host] = s
		}
	}
	var out []*repo.Snapshot
	for _, s := range latest {
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s has no snapshots to write to tape", repo.ErrNoSnapshot, r.Backend().Location())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, nil
}

func (a *app) poolLookup() func(string) (tape.Pool, error) {
	return func(n string) (tape.Pool, error) { return a.pool(n) }
}

func (a *app) printCourier(title string, items []tape.CourierItem) {
	if len(items) == 0 {
		return
	}
	a.printf("%s:\n", title)
	tw := a.table()
	fmt.Fprintln(tw, "  BARCODE\tPOOL\tLEVEL\tSET\tWRITTEN\tEXPIRES")
	for _, it := range items {
		set := it.SetID
		if len(set) > 8 {
			set = set[:8]
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", it.Barcode, it.Pool, it.Level, set, day(it.Created), day(it.Expires))
	}
	tw.Flush()
}

func day(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("2006-01-02")
}

func (a *app) tapeExportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export --library DIR",
		Short: "Move the tapes due offsite to the mail slots and print the courier list",
		Long: "Following each pool's rotation, moves the tapes of complete sets whose level goes offsite into free mail slots\n" +
			"and prints the courier list: tapes to take offsite now, tapes still waiting for a free mail slot, and the\n" +
			"recall list of offsite tapes whose sets expired (ask the vault to send them back). Tapes left in the mail\n" +
			"slots by an earlier export are taken by the courier first (virtual library).",
		Example: "  drpipe tape export --library /srv/vtl\n  drpipe tape export --library /srv/vtl --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now, err := tapeNow()
			if err != nil {
				return err
			}
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			ctx := cmd.Context()
			if err := courierTakes(ctx, te); err != nil {
				return err
			}
			res, err := tape.Export(ctx, te.lib, te.cat, a.poolLookup(), now)
			if err != nil {
				return err
			}
			if a.jsonOut() {
				return a.printJSON(res)
			}
			if len(res.Exported)+len(res.Waiting)+len(res.InTransit) == 0 {
				a.printf("no tapes are due offsite\n")
			}
			a.printCourier(fmt.Sprintf("courier list: take these %d tapes offsite (now in the mail slots)", len(res.Exported)), res.Exported)
			a.printCourier("still waiting in the mail slots from an earlier export", res.InTransit)
			a.printCourier("due offsite but no free mail slot: run export again after the mail slots were emptied", res.Waiting)
			a.printCourier("recall from the vault (their sets expired)", res.Recall)
			return nil
		},
	}
	return cmd
}

// courierTakes empties mail slots of tapes exported earlier (the virtual
// library's stand-in for the courier opening the mail slot).
func courierTakes(ctx context.Context, te *tapeEnv) error {
	inv, err := te.lib.Inventory(ctx)
	if err != nil {
		return err
	}
	transit := false
	for _, ms := range inv.MailSlots {
		if !ms.Full {
			continue
		}
		m, err := te.cat.Media(ms.Barcode)
		if err != nil {
			return err
		}
		if m != nil && m.Location == tape.LocTransit {
			transit = true
		}
	}
	if !transit {
		return nil
	}
	// Take out only transit tapes: put back anything else afterwards.
	taken, err := te.lib.TakeMailSlots()
	if err != nil {
		return err
	}
	for _, bc := range taken {
		m, _ := te.cat.Media(bc)
		if m == nil || m.Location != tape.LocTransit {
			if _, err := te.lib.Insert(bc); err != nil {
				return err
			}
		}
	}
	return tape.Reconcile(ctx, te.lib, te.cat)
}

func (a *app) tapeImportCmd() *cobra.Command {
	var recalled bool
	cmd := &cobra.Command{
		Use:   "import --library DIR [BARCODE...] [--recalled]",
		Short: "Take returning tapes in through the mail slots; expired ones become scratch",
		Long: "Moves the cartridges in the mail slots into free storage slots and updates the catalog: tapes whose sets\n" +
			"expired become scratch (writable again; expired WORM tapes are retired), others keep their sets. With the\n" +
			"virtual library, BARCODE arguments (or --recalled: every tape on the recall list) are first put into the\n" +
			"mail slots from outside the library, as the operator does; exported tapes still in the mail slots leave with\n" +
			"the courier.",
		Example: "  drpipe tape import --library /srv/vtl DRP004L9 DRP005L9\n  drpipe tape import --library /srv/vtl --recalled",
		RunE: func(cmd *cobra.Command, args []string) error {
			now, err := tapeNow()
			if err != nil {
				return err
			}
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			ctx := cmd.Context()
			if err := courierTakes(ctx, te); err != nil {
				return err
			}
			want := append([]string(nil), args...)
			if recalled {
				rec, err := tape.DueForRecall(te.cat, now)
				if err != nil {
					return err
				}
				for _, it := range rec {
					want = append(want, it.Barcode)
				}
			}
			res := &tape.ImportResult{}
			for len(want) > 0 {
				batch := 0
				for len(want) > 0 {
					if _, err := te.lib.Insert(want[0]); err != nil {
						if errors.Is(err, tape.ErrInLibrary) {
							want = want[1:]
							continue
						}
						if strings.Contains(err.Error(), "mail slot is full") && batch > 0 {
							break
						}
						return usageError{err}
					}
					want = want[1:]
					batch++
				}
				r, err := tape.Import(ctx, te.lib, te.cat, now)
				if err != nil {
					return err
				}
				res.Scratch = append(res.Scratch, r.Scratch...)
				res.Kept = append(res.Kept, r.Kept...)
				res.Retired = append(res.Retired, r.Retired...)
				res.Unknown = append(res.Unknown, r.Unknown...)
			}
			if len(args) == 0 && !recalled {
				r, err := tape.Import(ctx, te.lib, te.cat, now)
				if err != nil {
					return err
				}
				res = r
			}
			if a.jsonOut() {
				return a.printJSON(res)
			}
			a.printf("imported %d tapes: %d scratch (expired, writable again), %d still holding unexpired sets, %d retired WORM, %d unknown\n",
				len(res.Scratch)+len(res.Kept)+len(res.Retired)+len(res.Unknown), len(res.Scratch), len(res.Kept), len(res.Retired), len(res.Unknown))
			for _, l := range []struct {
				n string
				b []string
			}{{"scratch", res.Scratch}, {"kept", res.Kept}, {"retired", res.Retired}, {"unknown (label them or rebuild the catalog)", res.Unknown}} {
				if len(l.b) > 0 {
					a.printf("  %s: %s\n", l.n, strings.Join(l.b, " "))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&recalled, "recalled", false, "insert every tape on the recall list (virtual library)")
	return cmd
}

func (a *app) tapeInventoryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "inventory --library DIR",
		Short:   "List every known cartridge with its pool, set, level, expiry and location",
		Example: "  drpipe tape inventory --library /srv/vtl --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now, err := tapeNow()
			if err != nil {
				return err
			}
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			ctx := cmd.Context()
			if err := tape.Reconcile(ctx, te.lib, te.cat); err != nil {
				return err
			}
			all, err := te.cat.AllMedia()
			if err != nil {
				return err
			}
			inv, _ := te.lib.Inventory(ctx)
			type row struct {
				*tape.Media
				Element string     `json:"element,omitempty"`
				Level   tape.Level `json:"level,omitempty"`
				Expires time.Time  `json:"expires,omitzero"`
				Expired bool       `json:"expired"`
			}
			var rows []row
			for _, m := range all {
				r := row{Media: m}
				if e, ok := inv.Find(m.Barcode); ok {
					r.Element = e.String()
				}
				if m.SetID != "" {
					if s, _ := te.cat.Set(m.SetID); s != nil {
						r.Level, r.Expires, r.Expired = s.Level, s.Expires, s.Expired(now)
					}
				}
				rows = append(rows, r)
			}
			if a.jsonOut() {
				if rows == nil {
					rows = []row{}
				}
				return a.printJSON(rows)
			}
			tw := a.table()
			fmt.Fprintln(tw, "BARCODE\tPOOL\tSTATE\tSET\tCOL\tLEVEL\tEXPIRES\tLOCATION\tELEMENT")
			for _, r := range rows {
				set, col := "-", "-"
				if r.SetID != "" {
					set, col = r.SetID[:8], fmt.Sprintf("%d.%d", r.Column, r.ColumnSeq)
				}
				exp := day(r.Expires)
				if r.Expired {
					exp += " (expired)"
				}
				lvl := string(r.Level)
				if lvl == "" {
					lvl = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Barcode, r.Pool, r.State, set, col, lvl, exp, r.Location, r.Element)
			}
			tw.Flush()
			a.printf("%d tapes\n", len(rows))
			return nil
		},
	}
	return cmd
}

func (a *app) tapeRestoreCmd() *cobra.Command {
	var target, setID, work string
	var paths []string
	var keep bool
	cmd := &cobra.Command{
		Use:   "restore --library DIR SNAPSHOT|latest --target DIR [--set ID] [--path P]...",
		Short: "Restore a snapshot from tape alone",
		Long: "Restores a snapshot using only the tapes and the password: the catalog names the set and its tapes; drpipe\n" +
			"mounts the fewest tapes that hold K shards of every pack the snapshot needs (data shards preferred), in\n" +
			"column order, reads the repository config, keys, indexes and those shards into a temporary repository\n" +
			"(--work, removed afterwards), rebuilds packs whose data shards came from lost tapes, and restores from it.\n" +
			"When too many tapes are missing, the error names the tapes to bring back. No --repo is needed.",
		Example: "  drpipe tape restore --library /srv/vtl latest --target /restore\n" +
			"  drpipe tape restore --library /srv/vtl 3fa2c1d9 --target /restore --path /var/lib/libvirt/images/dc01.qcow2",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if target == "" {
				return usagef("restore needs --target DIR")
			}
			df, err := a.diskFormatFlag(cmd) // a usage error before a tape is touched
			if err != nil {
				return err
			}
			created := true // the work directory is the restore's own
			if work != "" {
				// The restore fills work/repo and work/cache and removes
				// them afterwards: a directory holding anything else
				// (a repository among it) is not given to it.
				ents, err := os.ReadDir(work)
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				created = err != nil
				if len(ents) > 0 {
					return usagef("--work %s is not empty: give a new or empty directory for the repository read from tape", work)
				}
			}
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			if err := tape.Reconcile(ctx, te.lib, te.cat); err != nil {
				return err
			}
			refs, err := tape.FindSnapshots(te.cat, args[0], setID)
			if err != nil {
				return err
			}
			inv, err := te.lib.Inventory(ctx)
			if err != nil {
				return err
			}
			in := map[string]bool{}
			for _, bc := range inv.Barcodes() {
				in[bc] = true
			}
			pw, err := a.password("repository password: ", false)
			if err != nil {
				return err
			}
			if work == "" {
				if work, err = os.MkdirTemp("", "drpipe-tape-restore-"); err != nil {
					return err
				}
			} else if err := os.MkdirAll(work, 0o700); err != nil {
				return err
			}
			if !keep {
				// Only what the restore put there goes, and the directory
				// it made once empty: a --target inside it stays.
				defer func() {
					os.RemoveAll(filepath.Join(work, "repo"))
					os.RemoveAll(filepath.Join(work, "cache"))
					if created {
						os.Remove(work)
					}
				}()
			}
			be, err := tape.NewScratch(filepath.Join(work, "repo"))
			if err != nil {
				return err
			}
			defer be.Close()
			start := time.Now()
			prog := a.startTapeProgress("tape read")
			rres, err := tape.Restore(ctx, te.lib, te.cat, refs, func(bc string) bool { return in[bc] }, be, prog)
			prog.Stop()
			if err != nil {
				return err
			}
			plan, rebuilt := rres.Plan, rres.Rebuilt
			readBytes := prog.bytes.Load()
			o, err := a.repoOptions(pw)
			if err != nil {
				return err
			}
			o.CacheDir = filepath.Join(work, "cache")
			r, err := repo.Open(ctx, be, o)
			if err != nil {
				return err
			}
			defer r.Close()
			sn, err := r.LoadSnapshot(ctx, plan.Ref.Snapshot.ID)
			if err != nil {
				return err
			}
			cnt := &pipeline.Counter{Start: time.Now()}
			var bar *progressBar
			if a.progressEnabled() {
				bar = startProgress(a.stderr, cnt, "restore")
			}
			res, err := pipeline.Restore(ctx, r, sn, pipeline.RestoreOptions{Target: target, Include: paths, Progress: cnt, Workers: a.v.GetInt("restore.workers"), DiskFormat: df})
			bar.Stop()
			if res == nil {
				return err
			}
			var mounted []string
			for _, t := range plan.Tapes {
				mounted = append(mounted, t.Barcode)
			}
			if a.jsonOut() {
				failed, notices := restoreIssuesJSON(res)
				if jerr := a.printJSON(map[string]any{"snapshot_id": sn.ID(), "set_id": plan.Ref.Set.ID, "tapes_mounted": mounted,
					"tapes_unavailable": append([]string{}, plan.Unavailable...), "tapes_failed": rres.Failed, "packs": plan.Packs, "packs_rebuilt": rebuilt, "read_s": rres.ReadTime.Seconds(), "rebuild_s": rres.RebuildTime.Seconds(), "bytes_read_from_tape": readBytes,
					"target": target, "files": res.Files, "dirs": res.Dirs, "bytes_total": res.BytesTotal, "bytes_written": res.BytesWritten, "duration_s": time.Since(start).Seconds(), "failed": failed, "notices": notices}); jerr != nil {
					return jerr
				}
				return err
			}
			a.printf("restored snapshot %s (host %s, %s) from tape set %s to %s\n", sn.ID().Short(), sn.Host, sn.Time.Format("2006-01-02 15:04"), plan.Ref.Set.ID[:8], target)
			a.printf("  mounted %d tapes: %s\n", len(mounted), strings.Join(mounted, " "))
			a.printf("  read %s from tape in %.1fs (%s/s); rebuilt %d packs from parity in %.1fs\n", humanBytes(readBytes), rres.ReadTime.Seconds(),
				humanBytes(int64(float64(readBytes)/max(rres.ReadTime.Seconds(), 0.001))), rebuilt, rres.RebuildTime.Seconds())
			for bc, why := range rres.Failed {
				a.printf("  tape %s could not be read and was planned around: %s\n", bc, why)
			}
			if len(plan.Unavailable) > 0 {
				a.printf("  not in the library: %s\n", strings.Join(plan.Unavailable, " "))
			}
			a.printf("  %d files, %d dirs, %s, %.1fs\n", res.Files, res.Dirs, humanBytes(res.BytesTotal), time.Since(start).Seconds())
			a.printRestoreIssues(res)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "directory to restore into")
	f.StringVar(&setID, "set", "", "restore from this set (id or prefix) instead of the newest holding the snapshot")
	f.StringArrayVar(&paths, "path", nil, "restore only this snapshot path (repeatable)")
	f.StringVar(&work, "work", "", "new or empty directory for the temporary repository read from tape (default: a temp dir)")
	f.BoolVar(&keep, "keep-work", false, "keep the temporary repository (it is a complete drpipe repository for the snapshot)")
	addDiskFormatFlag(cmd)
	return cmd
}

func (a *app) tapeCatalogCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "catalog", Short: "Maintain the tape catalog database"}
	var readData bool
	rebuild := &cobra.Command{
		Use:   "rebuild --library DIR [--read-data]",
		Short: "Rebuild the catalog database by scanning the tapes in the library",
		Long: "Reads every cartridge in the library: its labels, the set manifest and the tape's own catalog (or, when that\n" +
			"is missing, every data file) and rewrites the catalog database from them. Tapes outside the library are\n" +
			"not known afterwards; import them and rebuild again. --read-data reads and verifies every object.",
		Example: "  drpipe tape catalog rebuild --library /srv/vtl",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			prog := a.startTapeProgress("scan")
			res, err := tape.Rebuild(cmd.Context(), te.lib, te.cat, tape.ScanOptions{ReadData: readData}, prog)
			prog.Stop()
			if res == nil {
				return err
			}
			if a.jsonOut() {
				if jerr := a.printJSON(res); jerr != nil {
					return jerr
				}
			} else {
				a.printf("rebuilt the catalog in %s from %d tapes: %d sets\n", te.cat.Dir(), res.Tapes, res.Sets)
				if len(res.Scanned) > 0 {
					a.printf("  scanned object by object (no catalog file on tape): %s\n", strings.Join(res.Scanned, " "))
				}
				if len(res.Blank) > 0 {
					a.printf("  blank: %s\n", strings.Join(res.Blank, " "))
				}
				if len(res.Foreign) > 0 {
					a.printf("  foreign: %s\n", strings.Join(res.Foreign, " "))
				}
				for _, e := range res.Errors {
					a.printf("  error: %s\n", e)
				}
			}
			if err == nil && len(res.Errors) > 0 {
				err = fmt.Errorf("%d tapes could not be read", len(res.Errors))
			}
			return err
		},
	}
	rebuild.Flags().BoolVar(&readData, "read-data", false, "read and verify every object on every tape")
	cmd.AddCommand(rebuild)
	return cmd
}

func (a *app) tapeCheckCmd() *cobra.Command {
	var readData bool
	cmd := &cobra.Command{
		Use:   "check --library DIR [--read-data]",
		Short: "Verify the tape catalog (and with --read-data the tapes themselves)",
		Long: "Checks that every set's manifest and tape catalogs verify, that every pack of every snapshot has all its\n" +
			"shards on the set's tapes with no column holding more than the parity allows, that every tape carries the\n" +
			"metadata, and that media records agree. --read-data mounts every tape in the library and compares every\n" +
			"object's SHA-256 with the catalog. Exit code 1 when anything is wrong.",
		Example: "  drpipe tape check --library /srv/vtl --read-data",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			te, err := a.openTape()
			if err != nil {
				return err
			}
			defer te.close()
			prog := a.startTapeProgress("check")
			rep, err := tape.CheckCatalog(cmd.Context(), te.lib, te.cat, tape.CheckOptions{ReadData: readData, Progress: prog})
			prog.Stop()
			if err != nil {
				return err
			}
			if a.jsonOut() {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else {
				a.printf("checked %d sets, %d tapes, %d objects in the catalog", rep.Sets, rep.Tapes, rep.Objects)
				if readData {
					a.printf(", read %d tapes", rep.Read)
				}
				a.printf("\n")
				for _, w := range rep.Warnings {
					a.printf("warning: %s\n", w)
				}
				for _, e := range rep.Errors {
					a.printf("error: %s\n", e)
				}
				if rep.OK() {
					a.printf("no errors found\n")
				}
			}
			if !rep.OK() {
				return silentError{exitFailure}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&readData, "read-data", false, "read every tape in the library and compare with the catalog")
	return cmd
}
