package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/lopnr/lopnr/internal/buildinfo"
	"github.com/lopnr/lopnr/server"
)

// defaultServer is where lopnrd listens unless told otherwise.
const defaultServer = "127.0.0.1:7443"

// serverFlags are the flags that say how to reach lopnrd. Each setting
// comes from its flag, else the environment, else the client config file,
// else a default.
type serverFlags struct {
	fs                        *flag.FlagSet
	server, cert, key, ca, as string
	dev                       bool
}

func (f *serverFlags) register(fs *flag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.server, "server", "", "lopnrd's address, `HOST:PORT` ($LOPNR_SERVER, server: in the config file; default "+defaultServer+")")
	fs.StringVar(&f.cert, "cert", "", "client certificate, PEM `FILE` ($LOPNR_CERT, cert:)")
	fs.StringVar(&f.key, "key", "", "client private key, PEM `FILE` ($LOPNR_KEY, key:)")
	fs.StringVar(&f.ca, "ca", "", "CA certificate that signed the server's certificate, PEM `FILE` ($LOPNR_CA, ca:; default the system's)")
	fs.BoolVar(&f.dev, "dev", false, "plaintext to a lopnrd --dev on a loopback address ($LOPNR_DEV=true, dev:)")
	fs.StringVar(&f.as, "as", "", "with --dev: act as another of lopnrd --dev's identities, `NAME` one of "+strings.Join(server.DevIdentities, ", ")+
		", to take the second person's step of a four-eyes rule on a laptop ($LOPNR_AS)")
}

// clientConfig is how to reach lopnrd, as the client config file holds it:
// $LOPNR_CONFIG, else $XDG_CONFIG_HOME/lopnr/client.yaml or
// ~/.config/lopnr/client.yaml. Relative paths are relative to the file.
type clientConfig struct {
	Server string `yaml:"server"`
	Cert   string `yaml:"cert"`
	Key    string `yaml:"key"`
	CA     string `yaml:"ca"`
	Dev    bool   `yaml:"dev"`
	// As names a lopnrd --dev identity (flag and environment only).
	As string `yaml:"-"`
}

// clientConfigPath returns the config file's path and whether it must
// exist (it must when $LOPNR_CONFIG names it).
func clientConfigPath() (string, bool) {
	if p := os.Getenv("LOPNR_CONFIG"); p != "" {
		return p, true
	}
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "lopnr", "client.yaml"), false
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", false
	}
	return filepath.Join(home, ".config", "lopnr", "client.yaml"), false
}

// loadClientConfig reads the client config file; a missing default file is
// an empty configuration.
func loadClientConfig() (clientConfig, error) {
	path, must := clientConfigPath()
	if path == "" {
		return clientConfig{}, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !must {
		return clientConfig{}, nil
	}
	if err != nil {
		return clientConfig{}, &usageError{fmt.Sprintf("client config: %v", err)}
	}
	var c clientConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return clientConfig{}, &usageError{fmt.Sprintf("client config %s: %v (want the keys server, cert, key, ca, dev)", path, err)}
	}
	for _, p := range []*string{&c.Cert, &c.Key, &c.CA} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	return c, nil
}

// resolve returns the settings in force: flag, else environment, else
// config file, else default.
func (f *serverFlags) resolve() (clientConfig, error) {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	file, err := loadClientConfig()
	if err != nil {
		return clientConfig{}, err
	}
	pick := func(flagName, flagVal, envName, fileVal, def string) string {
		if set[flagName] {
			return flagVal
		}
		if v := os.Getenv(envName); v != "" {
			return v
		}
		if fileVal != "" {
			return fileVal
		}
		return def
	}
	c := clientConfig{
		Server: pick("server", f.server, "LOPNR_SERVER", file.Server, defaultServer),
		Cert:   pick("cert", f.cert, "LOPNR_CERT", file.Cert, ""),
		Key:    pick("key", f.key, "LOPNR_KEY", file.Key, ""),
		CA:     pick("ca", f.ca, "LOPNR_CA", file.CA, ""),
		Dev:    file.Dev,
		As:     pick("as", f.as, "LOPNR_AS", "", ""),
	}
	switch v := os.Getenv("LOPNR_DEV"); {
	case set["dev"]:
		c.Dev = f.dev
	case v != "":
		if c.Dev, err = strconv.ParseBool(v); err != nil {
			return clientConfig{}, &usageError{fmt.Sprintf("LOPNR_DEV=%q: want true or false", v)}
		}
	}
	return c, nil
}

// configured reports whether a server was named by flag, environment or
// config file, for the commands that otherwise work without one (presign,
// keys sweep).
func (f *serverFlags) configured() (bool, error) {
	if f.explicit() || os.Getenv("LOPNR_SERVER") != "" {
		return true, nil
	}
	file, err := loadClientConfig()
	return file.Server != "", err
}

// explicit reports whether --server was given on the command line.
func (f *serverFlags) explicit() bool {
	var given bool
	f.fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == "server" })
	return given
}

// client is a connection to lopnrd.
type client struct {
	conn *grpc.ClientConn
	addr string
}

