package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultRetention is how long a kodnyckel is kept when a project names no
// date: about three months, so that the researcher can check the data.
const DefaultRetention = 90 * 24 * time.Hour

// deleteGrace is added to a project's retention for the store's own
// backstop deletion, so that it never runs before the sweeper.
const deleteGrace = 7 * 24 * time.Hour

// ProjectSpec is what a new project is created with.
type ProjectSpec struct {
	ID     string
	EPMDnr string // the ethics approval's diary number, such as "2025-01234-01"
	// RetainUntil is when the kodnyckel is destroyed; zero means
	// DefaultRetention from now.
	RetainUntil time.Time
}

// Project is a project's metadata. It holds no identity numbers and no keys.
type Project struct {
	ID          string    `json:"id"`
	EPMDnr      string    `json:"epm_dnr"`
	Created     time.Time `json:"created"`
	RetainUntil time.Time `json:"retain_until"`
	Hold        bool      `json:"hold"`
	HoldReason  string    `json:"hold_reason,omitempty"`
	// Destroying is set when destruction starts; from then on the
	// kodnyckel cannot be used.
	Destroying bool `json:"destroying,omitempty"`
	// Changes lists retention extensions and holds, with their reasons.
	Changes []Change `json:"changes,omitempty"`
}

// Change records one change of a project's retention.
type Change struct {
	At     time.Time `json:"at"`
	Action string    `json:"action"` // "extend", "hold", "release-hold"
	Reason string    `json:"reason"`
	Until  time.Time `json:"until,omitzero"`
}

// secrets are a project's keys.
type secrets struct {
	OrderKey []byte `json:"order_key"` // HMAC key of the keyed order
	OPRFSeed []byte `json:"oprf_seed"` // seed of the project's OPRF key
}

func (p *Project) pathMeta() PathMeta {
	return PathMeta{Project: p.ID, RetainUntil: p.RetainUntil, DeleteAfter: p.RetainUntil.Sub(p.Created) + deleteGrace}
}

// CreateProject creates a project with fresh keys and an empty mapping.
func (k *Keystore) CreateProject(ctx context.Context, spec ProjectSpec) (Project, error) {
	if err := checkProjectID(spec.ID); err != nil {
		return Project{}, err
	}
	if strings.TrimSpace(spec.EPMDnr) == "" {
		return Project{}, fmt.Errorf("%w: project %q: EPM dnr is required", ErrInvalidArgument, spec.ID)
	}
	now := k.clock.Now().UTC()
	p := Project{ID: spec.ID, EPMDnr: spec.EPMDnr, Created: now, RetainUntil: spec.RetainUntil.UTC()}
	if p.RetainUntil.IsZero() {
		p.RetainUntil = now.Add(DefaultRetention)
	}
	if !p.RetainUntil.After(now) {
		return Project{}, fmt.Errorf("%w: project %q: retain_until %s is not in the future", ErrInvalidArgument, spec.ID, p.RetainUntil.Format(time.DateOnly))
	}
	if _, err := k.store.Read(ctx, tombstonePath(spec.ID)); err == nil {
		return Project{}, fmt.Errorf("%w: project %q was destroyed; choose a new id", ErrProjectExists, spec.ID)
	} else if !errors.Is(err, ErrNotFound) {
		return Project{}, err
	}
	meta, err := json.Marshal(p)
	if err != nil {
		return Project{}, err
	}
	// The meta record is written first with cas 0: of two creators, one
	// wins and the other learns the project exists.
	if _, err := k.store.Write(ctx, metaPath(p.ID), meta, 0, p.pathMeta()); err != nil {
		if errors.Is(err, ErrConflict) {
			return Project{}, fmt.Errorf("%w: project %q", ErrProjectExists, p.ID)
		}
		return Project{}, fmt.Errorf("project %q: write meta: %w", p.ID, err)
	}
	orderKey, err := k.random(32)
	if err != nil {
		return Project{}, err
	}
	seed, err := k.random(32)
	if err != nil {
		return Project{}, err
	}
	sec, err := json.Marshal(secrets{OrderKey: orderKey, OPRFSeed: seed})
	if err != nil {
		return Project{}, err
	}
	if _, err := k.store.Write(ctx, secretsPath(p.ID), sec, 0, p.pathMeta()); err != nil {
		return Project{}, fmt.Errorf("project %q: write secrets: %w", p.ID, err)
	}
	return p, nil
}

// Project returns a project's metadata.
func (k *Keystore) Project(ctx context.Context, id string) (Project, error) {
	p, _, err := k.readProject(ctx, id)
	return p, err
}

