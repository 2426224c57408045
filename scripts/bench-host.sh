#!/usr/bin/env bash
# End-to-end performance of one kmsd node (results and method: docs/performance.md).
#
# Builds release binaries, then for each scenario starts a fresh kmsd pinned to one CPU and
# drives it with `kmsctl bench` pinned to another CPU:
#   a) renewals, a new connection per request   (--clients 1000 --mode per-connection)
#   b) renewals, kept-alive connections          (--clients 1000 --mode keepalive)
#   c) new activations, kept-alive connections   (--clients 0    --mode keepalive)
#   d) new activations, a new connection each    (--clients 0    --mode per-connection)
# Server CPU per activation = (utime + stime of kmsd from /proc/PID/stat, delta over the
# measurement window) / successful activations counted by kmsd itself in that window
# (kmsd_activations_total{result="success"}). For renewals the window starts once the first
# round over the 1000 CMIDs (their new activations) is done.
#
# Then the large-state check: a data directory with RECORDS live clients is generated through
# the real store (tests/perf/fill_store.rs), and kmsd's restart time (exec -> /readyz 200) and
# RSS are measured on it, before and after load, and again after a clean restart.
#
# Environment: DURATION (s per scenario, default 10), CONCURRENCY (default 16), RECORDS
# (default 1000000, 0 skips the large-state check), SCENARIOS (default "a b c d"),
# KMSD_CPU / CLIENT_CPU (default 0 / 1), KMSD_ARGS (extra kmsd flags, e.g.
# "--log-level warn"), SKIP_BUILD=1, KEEP=1 (keep the work directory), BIN (directory of the
# kmsd and kmsctl binaries, default target/release), FILL_BIN (the fill_store test binary),
# BASELINE=1 (also measure bare TCP with scripts/tcp-baseline.c, built with gcc, as a
# yardstick for the host: the issue's CPU references were taken on another machine).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-16}
RECORDS=${RECORDS:-1000000}
SCENARIOS=${SCENARIOS:-"a b c d"}
KMSD_CPU=${KMSD_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
KMSD_ARGS=${KMSD_ARGS:-}
RENEW_CLIENTS=1000
BIN=${BIN:-"$ROOT/target/release"}
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d /tmp/kmsd-bench.XXXXXX)
KMSD_PID=""
cleanup() {
    if [[ -n "$KMSD_PID" ]] && kill -0 "$KMSD_PID" 2>/dev/null; then
        kill -9 "$KMSD_PID" 2>/dev/null || true
    fi
    if [[ -z "${KEEP:-}" ]]; then rm -rf "$WORK"; else echo "work directory kept: $WORK"; fi
}
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }

# --- build -------------------------------------------------------------------------------
if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building release binaries (kmsd, kmsctl, the fill_store generator)…"
    (cd "$ROOT" && cargo build --release -p kmsd -p kmsctl >&2)
    (cd "$ROOT" && cargo test --release -p kmsd-e2e --test fill_store --no-run >&2)
fi
FILL_BIN=${FILL_BIN:-$(ls -t "$ROOT"/target/release/deps/fill_store-* 2>/dev/null | grep -v '\.d$' | head -1 || true)}

# --- helpers -----------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# utime + stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

now() { date +%s.%N; }

# Successful activations counted by the node.
server_successes() {
    curl -m 5 -fsS "http://$HTTP/metrics" |
        awk '/^kmsd_activations_total\{/ && /result="success"/ { s += $NF } END { printf "%d\n", s }'
}

