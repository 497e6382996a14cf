package netem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Side names one end of a Link.
type Side int

// The two ends of a Link.
const (
	A Side = 0
	B Side = 1
)

func (s Side) String() string { return [...]string{"a", "b"}[s] }

// LinkOptions describe a Link. Delay, jitter, loss and rate apply to each
// direction separately.
type LinkOptions struct {
	Delay  time.Duration // one-way delay added to every packet
	Jitter time.Duration // uniform in [-Jitter, +Jitter]; packets are never reordered
	Loss   float64       // probability that a packet is dropped, per direction
	// Rate caps each direction in bytes per second (0 = unlimited). The
	// queue in front of the cap holds QueueDelay of traffic (default
	// 100 ms), beyond which packets are tail-dropped.
	Rate       int64
	QueueDelay time.Duration
	// MTU of the link (default 1500, as on most WAN paths).
	MTU int
}

// Link is a packet-level impaired network path between two network
// namespaces, A and B, for tests and benchmarks (Linux, root). Unlike
// the proxies it does not terminate anything: TCP and QUIC traverse it
// end to end, so the endpoints' stacks see the added delay as RTT, and
// lost packets as losses, exactly as on a long link.
//
// Each namespace has a TUN device, tun0, holding a point-to-point
// address (Addr). A bridge in this process reads every IP packet one
// device sends, holds it for the one-way delay (plus jitter, without
// reordering) and writes it into the other device. Loss comes from an
// nftables rule in each namespace on packets arriving over the link
// (numgen random), the bandwidth cap from an htb qdisc on each device's
// egress; this kernel has no netem qdisc, so the delay is the bridge's
// job. Cut makes the bridge drop every packet until Restore.
//
// Processes run inside a side with Command ("ip netns exec"), sockets of
// this process are created inside with Do. Close deletes the
// namespaces. A Link is safe for concurrent use.
type Link struct {
	ns   [2]string
	tun  [2]*os.File
	mtu  int
	mu   sync.Mutex // serializes Set
	opts LinkOptions

	delay  atomic.Int64 // ns
	jitter atomic.Int64 // ns
	cut    atomic.Bool
	dirs   [2]*direction // [A→B, B→A]
	wg     sync.WaitGroup
	closed atomic.Bool
}

// LinkStats counts packets per direction.
type LinkStats struct {
	Forwarded [2]int64 // packets delivered A→B ([0]) and B→A ([1])
	Bytes     [2]int64
	// Dropped by the bridge: while cut, or because more than its queue
	// limit was in flight. Loss and rate-cap drops happen in the
	// namespaces and are not counted here.
	Dropped [2]int64
}

var linkSeq atomic.Int64

// linkPrefix starts the name of every namespace a Link creates, followed
// by the creating process's id, so that namespaces left behind by a
// killed process can be recognised and removed.
const linkPrefix = "drpipe-link-"

// Addresses of the two ends (each namespace is private, so every Link
// uses the same pair).
var linkAddrs = [2]netip.Addr{netip.MustParseAddr("10.203.0.1"), netip.MustParseAddr("10.203.0.2")}

// ErrNeedRoot is the error NewLink returns when not running as root.
var ErrNeedRoot = errors.New("netem: a Link needs root (network namespaces, TUN devices, nftables, tc): run the tests or benchmarks as root")

// NewLink creates the two namespaces, their TUN devices, addresses,
// loss rules and rate limits, and starts the bridge.
func NewLink(o LinkOptions) (*Link, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNeedRoot
	}
	for _, c := range []string{"ip", "nft", "tc"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("netem: link needs %s: run scripts/deps.sh: %w", c, err)
		}
	}
	if o.MTU <= 0 {
		o.MTU = 1500
	}
	if o.MTU < 1280 || o.MTU > 65535 {
		return nil, fmt.Errorf("netem: link MTU %d out of range 1280..65535", o.MTU)
	}
	removeStaleNamespaces()
	seq := linkSeq.Add(1)
	l := &Link{mtu: o.MTU}
	for s := range 2 {
		l.ns[s] = fmt.Sprintf("%s%d-%d-%s", linkPrefix, os.Getpid(), seq, Side(s))
	}
	fail := func(err error) (*Link, error) {
		l.Close()
		return nil, err
	}
	for s := range 2 {
		if err := run("ip", "netns", "add", l.ns[s]); err != nil {
			l.ns[s] = ""
			return fail(err)
		}
		f, err := l.openTUN(Side(s))
		if err != nil {
			return fail(err)
		}
		l.tun[s] = f
		ns, me, peer := l.ns[s], linkAddrs[s].String(), linkAddrs[1-s].String()
		for _, args := range [][]string{
			{"-n", ns, "link", "set", "lo", "up"},
			{"-n", ns, "link", "set", "tun0", "mtu", strconv.Itoa(o.MTU), "txqueuelen", "10000", "up"},
			{"-n", ns, "addr", "add", me + "/32", "peer", peer + "/32", "dev", "tun0"},
		} {
			if err := run("ip", args...); err != nil {
				return fail(err)
			}
		}
	}
	l.dirs = [2]*direction{newDirection(l.tun[A], l.tun[B]), newDirection(l.tun[B], l.tun[A])}
	if err := l.Set(o); err != nil {
		return fail(err)
	}
	for i, d := range l.dirs {
		rng := rand.New(rand.NewPCG(uint64(seq), uint64(i)))
		l.wg.Add(2)
		go func() { defer l.wg.Done(); d.read(l, rng) }()
		go func() { defer l.wg.Done(); d.write() }()
	}
	return l, nil
}

