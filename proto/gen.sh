#!/usr/bin/env bash
# Regenerate the Go code of proto/lopnr/v1 into OUT (default: this checkout),
# with pinned generators built from the Go module proxy and cached outside the
# repository. protoc comes from Debian's protobuf-compiler.
#   proto/gen.sh [OUT]
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12      # = google.golang.org/protobuf in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
cache=${LOPNR_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lopnr/tools}

if ! command -v protoc >/dev/null; then
	echo "proto/gen.sh: protoc not found; install it with: apt-get install protobuf-compiler" >&2
	exit 1
fi

install() { # install DIR MODULE@VERSION
	if [ ! -x "$1/$(basename "${2%@*}")" ]; then
		GOBIN="$1" GOFLAGS= GOWORK=off go install "$2" >&2
	fi
}
gen_go=$cache/protoc-gen-go-$PROTOC_GEN_GO_VERSION
gen_grpc=$cache/protoc-gen-go-grpc-$PROTOC_GEN_GO_GRPC_VERSION
install "$gen_go" google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION
install "$gen_grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION

cd "$root/proto"
mkdir -p "$out/proto"
protoc \
	--plugin=protoc-gen-go="$gen_go/protoc-gen-go" \
	--plugin=protoc-gen-go-grpc="$gen_grpc/protoc-gen-go-grpc" \
	--go_out="$out/proto" --go_opt=paths=source_relative \
	--go-grpc_out="$out/proto" --go-grpc_opt=paths=source_relative \
	lopnr/v1/*.proto
