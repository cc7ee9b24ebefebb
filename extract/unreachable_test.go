package extract

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/lopnr/lopnr/internal/testenv"
	"github.com/lopnr/lopnr/linkage"
)

// cutProxy forwards TCP to target until cut is called; then it closes every
// connection and refuses new ones, as an S3 service that goes away would.
type cutProxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	cut   atomic.Bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if p.cut.Load() {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() { l.Close(); p.cutNow() })
	return p
}

func (p *cutProxy) cutNow() {
	p.cut.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestS3GoesAwayMidDelivery cuts the connection to the S3 gateway while a
// delivery is uploading: the job fails with an error naming the endpoint,
// and nothing becomes visible under the deliveries prefix.
func TestS3GoesAwayMidDelivery(t *testing.T) {
	env := testenv.S3(t)
	f := newFixture(t, "outputs: {format: csv}\n")
	proxy := newCutProxy(t, env.Endpoint)
	ctx := context.Background()
	prefix := fmt.Sprintf("cut-%d/", time.Now().UnixNano())
	sink, err := NewS3Sink(ctx, S3Config{Endpoint: "http://" + proxy.l.Addr().String(), AccessKey: env.AccessKey, SecretKey: env.SecretKey,
		Region: env.Region, Bucket: "lopnr-cut", Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	res, err := linkage.Link(ctx, f.spec, linkage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	files := 0
	_, err = Deliver(ctx, res, Options{Approval: testApproval, Keys: f.keys, Recipients: []age.Recipient{f.id.Recipient()},
		Sink: sink, Signer: f.signer, SpecBytes: f.specRaw, Release: true,
		Progress: func(p Progress) {
			if p.Stage == "file" && !p.Done {
				if files++; files == 2 {
					proxy.cutNow() // the service goes away during the second file
				}
			}
		}})
	if err == nil || !strings.Contains(err.Error(), proxy.l.Addr().String()) {
		t.Fatalf("err = %v, want one naming the unreachable endpoint", err)
	}
	t.Log(err)
	// Straight to the gateway: nothing was published.
	direct, err := minio.New(env.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(env.AccessKey, env.SecretKey, ""), Region: env.Region})
	if err != nil {
		t.Fatal(err)
	}
	for obj := range direct.ListObjects(ctx, "lopnr-cut", minio.ListObjectsOptions{Prefix: prefix + "deliveries/", Recursive: true}) {
		if obj.Err != nil && !errors.Is(obj.Err, context.Canceled) {
			t.Fatal(obj.Err)
		}
		t.Errorf("visible after a failed delivery: %s", obj.Key)
	}
}
