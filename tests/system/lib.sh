# Shared shell helpers of tests/system and tests/browser. Source it; it defines functions only.
# Requires bash, curl, python3.

# shellcheck shell=bash
TESTS_SYSTEM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$TESTS_SYSTEM_DIR/../.." && pwd)
HELPERS="$TESTS_SYSTEM_DIR/helpers.py"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pass() { log "PASS: $*"; }
fail() {
    log "FAIL: $*"
    exit 1
}

helper() { python3 "$HELPERS" "$@"; }

# Binaries: KMSD_BIN / KMSCTL_BIN, else the repository's build of PROFILE (debug|release),
# built (incrementally) with cargo unless SKIP_CARGO_BUILD=1.
find_binaries() {
    local profile=${1:-debug}
    local dir=$REPO/target/$profile
    if [ -z "${KMSD_BIN:-}" ] || [ -z "${KMSCTL_BIN:-}" ]; then
        if [ "${SKIP_CARGO_BUILD:-0}" != 1 ]; then
            local flag=()
            [ "$profile" = release ] && flag=(--release)
            log "cargo build ${flag[*]} -p kmsd -p kmsctl"
            (cd "$REPO" && cargo build --quiet --locked "${flag[@]}" -p kmsd -p kmsctl) ||
                fail "cargo build failed"
        fi
        KMSD_BIN=${KMSD_BIN:-$dir/kmsd}
        KMSCTL_BIN=${KMSCTL_BIN:-$dir/kmsctl}
    fi
    KMSD_BIN=$(realpath "$KMSD_BIN")
    KMSCTL_BIN=$(realpath "$KMSCTL_BIN")
    [ -x "$KMSD_BIN" ] || fail "no kmsd binary at $KMSD_BIN"
    [ -x "$KMSCTL_BIN" ] || fail "no kmsctl binary at $KMSCTL_BIN"
    export KMSD_BIN KMSCTL_BIN
}

# Run kmsd with a clean environment: no KMSD_* variable of the caller leaks into the node.
kmsd_clean() {
    local unset_args=() v
    for v in $(compgen -e); do
        case "$v" in
            KMSD_BIN) ;;
            KMSD_*) unset_args+=(-u "$v") ;;
        esac
    done
    if [ -n "${exec_kmsd:-}" ]; then
        exec env "${unset_args[@]}" "$KMSD_BIN" "$@"
    fi
    env "${unset_args[@]}" "$KMSD_BIN" "$@"
}

# Start a single kmsd on loopback with OS-chosen ports; extra arguments are passed on.
# Sets LOCAL_PID, LOCAL_KMS (host:port), LOCAL_HTTP (host:port). Log in $1/kmsd.log.
start_local_kmsd() {
    local dir=$1
    shift
    mkdir -p "$dir"
    # `exec` in the background subshell, so that $! is kmsd itself and stop_pid stops it (a
    # plain function call would leave kmsd running as the subshell's child).
    (exec_kmsd=1 kmsd_clean --data-dir "$dir/data" \
        --kms-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        --grpc-listen 127.0.0.1:0 --dns-listen 127.0.0.1:0 \
        --log-format json "$@" >"$dir/kmsd.out" 2>"$dir/kmsd.log") &
    LOCAL_PID=$!
    local addrs=""
    for _ in $(seq 1 150); do # at most 30 s
        if addrs=$(helper serving "$dir/kmsd.log" 2>/dev/null); then
            break
        fi
        if ! kill -0 "$LOCAL_PID" 2>/dev/null; then
            tail -n 20 "$dir/kmsd.log" >&2
            fail "kmsd exited during start-up"
        fi
        sleep 0.2
    done
    [ -n "$addrs" ] || {
        tail -n 20 "$dir/kmsd.log" >&2
        fail "kmsd did not report 'kmsd serving' within 30 s"
    }
    read -r LOCAL_KMS LOCAL_HTTP _ <<<"$addrs"
    export LOCAL_PID LOCAL_KMS LOCAL_HTTP
}

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do # at most 10 s, then SIGKILL
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# http_get URL -> body on stdout; fails on connection errors (not on HTTP status codes).
http_get() { curl -sS --max-time 5 "$1"; }

# metric_value HTTP_ADDR NAME [label=value ...] -> the sum of matching samples, or "absent".
metric_value() {
    local addr=$1
    shift
    local body
    body=$(curl -sS --max-time 5 "http://$addr/metrics" 2>/dev/null) || {
        echo unreachable
        return 0
    }
    helper metric "$@" <<<"$body"
}

# wait_until SECONDS DESCRIPTION COMMAND... : run COMMAND every 0.5 s until it succeeds.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    while [ $SECONDS -lt $deadline ]; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    log "timed out after ${secs}s waiting for: $what"
    return 1
}
