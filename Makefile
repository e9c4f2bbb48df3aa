# Locus — the two commands a new machine needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all test demo bench cluster-tools build crds chart-check fmt-check clippy kind-e2e clean-cluster chaos

all: build

## cluster-tools: build (or find cached) the control-plane binaries of the local cluster
cluster-tools:
	@bash e2e/cluster/build.sh >/dev/null

build:
	$(CARGO) build --workspace --bins

## crds: regenerate the CRD YAML from the Rust types (and the chart's copy and rendering)
crds:
	$(CARGO) run -q -p locus-operator --bin crdgen > crds/statefulservices.locus.dev.yaml
	@bash charts/check.sh --update

## chart-check: helm lint, rendering, CRD copy and committed rendering up to date
chart-check:
	@bash charts/check.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test: everything CI runs — formatting, lints, unit, integration and end-to-end tests
test: cluster-tools fmt-check clippy chart-check
	@echo "[make test] cargo test (unit, in-process, real API server and end-to-end tests)"
	$(CARGO) test --workspace --no-fail-fast

## demo: start the local cluster (or use $KUBECONFIG's) and run the main job on it
demo: cluster-tools
	$(CARGO) build --workspace --bins
	@bash e2e/demo.sh

## chaos: the fault-injection scenarios on the local cluster (docs/safety.md lists them)
chaos: cluster-tools
	@ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || { echo "[chaos] installing libfaketime (the standby-skew scenario)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfaketime; }
	$(CARGO) build -p locus-operator -p locus-examples -p locus-e2e --bins
	$(CARGO) test -p locus-e2e --test chaos -- --include-ignored --nocapture --test-threads=1

## bench: benchmarks whose figures go to docs/benchmarks.md
bench: cluster-tools
	$(CARGO) bench -p locus
	LOCUS_E2E_LATENCY_CYCLES=60 $(CARGO) test --release -p locus-e2e --test operator_latency -- --nocapture
	LOCUS_E2E_SCALE=1x50,1x100,1x200,10x10,20x10 $(CARGO) test --release -p locus-e2e --test operator_scale -- --nocapture
	@bash e2e/bench/cluster-start.sh 5
	@bash e2e/bench/inplace-restart.sh
	@bash bench/locality-routing.sh
	@LOCUS_BENCH_PIN=1 LOCUS_BENCH_WORKERS=1 bash bench/locality-routing.sh
	@bash bench/snapshot-restore.sh
	$(CARGO) run --release -p locus --example ring_report -- --members 100 --vnodes 128 --keys 1000000
	$(CARGO) run --release -p locus --example ring_report -- --members 1000 --vnodes 128 --keys 1000000
	$(CARGO) run --release -p locus-contract --example ring_limits
	$(CARGO) run --release -p locus --example shard_index_report -- --sessions 1000000 --members 10 --rate 10000 --repeats 5
	$(CARGO) run --release -p locus --example store_memory_report -- --sessions 1000000

## kind-e2e: for users with Docker — the same e2e suite against a kind cluster
kind-e2e:
	@bash e2e/kind.sh

## clean-cluster: remove what a killed local cluster left behind (bridges, namespaces, processes)
clean-cluster:
	$(CARGO) run -q -p locus-e2e --bin locus-cluster -- clean
