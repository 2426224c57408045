#!/usr/bin/env bash
# Browser test of kmsd's status page with headless Chromium (tests/browser/status-page.sh).
# Installs its packages (scripts/install-test-deps.sh); prints "SKIPPED: …" and exits 0 when
# Chromium is not available. Artifacts: target/test-artifacts/browser/.
set -euo pipefail
exec bash "$(dirname "$0")/../tests/browser/status-page.sh" "$@"
