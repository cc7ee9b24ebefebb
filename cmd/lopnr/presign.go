package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/lopnr/lopnr/extract"
)

func init() {
	commands["presign"] = command{"print expiring download links for the files of a delivery in S3", runPresign}
}

func runPresign(ctx context.Context, args []string, sio stdio) error {
	fs := flag.NewFlagSet("lopnr presign", flag.ContinueOnError)
	fs.SetOutput(sio.err)
	s3Endpoint := fs.String("s3-endpoint", os.Getenv("LOPNR_S3_ENDPOINT"), "S3 endpoint URL ($LOPNR_S3_ENDPOINT); keys from $LOPNR_S3_ACCESS_KEY and $LOPNR_S3_SECRET_KEY")
	s3Bucket := fs.String("s3-bucket", envOr("LOPNR_S3_BUCKET", "lopnr"), "S3 bucket ($LOPNR_S3_BUCKET)")
	s3Region := fs.String("s3-region", envOr("LOPNR_S3_REGION", "us-east-1"), "S3 region ($LOPNR_S3_REGION)")
	expiry := fs.Duration("expiry", extract.DefaultExpiry, "how long the links work: at least 1m, at most 168h (7 days)")
	fs.Usage = func() {
		fmt.Fprint(sio.err, "Usage: lopnr presign [flags] PROJECT DELIVERY FILE…\n\nPrints a pre-signed download link for each file of a published delivery.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 3 {
		return &usageError{"give PROJECT DELIVERY and at least one FILE"}
	}
	if *s3Endpoint == "" {
		return &hintError{fmt.Errorf("no S3 endpoint"), "set --s3-endpoint or LOPNR_S3_ENDPOINT; a local delivery needs no link"}
	}
	sink, err := extract.NewS3Sink(ctx, extract.S3Config{Endpoint: *s3Endpoint, AccessKey: os.Getenv("LOPNR_S3_ACCESS_KEY"),
		SecretKey: os.Getenv("LOPNR_S3_SECRET_KEY"), Region: *s3Region, Bucket: *s3Bucket})
	if err != nil {
		return err
	}
	until := time.Now().Add(*expiry).UTC().Format("2006-01-02 15:04 MST")
	for _, file := range pos[2:] {
		u, err := sink.Presign(ctx, pos[0], pos[1], file, *expiry)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		fmt.Fprintf(sio.out, "%s\t%s\t(until %s)\n", file, u, until)
	}
	return nil
}
