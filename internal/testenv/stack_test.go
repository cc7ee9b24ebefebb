package testenv_test

// These integration tests prove that each real component works from Go the
// way lopnr uses it: the key store (OpenBao, KV v2 through vault/api), the
// object store (the S3 gateway through minio-go, with a streamed upload of
// unknown size and a pre-signed download) and the query engine (DuckDB
// through duckdb-go).

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"
	vault "github.com/hashicorp/vault/api"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/lopnr/lopnr/internal/testenv"
)

func TestOpenBaoKVv2WriteReadDestroy(t *testing.T) {
	env := testenv.Vault(t)
	cfg := vault.DefaultConfig()
	cfg.Address = env.Addr
	client, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(env.Token)
	ctx := context.Background()
	kv := client.KVv2("secret")
	path := "lopnr-smoke/" + t.Name() + "/" + time.Now().Format("150405.000000000")

	for i, v := range []string{"first", "second"} {
		s, err := kv.Put(ctx, path, map[string]any{"value": v})
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		if s.VersionMetadata == nil || s.VersionMetadata.Version != i+1 {
			t.Fatalf("put %d: version metadata %+v, want version %d", i, s.VersionMetadata, i+1)
		}
	}
	got, err := kv.Get(ctx, path)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.Data["value"] != "second" {
		t.Fatalf("get: value %v, want second", got.Data["value"])
	}
	old, err := kv.GetVersion(ctx, path, 1)
	if err != nil || old.Data["value"] != "first" {
		t.Fatalf("get version 1: %v, %v", old, err)
	}

	// A soft delete keeps the versions; metadata delete destroys them all.
	if err := kv.Delete(ctx, path); err != nil {
		t.Fatalf("soft delete: %v", err)
	}
	if old, err := kv.GetVersion(ctx, path, 1); err != nil || old.Data["value"] != "first" {
		t.Fatalf("after a soft delete version 1 should still be readable: %v, %v", old, err)
	}
	if err := kv.DeleteMetadata(ctx, path); err != nil {
		t.Fatalf("metadata delete: %v", err)
	}
	for _, v := range []int{1, 2} {
		if _, err := kv.GetVersion(ctx, path, v); !errors.Is(err, vault.ErrSecretNotFound) {
			t.Fatalf("version %d after metadata delete: err %v, want ErrSecretNotFound", v, err)
		}
	}
	if _, err := kv.GetMetadata(ctx, path); err == nil {
		t.Fatal("metadata still readable after metadata delete")
	}
}

func TestS3StreamUnknownSizeAndPresign(t *testing.T) {
	env := testenv.S3(t)
	client, err := minio.New(env.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(env.AccessKey, env.SecretKey, ""),
		Secure: env.Secure,
		Region: env.Region,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bucket := "lopnr-smoke-" + strings.ToLower(time.Now().Format("150405000000"))
	if err := client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: env.Region}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}

	// Stream 13 MiB through a pipe, size unknown to the client: minio-go
	// must split it into a multipart upload of 5 MiB parts.
	const size = 13<<20 + 17
	pr, pw := io.Pipe()
	sum := sha256.New()
	go func() {
		_, err := io.CopyN(io.MultiWriter(pw, sum), rand.Reader, size)
		pw.CloseWithError(err)
	}()
	info, err := client.PutObject(ctx, bucket, "delivery/data.bin", pr, -1, minio.PutObjectOptions{PartSize: 5 << 20})
	if err != nil {
		t.Fatalf("put object: %v", err)
	}
	if info.Size != size {
		t.Fatalf("uploaded %d bytes, want %d", info.Size, size)
	}
	want := sum.Sum(nil)

	u, err := client.PresignedGetObject(ctx, bucket, "delivery/data.bin", time.Minute, nil)
	if err != nil {
		t.Fatalf("presign: %v", err)
	}
	resp, err := http.Get(u.String())
	if err != nil {
		t.Fatalf("fetch pre-signed URL: %v", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fetch pre-signed URL: status %s, err %v", resp.Status, err)
	}
	if n != size || !bytes.Equal(h.Sum(nil), want) {
		t.Fatalf("downloaded %d bytes with a different SHA-256, want %d identical bytes", n, size)
	}

	// The gateway checks the signature: a tampered link is refused.
	q := u.Query()
	q.Set("X-Amz-Expires", "604800")
	u.RawQuery = q.Encode()
	resp, err = http.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tampered pre-signed URL: status %s, want 403", resp.Status)
	}

	if err := client.RemoveObject(ctx, bucket, "delivery/data.bin", minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("remove object: %v", err)
	}
	if err := client.RemoveBucket(ctx, bucket); err != nil {
		t.Fatalf("remove bucket: %v", err)
	}
}

func TestDuckDBReadCSVWithExternalAccessDisabled(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "events.csv")
	if err := os.WriteFile(csv, []byte("id;code\n1;I219\n2;I210\n3;J189\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one connection, so the table and the setting are seen by every query

	if _, err := db.Exec(`CREATE TABLE events AS SELECT * FROM read_csv(?, delim=';', header=true)`, csv); err != nil {
		t.Fatalf("attach source: %v", err)
	}
	if _, err := db.Exec(`SET enable_external_access = false`); err != nil {
		t.Fatalf("disable external access: %v", err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM events WHERE code LIKE ?`, "I21%").Scan(&n); err != nil {
		t.Fatalf("query: %v", err)
	}
	if n != 2 {
		t.Fatalf("count = %d, want 2", n)
	}
	// With external access off, a new file cannot be read.
	if _, err := db.Exec(`SELECT * FROM read_csv(?)`, csv); err == nil {
		t.Fatal("read_csv succeeded with external access disabled")
	}
}
