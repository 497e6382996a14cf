package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/drpipe/drpipe/tape"
)

// loadTestConfig loads the configuration as drpipe does at start-up, from
// the config file cfg (none when empty) and the environment.
func loadTestConfig(t *testing.T, cfg string) (*app, error) {
	t.Helper()
	a := &app{v: viper.New()}
	cmd := &cobra.Command{}
	cmd.Flags().String("config", cfg, "")
	return a, a.loadConfig(cmd)
}

// TestNumberKeysAreDecimal: a whole number from the environment is read
// as the decimal number start-up checked it to be, by every command that
// reads the key: "010" is ten, not eight, and "08" eight, not a silent 0
// (tape.parity 0 writes tape sets without a parity tape).
func TestNumberKeysAreDecimal(t *testing.T) {
	cases := []struct {
		key, env, value string
		want            int
	}{
		{"tape.parity", "DRPIPE_TAPE_PARITY", "08", 8},
		{"replicate.connections", "DRPIPE_REPLICATE_CONNECTIONS", "010", 10},
		{"copy.workers", "DRPIPE_COPY_WORKERS", "009", 9},
		{"workers", "DRPIPE_WORKERS", " 12", 12},
	}
	for _, c := range cases {
		t.Setenv(c.env, c.value)
	}
	a, err := loadTestConfig(t, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if got := a.v.GetInt(c.key); got != c.want {
			t.Errorf("%s=%q: %s read as %d, want %d", c.env, c.value, c.key, got, c.want)
		}
	}
}

// TestTextKeyGivenAList: a list given to a key that takes one value (a
// host name, an endpoint) is a usage error naming the key, not read as
// empty and so replaced by the default (this machine's hostname, the AWS
// endpoint).
func TestTextKeyGivenAList(t *testing.T) {
	dir := t.TempDir()
	for key, yaml := range map[string]string{
		"host":        "host: [hv01, hv02]\n",
		"compression": "compression: [max]\n",
		"site.repo":   "site:\n  repo: [/srv/a]\n",
		"s3.endpoint": "s3:\n  endpoint: [https://s3.example.com]\n",
	} {
		cfg := writeFile(t, dir, key+".yaml", yaml)
		if _, err := loadTestConfig(t, cfg); err == nil || !strings.Contains(err.Error(), "config key "+key) {
			t.Errorf("%s given a list: %v, want a usage error naming config key %s", key, err, key)
		}
	}
	cfg := writeFile(t, dir, "ok.yaml", "host: 42\nbackup:\n  tags: [a, b]\ns3:\n  endpoint: https://s3.example.com\n")
	if a, err := loadTestConfig(t, cfg); err != nil || a.v.GetString("host") != "42" {
		t.Errorf("host 42, tags as a list: %v; want host \"42\" and no error", err)
	}
}

// TestWorkerCountsAreBounded: workers and restore.workers out of range
// are usage errors naming the key: a negative count is not quietly the
// default, and a count in the millions does not start a goroutine each,
// taking the host's memory before the first byte is read.
func TestWorkerCountsAreBounded(t *testing.T) {
	for _, c := range []struct{ env, value string }{
		{"DRPIPE_WORKERS", "100000000"},
		{"DRPIPE_WORKERS", "-4"},
		{"DRPIPE_RESTORE_WORKERS", "1025"},
		{"DRPIPE_RESTORE_WORKERS", "-1"},
	} {
		t.Run(c.env+"="+c.value, func(t *testing.T) {
			t.Setenv(c.env, c.value)
			if _, err := loadTestConfig(t, ""); err == nil || !strings.Contains(err.Error(), c.env) {
				t.Errorf("%v, want a usage error naming %s", err, c.env)
			}
		})
	}
	t.Setenv("DRPIPE_WORKERS", "1024")
	t.Setenv("DRPIPE_RESTORE_WORKERS", "0")
	if _, err := loadTestConfig(t, ""); err != nil {
		t.Errorf("workers 1024, restore.workers 0 (the default): %v", err)
	}
}

// TestSizesParseWhole: a size is read whole or refused, never cut short at
// the first letter it does not know: "18TB" (how tape capacities are
// written) is 18 TB, not 18 bytes, "2Gi" two GiB, not 2 bytes (a
// site.max_object_size that refuses every object), and "10x", "1,5G" or
// "nan" are errors, not 10 bytes, 1 GiB or a negative size.
func TestSizesParseWhole(t *testing.T) {
	for s, want := range map[string]int64{
		"18TB": 18e12, "16MiB": 16 << 20, "2Gi": 2 << 30, "512k": 512 << 10, "1.5G": 3 << 29, "4096": 4096, "10 MiB": 10 << 20,
	} {
		if n, err := parseSize(s); err != nil || n != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, n, err, want)
		}
	}
	for _, s := range []string{"10x", "1,5G", "16MiB of cache", "nan", "inf", "1e30T", "-1G", ""} {
		if n, err := parseSize(s); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", s, n)
		}
	}
	t.Setenv("DRPIPE_TAPE_FILE_SIZE", "1TB")
	a, err := loadTestConfig(t, "")
	if err != nil {
		t.Fatal(err)
	}
	var o tape.WriteOptions
	if err := a.tapeWriteSettings(&o); err != nil || o.FileSize != 1e12 {
		t.Errorf("DRPIPE_TAPE_FILE_SIZE=1TB: file size %d, %v; want 1e12 bytes", o.FileSize, err)
	}
}

// TestConfigFileAnyExtensionIsYAML: the config file is YAML whatever its
// name ends in (drpipe.conf, drpipe.cfg), as --help says, instead of
// refused as an "Unsupported Config Type".
func TestConfigFileAnyExtensionIsYAML(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"drpipe.conf", "drpipe.cfg", "drpipe"} {
		cfg := writeFile(t, dir, name, "host: hv07\nbackup:\n  tags: [nightly]\n")
		a, err := loadTestConfig(t, cfg)
		if err != nil || a.v.GetString("host") != "hv07" {
			t.Errorf("%s: %v, host %q", name, err, func() string {
				if a == nil {
					return ""
				}
				return a.v.GetString("host")
			}())
		}
	}
}
