// Command lopnrd is the lopnr gRPC server. Flags fill a [config]; run starts
// the server and stops it cleanly on SIGINT or SIGTERM.
//
// By default it requires mutual TLS (--tls-cert, --tls-key, --client-ca).
// --dev serves plaintext on a loopback address, for a laptop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/lopnr/lopnr/internal/buildinfo"
	"github.com/lopnr/lopnr/server"
)

type config struct {
	listen                    string
	dev                       bool
	tlsCert, tlsKey, clientCA string
	version                   bool
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lopnrd: %v\n", err)
		os.Exit(2)
	}
	if cfg.version {
		fmt.Println("lopnrd", buildinfo.Read())
		return
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger, nil); err != nil {
		logger.Error("lopnrd stopped", "err", err)
		os.Exit(1)
	}
}

// env returns the value of an environment variable or a default, so that
// every flag can also be set as LOPNRD_<NAME>.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("lopnrd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.listen, "listen", env("LOPNRD_LISTEN", "127.0.0.1:7443"), "address to serve gRPC on ($LOPNRD_LISTEN)")
	fs.BoolVar(&cfg.dev, "dev", env("LOPNRD_DEV", "") == "true", "serve plaintext on a loopback address without client certificates, for a laptop ($LOPNRD_DEV=true)")
	fs.StringVar(&cfg.tlsCert, "tls-cert", env("LOPNRD_TLS_CERT", ""), "server certificate, PEM ($LOPNRD_TLS_CERT)")
	fs.StringVar(&cfg.tlsKey, "tls-key", env("LOPNRD_TLS_KEY", ""), "server private key, PEM ($LOPNRD_TLS_KEY)")
	fs.StringVar(&cfg.clientCA, "client-ca", env("LOPNRD_CLIENT_CA", ""), "CA certificates that sign client certificates, PEM ($LOPNRD_CLIENT_CA)")
	fs.BoolVar(&cfg.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lopnrd [flags]\n\nThe lopnr gRPC server. Mutual TLS is required unless --dev is given.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return cfg, nil
}

// run serves until ctx ends. ready, when not nil, receives the address once
// the server listens (for tests).
func run(ctx context.Context, cfg config, logger *slog.Logger, ready chan<- string) error {
	var scfg server.Config
	if cfg.dev {
		host, _, err := net.SplitHostPort(cfg.listen)
		if err != nil {
			return fmt.Errorf("--listen %q: %w", cfg.listen, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("--listen %q: --dev serves without TLS and only on a loopback address", cfg.listen)
		}
		logger.Warn("DEVELOPMENT MODE: no TLS, no client certificates; never use with real data")
	} else {
		if cfg.tlsCert == "" || cfg.tlsKey == "" || cfg.clientCA == "" {
			return errors.New("mutual TLS needs --tls-cert, --tls-key and --client-ca (or --dev on a laptop)")
		}
		tlsCfg, err := server.MutualTLS(cfg.tlsCert, cfg.tlsKey, cfg.clientCA)
		if err != nil {
			return err
		}
		scfg.TLS = tlsCfg
	}
	l, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	logger.Info("lopnrd serving", "addr", l.Addr().String(), "version", buildinfo.Read().Version, "mtls", scfg.TLS != nil)
	if ready != nil {
		ready <- l.Addr().String()
	}
	return server.New(scfg).Serve(ctx, l)
}
