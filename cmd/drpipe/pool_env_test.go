package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/drpipe/drpipe/tape"
)

// TestPoolFromEnvironment: a tape pool's keys come from the config file
// or from DRPIPE_TAPE_POOLS_NAME_KEY, which wins, as every other key
// does; a pool only the environment names works too; numbers are
// decimal ("010" is ten) and a value that is not a whole number (there,
// or 7.5 in the file) is a usage error naming the key, not a silent 0 or
// 7; "none" gives an empty offsite list.
func TestPoolFromEnvironment(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "pools.yaml", "tape:\n  pools:\n    vault:\n      daily: 0\n      weekly: 0\n      monthly: 0\n      yearly: 10\n      worm: true\n    half:\n      daily: 7.5\n")
	t.Setenv("DRPIPE_TAPE_POOLS_VAULT_YEARLY", "12")
	t.Setenv("DRPIPE_TAPE_POOLS_OFFSITE_DAILY", "3")
	t.Setenv("DRPIPE_TAPE_POOLS_OFFSITE_OFFSITE", "monthly,yearly")
	t.Setenv("DRPIPE_TAPE_POOLS_OFFSITE_WEEKLY_ON", "monday")
	t.Setenv("DRPIPE_TAPE_POOLS_BAD_WEEKLY", "four")
	t.Setenv("DRPIPE_TAPE_POOLS_BADWORM_WORM", "maybe")
	t.Setenv("DRPIPE_TAPE_POOLS_DECIMAL_DAILY", "010") // ten, not octal
	t.Setenv("DRPIPE_TAPE_POOLS_DECIMAL_WEEKLY", "08")
	t.Setenv("DRPIPE_TAPE_POOLS_DECIMAL_OFFSITE", "none") // the environment cannot give an empty list
	a := &app{v: viper.New()}
	cmd := &cobra.Command{}
	cmd.Flags().String("config", cfg, "")
	if err := a.loadConfig(cmd); err != nil {
		t.Fatal(err)
	}

	v, err := a.pool("vault")
	if err != nil {
		t.Fatal(err)
	}
	if v.Yearly != 12 || v.Daily != 0 || v.Monthly != 0 || !v.WORM {
		t.Errorf("vault: %+v, want yearly 12 (environment), daily and monthly 0 and WORM (file)", v)
	}
	o, err := a.pool("offsite")
	if err != nil {
		t.Fatal(err)
	}
	def := tape.DefaultPool("offsite")
	if o.Daily != 3 || o.Weekly != def.Weekly || o.WeeklyOn.String() != "Monday" || !slices.Equal(o.Offsite, []tape.Level{tape.LevelMonthly, tape.LevelYearly}) || o.WORM {
		t.Errorf("offsite: %+v, want daily 3, weekly_on monday, offsite monthly and yearly from the environment, the rest default", o)
	}
	if d, err := a.pool("decimal"); err != nil || d.Daily != 10 || d.Weekly != 8 || len(d.Offsite) != 0 {
		t.Errorf("decimal: %+v, %v; want daily 10, weekly 8 (decimal) and no offsite level", d, err)
	}
	for name, want := range map[string]string{"bad": "tape.pools.bad.weekly", "badworm": "tape.pools.badworm.worm", "half": "tape.pools.half.daily"} {
		if _, err := a.pool(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("pool %s: %v, want an error naming %s", name, err, want)
		}
	}
}
