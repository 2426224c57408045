#!/usr/bin/env bash
# Container system test: a three-node kmsd cluster in Docker, driven from the host.
#
#   1. image       deploy/docker/build-local.sh -> kmsd:local (no registry)
#   2. networks    <p>-clients (published ports, host access) and <p>-peers (internal: Raft and
#                  admin traffic between nodes, alias kmsd-N per node), both created here
#   3. cluster     kmsd-1..3 with --initial-cluster 1=kmsd-1:1689,…; TLS from `kmsctl cert`
#                  when kmsd has --tls-* flags, else --insecure; one leader, all in quorum;
#                  every node answers DNS: one SRV record per healthy node (dig); `kmsctl
#                  status` answers through the published gRPC ports (mutual TLS, admin cert)
#   4. prometheus  the host's Prometheus (Debian package) on 127.0.0.1, scraping the three
#                  published HTTP ports every second, with deploy/prometheus/alerts.yml loaded
#   5. activations through every node with kmsctl; one count on every node; a machine that
#                  renews through another node is counted once
#   6. failover    stop the leader's container: a new leader, activations keep being recorded
#                  in quorum, the stopped node leaves the SRV answers
#   7. degraded    disconnect a second node from the peers network: no quorum; both remaining
#                  nodes still answer (degraded mode, local journal)
#   8. converge    reconnect it, start the stopped node: one leader, journals replayed, the same
#                  count everywhere, nothing lost
#   9. prometheus  sees the failover and the degraded journal, every alert rule is healthy and
#                  every dashboard query evaluates; promtool check metrics on each node
# Everything created is removed at exit. Prints "SKIPPED: docker not available" and exits 0
# when `docker info` fails.
#
# Environment:
#   SYSTEST_NO_BUILD=1   reuse the image kmsd:local and target/release binaries as they are
#   SYSTEST_PROFILE=dev  build the image from debug binaries (CI: they are already built)
#   SYSTEST_KEEP=1       leave containers and networks for inspection (printed at exit)
#   SYSTEST_TLS=0        run the nodes with --insecure even when kmsd has the --tls-* flags
#                        (default: TLS whenever `kmsd --help` lists --tls-ca)
#   SYSTEST_ADMIN=0      skip the `kmsctl status` checks (default: run them when kmsctl has it)
set -euo pipefail
# shellcheck source=tests/system/lib.sh
source "$(dirname "$0")/lib.sh"

if ! docker info >/dev/null 2>&1; then
    echo "SKIPPED: docker not available (docker info failed)"
    exit 0
fi
cd "$REPO"

p=kmsd-systest-$$
clients_net=$p-clients
peers_net=$p-peers
image=kmsd:local
work=$(mktemp -d "${TMPDIR:-/tmp}/kmsd-systest.XXXXXX")
artifacts=$REPO/target/test-artifacts/system
rm -rf "$artifacts"
mkdir -p "$artifacts"
prom_pid=""
stage="start"

cleanup() {
    local rc=$?
    set +e
    if [ $rc -ne 0 ]; then
        log "system test FAILED during stage: $stage"
    fi
    for n in 1 2 3; do
        docker logs "$p-$n" >"$artifacts/kmsd-$n.log" 2>&1
    done
    if [ $rc -ne 0 ]; then
        for n in 1 2 3; do
            log "---- last log lines of kmsd-$n ($artifacts/kmsd-$n.log)"
            tail -n 15 "$artifacts/kmsd-$n.log" >&2
        done
    fi
    stop_pid "$prom_pid"
    if [ "${SYSTEST_KEEP:-0}" = 1 ]; then
        log "SYSTEST_KEEP=1: left containers $p-{1,2,3} and networks $clients_net $peers_net"
    else
        docker rm -f -v "$p-1" "$p-2" "$p-3" >/dev/null 2>&1
        docker network rm "$clients_net" "$peers_net" >/dev/null 2>&1
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. image ---------------------------------------------------------------------------------
stage="build the image"
if [ "${SYSTEST_NO_BUILD:-0}" = 1 ]; then
    docker image inspect "$image" >/dev/null 2>&1 || fail "SYSTEST_NO_BUILD=1 but no image $image"
else
    deploy/docker/build-local.sh --tag "$image" --profile "${SYSTEST_PROFILE:-release}"
fi
case "${SYSTEST_PROFILE:-release}" in
    dev | debug) bin_profile=debug ;;
    *) bin_profile=${SYSTEST_PROFILE:-release} ;;
