package repo

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/drpipe/drpipe/internal/hugepage"
	"github.com/drpipe/drpipe/internal/id"
	"github.com/drpipe/drpipe/tiers"
)

// KeyFileVersion is the format version of key files (keys/<id>).
const KeyFileVersion = 1

// KDFParams are the Argon2id parameters of a key slot. They are stored in
// the key file, so they can be raised for new slots without breaking old
// ones.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDF is used for new key slots: Argon2id with 64 MiB, 2 passes and
// 2 lanes (about 0.1 s on a current core; more than 3x the OWASP minimum
// of 19 MiB × 2 passes). Parameters are stored per slot, so they can be
// raised later without breaking existing slots.
var DefaultKDF = KDFParams{Time: 2, MemoryKiB: 64 * 1024, Threads: 2}

// ErrWrongPassword is returned when no key slot opens with the password.
var ErrWrongPassword = errors.New("wrong password or key file: no key slot of the repository opens with it")

// keyFile is the JSON stored as keys/<sha256 of the file>.
type keyFile struct {
	Version  int       `json:"version"`
	Created  time.Time `json:"created"`
	Label    string    `json:"label"`
	Host     string    `json:"host,omitempty"`
	Username string    `json:"username,omitempty"`
	KDF      string    `json:"kdf"`
	KDFParams
	Salt []byte `json:"salt"`
	// Data is the master key JSON sealed with the Argon2id-derived key.
	Data []byte `json:"data"`
}

// KeyInfo describes a key slot for listing. It holds no secret.
type KeyInfo struct {
	ID      id.ID     `json:"id"`
	Label   string    `json:"label"`
	Created time.Time `json:"created"`
	Host    string    `json:"host,omitempty"`
	User    string    `json:"username,omitempty"`
	Current bool      `json:"current"`
	// Damaged says why the slot cannot be used (it is not a key slot, or
	// its content does not match its name); empty for an intact slot.
	Damaged string `json:"damaged,omitempty"`
}

// deriveWrapKey runs the KDF. Its work area (64 MiB by default, touched in
// random order) is placed on huge pages where the system allows
// (hugepage.Prime), which halves the time every command spends unlocking
// the repository on this project's test machine; the collection afterwards
// hands the area back at once, for the pipeline buffers that follow.
func deriveWrapKey(password []byte, salt []byte, p KDFParams) []byte {
	primed := hugepage.Prime(int(p.MemoryKiB) * 1024)
	k := argon2IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, 32)
	if primed {
		runtime.GC()
	}
	return k
}

// argon2IDKey is the KDF (a variable so tests can see which slots it
// runs for).
var argon2IDKey = argon2.IDKey

// Bounds on a key slot's KDF parameters. Anyone who can write the
// repository can add a key slot, and every client runs the KDF of a slot
// before it can tell whether the slot is genuine, so the bounds limit
// what a planted slot costs: at most maxKDFMemoryKiB (16 times the
// default) and maxKDFTime passes. Slots are also tried cheapest first
// (unlock), so a planted slot that costs more than a genuine one is never
// run when the password is right.
const (
	maxKDFTime      = 64
	minKDFMemoryKiB = 8
	maxKDFMemoryKiB = 1 << 20 // 1 GiB
)

// cost orders key slots for unlocking: memory × passes.
func (p KDFParams) cost() uint64 { return uint64(p.Time) * uint64(p.MemoryKiB) }

// sealKeyFile wraps mk with password in a new key file and returns the
// encoded bytes.
func sealKeyFile(mk *MasterKey, password []byte, label string, p KDFParams, now time.Time) ([]byte, error) {
	if len(password) == 0 {
		return nil, errors.New("empty password: give a password with --password-file or DRPIPE_PASSWORD")
	}
	kf := keyFile{Version: KeyFileVersion, Created: now.UTC(), Label: label, KDF: "argon2id", KDFParams: p}
	kf.Host, _ = os.Hostname()
	kf.Username = os.Getenv("USER")
	kf.Salt = make([]byte, 32)
	if _, err := rand.Read(kf.Salt); err != nil {
		return nil, fmt.Errorf("generate salt: %w", err)
	}
	a, err := newAEAD(deriveWrapKey(password, kf.Salt, p))
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(mk)
	if err != nil {
		return nil, err
	}
	kf.Data = seal(a, nil, plain, nil) // its own key, derived from the password
	return json.MarshalIndent(kf, "", "  ")
}

