package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
)

func (a *app) lsCmd() *cobra.Command {
	var host string
	var long bool
	cmd := &cobra.Command{
		Use:   "ls --repo R SNAPSHOT|latest [PATH...] [--long] [--json]",
		Short: "List the files of a snapshot (or of some paths of it) without restoring or mounting it",
		Long: "ls lists every entry of a snapshot below each PATH (as it was backed up; the whole snapshot without one),\n" +
			"depth first in name order, reading only the snapshot's trees. --long adds the mode, owner, size and\n" +
			"modification time. --json prints one object, {\"snapshot\": ..., \"entries\": [...], \"complete\": true}, written as\n" +
			"it goes (complete is false when the listing stopped early).\n" +
			"A PATH the snapshot does not hold is an error (exit 1) after the paths before it were listed.",
		Example: "  drpipe ls --repo /srv/drpipe/repo latest /etc/libvirt\n" +
			"  drpipe ls --repo /srv/drpipe/repo 3fa2c1d9 --long /var/lib/libvirt/images\n" +
			"  drpipe ls --repo /srv/drpipe/repo latest --json | jq -r '.entries[] | select(.size > 1e9) | .path'",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			for _, p := range args[1:] {
				if strings.TrimSpace(p) == "" {
					return usagef("PATH %q is empty (an unset shell variable?): give a path as it was backed up, or none to list the whole snapshot", p)
				}
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			sn, err := r.FindSnapshot(ctx, args[0], host)
			if err != nil {
				return err
			}
			if a.jsonOut() {
				s := newJSONListStream(a.stdout, "entries", jsonField{"snapshot", snapshotRef(sn)})
				err := pipeline.WalkSnapshot(ctx, r, sn, args[1:], func(p string, n *repo.Node) error {
					return s.add(lsEntry(p, n))
				})
				return joinErr(err, s.close(jsonField{"complete", err == nil}))
			}
			w := bufio.NewWriter(a.stdout)
			err = pipeline.WalkSnapshot(ctx, r, sn, args[1:], func(p string, n *repo.Node) error {
				if long {
					_, err := fmt.Fprintf(w, "%s %6d %6d %12d %s %s\n", modeString(n), n.UID, n.GID, n.Size, n.ModTime.Local().Format("2006-01-02 15:04:05"), lsName(p, n))
					return err
				}
				_, err := fmt.Fprintln(w, printablePath(p))
				return err
			})
			return joinErr(err, w.Flush())
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "the snapshot's host: with latest, the newest of this host; with an id, refused unless the snapshot is this host's")
	cmd.Flags().BoolVarP(&long, "long", "l", false, "show mode, owner (uid, gid), size and modification time")
	return cmd
}

func (a *app) diffCmd() *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "diff --repo R OLD NEW [--json]",
		Short: "Show what changed between two snapshots: files added, removed, modified, metadata changed",
		Long: "diff compares two snapshots (ids, unique prefixes, or latest) by their trees, without reading any file\n" +
			"content: a directory whose tree is unchanged is skipped unread, and a file is modified when its chunks\n" +
			"differ (a VM disk image also when its format, backing file or layer map does). One line per change: + added, - removed, M modified content, U metadata only (mode, owner,\n" +
			"modification time, link target, extended attributes), T another type; then a summary. --json prints one\n" +
			"object, {\"old\": ..., \"new\": ..., \"changes\": [{\"path\", \"change\", \"old_size\", \"new_size\"}...],\n" +
			"\"summary\": {...}, \"complete\": true}, written as it goes.",
		Example: "  drpipe diff --repo /srv/drpipe/repo 3fa2c1d9 latest\n" +
			"  drpipe diff --repo /srv/drpipe/repo 3fa2c1d9 7b01e2aa --json | jq -r '.changes[] | select(.change == \"modified\") | .path'",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			old, err := r.FindSnapshot(ctx, args[0], host)
			if err != nil {
				return err
			}
			cur, err := r.FindSnapshot(ctx, args[1], host)
			if err != nil {
				return err
			}
			var sum diffSummary
			var s *jsonListStream
			var w *bufio.Writer
			if a.jsonOut() {
				s = newJSONListStream(a.stdout, "changes", jsonField{"old", snapshotRef(old)}, jsonField{"new", snapshotRef(cur)})
			} else {
				w = bufio.NewWriter(a.stdout)
			}
			err = pipeline.DiffSnapshots(ctx, r, old, cur, func(d pipeline.DiffEntry) error {
				sum.count(d)
				if s != nil {
					e := map[string]any{"path": d.Path, "change": d.Change}
					if !utf8.ValidString(d.Path) {
						e["path_raw"] = []byte(d.Path)
					}
					if d.Old != nil {
						e["old_type"] = d.Old.Type
						if d.Old.Type == repo.NodeFile {
							e["old_size"] = d.Old.Size
						}
					}
					if d.New != nil {
						e["new_type"] = d.New.Type
						if d.New.Type == repo.NodeFile {
							e["new_size"] = d.New.Size
						}
					}
					return s.add(e)
				}
				_, err := fmt.Fprintf(w, "%s    %s\n", diffMark[d.Change], printablePath(d.Path))
				return err
			})
			if s != nil {
				return joinErr(err, s.close(jsonField{"summary", sum}, jsonField{"complete", err == nil}))
			}
			if err == nil {
				fmt.Fprintf(w, "\n%s..%s: %d added (%s), %d removed (%s), %d modified (%s -> %s), %d metadata only, %d changed type\n",
					old.ID().Short(), cur.ID().Short(), sum.Added, humanBytes(sum.AddedBytes), sum.Removed, humanBytes(sum.RemovedBytes),
					sum.Modified, humanBytes(sum.ModifiedOldBytes), humanBytes(sum.ModifiedNewBytes), sum.Metadata, sum.TypeChanged)
			}
			return joinErr(err, w.Flush())
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "the snapshots' host: latest is then the newest of this host, and an id of another host's snapshot is refused")
	return cmd
}

