#!/usr/bin/env bash
# Builds every Lambda function for arm64 with cargo-lambda and prints each
# bootstrap's size. Expects cargo-lambda and ziglang on PATH (infra/test.sh
# installs them into ./.venv).
#
#   bash infra/build-lambdas.sh          what `sam build` deploys: the release profile
#                                        of Cargo.toml (size-optimized, fat LTO,
#                                        stripped) plus what cargo-lambda adds to a
#                                        release build where Cargo.toml is silent:
#                                        one codegen unit, panic=abort
#   bash infra/build-lambdas.sh --check  the same code without cargo-lambda's additions,
#                                        without LTO and with parallel codegen: proves
#                                        every function builds for arm64 in minutes
#                                        instead of ~20 (the tests use it); its
#                                        bootstraps are larger than deployed ones
set -euo pipefail
cd "$(dirname "$0")/.."
functions=(schedule status download import worker scheduled-export)
args=()
for f in "${functions[@]}"; do args+=(--package "$f"); done
if [ "${1:-}" = "--check" ]; then
    args+=(--disable-optimizations)
    export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
cargo lambda build --release --arm64 --locked "${args[@]}"
target="${CARGO_TARGET_DIR:-target}"
for f in "${functions[@]}"; do
    bootstrap="$target/lambda/$f/bootstrap"
    [ -f "$bootstrap" ] || { echo "missing $bootstrap" >&2; exit 1; }
    # ELF e_machine (bytes 18-19) is 0xb7 for aarch64.
    [ "$(od -An -t x1 -j 18 -N 2 "$bootstrap" | tr -d ' ')" = "b700" ] \
        || { echo "$bootstrap is not an arm64 binary" >&2; exit 1; }
    printf '%-17s %8d bytes\n' "$f" "$(stat -c %s "$bootstrap")"
done