// dial checks the settings and connects (lazily: the first call dials).
func (f *serverFlags) dial() (*client, error) {
	c, err := f.resolve()
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(c.Server)
	if err != nil {
		return nil, &usageError{fmt.Sprintf("server %q: want HOST:PORT", c.Server)}
	}
	var creds credentials.TransportCredentials
	var opts []grpc.DialOption
	if c.As != "" {
		if !c.Dev {
			return nil, &hintError{&usageError{"--as " + c.As + ": --as is only for a lopnrd --dev"},
				"against a server with TLS you are the subject of your client certificate; use another person's certificate (--cert, --key)"}
		}
		if !slices.Contains(server.DevIdentities, c.As) {
			return nil, &usageError{fmt.Sprintf("--as %q: want one of %s", c.As, strings.Join(server.DevIdentities, ", "))}
		}
		opts = append(opts, grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, server.DevIdentityHeader, c.As), method, req, reply, cc, o...)
		}), grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, server.DevIdentityHeader, c.As), desc, cc, method, o...)
		}))
	}
	if c.Dev {
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, &hintError{&usageError{fmt.Sprintf("--dev to %s: --dev sends in plaintext, and only to a loopback address", c.Server)},
				"--dev is for a lopnrd --dev on this machine; reach any other server with --cert, --key and --ca"}
		}
		creds = insecure.NewCredentials()
	} else {
		if c.Cert == "" || c.Key == "" {
			path, _ := clientConfigPath()
			return nil, &hintError{&usageError{"no client certificate: lopnrd requires mutual TLS"},
				fmt.Sprintf("give --cert and --key (or $LOPNR_CERT and $LOPNR_KEY, or cert: and key: in %s), and --ca; --dev only for a lopnrd --dev on this machine", path)}
		}
		cfg, err := clientTLS(c.Cert, c.Key, c.CA)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(cfg)
	}
	opts = append(opts, grpc.WithTransportCredentials(creds), grpc.WithUserAgent("lopnr/"+buildinfo.Read().Version))
	conn, err := grpc.NewClient(c.Server, opts...)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", c.Server, err)
	}
	return &client{conn: conn, addr: c.Server}, nil
}

// clientTLS is the client's side of mutual TLS: its certificate, the CA
// that signed the server's (the system's CAs when caFile is empty), TLS 1.3.
func clientTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate %s / key %s: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("server CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("server CA %s: no PEM certificate found", caFile)
		}
	}
	return cfg, nil
}

func (c *client) Close() error { return c.conn.Close() }

// serverError is an error status from lopnrd: its code and message, which
// by the API's rule names what was wrong and never carries a record value.
type serverError struct {
	Code    codes.Code
	Message string
}

func (e *serverError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// check turns a call's error into a serverError, with a hint for the codes
// a user can do something about.
func (c *client) check(err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	e := &serverError{Code: st.Code(), Message: printable(st.Message())}
	switch e.Code {
	case codes.Unavailable:
		return &hintError{e, fmt.Sprintf("is lopnrd running at %s? check --server ($LOPNR_SERVER), and --dev against a lopnrd --dev", c.addr)}
	case codes.PermissionDenied:
		if strings.HasPrefix(e.Message, "four eyes") {
			return &hintError{e, "this step is a second person's: someone else, with their own certificate (against a lopnrd --dev on a laptop: --as approver)"}
		}
		return &hintError{e, "check your certificate (--cert, --key, --ca) and your role in the server's policy"}
	case codes.Unauthenticated:
		return &hintError{e, "check your certificate (--cert, --key, --ca) and your role in the server's policy"}
	}
	return e
}

// printable replaces control characters, so that a message cannot move the
// cursor or hide text on a terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\t' {
			return '?'
		}
		return r
	}, s)
}

// newFlags returns a flag set for a client command whose usage is usage
// followed by the flags.
func newFlags(sio stdio, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(sio.err)
	fs.Usage = func() { fmt.Fprint(sio.err, usage, "\nFlags:\n"); fs.PrintDefaults() }
	return fs
}

// isHelp reports whether a word asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "help" || arg == "-help"
}

// subcommand runs one of a group's subcommands by its first argument,
// printing the group's usage when it is missing or unknown. group is the
// command line so far: "keys", "keys reidentify".
func subcommand(ctx context.Context, group, usage string, subs map[string]func(context.Context, []string, stdio) error, args []string, sio stdio) error {
	var prefix string // the command itself is named in the error already
	if _, rest, ok := strings.Cut(group, " "); ok {
		prefix = rest + ": "
	}
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(sio.err, usage)
		if len(args) > 0 {
			return flag.ErrHelp
		}
		names := make([]string, 0, len(subs))
		for n := range subs {
			names = append(names, n)
		}
		sort.Strings(names)
		return &usageError{prefix + "want a subcommand: " + strings.Join(names, ", ")}
	}
	run, ok := subs[args[0]]
	if !ok {
		fmt.Fprint(sio.err, usage)
		return &usageError{fmt.Sprintf("%sunknown subcommand %q", prefix, args[0])}
	}
	return run(ctx, args[1:], sio)
}
