#!/usr/bin/env bash
# Static and single-node checks of deploy/ (no Docker needed; ~10 s once kmsd is built):
#   * promtool check config / check rules / test rules on deploy/prometheus
#   * every shipped kmsd configuration is accepted by `kmsd --print-config`: the systemd
#     example, the image's default, the compose nodes' environment, the Kubernetes ConfigMap as
#     the init container renders it for each pod
#   * the Grafana dashboard is valid JSON and generated from deploy/grafana/dashboard.py
#   * every metric the dashboard and the alerts use is exported by kmsd (or known pending)
#   * a live /metrics scrape of a real node passes `promtool check metrics`
#   * docker-compose config, k8s manifest structure, systemd-analyze verify, shellcheck of the
#     scripts, links in the runbook (when the tools are available)
# Prints PASS/FAIL per check and exits non-zero if any failed.
#
# Environment: KMSD_BIN / KMSCTL_BIN (default: the repository's debug build, built if needed).
set -uo pipefail
# shellcheck source=tests/system/lib.sh
source "$(dirname "$0")/lib.sh"

failures=()
check() { # check NAME COMMAND... : run, record PASS/FAIL, never exit
    local name=$1
    shift
    local out
    if out=$("$@" 2>&1); then
        pass "$name"
    else
        log "FAIL: $name"
        printf '%s\n' "$out" | sed 's/^/    /' | tail -n 25 >&2
        failures+=("$name")
    fi
}

work=$(mktemp -d "${TMPDIR:-/tmp}/kmsd-check-deploy.XXXXXX")
LOCAL_PID=""
cleanup() {
    stop_pid "$LOCAL_PID"
    rm -rf "$work"
}
trap cleanup EXIT

cd "$REPO" || exit 1
bash scripts/install-test-deps.sh
find_binaries debug
# A Python with PyYAML for the compose/k8s/grafana checks: python3, else Debian's (python3-yaml).
pyyaml=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
    if /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
        pyyaml=/usr/bin/python3
    else
        fail "no Python with PyYAML (install the Debian package python3-yaml)"
    fi
fi

# ---- Prometheus --------------------------------------------------------------------------------
if command -v promtool >/dev/null; then
    check "promtool check config deploy/prometheus/prometheus.yml" \
        promtool check config deploy/prometheus/prometheus.yml
    check "promtool check rules deploy/prometheus/alerts.yml" \
        promtool check rules deploy/prometheus/alerts.yml
    check "promtool test rules deploy/prometheus/alerts_test.yml" \
        promtool test rules deploy/prometheus/alerts_test.yml
    # Debian's Prometheus is built without Kubernetes service discovery; check the k8s config
    # only where promtool knows kubernetes_sd_configs.
    out=$(promtool check config deploy/prometheus/prometheus-k8s.yml 2>&1)
    if grep -q 'field kubernetes_sd_configs not found' <<<"$out"; then
        log "SKIP: prometheus-k8s.yml (this promtool has no kubernetes_sd_configs)"
    else
        check "promtool check config deploy/prometheus/prometheus-k8s.yml" \
            promtool check config deploy/prometheus/prometheus-k8s.yml
    fi
else
    log "FAIL: promtool not available (scripts/install-test-deps.sh installs prometheus)"
    failures+=("promtool")
fi

# ---- kmsd configurations -----------------------------------------------------------------------
print_config() { kmsd_clean --config "$1" --print-config; }
check "kmsd accepts deploy/systemd/kmsd.toml" print_config deploy/systemd/kmsd.toml
check "kmsd accepts deploy/docker/kmsd.toml" print_config deploy/docker/kmsd.toml

# Compose: each node's KMSD_* environment over the image's default file.
compose_env() { # compose_env SERVICE -> KEY=VALUE lines
    "$pyyaml" - "$1" <<'EOF'
import sys, yaml
doc = yaml.safe_load(open("deploy/compose/docker-compose.yml"))
env = doc["services"][sys.argv[1]]["environment"]
for k, v in env.items():
    print(f"{k}={v}")
EOF
}
compose_node() {
    local svc=$1 vars line var flag help
    vars=$(compose_env "$svc") || return 1
    # kmsd ignores environment variables it does not know, so check each name against the
    # flags of `kmsd --help` (KMSD_SOME_NAME <-> --some-name).
    help=$("$KMSD_BIN" --help)
    while IFS= read -r line; do
        var=${line%%=*}
        flag=--$(tr 'A-Z_' 'a-z-' <<<"${var#KMSD_}")
        grep -Eq -- "^ +$flag( |$)" <<<"$help" || {
            echo "$var is set but kmsd has no flag $flag"
            return 1
        }
    done <<<"$vars"
    local -a kv
    mapfile -t kv <<<"$vars"
    env "${kv[@]}" "$KMSD_BIN" --config deploy/docker/kmsd.toml --print-config
}
for n in 1 2 3; do
    check "kmsd accepts compose service kmsd-$n (environment + image config)" compose_node "kmsd-$n"
