// Command bao builds the OpenBao server and CLI at the version pinned in
// go.mod, so that the dev stack and the integration tests run against the
// real key store without downloading a prebuilt binary.
package main

import (
	"os"

	"github.com/openbao/openbao/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
