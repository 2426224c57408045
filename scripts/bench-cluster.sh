#!/usr/bin/env bash
# Performance of a three-node kmsd cluster on one machine (results and method:
# docs/performance.md, section "Three-node cluster"). Never run by the tests.
#
# Release binaries; every node on 127.0.0.1 with fixed ports, `--insecure` (no TLS), default
# settings otherwise. Nothing is pinned: the three nodes and the load generator share the
# machine's CPUs. Scenarios (SCENARIOS, default all, in this order):
#
#   new       new activations (`kmsctl bench --clients 0 --mode keepalive`, CONCURRENCY
#             workers): against a follower, against the leader, and spread over the three
#             nodes (three kmsctl processes at once, the workers divided among them).
#   renew     renewals (`--clients 1000`): against one follower and spread over the three. The
#             first round over the CMID pool is new activations; the server-side rate counts
#             only after it (as scripts/bench-host.sh does), the client-side latency
#             percentiles cover the whole run (first round included, ≤ 1000 requests per
#             kmsctl process).
#   failover  KILLS times: find the leader (/metrics kmsd_raft_is_leader), kill -9 it, then
#             activate new machines one at a time at a survivor (`kmsctl activate`, a new
#             process and connection each) until one is answered from a committed write (the
#             node's activation log line says "degraded": false). Failover time = kill -> that
#             answer. The killed node is restarted (same data and flags) and everything
#             converges before the next kill.
#   join-kms  fill a fresh cluster with JOIN_KMS_RECORDS new activations through the KMS ports
#             (three kmsctl bench processes), then start a 4th node with `--join` and time
#             until it counts every record.
#   join-snapshot
#             a node-1 data directory with JOIN_RECORDS live clients is generated through the
#             real store (tests/perf/fill_store.rs: Raft log append, apply, snapshot, purge —
#             as a running node leaves it; filling 1M through the KMS port would take far
#             longer, see the join-kms rate); node 1 starts on it (gRPC on 127.0.0.1:1689, the
#             address the generator records in the membership), then nodes 2, 3 and 4 join one
#             after the other, each receiving the leader's snapshot. Timed per node: start ->
#             "installed snapshot" in its log, and start -> its /metrics count equals
#             JOIN_RECORDS.
#
# Environment: DURATION (s per measurement, default 10), CONCURRENCY (default 64), KILLS
# (default 10), JOIN_KMS_RECORDS (default 100000), JOIN_RECORDS (default 1000000),
# SCENARIOS, SKIP_BUILD=1, KEEP=1 (keep the work directory with logs and JSON reports).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-64}
KILLS=${KILLS:-10}
JOIN_KMS_RECORDS=${JOIN_KMS_RECORDS:-100000}
JOIN_RECORDS=${JOIN_RECORDS:-1000000}
SCENARIOS=${SCENARIOS:-"new renew failover join-kms join-snapshot"}
RENEW_CLIENTS=1000
BIN="$ROOT/target/release"

WORK=$(mktemp -d /tmp/kmsd-cluster-bench.XXXXXX)
declare -A PID KMS GRPC HTTP ARGS
cleanup() {
    local id
    for id in "${!PID[@]}"; do
        if [[ -n "${PID[$id]}" ]] && kill -0 "${PID[$id]}" 2>/dev/null; then
            kill -CONT "${PID[$id]}" 2>/dev/null || true
            kill -9 "${PID[$id]}" 2>/dev/null || true
        fi
    done
    if [[ -z "${KEEP:-}" ]]; then rm -rf "$WORK"; else echo "work directory kept: $WORK" >&2; fi
}
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }

for tool in jq bc curl python3; do
    command -v "$tool" >/dev/null 2>&1 || { log "bench-cluster: needs $tool (apt-get install $tool)"; exit 2; }
done

# --- build -------------------------------------------------------------------------------
if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building release binaries (kmsd, kmsctl, the fill_store generator)…"
    (cd "$ROOT" && cargo build --release -p kmsd -p kmsctl >&2)
    if [[ " $SCENARIOS " == *" join-snapshot "* ]]; then
        (cd "$ROOT" && cargo test --release -p kmsd-e2e --test fill_store --no-run >&2)
    fi
fi
# shellcheck disable=SC2010
FILL_BIN=$(ls -t "$BIN"/deps/fill_store-* 2>/dev/null | grep -v '\.d$' | head -1 || true)

