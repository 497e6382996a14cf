package drsite

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/drpipe/drpipe/internal/atomicfile"
)

// RunbookOptions say how the runbook refers to the operator's files.
type RunbookOptions struct {
	// Repo is the repository argument in commands (--repo).
	Repo string
	// Config is the DR-site config path in commands (--config).
	Config string
	// BringupDir is the --out directory of drsite bringup the commands
	// refer to (default ./dr-bringup).
	BringupDir string
}

// Runbook is the view of a plan the runbook templates render.
type Runbook struct {
	Title      string
	Generated  string
	Repo       string
	Config     string
	Out        string
	Rate       string
	RateSource string
	Blocking   []Issue
	Warnings   []Issue
	Summary    []KV
	VMs        []RunbookVM
	Hosts      []RunbookHost
	Networks   []*NetworkUse
	Groups     []RunbookGroup
	Sources    []RunbookSource
	Skipped    []RunbookVM
	// QuickStart are the commands that do everything in order.
	QuickStart []string
}

// KV is a labelled value.
type KV struct{ Key, Value string }

// RunbookVM is one VM row.
type RunbookVM struct {
	Name, SourceHost, DRHost, Group, CPU, Memory, Storage, Data, RPO, Snapshot, SnapshotTime, Restore, Status string
	NICs                                                                                                      []RunbookNIC
	Blocked                                                                                                   bool
}

// RunbookNIC is one NIC row.
type RunbookNIC struct {
	MAC, From, To, AddrFrom, AddrTo, Gateway, DNS string
}

// RunbookHost is one DR host row.
type RunbookHost struct {
	Name, Kind, CPU, Memory, Storage, Networks, VMs string
}

// RunbookGroup is one boot group with its steps.
type RunbookGroup struct {
	Number   int
	VMs      string
	Data     string
	Restore  string
	Expected string
	Steps    []RunbookStep
}

// RunbookStep is one step: what, the exact commands, how long.
type RunbookStep struct {
	Title    string
	Commands []string
	Expect   string
	Duration string
}

// RunbookSource is one inventory snapshot.
type RunbookSource struct {
	Host, Snapshot, Time, VMs string
}

func rpoString(v *PlannedVM) string {
	if v.Data == nil || v.Data.SnapshotTime.IsZero() {
		return "no complete snapshot"
	}
	return HumanDuration(v.RPO)
}

// psBypass lets the operator's PowerShell session run bringup.ps1, which
// is not signed. The commands that pass -GuestCredential run the script
// in that session (&): a new powershell process (powershell -File) takes
// its arguments as text, and the credential would reach the script as
// the string "System.Management.Automation.PSCredential", a user name.
const psBypass = "Set-ExecutionPolicy -Scope Process -ExecutionPolicy Bypass -Force;"