esac
SKIP_CARGO_BUILD=1 find_binaries "$bin_profile" # kmsctl on the host, kmsd for --help

# ---- 2. networks, TLS -------------------------------------------------------------------------
stage="create networks"
docker network create "$clients_net" >/dev/null
docker network create --internal "$peers_net" >/dev/null

if [ "${SYSTEST_TLS:-auto}" != 0 ] && "$KMSD_BIN" --help | grep -q -- '--tls-ca' &&
    "$KMSCTL_BIN" cert --help >/dev/null 2>&1; then
    stage="generate certificates"
    KMSCTL=$KMSCTL_BIN deploy/compose/gen-certs.sh --out "$work/certs" --nodes "kmsd-1 kmsd-2 kmsd-3" >/dev/null 2>&1 ||
        fail "gen-certs.sh failed"
    tls_mode="TLS (certificates from kmsctl cert)"
else
    tls_mode="--insecure (SYSTEST_TLS=0 or no --tls-ca flag in kmsd)"
fi
log "peer traffic: $tls_mode"

# Host ports: fixed per node for the whole test, so a restarted container keeps its address and
# Prometheus' targets stay valid.
read -r -a ports <<<"$(helper free-ports 12)"
kms_port=("" "${ports[0]}" "${ports[1]}" "${ports[2]}")
http_port=("" "${ports[3]}" "${ports[4]}" "${ports[5]}")
grpc_port=("" "${ports[6]}" "${ports[7]}" "${ports[8]}")
kms() { echo "127.0.0.1:${kms_port[$1]}"; }
http() { echo "127.0.0.1:${http_port[$1]}"; }
grpc() { echo "127.0.0.1:${grpc_port[$1]}"; }
dns_port=("" "${ports[9]}" "${ports[10]}" "${ports[11]}")
zone=kms.systest.internal
dns_args=()
has_dns=0
if "$KMSD_BIN" --help | grep -q -- '--dns-zone' && command -v dig >/dev/null; then
    has_dns=1
    dns_args=(--dns-zone "$zone")
else
    log "skipping the DNS checks (no --dns-zone in kmsd, or no dig: scripts/install-test-deps.sh)"
fi

# ---- 3. cluster ---------------------------------------------------------------------------------
stage="start three nodes"
for n in 1 2 3; do
    node_tls=(--insecure)
    mounts=()
    if [ -d "$work/certs/kmsd-$n" ]; then
        mounts=(-v "$work/certs/kmsd-$n:/certs:ro")
        node_tls=(--tls-ca /certs/ca.crt --tls-cert /certs/node.crt --tls-key /certs/node.key)
    fi
    # No --hostname: Docker's DNS would resolve it on the clients network too, and peer
    # traffic must only have the peers network (so that disconnecting it partitions the node).
    docker create --name "$p-$n" \
        --network "$clients_net" \
        -p "$(kms "$n"):1688" -p "$(http "$n"):1690" -p "$(grpc "$n"):1689" \
        -p "127.0.0.1:${dns_port[$n]}:1053/udp" -p "127.0.0.1:${dns_port[$n]}:1053/tcp" \
        --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
        "${mounts[@]}" \
        "$image" \
        --node-id "$n" --name "kmsd-$n" --advertise "kmsd-$n" \
        --grpc-listen 0.0.0.0:1689 \
        --initial-cluster "1=kmsd-1:1689,2=kmsd-2:1689,3=kmsd-3:1689" \
        --commit-timeout-ms 1000 \
        "${dns_args[@]}" "${node_tls[@]}" >/dev/null
    docker network connect --alias "kmsd-$n" "$peers_net" "$p-$n"