# --- nodes -------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# node_define ID DATA_DIR [FLAGS…]: fix the node's ports and flags (kept across restarts).
node_define() {
    local id=$1 data=$2
    shift 2
    KMS[$id]="127.0.0.1:$(free_port)"
    HTTP[$id]="127.0.0.1:$(free_port)"
    GRPC[$id]=${GRPC[$id]:-"127.0.0.1:$(free_port)"}
    ARGS[$id]="--node-id $id --data-dir $data --kms-listen ${KMS[$id]} --grpc-listen ${GRPC[$id]} \
--http-listen ${HTTP[$id]} --dns-listen 127.0.0.1:$(free_port) --insecure --log-format json $*"
}

# node_start ID: start (or restart) the node; its log goes to $WORK/nodeID.log.
node_start() {
    local id=$1
    # shellcheck disable=SC2086
    "$BIN/kmsd" ${ARGS[$id]} 2>>"$WORK/node$id.log" &
    PID[$id]=$!
}

node_kill() {
    kill -9 "${PID[$1]}" 2>/dev/null || true
    wait "${PID[$1]}" 2>/dev/null || true
    PID[$1]=""
}

cluster_stop() {
    local id
    for id in "${!PID[@]}"; do
        [[ -n "${PID[$id]}" ]] && node_kill "$id"
    done
    PID=() KMS=() GRPC=() HTTP=() ARGS=()
}

# cluster_start NAME: a new three-node cluster under $WORK/NAME, every node in quorum.
cluster_start() {
    local name=$1 id ic
    cluster_stop
    for id in 1 2 3; do GRPC[$id]="127.0.0.1:$(free_port)"; done
    ic="1=${GRPC[1]},2=${GRPC[2]},3=${GRPC[3]}"
    for id in 1 2 3; do
        node_define "$id" "$WORK/$name/node$id" --initial-cluster "$ic"
        node_start "$id"
    done
    for id in 1 2 3; do wait_ready "$id"; done
    # The host identity and the node directory are replicated before the first client.
    for id in 1 2 3; do
        "$BIN/kmsctl" -o json activate --kms "${KMS[$id]}" --product "Office 2010" --timeout 10 >/dev/null ||
            { log "node $id does not serve"; exit 1; }
    done
}

metric() { # metric ID SERIES -> value (empty if the node does not answer)
    { curl -fsS --max-time 5 "http://${HTTP[$1]}/metrics" 2>/dev/null || true; } |
        awk -v s="$2" 'index($0, s " ") == 1 { print $NF; exit }'
}
count() { local v; v=$(metric "$1" 'kmsd_pool_clients{pool="windows"}'); echo "${v%.*}"; }

wait_ready() { # wait_ready ID [SECS]: /readyz says "in quorum"
    local id=$1 limit=${2:-60} t0
    t0=$(now)
    while (($(echo "$(elapsed "$t0") < $limit" | bc -l))); do
        if curl -fsS --max-time 2 "http://${HTTP[$id]}/readyz" 2>/dev/null | grep -q "in quorum"; then
            return 0
        fi
        if [[ -n "${PID[$id]}" ]] && ! kill -0 "${PID[$id]}" 2>/dev/null; then
            log "node $id exited; log:"; tail -5 "$WORK/node$id.log" >&2; exit 1
        fi
        sleep 0.05
    done
    log "node $id not in quorum after $limit s"; exit 1
}

others() { # others ID: the other two of nodes 1, 2, 3
    local id
    for id in 1 2 3; do
        if [[ $id != "$1" ]]; then echo "$id"; fi
    done
}

wait_equal() { # wait_equal SECS IDS…: every node reports the same count (whatever it is)
    local limit=$1 t0 id first c ok
    shift
    t0=$(now)
    while (($(echo "$(elapsed "$t0") < $limit" | bc -l))); do
        ok=1 first=""
        for id in "$@"; do
            c=$(count "$id")
            [[ -n "$first" ]] || first=$c
            if [[ -z "$c" || "$c" != "$first" ]]; then ok=0; fi
        done
        if ((ok)); then echo "$first"; return 0; fi
        sleep 0.2
    done
    log "counts do not agree:"
    for id in "$@"; do log "  node $id: $(count "$id")"; done
    exit 1
}

leader() { # the one node (among running ones) whose gauge says it leads
    local id found=""
    for _ in $(seq 1 300); do
        found=""
        for id in "${!PID[@]}"; do
            [[ -n "${PID[$id]}" ]] || continue
            [[ "$(metric "$id" kmsd_raft_is_leader)" == "1" ]] && found="$found $id"
        done
        found=$(echo "$found" | xargs)
        if [[ -n "$found" && "$found" != *" "* ]]; then echo "$found"; return 0; fi
        sleep 0.1
    done
    log "no unique leader: '$found'"; exit 1
}

