#!/usr/bin/env bash
# Browser test of the status page: start one kmsd on loopback (OS-chosen ports), activate a few
# clients of three products with kmsctl, render http://…/ with headless Chromium, and check
#   * the DOM (--dump-dom): node heading, leader line, members row, one row per pool with the
#     counts and threshold, and a bar of the right width and colour class per pool; one row
#     per activation in the recent-activations table (kmsd runs with
#     --status-page-activations), with its pool and result;
#   * the screenshot (--screenshot): a PNG of the window size that is not blank — text pixels,
#     bar tracks and bar fills in the page's colours are present.
# Artifacts (screenshot, DOM, kmsd log) are kept in target/test-artifacts/browser/.
# Skips (exit 0, "SKIPPED: …") when Chromium cannot be installed.
#
# Environment: KMSD_BIN / KMSCTL_BIN (default: the repository's debug build, built if needed),
# CHROMIUM (default: chromium, chromium-browser or google-chrome in PATH).
set -euo pipefail
# shellcheck source=tests/system/lib.sh
source "$(dirname "$0")/../system/lib.sh"

cd "$REPO"
bash scripts/install-test-deps.sh
chromium=${CHROMIUM:-}
if [ -z "$chromium" ]; then
    for c in chromium chromium-browser google-chrome; do
        if command -v "$c" >/dev/null; then
            chromium=$c
            break
        fi
    done
fi
if [ -z "$chromium" ] || ! command -v "$chromium" >/dev/null; then
    echo "SKIPPED: browser test: chromium is not installed and could not be installed"
    exit 0
fi
find_binaries debug

work=$(mktemp -d "${TMPDIR:-/tmp}/kmsd-browser.XXXXXX")
artifacts=$REPO/target/test-artifacts/browser
mkdir -p "$artifacts"
LOCAL_PID=""
cleanup() {
    stop_pid "$LOCAL_PID"
    [ -f "$work/node/kmsd.log" ] && cp "$work/node/kmsd.log" "$artifacts/kmsd.log"
    rm -rf "$work"
}
trap cleanup EXIT

node_name=browser-node
start_local_kmsd "$work/node" --name "$node_name" --status-page-activations
log "kmsd serving: KMS $LOCAL_KMS, HTTP $LOCAL_HTTP"

activate() { # activate PRODUCT MACHINES
    local out summary
    out=$("$KMSCTL_BIN" activate --kms "$LOCAL_KMS" --product "$1" --machines "$2" -o json) ||
        fail "kmsctl activate --product '$1' failed: $out"
    summary=$(helper activations <<<"$out")
    grep -q "activated=$2 " <<<"$summary" || fail "activating $2 × $1: $summary"
    log "activated $2 × $1 ($summary)"
}
activate "Windows 11 Enterprise" 7
activate "Windows Server 2022 Datacenter" 2
activate "Office Professional Plus 2019" 3

# Every client is in the node's state (the gauges are filled at scrape time); bounded, in
# case a record is still being applied.
windows_clients_is_9() { [ "$(metric_value "$LOCAL_HTTP" kmsd_pool_clients pool=windows)" = 9 ]; }
wait_until 15 "9 windows clients in the node's state" windows_clients_is_9 ||
    fail "kmsd_pool_clients{pool=windows} is $(metric_value "$LOCAL_HTTP" kmsd_pool_clients pool=windows), expected 9"

url="http://$LOCAL_HTTP/"
width=1000
height=700
chrome_flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars
    --no-first-run --no-default-browser-check --disable-extensions --disable-sync
    --user-data-dir="$work/profile" --window-size="$width,$height" --force-device-scale-factor=1)

log "rendering $url with $chromium"
timeout 90 "$chromium" "${chrome_flags[@]}" --dump-dom "$url" >"$artifacts/status.html" 2>"$work/chromium-dom.log" ||
    {
        tail -n 20 "$work/chromium-dom.log" >&2
        fail "chromium --dump-dom failed"
    }
rm -f "$artifacts/status.png"
timeout 90 "$chromium" "${chrome_flags[@]}" --screenshot="$artifacts/status.png" "$url" >/dev/null 2>"$work/chromium-shot.log" ||
    {
        tail -n 20 "$work/chromium-shot.log" >&2
        fail "chromium --screenshot failed"
    }
[ -s "$artifacts/status.png" ] || fail "chromium wrote no screenshot"

# Windows client and server editions share the windows pool (threshold 25 once a client edition
# is seen); Office 2019 is in office2013plus (threshold 5). Both are under their thresholds.
expect='{"node_id": 1, "name": "'$node_name'", "leader": 1,
         "pools": {"windows": {"live": 9, "reported": 9, "threshold": 25},
                   "office2013plus": {"live": 3, "reported": 3, "threshold": 5}},
         "activations": {"by_pool": {"windows": 9, "office2013plus": 3}, "result": "success"}}'
python3 tests/browser/check_page.py dom "$artifacts/status.html" "$expect" ||
    fail "the rendered DOM lacks expected content (see $artifacts/status.html)"
python3 tests/browser/check_page.py png "$artifacts/status.png" "$width" "$height" ||
    fail "the screenshot is not a proper rendering (see $artifacts/status.png)"

pass "browser test of the status page (artifacts in ${artifacts#"$REPO"/})"