# One gauge of the node (refreshed by kmsd once a second).
server_gauge() {
    curl -m 5 -fsS "http://$HTTP/metrics" | awk -v n="$1" '$1 == n { printf "%d\n", $NF }'
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# start_kmsd DATA_DIR: starts kmsd pinned to KMSD_CPU, waits for /readyz, sets KMSD_PID, KMS,
# HTTP and STARTUP_S (exec -> ready).
start_kmsd() {
    local data=$1
    KMS="127.0.0.1:$(free_port)"
    HTTP="127.0.0.1:$(free_port)"
    local t0
    t0=$(now)
    # shellcheck disable=SC2086
    taskset -c "$KMSD_CPU" "$BIN/kmsd" --data-dir "$data" --kms-listen "$KMS" \
        --http-listen "$HTTP" --grpc-listen "127.0.0.1:$(free_port)" \
        --dns-listen "127.0.0.1:$(free_port)" $KMSD_ARGS 2>>"$data.log" &
    KMSD_PID=$!
    for _ in $(seq 1 6000); do
        if curl -m 2 -fsS -o /dev/null "http://$HTTP/readyz" 2>/dev/null; then
            STARTUP_S=$(echo "$(now) - $t0" | bc -l)
            return 0
        fi
        if ! kill -0 "$KMSD_PID" 2>/dev/null; then
            log "kmsd exited during startup; log:"; tail -20 "$data.log" >&2; exit 1
        fi
        sleep 0.01
    done
    log "kmsd not ready after 60 s"; exit 1
}

stop_kmsd() {
    local t0
    t0=$(now)
    kill -TERM "$KMSD_PID"
    wait "$KMSD_PID" || log "kmsd exited with $?"
    STOP_S=$(echo "$(now) - $t0" | bc -l)
    KMSD_PID=""
}

# Print one summary line from a kmsctl bench JSON report plus the server-side window figures.
summary() {
    python3 - "$@" <<'EOF'
import json, sys
name, path, ticks, tck, succ, secs, rss, hwm, entries = sys.argv[1:10]
r = json.load(open(path))
ticks, tck, succ, secs, entries = int(ticks), int(tck), int(succ), float(secs), int(entries)
cpu_us = ticks / tck * 1e6 / succ if succ else float("nan")
l = r["latency_us"]
errors = r["requests"] - r["successes"]
print(f"{name:<34} {r['throughput_rps']:>9.1f} {succ / secs:>9.1f} {l['p50']:>7} {l['p99']:>7} "
      f"{cpu_us:>8.1f} {ticks / tck / secs * 100:>5.0f}% {errors:>6} {int(rss) // 1024:>6} {int(hwm) // 1024:>6} "
      f"{(f'{succ / entries:.1f}' if entries > 0 else '-'):>7}")
EOF
}

# scenario NAME MODE CLIENTS
scenario() {
    local name=$1 mode=$2 clients=$3
    local data="$WORK/$name"
    start_kmsd "$data"
    local warm_until settle=1
    if [[ "$clients" -gt 0 ]]; then
        warm_until=$((clients + CONCURRENCY))
    else
        warm_until=0
    fi
    local json="$WORK/$name.json"
    taskset -c "$CLIENT_CPU" "$BIN/kmsctl" -o json bench --kms "$KMS" --mode "$mode" \
        --clients "$clients" --concurrency "$CONCURRENCY" \
        --duration "$((DURATION + settle + 2))" --timeout 5 >"$json" &
    local bench=$!
    # Warm-up: the first round over a CMID pool is new activations; skip it (and 1 s).
    while [[ "$(server_successes)" -lt "$warm_until" ]]; do sleep 0.05; done
    sleep "$settle"
    local t1 c1 s1 t2 c2 s2
    t1=$(now); c1=$(cpu_ticks "$KMSD_PID"); s1=$(server_successes)
    local e1 e2
    e1=$(server_gauge kmsd_raft_applied_index)
    wait "$bench" || true # exit code 1..3 when some requests failed; the report says which
    t2=$(now); c2=$(cpu_ticks "$KMSD_PID"); s2=$(server_successes)
    sleep 1.1 # let the Raft gauges catch up with the end of the run
    e2=$(server_gauge kmsd_raft_applied_index)
    local rss hwm
    rss=$(rss_kb "$KMSD_PID"); hwm=$(hwm_kb "$KMSD_PID")
    summary "$name" "$json" "$((c2 - c1))" "$CLK_TCK" "$((s2 - s1))" \
        "$(echo "$t2 - $t1" | bc -l)" "$rss" "$hwm" "$((e2 - e1))"
    stop_kmsd
}

# --- report header ------------------------------------------------------------------------
echo "# kmsd bench-host $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
    "$(grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2 | xargs) MHz; kernel $(uname -r)"
echo "# git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
echo "# kmsd on CPU $KMSD_CPU, kmsctl bench on CPU $CLIENT_CPU; concurrency $CONCURRENCY;" \
    "${DURATION} s window per scenario; kmsd flags: ${KMSD_ARGS:-(defaults)}"
echo
printf '%-34s %9s %9s %7s %7s %8s %6s %6s %6s %6s %7s\n' scenario "client/s" "server/s" "p50 µs" \
    "p99 µs" "µs CPU" "CPU" errors "RSS MB" "HWM MB" "/entry"

for s in $SCENARIOS; do
    case $s in
    a) scenario "a-renewal-per-connection" per-connection "$RENEW_CLIENTS" ;;
    b) scenario "b-renewal-keepalive" keepalive "$RENEW_CLIENTS" ;;
    c) scenario "c-new-activation-keepalive" keepalive 0 ;;
    d) scenario "d-new-activation-per-connection" per-connection 0 ;;
    *) log "unknown scenario $s" ;;
    esac
