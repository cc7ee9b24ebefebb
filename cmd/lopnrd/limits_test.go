package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	lopnrv1 "github.com/lopnr/lopnr/proto/lopnr/v1"
	"github.com/lopnr/lopnr/server"
)

// serveDev runs lopnrd --dev with the limits until the test ends and
// returns its address.
func serveDev(t *testing.T, limits server.Limits) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{listen: "127.0.0.1:0", dev: true, dataDir: t.TempDir(), limits: limits},
			slog.New(slog.NewTextHandler(io.Discard, nil)), ready)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("lopnrd did not stop")
		}
	})
	select {
	case addr := <-ready:
		return addr
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("lopnrd did not start")
	}
	return ""
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// check makes a health check on conn within d, waiting for the connection.
func check(conn *grpc.ClientConn, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	return err
}

// TestClientCannotHoldMoreConnectionsThanTheLimit: a client that opens
// more connections than --max-connections gets the extra ones served only
// when one of the others closes.
func TestClientCannotHoldMoreConnectionsThanTheLimit(t *testing.T) {
	addr := serveDev(t, server.Limits{Connections: 2})
	first, second, third := dial(t, addr), dial(t, addr), dial(t, addr)
	for _, c := range []*grpc.ClientConn{first, second} {
		if err := check(c, time.Minute); err != nil {
			t.Fatalf("a connection within the limit: %v", err)
		}
	}
	if err := check(third, 2*time.Second); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a third connection over a limit of 2: %v, want it not served (DeadlineExceeded)", err)
	}
	first.Close()
	if err := check(third, time.Minute); err != nil {
		t.Fatalf("the third connection once the first closed: %v", err)
	}
}

// h2 is a raw HTTP/2 connection to lopnrd --dev, for a client that does
// not keep to what the server's settings ask.
type h2 struct {
	conn     net.Conn
	fr       *http2.Framer
	settings map[http2.SettingID]uint32 // the server's
}

func dialH2(t *testing.T, addr string) *h2 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := &h2{conn: conn, fr: http2.NewFramer(conn, conn), settings: map[http2.SettingID]uint32{}}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := c.fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("the server's first frame is %v, want its settings", f)
	}
	sf.ForeachSetting(func(s http2.Setting) error { c.settings[s.ID] = s.Val; return nil })
	return c
}

// next reads frames until one that is not flow control or an
// acknowledgement.
func (c *h2) next(t *testing.T) http2.Frame {
	t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.WindowUpdateFrame:
			continue
		case *http2.SettingsFrame:
			continue
		case *http2.PingFrame:
			if f.IsAck() {
				continue
			}
		}
		return f
	}
}

// TestClientCannotOpenMoreCallsOnAConnectionThanTheLimit: the server
// announces --max-streams, and a client that opens more calls than that
// on one connection anyway has the extra one refused.
func TestClientCannotOpenMoreCallsOnAConnectionThanTheLimit(t *testing.T) {
	c := dialH2(t, serveDev(t, server.Limits{Streams: 2}))
	if got := c.settings[http2.SettingMaxConcurrentStreams]; got != 2 {
		t.Fatalf("the server announces at most %d streams, want 2", got)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, h := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.health.v1.Health/Watch"},
		{":authority", "lopnrd"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	// Three calls that wait for their request: open until the client
	// ends them.
	for _, id := range []uint32{1, 3, 5} {
		if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	f := c.next(t)
	rst, ok := f.(*http2.RSTStreamFrame)
	if !ok || rst.StreamID != 5 || rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Fatalf("the third call over a limit of 2: %v, want RST_STREAM REFUSED_STREAM on stream 5", f)
	}
}

// TestClientPingingTooOftenIsDisconnected: a client that floods the
// connection with pings (without a call, or more than once a minute) is
// sent away with GOAWAY too_many_pings and the connection closed.
func TestClientPingingTooOftenIsDisconnected(t *testing.T) {
	c := dialH2(t, serveDev(t, server.Limits{}))
	for i := range 5 {
		if err := c.fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server may close the connection before the last
		}
	}
	f := c.next(t)
	ga, ok := f.(*http2.GoAwayFrame)
	if !ok || ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "too_many_pings" {
		t.Fatalf("after a ping flood: %v, want GOAWAY ENHANCE_YOUR_CALM too_many_pings", f)
	}
	if _, err := io.ReadAll(c.conn); err != nil {
		t.Fatalf("the connection was not closed: %v", err)
	}
}

// TestClientCannotSendARequestLargerThanTheAPINeeds: the largest request
// the API takes is a job spec of 1 MiB; a larger message is refused before
// it is read into the server's memory.
func TestClientCannotSendARequestLargerThanTheAPINeeds(t *testing.T) {
	conn := dial(t, serveDev(t, server.Limits{}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := lopnrv1.NewJobServiceClient(conn).SubmitJob(ctx, &lopnrv1.SubmitJobRequest{Spec: []byte(strings.Repeat("#", 3<<20))})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a request of 3 MiB: %v, want ResourceExhausted", err)
	}
}
