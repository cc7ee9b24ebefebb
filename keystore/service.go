package keystore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
)

// Service records are what the server keeps in the key store for itself
// rather than for a project: a secret such as the key that signs the audit
// log's checkpoints ([Keystore.ServiceKey]), and records it must keep out of
// reach of whoever holds its data directory, such as the newest signed
// checkpoint ([Keystore.UpdateServiceRecord]). They live under service/,
// beside projects/ and tombstones/, so no project id can name them, and no
// sweep or destruction of a project reaches them.

var serviceName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func servicePath(kind, name string) (string, error) {
	if !serviceName.MatchString(name) {
		return "", fmt.Errorf("%w: service record name %q: want 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", ErrInvalidArgument, name)
	}
	return "service/" + kind + "/" + name, nil
}

// ServiceKey returns the service secret called name, creating it with
// create on first use. The secret is written once: should two servers
// create it at once, both get the one that was stored first.
func (k *Keystore) ServiceKey(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error) {
	path, err := servicePath("keys", name)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		e, err := k.store.Read(ctx, path)
		if err == nil {
			return e.Data, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("service key %q: %w", name, err)
		}
		key, err := create()
		if err != nil {
			return nil, fmt.Errorf("service key %q: %w", name, err)
		}
		_, err = k.store.Write(ctx, path, key, 0, PathMeta{})
		if err == nil {
			return key, nil
		}
		if !errors.Is(err, ErrConflict) || attempt == maxAttempts {
			return nil, fmt.Errorf("service key %q: %w", name, err)
		}
	}
}

// ServiceRecord returns the service record called name, or an error
// wrapping ErrNotFound.
func (k *Keystore) ServiceRecord(ctx context.Context, name string) ([]byte, error) {
	path, err := servicePath("records", name)
	if err != nil {
		return nil, err
	}
	e, err := k.store.Read(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("service record %q: %w", name, err)
	}
	return e.Data, nil
}

// UpdateServiceRecord replaces the service record called name with what
// change makes of it (old is nil when there is none), by check-and-set,
// calling change again when another writer got there first. A change that
// returns nil data leaves the record as it is.
func (k *Keystore) UpdateServiceRecord(ctx context.Context, name string, change func(old []byte) ([]byte, error)) error {
	path, err := servicePath("records", name)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		var old []byte
		version := 0
		e, err := k.store.Read(ctx, path)
		switch {
		case err == nil:
			old, version = e.Data, e.Version
		case !errors.Is(err, ErrNotFound):
			return fmt.Errorf("service record %q: %w", name, err)
		}
		data, err := change(old)
		if err != nil || data == nil {
			return err
		}
		_, err = k.store.Write(ctx, path, data, version, PathMeta{})
		if errors.Is(err, ErrConflict) && attempt < maxAttempts {
			if err := k.backoff(ctx, attempt); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("service record %q: %w", name, err)
		}
		return nil
	}
}