wait_counts() { # wait_counts EXPECTED SECS IDS…: every node counts EXPECTED clients
    local expected=$1 limit=$2 t0 id ok c
    shift 2
    t0=$(now)
    while (($(echo "$(elapsed "$t0") < $limit" | bc -l))); do
        ok=1
        for id in "$@"; do
            c=$(count "$id")
            [[ "$c" == "$expected" ]] || ok=0
        done
        ((ok)) && return 0
        sleep 0.1
    done
    log "counts did not converge on $expected:"
    for id in "$@"; do log "  node $id: $(count "$id")"; done
    exit 1
}

# Machine-wide busy CPU ticks and total ticks (for utilisation over a window).
cpu_sample() { awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 }' /proc/stat; }
cpu_busy_pct() { # cpu_busy_pct "BUSY0 TOTAL0" "BUSY1 TOTAL1"
    read -r b0 t0 <<<"$1"
    read -r b1 t1 <<<"$2"
    echo "scale=0; 100 * ($b1 - $b0) / ($t1 - $t0)" | bc
}

server_successes() { # sum over the running nodes of kmsd_activations_total{result="success"}
    local id total=0 v
    for id in "${!PID[@]}"; do
        [[ -n "${PID[$id]}" ]] || continue
        v=$({ curl -fsS --max-time 5 "http://${HTTP[$id]}/metrics" 2>/dev/null || true; } |
            awk '/^kmsd_activations_total\{/ && /result="success"/ { s += $NF } END { printf "%d\n", s }')
        total=$((total + v))
    done
    echo "$total"
}

# bench OUT KMS CONCURRENCY ARGS…: one kmsctl bench process in the background (sets BENCH_PID).
bench() {
    local out=$1 kms=$2 c=$3
    shift 3
    "$BIN/kmsctl" -o json bench --kms "$kms" --concurrency "$c" --mode keepalive --timeout 10 "$@" >"$out" &
    BENCH_PID=$!
}

# report NAME CPU% SERVER_RATE JSON…: one line over one or more kmsctl reports run at once.
report() {
    python3 - "$@" <<'EOF'
import json, sys
name, cpu, server = sys.argv[1], sys.argv[2], sys.argv[3]
rs = [json.load(open(p)) for p in sys.argv[4:]]
rps = sum(r["throughput_rps"] for r in rs)
p50 = "/".join(f"{r['latency_us']['p50'] / 1000:.1f}" for r in rs)
p99 = "/".join(f"{r['latency_us']['p99'] / 1000:.1f}" for r in rs)
errors = sum(r["requests"] - r["successes"] for r in rs)
reasons = {}
for r in rs:
    for k, v in r["errors_by_reason"].items():
        reasons[k] = reasons.get(k, 0) + v
server = f"{float(server):.0f}" if server != "-" else "-"
print(f"{name:<34} {rps:>9.0f} {server:>9} {p50:>16} {p99:>16} {cpu:>4}% {errors:>6} {reasons or ''}")
EOF
}

header() {
    printf '%-34s %9s %9s %16s %16s %5s %6s\n' scenario "client/s" "server/s" "p50 ms" "p99 ms" CPU errors
}

# --- scenarios ---------------------------------------------------------------------------

# load_run NAME CLIENTS TARGETS…: CONCURRENCY workers divided over one kmsctl process per
# target node, DURATION s (plus the warm-up round when CLIENTS > 0).
load_run() {
    local name=$1 clients=$2
    shift 2
    local n=$# i=0 id pids=() files=() c extra=0 warm_until=0
    if ((clients > 0)); then
        extra=5
        warm_until=$((n * (clients + CONCURRENCY)))
    fi
    local base=$((CONCURRENCY / n)) rem=$((CONCURRENCY % n))
    local s0 s1 t1 t2 c1 c2 srate="-"
    s0=$(server_successes)
    for id in "$@"; do
        c=$base
        ((i < rem)) && c=$((c + 1))
        i=$((i + 1))
        bench "$WORK/$name-$id.json" "${KMS[$id]}" "$c" --clients "$clients" --duration "$((DURATION + extra))"
        pids+=("$BENCH_PID")
        files+=("$WORK/$name-$id.json")
    done
    if ((clients > 0)); then
        # Skip the first round (new activations) and 1 s more.
        while (($(server_successes) - s0 < warm_until)); do sleep 0.05; done
        sleep 1
    fi
    t1=$(now); c1=$(cpu_sample); s1=$(server_successes)
    sleep "$((DURATION - 1))"
    t2=$(now); c2=$(cpu_sample)
    if ((clients > 0)); then
        srate=$(echo "($(server_successes) - $s1) / ($t2 - $t1)" | bc -l)
    fi
    for p in "${pids[@]}"; do wait "$p" || true; done
    report "$name" "$(cpu_busy_pct "$c1" "$c2")" "$srate" "${files[@]}"
}

