// Package sweeper runs the key store's retention sweep on a schedule in
// the server and audits every destruction: before it destroys a project's
// kodnyckel it enters its intent in the audit log (and signs a checkpoint
// that holds it), and leaves the project alone when it cannot; afterwards
// an entry with the project, how many paths and mappings were destroyed
// and the receipt's digest — never an identity number.
package sweeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/server/audit"
)

// Sweeper is what the sweeper needs of the key store; *keystore.Keystore
// is one, and so is the server, which also reduces the destroyed
// projects' records.
type Sweeper interface {
	// Due lists the projects to destroy now.
	Due(ctx context.Context) ([]string, error)
	// SweepProject destroys one of them.
	SweepProject(ctx context.Context, id string) (keystore.Receipt, error)
}

var _ Sweeper = (*keystore.Keystore)(nil)

// Auditor records entries; *audit.Log is one.
type Auditor interface {
	Append(audit.Entry) (audit.Entry, error)
	// Intend enters an act before it is taken; when it fails, the act
	// is not taken.
	Intend(context.Context, audit.Entry) (audit.Entry, error)
}

// Identity is the audit log's name for the sweeper.
const Identity = "lopnrd/sweeper"

// Once runs one sweep and audits it: for each project due, an intent entry
// before its destruction and an entry with the receipt after; one entry for
// a sweep that failed. A project whose intent cannot be entered is not
// destroyed.
func Once(ctx context.Context, keys Sweeper, log Auditor) ([]keystore.Receipt, error) {
	due, err := keys.Due(ctx)
	errs := []error{err}
	var receipts []keystore.Receipt
	for _, id := range due {
		if _, aerr := log.Intend(ctx, audit.Entry{Identity: Identity, Action: "key.destroy", Project: id,
			Reason: "retention ended"}); aerr != nil {
			return receipts, errors.Join(append(errs, fmt.Errorf("sweep did not destroy %s: its intent could not be audited: %w", id, aerr))...)
		}
		r, err := keys.SweepProject(ctx, id)
		if r.Project != "" {
			receipts = append(receipts, r)
			if _, aerr := log.Append(audit.Entry{
				Identity: Identity, Action: "key.destroy", Project: r.Project, Outcome: "ok", Digest: r.Digest,
				Reason: fmt.Sprintf("retention ended %s; %d paths and %d mappings destroyed",
					r.RetainUntil.Format("2006-01-02"), r.Paths, r.Mappings),
			}); aerr != nil {
				return receipts, errors.Join(append(errs, err, fmt.Errorf("sweep destroyed %s but could not audit it: %w", r.Project, aerr))...)
			}
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		if _, aerr := log.Append(audit.Entry{Identity: Identity, Action: "key.sweep", Outcome: "failed", Reason: err.Error()}); aerr != nil {
			return receipts, fmt.Errorf("%w; and could not audit the failure: %v", err, aerr)
		}
		return receipts, err
	}
	return receipts, nil
}

// Run sweeps every interval until ctx ends, logging each result.
func Run(ctx context.Context, keys Sweeper, log Auditor, interval time.Duration, logger *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		receipts, err := Once(ctx, keys, log)
		if err != nil {
			logger.Error("retention sweep failed", "err", err, "destroyed", len(receipts))
		} else if len(receipts) > 0 {
			logger.Info("retention sweep", "destroyed", len(receipts))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