// Namespace returns the name of side s's network namespace (for "ip netns
// exec").
func (l *Link) Namespace(s Side) string { return l.ns[s] }

// Addr returns side s's address on the link.
func (l *Link) Addr(s Side) netip.Addr { return linkAddrs[s] }

// Command returns a command that runs name inside side s's namespace.
func (l *Link) Command(ctx context.Context, s Side, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns[s], name}, args...)...)
}

// Do runs fn on an operating-system thread inside side s's namespace, so
// that sockets fn creates belong to that side; they keep working from any
// goroutine afterwards. The thread is discarded after fn.
func (l *Link) Do(s Side, fn func() error) error {
	return inNamespace(l.nsPath(s), fn)
}

func (l *Link) nsPath(s Side) string { return filepath.Join("/run/netns", l.ns[s]) }

// Options returns the link's current options.
func (l *Link) Options() LinkOptions {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opts
}

// Set changes delay, jitter, loss and rate (not the MTU) of both
// directions; packets already in flight keep their delay.
func (l *Link) Set(o LinkOptions) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o.Loss < 0 || o.Loss > 1 || o.Delay < 0 || o.Jitter < 0 || o.Rate < 0 {
		return fmt.Errorf("netem: link options out of range: %+v", o)
	}
	o.MTU = l.mtu
	for s := range 2 {
		if err := l.setLoss(Side(s), o.Loss); err != nil {
			return err
		}
		if err := l.setRate(Side(s), o.Rate, o.QueueDelay); err != nil {
			return err
		}
	}
	l.delay.Store(int64(o.Delay))
	l.jitter.Store(int64(o.Jitter))
	l.opts = o
	return nil
}

// setLoss replaces side s's nftables table: packets arriving over the
// link are dropped with probability p (in parts per million).
func (l *Link) setLoss(s Side, p float64) error {
	script := "table inet drpipe_link\ndelete table inet drpipe_link\n"
	if ppm := int64(p*1e6 + 0.5); ppm > 0 {
		script += fmt.Sprintf("table inet drpipe_link {\n chain loss {\n  type filter hook prerouting priority -300; policy accept;\n"+
			"  iifname \"tun0\" numgen random mod 1000000 < %d counter drop\n }\n}\n", ppm)
	}
	c := exec.Command("ip", "netns", "exec", l.ns[s], "nft", "-f", "-")
	c.Stdin = strings.NewReader(script)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("netem: set loss %g in %s: nft: %v: %s", p, l.ns[s], err, bytes.TrimSpace(out))
	}
	return nil
}

// setRate installs (or removes, for rate 0) an htb rate limit on side s's
// egress into the link, with a tail-drop queue of queueDelay of traffic.
func (l *Link) setRate(s Side, rate int64, queueDelay time.Duration) error {
	ns := l.ns[s]
	if rate == 0 {
		// Back to the default qdisc; "no qdisc" is not an error here.
		_ = exec.Command("tc", "-n", ns, "qdisc", "del", "dev", "tun0", "root").Run()
		return nil
	}
	if queueDelay <= 0 {
		queueDelay = 100 * time.Millisecond
	}
	limit := max(16, int(float64(rate)*queueDelay.Seconds())/l.mtu)
	bits := strconv.FormatInt(rate*8, 10) + "bit"
	burst := strconv.Itoa(max(2*l.mtu, int(rate/250))) // 4 ms of traffic, at least two packets
	for _, args := range [][]string{
		{"-n", ns, "qdisc", "replace", "dev", "tun0", "root", "handle", "1:", "htb", "default", "1"},
		{"-n", ns, "class", "replace", "dev", "tun0", "parent", "1:", "classid", "1:1", "htb", "rate", bits, "ceil", bits,
			"burst", burst, "cburst", burst, "quantum", strconv.Itoa(l.mtu + 14)},
		{"-n", ns, "qdisc", "replace", "dev", "tun0", "parent", "1:1", "handle", "10:", "pfifo", "limit", strconv.Itoa(limit)},
	} {
		if err := run("tc", args...); err != nil {
			return fmt.Errorf("netem: set rate %d B/s in %s: %w", rate, ns, err)
		}
	}
	return nil
}