scenario_new() {
    local l f
    echo "## new activations (--clients 0, keepalive, $CONCURRENCY workers, ${DURATION} s)"
    header
    cluster_start new-follower
    l=$(leader)
    f=$(others "$l" | head -1)
    load_run "new, one follower" 0 "$f"
    cluster_start new-leader
    l=$(leader)
    load_run "new, the leader" 0 "$l"
    cluster_start new-spread
    load_run "new, spread over 3 nodes" 0 1 2 3
    echo "# counts agree after the spread run: $(wait_equal 30 1 2 3) on every node"
}

scenario_renew() {
    local l f
    echo "## renewals (--clients $RENEW_CLIENTS per kmsctl process, keepalive, $CONCURRENCY workers)"
    header
    cluster_start renew-follower
    l=$(leader)
    f=$(others "$l" | head -1)
    load_run "renew, one follower" "$RENEW_CLIENTS" "$f"
    cluster_start renew-spread
    load_run "renew, spread over 3 nodes" "$RENEW_CLIENTS" 1 2 3
}

# One probe: a new machine at node ID; prints "degraded" or "committed" (or "failed").
probe() {
    local id=$1 out cmid d
    out=$("$BIN/kmsctl" -o json activate --kms "${KMS[$id]}" --timeout 10 2>/dev/null) || { echo failed; return; }
    cmid=$(jq -r '.[0].cmid // empty' <<<"$out" | tr 'A-F' 'a-f')
    [[ -n "$cmid" ]] || { echo failed; return; }
    for _ in $(seq 1 100); do
        d=$({ grep -i -- "$cmid" "$WORK/node$id.log" || true; } |
            jq -r 'select(.message == "activation request processed") | .degraded' | tail -1)
        if [[ -n "$d" ]]; then
            [[ "$d" == "false" ]] && echo committed || echo degraded
            return
        fi
        sleep 0.01
    done
    echo failed
}

scenario_failover() {
    local k l s t0 r n_degraded times=() id total=0
    echo "## failover: kill -9 of the leader -> first committed write on a survivor ($KILLS kills)"
    cluster_start failover
    for k in $(seq 1 "$KILLS"); do
        l=$(leader)
        s=$(others "$l" | shuf -n 1)
        sleep 1.5 # a settled lease, as in steady operation
        t0=$(now)
        node_kill "$l"
        n_degraded=0
        while true; do
            r=$(probe "$s")
            total=$((total + 1))
            [[ "$r" == committed ]] && break
            [[ "$r" == degraded ]] && n_degraded=$((n_degraded + 1))
            [[ "$r" == failed ]] && log "a probe failed at node $s"
            if (($(echo "$(elapsed "$t0") > 60" | bc -l))); then log "no committed write 60 s after the kill"; exit 1; fi
        done
        times+=("$(elapsed "$t0")")
        printf 'kill %2d: leader %s killed, probing node %s: first committed answer after %.3f s (%d degraded answers before it)\n' \
            "$k" "$l" "$s" "${times[-1]}" "$n_degraded"
        node_start "$l"
        for id in 1 2 3; do wait_ready "$id"; done
        wait_equal 60 1 2 3 >/dev/null
    done
    printf '%s\n' "${times[@]}" | sort -n | python3 -c '
import sys, statistics
v = [float(x) for x in sys.stdin if x.strip()]
print(f"failover over {len(v)} kills: min {min(v):.3f} s, median {statistics.median(v):.3f} s, max {max(v):.3f} s")'
}

