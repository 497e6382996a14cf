package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/drpipe/drpipe/drsite"
	"github.com/drpipe/drpipe/pipeline"
	"github.com/drpipe/drpipe/repo"
)

// loadInventories parses --inventory files with the drsite importers
// (format detected from the content) into the versioned inventory JSON
// stored in the snapshot. Bad input fails here, before the repository is
// touched; warnings (unknown or missing fields) go to stderr and into the
// inventory.
func (a *app) loadInventories(files []string, host string) ([]byte, *drsite.Inventory, error) {
	if len(files) == 0 {
		return nil, nil, nil
	}
	if host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, nil, usagef("--inventory needs --host NAME (the hostname is unknown: %v)", err)
		}
		host = h
	}
	inv, err := drsite.ImportFiles(files, host)
	if err != nil {
		return nil, nil, usagef("--inventory: %w", err)
	}
	for _, w := range inv.Warnings {
		fmt.Fprintf(a.stderr, "inventory warning: %s\n", w)
	}
	b, err := drsite.EncodeInventory(inv)
	if err != nil {
		return nil, nil, fmt.Errorf("encode inventory: %w", err)
	}
	return b, inv, nil
}

// rawDisks lists the disk files inv gives as raw (libvirt disks without a
// driver type too), by absolute path: backup reads them as raw whatever
// header their guest wrote at their start.
func rawDisks(inv *drsite.Inventory) map[string]bool {
	if inv == nil {
		return nil
	}
	m := map[string]bool{}
	for _, vm := range inv.VMs {
		for _, d := range vm.Disks {
			if strings.EqualFold(vm.DiskFormat(d), "raw") && filepath.IsAbs(d.File) {
				m[filepath.Clean(d.File)] = true
				if real, err := filepath.EvalSymlinks(d.File); err == nil {
					m[real] = true // the backup may reach it by its real path
				}
			}
		}
	}
	return m
}

func (a *app) drsiteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drsite",
		Short: "Plan and run the VM bring-up at the DR site",
		Long: "drsite turns the VM inventory stored with every backup (drpipe backup --inventory FILE) into VMs running\n" +
			"at the DR site: plan places VMs on the DR hosts and maps their networks and addresses, runbook writes the\n" +
			"step-by-step runbook, bringup restores the disks and writes (and with --execute starts) the hypervisor\n" +
			"definitions. The DR site is described by the drsite: section of the --config file (configs/drsite.yaml).",
		Example: "  drpipe drsite plan --config /etc/drpipe/drsite.yaml --repo /srv/drpipe/dr-repo\n" +
			"  drpipe drsite runbook --config /etc/drpipe/drsite.yaml --repo /srv/drpipe/dr-repo --out /srv/dr/runbook\n" +
			"  drpipe drsite bringup --config /etc/drpipe/drsite.yaml --repo /srv/drpipe/dr-repo --out /srv/dr --execute",
	}
	cmd.AddCommand(a.drsiteImportCmd(), a.drsitePlanCmd(), a.drsiteRunbookCmd(), a.drsiteBringupCmd())
	return cmd
}

// drsiteConfig loads the drsite section of --config (or DRPIPE_CONFIG)
// and applies environment overrides of its scalar keys.
func (a *app) drsiteConfig(cmd *cobra.Command) (*drsite.Config, string, error) {
	file, _ := cmd.Flags().GetString("config")
	if file == "" {
		file = os.Getenv("DRPIPE_CONFIG")
	}
	if file == "" {
		return nil, "", usagef("drsite needs --config FILE with a drsite: section (see configs/drsite.yaml)")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, "", usagef("read DR-site config: %w", err)
	}
	c, err := drsite.LoadConfig(file, data)
	if err != nil {
		return nil, "", usageError{err}
	}
	overridden := false
	for key, dst := range map[string]*string{"virsh_uri": &c.VirshURI, "domain_type": &c.DomainType, "restore_rate": &c.RestoreRate, "rate_sample": &c.RateSample} {
		env := "DRPIPE_DRSITE_" + strings.ToUpper(key)
		if v, ok := os.LookupEnv(env); ok && v != "" {
			*dst, overridden = v, true
		}
	}
	// The duration keys too (configs/drsite.yaml: scalar keys can be
	// overridden from the environment).
	for key, dst := range map[string]*drsite.Duration{"expected_boot": &c.ExpectedBoot, "boot_timeout": &c.BootTimeout} {
		env := "DRPIPE_DRSITE_" + strings.ToUpper(key)
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			continue
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return nil, "", usagef("%s=%q (drsite.%s): not a duration like 90s or 5m; fix or unset the variable", env, v, key)
		}
		dst.Duration = d
	}
	if overridden {
		if err := c.Validate(); err != nil {
			return nil, "", usageError{err}
		}
	}
	return c, file, nil
}

