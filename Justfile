# epslice tasks. `just` is optional: every recipe is a plain command you can also run by hand.
set shell := ["bash", "-euo", "pipefail", "-c"]

default:
    @just --list

# Local demo: embedded control plane + kwok nodes + sample workload (Ctrl-C to stop).
demo *ARGS:
    cargo run --release --bin epslice -- demo {{ARGS}}

# The whole test suite (builds the control-plane binaries on first use).
test *ARGS:
    cargo test --workspace {{ARGS}}

# What CI runs.
ci:
    bash .ci/run

# Build (or check) the pinned control-plane binaries; prints their directory.
binaries *NAMES:
    bash envtest/install-binaries.sh {{NAMES}}

fmt:
    cargo fmt --all

clippy:
    cargo clippy --workspace --all-targets -- -D warnings

# Supply-chain checks (installs cargo-deny on first use).
deny:
    command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
    cargo deny check

# Benchmarks of the pure planner (results: docs/benchmarks.md).
bench:
    cargo bench -p epslice --bench plan