done
if command -v docker-compose >/dev/null; then
    check "docker-compose config deploy/compose/docker-compose.yml" \
        docker-compose -f deploy/compose/docker-compose.yml config -q
fi

# Kubernetes: render the init container's script for each pod, as the pod would, and check the
# result with kmsd (node ids 1..3 from ordinals 0..2).
k8s_render() { # k8s_render POD -> writes $work/k8s/POD/kmsd.toml
    local pod=$1
    mkdir -p "$work/k8s/$pod/shared" "$work/k8s/$pod/run"
    "$pyyaml" - "$work/k8s/$pod" <<'EOF' || return 1
import sys, yaml
out = sys.argv[1]
cm = yaml.safe_load(open("deploy/k8s/configmap.yaml"))
open(f"{out}/shared/kmsd.toml", "w").write(cm["data"]["kmsd.toml"])
sts = yaml.safe_load(open("deploy/k8s/statefulset.yaml"))
init = sts["spec"]["template"]["spec"]["initContainers"][0]
script = init["command"][2]
script = script.replace("/etc/kmsd-shared/", f"{out}/shared/").replace("/run/kmsd/", f"{out}/run/")
open(f"{out}/init.sh", "w").write(script)
EOF
    POD_NAME=$pod POD_NAMESPACE=kmsd sh -e "$work/k8s/$pod/init.sh" >/dev/null
}
k8s_pod_config() {
    local pod=$1 id=$2 out
    k8s_render "$pod" || return 1
    out=$(print_config "$work/k8s/$pod/run/kmsd.toml") || {
        echo "$out"
        return 1
    }
    grep -qx "node-id = $id" <<<"$out" || {
        echo "expected node-id = $id in:"
        echo "$out"
        return 1
    }
}
check "k8s ConfigMap + init container -> kmsd-0 is node 1" k8s_pod_config kmsd-0 1
check "k8s ConfigMap + init container -> kmsd-2 is node 3" k8s_pod_config kmsd-2 3
check "k8s manifests are consistent" "$pyyaml" - <<'EOF'
import yaml, glob
docs = []
for f in sorted(glob.glob("deploy/k8s/*.yaml")):
    if f.endswith("kustomization.yaml"):
        continue
    for d in yaml.safe_load_all(open(f)):
        if d:
            docs.append((f, d))
kinds = {}
for f, d in docs:
    assert "apiVersion" in d and "kind" in d and d.get("metadata", {}).get("name"), f
    kinds.setdefault(d["kind"], []).append(d)
sts = kinds["StatefulSet"][0]["spec"]
assert sts["replicas"] == 3
pod = sts["template"]["spec"]
c = pod["containers"][0]
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["securityContext"]["readOnlyRootFilesystem"] is True
assert pod["securityContext"]["runAsNonRoot"] is True
svcs = {s["metadata"]["name"]: s for s in kinds["Service"]}
assert svcs[sts["serviceName"]]["spec"]["clusterIP"] == "None", "headless service"
ports = {(p["port"], p["protocol"]) for s in svcs.values() for p in s["spec"]["ports"]}
assert {(1688, "TCP"), (53, "UDP"), (53, "TCP")} <= ports, ports
named = {p["name"] for p in c["ports"]}
for s in svcs.values():
    for p in s["spec"]["ports"]:
        assert p["targetPort"] in named, p