// drsitePlan opens the repository, gathers the inventory and disk facts
// and makes the plan (measuring the restore rate when asked).
func (a *app) drsitePlan(ctx context.Context, c *drsite.Config, measure bool) (*drsite.Plan, *drsite.Gathered, *repo.Repository, error) {
	r, err := a.openRepo(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	g, err := drsite.Gather(ctx, r)
	if err != nil {
		closeRepo(r)
		return nil, nil, nil, err
	}
	in := drsite.PlanInput{Config: c, Inventory: g.Inventory, Data: g.Data, Now: r.Now(), Repo: r.Backend().Location(), Sources: g.Sources, Issues: g.Issues}
	if c.RestoreRate != "" {
		v, _ := drsite.ParseSize(c.RestoreRate)
		in.RestoreRate, in.RateSource = float64(v), "configured (drsite.restore_rate)"
	} else if measure {
		sample := int64(64 << 20)
		if c.RateSample != "" {
			sample, _ = drsite.ParseSize(c.RateSample)
		}
		rate, src, err := g.MeasureRestoreRate(ctx, r, sample)
		if err != nil {
			in.RateSource = err.Error()
		} else {
			in.RestoreRate, in.RateSource = rate, src
		}
	}
	return drsite.MakePlan(in), g, r, nil
}

func (a *app) drsiteImportCmd() *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "import FILE... [--host H] [--json]",
		Short: "Check inventory files: parse them as backup --inventory would and print the model",
		Long: "import parses libvirt domain/network XML, Hyper-V collector JSON (configs/hyperv-inventory.ps1), OVF\n" +
			"descriptors, hand-written YAML or drpipe inventory JSON, exactly as drpipe backup --inventory does, and\n" +
			"prints the VMs and the warnings (unknown or missing fields). Nothing is stored.",
		Example: "  virsh dumpxml dc01 > dc01.xml && virsh net-dumpxml lan > net-lan.xml\n" +
			"  drpipe drsite import --host kvm01 dc01.xml net-lan.xml\n" +
			"  drpipe drsite import --json hyperv-inventory.json > inventory.json",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if host == "" {
				host = a.v.GetString("host")
			}
			if host == "" {
				host, _ = os.Hostname()
			}
			inv, err := drsite.ImportFiles(args, host)
			if err != nil {
				return usageError{err}
			}
			if a.jsonOut() {
				return a.printJSON(inv)
			}
			tw := a.table()
			fmt.Fprintln(tw, "VM\tHOST\tFIRMWARE\tvCPU\tMEMORY\tDISKS\tNICS\tPRIORITY\tDEPENDS ON")
			for _, vm := range inv.VMs {
				var nics []string
				for _, n := range vm.NICs {
					nics = append(nics, n.Switch+vlanSuffix(n.VLAN))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%s\t%d\t%s\n", vm.Name, vm.Host, vm.Firmware, vm.VCPUs, drsite.HumanBytes(vm.Memory.StartupBytes),
					len(vm.Disks), strings.Join(nics, ","), vm.BootPriority, strings.Join(vm.DependsOn, ","))
			}
			tw.Flush()
			for _, h := range inv.Hosts {
				for _, s := range h.Switches {
					a.printf("host %s switch %s: %s%s%s\n", h.Name, s.Name, s.Type, optPrefix(" uplink ", s.Uplink), optPrefix(" VLANs ", intsString(s.VLANs)))
				}
			}
			for _, w := range inv.Warnings {
				a.printf("warning: %s\n", w)
			}
			a.printf("%d VMs, %d warnings\n", len(inv.VMs), len(inv.Warnings))
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "source host for libvirt XML and OVF (default: config key host, then this machine)")
	return cmd
}

func vlanSuffix(v *drsite.VLAN) string {
	if v == nil {
		return ""
	}
	switch v.Mode {
	case drsite.VLANAccess:
		return fmt.Sprintf("/%d", v.ID)
	case drsite.VLANTrunk:
		return "/trunk:" + intsString(v.Trunk)
	}
	return ""
}