done
echo "# client/s: kmsctl's requests per second over its whole run; server/s, µs CPU and CPU %:"
echo "# kmsd's successes and CPU time in the measurement window; p50/p99: kmsctl latency;"
echo "# /entry: activations per Raft log entry in the window (≈, from a 1 s gauge; '-': no writes)."

# --- yardstick: bare TCP on this machine ----------------------------------------------------
# What any host pays before it does KMS work: scripts/tcp-baseline.c (one epoll thread that
# reads a request and writes a fixed reply), same CPUs and concurrency, same window.
baseline() {
    local name=$1 mode=$2 rounds=$3 port pid out c1 c2
    port=$(free_port)
    taskset -c "$KMSD_CPU" "$WORK/tcp-baseline" server "$port" &
    pid=$!
    sleep 0.2
    c1=$(cpu_ticks "$pid")
    out=$(taskset -c "$CLIENT_CPU" "$WORK/tcp-baseline" client "$port" "$mode" "$rounds" "$CONCURRENCY" "$DURATION")
    c2=$(cpu_ticks "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 -c 'import sys
name, ticks, tck, done, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
print(f"{name:<34} {done / secs:>9.1f} {ticks / tck * 1e6 / done:>8.1f} µs CPU {ticks / tck / secs * 100:>5.0f}%")' \
        "$name" "$((c2 - c1))" "$CLK_TCK" $out
}
if [[ -n "${BASELINE:-}" ]]; then
    if gcc -O2 -pthread -o "$WORK/tcp-baseline" "$ROOT/scripts/tcp-baseline.c"; then
        echo
        echo "# yardstick: bare TCP (scripts/tcp-baseline.c) on the same CPUs; per connection or request"
        baseline "tcp-accept-1-exchange-close" per-connection 1
        baseline "tcp-accept-2-exchanges-close" per-connection 2
        baseline "tcp-accept-3-exchanges-close" per-connection 3
        baseline "tcp-keepalive-exchange" keepalive 1
    else
        log "gcc failed; no yardstick"
    fi
fi

# --- large state: restart time and RSS ----------------------------------------------------
if [[ "$RECORDS" -gt 0 ]]; then
    if [[ -z "$FILL_BIN" ]]; then log "fill_store test binary not found; build without SKIP_BUILD"; exit 1; fi
    echo
    echo "# large state: $RECORDS live Windows clients"
    data="$WORK/large"
    mkdir -p "$data"
    t0=$(now)
    KMSD_FILL_DIR="$data" KMSD_FILL_CLIENTS="$RECORDS" "$FILL_BIN" --ignored --nocapture --exact fill_store |
        grep '^fill_store:' || { log "fill_store failed"; exit 1; }
    echo "generate: $(printf '%.1f' "$(echo "$(now) - $t0" | bc -l)") s; on disk $(du -sm "$data/store" | cut -f1) MB"
    for round in first-start clean-restart; do
        start_kmsd "$data"
        ready_rss=$(rss_kb "$KMSD_PID")
        # Wait for the pool gauge (refreshed every second) to show the clients.
        live=0
        for _ in $(seq 1 100); do
            live=$(curl -m 5 -fsS "http://$HTTP/metrics" | awk '/^kmsd_pool_clients\{pool="windows"\}/ { print $NF }')
            [[ "${live%.*}" -ge "$RECORDS" ]] && break
            sleep 0.1
        done
        # Some load on the big state: renewals and new clients.
        taskset -c "$CLIENT_CPU" "$BIN/kmsctl" -o json bench --kms "$KMS" --clients 0 \
            --concurrency "$CONCURRENCY" --duration 3 >"$WORK/large-$round.json" || true
        new_ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["successes"])' "$WORK/large-$round.json")
        printf '%-14s ready in %.2f s; live clients %s; RSS at ready %d MB; after %s new activations RSS %d MB, peak (VmHWM) %d MB\n' \
            "$round:" "$STARTUP_S" "$live" "$((ready_rss / 1024))" "$new_ok" \
            "$(($(rss_kb "$KMSD_PID") / 1024))" "$(($(hwm_kb "$KMSD_PID") / 1024))"
        stop_kmsd
        printf '%-14s SIGTERM -> exit in %.2f s\n' "" "$STOP_S"
    done
fi
