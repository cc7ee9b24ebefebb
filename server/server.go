// Package server wires lopnr's domain packages to gRPC: it serves the lopnr.v1
// API beside the standard health service and server reflection (so grpcurl
// works), and owns everything that exists only because of the network —
// transport security, and later authorisation, the job runner and the audit
// log. The domain packages (linkage, keystore, extract) know nothing of it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/lopnr/lopnr/internal/buildinfo"
	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
)

// Config is what a Server needs to run.
type Config struct {
	// TLS is the server's transport configuration; nil serves plaintext,
	// which only the --dev mode of lopnrd allows.
	TLS *tls.Config
}

// Server is the lopnr gRPC server.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
}

// New returns a Server with every service registered.
func New(cfg Config) *Server {
	var opts []grpc.ServerOption
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	s := &Server{grpc: grpc.NewServer(opts...), health: health.NewServer()}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	lopnrv1.RegisterSystemServiceServer(s.grpc, systemService{})
	reflection.Register(s.grpc)
	return s
}

// Serve serves on l until ctx ends, then drains in-flight calls and returns.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		s.health.Shutdown()
		s.grpc.GracefulStop()
	}()
	err := s.grpc.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	if ctx.Err() != nil {
		<-stopped
	}
	return err
}

type systemService struct {
	lopnrv1.UnimplementedSystemServiceServer
}

func (systemService) GetInfo(context.Context, *lopnrv1.GetInfoRequest) (*lopnrv1.GetInfoResponse, error) {
	bi := buildinfo.Read()
	return &lopnrv1.GetInfoResponse{Version: bi.Version, Revision: bi.Revision, GoVersion: bi.GoVersion}, nil
}
