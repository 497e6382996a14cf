package main

import (
	"bufio"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cast"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"golang.org/x/term"

	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// app carries the parsed global configuration to the subcommands.
type app struct {
	v      *viper.Viper
	stdout io.Writer
	stderr io.Writer
	stdin  io.Reader
	// skipBadIndex opens repositories with repo.Options.SkipUnreadableIndex
	// (check and repair, which report and replace unreadable index objects).
	skipBadIndex bool
	// root is the root command; its persistent flags are the global ones.
	root *cobra.Command
	// jsonLines makes printJSON write each value on one line (NDJSON, for
	// commands that print a stream of events: replicate --watch).
	jsonLines bool
}

// newRootCmd builds the command tree; the app it returns holds the
// configuration once a command has run (exitCode's --json).
func newRootCmd() (*cobra.Command, *app) {
	a := &app{v: viper.New(), stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	root := &cobra.Command{
		Use:           "drpipe",
		Short:         "Disaster-recovery replication and offsite tiering for virtualised hosts",
		Long:          "drpipe backs up VM disk images, VM configuration and virtual-network setup into an encrypted,\ndeduplicated, erasure-coded repository and replicates it to a DR site, cloud buckets and tape.",
		Version:       version + " (" + runtime.Version() + ", zstd encoder: " + repo.ZstdEncoder + "; decoder: " + repo.ZstdDecoder + ")",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.loadConfig(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.String("config", "", "config file (YAML); every key can also be set as DRPIPE_<SECTION>_<KEY>")
	pf.String("repo", "", "repository location: a directory path or s3://bucket/prefix (config key repo, env DRPIPE_REPO)")
	pf.String("password-file", "", "file holding the repository password (env DRPIPE_PASSWORD holds the password itself)")
	pf.String("cache-dir", "", "local cache directory (default ~/.cache/drpipe)")
	pf.Bool("json", false, "print machine-readable JSON")
	pf.Bool("no-progress", false, "never draw progress, even on a terminal")
	a.root = root
	// --version with --json prints JSON, as every command does. The
	// template runs before the configuration is read: only the flag counts.
	cobra.AddTemplateFunc("drpipeVersion", func(c *cobra.Command) (string, error) {
		if j, _ := c.Flags().GetBool("json"); !j {
			return c.DisplayName() + " version " + c.Version + "\n", nil
		}
		return "", a.printJSON(struct {
			Release     string `json:"release"`
			Go          string `json:"go"`
			ZstdEncoder string `json:"zstd_encoder"`
			ZstdDecoder string `json:"zstd_decoder"`
		}{version, runtime.Version(), repo.ZstdEncoder, repo.ZstdDecoder})
	})
	root.SetVersionTemplate("{{drpipeVersion .}}")
	for flag, key := range map[string]string{
		"repo": "repo", "password-file": "password_file", "cache-dir": "cache_dir", "json": "json", "no-progress": "no_progress",
	} {
		_ = a.v.BindPFlag(key, pf.Lookup(flag))
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		a.initCmd(), a.backupCmd(), a.snapshotsCmd(), a.lsCmd(), a.diffCmd(), a.dumpCmd(), a.restoreCmd(), a.checkCmd(), a.repairCmd(),
		a.statsCmd(), a.keyCmd(), a.forgetCmd(), a.pruneCmd(), a.demoCmd(),
		a.copyCmd(), a.warmupCmd(), a.scrubCmd(),
		a.siteCmd(), a.replicateCmd(),
		a.tapeCmd(), a.tierCmd(),
	)
	root.AddCommand(a.mountCmd())
	root.AddCommand(a.drsiteCmd())
	usageArgs(root)
	return root, a
}

// usageArgs makes every argument error of c and its subcommands a usage
// error (exit 2, README): a wrong number of arguments, and an unknown
// subcommand of a command group, which cobra otherwise answers with the
// group's help and exit 0 ('drpipe key remve X' must not pass for success).
func usageArgs(c *cobra.Command) {
	if c.HasSubCommands() && !c.Runnable() {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			if cmd.SuggestionsMinimumDistance <= 0 {
				cmd.SuggestionsMinimumDistance = 2
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return usagef("%s (see '%s --help')", msg, cmd.CommandPath())
		}
	}
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usagef("%v (usage: %s)", err, cmd.UseLine())
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

// configDefaults lists every config key with its default. README and
// configs/drpipe.yaml document the same keys.
var configDefaults = map[string]any{
	"repo":             "",
	"password_file":    "",
	"cache_dir":        "",
	"json":             false,
	"no_progress":      false,
	"host":             "",
	"compression":      "auto",
	"workers":          0,
	"init.ec":          "4+2",
	"init.pack_size":   "16MiB",
	"init.chunk_sizes": "default",
	"backup.tags":      []string{},
	"restore.workers":  0,
	// VM disk images (cmd_vmdisk.go).
	"backup.flatten":        false,
	"backup.no_disk_images": false,
	"restore.disk_format":   "original",
	"restore.delta":         false,
	"mount.cache_size":      "256MiB",
}

// workerKeys are the keys that set how many workers a command starts: 0
// is the default, and at most maxWorkers are started, each one a
// goroutine with its buffers.
var workerKeys = []string{"workers", "restore.workers"}

// maxWorkers bounds workerKeys.
const maxWorkers = 1024

// sectionDefaults are the defaults of the feature sections, set beside
// configDefaults (one place, no init-time registration).
var sectionDefaults = []map[string]any{tapeDefaults, siteConfigDefaults}

func (a *app) loadConfig(cmd *cobra.Command) error {
	for _, m := range append([]map[string]any{configDefaults}, sectionDefaults...) {
		for k, v := range m {
			a.v.SetDefault(k, v)
		}
	}
	a.v.SetEnvPrefix("DRPIPE")
	a.v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	a.v.AutomaticEnv()
	file, _ := cmd.Flags().GetString("config")
	if file == "" {
		file = os.Getenv("DRPIPE_CONFIG")
	}
	if file != "" {
		a.v.SetConfigFile(file)
		a.v.SetConfigType("yaml") // whatever the name ends in (drpipe.conf)
		if err := a.v.ReadInConfig(); err != nil {
			return usagef("read config file %s: %w", file, err)
		}
		known := map[string]bool{}
		for _, m := range append([]map[string]any{configDefaults}, sectionDefaults...) {
			for k := range m {
				known[k] = true
			}
		}
		for _, k := range a.v.AllKeys() {
			if known[k] || knownSection(k) {
				continue
			}
			if a.v.Get(k) == nil && (k == "tape.pools" || strings.HasPrefix(k, "tape.pools.")) {
				continue // an empty section (all of it commented out): the defaults apply
			}
			if rest, ok := strings.CutPrefix(k, "tape.pools."); ok {
				pool, key, _ := strings.Cut(rest, ".")
				if key == "" {
					return usagef("config file %s: tape.pools.%s must be a section of %s", file, pool, strings.Join(poolKeys, ", "))
				}
				return usagef("config file %s: tape pool %s: unknown key %q (a pool is a section of %s)", file, pool, key, strings.Join(poolKeys, ", "))
			}
			return usagef("config file %s: unknown key %q (see %s for the keys)", file, k, keysDocumentedIn(k))
		}
	}
	return a.checkValues()
}

// checkValues refuses a value of a number or true/false key that is
// neither, and a list given to a key that takes one value, naming the
// key, wherever the value came from: viper reads it as 0, false or "",
// which would quietly stand for the default (or none at all: tape.parity;
// the AWS endpoint for an s3.endpoint list). A whole number given as text (the environment's) is kept
// as the decimal number it was checked to be, for every later GetInt.
func (a *app) checkValues() error {
	kinds := map[string]any{}
	for _, m := range append([]map[string]any{configDefaults}, sectionDefaults...) {
		maps.Copy(kinds, m)
	}
	for k := range s3Keys {
		if a.v.IsSet(k) {
			kinds[k] = ""
		}
	}
	for _, k := range numberKeys {
		if a.v.IsSet(k) {
			kinds[k] = 0
		}
	}
	for k, kind := range kinds {
		v := a.v.Get(k)
		var err error
		switch kind.(type) {
		case int:
			var n int
			if n, err = wholeNumber(v); err == nil && v != n {
				a.v.Set(k, n) // viper would read "010" as octal and "08" as 0
			}
			if err == nil && slices.Contains(workerKeys, k) && (n < 0 || n > maxWorkers) {
				err = fmt.Errorf("%d: want 0 (the default) to %d", n, maxWorkers)
			}
		case bool:
			if _, e := cast.ToBoolE(v); e != nil {
				err = fmt.Errorf("%q is not true or false", fmt.Sprint(v))
			}
		case string:
			if _, e := cast.ToStringE(v); e != nil {
				err = fmt.Errorf("%v is a list: the key takes one value", v)
			}
		}
		if err != nil {
			return usagef("config key %s (DRPIPE_%s): %w", k, strings.ToUpper(strings.ReplaceAll(k, ".", "_")), err)
		}
	}
	return nil
}

// extraSections lists the structured config sections (lists of hosts,
// tiers, ...) that their commands decode strictly: drsite and tiering.
// Every other key is checked here: the main keys and the tape and site
// sections have defaults (configDefaults, sectionDefaults), the s3 and
// copy keys are listed (s3Keys, copyKeys) and tape pools
// (tape.pools.NAME.KEY) take poolKeys.
var extraSections = []string{"tiering", "drsite"}

// keysDocumentedIn names the example config file that documents key k.
func keysDocumentedIn(k string) string {
	section, _, _ := strings.Cut(k, ".")
	switch section {
	case "s3", "copy":
		return "configs/s3.yaml"
	case "site", "replicate":
		return "configs/site.yaml"
	}
	return "configs/drpipe.yaml"
}

func knownSection(k string) bool {
	if s3Keys[k] || copyKeys[k] {
		return true
	}
	for _, s := range extraSections {
		if strings.HasPrefix(k, s+".") {
			return true
		}
	}
	if rest, ok := strings.CutPrefix(k, "tape.pools."); ok {
		_, key, ok := strings.Cut(rest, ".")
		return ok && slices.Contains(poolKeys, key)
	}
	return false
}

func (a *app) jsonOut() bool { return a.v.GetBool("json") }

// printJSON writes v as JSON on stdout. A list is printed as [] when
// empty, never as null, at any depth, so that scripts can iterate over
// every list field (see emptyLists).
func (a *app) printJSON(v any) error {
	if v != nil {
		if e, changed := emptyLists(reflect.ValueOf(v), map[visit]bool{}); changed {
			v = e.Interface()
		}
	}
	enc := json.NewEncoder(a.stdout)
	if !a.jsonLines {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// visit is a pointer, map or slice on the path emptyLists walks.
type visit struct {
	p uintptr
	t reflect.Type
	n int
}

// emptyLists returns v with every nil slice it holds, at any depth, made
// an empty one, and whether it changed anything. What changes is copied,
// never modified in place. Nil maps, pointers and interfaces, []byte,
// unexported fields, fields tagged omitzero (an empty list is not zero)
// and values that marshal themselves are left as they are. path holds the
// pointers, maps and slices being walked: a cycle ends the walk there and
// is left for the encoder to report.
func emptyLists(v reflect.Value, path map[visit]bool) (reflect.Value, bool) {
	t := v.Type()
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer, reflect.Struct, reflect.Slice, reflect.Array, reflect.Map:
		if v.Kind() != reflect.Interface && (t.Implements(jsonMarshaler) || t.Implements(textMarshaler) ||
			reflect.PointerTo(t).Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(textMarshaler)) {
			return v, false
		}
	default:
		return v, false
	}
	switch v.Kind() {
	case reflect.Interface:
		if v.IsNil() {
			return v, false
		}
		e, changed := emptyLists(v.Elem(), path)
		if !changed {
			return v, false
		}
		c := reflect.New(t).Elem()
		c.Set(e)
		return c, true
	case reflect.Pointer:
		if v.IsNil() {
			return v, false
		}
		k := visit{v.Pointer(), t, 0}
		if path[k] {
			return v, false
		}
		path[k] = true
		defer delete(path, k)
		e, changed := emptyLists(v.Elem(), path)
		if !changed {
			return v, false
		}
		c := reflect.New(t.Elem())
		c.Elem().Set(e)
		return c, true
	case reflect.Struct:
		var c reflect.Value
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			_, opts, _ := strings.Cut(tag, ",")
			if !f.IsExported() || tag == "-" || slices.Contains(strings.Split(opts, ","), "omitzero") {
				continue
			}
			e, changed := emptyLists(v.Field(i), path)
			if !changed {
				continue
			}
			if !c.IsValid() {
				c = reflect.New(t).Elem()
				c.Set(v)
			}
			c.Field(i).Set(e)
		}
		if !c.IsValid() {
			return v, false
		}
		return c, true
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice {
			if t.Elem().Kind() == reflect.Uint8 {
				return v, false // []byte is a base64 string, not a list
			}
			if v.IsNil() {
				return reflect.MakeSlice(t, 0, 0), true
			}
			k := visit{v.Pointer(), t, v.Len()}
			if path[k] {
				return v, false
			}
			path[k] = true
			defer delete(path, k)
		}
		var c reflect.Value
		for i := range v.Len() {
			e, changed := emptyLists(v.Index(i), path)
			if !changed {
				continue
			}
			if !c.IsValid() {
				if v.Kind() == reflect.Slice {
					c = reflect.MakeSlice(t, v.Len(), v.Len())
					reflect.Copy(c, v)
				} else {
					c = reflect.New(t).Elem()
					c.Set(v)
				}
			}
			c.Index(i).Set(e)
		}
		if !c.IsValid() {
			return v, false
		}
		return c, true
	case reflect.Map:
		if v.IsNil() {
			return v, false
		}
		k := visit{v.Pointer(), t, 0}
		if path[k] {
			return v, false
		}
		path[k] = true
		defer delete(path, k)
		var c reflect.Value
		for it := v.MapRange(); it.Next(); {
			e, changed := emptyLists(it.Value(), path)
			if !changed {
				continue
			}
			if !c.IsValid() {
				c = reflect.MakeMapWithSize(t, v.Len())
				for all := v.MapRange(); all.Next(); {
					c.SetMapIndex(all.Key(), all.Value())
				}
			}
			c.SetMapIndex(it.Key(), e)
		}
		if !c.IsValid() {
			return v, false
		}
		return c, true
	}
	return v, false
}

// table returns the writer every command's table output goes through:
// columns aligned with spaces, two between columns. Flush it when done.
func (a *app) table() *tabwriter.Writer {
	return tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
}

func (a *app) printf(format string, args ...any) {
	fmt.Fprintf(a.stdout, format, args...)
}

// progressEnabled reports whether progress should be drawn on stderr.
func (a *app) progressEnabled() bool {
	if a.v.GetBool("no_progress") || a.jsonOut() {
		return false
	}
	f, ok := a.stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// password returns the repository password from --password-file given on
// the command line, DRPIPE_PASSWORD, the password_file key
// (DRPIPE_PASSWORD_FILE, config file), or a terminal prompt.
func (a *app) password(prompt string, confirm bool) ([]byte, error) {
	if p, given, err := a.givenPassword(); given || err != nil {
		return p, err
	}
	in, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return nil, usagef("no password: use --password-file FILE, or set DRPIPE_PASSWORD_FILE or DRPIPE_PASSWORD (no terminal to ask on)")
	}
	fmt.Fprint(a.stderr, prompt)
	p, err := term.ReadPassword(int(in.Fd()))
	fmt.Fprintln(a.stderr)
	if err != nil {
		return nil, fmt.Errorf("read password: %w", err)
	}
	if len(p) == 0 {
		return nil, usagef("empty password: type the repository's password at the prompt (or give it with --password-file FILE or DRPIPE_PASSWORD)")
	}
	if confirm {
		fmt.Fprint(a.stderr, "repeat password: ")
		q, err := term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
		if string(p) != string(q) {
			return nil, usagef("the passwords do not match")
		}
	}
	return p, nil
}

// givenPassword returns the password given without asking: --password-
// file, DRPIPE_PASSWORD, or the password_file setting (given is false when
// none is). --password-file on the command line wins over the
// environment, as every flag does: init must not create the repository
// with an exported DRPIPE_PASSWORD instead of the file the admin named.
func (a *app) givenPassword() (p []byte, given bool, err error) {
	if pf := a.root.PersistentFlags(); pf.Changed("password-file") {
		f, _ := pf.GetString("password-file")
		p, err = readSecretFile(f)
		return p, true, err
	}
	if p, ok := os.LookupEnv("DRPIPE_PASSWORD"); ok && p != "" {
		return []byte(p), true, nil
	}
	if f := a.v.GetString("password_file"); f != "" {
		p, err = readSecretFile(f)
		return p, true, err
	}
	return nil, false, nil
}

// maxSecretFile bounds a password or key file: a few hundred bytes in
// practice; a path to a disk image or a device is refused, not read until
// memory runs out.
const maxSecretFile = 1 << 20

// readSecretFile reads a password or key file, without its trailing
// newline (LF or CRLF).
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("read password file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, usagef("read password file: %w", err)
	}
	if len(b) > maxSecretFile {
		return nil, usagef("password file %s is larger than %d bytes: give a file holding only the password or key", path, maxSecretFile)
	}
	// A trailing newline is part of how people write files, not the secret.
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return nil, usagef("password file %s is empty", path)
	}
	return []byte(s), nil
}

// repoLocation returns --repo or the repo config key.
func (a *app) repoLocation() (string, error) {
	loc := a.v.GetString("repo")
	if loc == "" {
		return "", usagef("no repository: give --repo LOCATION, set DRPIPE_REPO or the repo key in the config file")
	}
	return loc, nil
}

// localDir returns the directory a location names when it is a local
// one: a plain path or file://PATH.
func localDir(loc string) (string, bool) {
	if !strings.Contains(loc, "://") {
		return loc, true
	}
	if dir, ok := strings.CutPrefix(loc, "file://"); ok {
		return dir, true
	}
	return "", false
}

// openBackend maps a location string to a backend.
func (a *app) openBackend(ctx context.Context, loc string, create bool) (tiers.Backend, error) {
	if dir, ok := localDir(loc); ok {
		if create {
			return tiers.NewLocal(dir)
		}
		return tiers.OpenLocal(dir)
	}
	if strings.HasPrefix(loc, "s3://") {
		return a.openS3(ctx, loc)
	}
	return nil, usagef("unsupported repository location %q: use a directory path or s3://bucket/prefix", loc)
}

func (a *app) repoOptions(pw []byte) (repo.Options, error) {
	comp, err := repo.ParseCompression(a.v.GetString("compression"))
	if err != nil {
		return repo.Options{}, usagef("config key compression (DRPIPE_COMPRESSION): %w", err)
	}
	return repo.Options{Password: pw, CacheDir: a.v.GetString("cache_dir"), Compression: comp, SkipUnreadableIndex: a.skipBadIndex}, nil
}

// openRepo opens and unlocks the repository named by --repo.
func (a *app) openRepo(ctx context.Context) (*repo.Repository, error) {
	loc, err := a.repoLocation()
	if err != nil {
		return nil, err
	}
	return a.openRepoAt(ctx, loc)
}

func (a *app) openRepoAt(ctx context.Context, loc string) (*repo.Repository, error) {
	be, err := a.openBackend(ctx, loc, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no repository at %s: %w (check --repo / DRPIPE_REPO; 'drpipe init --repo %s' creates one)", loc, err, loc)
	}
	if err != nil {
		return nil, err
	}
	// Identify the repository before asking for a password, so "not a
	// repository" and "unknown version" come first.
	if _, err := repo.ReadConfig(ctx, be); err != nil {
		be.Close()
		return nil, err
	}
	pw, err := a.password("repository password: ", false)
	if err != nil {
		be.Close()
		return nil, err
	}
	o, err := a.repoOptions(pw)
	if err != nil {
		be.Close()
		return nil, err
	}
	r, err := repo.Open(ctx, be, o)
	if err != nil {
		be.Close()
		return nil, err
	}
	for x, err := range r.DamagedIndexes() {
		fmt.Fprintf(a.stderr, "warning: index object %s is damaged and was left out (%v); blobs only it lists cannot be read until 'drpipe repair' replaces it\n", x.Short(), err)
	}
	return r, nil
}

// closeRepo releases r and its backend.
func closeRepo(r *repo.Repository) {
	r.Close()
	r.Backend().Close()
}

// confirmTTY asks a yes/no question when stdin is a terminal; it returns
// def otherwise.
func (a *app) confirmTTY(q string, def bool) bool {
	in, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return def
	}
	fmt.Fprintf(a.stderr, "%s [y/N] ", q)
	line, _ := bufio.NewReader(in).ReadString('\n')
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(line)), "y")
}
