package tierstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/drpipe/drpipe/tiers"
)

// Op names a Backend method for fault matching.
type Op string

// The operations a Fault can target.
const (
	OpPut    Op = "put"
	OpLoad   Op = "load"
	OpStat   Op = "stat"
	OpList   Op = "list"
	OpRemove Op = "remove"
)

// FaultKind is what an injected fault does.
type FaultKind int

const (
	// FailBefore makes the operation return Fault.Err without reaching the
	// backend. It is also what any kind does on an operation it does not
	// apply to.
	FailBefore FaultKind = iota
	// FailAfter performs the operation on the backend, then returns
	// Fault.Err (if the operation itself succeeded): a Put that stored the
	// object but whose acknowledgement was lost, a Remove that removed.
	FailAfter
	// FailStream lets Fault.Offset bytes through, then fails the stream
	// with Fault.Err: for Put the reader handed to the backend, for Load
	// the reader handed to the callback. For List, the listing fails with
	// Fault.Err after Fault.Offset objects were reported.
	FailStream
	// Truncate silently shortens the data: Put stores only the first
	// Fault.Offset bytes under the full size's handle and reports success;
	// Load hands the callback only the first Fault.Offset bytes of the
	// range. Offset <= 0 means half the bytes. Applies to Put and Load.
	Truncate
	// Corrupt flips one bit at a position drawn from the seeded random
	// source (or at byte Fault.Offset-1 when Offset > 0): Put stores the
	// corrupted bytes and reports success; Load hands them to the
	// callback. Applies to Put and Load.
	Corrupt
)

// ErrInjected is the default error of a Fault; Faulty wraps it with
// tiers.Retriable so retry wrappers retry it.
var ErrInjected = errors.New("tierstest: injected fault")

// Fault describes one injected failure. Empty Op, Type and Name match any.
type Fault struct {
	Op   Op
	Type tiers.Type
	Name string
	Kind FaultKind
	// Err is the error to return (for FailBefore, FailAfter, FailStream).
	// Nil means tiers.Retriable(ErrInjected).
	Err error
	// Offset parameterises FailStream, Truncate and Corrupt (see there).
	Offset int64
	// Skip lets that many matching calls through before the fault fires.
	Skip int
	// Times is how often the fault fires; 0 means every time.
	Times int
	// Probability, when in (0, 1), makes each matching call fire with that
	// probability, drawn from the Faulty's seeded source.
	Probability float64
}

type faultState struct {
	Fault
	seen, fired int
}

// Faulty is a Backend wrapper that injects faults into chosen operations,
// for testing retries, verification and repair. Faults are matched in the
// order they were injected; the first one that fires wins. All randomness
// comes from the seed given to NewFaulty, so a failing test reproduces
// (with concurrent callers the order of calls, and thus which call a fault
// hits, may vary). Faulty is safe for concurrent use and hides optional
// interfaces of the wrapped backend.
type Faulty struct {
	be    tiers.Backend
	mu    sync.Mutex
	rng   *rand.Rand
	rules []*faultState
	fired int
}

var _ tiers.Backend = (*Faulty)(nil)

// NewFaulty wraps be; seed drives every random choice.
func NewFaulty(be tiers.Backend, seed uint64) *Faulty {
	return &Faulty{be: be, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Inject adds a fault.
func (f *Faulty) Inject(fl Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &faultState{Fault: fl})
}

// Reset removes all faults (the count of Fired is kept).
func (f *Faulty) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Fired returns how many faults have fired so far.
func (f *Faulty) Fired() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired
}

// Unwrap returns the wrapped backend.
func (f *Faulty) Unwrap() tiers.Backend { return f.be }

// match returns the fault to apply to this call, if any, with its error
// and, for Corrupt, a random number to place the flipped bit.
func (f *Faulty) match(op Op, h tiers.Handle) (fl Fault, rnd uint64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if (r.Op != "" && r.Op != op) || (r.Type != "" && r.Type != h.Type) || (r.Name != "" && r.Name != h.Name) {
			continue
		}
		if r.Times > 0 && r.fired >= r.Times {
			continue
		}
		r.seen++
		if r.seen <= r.Skip {
			continue
		}
		if r.Probability > 0 && r.Probability < 1 && f.rng.Float64() >= r.Probability {
			continue
		}
		r.fired++
		f.fired++
		fl = r.Fault
		if fl.Err == nil {
			fl.Err = tiers.Retriable(ErrInjected)
		}
		return fl, f.rng.Uint64(), true
	}
	return Fault{}, 0, false
}

func injected(op Op, h tiers.Handle, err error) error {
	return fmt.Errorf("%s %s: %w", op, h, err)
}

// Location returns the wrapped backend's location.
func (f *Faulty) Location() string { return f.be.Location() }

// Close closes the wrapped backend.
func (f *Faulty) Close() error { return f.be.Close() }

