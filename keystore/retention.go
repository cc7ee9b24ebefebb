package keystore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Receipt is the record of one project's destruction. It holds no identity
// number and nothing from which one could be recovered.
type Receipt struct {
	Project     string    `json:"project"`
	DestroyedAt time.Time `json:"destroyed_at"`
	RetainUntil time.Time `json:"retain_until"`
	Paths       int       `json:"paths"`    // store entries destroyed
	Mappings    int64     `json:"mappings"` // persons whose LopNr was destroyed
	// Digest is SHA-256 over every destroyed path, its version and the
	// SHA-256 of its data, in path order. It commits to what was destroyed;
	// the data includes the project's random keys, so it cannot be used to
	// test a guess of who was in the mapping.
	Digest string `json:"digest"`
}

// tombstone is what is kept of a destroyed project: its receipt.
type tombstone Receipt

func (k *Keystore) readTombstone(ctx context.Context, id string) (tombstone, error) {
	e, err := k.store.Read(ctx, tombstonePath(id))
	if err != nil {
		return tombstone{}, err
	}
	var t tombstone
	if err := json.Unmarshal(e.Data, &t); err != nil {
		return tombstone{}, fmt.Errorf("project %q: tombstone is corrupt: %v", id, err)
	}
	return t, nil
}

// Destroy destroys every record of a project now, whatever its retention,
// unless it is under a legal hold, and returns the receipt. The caller
// checks that an approver asked for it.
func (k *Keystore) Destroy(ctx context.Context, id string) (Receipt, error) {
	p, _, err := k.readProject(ctx, id)
	if err != nil {
		return Receipt{}, err
	}
	if p.Hold {
		return Receipt{}, fmt.Errorf("project %q: %w (%s): release it first", id, ErrHeld, p.HoldReason)
	}
	return k.destroy(ctx, p)
}

func (k *Keystore) destroy(ctx context.Context, p Project) (Receipt, error) {
	// Mark the project first: from here no call uses the kodnyckel, and
	// no assignment starts a new attempt.
	if !p.Destroying {
		var err error
		p, err = k.updateProject(ctx, p.ID, func(p *Project) error {
			p.Destroying = true
			return nil
		})
		if err != nil {
			return Receipt{}, err
		}
	}
	paths, err := k.store.List(ctx, projectPrefix(p.ID))
	if err != nil {
		return Receipt{}, fmt.Errorf("project %q: list records: %w", p.ID, err)
	}
	slices.Sort(paths)
	h, _, err := k.readHead(ctx, p.ID)
	if err != nil {
		return Receipt{}, err
	}
	digest := sha256.New()
	for _, path := range paths {
		e, err := k.store.Read(ctx, path)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return Receipt{}, fmt.Errorf("project %q: read %s: %w", p.ID, path, err)
		}
		sum := sha256.Sum256(e.Data)
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(e.Version))
		digest.Write([]byte(path))
		digest.Write([]byte{0})
		digest.Write(v[:])
		digest.Write(sum[:])
	}
	r := Receipt{
		Project:     p.ID,
		DestroyedAt: k.clock.Now().UTC(),
		RetainUntil: p.RetainUntil,
		Paths:       len(paths),
		Mappings:    h.Persons,
		Digest:      hex.EncodeToString(digest.Sum(nil)),
	}
	// The tombstone goes first: should destruction stop half-way, the
	// project already reads as destroyed and a new sweep finishes it.
	data, err := json.Marshal(tombstone(r))
	if err != nil {
		return Receipt{}, err
	}
	if _, err := k.store.Write(ctx, tombstonePath(p.ID), data, 0, PathMeta{Project: p.ID}); err != nil && !errors.Is(err, ErrConflict) {
		return Receipt{}, fmt.Errorf("project %q: write tombstone: %w", p.ID, err)
	}
	// Everything but meta, then meta last: while meta exists the project
	// is listed and swept again. An assignment that was already writing
	// when destruction began may add a path after the listing, so list
	// again until nothing is left.
	for round := 0; ; round++ {
		for _, path := range paths {
			if path == metaPath(p.ID) {
				continue
			}
			if err := k.store.Destroy(ctx, path); err != nil {
				return Receipt{}, fmt.Errorf("project %q: destroy %s: %w", p.ID, path, err)
			}
		}
		if paths, err = k.store.List(ctx, projectPrefix(p.ID)); err != nil {
			return Receipt{}, fmt.Errorf("project %q: list records: %w", p.ID, err)
		}
		if len(paths) <= 1 || round == 10 {
			break
		}
	}
	if err := k.store.Destroy(ctx, metaPath(p.ID)); err != nil {
		return Receipt{}, fmt.Errorf("project %q: destroy meta: %w", p.ID, err)
	}
	if left, err := k.store.List(ctx, projectPrefix(p.ID)); err != nil || len(left) > 0 {
		return Receipt{}, fmt.Errorf("project %q: %d records remain after destruction (%v); sweep again", p.ID, len(left), err)
	}
	k.forget(p.ID)
	return r, nil
}

// Sweep destroys every project past its retain_until that has no legal
// hold and returns a receipt for each. It finishes a destruction that an
// earlier sweep left half-done. `lopnr keys sweep` runs it by hand; the
// server's sweeper calls [Keystore.Due] and [Keystore.SweepProject]
// itself, so that it can audit each destruction before it starts.
func (k *Keystore) Sweep(ctx context.Context) ([]Receipt, error) {
	ids, err := k.Due(ctx)
	errs := []error{err}
	var receipts []Receipt
	for _, id := range ids {
		r, err := k.SweepProject(ctx, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		receipts = append(receipts, r)
	}
	return receipts, errors.Join(errs...)
}
