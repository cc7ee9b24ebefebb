package extract

import (
	"context"
	"errors"
	"io"
	"time"
)

// A Sink is where deliveries are published: an S3 bucket or a local
// directory. Files of a delivery are written to a staging area first and
// become visible under the delivery's prefix only when Publish is called,
// after all of them and the manifest are complete; Abort (or any failure)
// leaves nothing visible.
type Sink interface {
	// Begin starts writing delivery id (a name safe in a path) for project.
	Begin(ctx context.Context, project, id string) (Staging, error)
	// Presign returns a URL that downloads one published file until it
	// expires. expiry must be between one minute and seven days.
	Presign(ctx context.Context, project, id, file string, expiry time.Duration) (string, error)
	// Location names where a published delivery lives, for messages.
	Location(project, id string) string
}

// Staging is a delivery being written.
type Staging interface {
	// Create starts a file; the data written to it streams to the sink
	// (for S3, as a multipart upload of unknown size). Close completes it;
	// the writers of both sinks also have CloseWithError(error) error,
	// which abandons the file (and its upload) when producing it failed.
	// Several files may be open, and closed, at once from different
	// goroutines; one file's writer is used by one goroutine.
	Create(ctx context.Context, name string) (io.WriteCloser, error)
	// Publish makes every completed file visible under the delivery's
	// prefix, and removes the staging area.
	Publish(ctx context.Context) error
	// Abort removes everything written, including incomplete uploads.
	// It is safe to call after a failed Publish and more than once.
	Abort(ctx context.Context) error
}

// ErrExpiry is returned for a pre-signed link's expiry out of range.
var ErrExpiry = errors.New("expiry must be between 1 minute and 7 days")

// DefaultExpiry is a pre-signed link's lifetime when none is asked for.
const DefaultExpiry = 72 * time.Hour

// checkExpiry validates a pre-signed link's expiry.
func checkExpiry(d time.Duration) error {
	if d < time.Minute || d > 7*24*time.Hour {
		return ErrExpiry
	}
	return nil
}
