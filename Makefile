# lopnr's make targets. `make test` is the one CI runs (.ci/run).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

GO       ?= go
DEVSTACK := $(GO) run ./deploy/dev/devstack

.PHONY: test test-unit check fmt vet proto up tools bench

## test: start OpenBao and the S3 gateway, run every test with -race against them, stop them;
##       then fuzz the identity-number parser for 15 s
test:
	$(DEVSTACK) run -- $(GO) test -race -v ./...
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 15s ./linkage/personnummer

## bench: lopnr's job against the DuckDB script a team would write, and each stage against its raw
##        tool, on the standard scenario at a tenth, one and three times (about 10 minutes; bench/README.md).
##        `make bench BENCH='-scenario small'` for a quick look.
BENCH ?= -scenario standard -growth 0.1,1,3 -runs 3
bench:
	$(DEVSTACK) run -- $(GO) run ./bench $(BENCH)

## test-unit: the tests that need no server (integration tests skip)
test-unit:
	$(GO) test -race ./...

## check: formatting, vet and the generated code (needs protoc)
check: fmt vet
	$(GO) test -count=1 -run TestGeneratedCodeIsCurrent ./proto/...

fmt:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## proto: regenerate proto/lopnr/v1 with the pinned generators
proto:
	bash proto/gen.sh

## up: run the dev stack in the foreground and print how to reach it
up:
	$(DEVSTACK) up

## tools: build and cache bao and versitygw without starting them
tools:
	$(DEVSTACK) tools