done
for n in 1 2 3; do docker start "$p-$n" >/dev/null; done
log "started $p-{1,2,3}: KMS $(kms 1) $(kms 2) $(kms 3), HTTP $(http 1) $(http 2) $(http 3)"

readyz() { curl -sS --max-time 3 "http://$(http "$1")/readyz" 2>/dev/null || true; }
leaders() { # the node numbers (of those given) that report being leader
    local n
    for n in "$@"; do
        [ "$(metric_value "$(http "$n")" kmsd_raft_is_leader)" = 1 ] && echo "$n"
    done
    return 0
}
one_leader_among() { # one_leader_among N... : exactly one leader, every listed node in quorum
    local n l
    l=$(leaders "$@")
    [ "$(wc -w <<<"$l")" = 1 ] || return 1
    for n in "$@"; do
        [[ "$(readyz "$n")" == ok* ]] || return 1
    done
}
windows_count() { metric_value "$(http "$1")" kmsd_pool_clients pool=windows; }
same_count_on() { # same_count_on COUNT N... : every listed node has COUNT windows clients
    local want=$1 n
    shift
    for n in "$@"; do
        [ "$(windows_count "$n")" = "$want" ] || return 1
    done
}
show_counts() {
    local n out=""
    for n in "$@"; do out+="kmsd-$n=$(windows_count "$n") "; done
    echo "$out"
}
journal() { metric_value "$(http "$1")" kmsd_degraded_journal_entries; }
srv_targets() { # srv_targets NODE -> sorted SRV targets in that node's answer (UDP)
    dig @127.0.0.1 -p "${dns_port[$1]}" +short +time=2 +tries=1 SRV "_vlmcs._tcp.$zone" 2>/dev/null |
        awk '{print $4}' | sort | tr '\n' ' '
}
srv_is() { # srv_is NODE "kmsd-1. kmsd-2. …" : the node answers exactly these targets
    [ "$(srv_targets "$1")" = "$2 " ]
}
container_state() { docker inspect -f 'container {{.State.Status}} (exit code {{.State.ExitCode}})' "$p-$1" 2>&1; }

stage="cluster formation"
wait_until 20 "every node's HTTP endpoint" sh -c "for n in $(http 1) $(http 2) $(http 3); do curl -sf --max-time 2 http://\$n/healthz >/dev/null || exit 1; done" ||
    fail "the nodes' HTTP endpoints did not come up"
t0=$SECONDS
if ! wait_until 60 "one leader and three nodes in quorum" one_leader_among 1 2 3; then
    for n in 1 2 3; do
        log "kmsd-$n: $(container_state "$n"), readyz='$(readyz "$n" | tr -d '\n')' leader=$(metric_value "$(http "$n")" kmsd_raft_is_leader) term=$(metric_value "$(http "$n")" kmsd_raft_term)"
    done
    fail "the three containers did not form one cluster within 60 s"
fi
leader=$(leaders 1 2 3)
term0=$(metric_value "$(http "$leader")" kmsd_raft_term)
pass "cluster formed in $((SECONDS - t0)) s: leader kmsd-$leader, term $term0"

if [ $has_dns = 1 ]; then
    stage="DNS"
    for n in 1 2 3; do
        wait_until 15 "kmsd-$n answers SRV with all three nodes" srv_is "$n" "kmsd-1. kmsd-2. kmsd-3." ||
            fail "SRV _vlmcs._tcp.$zone from kmsd-$n: '$(srv_targets "$n")', expected kmsd-1. kmsd-2. kmsd-3."
    done
    tcp_answer=$(dig @127.0.0.1 -p "${dns_port[1]}" +tcp +short +time=2 +tries=1 SRV "_vlmcs._tcp.$zone" | wc -l)
    [ "$tcp_answer" = 3 ] || fail "SRV over TCP from kmsd-1: $tcp_answer records, expected 3"
    rcode=$(dig @127.0.0.1 -p "${dns_port[1]}" +time=2 +tries=1 A example.com | sed -n 's/.*status: \([A-Z]*\).*/\1/p')
    [ "$rcode" = REFUSED ] || fail "a name outside the zone got $rcode, expected REFUSED"
    pass "DNS: every node answers _vlmcs._tcp.$zone with three SRV records (UDP and TCP); other names REFUSED"