// Projects lists the ids of the projects in the store (not the destroyed).
func (k *Keystore) Projects(ctx context.Context) ([]string, error) {
	paths, err := k.store.List(ctx, "projects/")
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, p := range paths {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(p, "projects/"), "/meta"); ok && !strings.Contains(id, "/") {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// readProject reads a project's metadata and its version, or explains why
// there is none: a DestroyedError, or an error wrapping ErrNotFound.
func (k *Keystore) readProject(ctx context.Context, id string) (Project, int, error) {
	if err := checkProjectID(id); err != nil {
		return Project{}, 0, err
	}
	e, err := k.store.Read(ctx, metaPath(id))
	if errors.Is(err, ErrNotFound) {
		if t, terr := k.readTombstone(ctx, id); terr == nil {
			return Project{}, 0, &DestroyedError{Project: id, At: t.DestroyedAt}
		}
		return Project{}, 0, fmt.Errorf("project %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Project{}, 0, fmt.Errorf("project %q: %w", id, err)
	}
	var p Project
	if err := json.Unmarshal(e.Data, &p); err != nil {
		return Project{}, 0, fmt.Errorf("project %q: meta record is corrupt: %v", id, err)
	}
	return p, e.Version, nil
}

// usableProject returns a project whose kodnyckel may be used now: not
// destroyed, and within its retention or under a legal hold.
func (k *Keystore) usableProject(ctx context.Context, id string) (Project, error) {
	p, _, err := k.readProject(ctx, id)
	if err != nil {
		return Project{}, err
	}
	if p.Destroying {
		return Project{}, fmt.Errorf("project %q: %w: destruction in progress", id, ErrDestroyed)
	}
	if now := k.clock.Now(); !p.Hold && !now.Before(p.RetainUntil) {
		return Project{}, fmt.Errorf("project %q: %w on %s; the kodnyckel awaits destruction", id, ErrExpired, p.RetainUntil.Format(time.DateOnly))
	}
	return p, nil
}

// updateProject applies change to a project's metadata with check-and-set,
// retrying on conflict, then brings every path's metadata in line.
func (k *Keystore) updateProject(ctx context.Context, id string, change func(*Project) error) (Project, error) {
	for attempt := 0; ; attempt++ {
		p, version, err := k.readProject(ctx, id)
		if err != nil {
			return Project{}, err
		}
		if err := change(&p); err != nil {
			return Project{}, err
		}
		data, err := json.Marshal(p)
		if err != nil {
			return Project{}, err
		}
		_, err = k.store.Write(ctx, metaPath(id), data, version, p.pathMeta())
		if errors.Is(err, ErrConflict) && attempt < maxAttempts {
			if err := k.backoff(ctx, attempt); err != nil {
				return Project{}, err
			}
			continue
		}
		if err != nil {
			return Project{}, fmt.Errorf("project %q: write meta: %w", id, err)
		}
		return p, k.syncPathMeta(ctx, p)
	}
}

// syncPathMeta sets every path of the project to the project's retention.
func (k *Keystore) syncPathMeta(ctx context.Context, p Project) error {
	paths, err := k.store.List(ctx, projectPrefix(p.ID))
	if err != nil {
		return err
	}
	for _, path := range paths {
		if path == metaPath(p.ID) {
			continue // written with its metadata
		}
		if err := k.store.SetMeta(ctx, path, p.pathMeta()); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("project %q: set retention on %s: %w", p.ID, path, err)
		}
	}
	return nil
}

func needReason(id, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("%w: project %q: a reason is required", ErrInvalidArgument, id)
	}
	return nil
}

// ExtendRetention moves a project's retain_until later. The caller checks
// that an approver asked for it; the reason is kept in the project's
// changes.
func (k *Keystore) ExtendRetention(ctx context.Context, id string, until time.Time, reason string) (Project, error) {
	if err := needReason(id, reason); err != nil {
		return Project{}, err
	}
	now := k.clock.Now().UTC()
	return k.updateProject(ctx, id, func(p *Project) error {
		if !p.Hold && !now.Before(p.RetainUntil) {
			return fmt.Errorf("project %q: %w on %s; too late to extend", id, ErrExpired, p.RetainUntil.Format(time.DateOnly))
		}
		if !until.After(p.RetainUntil) {
			return fmt.Errorf("%w: project %q: %s is not after the current retain_until %s", ErrInvalidArgument, id, until.Format(time.DateOnly), p.RetainUntil.Format(time.DateOnly))
		}
		p.RetainUntil = until.UTC()
		p.Changes = append(p.Changes, Change{At: now, Action: "extend", Reason: reason, Until: p.RetainUntil})
		return nil
	})
}

// Hold sets a legal hold: the sweeper leaves the project alone until the
// hold is released.
func (k *Keystore) Hold(ctx context.Context, id, reason string) (Project, error) {
	if err := needReason(id, reason); err != nil {
		return Project{}, err
	}
	now := k.clock.Now().UTC()
	return k.updateProject(ctx, id, func(p *Project) error {
		p.Hold, p.HoldReason = true, reason
		p.Changes = append(p.Changes, Change{At: now, Action: "hold", Reason: reason})
		return nil
	})
}

// ReleaseHold lifts a legal hold; a project past its retention is then
// destroyed by the next sweep.
func (k *Keystore) ReleaseHold(ctx context.Context, id, reason string) (Project, error) {
	if err := needReason(id, reason); err != nil {
		return Project{}, err
	}
	now := k.clock.Now().UTC()
	return k.updateProject(ctx, id, func(p *Project) error {
		if !p.Hold {
			return fmt.Errorf("%w: project %q has no hold", ErrInvalidArgument, id)
		}
		p.Hold, p.HoldReason = false, ""
		p.Changes = append(p.Changes, Change{At: now, Action: "release-hold", Reason: reason})
		return nil
	})
}

func (k *Keystore) readSecrets(ctx context.Context, id string) (secrets, error) {
	e, err := k.store.Read(ctx, secretsPath(id))
	if err != nil {
		return secrets{}, fmt.Errorf("project %q: read keys: %w", id, err)
	}
	var s secrets
	if err := json.Unmarshal(e.Data, &s); err != nil || len(s.OrderKey) != 32 || len(s.OPRFSeed) != 32 {
		return secrets{}, fmt.Errorf("project %q: key record is corrupt", id)
	}
	return s, nil
}

// OPRFSeed returns the project's 32-byte OPRF seed, from which package
// partner derives the project's OPRF key. It fails as [Keystore.Mappings]
// does for a destroyed project or one past its retention. The caller must
// not log or keep it.
func (k *Keystore) OPRFSeed(ctx context.Context, id string) ([]byte, error) {
	if _, err := k.usableProject(ctx, id); err != nil {
		return nil, err
	}
	sec, err := k.readSecrets(ctx, id)
	if err != nil {
		return nil, err
	}
	return sec.OPRFSeed, nil
}
