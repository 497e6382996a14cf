package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/repo"
	"github.com/drpipe/drpipe/tiers"
)

// Target is a tier a run can inspect and change. BackendTarget serves
// local directories and S3 buckets; the command line wires DR-site and
// tape targets.
type Target interface {
	// State inspects the tier.
	State(ctx context.Context, cat *Catalog) (*TierState, error)
	// Send makes the tier hold every object of view (a Subset of the
	// primary) for the given snapshots; it returns what it transferred.
	Send(ctx context.Context, view tiers.Backend, snaps []id.ID) (objects int, bytes int64, err error)
	// Forget removes snapshot records (and, where the target is
	// configured to, prunes what they alone used).
	Forget(ctx context.Context, snaps []id.ID) error
	// Transition moves shards (by object name) to storage classes.
	Transition(ctx context.Context, moves map[string]string) error
}

// ErrUnsupported is returned by targets for operations they cannot do.
var ErrUnsupported = errors.New("not supported by this tier")

// RunReport says what a run did per tier.
type RunReport struct {
	Plan  *Plan     `json:"plan"`
	Tiers []TierRun `json:"tiers"`
	Took  float64   `json:"duration_s"`
	After *Plan     `json:"after,omitempty"`
}

// TierRun is one tier's outcome.
type TierRun struct {
	Name        string `json:"name"`
	Copied      int    `json:"snapshots_copied"`
	Objects     int    `json:"objects_sent"`
	Bytes       int64  `json:"bytes_sent"`
	Forgotten   int    `json:"snapshots_forgotten"`
	Transitions int    `json:"shards_transitioned"`
	Skipped     string `json:"skipped,omitempty"`
	Error       string `json:"error,omitempty"`
}

// RunProgress receives a line per step (may be nil).
type RunProgress func(tier, step string)

// Run carries out the plan: every secondary tier first receives what it
// lacks, then forgets what its rules no longer keep and transitions
// storage classes; the primary forgets last, and only if every tier that
// wants its snapshots got them. Running again right after does nothing.
// The error joins what failed, an unreachable tier included.
func Run(ctx context.Context, cfg *Config, r *repo.Repository, targets map[string]Target, now time.Time, progress RunProgress) (*RunReport, error) {
	start := time.Now()
	if progress == nil {
		progress = func(string, string) {}
	}
	cat, err := CatalogOf(ctx, r)
	if err != nil {
		return nil, err
	}
	states, err := inspect(ctx, cfg, cat, targets)
	if err != nil {
		return nil, err
	}
	pl, err := MakePlan(cfg, cat, states, now)
	if err != nil {
		return nil, err
	}
	rep := &RunReport{Plan: pl}
	var errs []error
	secondaryFailed := false
	for i := range pl.Tiers {
		tp := &pl.Tiers[i]
		if tp.Kind == KindPrimary {
			continue
		}
		tr := TierRun{Name: tp.Name}
		if tp.Unreachable != "" {
			// Nothing reached this tier: the run failed for it, which
			// its exit code says (a cron job must not report success).
			tr.Skipped = "unreachable: " + tp.Unreachable
			errs = append(errs, fmt.Errorf("tier %s is unreachable, nothing was copied to it: %s", tp.Name, tp.Unreachable))
			secondaryFailed = true
			rep.Tiers = append(rep.Tiers, tr)
			continue
		}
		if err := runTier(ctx, r, cat, tp, targets[tp.Name], &tr, progress); err != nil {
			tr.Error = err.Error()
			errs = append(errs, fmt.Errorf("tier %s: %w", tp.Name, err))
			secondaryFailed = true
		}
		rep.Tiers = append(rep.Tiers, tr)
	}
	for i := range pl.Tiers {
		tp := &pl.Tiers[i]
		if tp.Kind != KindPrimary {
			continue
		}
		tr := TierRun{Name: tp.Name}
		switch {
		case len(tp.Forget) == 0:
		case secondaryFailed:
			tr.Skipped = "another tier failed; the primary keeps its snapshots until every tier has its copies"
		default:
			progress(tp.Name, fmt.Sprintf("forget %d snapshots", len(tp.Forget)))
			if err := targets[tp.Name].Forget(ctx, refIDs(tp.Forget)); err != nil {
				tr.Error = err.Error()
				errs = append(errs, fmt.Errorf("tier %s: %w", tp.Name, err))
			} else {
				tr.Forgotten = len(tp.Forget)
			}
		}
		rep.Tiers = append(rep.Tiers, tr)
	}
	rep.Took = time.Since(start).Seconds()
	return rep, errors.Join(errs...)
}

