# drpipe — see README.md. Two commands matter on a fresh machine:
#   make demo   the whole pipeline on embedded defaults
#   make test   install what the tests need, then run them
SHELL := /bin/bash
GO ?= go
BIN := bin/drpipe
export DRPIPE_TOOLS ?= $(HOME)/.cache/drpipe-tools/bin
export PATH := $(DRPIPE_TOOLS):$(PATH)

# Packages with concurrent code, run again under the race detector.
RACE_PKGS := ./tiers/... ./repo/... ./pipeline/... ./erasure/... ./chunking/... ./transport/... ./tape/... ./vmdisk/... ./internal/netem/... ./retention/...

.PHONY: all build demo test test-unit test-long deps vet fmt-check bench fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/drpipe

demo: build
	./$(BIN) demo

deps:
	@scripts/deps.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Everything CI runs: dependencies, static checks, all tests, and the
# race detector on the concurrent packages (unit tests, -short).
test: deps fmt-check vet
	$(GO) test -count=1 -timeout 40m ./...
	$(GO) test -count=1 -race -short -timeout 20m $(RACE_PKGS)

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