fi

# kmsctl status through the published gRPC ports, when this kmsctl has it.
kmsctl_status() { # kmsctl_status NODE... : the admin API answers through the given nodes
    local servers="" n
    for n in "$@"; do servers+="${servers:+,}$(grpc "$n")"; done
    local tls=()
    [ -d "$work/certs/admin" ] && tls=(--ca "$work/certs/admin/ca.crt"
        --cert "$work/certs/admin/client.admin.crt" --key "$work/certs/admin/client.admin.key")
    "$KMSCTL_BIN" status --server "$servers" "${tls[@]}" >"$work/status.txt" 2>&1
}
has_status=0
[ "${SYSTEST_ADMIN:-1}" != 0 ] && "$KMSCTL_BIN" status --help >/dev/null 2>&1 && has_status=1
if [ $has_status = 1 ]; then
    stage="kmsctl status"
    kmsctl_status 1 2 3 || fail "kmsctl status: $(cat "$work/status.txt")"
    cp "$work/status.txt" "$artifacts/kmsctl-status-formed.txt"
    pass "kmsctl status answers (target/test-artifacts/system/kmsctl-status-formed.txt)"
else
    log "skipping the kmsctl status checks (SYSTEST_ADMIN=0 or no 'status' in kmsctl)"
fi

# ---- 4. prometheus ------------------------------------------------------------------------------
stage="start prometheus"
prom_url=""
if command -v prometheus >/dev/null; then
    prom_port=$(helper free-ports 1)
    prom_url=http://127.0.0.1:$prom_port
    mkdir -p "$work/prom/data"
    cp deploy/prometheus/alerts.yml "$work/prom/alerts.yml"
    {
        echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
        echo "rule_files: [alerts.yml]"
        echo "scrape_configs:"
        echo "  - job_name: kmsd"
        echo "    scrape_timeout: 1s"
        echo "    static_configs:"
        for n in 1 2 3; do
            echo "      - targets: ['$(http "$n")']"
            echo "        labels: {cluster: systest, instance: kmsd-$n}"
        done
    } >"$work/prom/prometheus.yml"
    promtool check config "$work/prom/prometheus.yml" >/dev/null || fail "generated Prometheus config invalid"
    prometheus --config.file="$work/prom/prometheus.yml" --storage.tsdb.path="$work/prom/data" \
        --web.listen-address="127.0.0.1:$prom_port" --log.level=warn \
        >"$artifacts/prometheus.log" 2>&1 &
    prom_pid=$!
    prom_q() { helper promql "$prom_url" "$1"; }
    prom_is() { # prom_is EXPR VALUE : the query returns exactly one sample equal to VALUE
        local out
        out=$(prom_q "$1") || return 1
        [ "$(wc -l <<<"$out")" = 1 ] && [ "${out%% *}" = "$2" ]
    }
    wait_until 30 "Prometheus scraping three kmsd targets" prom_is 'sum(up{job="kmsd"})' 3 ||
        fail "Prometheus at $prom_url does not see three healthy kmsd targets"
    pass "host Prometheus ($(prometheus --version 2>&1 | head -1 | awk '{print $3}')) scrapes the three nodes"
else
    log "WARNING: prometheus not installed: skipping the Prometheus checks (scripts/install-test-deps.sh installs it)"
fi

