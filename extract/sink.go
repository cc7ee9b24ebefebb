package extract

import (
	"context"
	"errors"
	"io"
	"time"
)

// A Sink is where deliveries go: an S3 bucket or a local directory. It has
// two places. A delivery is written to its staging place, which
// researchers' links never reach, and stays there, complete and signed,
// until Release moves it to its published place, where Presign signs links
// to it. A server releases a delivery when a second person approves it;
// lopnr run, which has no second person, releases at once.
//
// A set of files is a delivery only once its manifest signature
// (manifest.json.sig) is in place: Release moves it last, Withdraw removes
// it first, and Presign signs nothing of a delivery whose signature is not
// published. So a release or a withdrawal cut short by a crash never
// leaves a partial delivery that a link can reach, and running it again
// finishes it.
type Sink interface {
	// Begin starts writing delivery id (a name safe in a path) for project
	// in the staging place. It fails with ErrDeliveryExists when the
	// delivery has been published.
	Begin(ctx context.Context, project, id string) (Staging, error)
	// Release moves a staged delivery to its published place, the
	// manifest and its signature last, and removes it from the staging
	// place. Releasing a published delivery again finishes what an
	// interrupted Release left and succeeds. It fails with ErrNotStaged
	// when no complete delivery (one with its manifest signature) is
	// staged under id.
	Release(ctx context.Context, project, id string) error
	// Presign returns a URL that downloads one file of a published
	// delivery until it expires; expiry must be between one minute and
	// seven days. It fails with ErrNotPublished when the delivery (its
	// manifest signature) or the file is not published: a staged delivery
	// has no links.
	Presign(ctx context.Context, project, id, file string, expiry time.Duration) (string, error)
	// Location names where a delivery is published, for messages.
	Location(project, id string) string
}

// Staging is a delivery being written to the staging place.
type Staging interface {
	// Create starts a file; the data written to it streams to the sink
	// (for S3, as a multipart upload of unknown size). Close completes it;
	// the writers of both sinks also have CloseWithError(error) error,
	// which abandons the file (and its upload) when producing it failed.
	// Several files may be open, and closed, at once from different
	// goroutines; one file's writer is used by one goroutine.
	Create(ctx context.Context, name string) (io.WriteCloser, error)
	// Commit checks that every file is complete and ends the writing:
	// the delivery is staged, waiting for Release. It fails when a file
	// is still open or failed, or none was written.
	Commit(ctx context.Context) error
	// Abort removes everything written to the staging place, including
	// incomplete uploads, committed or not; a released delivery is no
	// longer there and stays as it is. It is safe to call more than once.
	Abort(ctx context.Context) error
}

// StoredDelivery is a set of files in a sink under a delivery's id: in the
// staging place, or published.
type StoredDelivery struct {
	Project, ID string
	Published   bool
}

// The files that make a delivery one: Release moves them last, the
// signature after the manifest.
const (
	manifestFile  = "manifest.json"
	signatureFile = "manifest.json.sig"
)

// ErrExpiry is returned for a pre-signed link's expiry out of range.
var ErrExpiry = errors.New("expiry must be between 1 minute and 7 days")

// ErrNotStaged is returned by Release when no complete delivery is staged
// (or published) under the id.
var ErrNotStaged = errors.New("no complete delivery is staged")

// ErrNotPublished is returned by Presign for a file of a delivery that is
// not published: staged and waiting for release, or unknown.
var ErrNotPublished = errors.New("not published")

// DefaultExpiry is a pre-signed link's lifetime when none is asked for.
const DefaultExpiry = 72 * time.Hour

// checkExpiry validates a pre-signed link's expiry.
func checkExpiry(d time.Duration) error {
	if d < time.Minute || d > 7*24*time.Hour {
		return ErrExpiry
	}
	return nil
}

// checkPresign checks the arguments of a Presign.
func checkPresign(project, id, file string, expiry time.Duration) error {
	if err := checkExpiry(expiry); err != nil {
		return err
	}
	if err := checkDeliveryNames(project, id); err != nil {
		return err
	}
	return checkSinkName("file", file)
}

// releaseOrder returns names with the manifest and its signature moved to
// the end, in that order, and whether the signature is among them.
func releaseOrder(names []string) (ordered []string, signed bool) {
	var last []string
	for _, n := range names {
		switch n {
		case manifestFile:
			last = append([]string{n}, last...)
		case signatureFile:
			last, signed = append(last, n), true
		default:
			ordered = append(ordered, n)
		}
	}
	return append(ordered, last...), signed
}
