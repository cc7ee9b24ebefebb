package server

import (
	"net"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits bound what clients can hold of the server. A zero field takes its
// default.
type Limits struct {
	// Connections is how many connections are served at once; more wait
	// in the listen queue until one closes. Default 256.
	Connections int
	// Streams is how many calls may be open at once on one connection;
	// the client queues more until one ends. Default 100.
	Streams int
}

// DefaultLimits are the limits a zero Limits takes.
var DefaultLimits = Limits{Connections: 256, Streams: 100}

func (l Limits) withDefaults() Limits {
	if l.Connections <= 0 {
		l.Connections = DefaultLimits.Connections
	}
	if l.Streams <= 0 {
		l.Streams = DefaultLimits.Streams
	}
	return l
}

// Listener returns ln serving at most l.Connections connections at once.
func (l Limits) Listener(ln net.Listener) net.Listener {
	return netutil.LimitListener(ln, l.withDefaults().Connections)
}

// The transport's bounds that need no setting.
const (
	// maxRecvMsg bounds one request: the largest the API takes is a job
	// spec of at most 1 MiB (maxSpec); an Evaluate batch of 4096 elements
	// is about 150 kB, an upload's part 256 KiB.
	maxRecvMsg = 2 << 20
	// maxHeaderList bounds a call's metadata; identities come from the
	// client certificate, not from headers.
	maxHeaderList = 64 << 10
	// handshake bounds a new connection's handshake (TLS and the HTTP/2
	// preface), so that connections that never finish one do not hold the
	// connection slots for the default two minutes.
	handshake = 10 * time.Second
)

// serverOptions are the gRPC options that enforce l: streams per
// connection, request size, idle connections closed, dead peers found by
// pings, and clients that ping more often than once a minute, or without
// a call open, sent away (GOAWAY "too_many_pings").
func (l Limits) serverOptions() []grpc.ServerOption {
	l = l.withDefaults()
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(uint32(l.Streams)),
		grpc.MaxRecvMsgSize(maxRecvMsg),
		grpc.MaxHeaderListSize(maxHeaderList),
		grpc.ConnectionTimeout(handshake),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Minute, PermitWithoutStream: false}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 5 * time.Minute,  // a connection without calls
			Time:              2 * time.Minute,  // silence before the server pings
			Timeout:           20 * time.Second, // for the ping's answer
		}),
	}
}