# ---- 5. activations -----------------------------------------------------------------------------
activate() { # activate NODE MACHINES|- [PRODUCT [extra kmsctl args]] -> kmsctl summary
    local n=$1 m=$2 product=${3:-Windows 11 Enterprise}
    shift $(($# < 3 ? $# : 3))
    local args=(--kms "$(kms "$n")" --product "$product" --timeout 10 -o json)
    [ "$m" = - ] || args+=(--machines "$m")
    local out
    out=$("$KMSCTL_BIN" activate "${args[@]}" "$@") || {
        echo "kmsctl activate via kmsd-$n failed: $out" >&2
        return 1
    }
    helper activations <<<"$out"
}
expect_activated() { # expect_activated NODE MACHINES SUMMARY
    grep -q "activated=$2 " <<<"$3" || fail "activations via kmsd-$1: expected $2 activated, got: $3"
}

stage="activations through every node"
total=0
for n in 1 2 3; do
    s=$(activate "$n" 8 "Windows 11 Enterprise") || fail "activation via kmsd-$n"
    expect_activated "$n" 8 "$s"
    total=$((total + 8))
done
# The same machine renewing through another node is counted once, cluster-wide.
cmid=$(python3 -c 'import uuid; print(uuid.uuid4())')
s=$(activate 1 - "Windows 11 Enterprise" --cmid "$cmid") || fail "activation via kmsd-1"
expect_activated 1 1 "$s"
total=$((total + 1))
s=$(activate 2 - "Windows 11 Enterprise" --cmid "$cmid") || fail "renewal via kmsd-2"
expect_activated 2 1 "$s"
grep -q "last_count=$total" <<<"$s" || fail "renewal of a known machine via another node changed the count: $s (expected $total)"
s=$(activate 3 5 "Office Professional Plus 2019") || fail "office activation via kmsd-3"
expect_activated 3 5 "$s"
wait_until 15 "count $total on every node" same_count_on "$total" 1 2 3 ||
    fail "counts differ or are wrong: $(show_counts 1 2 3)(expected $total)"
pass "$total Windows machines activated through three nodes, renewal counted once: $(show_counts 1 2 3)"
[ "$(metric_value "$(http 1)" kmsd_pool_clients pool=office2013plus)" = 5 ] ||
    fail "office2013plus count on kmsd-1 is $(metric_value "$(http 1)" kmsd_pool_clients pool=office2013plus), expected 5"
if [ -n "$prom_url" ]; then
    wait_until 10 "Prometheus sees the count" prom_is 'max(kmsd_pool_clients{pool="windows"})' "$total" ||
        fail "Prometheus: max(kmsd_pool_clients{pool=windows}) = $(prom_q 'max(kmsd_pool_clients{pool="windows"})')"
    prom_is 'sum(kmsd_raft_is_leader)' 1 || fail "Prometheus: sum(kmsd_raft_is_leader) = $(prom_q 'sum(kmsd_raft_is_leader)')"
    for n in 1 2 3; do
        curl -sS --max-time 5 "http://$(http "$n")/metrics" >"$work/metrics-$n.txt"
        promtool check metrics <"$work/metrics-$n.txt" >"$work/promtool-$n.txt" 2>&1 ||
            log "WARNING: promtool check metrics on kmsd-$n: $(tr '\n' ' ' <"$work/promtool-$n.txt")"
    done
    pass "Prometheus agrees: one leader, count $total"
fi

# ---- 6. failover --------------------------------------------------------------------------------
stage="failover: stop the leader"
down=$leader
survivors=()
for n in 1 2 3; do [ "$n" = "$down" ] || survivors+=("$n"); done
docker stop -t 10 "$p-$down" >/dev/null
t0=$SECONDS
wait_until 30 "a new leader among kmsd-${survivors[0]} and kmsd-${survivors[1]}" one_leader_among "${survivors[@]}" ||
    fail "no new leader after stopping kmsd-$down: readyz ${survivors[0]}='$(readyz "${survivors[0]}")' ${survivors[1]}='$(readyz "${survivors[1]}")'"
leader=$(leaders "${survivors[@]}")
term1=$(metric_value "$(http "$leader")" kmsd_raft_term)
[ "$term1" -gt "$term0" ] || fail "term did not increase ($term0 -> $term1)"
pass "failover in $((SECONDS - t0)) s: kmsd-$down stopped, new leader kmsd-$leader (term $term1)"
if [ $has_dns = 1 ]; then
    stage="failover: DNS"
    remaining=""
    for n in 1 2 3; do [ "$n" = "$down" ] || remaining+="${remaining:+ }kmsd-$n."; done
    t0=$SECONDS
    for n in "${survivors[@]}"; do
        wait_until 20 "kmsd-$n drops kmsd-$down from SRV" srv_is "$n" "$remaining" ||
            fail "SRV from kmsd-$n still '$(srv_targets "$n")' after stopping kmsd-$down"
    done
    pass "DNS: kmsd-$down left the SRV answers of both survivors within $((SECONDS - t0)) s"
fi

stage="failover: activations in quorum"
follower=${survivors[0]}
[ "$follower" = "$leader" ] && follower=${survivors[1]}
s=$(activate "$follower" 3) || fail "activation via kmsd-$follower after failover"
expect_activated "$follower" 3 "$s"
total=$((total + 3))
wait_until 10 "count $total on both survivors" same_count_on "$total" "${survivors[@]}" ||
    fail "after failover: $(show_counts "${survivors[@]}")(expected $total)"
[ "$(journal "$follower")" = 0 ] || fail "kmsd-$follower journalled although a leader was reachable"
pass "activations after failover are committed in quorum: $(show_counts "${survivors[@]}")"
if [ -n "$prom_url" ]; then
    wait_until 10 "Prometheus sees kmsd-$down down" prom_is "up{instance=\"kmsd-$down\"}" 0 ||
        fail "Prometheus: up{instance=kmsd-$down} = $(prom_q "up{instance=\"kmsd-$down\"}")"
    pass "Prometheus sees kmsd-$down down"
fi

# ---- 7. degraded --------------------------------------------------------------------------------
stage="degraded: partition a second node"
cut=$follower
docker network disconnect "$peers_net" "$p-$cut"
log "disconnected kmsd-$cut from $peers_net: kmsd-$leader and kmsd-$cut are alone (no quorum)"
before=$total
for n in "$leader" "$cut"; do
    s=$(activate "$n" 2) || fail "activation via kmsd-$n without quorum: a client must never be refused because of cluster trouble"
    expect_activated "$n" 2 "$s"
    # The count a client sees includes itself: last applied state plus the node's journal.
    grep -q "last_count=$((before + 2))$" <<<"$s" || fail "kmsd-$n in degraded mode reported: $s (expected last_count=$((before + 2)))"
done
total=$((total + 4))
for n in "$leader" "$cut"; do
    j=$(journal "$n")
    if ! [[ "$j" =~ ^[0-9]+$ ]] || [ "$j" -lt 2 ]; then
        fail "kmsd-$n: degraded journal has '$j' entries, expected ≥ 2"
    fi
    r=$(readyz "$n")
    [[ "$r" == degraded* ]] || fail "kmsd-$n: /readyz says '$r', expected degraded"
done
pass "degraded serving: both isolated nodes answered, journals $(journal "$leader") and $(journal "$cut"), /readyz degraded"
if [ $has_dns = 1 ]; then
    # A node that has lost every peer still answers DNS, with itself: it may be the only one
    # a client can reach.
    for n in "$leader" "$cut"; do
        wait_until 20 "isolated kmsd-$n answers SRV with itself alone" srv_is "$n" "kmsd-$n." ||
            fail "SRV from isolated kmsd-$n: '$(srv_targets "$n")', expected kmsd-$n. alone"
    done
    pass "DNS: each isolated node answers SRV with itself"
fi
if [ -n "$prom_url" ]; then
    prom_journal_ge_4() { [ "$(prom_q 'sum(kmsd_degraded_journal_entries) >= 4' | wc -l)" = 1 ]; }
    wait_until 10 "Prometheus sees the degraded journals" prom_journal_ge_4 ||
        fail "Prometheus: sum(kmsd_degraded_journal_entries) = $(prom_q 'sum(kmsd_degraded_journal_entries)')"
    quorum_alert_active() { [[ "$(helper alert-state "$prom_url" KmsdQuorumLost)" =~ pending|firing ]]; }
    wait_until 15 "alert KmsdQuorumLost pending or firing" quorum_alert_active ||
        fail "KmsdQuorumLost is $(helper alert-state "$prom_url" KmsdQuorumLost) while two nodes journal"
    pass "Prometheus sees the degraded journals; KmsdQuorumLost is $(helper alert-state "$prom_url" KmsdQuorumLost)"
fi

# ---- 8. convergence -----------------------------------------------------------------------------
stage="convergence: reconnect and restart"
docker network connect --alias "kmsd-$cut" "$peers_net" "$p-$cut"
docker start "$p-$down" >/dev/null
t0=$SECONDS
wait_until 60 "one leader, three nodes in quorum" one_leader_among 1 2 3 ||
    fail "the cluster did not re-form: readyz 1='$(readyz 1)' 2='$(readyz 2)' 3='$(readyz 3)'"
journals_empty() { for n in 1 2 3; do [ "$(journal "$n")" = 0 ] || return 1; done; }
wait_until 30 "degraded journals replayed" journals_empty ||
    fail "journals not replayed: kmsd-1=$(journal 1) kmsd-2=$(journal 2) kmsd-3=$(journal 3)"
wait_until 30 "count $total on every node" same_count_on "$total" 1 2 3 ||
    fail "after convergence: $(show_counts 1 2 3)(expected $total: records lost or not replicated)"
pass "converged in $((SECONDS - t0)) s: leader kmsd-$(leaders 1 2 3), journals empty, $(show_counts 1 2 3)"
if [ $has_dns = 1 ]; then
    for n in 1 2 3; do
        wait_until 20 "kmsd-$n answers SRV with all three nodes again" srv_is "$n" "kmsd-1. kmsd-2. kmsd-3." ||
            fail "SRV from kmsd-$n after convergence: '$(srv_targets "$n")'"
    done
    pass "DNS: all three nodes back in every node's SRV answer"
fi
if [ $has_status = 1 ]; then
    kmsctl_status 1 2 3 || fail "kmsctl status after convergence: $(cat "$work/status.txt")"
    cp "$work/status.txt" "$artifacts/kmsctl-status-converged.txt"
    pass "kmsctl status answers after convergence"
fi

# ---- 9. prometheus: rules and dashboard ---------------------------------------------------------
if [ -n "$prom_url" ]; then
    stage="prometheus rules and dashboard queries"
    wait_until 15 "all three targets up again" prom_is 'sum(up{job="kmsd"})' 3 ||
        fail "Prometheus: sum(up) = $(prom_q 'sum(up{job="kmsd"})')"
    helper rules-health "$prom_url" || fail "alert rules are not healthy in Prometheus"
    helper promql-check "$prom_url" deploy/grafana/kmsd.json deploy/prometheus/alerts.yml ||
        fail "Prometheus refused dashboard or alert expressions"
    wait_until 10 "Prometheus sees the final count" prom_is 'max(kmsd_pool_clients{pool="windows"})' "$total" ||
        fail "Prometheus: $(prom_q 'kmsd_pool_clients{pool="windows"}')"
    curl -sS --max-time 5 "$prom_url/api/v1/query?query=kmsd_pool_clients" >"$artifacts/prometheus-final-counts.json" || true
    pass "Prometheus: rules healthy, dashboard queries evaluate, final count $total"
fi

stage="done"
pass "system test: formation, one count, failover, degraded serving, convergence ($tls_mode)"
