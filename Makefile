# Krypton build, test and development entry points. `make help` lists them.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null || echo 0.1.0-dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/kryptonkms/krypton/internal/version.Version=$(VERSION) \
           -X github.com/kryptonkms/krypton/internal/version.Commit=$(COMMIT)
# The race detector needs cgo; PKCS#11 tests need it too.
export CGO_ENABLED ?= 1
# Fuzz time per target for `make fuzz`.
FUZZTIME ?= 60s
# `make jepsen`: time per scenario, seed (0 draws one from the clock; the report prints it), and
# where the run reports go.
DURATION ?= 60s
SEED ?= 0
JEPSEN_DIR ?= $(or $(TMPDIR),/tmp)/krypton-jepsen

.PHONY: help build build-fips image charts test-fips test-rawio test test-stress test-short dev demo proto proto-check bench fuzz jepsen soak lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/krypton
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/krypton ./cmd/krypton

image: ## the OCI image layout in bin/image, reproducibly and with no container engine (scripts/image.sh)
	GO=$(GO) bash scripts/image.sh bin/image

# deploy/helm is a module of its own (Helm's library brings the Kubernetes modules, kept out of
# Krypton's go.mod): its test renders and lints the charts (docs/operations.md, "Deploy").
charts: ## render, lint and check the Helm charts of deploy/helm
	cd deploy/helm && $(GO) vet ./... && $(GO) test -count=1 ./...

# scripts/gotest.sh runs every package with -race, then the chaos suite's short schedule on its own,
# through gotestsum: failed tests' output only, their names again at the end, and a summary line.
test: build lint proto-check charts test-fips test-rawio ## the one test command: lint, generated-code check, the Helm charts, FIPS tests, all tests with -race
	GO=$(GO) bash scripts/gotest.sh

# Strict FIPS 140-3 mode (docs/security.md, "FIPS 140-3 mode"): built against the Go Cryptographic
# Module v1.0.0 (GOFIPS140, `go help environment`), run with GODEBUG=fips140=only, where every
# algorithm or construction outside the module's approved services fails. FIPS_RUN selects the
# tests that prove it: the wrap suites and the cross-mode vectors, the anchors (file, PKCS#11 on
# SoftHSM2, AWS KMS on local-kms, GCP KMS and Azure Key Vault on their emulators), the envelope,
# the FIPS error mapping, a three-node region's wrap and unwrap on every node (regiontest), a
# three-node cluster's gossip over mutual TLS electing a leader, and the gateway (FIPS_GATEWAY_RUN:
# round trips and failover, revocation, data keys under delegated wrapping keys, the XKS proxy and
# its kill switch, certificate rotation, KMIP's lifecycle with the server's nonces; the KMIP client tests send their own GCM nonces, which
# fips140=only refuses by design: docs/security.md).
GOFIPS140_VERSION ?= v1.0.0
FIPS_ENV := GOFIPS140=$(GOFIPS140_VERSION) GODEBUG=fips140=only KRYPTON_FIPS_EXPECT=$(GOFIPS140_VERSION)
FIPS_PKGS := ./wrap/ ./anchor/file/ ./anchor/pkcs11/ ./anchor/awskms/ ./anchor/gcpkms/ ./anchor/azurekv/ \
             ./envelope/ ./internal/fipsmode/ ./transport/ ./gateway/xks/ ./gateway/kmsplugin/
FIPS_RUN := ^(TestWrapOnOneNodeUnwrapOnEveryOther|TestGossipOverTLSElects|TestBootstrapApplyForward)$$
FIPS_GATEWAY_RUN := ^(TestRoundTripAndFailover|TestRevocation|TestDelegatedDataKeys|TestDelegatedKeysRevocation|TestXKS|TestXKSKillSwitch|TestCertificateRotation|TestLifecycle|TestIsolationInWrapping)$$
build-fips: ## build bin/krypton-fips against the Go Cryptographic Module (run it with GODEBUG=fips140=only)
	GOFIPS140=$(GOFIPS140_VERSION) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/krypton-fips ./cmd/krypton