func (a *app) dumpCmd() *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "dump --repo R SNAPSHOT|latest PATH [--host H] > OUT",
		Short: "Write one file of a snapshot to standard output, or a directory as a tar archive",
		Long: "dump writes a regular file's content to standard output, read straight from the repository: the way back\n" +
			"for a 'backup --stdin' stream (dump latest pg.sql | psql). Any other PATH (a directory, a symlink, a\n" +
			"device) is written as a tar archive of it and everything below (POSIX/PAX: modes, owners, times, symlinks,\n" +
			"devices, FIFOs, extended attributes as SCHILY.xattr), named by snapshot path without the leading slash.\n" +
			"Holes are written as zeros, hard links as separate files; restore keeps both. A VM disk image (qcow2,\n" +
			"VHD, VHDX) is an error: restore it, or read its raw view in drpipe mount. PATH is as it was backed\n" +
			"up; a relative one is taken from the snapshot's root, where --stdin-name puts a stream. Standard output\n" +
			"must not be a terminal. A summary goes to standard error (as JSON with --json).",
		Example: "  drpipe dump --repo /srv/drpipe/repo latest --host db01 pg.sql | psql\n" +
			"  drpipe dump --repo /srv/drpipe/repo 3fa2c1d9 /etc/libvirt > libvirt.tar",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if strings.TrimSpace(args[1]) == "" {
				return usagef("PATH is empty (an unset shell variable?): give a path as it was backed up")
			}
			if f, ok := a.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				return usagef("standard output is a terminal: redirect it to a file (> out) or pipe it to a program")
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			sn, err := r.FindSnapshot(ctx, args[0], host)
			if err != nil {
				return err
			}
			start := time.Now()
			res, err := pipeline.Dump(ctx, r, sn, args[1], a.stdout)
			if err != nil {
				return err
			}
			el := time.Since(start).Seconds()
			if a.jsonOut() {
				b, jerr := json.Marshal(map[string]any{"snapshot_id": sn.ID(), "path": args[1], "tar": res.Tar, "entries": res.Entries, "bytes": res.Bytes, "duration_s": el})
				if jerr != nil {
					return jerr
				}
				fmt.Fprintf(a.stderr, "%s\n", b)
				return nil
			}
			what := "file"
			if res.Tar {
				what = fmt.Sprintf("tar archive of %d entries", res.Entries)
			}
			fmt.Fprintf(a.stderr, "dumped %s of snapshot %s as a %s: %s of content, %.1fs\n", printablePath(args[1]), sn.ID().Short(), what, humanBytes(res.Bytes), el)
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "the snapshot's host: with latest, the newest of this host; with an id, refused unless the snapshot is this host's")
	return cmd
}

