#!/usr/bin/env bash
# The project's test command (README). Installs what the tests need, then runs every tier:
# unit tests, vector tests, property tests, storage conformance, and the end-to-end tests that
# start real kmsd processes on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
# Test tools (dig, promtool, chromium): a failure here only warns; the tests that need a
# missing tool skip with a clear message (e.g. "SKIPPED: dig not installed").
if [ -f scripts/install-test-deps.sh ]; then
    bash scripts/install-test-deps.sh ||
        echo "test.sh: warning: scripts/install-test-deps.sh failed; tests needing dig, promtool or chromium will skip" >&2
fi
# The end-to-end tests start the real binaries (target/debug/kmsd, kmsctl); `cargo test` builds
# a binary only for its own package's integration tests, so build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
