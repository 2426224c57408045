#!/usr/bin/env bash
# Run every kms-wire fuzz target for a bounded time (see scripts/fuzz.sh, which runs all fuzz
# crates, for the details).
#   bash crates/kms-wire/fuzz/run.sh [SECONDS_PER_TARGET]   (default 60)
# Installs cargo-fuzz if missing (needs the nightly toolchain: `rustup toolchain list`).
# Exits non-zero if a target finds a crash (reproducer under fuzz/artifacts/<target>/).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "${here}/../../../scripts/fuzz.sh" "${1:-60}" "${here}"