// openKeyFile unwraps a key file with password.
func openKeyFile(raw []byte, password []byte) (*MasterKey, *keyFile, error) {
	var kf keyFile
	if err := json.Unmarshal(raw, &kf); err != nil {
		return nil, nil, fmt.Errorf("key file is not valid JSON: %w", err)
	}
	if kf.Version != KeyFileVersion {
		return nil, nil, fmt.Errorf("%w: key file version %d (this drpipe reads %d)", ErrUnsupportedVersion, kf.Version, KeyFileVersion)
	}
	if kf.KDF != "argon2id" {
		return nil, nil, fmt.Errorf("key file uses unknown KDF %q", kf.KDF)
	}
	// Bound the parameters so a hostile key file cannot make us allocate
	// absurd memory or spin for hours.
	if kf.Time == 0 || kf.Time > maxKDFTime || kf.MemoryKiB < minKDFMemoryKiB || kf.MemoryKiB > maxKDFMemoryKiB || kf.Threads == 0 || len(kf.Salt) < 16 || len(kf.Salt) > 256 {
		return nil, nil, fmt.Errorf("key file has out-of-range KDF parameters (time %d, memory %d KiB, threads %d, salt %d bytes)", kf.Time, kf.MemoryKiB, kf.Threads, len(kf.Salt))
	}
	a, err := newAEAD(deriveWrapKey(password, kf.Salt, kf.KDFParams))
	if err != nil {
		return nil, nil, err
	}
	plain, err := open(a, nil, kf.Data, nil)
	if err != nil {
		return nil, nil, ErrWrongPassword
	}
	mk := &MasterKey{}
	if err := json.Unmarshal(plain, mk); err != nil {
		return nil, nil, fmt.Errorf("decrypted master key is malformed: %w", err)
	}
	return mk, &kf, mk.init()
}

// unlock tries every key slot with password and returns the master key and
// the id of the slot that opened.
func unlock(ctx context.Context, be tiers.Backend, password []byte) (*MasterKey, id.ID, error) {
	if len(password) == 0 {
		return nil, id.ID{}, errors.New("no password given: use --password-file FILE or set DRPIPE_PASSWORD")
	}
	var names []string
	err := be.List(ctx, tiers.TypeKey, func(oi tiers.ObjectInfo) error {
		names = append(names, oi.Handle.Name)
		return nil
	})
	if err != nil {
		return nil, id.ID{}, fmt.Errorf("list key slots in %s: %w", be.Location(), err)
	}
	if len(names) == 0 {
		return nil, id.ID{}, fmt.Errorf("repository %s has no key slots: it is damaged or not a drpipe repository", be.Location())
	}
	sort.Strings(names)
	// Read every slot's KDF parameters first and try the cheapest slots
	// first: a slot planted with expensive parameters then never runs
	// before a genuine, cheaper one that opens. Only the parameters are
	// kept, so many slots cost little memory.
	type slot struct {
		name string
		cost uint64
	}
	slots := make([]slot, 0, len(names))
	for _, n := range names {
		var kf keyFile
		raw, err := loadLimited(ctx, be, tiers.Handle{Type: tiers.TypeKey, Name: n}, maxSmallObject)
		if err != nil || json.Unmarshal(raw, &kf) != nil {
			slots = append(slots, slot{n, 0}) // reported when tried
			continue
		}
		slots = append(slots, slot{n, kf.KDFParams.cost()})
	}
	sort.SliceStable(slots, func(i, j int) bool { return slots[i].cost < slots[j].cost })
	var lastErr error = ErrWrongPassword
	refused := false // an intact slot did not open with the password
	// A slot the storage failed to read may be the one the password
	// opens: then the password is not known to be wrong.
	var unread error
	for _, s := range slots {
		n := s.name
		h := tiers.Handle{Type: tiers.TypeKey, Name: n}
		raw, err := loadLimited(ctx, be, h, maxSmallObject)
		if err != nil {
			lastErr = fmt.Errorf("read key slot %s: %w", n, err)
			if !errors.Is(err, tiers.ErrNotFound) && !errors.Is(err, ErrTooLarge) && unread == nil {
				unread = lastErr
			}
			continue
		}
		kid, err := id.Parse(n)
		if err != nil || id.Hash(raw) != kid {
			lastErr = fmt.Errorf("key slot %s: content does not match its name (damaged)", n)
			continue
		}
		mk, _, err := openKeyFile(raw, password)
		if err == nil {
			return mk, kid, nil
		}
		if errors.Is(err, ErrWrongPassword) {
			refused = true
		} else {
			lastErr = fmt.Errorf("key slot %s: %w", n, err)
		}
	}
	if unread != nil {
		return nil, id.ID{}, fmt.Errorf("no key slot that could be read opens with the password, but one could not be read and may be the one it opens: %w; try again once %s can be read", unread, be.Location())
	}
	if refused && lastErr != ErrWrongPassword {
		// The password is what is wrong; a damaged or foreign slot beside
		// the intact ones is worth a mention, not the verdict.
		return nil, id.ID{}, fmt.Errorf("%w (besides, %v)", ErrWrongPassword, lastErr)
	}
	return nil, id.ID{}, lastErr
}