# join_node ID JOIN_ADDR EXPECTED: start a node with --join and time it; prints one line.
join_node() {
    local id=$1 addr=$2 expected=$3 t0 t_count t_snap="" ts lines0=0
    # A data directory of its own per join (scenarios reuse node ids), and only this start's
    # log lines (node logs are appended across scenarios).
    node_define "$id" "$(mktemp -d "$WORK/join-$id.XXXXXX")" --join "$addr"
    [[ -f "$WORK/node$id.log" ]] && lines0=$(wc -l <"$WORK/node$id.log")
    t0=$(now)
    node_start "$id"
    while true; do
        [[ "$(count "$id")" == "$expected" ]] && break
        if (($(echo "$(elapsed "$t0") > 900" | bc -l))); then log "node $id did not catch up in 900 s"; exit 1; fi
        kill -0 "${PID[$id]}" 2>/dev/null || { log "node $id exited"; tail -5 "$WORK/node$id.log" >&2; exit 1; }
        sleep 0.1
    done
    t_count=$(elapsed "$t0")
    ts=$(tail -n +"$((lines0 + 1))" "$WORK/node$id.log" |
        jq -r 'select(.message == "installed snapshot") | .timestamp' 2>/dev/null | head -1)
    if [[ -n "$ts" ]]; then
        t_snap=$(echo "$(date -d "$ts" +%s.%N) - $t0" | bc -l)
        printf 'node %s joined: snapshot installed %.2f s after start, count %s visible after %.2f s (RSS %d MB)\n' \
            "$id" "$t_snap" "$expected" "$t_count" "$(($(awk '/^VmRSS:/ { print $2 }' "/proc/${PID[$id]}/status") / 1024))"
    else
        printf 'node %s joined: no snapshot (log replication); count %s visible after %.2f s (RSS %d MB)\n' \
            "$id" "$expected" "$t_count" "$(($(awk '/^VmRSS:/ { print $2 }' "/proc/${PID[$id]}/status") / 1024))"
    fi
}

scenario_join_kms() {
    local per t0 total=0 f id pids=() secs
    echo "## join: a 4th node joins a cluster filled with $JOIN_KMS_RECORDS records through the KMS ports"
    cluster_start join-kms
    per=$((JOIN_KMS_RECORDS / 3))
    t0=$(now)
    for id in 1 2 3; do
        bench "$WORK/fill-$id.json" "${KMS[$id]}" 22 --clients 0 --requests "$per"
        pids+=("$BENCH_PID")
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    secs=$(elapsed "$t0")
    for id in 1 2 3; do
        f=$(jq '.successes' "$WORK/fill-$id.json")
        total=$((total + f))
    done
    printf 'filled %d records in %.1f s (%.0f new activations/s over the three nodes)\n' "$total" "$secs" "$(echo "$total / $secs" | bc -l)"
    wait_counts "$total" 60 1 2 3
    join_node 4 "${GRPC[1]}" "$total"
    wait_ready 4
}

scenario_join_snapshot() {
    local data t0 id
    echo "## join: nodes join a cluster holding $JOIN_RECORDS records (snapshot install)"
    if [[ -z "$FILL_BIN" ]]; then log "fill_store test binary not found; build without SKIP_BUILD"; exit 1; fi
    if ! python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",1689))' 2>/dev/null; then
        echo "skipped: 127.0.0.1:1689 is in use (the generated membership names node 1 there)"
        return
    fi
    cluster_stop
    data="$WORK/snap/node1"
    mkdir -p "$data"
    t0=$(now)
    KMSD_FILL_DIR="$data" KMSD_FILL_CLIENTS="$JOIN_RECORDS" "$FILL_BIN" --ignored --nocapture --exact fill_store |
        grep '^fill_store:' || { log "fill_store failed"; exit 1; }
    printf 'generated in %.1f s; store on disk %s MB\n' "$(elapsed "$t0")" "$(du -sm "$data/store" | cut -f1)"
    GRPC[1]="127.0.0.1:1689"
    node_define 1 "$data"
    t0=$(now)
    node_start 1
    wait_ready 1 300
    wait_counts "$JOIN_RECORDS" 300 1
    printf 'node 1 ready with %s records after %.2f s\n' "$JOIN_RECORDS" "$(elapsed "$t0")"
    for id in 2 3 4; do
        join_node "$id" "${GRPC[1]}" "$JOIN_RECORDS"
        wait_ready "$id" 60
    done
    echo "# node 4 is the 4th node joining a 3-node cluster with $JOIN_RECORDS records"
}

# --- run ---------------------------------------------------------------------------------
echo "# kmsd bench-cluster $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); kernel $(uname -r)"
echo "# git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
echo "# three kmsd nodes (release, --insecure, defaults) and kmsctl share all CPUs; ${DURATION} s per measurement"
echo
for s in $SCENARIOS; do
    case $s in
    new) scenario_new ;;
    renew) scenario_renew ;;
    failover) scenario_failover ;;
    join-kms) scenario_join_kms ;;
    join-snapshot) scenario_join_snapshot ;;
    *) log "unknown scenario $s" ;;
    esac
    cluster_stop
    echo
done
echo "# client/s: kmsctl requests/s (summed over its processes); server/s: kmsd successes/s after"
echo "# the warm-up round (renewals only); p50/p99: per kmsctl process; CPU: machine-wide busy."
