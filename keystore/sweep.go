package keystore

import (
	"context"
	"errors"
	"fmt"
)

// Due returns the ids of the projects a sweep would destroy now: past
// their retain_until without a legal hold, or with a destruction begun
// and not finished. The server audits its intent to destroy each before
// it calls [Keystore.SweepProject].
func (k *Keystore) Due(ctx context.Context) ([]string, error) {
	ids, err := k.Projects(ctx)
	if err != nil {
		return nil, err
	}
	var due []string
	var errs []error
	for _, id := range ids {
		p, _, err := k.readProject(ctx, id)
		var destroyed *DestroyedError
		if errors.As(err, &destroyed) || errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if k.due(p) {
			due = append(due, id)
		}
	}
	return due, errors.Join(errs...)
}

// due reports whether a sweep destroys p now; a half-done destruction is
// finished whatever the dates.
func (k *Keystore) due(p Project) bool {
	return p.Destroying || !p.Hold && !k.clock.Now().Before(p.RetainUntil)
}

// SweepProject destroys one project as a sweep would, if it is due (see
// [Keystore.Due]), and returns the receipt.
func (k *Keystore) SweepProject(ctx context.Context, id string) (Receipt, error) {
	p, _, err := k.readProject(ctx, id)
	if err != nil {
		return Receipt{}, err
	}
	if !k.due(p) {
		return Receipt{}, fmt.Errorf("%w: project %q is not due for destruction", ErrInvalidArgument, id)
	}
	return k.destroy(ctx, p)
}
