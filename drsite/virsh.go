package drsite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// Virsh is one long-lived `virsh -c URI` session driven over its
// standard input, so that every command shares one connection (which is
// also what keeps state for the stateless test:///default driver). It is
// not safe for concurrent use.
type Virsh struct {
	uri   string
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *os.File
	buf   bytes.Buffer
	n     int
	mu    sync.Mutex
	dead  error
	chunk []byte
}

// StartVirsh starts a virsh session on uri. The session ends with Close
// or when ctx is cancelled.
func StartVirsh(ctx context.Context, uri string) (*Virsh, error) {
	bin, err := exec.LookPath("virsh")
	if err != nil {
		return nil, fmt.Errorf("virsh not found (install libvirt-clients): %w", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-q", "-c", uri)
	// Untranslated: the session reads states ("running", "Active:")
	// and "error:" lines, which a DR host's locale would translate.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = pw, pw
	in, err := cmd.StdinPipe()
	if err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start virsh -c %s: %w", uri, err)
	}
	pw.Close()
	v := &Virsh{uri: uri, cmd: cmd, in: in, out: pr, chunk: make([]byte, 4096)}
	if _, err := v.Run(ctx, "uri"); err != nil {
		v.Close()
		return nil, fmt.Errorf("connect virsh to %s: %w", uri, err)
	}
	return v, nil
}

// URI returns the connection URI.
func (v *Virsh) URI() string { return v.uri }

// virshQuote quotes one argument for virsh's command parser.
func virshQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t'\"\\;#$") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Run executes one virsh command and returns its output. Output lines
// starting with "error:" make it fail with those lines.
func (v *Virsh) Run(ctx context.Context, args ...string) (string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.dead != nil {
		return "", v.dead
	}
	v.n++
	marker := fmt.Sprintf("__drpipe_done_%d__", v.n)
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, "\n\r") {
			return "", fmt.Errorf("virsh %s: argument contains a newline", args[0])
		}
		q[i] = virshQuote(a)
	}
	line := strings.Join(q, " ")
	// The quotes keep the marker out of the echoed command line: only
	// echo's output contains it verbatim.
	if _, err := fmt.Fprintf(v.in, "%s\necho __drpipe'_'done_%d__\n", line, v.n); err != nil {
		v.dead = fmt.Errorf("virsh session on %s ended: %w", v.uri, err)
		return "", v.dead
	}
	for {
		if i := bytes.Index(v.buf.Bytes(), []byte(marker)); i >= 0 {
			raw := string(v.buf.Bytes()[:i])
			v.buf.Next(i + len(marker))
			return parseVirshOutput(line, raw)
		}
		if err := ctx.Err(); err != nil {
			v.dead = err
			return "", err
		}
		n, err := v.out.Read(v.chunk)
		v.buf.Write(v.chunk[:n])
		if err != nil {
			v.dead = fmt.Errorf("virsh session on %s ended: %w (output: %s)", v.uri, err, strings.TrimSpace(v.buf.String()))
			return "", v.dead
		}
	}
}

func parseVirshOutput(line, raw string) (string, error) {
	var out, errs []string
	for _, l := range strings.Split(raw, "\n") {
		for strings.HasPrefix(l, "virsh # ") {
			l = strings.TrimPrefix(l, "virsh # ")
			if strings.HasPrefix(l, "echo __drpipe'_'done_") || l == line || strings.HasPrefix(l, line) {
				l = ""
			}
		}
		l = strings.TrimRight(l, "\r")
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, "error:") {
			errs = append(errs, strings.TrimSpace(strings.TrimPrefix(l, "error:")))
			continue
		}
		out = append(out, l)
	}
	if len(errs) > 0 {
		return strings.Join(out, "\n"), fmt.Errorf("virsh %s: %s", line, strings.Join(errs, ": "))
	}
	return strings.Join(out, "\n"), nil
}

// Close ends the session.
func (v *Virsh) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Fprintln(v.in, "quit")
	v.in.Close()
	err := v.cmd.Wait()
	v.out.Close()
	if v.dead == nil {
		v.dead = errors.New("virsh session closed")
	}
	return err
}
