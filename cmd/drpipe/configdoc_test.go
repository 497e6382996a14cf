package main

import (
	"maps"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spf13/viper"
)

// TestConfigKeysDocumented: every key drpipe reads at start-up is set in
// the example config file that documents it (keysDocumentedIn), so a key
// added to the code cannot go undocumented there. The other direction,
// that every key of the examples is known, is checked by loading them
// (TestBadInput).
func TestConfigKeysDocumented(t *testing.T) {
	files := map[string]*viper.Viper{}
	example := func(name string) *viper.Viper {
		if v, ok := files[name]; ok {
			return v
		}
		v := viper.New()
		v.SetConfigFile(filepath.Join("..", "..", name))
		if err := v.ReadInConfig(); err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		files[name] = v
		return v
	}
	var keys []string
	for _, m := range append([]map[string]any{configDefaults}, sectionDefaults...) {
		keys = slices.AppendSeq(keys, maps.Keys(m))
	}
	keys = slices.AppendSeq(keys, maps.Keys(s3Keys))
	keys = slices.AppendSeq(keys, maps.Keys(copyKeys))
	for _, k := range poolKeys {
		keys = append(keys, "tape.pools.offsite."+k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if name := keysDocumentedIn(k); !example(name).InConfig(k) {
			t.Errorf("config key %s is not in %s", k, name)
		}
	}
}
