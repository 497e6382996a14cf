package drsite

import (
	"strings"
	"testing"
)

// FuzzParseVirshOutput feeds arbitrary session output to the parser of
// what one virsh command printed (the bytes between two markers of a
// session). It must never panic; every line it returns must be a line of
// the output (prompts and the trailing CR taken off), never the echoed
// command or marker; and it must fail exactly when a line says "error:".
func FuzzParseVirshOutput(f *testing.F) {
	// Seeds: what virsh -q -c test:///default printed, with LC_ALL=C, for
	// the commands a session sends, the marker's echo included.
	f.Add("uri", "virsh # uri\ntest:///default\nvirsh # echo __drpipe'_'done_1__\n")
	f.Add("list --all", "virsh # list --all\n 1   test   running\nvirsh # echo __drpipe'_'done_2__\n")
	f.Add("domstate test", "virsh # domstate test\nrunning\nvirsh # echo __drpipe'_'done_3__\n")
	f.Add("dominfo nosuch", "virsh # dominfo nosuch\nerror: failed to get domain 'nosuch'\nvirsh # echo __drpipe'_'done_4__\n")
	f.Add("net-list --all", "virsh # net-list --all\n default   active   no   yes\nvirsh # echo __drpipe'_'done_5__\n")
	f.Add("dominfo test", "virsh # dominfo test\nId:             1\nName:           test\nUUID:           6695eb01-f6a4-8304-79aa-97f2502e193f\n"+
		"OS Type:        linux\nState:          running\nCPU(s):         2\nMax memory:     8388608 KiB\nPersistent:     yes\n"+
		"Security DOI:   \nvirsh # echo __drpipe'_'done_6__\n")
	f.Add("start vm", "error: failed to start domain 'vm'\r\nerror: Requested operation is not valid: domain is already running\r\n")
	f.Add("x", "virsh # virsh # x\nvirsh # \n\n")
	f.Fuzz(func(t *testing.T, line, raw string) {
		if line == "" {
			return // Run always sends a command
		}
		out, err := parseVirshOutput(line, raw)
		var lines []string
		saysError := false
		for _, l := range strings.Split(raw, "\n") {
			for strings.HasPrefix(l, "virsh # ") {
				l = strings.TrimPrefix(l, "virsh # ")
			}
			l = strings.TrimRight(l, "\r")
			lines = append(lines, l)
			if strings.HasPrefix(l, "error:") {
				saysError = true
			}
		}
		if (err != nil) != saysError {
			t.Fatalf("error %v for output whose lines say error: %v\n%q", err, saysError, raw)
		}
		if out == "" {
			return
		}
		for _, o := range strings.Split(out, "\n") {
			if o == "" || strings.HasPrefix(o, "echo __drpipe'_'done_") && strings.Contains(raw, "virsh # "+o) {
				t.Fatalf("output line %q: empty or the marker's echo\n%q", o, raw)
			}
			found := false
			for _, l := range lines {
				if l == o {
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("output line %q is no line of the output %q", o, raw)
			}
		}
	})
}
