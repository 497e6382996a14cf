# drpipe — see README.md. Two commands matter on a fresh machine:
#   make demo   the whole pipeline on embedded defaults
#   make test   install what the tests need, then run them
SHELL := /bin/bash
GO ?= go
BIN := bin/drpipe
export DRPIPE_TOOLS ?= $(HOME)/.cache/drpipe-tools/bin
export PATH := $(DRPIPE_TOOLS):$(PATH)

# Packages with concurrent code, run again under the race detector.
RACE_PKGS := ./tiers/... ./repo/... ./pipeline/... ./erasure/... ./chunking/... ./transport/... ./tape/... ./vmdisk/... ./internal/netem/... ./retention/... ./mount/...

.PHONY: all build demo test test-unit test-long deps vet fmt-check bench fuzz clean

all: build

# A static binary (copy it to a bare DR host and run it): the C zstd code is
# linked in statically, user and DNS lookups use Go's own implementations.
BUILD_FLAGS := -tags osusergo,netgo -ldflags=-extldflags=-static

build:
	@echo "$(GO) build $(BUILD_FLAGS) -o $(BIN) ./cmd/drpipe"
	@$(GO) build $(BUILD_FLAGS) -o $(BIN) ./cmd/drpipe 2>/tmp/drpipe-build.$$$$.err || \
	  { cat /tmp/drpipe-build.$$$$.err; echo "make: no static cgo build here (needs gcc and libc6-dev / glibc-static); building pure Go (slower zstd encoder)"; \
	    CGO_ENABLED=0 $(GO) build -tags osusergo,netgo -o $(BIN) ./cmd/drpipe; }; rm -f /tmp/drpipe-build.$$$$.err

demo: build
	./$(BIN) demo

deps:
	@scripts/deps.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Everything CI runs: dependencies, static checks, all tests, and the
# race detector on the concurrent packages (unit tests, -short), and the
# storage packages once more as a pure-Go build (the zstd encoder without cgo).
test: deps fmt-check vet
	$(GO) test -count=1 -timeout 40m ./...
	$(GO) test -count=1 -race -short -timeout 20m $(RACE_PKGS)
	CGO_ENABLED=0 $(GO) test -count=1 -short -timeout 10m ./repo/ ./pipeline/

# Long soak and size tests (more crash iterations, bigger images).
test-long: deps
	DRPIPE_LONG=1 $(GO) test -count=1 -timeout 120m ./...

# Runs every fuzz target for FUZZTIME each (default 30s).
FUZZTIME ?= 30s
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

# Benchmarks against restic and borg (and rsync, the S3 server ...) on the
# same data in the same run; writes bench/results/<date>.md.
bench: deps build
	$(GO) run ./bench -drpipe $(BIN) -out bench/results

clean:
	rm -rf bin
