#!/usr/bin/env bash
# Generate the TLS files of a kmsd cluster with `kmsctl cert`: a cluster CA, one node
# certificate per node and an admin client certificate for kmsctl.
#
# Usage: deploy/compose/gen-certs.sh [--out DIR] [--nodes "kmsd-1 kmsd-2 kmsd-3"]
#                                    [--host H]... [--owner UID[:GID]] [--force]
#   --out DIR      where to write (default: deploy/compose/certs next to this script)
#   --nodes LIST   node names; each node's certificate carries its name, localhost and
#                  127.0.0.1 (kmsctl through a published port) plus every --host
#   --host H       a further DNS name or address for every node certificate (repeatable)
#   --owner U[:G]  owner of the node directories, i.e. the user the containers run as
#                  (default 65532:65532, the image's user); "" keeps the invoking user
#   --force        replace existing files
# Environment: KMSCTL = the kmsctl to run (default: kmsctl in PATH, else target/release or
#   target/debug of this repository, else the kmsd:local image).
#
# Writes:
#   DIR/ca/ca.crt, DIR/ca/ca.key                      the CA (keep ca.key offline in production)
#   DIR/<node>/ca.crt, node.crt, node.key             one directory per node (mounted at /certs)
#   DIR/admin/ca.crt, client.admin.crt, client.admin.key   for kmsctl (--ca --cert --key)
#
# The node key must be readable by the container user. As root this script hands each node
# directory to --owner (keys stay 0600). Without root it cannot, and makes the node
# directories and keys world-readable instead — acceptable for a local demo on a single-user
# machine only; production keeps keys 0600 and hands them over with a secret store
# (Kubernetes Secret, systemd LoadCredential=).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$here/certs
nodes="kmsd-1 kmsd-2 kmsd-3"
hosts=()
owner=65532:65532
force=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --nodes) nodes=$2; shift 2 ;;
        --host) hosts+=("$2"); shift 2 ;;
        --owner) owner=$2; shift 2 ;;
        --force) force=(--force); shift ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gen-certs.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

# Which kmsctl: an explicit one, the installed one, the repository's build, or the image.
kmsctl=()
if [ -n "${KMSCTL:-}" ]; then
    kmsctl=("$KMSCTL")
elif command -v kmsctl >/dev/null; then
    kmsctl=(kmsctl)
elif [ -x "$repo/target/release/kmsctl" ]; then
    kmsctl=("$repo/target/release/kmsctl")
elif [ -x "$repo/target/debug/kmsctl" ]; then
    kmsctl=("$repo/target/debug/kmsctl")
elif docker image inspect kmsd:local >/dev/null 2>&1; then
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    kmsctl=(docker run --rm --network none --user "$(id -u):$(id -g)" -v "$out:$out"
        --entrypoint /usr/local/bin/kmsctl kmsd:local)
else
    echo "gen-certs.sh: no kmsctl found: set KMSCTL, build it (cargo build -p kmsctl) or build the image (deploy/docker/build-local.sh)" >&2
    exit 1
fi
if ! "${kmsctl[@]}" cert --help >/dev/null 2>&1; then
    echo "gen-certs.sh: ${kmsctl[*]} has no 'cert' subcommand (too old?)" >&2
    exit 1
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -f "$out/ca/ca.key" ] && [ ${#force[@]} -eq 0 ]; then
    echo "gen-certs.sh: reusing the CA in $out/ca" >&2
else
    "${kmsctl[@]}" cert create-ca --out-dir "$out/ca" --name "kmsd compose CA" "${force[@]}" >/dev/null
fi

for node in $nodes; do
    if [ -f "$out/$node/node.crt" ] && [ ${#force[@]} -eq 0 ]; then
        echo "gen-certs.sh: keeping $out/$node (--force replaces it)" >&2
        continue
    fi
    node_hosts=(localhost 127.0.0.1 "${hosts[@]}")
    args=()
    for h in "${node_hosts[@]}"; do args+=(--host "$h"); done
    "${kmsctl[@]}" cert create-node "$node" "${args[@]}" \
        --ca-dir "$out/ca" --out-dir "$out/$node" "${force[@]}" >/dev/null
done
if [ -f "$out/admin/client.admin.crt" ] && [ ${#force[@]} -eq 0 ]; then
    echo "gen-certs.sh: keeping $out/admin (--force replaces it)" >&2
else
    "${kmsctl[@]}" cert create-client admin --role admin \
        --ca-dir "$out/ca" --out-dir "$out/admin" "${force[@]}" >/dev/null
fi

# Hand the node directories to the container user.
if [ -n "$owner" ]; then
    for node in $nodes; do
        if [ "$(id -u)" -eq 0 ]; then
            chown -R "$owner" "$out/$node"
        else
            chmod 0755 "$out/$node"
            chmod 0644 "$out/$node/node.key"
        fi
    done
    if [ "$(id -u)" -ne 0 ]; then
        echo "gen-certs.sh: WARNING: not root, so node keys were made world-readable for the" \
            "containers (demo only; see the header of this script)" >&2
    fi
fi

echo "gen-certs.sh: certificates in $out/{ca,${nodes// /,},admin}" >&2
