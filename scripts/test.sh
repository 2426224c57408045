#!/usr/bin/env bash
# The project's test command (README). Installs what the tests need, then runs every tier:
# unit tests, vector tests, property tests, storage conformance, and the end-to-end tests that
# start real kmsd processes on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