// diffMark is the letter diff prints before each change.
var diffMark = map[pipeline.Change]string{
	pipeline.Added: "+", pipeline.Removed: "-", pipeline.Modified: "M", pipeline.Metadata: "U", pipeline.TypeDiff: "T",
}

// diffSummary counts a diff's changes; the sizes are of regular files.
type diffSummary struct {
	Added            int   `json:"added"`
	AddedBytes       int64 `json:"added_bytes"`
	Removed          int   `json:"removed"`
	RemovedBytes     int64 `json:"removed_bytes"`
	Modified         int   `json:"modified"`
	ModifiedOldBytes int64 `json:"modified_old_bytes"`
	ModifiedNewBytes int64 `json:"modified_new_bytes"`
	Metadata         int   `json:"metadata"`
	TypeChanged      int   `json:"type_changed"`
}

func (s *diffSummary) count(d pipeline.DiffEntry) {
	size := func(n *repo.Node) int64 {
		if n != nil && n.Type == repo.NodeFile {
			return n.Size
		}
		return 0
	}
	switch d.Change {
	case pipeline.Added:
		s.Added++
		s.AddedBytes += size(d.New)
	case pipeline.Removed:
		s.Removed++
		s.RemovedBytes += size(d.Old)
	case pipeline.Modified:
		s.Modified++
		s.ModifiedOldBytes += size(d.Old)
		s.ModifiedNewBytes += size(d.New)
	case pipeline.Metadata:
		s.Metadata++
	case pipeline.TypeDiff:
		s.TypeChanged++
	}
}

// joinErr returns the first of err and later that is not nil: the error
// that stopped the work, or else one from finishing its output.
func joinErr(err, later error) error {
	if err != nil {
		return err
	}
	return later
}

// snapshotRef is how ls and diff --json name a snapshot.
func snapshotRef(sn *repo.Snapshot) map[string]any {
	return map[string]any{"id": sn.ID(), "short_id": sn.ID().Short(), "time": sn.Time.Format(time.RFC3339Nano), "host": sn.Host, "paths": sn.Paths, "tags": sn.Tags}
}

// lsEntry is one entry of ls --json (and of a diff's side).
func lsEntry(p string, n *repo.Node) map[string]any {
	e := map[string]any{
		"path": p, "type": n.Type, "mode": fmt.Sprintf("%04o", uint32(n.Mode.Perm())|pipeline.UnixModeBits(n.Mode)), "mode_string": modeString(n),
		"uid": n.UID, "gid": n.GID, "mtime": n.ModTime.Format(time.RFC3339Nano),
	}
	if !utf8.ValidString(p) {
		e["path_raw"] = []byte(p) // base64: the bytes of a name that is not UTF-8
	}
	switch n.Type {
	case repo.NodeFile:
		e["size"] = n.Size
		if len(n.Disk) > 0 {
			e["disk_image"] = true
		}
		if n.Links > 1 {
			e["links"] = n.Links
		}
	case repo.NodeSymlink:
		e["link_target"] = n.LinkTarget
		if !utf8.ValidString(n.LinkTarget) {
			e["link_target_raw"] = []byte(n.LinkTarget) // base64, as path_raw
		}
	case repo.NodeDev, repo.NodeCharDev:
		e["rdev"] = n.Rdev
	}
	return e
}

