package tape_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/drpipe/drpipe/tape"
)

// TestWriterGoneInAnotherPidNamespace: kill(pid, 0) answers in the
// caller's pid namespace only, so a running writer on the same host (same
// hostname and boot id) seen from another pid namespace (a container
// sharing the catalog) must not be taken for gone: WriterGone judges by
// pid only within the writer's own namespace.
func TestWriterGoneInAnotherPidNamespace(t *testing.T) {
	if w := os.Getenv("DRPIPE_TEST_WRITER"); w != "" {
		fmt.Printf("gone=%v\n", (&tape.SetInfo{Writer: w}).WriterGone())
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a new pid namespace")
	}
	host, _ := os.Hostname()
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Skip("no boot id")
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		t.Skipf("no pid namespace link: %v", err)
	}
	alive := fmt.Sprintf("%s %s %d %s", host, strings.TrimSpace(string(boot)), os.Getpid(), ns) // this very process, as thisWriter names it
	if (&tape.SetInfo{Writer: alive}).WriterGone() {
		t.Fatal("this process counts as gone in its own namespace")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriterGoneInAnotherPidNamespace$")
	cmd.Env = append(os.Environ(), "DRPIPE_TEST_WRITER="+alive)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("cannot run in a new pid namespace: %v %s", err, out)
	}
	if !strings.Contains(string(out), "gone=false") {
		t.Errorf("a running writer (pid %d, same host and boot) seen from another pid namespace: %s, want gone=false", os.Getpid(), out)
	}
}