func intsString(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

func optPrefix(p, v string) string {
	if v == "" {
		return ""
	}
	return p + v
}

func (a *app) drsitePlanCmd() *cobra.Command {
	var measure bool
	cmd := &cobra.Command{
		Use:   "plan --config drsite.yaml --repo R [--json]",
		Short: "Place VMs on the DR hosts, derive boot groups, map networks and re-IP; list what cannot be done",
		Long: "plan reads the newest inventory of every host from the repository and the DR site from --config, then:\n" +
			"places VMs (boot priority first, then first-fit-decreasing on memory, vCPUs and storage, keeping\n" +
			"anti-affinity groups apart), derives boot groups from dependencies (cycles are reported), maps every NIC\n" +
			"through drsite.network_map and re-addresses static IPs through drsite.reip. Each VM's RPO is the age of\n" +
			"the newest snapshot holding all of its disks. Exit code 3 means some VMs cannot be brought up; the\n" +
			"reasons are listed under UNRESOLVED.",
		Example: "  drpipe drsite plan --config /etc/drpipe/drsite.yaml --repo /srv/drpipe/dr-repo\n" +
			"  drpipe drsite plan --config drsite.yaml --repo /srv/drpipe/dr-repo --json | jq '.issues'",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, _, err := a.drsiteConfig(cmd)
			if err != nil {
				return err
			}
			p, _, r, err := a.drsitePlan(ctx, c, measure)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			if a.jsonOut() {
				if err := a.printJSON(p); err != nil {
					return err
				}
			} else {
				a.printPlan(p)
			}
			if len(p.BlockingIssues()) > 0 {
				return silentError{exitIncomplete}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&measure, "measure", false, "measure the restore rate for duration estimates (reads drsite.rate_sample from the repository)")
	return cmd
}

func (a *app) printPlan(p *drsite.Plan) {
	tw := a.table()
	fmt.Fprintln(tw, "VM\tFROM\tDR HOST\tGROUP\tvCPU\tMEMORY\tSTORAGE\tRPO\tNETWORKS\tADDRESSES\tSTATUS")
	for _, v := range p.VMs {
		host, group, status, rpo := v.DRHost, "-", "ok", "-"
		if host == "" {
			host = "-"
		}
		if v.Group > 0 {
			group = fmt.Sprint(v.Group)
		}
		switch {
		case v.Excluded:
			status = "excluded"
		case v.Blocked || v.DRHost == "":
			status = "BLOCKED"
		}
		if v.Data != nil && !v.Data.SnapshotTime.IsZero() {
			rpo = drsite.HumanDuration(v.RPO)
		}
		var nets, addrs []string
		for _, n := range v.NICs {
			to := "UNMAPPED"
			if n.Mapped {
				to = n.Network + vlanSuffix(n.VLAN)
			}
			nets = append(nets, n.SourceSwitch+vlanSuffix(n.SourceVLAN)+"→"+to)
			for i, f := range n.From {
				if i < len(n.To) && n.To[i] != f {
					addrs = append(addrs, f+"→"+n.To[i])
				} else {
					addrs = append(addrs, f)
				}
			}
			if n.DHCP {
				addrs = append(addrs, "dhcp")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.SourceHost, host, group, v.VCPUs, drsite.HumanBytes(v.MemoryBytes),
			drsite.HumanBytes(v.StorageBytes), rpo, strings.Join(nets, " "), strings.Join(addrs, " "), status)
	}
	tw.Flush()
	a.printf("\n")
	tw = a.table()
	fmt.Fprintln(tw, "DR HOST\tKIND\tvCPU\tMEMORY\tSTORAGE\tNETWORKS\tVMS")
	for _, h := range p.Hosts {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s/%s\t%s/%s\t%s\t%s\n", h.Name, h.Kind, h.UsedVCPUs, h.VCPUs, drsite.HumanBytes(h.UsedMemory), drsite.HumanBytes(h.MemoryBytes),
			drsite.HumanBytes(h.UsedStorage), drsite.HumanBytes(h.StorageBytes), strings.Join(h.Networks, ","), strings.Join(h.VMs, ","))
	}
	tw.Flush()
	a.printf("\nBOOT GROUPS\n")
	for _, g := range p.Groups {
		est := ""
		if p.RestoreRate > 0 {
			est = fmt.Sprintf("  (restore %s of data: %s; expected %s)", drsite.HumanBytes(g.DataBytes), drsite.HumanDuration(g.RestoreTime), drsite.HumanDuration(g.Expected))
		}
		a.printf("  %d: %s%s\n", g.Number, strings.Join(g.VMs, ", "), est)
	}
	if len(p.Issues) > 0 {
		a.printf("\nUNRESOLVED (%d blocking, %d to check)\n", len(p.BlockingIssues()), len(p.Issues)-len(p.BlockingIssues()))
		for _, i := range p.Issues {
			tag := "  "
			if i.Blocking {
				tag = "  BLOCKING "
			}
			a.printf("%s%s\n", tag, i)
		}
	} else {
		a.printf("\nno unresolved items\n")
	}
}

func (a *app) drsiteRunbookCmd() *cobra.Command {
	var out, bringupDir string
	cmd := &cobra.Command{
		Use:   "runbook --config drsite.yaml --repo R --out DIR",
		Short: "Write the DR runbook (Markdown and self-contained HTML)",
		Long: "runbook writes DIR/runbook.md and DIR/runbook.html: unresolved items first, then the placement and network\n" +
			"table with every VM's DR host, boot group and RPO, the DR hosts and networks, and per boot group the restore,\n" +
			"define, start and verify steps with the exact commands and expected durations (from the data size and the\n" +
			"restore rate, measured by reading drsite.rate_sample from the repository unless drsite.restore_rate is set).\n" +
			"Exit code 3 when some VM is blocked (the runbook is written, its unresolved items first), as for plan.",
		Example: "  drpipe drsite runbook --config /etc/drpipe/drsite.yaml --repo /srv/drpipe/dr-repo --out /srv/dr/runbook",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if out == "" {
				return usagef("runbook needs --out DIR")
			}
			c, cfgFile, err := a.drsiteConfig(cmd)
			if err != nil {
				return err
			}
			p, _, r, err := a.drsitePlan(ctx, c, true)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			loc, _ := a.repoLocation()
			rb := drsite.BuildRunbook(p, drsite.RunbookOptions{Repo: loc, Config: cfgFile, BringupDir: bringupDir})
			md, html, err := drsite.WriteRunbook(out, rb)
			if err != nil {
				return err
			}
			if a.jsonOut() {
				if err := a.printJSON(map[string]any{"markdown": md, "html": html, "vms": len(p.VMs), "boot_groups": len(p.Groups),
					"blocking_issues": len(p.BlockingIssues()), "issues": len(p.Issues), "restore_rate_bytes_per_s": p.RestoreRate}); err != nil {
					return err
				}
			} else {
				a.printf("wrote %s and %s: %d VMs, %d boot groups, %d unresolved items (%d blocking)\n", md, html, len(p.VMs), len(p.Groups), len(p.Issues), len(p.BlockingIssues()))
			}
			// Written, but some VMs would not come up: as plan says.
			if len(p.BlockingIssues()) > 0 {
				return silentError{exitIncomplete}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for runbook.md and runbook.html")
	cmd.Flags().StringVar(&bringupDir, "bringup-dir", "./dr-bringup", "the drsite bringup --out directory the runbook's commands refer to")
	return cmd
}

func (a *app) drsiteBringupCmd() *cobra.Command {
	var out, virshURI string
	var hosts []string
	var groups []int
	var execute, noRestore bool
	cmd := &cobra.Command{
		Use:   "bringup --config drsite.yaml --repo R --out DIR [--execute] [--dr-host H]... [--group N]...",
		Short: "Restore VM disks and write (with --execute: define and start) the VMs at the DR site",
		Long: "bringup follows the plan boot group by boot group: it restores each VM's disks from the newest snapshot\n" +
			"holding them (converting VHDX to qcow2 for libvirt, and qcow2/raw to VHDX for Hyper-V), then writes per DR\n" +
			"host DIR/HOST/domains/VM.xml and DIR/HOST/networks/NET.xml plus DIR/HOST/bringup.sh (libvirt), or\n" +
			"DIR/HOST/bringup.ps1 (Hyper-V: New-VMSwitch, New-VM, Set-VMProcessor, Set-VMMemory, Add-VMHardDiskDrive,\n" +
			"Set-VMNetworkAdapterVlan, re-IP through PowerShell Direct), with the mapped networks and re-IP applied.\n" +
			"--execute defines and starts the libvirt VMs through virsh (drsite.virsh_uri or the host's uri) and waits\n" +
			"for each group to run and pass its tcp: checks before the next. Images placed by an earlier run are kept.\n" +
			"--group N restores (and with --execute starts) only boot group N, writing the definitions of all groups:\n" +
			"the runbook's steps by hand use it one group at a time.\n" +
			"VMs with blocking plan issues are skipped and listed (exit code 3).",
		Example: "  drpipe drsite bringup --config /etc/drpipe/drsite.yaml --repo /srv/drpipe/dr-repo --out /srv/dr --execute\n" +
			"  drpipe drsite bringup --config drsite.yaml --repo R --out /srv/dr --dr-host dr-hv1   # Hyper-V script only\n" +
			"  drpipe drsite bringup --config drsite.yaml --repo R --out /srv/dr --group 1         # restore group 1, start nothing",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if out == "" {
				return usagef("bringup needs --out DIR")
			}
			c, _, err := a.drsiteConfig(cmd)
			if err != nil {
				return err
			}
			if virshURI != "" {
				c.VirshURI = virshURI
				for i := range c.Hosts {
					c.Hosts[i].URI = ""
				}
			}
			p, _, r, err := a.drsitePlan(ctx, c, false)
			if err != nil {
				return err
			}
			defer closeRepo(r)
			o := drsite.BringupOptions{Out: out, Hosts: hosts, Groups: groups, Execute: execute, NoRestore: noRestore, RestoreWorkers: a.v.GetInt("restore.workers")}
			var bar *progressBar
			if !a.jsonOut() {
				o.Progress = func(s string) { fmt.Fprintln(a.stderr, s) }
			}
			if a.progressEnabled() {
				cnt := &pipeline.Counter{Start: time.Now()}
				restored := map[string]bool{}
				for _, g := range p.Groups {
					if len(groups) == 0 || slices.Contains(groups, g.Number) {
						for _, n := range g.VMs {
							restored[n] = true
						}
					}
				}
				for _, v := range p.VMs {
					if v.Data != nil && !v.Blocked && v.DRHost != "" && restored[v.Name] {
						for _, d := range v.Data.Disks {
							cnt.AddTotal(1, d.Size)
						}
					}
				}
				o.RestoreProgress = cnt
				bar = startProgress(a.stderr, cnt, "restore")
				o.Progress = func(s string) { fmt.Fprintf(a.stderr, "\r\033[K%s\n", s) }
			}
			start := time.Now()
			res, err := drsite.Bringup(ctx, r, p, o)
			bar.Stop()
			if errors.Is(err, drsite.ErrNotInPlan) {
				return usageError{err}
			}
			if res == nil {
				return err
			}
			if a.jsonOut() {
				if jerr := a.printJSON(map[string]any{"hosts": res.Hosts, "restored": res.Restored, "defined": res.Defined, "started": res.Started,
					"checks": res.Checks, "skipped": res.Skipped, "duration_s": time.Since(start).Seconds(), "error": errString(err)}); jerr != nil {
					return jerr
				}
			} else {
				for _, h := range res.Hosts {
					a.printf("%s (%s): %s\n", h.Name, h.Kind, h.Script)
					for _, vm := range sortedMapKeys(h.Domains) {
						a.printf("  domain %s: %s\n", vm, h.Domains[vm])
					}
					for _, n := range sortedMapKeys(h.Networks) {
						a.printf("  network %s: %s\n", n, h.Networks[n])
					}
				}
				var bytes int64
				for _, d := range res.Restored {
					bytes += d.Bytes
				}
				a.printf("restored %d disk images (%s), defined %d VMs, started %d, %d checks passed, in %.1fs\n",
					len(res.Restored), drsite.HumanBytes(bytes), len(res.Defined), len(res.Started), countOK(res.Checks), time.Since(start).Seconds())
				for _, s := range res.Skipped {
					fmt.Fprintf(a.stderr, "SKIPPED %s: %s\n", s.VM, s.Message)
				}
			}
			if errors.Is(err, drsite.ErrBringupIncomplete) {
				if !a.jsonOut() {
					fmt.Fprintf(a.stderr, "drpipe: %v\nhint: resolve the issues listed by 'drpipe drsite plan' and run bringup again (placed images are kept)\n", err)
				}
				return silentError{exitIncomplete}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "output directory (definitions, scripts, restored images)")
	f.StringArrayVar(&hosts, "dr-host", nil, "only VMs placed on this DR host (repeatable)")
	f.BoolVar(&execute, "execute", false, "define and start the libvirt VMs through virsh, group by group")
	f.BoolVar(&noRestore, "no-restore", false, "write definitions only; do not restore disks")
	f.IntSliceVar(&groups, "group", nil, "only restore (and with --execute, start) this boot group; definitions are written for all (repeatable)")
	f.StringVar(&virshURI, "virsh-uri", "", "libvirt URI for every libvirt host (overrides drsite.virsh_uri and hosts[].uri)")
	return cmd
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func countOK(cs []drsite.CheckResult) int {
	n := 0
	for _, c := range cs {
		if c.OK {
			n++
		}
	}
	return n
}

func sortedMapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// inventorySummary is the inventory part of backup --json (nil without
// --inventory).
func inventorySummary(inv *drsite.Inventory) any {
	if inv == nil {
		return nil
	}
	var warns []string
	for _, w := range inv.Warnings {
		warns = append(warns, w.String())
	}
	vms := make([]string, 0, len(inv.VMs))
	for _, vm := range inv.VMs {
		vms = append(vms, vm.Name)
	}
	return map[string]any{"vms": vms, "warnings": warns}
}