test-fips: ## the FIPS tests: key packages built with GOFIPS140 and run under GODEBUG=fips140=only
	$(FIPS_ENV) $(GO) test -count=1 $(FIPS_PKGS)
	$(FIPS_ENV) $(GO) test -count=1 -run '$(FIPS_RUN)' ./region/ ./cluster/
	$(FIPS_ENV) $(GO) test -count=1 -run '$(FIPS_GATEWAY_RUN)' ./gateway/ ./gateway/kmip/

# The servers' and the gateway's Unix socket's connections read and write with raw system calls,
# except in race-detector builds, which go through syscall.Read and syscall.Write to tell the
# detector (internal/rawio): so the tests of that path also run once without -race, where the raw
# calls are the ones made: rawio's own, the gateway's framed protocol, a region's wraps.
test-rawio: ## the raw-socket tests without -race (the race build makes other system calls)
	$(GO) test -count=1 ./internal/rawio/
	$(GO) test -count=1 -run '^(TestFramed|TestRoundTripAndFailover)' ./gateway/
	$(GO) test -count=1 -run '^TestWrapOnOneNodeUnwrapOnEveryOther$$' ./region/

# CI's machine is shared: the suite must pass with both cores busy. This runs it with stress-ng (Debian
# package stress-ng; not installed by .ci/run, which does not run this target) hogging STRESS_CPUS.
STRESS_CPUS ?= 2
test-stress: ## make test with stress-ng --cpu STRESS_CPUS running beside it
	@command -v stress-ng >/dev/null || { echo "test-stress: needs stress-ng: apt-get install stress-ng"; exit 1; }
	@stress-ng --cpu $(STRESS_CPUS) --quiet & hog=$$!; \
	  trap 'kill $$hog 2>/dev/null; wait $$hog 2>/dev/null' EXIT; \
	  $(MAKE) --no-print-directory test

test-short: ## quick tests without -race
	$(GO) test -count=1 -short ./...

dev: build ## run a local development deployment on the file:// anchor
	./bin/krypton dev

demo: build ## run the development walkthrough non-interactively and exit
	./bin/krypton dev --demo

proto: ## regenerate the gRPC code from proto/
	bash scripts/genproto.sh

proto-check: ## fail if the committed generated code is stale
	bash scripts/genproto.sh --check

bench: ## micro-benchmarks of the hot path
	$(GO) test -run '^$$' -bench . -benchmem ./wrap/... ./fsm/...

fuzz: ## run every fuzz target for FUZZTIME each
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

jepsen: ## the long chaos schedule (jepsen/) and the broken builds it must catch: DURATION per scenario, SEED (0: the clock), reports in JEPSEN_DIR
	$(GO) test -count=1 -timeout 90m -v -run 'TestSchedule|TestBrokenBuildCaught' ./jepsen/ -args -long \
	  -jepsen.duration $(DURATION) -jepsen.seed $(SEED) -jepsen.dir $(JEPSEN_DIR)

# `make soak`: one long scenario at a moderate, capped rate with kills and partitions, sampling every
# node's memory, goroutines, descriptors and keyring into samples.csv and resources.png in the run
# directory (jepsen/DESIGN.md, "Soak"). SOAK_DURATION=10m for a shorter one.
SOAK_DURATION ?= 1h
SOAK_RATE ?= 100
soak: ## a one-hour chaos run at SOAK_RATE ops/s that plots the nodes' resources
	$(GO) test ./jepsen -run 'TestSchedule' -count=1 -timeout 0 -v -args \
	  -jepsen.nemeses kill-leader,kill-follower,partition-leader,partition-follower \
	  -jepsen.duration $(SOAK_DURATION) -jepsen.rate $(SOAK_RATE) -jepsen.sample 15s -jepsen.seed $(SEED) -jepsen.dir $(JEPSEN_DIR)

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean: ## remove build output
	rm -rf bin .bin