// Cut drops every packet in both directions until Restore (packets
// already in flight are still delivered).
func (l *Link) Cut() { l.cut.Store(true) }

// Restore ends a Cut.
func (l *Link) Restore() { l.cut.Store(false) }

// Stats returns the bridge's counters.
func (l *Link) Stats() LinkStats {
	var st LinkStats
	for i, d := range l.dirs {
		if d == nil {
			continue
		}
		st.Forwarded[i] = d.fwd.Load()
		st.Bytes[i] = d.bytes.Load()
		st.Dropped[i] = d.dropped.Load()
	}
	return st
}

// Close stops the bridge and deletes the namespaces. Processes still
// running inside lose their network.
func (l *Link) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	for _, f := range l.tun {
		if f != nil {
			f.Close() // unblocks the readers
		}
	}
	for _, d := range l.dirs {
		if d != nil {
			d.close()
		}
	}
	l.wg.Wait()
	var errs []error
	for _, ns := range l.ns {
		if ns != "" {
			if err := run("ip", "netns", "del", ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// openTUN creates side s's TUN device inside its namespace and returns
// it, in non-blocking mode so reads integrate with the runtime poller.
func (l *Link) openTUN(s Side) (*os.File, error) {
	var f *os.File
	err := l.Do(s, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq("tun0")
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("create TUN device: %w", err)
		}
		f = os.NewFile(uintptr(fd), "tun0@"+l.ns[s])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netem: TUN device in %s: %w", l.ns[s], err)
	}
	return f, nil
}

// direction is one way of the bridge: a reader stamping packets with
// their delivery time and a writer delivering them in order.
type direction struct {
	src, dst *os.File
	q        chan packet
	done     chan struct{}
	fwd      atomic.Int64
	bytes    atomic.Int64
	dropped  atomic.Int64
}

type packet struct {
	due time.Time
	b   []byte
}

// maxInFlight bounds the packets the bridge holds per direction (beyond
// it packets are dropped): 64 Ki packets of up to 1500 bytes hold over a
// second of a gigabit link.
const maxInFlight = 1 << 16

func newDirection(src, dst *os.File) *direction {
	return &direction{src: src, dst: dst, q: make(chan packet, maxInFlight), done: make(chan struct{})}
}

func (d *direction) close() { close(d.done) }

func (d *direction) read(l *Link, rng *rand.Rand) {
	buf := make([]byte, 65536)
	var last time.Time
	for {
		n, err := d.src.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || l.closed.Load() {
				return
			}
			time.Sleep(time.Millisecond) // e.g. EIO while the device is being set up
			continue
		}
		if l.cut.Load() {
			d.dropped.Add(1)
			continue
		}
		delay, jitter := l.delay.Load(), l.jitter.Load()
		if delay == 0 && jitter == 0 && len(d.q) == 0 {
			// Nothing to hold back: deliver at once, saving the
			// hand-over to the writer (a packet the writer is still
			// delivering may be overtaken just after Set removed the
			// delay).
			if _, err := d.dst.Write(buf[:n]); err == nil {
				d.fwd.Add(1)
				d.bytes.Add(int64(n))
			}
			continue
		}
		due := time.Now().Add(time.Duration(delay))
		if jitter > 0 {
			due = due.Add(time.Duration(rng.Int64N(2*jitter+1) - jitter))
		}
		if due.Before(last) {
			due = last // no reordering
		}
		last = due
		select {
		case d.q <- packet{due: due, b: append([]byte(nil), buf[:n]...)}:
		default:
			d.dropped.Add(1)
		}
	}
}

func (d *direction) write() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var p packet
		select {
		case p = <-d.q:
		case <-d.done:
			return
		}
		if wait := time.Until(p.due); wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-d.done:
				return
			}
		}
		if _, err := d.dst.Write(p.b); err == nil {
			d.fwd.Add(1)
			d.bytes.Add(int64(len(p.b)))
		} else if errors.Is(err, os.ErrClosed) {
			return
		}
	}
}

// inNamespace runs fn on a locked thread moved into the network namespace
// at path. The thread is not unlocked, so the runtime discards it when
// the goroutine ends instead of reusing it in the wrong namespace.
func inNamespace(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := os.Open(path)
		if err != nil {
			errc <- fmt.Errorf("netem: open namespace: %w", err)
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netem: enter namespace %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// removeStaleNamespaces deletes namespaces of Links whose creating
// process is gone (killed before Close).
func removeStaleNamespaces() {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), linkPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			_ = run("ip", "netns", "del", e.Name())
		}
	}
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