// modeString is ls -l's mode column for n: its type letter, then the
// permission bits, with s/S for setuid and setgid and t/T for sticky.
func modeString(n *repo.Node) string {
	kind := map[repo.NodeType]byte{repo.NodeDir: 'd', repo.NodeSymlink: 'l', repo.NodeDev: 'b', repo.NodeCharDev: 'c', repo.NodeFIFO: 'p', repo.NodeSocket: 's'}[n.Type]
	if kind == 0 {
		kind = '-'
	}
	b := []byte{kind}
	perm := n.Mode.Perm()
	for i, c := range "rwxrwxrwx" {
		if perm&(1<<(8-i)) != 0 {
			b = append(b, byte(c))
		} else {
			b = append(b, '-')
		}
	}
	special := func(at int, set bool, lower, upper byte) {
		switch {
		case !set:
		case b[at] == 'x':
			b[at] = lower
		default:
			b[at] = upper
		}
	}
	special(3, n.Mode&fs.ModeSetuid != 0, 's', 'S')
	special(6, n.Mode&fs.ModeSetgid != 0, 's', 'S')
	special(9, n.Mode&fs.ModeSticky != 0, 't', 'T')
	return string(b)
}

// lsName is the path column of ls --long: a symlink with its target.
func lsName(p string, n *repo.Node) string {
	if n.Type == repo.NodeSymlink {
		return printablePath(p) + " -> " + printablePath(n.LinkTarget)
	}
	return printablePath(p)
}

// printablePath is p as it is, or quoted Go-style when it holds bytes
// that are not printable UTF-8 (a newline in a name must not pass for
// two entries, an escape sequence must not reach the terminal).
func printablePath(p string) string {
	for _, c := range p {
		if c == utf8.RuneError || !unicode.IsPrint(c) {
			return strconv.Quote(p)
		}
	}
	return p
}

// jsonField is one field of a jsonListStream's object besides its list.
type jsonField struct {
	name  string
	value any
}

// jsonListStream writes one JSON object whose list field is written item
// by item as the items come, so that a listing of any length takes
// bounded memory: {"head":...,"list":[item,...],"tail":...}.
type jsonListStream struct {
	w   *bufio.Writer
	n   int
	err error
}

// newJSONListStream starts the object with the head fields, then opens
// the list field.
func newJSONListStream(w io.Writer, list string, head ...jsonField) *jsonListStream {
	s := &jsonListStream{w: bufio.NewWriter(w)}
	s.write("{")
	for _, f := range head {
		s.field(f)
		s.write(",")
	}
	s.value(list)
	s.write(":[")
	return s
}

func (s *jsonListStream) write(t string) {
	if s.err == nil {
		_, s.err = s.w.WriteString(t)
	}
}

func (s *jsonListStream) value(v any) {
	if s.err != nil {
		return
	}
	if v != nil {
		if e, changed := emptyLists(reflect.ValueOf(v), map[visit]bool{}); changed {
			v = e.Interface() // [] for a nil list, as printJSON writes it
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		s.err = err
		return
	}
	_, s.err = s.w.Write(b)
}

func (s *jsonListStream) field(f jsonField) {
	s.value(f.name)
	s.write(":")
	s.value(f.value)
}

// add writes one item of the list.
func (s *jsonListStream) add(v any) error {
	if s.n > 0 {
		s.write(",")
	}
	s.write("\n")
	s.value(v)
	s.n++
	return s.err
}

// close ends the list, writes the tail fields and ends the object. It is
// called also when the walk failed, so that what was written is still
// one JSON value.
func (s *jsonListStream) close(tail ...jsonField) error {
	s.write("\n]")
	for _, f := range tail {
		s.write(",")
		s.field(f)
	}
	s.write("}\n")
	if s.err == nil {
		s.err = s.w.Flush()
	}
	return s.err
}
