// Package sweeper runs the key store's retention sweep on a schedule in
// the server and audits every receipt: each destroyed kodnyckel leaves an
// audit entry with the project, how many paths and mappings were destroyed
// and the receipt's digest — never an identity number.
package sweeper

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/server/audit"
)

// Sweeper is what the sweeper needs of the key store; *keystore.Keystore
// is one.
type Sweeper interface {
	Sweep(ctx context.Context) ([]keystore.Receipt, error)
}

// Auditor records entries; *audit.Log is one.
type Auditor interface {
	Append(audit.Entry) (audit.Entry, error)
}

// Identity is the audit log's name for the sweeper.
const Identity = "lopnrd/sweeper"

// Once runs one sweep and audits it: one entry per destroyed project, and
// one for a sweep that failed.
func Once(ctx context.Context, keys Sweeper, log Auditor) ([]keystore.Receipt, error) {
	receipts, err := keys.Sweep(ctx)
	for _, r := range receipts {
		if _, aerr := log.Append(audit.Entry{
			Identity: Identity, Action: "key.destroy", Project: r.Project, Outcome: "ok", Digest: r.Digest,
			Reason: fmt.Sprintf("retention ended %s; %d paths and %d mappings destroyed",
				r.RetainUntil.Format("2006-01-02"), r.Paths, r.Mappings),
		}); aerr != nil {
			return receipts, fmt.Errorf("sweep destroyed %s but could not audit it: %w", r.Project, aerr)
		}
	}
	if err != nil {
		if _, aerr := log.Append(audit.Entry{Identity: Identity, Action: "key.sweep", Outcome: "failed", Reason: err.Error()}); aerr != nil {
			return receipts, fmt.Errorf("%w; and could not audit the failure: %v", err, aerr)
		}
	}
	return receipts, err
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
