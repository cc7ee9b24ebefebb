package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/internal/storeflags"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

func init() {
	commands["presign"] = command{"print expiring download links for a delivery's files (lopnrd, or S3 directly)", runPresign}
}

const presignUsage = `Usage: lopnr presign [flags] PROJECT DELIVERY [FILE…]

Prints an expiring download link for each file of a delivery:
NAME<TAB>URL<TAB>(until WHEN). --download DIR also fetches each file into DIR;
check them with lopnr verify DIR --key ….

When a server is configured (--server, $LOPNR_SERVER or server: in the client
config file) lopnrd makes the links, for a released delivery, and no FILE
means every file with the manifest and its signature. Otherwise lopnr signs
them itself with the S3 keys in $LOPNR_S3_ACCESS_KEY and $LOPNR_S3_SECRET_KEY,
for the FILEs named; --s3-endpoint on the command line chooses this way even
when a server is configured. Either way, links are made only for a released
(published) delivery: one waiting for release has none.
` + connectionHelp + "\nFlags:\n"

// presignedLink is one file's download link.
type presignedLink struct {
	name, url string
	until     time.Time
}

func runPresign(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("lopnr presign", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	var sf serverFlags
	sf.register(fs)
	var s3 storeflags.S3
	s3.Register(fs)
	expiry := fs.Duration("expiry", extract.DefaultExpiry, "how long the links work: at least 1m, at most 168h (7 days)")
	download := fs.String("download", "", "fetch each file into `DIR` (created if missing; files readable only by you)")
	fs.Usage = func() { fmt.Fprint(sio.err, presignUsage); fs.PrintDefaults() }
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	viaServer, err := sf.configured()
	if err != nil {
		return err
	}
	var s3Flag bool
	fs.Visit(func(f *flag.Flag) { s3Flag = s3Flag || f.Name == "s3-endpoint" })
	if viaServer && s3Flag {
		if sf.explicit() {
			return &usageError{"give --server or --s3-endpoint, not both"}
		}
		viaServer = false
	}
	var links []presignedLink
	if viaServer {
		if links, err = presignViaServer(ctx, &sf, pos, *expiry); err != nil {
			return err
		}
	} else {
		if links, err = presignS3(ctx, pos, *expiry, s3); err != nil {
			return err
		}
	}
	for _, l := range links {
		until := "unknown"
		if !l.until.IsZero() {
			until = l.until.UTC().Format("2006-01-02 15:04 MST")
		}
		fmt.Fprintf(sio.out, "%s\t%s\t(until %s)\n", printable(l.name), l.url, until)
	}
	if *download == "" {
		return nil
	}
	if err := os.MkdirAll(*download, 0o700); err != nil {
		return err
	}
	for _, l := range links {
		path, n, err := fetch(ctx, *download, l)
		if err != nil {
			return err
		}
		fmt.Fprintf(sio.err, "lopnr: downloaded %s (%d bytes)\n", path, n)
	}
	return nil
}

func presignViaServer(ctx context.Context, sf *serverFlags, pos []string, expiry time.Duration) ([]presignedLink, error) {
	if len(pos) < 2 {
		return nil, &usageError{"give PROJECT and DELIVERY, and the files (none: every file)"}
	}
	c, err := sf.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	resp, err := lopnrv1.NewDeliveryServiceClient(c.conn).PresignDelivery(ctx, &lopnrv1.PresignDeliveryRequest{
		Project: pos[0], Delivery: pos[1], Files: pos[2:], Expiry: durationpb.New(expiry)})
	if err != nil {
		return nil, c.check(err)
	}
	var links []presignedLink
	for _, f := range resp.Files {
		l := presignedLink{name: f.Name, url: f.Url}
		if f.Expires != nil {
			l.until = f.Expires.AsTime()
		}
		links = append(links, l)
	}
	return links, nil
}

func presignS3(ctx context.Context, pos []string, expiry time.Duration, s3 storeflags.S3) ([]presignedLink, error) {
	if len(pos) < 3 {
		return nil, &usageError{"give PROJECT DELIVERY and at least one FILE"}
	}
	if s3.Endpoint == "" {
		return nil, &hintError{fmt.Errorf("no S3 endpoint and no server"), "set --server or LOPNR_SERVER to ask lopnrd, or --s3-endpoint or LOPNR_S3_ENDPOINT; a local delivery needs no link"}
	}
	sink, err := s3.Open(ctx)
	if err != nil {
		return nil, err
	}
	until := time.Now().Add(expiry)
	var links []presignedLink
	for _, file := range pos[2:] {
		u, err := sink.Presign(ctx, pos[0], pos[1], file, expiry)
		if errors.Is(err, extract.ErrNotPublished) {
			return nil, &hintError{fmt.Errorf("%s: %w", file, err), "a delivery waits for release in the staging place, where no link reaches it; an approver other than its job's submitter releases it (lopnr release PROJECT DELIVERY), or the file's name is wrong"}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		links = append(links, presignedLink{name: file, url: u, until: until})
	}
	return links, nil
}

// downloader fetches links: https from S3, and file: from a delivery
// directory on this machine (lopnrd's directory sink, lopnrd --dev).
var downloader = &http.Client{Transport: func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.RegisterProtocol("file", http.NewFileTransport(http.Dir("/")))
	return t
}()}

// fetch downloads one link into dir with a plain GET, to a new file that
// only the user can read.
func fetch(ctx context.Context, dir string, l presignedLink) (path string, n int64, err error) {
	if l.name == "" || l.name == "." || l.name == ".." || strings.ContainsAny(l.name, `/\`) {
		return "", 0, fmt.Errorf("%q: not a plain file name; not downloaded", l.name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.url, nil)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", l.name, err)
	}
	resp, err := downloader.Do(req)
	if err != nil {
		// The URL is a credential until it expires: name the file instead.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", 0, fmt.Errorf("%s: download: %w", l.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("%s: download: %s", l.name, resp.Status)
	}
	path = filepath.Join(dir, l.name)
	err = createNew(path, func(w io.Writer) error {
		var err error
		n, err = io.Copy(w, resp.Body)
		return err
	})
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == "open" {
		return "", 0, err
	}
	if err != nil {
		return "", 0, fmt.Errorf("%s: download: %w", l.name, err)
	}
	return path, n, nil
}