// Put stores through the wrapped backend, subject to faults.
func (f *Faulty) Put(ctx context.Context, h tiers.Handle, rd io.Reader, size int64) error {
	fl, rnd, ok := f.match(OpPut, h)
	if !ok {
		return f.be.Put(ctx, h, rd, size)
	}
	switch fl.Kind {
	case FailAfter:
		if err := f.be.Put(ctx, h, rd, size); err != nil {
			return err
		}
		return injected(OpPut, h, fl.Err)
	case FailStream:
		return f.be.Put(ctx, h, &streamFault{r: rd, left: fl.Offset, err: fl.Err}, size)
	case Truncate, Corrupt:
		b, err := io.ReadAll(io.LimitReader(rd, size+1))
		if err != nil {
			return err
		}
		if int64(len(b)) != size {
			// Let the backend report the size mismatch.
			return f.be.Put(ctx, h, bytes.NewReader(b), size)
		}
		b = mangle(fl, rnd, b)
		return f.be.Put(ctx, h, bytes.NewReader(b), int64(len(b)))
	default:
		return injected(OpPut, h, fl.Err)
	}
}

// mangle applies a Truncate or Corrupt fault to a copy of b.
func mangle(fl Fault, rnd uint64, b []byte) []byte {
	if fl.Kind == Truncate {
		n := fl.Offset
		if n <= 0 {
			n = int64(len(b) / 2)
		}
		return b[:min(n, int64(len(b)))]
	}
	if len(b) == 0 {
		return b
	}
	b = bytes.Clone(b)
	pos := int64(rnd>>3) % int64(len(b))
	if fl.Offset > 0 {
		pos = min(fl.Offset, int64(len(b))) - 1
	}
	b[pos] ^= 1 << (rnd & 7)
	return b
}

// Load loads through the wrapped backend, subject to faults.
func (f *Faulty) Load(ctx context.Context, h tiers.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	fl, rnd, ok := f.match(OpLoad, h)
	if !ok {
		return f.be.Load(ctx, h, offset, length, fn)
	}
	switch fl.Kind {
	case FailAfter:
		if err := f.be.Load(ctx, h, offset, length, fn); err != nil {
			return err
		}
		return injected(OpLoad, h, fl.Err)
	case FailStream:
		return f.be.Load(ctx, h, offset, length, func(rd io.Reader) error {
			return fn(&streamFault{r: rd, left: fl.Offset, err: fl.Err})
		})
	case Truncate, Corrupt:
		return f.be.Load(ctx, h, offset, length, func(rd io.Reader) error {
			b, err := io.ReadAll(rd)
			if err != nil {
				return err
			}
			return fn(bytes.NewReader(mangle(fl, rnd, b)))
		})
	default:
		return injected(OpLoad, h, fl.Err)
	}
}

// Stat stats through the wrapped backend, subject to faults.
func (f *Faulty) Stat(ctx context.Context, h tiers.Handle) (tiers.ObjectInfo, error) {
	fl, _, ok := f.match(OpStat, h)
	if !ok {
		return f.be.Stat(ctx, h)
	}
	if fl.Kind == FailAfter {
		if _, err := f.be.Stat(ctx, h); err != nil {
			return tiers.ObjectInfo{}, err
		}
	}
	return tiers.ObjectInfo{}, injected(OpStat, h, fl.Err)
}

// List lists through the wrapped backend, subject to faults; a fault's
// Name is not matched for List (the handle has only a Type).
func (f *Faulty) List(ctx context.Context, t tiers.Type, fn func(tiers.ObjectInfo) error) error {
	h := tiers.Handle{Type: t}
	fl, _, ok := f.match(OpList, h)
	if !ok {
		return f.be.List(ctx, t, fn)
	}
	switch fl.Kind {
	case FailAfter:
		if err := f.be.List(ctx, t, fn); err != nil {
			return err
		}
		return injected(OpList, h, fl.Err)
	case FailStream:
		n := fl.Offset
		var failed error
		err := f.be.List(ctx, t, func(oi tiers.ObjectInfo) error {
			if n <= 0 {
				failed = injected(OpList, h, fl.Err)
				return failed
			}
			n--
			return fn(oi)
		})
		if err == nil && failed == nil {
			// Fewer objects than Offset: fail at the end.
			return injected(OpList, h, fl.Err)
		}
		return err
	default:
		return injected(OpList, h, fl.Err)
	}
}

// Remove removes through the wrapped backend, subject to faults.
func (f *Faulty) Remove(ctx context.Context, h tiers.Handle) error {
	fl, _, ok := f.match(OpRemove, h)
	if !ok {
		return f.be.Remove(ctx, h)
	}
	if fl.Kind == FailAfter {
		if err := f.be.Remove(ctx, h); err != nil {
			return err
		}
	}
	return injected(OpRemove, h, fl.Err)
}

// streamFault passes left bytes of r, then fails with err.
type streamFault struct {
	r    io.Reader
	left int64
	err  error
}

func (s *streamFault) Read(p []byte) (int, error) {
	if s.left <= 0 {
		return 0, s.err
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	return n, err
}

// SetClock passes now to the wrapped backend when it takes a clock
// (Memory.SetClock).
func (f *Faulty) SetClock(now func() time.Time) {
	if c, ok := f.be.(interface{ SetClock(func() time.Time) }); ok {
		c.SetClock(now)
	}
}