func inspect(ctx context.Context, cfg *Config, cat *Catalog, targets map[string]Target) (map[string]*TierState, error) {
	states := map[string]*TierState{}
	for _, t := range cfg.Tiers {
		if t.Kind == KindPrimary {
			continue
		}
		tg := targets[t.Name]
		if tg == nil {
			return nil, fmt.Errorf("tier %s: no target configured", t.Name)
		}
		st, err := tg.State(ctx, cat)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			st = &TierState{Unreachable: err.Error()}
		}
		states[t.Name] = st
	}
	return states, nil
}

// PlanFor inspects the tiers and computes the plan without changing
// anything (`drpipe tier plan`).
func PlanFor(ctx context.Context, cfg *Config, r *repo.Repository, targets map[string]Target, now time.Time) (*Plan, error) {
	cat, err := CatalogOf(ctx, r)
	if err != nil {
		return nil, err
	}
	states, err := inspect(ctx, cfg, cat, targets)
	if err != nil {
		return nil, err
	}
	return MakePlan(cfg, cat, states, now)
}

func runTier(ctx context.Context, r *repo.Repository, cat *Catalog, tp *TierPlan, tg Target, tr *TierRun, progress RunProgress) error {
	if len(tp.Copy) > 0 || tp.CopyShards > 0 {
		progress(tp.Name, fmt.Sprintf("copy %d snapshots (%d shards, %s)", len(tp.Copy), tp.CopyShards, mib(tp.CopyBytes)))
		view, err := SubsetFor(ctx, r, cat, tp)
		if err != nil {
			return err
		}
		n, b, err := tg.Send(ctx, view, refIDs(tp.Copy))
		tr.Objects, tr.Bytes = n, b
		if err != nil {
			return err
		}
		tr.Copied = len(tp.Copy)
	}
	if len(tp.Forget) > 0 && tp.Kind != KindSite && tp.Kind != KindTape {
		progress(tp.Name, fmt.Sprintf("forget %d snapshots", len(tp.Forget)))
		if err := tg.Forget(ctx, refIDs(tp.Forget)); err != nil {
			return err
		}
		tr.Forgotten = len(tp.Forget)
	}
	if len(tp.moves) > 0 {
		progress(tp.Name, fmt.Sprintf("transition %d shards", len(tp.moves)))
		if err := tg.Transition(ctx, tp.moves); err != nil {
			return err
		}
		tr.Transitions = len(tp.moves)
	}
	return nil
}