// BuildRunbook turns a plan into the runbook view.
func BuildRunbook(p *Plan, o RunbookOptions) *Runbook {
	if o.BringupDir == "" {
		o.BringupDir = "./dr-bringup"
	}
	if o.Repo == "" {
		o.Repo = p.Repo
	}
	if o.Config == "" {
		o.Config = "drsite.yaml"
	}
	c := p.Config
	rb := &Runbook{Title: "DR bring-up runbook", Generated: p.Generated.UTC().Format("2006-01-02 15:04:05 MST"), Repo: o.Repo, Config: o.Config, Out: o.BringupDir}
	if p.RestoreRate > 0 {
		rb.Rate = HumanBytes(int64(p.RestoreRate)) + "/s"
		rb.RateSource = p.RateSource
	} else {
		rb.Rate = "unknown"
		rb.RateSource = "no measurement; set drsite.restore_rate"
	}
	for _, i := range p.Issues {
		if i.Blocking {
			rb.Blocking = append(rb.Blocking, i)
		} else {
			rb.Warnings = append(rb.Warnings, i)
		}
	}
	var total time.Duration
	var worst time.Duration
	worstVM := ""
	up, blocked, excluded := 0, 0, 0
	for _, v := range p.VMs {
		switch {
		case v.Excluded:
			excluded++
		case v.Blocked || v.DRHost == "":
			blocked++
		default:
			up++
			if v.RPO > worst {
				worst, worstVM = v.RPO, v.Name
			}
		}
	}
	for _, g := range p.Groups {
		total += g.Expected
	}
	rb.Summary = []KV{
		{"VMs brought up", fmt.Sprintf("%d of %d (%d blocked, %d excluded)", up, len(p.VMs), blocked, excluded)},
		{"DR hosts", fmt.Sprintf("%d", len(p.Hosts))},
		{"Boot groups", fmt.Sprintf("%d", len(p.Groups))},
		{"Expected duration", HumanDuration(total)},
		{"Restore rate", rb.Rate + " (" + rb.RateSource + ")"},
	}
	if worstVM != "" {
		rb.Summary = append(rb.Summary, KV{"Worst RPO", fmt.Sprintf("%s (%s)", HumanDuration(worst), worstVM)})
	}
	for _, v := range p.VMs {
		rv := RunbookVM{Name: v.Name, SourceHost: v.SourceHost, DRHost: v.DRHost, CPU: fmt.Sprint(v.VCPUs), Memory: HumanBytes(v.MemoryBytes),
			Storage: HumanBytes(v.StorageBytes), Data: HumanBytes(v.DataBytes), RPO: rpoString(v), Blocked: v.Blocked, Restore: HumanDuration(v.RestoreTime)}
		if v.Group > 0 {
			rv.Group = fmt.Sprint(v.Group)
		} else {
			rv.Group = "–"
		}
		if rv.DRHost == "" {
			rv.DRHost = "unplaced"
		}
		if v.Data != nil && v.Data.Snapshot != "" {
			rv.Snapshot = shortID(v.Data.Snapshot)
			rv.SnapshotTime = v.Data.SnapshotTime.UTC().Format("2006-01-02 15:04 MST")
		}
		switch {
		case v.Excluded:
			rv.Status = "excluded"
		case v.Blocked || v.DRHost == "":
			rv.Status = "BLOCKED"
		default:
			rv.Status = "ok"
		}
		for _, n := range v.NICs {
			rn := RunbookNIC{MAC: n.MAC, From: n.SourceSwitch + " " + vlanString(n.SourceVLAN), AddrFrom: strings.Join(n.From, ", "), AddrTo: strings.Join(n.To, ", "),
				Gateway: firstNonEmpty(n.Gateway4, n.Gateway6), DNS: strings.Join(n.DNS, ", ")}
			if n.Mapped {
				rn.To = n.Network + " " + vlanString(n.VLAN)
			} else {
				rn.To = "UNMAPPED"
			}
			if n.DHCP {
				rn.AddrTo = "DHCP"
			}
			rv.NICs = append(rv.NICs, rn)
		}
		rb.VMs = append(rb.VMs, rv)
		if rv.Status == "BLOCKED" {
			rb.Skipped = append(rb.Skipped, rv)
		}
	}
	for _, h := range p.Hosts {
		rb.Hosts = append(rb.Hosts, RunbookHost{Name: h.Name, Kind: h.Kind,
			CPU:      fmt.Sprintf("%d / %d", h.UsedVCPUs, h.VCPUs),
			Memory:   fmt.Sprintf("%s / %s", HumanBytes(h.UsedMemory), HumanBytes(h.MemoryBytes)),
			Storage:  fmt.Sprintf("%s / %s", HumanBytes(h.UsedStorage), HumanBytes(h.StorageBytes)),
			Networks: strings.Join(h.Networks, ", "), VMs: strings.Join(h.VMs, ", ")})
	}
	rb.Networks = p.Networks
	for _, s := range p.Sources {
		rb.Sources = append(rb.Sources, RunbookSource{Host: s.Host, Snapshot: shortID(s.Snapshot), Time: s.Time.UTC().Format("2006-01-02 15:04 MST"), VMs: fmt.Sprint(s.VMs)})
	}
	rb.QuickStart = []string{fmt.Sprintf("drpipe drsite bringup --config %s --repo %s --out %s --execute", shq(o.Config), shq(o.Repo), shq(o.BringupDir))}
	for _, h := range p.Hosts {
		if h.Kind == KindHyperV && len(h.VMs) > 0 {
			rb.QuickStart = append(rb.QuickStart, fmt.Sprintf(`%s & %s -Start -GuestCredential (Get-Credential)   # on %s, after copying its images`,
				psBypass, psq(strings.ReplaceAll(o.BringupDir+"/"+h.Name+"/bringup.ps1", "/", `\`)), h.Name))
		}
	}
	netDefined := map[string]bool{}
	for _, g := range p.Groups {
		rg := RunbookGroup{Number: g.Number, VMs: strings.Join(g.VMs, ", "), Data: HumanBytes(g.DataBytes), Restore: HumanDuration(g.RestoreTime), Expected: HumanDuration(g.Expected)}
		// Restore: the group's disks go where the definitions name
		// them, in the DR host's format (flattened, converted), and
		// every definition is written; nothing is started.
		rg.Steps = append(rg.Steps, RunbookStep{Title: "Restore the disks and write the definitions",
			Commands: []string{fmt.Sprintf("drpipe drsite bringup --config %s --repo %s --out %s --group %d", shq(o.Config), shq(o.Repo), shq(o.BringupDir), g.Number)},
			Expect:   fmt.Sprintf("%s restored into %s/<host>/images/<vm>/ (into image_dir/<vm>/ for a libvirt host with image_dir), the definitions written; nothing is started", rg.Data, o.BringupDir),
			Duration: rg.Restore})
		var copies, define, start, verify []string
		for _, n := range g.VMs {
			v := p.VM(n)
			h := c.Host(v.DRHost)
			if h == nil {
				continue
			}
			dir := o.BringupDir + "/" + h.Name
			if h.Kind == KindHyperV {
				script := psq(strings.ReplaceAll(dir+"/bringup.ps1", "/", `\`))
				if h.ImageDir != "" {
					// bringup restored them beside the script; bringup.ps1
					// attaches them from its -ImageRoot.
					copies = append(copies, fmt.Sprintf(`# on %s: first copy the images of %s from %s to %s (bringup.ps1's -ImageRoot)`,
						commentText(h.Name), commentText(v.Name), commentText(dir+"/images/"+v.Name), commentText(strings.TrimRight(h.ImageDir, `\`)+`\`+v.Name)))
				}
				define = append(define, fmt.Sprintf(`powershell -ExecutionPolicy Bypass -File %s -Group %d   # on %s: creates its switches and the group's VMs`, script, g.Number, h.Name))
				start = append(start, fmt.Sprintf(`%s & %s -Group %d -Start -GuestCredential (Get-Credential)   # on %s`, psBypass, script, g.Number, h.Name))
				verify = append(verify, fmt.Sprintf("Get-VM -Name %s | Select-Object Name, State, Heartbeat   # on %s", psq(v.Name), h.Name))
			} else {
				uri := c.URIFor(h)
				for _, pn := range v.NICs {
					key := h.Name + "\x00" + pn.Network
					if pn.Network == "" || netDefined[key] {
						continue
					}
					netDefined[key] = true
					// Two commands: run again (a resumed bring-up), the
					// define fails as the network exists, and the start
					// must still run for a network that exists stopped.
					define = append(define,
						fmt.Sprintf("virsh -c %s net-define %s   # \"already exists\": fine, go on", shq(uri), shq(dir+"/networks/"+pn.Network+".xml")),
						fmt.Sprintf("virsh -c %s net-start %s   # \"already active\": fine, go on", shq(uri), shq(pn.Network)))
				}
				define = append(define, fmt.Sprintf("virsh -c %s define %s", shq(uri), shq(dir+"/domains/"+v.Name+".xml")))
				start = append(start, fmt.Sprintf("virsh -c %s start %s", shq(uri), shq(v.Name)))
				verify = append(verify, fmt.Sprintf("virsh -c %s domstate %s   # expect: running", shq(uri), shq(v.Name)))
			}
			// The guest answers at its DR address only once it has it:
			// re-address it before the service checks.
			for _, pn := range v.NICs {
				for i, to := range pn.To {
					tp, err := netip.ParsePrefix(to)
					if err != nil {
						continue
					}
					if i < len(pn.From) && pn.From[i] != to && h.Kind == KindLibvirt {
						gw, route := pn.Gateway4, "ip route"
						if tp.Addr().Is6() {
							gw, route = pn.Gateway6, "ip -6 route"
						}
						linux := fmt.Sprintf("ip addr replace %s dev \"$(ip -br link | awk '/%s/{print $1}')\"", to, pn.MAC)
						win := fmt.Sprintf("New-NetIPAddress -InterfaceIndex (Get-NetAdapter | ? MacAddress -eq '%s').ifIndex -IPAddress %s -PrefixLength %d", strings.ToUpper(strings.ReplaceAll(pn.MAC, ":", "-")), tp.Addr(), tp.Bits())
						if gw != "" {
							linux += " && " + route + " replace default via " + gw
							win += " -DefaultGateway " + gw
						}
						verify = append(verify, fmt.Sprintf("# %s: re-IP inside the guest, %s → %s (then make it persistent in the guest's network config)", v.Name, pn.From[i], to),
							"#   Linux:   "+linux, "#   Windows: "+win)
					}
					if h.Kind == KindHyperV { // the step's other commands are PowerShell
						verify = append(verify, fmt.Sprintf("Test-Connection -Count 3 %s   # %s", tp.Addr(), commentText(v.Name)))
					} else {
						verify = append(verify, fmt.Sprintf("ping -c 3 %s   # %s", tp.Addr(), commentText(v.Name)))
					}
				}
			}
			for _, chk := range v.VM.Verify {
				if a, ok := strings.CutPrefix(drCheck(v, chk), "tcp:"); ok {
					if hst, port, err := netSplit(a); err == nil {
						if h.Kind == KindHyperV {
							verify = append(verify, fmt.Sprintf("Test-NetConnection -ComputerName %s -Port %s   # %s service check: TcpTestSucceeded True", psq(hst), psq(port), commentText(v.Name)))
						} else {
							verify = append(verify, fmt.Sprintf("nc -z -w 3 %s %s   # %s service check", shq(hst), shq(port), commentText(v.Name)))
						}
					}
				} else {
					verify = append(verify, fmt.Sprintf("# %s: %s", commentText(v.Name), commentText(chk)))
				}
			}
		}
		define, start = append(copies, uniqStrings(define)...), uniqStrings(start)
		rg.Steps = append(rg.Steps,
			RunbookStep{Title: "Define networks and VMs", Commands: define, Expect: "each definition accepted", Duration: "30s"},
			RunbookStep{Title: "Start", Commands: start, Expect: "VMs running", Duration: HumanDuration(c.ExpectedBoot.Duration)},
			RunbookStep{Title: "Verify before the next group", Commands: verify, Expect: "every check passes; only then start the next group", Duration: "1m"})
		rb.Groups = append(rb.Groups, rg)
	}
	return rb
}

func uniqStrings(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func ipv(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 4
	}
	return 6
}

func netSplit(hp string) (string, string, error) {
	i := strings.LastIndex(hp, ":")
	if i < 0 {
		return "", "", fmt.Errorf("no port")
	}
	return strings.Trim(hp[:i], "[]"), hp[i+1:], nil
}

const runbookMD = `# {{.Title}}

Generated {{.Generated}} from repository ` + "`{{.Repo}}`" + ` with ` + "`{{.Config}}`" + `.

## Unresolved items
{{if and (not .Blocking) (not .Warnings)}}
None: every VM is placed, mapped and re-addressed.
{{end}}{{range .Blocking}}
- **BLOCKING** {{.Kind}}{{if .VM}} ({{.VM}}){{end}}: {{.Message}}{{end}}{{range .Warnings}}
- {{.Kind}}{{if .VM}} ({{.VM}}){{end}}: {{.Message}}{{end}}

## Quick path

Restore, define, start and verify every boot group in order (libvirt hosts), then run the Hyper-V scripts:

` + "```sh" + `
{{range .QuickStart}}{{.}}
{{end}}` + "```" + `

The steps below do the same by hand, group by group.

## Summary

| | |
| --- | --- |
{{range .Summary}}| {{.Key}} | {{.Value}} |
{{end}}
## Placement and networks

| VM | from host | DR host | boot group | vCPUs | memory | storage | data | RPO | snapshot | status |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{{range .VMs}}| {{.Name}} | {{.SourceHost}} | {{.DRHost}} | {{.Group}} | {{.CPU}} | {{.Memory}} | {{.Storage}} | {{.Data}} | {{.RPO}} | {{.Snapshot}} {{.SnapshotTime}} | {{.Status}} |
{{end}}
| VM | NIC | source switch / VLAN | DR network / VLAN | addresses | DR addresses | gateway | DNS |
| --- | --- | --- | --- | --- | --- | --- | --- |
{{range $v := .VMs}}{{range .NICs}}| {{$v.Name}} | {{.MAC}} | {{.From}} | {{.To}} | {{.AddrFrom}} | {{.AddrTo}} | {{.Gateway}} | {{.DNS}} |
{{end}}{{end}}
### DR hosts

| host | kind | vCPUs used/total | memory | storage | networks | VMs |
| --- | --- | --- | --- | --- | --- | --- |
{{range .Hosts}}| {{.Name}} | {{.Kind}} | {{.CPU}} | {{.Memory}} | {{.Storage}} | {{.Networks}} | {{.VMs}} |
{{end}}
### DR networks

| host | network | type | VLANs | VMs |
| --- | --- | --- | --- | --- |
{{range .Networks}}| {{.Host}} | {{.Network}} | {{.Type}} | {{ints .VLANs}} | {{join .VMs}} |
{{end}}
## Boot groups
{{range .Groups}}
### Boot group {{.Number}}: {{.VMs}}

Data {{.Data}}, restore {{.Restore}}, expected {{.Expected}} in total.
{{range $i, $s := .Steps}}
{{inc $i}}. **{{$s.Title}}** (expected {{$s.Duration}}; {{$s.Expect}})

` + "```sh" + `
{{range $s.Commands}}{{.}}
{{end}}` + "```" + `
{{end}}{{end}}
## Inventory sources

| host | snapshot | time | VMs |
| --- | --- | --- | --- |
{{range .Sources}}| {{.Host}} | {{.Snapshot}} | {{.Time}} | {{.VMs}} |
{{end}}`

const runbookHTML = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em;color:#1b1f24;max-width:1400px}
h1{border-bottom:3px solid #0b5394;padding-bottom:.3em}h2{margin-top:1.6em;color:#0b5394}
table{border-collapse:collapse;margin:.6em 0;font-size:14px}th,td{border:1px solid #c8ccd0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6}tr.blocked td{background:#fde8e8}.blocking{color:#a40000;font-weight:bold}
.issues li{margin:.2em 0}pre{background:#f5f7f9;border:1px solid #d8dde2;padding:.6em;overflow-x:auto;font-size:13px}
.ok{color:#0a7a2f;font-weight:bold}.bootgroup{border-left:4px solid #0b5394;padding-left:1em;margin:1.4em 0}
.meta{color:#57606a}
</style></head><body>
<h1>{{.Title}}</h1>
<p class="meta">Generated {{.Generated}} from repository <code>{{.Repo}}</code> with <code>{{.Config}}</code>.</p>
<h2 id="unresolved">Unresolved items</h2>
{{if and (not .Blocking) (not .Warnings)}}<p class="ok">None: every VM is placed, mapped and re-addressed.</p>{{end}}
<ul class="issues">{{range .Blocking}}<li><span class="blocking">BLOCKING {{.Kind}}</span>{{if .VM}} ({{.VM}}){{end}}: {{.Message}}</li>{{end}}
{{range .Warnings}}<li>{{.Kind}}{{if .VM}} ({{.VM}}){{end}}: {{.Message}}</li>{{end}}</ul>
<h2 id="quick">Quick path</h2>
<p>Restore, define, start and verify every boot group in order (libvirt hosts), then run the Hyper-V scripts:</p>
<pre>{{range .QuickStart}}{{.}}
{{end}}</pre>
<p>The steps below do the same by hand, group by group.</p>
<h2 id="summary">Summary</h2>
<table>{{range .Summary}}<tr><th>{{.Key}}</th><td>{{.Value}}</td></tr>{{end}}</table>
<h2 id="placement">Placement and networks</h2>
<table><tr><th>VM</th><th>from host</th><th>DR host</th><th>boot group</th><th>vCPUs</th><th>memory</th><th>storage</th><th>data</th><th>RPO</th><th>snapshot</th><th>status</th></tr>
{{range .VMs}}<tr class="vm{{if .Blocked}} blocked{{end}}" data-vm="{{.Name}}"><td>{{.Name}}</td><td>{{.SourceHost}}</td><td class="drhost">{{.DRHost}}</td><td class="group">{{.Group}}</td><td>{{.CPU}}</td><td>{{.Memory}}</td><td>{{.Storage}}</td><td>{{.Data}}</td><td class="rpo">{{.RPO}}</td><td>{{.Snapshot}} {{.SnapshotTime}}</td><td>{{.Status}}</td></tr>
{{end}}</table>
<table><tr><th>VM</th><th>NIC</th><th>source switch / VLAN</th><th>DR network / VLAN</th><th>addresses</th><th>DR addresses</th><th>gateway</th><th>DNS</th></tr>
{{range $v := .VMs}}{{range .NICs}}<tr class="nic" data-vm="{{$v.Name}}"><td>{{$v.Name}}</td><td>{{.MAC}}</td><td>{{.From}}</td><td>{{.To}}</td><td>{{.AddrFrom}}</td><td>{{.AddrTo}}</td><td>{{.Gateway}}</td><td>{{.DNS}}</td></tr>
{{end}}{{end}}</table>
<h3>DR hosts</h3>
<table><tr><th>host</th><th>kind</th><th>vCPUs used/total</th><th>memory</th><th>storage</th><th>networks</th><th>VMs</th></tr>
{{range .Hosts}}<tr class="host"><td>{{.Name}}</td><td>{{.Kind}}</td><td>{{.CPU}}</td><td>{{.Memory}}</td><td>{{.Storage}}</td><td>{{.Networks}}</td><td>{{.VMs}}</td></tr>
{{end}}</table>
<h3>DR networks</h3>
<table><tr><th>host</th><th>network</th><th>type</th><th>VLANs</th><th>VMs</th></tr>
{{range .Networks}}<tr class="network"><td>{{.Host}}</td><td>{{.Network}}</td><td>{{.Type}}</td><td>{{ints .VLANs}}</td><td>{{join .VMs}}</td></tr>
{{end}}</table>
<h2 id="groups">Boot groups</h2>
{{range .Groups}}<div class="bootgroup" id="group-{{.Number}}"><h3>Boot group {{.Number}}: {{.VMs}}</h3>
<p>Data {{.Data}}, restore {{.Restore}}, expected {{.Expected}} in total.</p>
<ol>{{range .Steps}}<li><b>{{.Title}}</b> (expected {{.Duration}}; {{.Expect}})<pre>{{range .Commands}}{{.}}
{{end}}</pre></li>{{end}}</ol></div>
{{end}}
<h2 id="sources">Inventory sources</h2>
<table><tr><th>host</th><th>snapshot</th><th>time</th><th>VMs</th></tr>
{{range .Sources}}<tr><td>{{.Host}}</td><td>{{.Snapshot}}</td><td>{{.Time}}</td><td>{{.VMs}}</td></tr>{{end}}</table>
</body></html>
`

var tmplFuncs = map[string]any{
	"join": func(xs []string) string { return strings.Join(xs, ", ") },
	"inc":  func(i int) int { return i + 1 },
	"ints": func(xs []int) string {
		if len(xs) == 0 {
			return "untagged"
		}
		s := make([]string, len(xs))
		for i, x := range xs {
			s[i] = itoa(x)
		}
		return strings.Join(s, ", ")
	},
}

// RenderMarkdown renders the runbook as Markdown.
func (rb *Runbook) RenderMarkdown() ([]byte, error) {
	t, err := template.New("md").Funcs(tmplFuncs).Parse(runbookMD)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, rb); err != nil {
		return nil, fmt.Errorf("render runbook Markdown: %w", err)
	}
	return b.Bytes(), nil
}

// RenderHTML renders the runbook as one self-contained HTML page (inline
// styles, no scripts, no external resources).
func (rb *Runbook) RenderHTML() ([]byte, error) {
	t, err := htmltemplate.New("html").Funcs(tmplFuncs).Parse(runbookHTML)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, rb); err != nil {
		return nil, fmt.Errorf("render runbook HTML: %w", err)
	}
	return b.Bytes(), nil
}

// WriteRunbook writes runbook.md and runbook.html into dir and returns
// their paths.
func WriteRunbook(dir string, rb *Runbook) (md, html string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("create %s: %w", dir, err)
	}
	mdb, err := rb.RenderMarkdown()
	if err != nil {
		return "", "", err
	}
	hb, err := rb.RenderHTML()
	if err != nil {
		return "", "", err
	}
	md, html = filepath.Join(dir, "runbook.md"), filepath.Join(dir, "runbook.html")
	if err := atomicfile.WriteFile(md, mdb, 0o644); err != nil {
		return "", "", err
	}
	if err := atomicfile.WriteFile(html, hb, 0o644); err != nil {
		return "", "", err
	}
	return md, html, nil
}
