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

# Benchmarks (results: docs/benchmarks.md): the pure planner (divan), then the side-by-side harness
# kcm vs epslice vs a write floor on a real control plane. ARGS go to epslice-bench, e.g.
# `just bench --services 50 --pods-per-service 5 --big-services 2 --churn-seconds 10`.
# The webhook has its own benchmark: `just bench-webhook`.
bench *ARGS:
    cargo bench -p epslice --bench plan
    just bench-side {{ARGS}}

# Only the side-by-side harness (`epslice-bench --help` lists the flags). epslice runs as it ships:
# built with the `dist` profile (fat LTO, one codegen unit); the harness itself is a release build.
bench-side *ARGS:
    cargo build --release -p epslice-integration-tests --bins
    cargo build --profile dist -p epslice-integration-tests --bin epslice-cli
    cargo run --release -q -p epslice-integration-tests --bin epslice-bench -- --epslice-bin "${CARGO_TARGET_DIR:-target}/dist/epslice-cli" {{ARGS}}

# The service-env webhook at 1,000 Services (release build; `epslice-webhook-bench --help` lists the
# flags): server side over HTTPS on loopback, then pod creates through the apiserver with vs without
# it. Smoke: `just bench-webhook --duration 2s --concurrency 1,8 --pods 50`.
bench-webhook *ARGS:
    cargo build --release -p epslice-integration-tests --bin epslice-webhook-bench
    cargo run --release -q -p epslice-integration-tests --bin epslice-webhook-bench -- {{ARGS}}

# Differential test: kcm and epslice on COUNT seeded random workloads from SEED (~5 s per seed);
# a difference prints a reproduction. The default run (seed 1) is part of `just test`.
diff-test SEED="1" COUNT="20":
    EPSLICE_DIFF_SEED={{SEED}} EPSLICE_DIFF_COUNT={{COUNT}} cargo test -p epslice-integration-tests --test differential -- --nocapture