func refIDs(rs []SnapRef) []id.ID {
	out := make([]id.ID, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// StorageClassSetter is implemented by tiers with storage classes (S3).
type StorageClassSetter interface {
	SetStorageClass(ctx context.Context, h tiers.Handle, class string) error
}

// BackendTarget is a tier that stores the repository as objects: a local
// directory or an S3 bucket. It needs the repository key (Open) to read
// snapshots only it still holds and to forget and prune.
type BackendTarget struct {
	Backend tiers.Backend
	// Open unlocks the tier's copy of the repository.
	Open func(tiers.Backend) (*repo.Repository, error)
	// OpenReplica, when set, unlocks the tier's copy for announcing a
	// copy into it, with the key slots of src (the data being copied)
	// where the tier's do not open, and src's config where the tier is
	// empty (repo.OpenReplica).
	OpenReplica func(tier, src tiers.Backend) (*repo.Repository, error)
	// Primary, when set with OpenReplica, is the primary's backend:
	// State and Forget unlock a tier that holds the repository with its
	// key slots where the tier's do not open yet (a first copy
	// interrupted after the config, a slot added at the primary since
	// the last copy). Only a copy brings the slots along, and a tier that
	// could not be inspected is never copied into.
	Primary tiers.Backend
	// Prune, when set, prunes after forgetting, with these options.
	Prune *repo.PruneOptions
	// Classes sets storage classes (nil: the tier has none).
	Classes StorageClassSetter
	Copy    tiers.CopyOptions

	// ended names the copy sessions Send ended but could not remove
	// (object lock): Forget's prune does not wait for them.
	ended []string
}

// State implements Target.
func (b *BackendTarget) State(ctx context.Context, cat *Catalog) (*TierState, error) {
	return BackendState(ctx, b.Backend, cat, func(be tiers.Backend) (*repo.Repository, error) { return b.openTier(ctx, be) })
}

// openTier unlocks the repository the tier holds: with Open, or, where
// OpenReplica and Primary are set, with the primary's key slots too. An
// empty tier is not opened (OpenReplica would open it as the primary's).
func (b *BackendTarget) openTier(ctx context.Context, be tiers.Backend) (*repo.Repository, error) {
	if b.OpenReplica == nil || b.Primary == nil {
		return b.Open(be)
	}
	if _, err := repo.ReadConfig(ctx, be); err != nil {
		return nil, err
	}
	return b.OpenReplica(be, b.Primary)
}

// Send implements Target with tiers.Copy (verified, data before metadata).
// The copy announces itself in the tier (repo.BeginCopySession), so that
// a prune of the tier running meanwhile (another tier run, drpipe prune)
// removes no pack the copy skips as present and then names in a
// snapshot, nor the packs it stores before the index naming them. An
// empty tier is announced to as well when OpenReplica is set: the config
// and key slots, copied first, make it prunable long before the copy is
// complete.
func (b *BackendTarget) Send(ctx context.Context, view tiers.Backend, _ []id.ID) (int, int64, error) {
	o := b.Copy
	if b.Open != nil || b.OpenReplica != nil {
		_, err := repo.ReadConfig(ctx, b.Backend)
		empty := errors.Is(err, repo.ErrNotRepository)
		if err != nil && !empty {
			// Not an empty tier: a copy must not go ahead unannounced.
			return 0, 0, err
		}
		if !empty || b.OpenReplica != nil {
			var r *repo.Repository
			if b.OpenReplica != nil {
				r, err = b.OpenReplica(b.Backend, view)
			} else {
				r, err = b.Open(b.Backend)
			}
			if err != nil {
				return 0, 0, fmt.Errorf("open the tier's repository to announce the copy: %w", err)
			}
			defer r.Close()
			host, _ := os.Hostname()
			sess, err := r.BeginCopySession(ctx, host)
			if err != nil {
				return 0, 0, err
			}
			defer func() {
				if sess.End(context.WithoutCancel(ctx)) != nil {
					// The object stays (object lock) and reads as a
					// running copy until it goes stale.
					b.ended = append(b.ended, sess.Name())
				}
			}()
			o.BeforeIndex = sess.Check
		}
	}
	st, err := tiers.Copy(ctx, view, b.Backend, o)
	if st == nil {
		return 0, 0, err
	}
	var n int
	var bytes int64
	for _, ts := range st.ByType {
		n += ts.Copied
		bytes += ts.CopiedBytes
	}
	return n, bytes, err
}

// Forget implements Target.
func (b *BackendTarget) Forget(ctx context.Context, snaps []id.ID) error {
	r, err := b.openTier(ctx, b.Backend)
	if err != nil {
		return err
	}
	defer r.Close()
	for _, x := range snaps {
		if err := r.ForgetSnapshot(ctx, x); err != nil && !errors.Is(err, tiers.ErrNotFound) {
			return err
		}
	}
	if b.Prune != nil {
		po := *b.Prune
		po.Ended = append(slices.Clip(po.Ended), b.ended...)
		if _, err := r.Prune(ctx, po); err != nil {
			return err
		}
	}
	return nil
}

// Transition implements Target.
func (b *BackendTarget) Transition(ctx context.Context, moves map[string]string) error {
	if b.Classes == nil {
		return fmt.Errorf("%s: storage classes: %w", b.Backend.Location(), ErrUnsupported)
	}
	for name, class := range moves {
		if err := b.Classes.SetStorageClass(ctx, tiers.Handle{Type: tiers.TypeData, Name: name}, class); err != nil {
			return err
		}
	}
	return nil
}

// PrimaryTarget applies the primary tier's retention to the repository
// backups write to.
type PrimaryTarget struct {
	Repo  *repo.Repository
	Prune *repo.PruneOptions
}

// State implements Target (the catalog is the primary's state).
func (p *PrimaryTarget) State(ctx context.Context, cat *Catalog) (*TierState, error) {
	return &TierState{Snaps: cat.Snaps}, nil
}

// Send implements Target: nothing is sent to the primary.
func (p *PrimaryTarget) Send(context.Context, tiers.Backend, []id.ID) (int, int64, error) {
	return 0, 0, ErrUnsupported
}

// Forget implements Target.
func (p *PrimaryTarget) Forget(ctx context.Context, snaps []id.ID) error {
	for _, x := range snaps {
		if err := p.Repo.ForgetSnapshot(ctx, x); err != nil && !errors.Is(err, tiers.ErrNotFound) {
			return err
		}
	}
	if p.Prune != nil {
		_, err := p.Repo.Prune(ctx, *p.Prune)
		return err
	}
	return nil
}

// Transition implements Target.
func (p *PrimaryTarget) Transition(context.Context, map[string]string) error { return ErrUnsupported }