// AddKey adds a key slot that opens the repository with password (a
// password or the contents of a key file). label describes the slot
// ("password", "keyfile", or the operator's text).
func (r *Repository) AddKey(ctx context.Context, password []byte, label string) (id.ID, error) {
	raw, err := sealKeyFile(r.key, password, label, r.kdf, r.now())
	if err != nil {
		return id.ID{}, err
	}
	kid := id.Hash(raw)
	if err := tiers.PutBytes(ctx, r.be, tiers.Handle{Type: tiers.TypeKey, Name: kid.String()}, raw); err != nil {
		return id.ID{}, fmt.Errorf("store key slot %s: %w", kid.Short(), err)
	}
	return kid, nil
}

// ListKeys returns the key slots without opening them. A damaged slot is
// listed with the reason in Damaged, so that it can be removed; one
// removed after the listing passed its name is left out.
func (r *Repository) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	err := r.be.List(ctx, tiers.TypeKey, func(oi tiers.ObjectInfo) error {
		raw, err := loadLimited(ctx, r.be, oi.Handle, maxSmallObject)
		if errors.Is(err, tiers.ErrNotFound) {
			return nil // removed since the listing (drpipe key remove)
		}
		if err != nil && !errors.Is(err, ErrTooLarge) {
			return fmt.Errorf("read key slot %s: %w", oi.Handle.Name, err)
		}
		kid, perr := id.Parse(oi.Handle.Name)
		info := KeyInfo{ID: kid, Current: perr == nil && kid == r.keyID}
		var kf keyFile
		switch {
		case perr != nil:
			info.Damaged = fmt.Sprintf("%q is not a key slot name: remove the object by hand", oi.Handle.Name)
		case err != nil:
			info.Damaged = err.Error()
		case id.Hash(raw) != kid:
			info.Damaged = "content does not match its name"
		default:
			if err := json.Unmarshal(raw, &kf); err != nil {
				info.Damaged = fmt.Sprintf("not a key slot: %v", err)
			}
		}
		info.Label, info.Created, info.Host, info.User = kf.Label, kf.Created, kf.Host, kf.Username
		out = append(out, info)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}

// RemoveKey deletes a key slot. The slot used to open this repository
// cannot be removed, and a slot removed while another session removed this
// session's own is put back, so at least one working slot always remains.
func (r *Repository) RemoveKey(ctx context.Context, kid id.ID) error {
	if kid == r.keyID {
		return errors.New("refusing to remove the key slot this session was opened with: open the repository with another password first")
	}
	h := tiers.Handle{Type: tiers.TypeKey, Name: kid.String()}
	own := tiers.Handle{Type: tiers.TypeKey, Name: r.keyID.String()}
	// Another session may be removing this session's own slot at the same
	// time (each protects only its own): both could succeed and leave no
	// slot, and the master key would be lost. So this session's slot must
	// exist before, and still exist after; if it vanished meanwhile, the
	// removed slot is put back.
	if _, err := r.be.Stat(ctx, own); err != nil {
		return fmt.Errorf("refusing to remove key slot %s: the slot this session was opened with (%s) is gone (%w); "+
			"another session removed it, check with 'drpipe key list' before removing more", kid.Short(), r.keyID.Short(), err)
	}
	raw, err := loadLimited(ctx, r.be, h, maxSmallObject)
	// A slot too large to be one is damaged: it opens nothing, and is
	// not put back below.
	tooLarge := errors.Is(err, ErrTooLarge)
	if err != nil && !tooLarge {
		return fmt.Errorf("key slot %s: %w", kid.Short(), err)
	}
	if err := r.be.Remove(ctx, h); err != nil {
		return err
	}
	if _, err := r.be.Stat(ctx, own); err != nil {
		if tooLarge {
			return fmt.Errorf("damaged key slot %s removed, and the slot this session was opened with (%s) was removed meanwhile by another session (%w); check with 'drpipe key list'", kid.Short(), r.keyID.Short(), err)
		}
		if perr := tiers.PutBytes(context.WithoutCancel(ctx), r.be, h, raw); perr != nil {
			return fmt.Errorf("key slot %s removed while another session removed this session's slot %s, and putting it back failed (%v): "+
				"add a password now with 'drpipe key add' from this or another open session, or the repository may have no key slot left", kid.Short(), r.keyID.Short(), perr)
		}
		return fmt.Errorf("key slot %s was put back: the slot this session was opened with (%s) was removed meanwhile by another session (%w); check with 'drpipe key list'", kid.Short(), r.keyID.Short(), err)
	}
	return nil
}
