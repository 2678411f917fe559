#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the SAM template checks,
# unit, contract (embedded and moto) and end-to-end tests, and the Lambda
# build. Installs what it needs: Python tools into ./.venv, the arm64 Rust
# target through rustup.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n== %s\n' "$*"; }

step "tools"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r infra/requirements.txt
export PATH="$root/.venv/bin:$PATH"
export MOTO_SERVER="$root/.venv/bin/moto_server"
# The benchmark's baselines (gzip is in every Debian) and the browser the
# console's test drives (Debian's chromium and its driver).
apt_get() { if [ "$(id -u)" = 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
missing=()
command -v pigz >/dev/null 2>&1 || missing+=(pigz)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
        || { apt_get update -qq && apt_get install -y -qq "${missing[@]}"; }
fi
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    rustup target add aarch64-unknown-linux-gnu
fi

step "format"
cargo fmt --all -- --check
# Every relative link and anchor of README.md and docs/ leads somewhere.
python3 infra/check_links.py

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "template"
cfn-lint template.yaml
python3 infra/check_template.py
# The IaC scan operators run: every finding fixed, or skipped in the
# resource's Metadata with a reason (check_template.py holds them to one).
if [ ! -x .venv-checkov/bin/python ]; then
    python3 -m venv .venv-checkov
fi
.venv-checkov/bin/pip install --quiet --disable-pip-version-check -r infra/requirements-checkov.txt
.venv-checkov/bin/checkov -f template.yaml --framework cloudformation --skip-download --quiet --compact
# What `sam build` and `sam deploy` read first: the SAM CLI's own check of the
# template (its transform, then its cfn-lint), with no AWS account or network.
if [ ! -x .venv-sam/bin/python ]; then
    python3 -m venv .venv-sam
fi
.venv-sam/bin/pip install --quiet --disable-pip-version-check -r infra/requirements-sam.txt
SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" \
    .venv-sam/bin/sam validate --lint --template-file template.yaml

step "build"
cargo build --workspace --all-targets --locked

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    echo "(cargo-nextest not found: using cargo test; 'cargo install cargo-nextest' makes this faster)"
    cargo test --workspace --locked --no-fail-fast
fi

step "benchmark smoke run (the harness must not rot; figures come from a full run)"
python3 bench/run.py --smoke --bin "${CARGO_TARGET_DIR:-target}/debug/local"

step "lambda build (arm64)"
bash infra/build-lambdas.sh --check

step "all tests passed"
