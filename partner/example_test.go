package partner_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lopnr/lopnr/partner"
)

// The service derives the project's key from its oprf_seed and publishes the
// public key; it computes pseudonyms directly for the numbers it holds.
func ExampleDeriveKey() {
	seed := sha256.Sum256([]byte("an oprf_seed from the key store")) // 32 bytes
	key, err := partner.DeriveKey(seed[:], "2025-01234")
	if err != nil {
		panic(err)
	}
	fmt.Printf("public key: %x\n", key.PublicKey())
	// One of Skatteverket's test personnummer, canonical (12 digits).
	p, err := key.Pseudonym("195001182046")
	if err != nil {
		panic(err)
	}
	fmt.Println("pseudonym: ", p)
	// Output:
	// public key: 46e389262e6c38b9aabf4ecc24f8bd5eb7a20e9e2e1e151347739f582de95516
	// pseudonym:  f9390d6e22c637673fd3bf2c9ee6622e35655f628afc92c7b21a4f6436491cb6
}

// The partner pseudonymises its file through the service's Evaluate RPC
// (here a Key in process) and checks every proof against the published
// public key.
func ExampleBlindFile() {
	seed := sha256.Sum256([]byte("an oprf_seed from the key store"))
	key, err := partner.DeriveKey(seed[:], "2025-01234")
	if err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "partner")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "dodsorsak.csv")
	// Skatteverket's test numbers in three forms, one twice, and one
	// identity that cannot be linked.
	data := "lopnr;PersonNr;ulorsak\n" +
		"1;19500118-2046;I21\n" +
		"2;500118-2046;I21\n" +
		"3;196408233234;C34\n" +
		"4;okänd;R99\n"
	if err := os.WriteFile(in, []byte(data), 0o600); err != nil {
		panic(err)
	}
	rep, err := partner.BlindFile(context.Background(), in, os.Stdout, key.PublicKey(), partner.KeyEvaluator(key),
		partner.BlindOptions{IdentityColumn: "personnr", RefDate: time.Date(2025, 6, 30, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", rep)
	// Output:
	// lopnr;PSEUDONYM;ulorsak
	// 1;f9390d6e22c637673fd3bf2c9ee6622e35655f628afc92c7b21a4f6436491cb6;I21
	// 2;f9390d6e22c637673fd3bf2c9ee6622e35655f628afc92c7b21a4f6436491cb6;I21
	// 3;25768612fcfea957e5941875bdcce2d0c11cc9c7ac6b743fdad9e3bbc888ac63;C34
	// 4;;R99
	// {Rows:4 Linkable:3 Unlinkable:1 Distinct:2 Evaluated:2}
}
