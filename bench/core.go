package main

import "context"

// coreSuite: backup/restore of a VM image series and a file tree against
// restic and borg (issue: repository core).
var coreSuite = Suite{
	Name:  "core",
	Title: "Backup and restore vs restic and borg",
	About: "Same data, same run. Filled in below.",
	Run: func(ctx context.Context, env *Env) ([]Table, error) {
		return nil, nil
	},
}
