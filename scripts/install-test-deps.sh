#!/usr/bin/env bash
# Install the Debian packages the system and browser tests use, only those that are missing:
#   dig         (dnsutils)     — DNS checks against kmsd's DNS listener (system test)
#   promtool    (prometheus)   — check config/rules/metrics; the system test also runs prometheus
#   chromium    (chromium)     — headless rendering of the status page (browser test)
#   the linter  (shellcheck)   — the deploy/ and test shell scripts (check-deploy.sh)
#   PyYAML      (python3-yaml) — compose/k8s checks (check-deploy.sh)
#   ip          (iproute2)     — network namespaces of the fault tier (tests/e2e/netns.rs)
#   iptables    (iptables)     — partitions of the fault tier
#   libfaketime (faketime)     — the clock-skew scenario of the fault tier
# Idempotent and quiet: when everything is present it prints nothing and runs no apt command.
# Never fails the build: a package that cannot be installed is reported, and the tests that
# need it skip with a clear message.
set -uo pipefail

declare -A need=(
    [dig]=dnsutils
    [promtool]=prometheus
    [prometheus]=prometheus
    [chromium]=chromium
    [shellcheck]=shellcheck
    [ip]=iproute2
    [iptables]=iptables
    [faketime]=faketime
)

missing=()
for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 && continue
    pkg=${need[$cmd]}
    [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
done
if ! python3 -c 'import yaml' 2>/dev/null && ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
    missing+=(python3-yaml)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: apt-get not available; missing: ${missing[*]} (tests needing them will skip)" >&2
    exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "install-test-deps: not root and no passwordless sudo; missing: ${missing[*]} (tests needing them will skip)" >&2
        exit 0
    fi
fi

echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! timeout 300 "${sudo[@]}" apt-get update -qq >"$log" 2>&1; then
    echo "install-test-deps: apt-get update failed (continuing with the cached lists):" >&2
    tail -n 5 "$log" >&2
fi
# One package at a time, so one unavailable package does not block the others.
unavailable=()
for pkg in "${missing[@]}"; do
    if ! timeout 900 "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$pkg" >"$log" 2>&1; then
        unavailable+=("$pkg")
        tail -n 3 "$log" >&2
    fi
done
if [ ${#unavailable[@]} -gt 0 ]; then
    echo "install-test-deps: unavailable: ${unavailable[*]} (tests needing them will skip)" >&2
fi
exit 0
