package drsite

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// docWalker reads a decoded JSON or YAML document (maps, slices and
// scalars) with path tracking: type errors become *FieldError naming the
// path (the first one wins), keys nobody asked for become warnings.
type docWalker struct {
	file string
	w    *warnings
	err  error
	// truncated recognises values ConvertTo-Json flattened to a type name.
	truncated func(string) bool
}

// docObj is one object of the document.
type docObj struct {
	wk   *docWalker
	path string
	m    map[string]any
	keys map[string]string // lower-case key -> key
	used map[string]bool
}

func (wk *docWalker) fail(path, format string, args ...any) {
	if wk.err == nil {
		wk.err = fieldErr(wk.file, path, format, args...)
	}
}

func joinPath(base, key string) string {
	if base == "" {
		return key
	}
	return base + "." + key
}

// object views v as an object; nil (JSON null) gives nil without error.
func (wk *docWalker) object(path string, v any) *docObj {
	switch m := v.(type) {
	case nil:
		return nil
	case map[string]any:
		o := &docObj{wk: wk, path: path, m: m, keys: map[string]string{}, used: map[string]bool{}}
		for k := range m {
			o.keys[strings.ToLower(k)] = k
		}
		return o
	case string:
		if wk.truncated != nil && wk.truncated(m) {
			wk.fail(path, "holds %q instead of an object: ConvertTo-Json truncated it; run the collector unchanged (it passes -Depth 8)", m)
			return nil
		}
	}
	wk.fail(path, "is %s, want an object", describe(v))
	return nil
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 60 {
			x = x[:60] + "…"
		}
		return fmt.Sprintf("the string %q", x)
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return "a number"
}

func (o *docObj) get(key string) (any, string, bool) {
	if o == nil {
		return nil, "", false
	}
	k, ok := o.keys[strings.ToLower(key)]
	if !ok {
		return nil, joinPath(o.path, key), false
	}
	o.used[k] = true
	return o.m[k], joinPath(o.path, k), true
}

// has reports whether key is present and not null.
func (o *docObj) has(key string) bool {
	v, _, ok := o.get(key)
	return ok && v != nil
}

// known marks keys as read (for keys deliberately not carried).
func (o *docObj) known(keys ...string) {
	for _, k := range keys {
		o.get(k)
	}
}

// finish warns about keys nobody read.
func (o *docObj) finish() {
	if o == nil {
		return
	}
	var extra []string
	for k := range o.m {
		if !o.used[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	for _, k := range extra {
		o.wk.w.add(joinPath(o.path, k), "unknown field; not carried")
	}
}

func (o *docObj) str(key string) string {
	v, p, ok := o.get(key)
	if !ok || v == nil {
		return ""
	}
	switch x := v.(type) {
	case string:
		return strings.TrimSpace(x)
	case json.Number:
		return x.String()
	case int, int64, uint64, float64:
		return fmt.Sprint(x)
	case bool:
		return strconv.FormatBool(x)
	}
	o.wk.fail(p, "is %s, want a string", describe(v))
	return ""
}

// num reads an integer (also from a numeric string); ok is false when
// the key is missing or null.
func (o *docObj) num(key string) (int64, bool) {
	v, p, ok := o.get(key)
	if !ok || v == nil {
		return 0, false
	}
	n, err := toInt(v)
	if err != nil {
		o.wk.fail(p, "%v", err)
		return 0, false
	}
	return n, true
}

func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, nil
		}
		f, err := x.Float64()
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<62 {
			return 0, fmt.Errorf("%s is not a whole number", x)
		}
		return int64(f), nil
	case int:
		return int64(x), nil
	case int64:
		return x, nil
	case uint64:
		if x > 1<<62 {
			return 0, fmt.Errorf("%d is out of range", x)
		}
		return int64(x), nil
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<62 {
			return 0, fmt.Errorf("%v is not a whole number", x)
		}
		return int64(x), nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a whole number", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("is %s, want a number", describe(v))
}

// size reads a byte size: a number of bytes or a string with a unit.
func (o *docObj) size(key string) (int64, bool) {
	v, p, ok := o.get(key)
	if !ok || v == nil {
		return 0, false
	}
	if s, isStr := v.(string); isStr {
		n, err := ParseSize(s)
		if err != nil {
			o.wk.fail(p, "%v", err)
			return 0, false
		}
		return n, true
	}
	n, err := toInt(v)
	if err != nil || n < 0 {
		o.wk.fail(p, "is not a size in bytes (or a string like \"4GiB\")")
		return 0, false
	}
	return n, true
}

func (o *docObj) boolean(key string) (bool, bool) {
	v, p, ok := o.get(key)
	if !ok || v == nil {
		return false, false
	}
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true", "yes", "on", "1":
			return true, true
		case "false", "no", "off", "0":
			return false, true
		}
	}
	o.wk.fail(p, "is %s, want true or false", describe(v))
	return false, false
}

// list reads a list; a single non-list value is a one-element list (as
// ConvertTo-Json writes single results), null or missing is empty.
func (o *docObj) list(key string) ([]any, string) {
	v, p, ok := o.get(key)
	if !ok || v == nil {
		return nil, p
	}
	if l, isList := v.([]any); isList {
		return l, p
	}
	return []any{v}, p
}

// strs reads a list of strings (or one string, or comma-separated).
func (o *docObj) strs(key string) []string {
	l, p := o.list(key)
	var out []string
	for i, v := range l {
		switch x := v.(type) {
		case nil:
		case string:
			for _, s := range strings.Split(x, ",") {
				if s = strings.TrimSpace(s); s != "" {
					out = append(out, s)
				}
			}
		case json.Number, int, int64, uint64, float64:
			out = append(out, fmt.Sprint(x))
		default:
			o.wk.fail(fmt.Sprintf("%s[%d]", p, i), "is %s, want a string", describe(v))
		}
	}
	return out
}

// sub reads a nested object (nil when missing or null).
func (o *docObj) sub(key string) *docObj {
	v, p, ok := o.get(key)
	if !ok {
		return nil
	}
	return o.wk.object(p, v)
}
