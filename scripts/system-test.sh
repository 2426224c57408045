#!/usr/bin/env bash
# System tests of the deployment artifacts and of a real container cluster.
#
#   scripts/system-test.sh              # both parts
#   scripts/system-test.sh --static     # only tests/system/check-deploy.sh (no Docker, ~10 s)
#   scripts/system-test.sh --cluster    # only tests/system/cluster.sh (Docker; a few minutes)
#
# Part 1, tests/system/check-deploy.sh: promtool check config/rules, promtool test rules, every
#   shipped kmsd config accepted by `kmsd --print-config`, the dashboard up to date and using only
#   exported metrics, `promtool check metrics` on a live scrape, compose/k8s/systemd checks.
# Part 2, tests/system/cluster.sh: image from deploy/docker/build-local.sh, three kmsd
#   containers on networks created for the test, activations with kmsctl, failover, degraded
#   serving, convergence, scraped by the host's Prometheus. Without Docker it prints
#   "SKIPPED: docker not available" and succeeds.
# Installs its packages first (scripts/install-test-deps.sh). Exits non-zero if a part failed;
# both parts run even if the first fails.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

static=1
cluster=1
case "${1:-}" in
    --static) cluster=0 ;;
    --cluster) static=0 ;;
    "") ;;
    *) echo "usage: scripts/system-test.sh [--static|--cluster]" >&2; exit 2 ;;
esac

bash scripts/install-test-deps.sh
rc=0
if [ $static = 1 ]; then
    echo "== system test, part 1: deployment artifacts (tests/system/check-deploy.sh)"
    bash tests/system/check-deploy.sh || rc=1
fi
if [ $cluster = 1 ]; then
    echo "== system test, part 2: three-node container cluster (tests/system/cluster.sh)"
    bash tests/system/cluster.sh || rc=1
fi
exit $rc
