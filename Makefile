# lopnr's make targets. `make test` is the one CI runs (.ci/run).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

GO       ?= go
DEVSTACK := $(GO) run ./deploy/dev/devstack

.PHONY: test test-unit fuzz check fmt vet proto up tools bench

## test: start OpenBao and the S3 gateway, run every test with -race against them, stop them;
##       then fuzz every parser that reads outside input (make fuzz)
test:
	$(DEVSTACK) run -- $(GO) test -race -v ./...
	$(MAKE) --no-print-directory fuzz

## fuzz: each fuzz target for a count of executions that takes 3 to 12 s (about 7 s) on this project's
##       2-core machine (deploy/dev/README.md); FUZZ_SCALE=10 runs ten times as many.
##       Never a duration budget, for fuzzing or for minimising what it finds: Go 1.26's
##       fuzzer can fail one with "context deadline exceeded" and no crasher
##       (golang/go#75804). A new fuzz target
##       must be added to FUZZ_TARGETS (package:target:executions), or this fails.
##       Each run starts from the committed seeds (testdata/fuzz) in a fresh fuzz cache, so
##       that its time does not grow with what earlier runs found; FUZZ_CACHE=DIR keeps
##       and reuses one.
FUZZ_SCALE ?= 1
FUZZ_CACHE ?=
FUZZ_TARGETS := \
	./linkage/personnummer:FuzzParse:550000 \
	./linkage:FuzzParseSpec:30000 \
	./linkage:FuzzParseProfile:90000 \
	./extract:FuzzParseApproval:60000 \
	./extract:FuzzCSVGuard:15000 \
	./extract:FuzzVerifyManifest:40000 \
	./partner:FuzzImport:12000 \
	./partner:FuzzEvaluate:200000 \
	./server/audit:FuzzVerify:22000
fuzz:
	@listed=$$(printf '%s\n' $(FUZZ_TARGETS) | cut -d: -f2 | sort); \
	found=$$(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed 's/^func //' | sort); \
	if [ "$$listed" != "$$found" ]; then \
		echo "make fuzz: FUZZ_TARGETS and the fuzz targets in the tree differ (< listed, > in the tree):"; \
		diff <(echo "$$listed") <(echo "$$found"); exit 1; \
	fi
	@cache="$(FUZZ_CACHE)"; if [ -z "$$cache" ]; then cache=$$(mktemp -d); trap 'rm -rf "$$cache"' EXIT; fi; \
	for t in $(FUZZ_TARGETS); do \
		IFS=: read -r pkg name n <<<"$$t"; \
		echo "fuzz: $$name in $$pkg, $$((n * $(FUZZ_SCALE))) executions"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime "$$((n * $(FUZZ_SCALE)))x" -fuzzminimizetime 2000x "$$pkg" \
			-args -test.fuzzcachedir="$$cache/$${pkg#./}/$$name" || exit 1; \
	done

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