assert kinds["PodDisruptionBudget"][0]["spec"]["minAvailable"] == 2
vols = {v["name"]: v for v in pod["volumes"]}
assert vols["tls"]["secret"]["secretName"] == "kmsd-tls"
assert vols["shared-config"]["configMap"]["name"] == kinds["ConfigMap"][0]["metadata"]["name"]
assert sts["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
kust = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
listed = set(kust["resources"])
present = {f.split("/")[-1] for f in glob.glob("deploy/k8s/*.yaml")} - {"kustomization.yaml"}
assert listed == present, (listed, present)
EOF

# systemd: verify the unit with ExecStart pointing at the built binary.
if command -v systemd-analyze >/dev/null; then
    unit_check() {
        mkdir -p "$work/systemd"
        sed "s|/usr/local/bin/kmsd|$KMSD_BIN|" deploy/systemd/kmsd.service >"$work/systemd/kmsd.service"
        local out
        out=$(systemd-analyze verify "$work/systemd/kmsd.service" 2>&1)
        # Only complaints about this unit count (the host's other units are not ours).
        if grep -i 'kmsd.service' <<<"$out" | grep -vi 'No such file or directory.*credential'; then
            return 1
        fi
        return 0
    }
    check "systemd-analyze verify deploy/systemd/kmsd.service" unit_check
fi

# ---- Grafana -----------------------------------------------------------------------------------
check "deploy/grafana/kmsd.json is valid and up to date with dashboard.py" \
    python3 deploy/grafana/dashboard.py --check
check "grafana provisioning files parse" "$pyyaml" -c '
import yaml, glob
for f in glob.glob("deploy/grafana/provisioning/*/*.yml"):
    assert yaml.safe_load(open(f))["apiVersion"] == 1, f
'

# ---- shell scripts ------------------------------------------------------------------------------
if command -v shellcheck >/dev/null; then
    check "shellcheck of the deploy/ and test scripts" \
        shellcheck -x -P SCRIPTDIR -S info deploy/docker/build-local.sh deploy/compose/gen-certs.sh \
        tests/system/*.sh tests/browser/*.sh scripts/system-test.sh scripts/browser-test.sh \
        scripts/install-test-deps.sh
fi

# ---- documentation links ------------------------------------------------------------------------
check "links and #anchors of docs/operations.md, docs/troubleshooting.md and deploy/ resolve" \
    python3 tests/system/check_links.py

# ---- a live node: /metrics -----------------------------------------------------------------------
start_local_kmsd "$work/node" --name check-deploy
# Populate the labelled families (activations, latency histogram).
"$KMSCTL_BIN" activate --kms "$LOCAL_KMS" --product "Windows 11 Enterprise" --machines 2 -o json >/dev/null ||
    log "warning: kmsctl activate failed"
"$KMSCTL_BIN" activate --kms "$LOCAL_KMS" --product "Office Professional Plus 2019" -o json >/dev/null ||
    log "warning: kmsctl activate failed"
curl -sS --max-time 5 "http://$LOCAL_HTTP/metrics" >"$work/metrics.txt" || fail "cannot scrape http://$LOCAL_HTTP/metrics"
if command -v promtool >/dev/null; then
    check "promtool check metrics (live scrape of a node)" sh -c "promtool check metrics < '$work/metrics.txt'"
fi
check "/healthz answers ok" sh -c "curl -sSf --max-time 5 http://$LOCAL_HTTP/healthz | grep -qx ok"
check "/readyz answers 200 in quorum" sh -c "curl -sSf --max-time 5 http://$LOCAL_HTTP/readyz | grep -q '^ok'"

# Every metric used by the dashboard and the alerts exists: in the live scrape, or declared in
# kmsd's registry (vectors without samples yet are not rendered), or on the short list of
# metrics the product is known to be adding.
PENDING="kmsd_raft_replication_lag kmsd_dns_queries_total kmsd_dns_dropped_total"
metric_names_ok() {
    local names n base missing=0
    names=$(helper metric-names deploy/grafana/kmsd.json deploy/prometheus/alerts.yml)
    for n in $names; do
        [ "$n" = up ] && continue
        base=$(sed -E 's/_(bucket|sum|count)$//' <<<"$n")
        if grep -Eq "^($n|$base)(\{| )" "$work/metrics.txt"; then
            continue
        fi
        if grep -rqs "\"$base\"" crates/kmsd/src; then
            continue # declared; no sample yet
        fi
        if grep -qw "$base" <<<"$PENDING"; then
            log "PENDING: $base is used by deploy/ but kmsd does not export it yet"
            continue
        fi
        echo "metric $n is used by deploy/ but neither exported nor declared by kmsd"
        missing=1
    done
    return $missing
}
check "every metric used by the dashboard and alerts is exported by kmsd" metric_names_ok

stop_pid "$LOCAL_PID"
LOCAL_PID=""

if [ ${#failures[@]} -gt 0 ]; then
    log "check-deploy: ${#failures[@]} check(s) failed:"
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
log "check-deploy: all checks passed"
