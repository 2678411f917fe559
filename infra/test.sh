#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit, contract and
# end-to-end tests. Installs the tools it needs (Python tools into ./.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --all-targets --locked

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    echo "(cargo-nextest not found: using cargo test; 'cargo install cargo-nextest' makes this faster)"
    cargo test --workspace --locked --no-fail-fast
fi

step "all tests passed"
