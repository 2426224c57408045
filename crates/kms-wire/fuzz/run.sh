#!/usr/bin/env bash
# Run every kms-wire fuzz target for a bounded time.
#   bash crates/kms-wire/fuzz/run.sh [SECONDS_PER_TARGET]   (default 60)
# Installs cargo-fuzz if missing (needs the nightly toolchain: `rustup toolchain list`).
# Exits non-zero if a target finds a crash (reproducer under fuzz/artifacts/<target>/).
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi
mkdir -p corpus artifacts
status=0
for target in $(cargo +nightly fuzz list); do
    echo "== fuzz target ${target} (${secs}s)"
    mkdir -p "corpus/${target}"
    if ! cargo +nightly fuzz run "${target}" "corpus/${target}" -- \
        -max_total_time="${secs}" -print_final_stats=1; then
        echo "!! ${target}: crash found (see artifacts/${target}/)"
        status=1
    fi
done
exit "${status}"
