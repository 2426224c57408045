#!/usr/bin/env bash
# Build the kmsd container image on this machine, without any registry or base image:
# compile kmsd and kmsctl with cargo, assemble a minimal root filesystem (the two binaries, the
# shared libraries they link — glibc, libgcc_s, the dynamic loader —, /etc/passwd with a
# non-root user, /tmp, the default config) and `docker import` it.
#
# The result has the same layout as the registry build (deploy/docker/Dockerfile):
#   /usr/local/bin/kmsd, /usr/local/bin/kmsctl, /etc/kmsd/kmsd.toml (KMSD_CONFIG),
#   volume /var/lib/kmsd owned by 65532:65532, USER 65532, ENTRYPOINT kmsd.
#
# Usage: deploy/docker/build-local.sh [--tag NAME] [--no-build] [--profile release|dev]
#   --tag NAME       image name (default kmsd:local)
#   --no-build       reuse the binaries already in target/ (do not run cargo)
#   --profile P      cargo profile (default release; `dev` builds faster, the image is larger)
# Environment: CARGO_TARGET_DIR is honoured.
set -euo pipefail

tag=kmsd:local
build=1
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --profile) profile=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-local.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$profile" in
    release) bin_dir=$target_dir/release ;;
    dev|debug) profile=dev; bin_dir=$target_dir/debug ;;
    *) bin_dir=$target_dir/$profile ;;
esac

command -v docker >/dev/null || { echo "build-local.sh: docker not found" >&2; exit 1; }
command -v python3 >/dev/null || { echo "build-local.sh: python3 not found (used to write the image tar)" >&2; exit 1; }

if [ "$build" = 1 ]; then
    echo "build-local.sh: cargo build --profile $profile -p kmsd -p kmsctl" >&2
    (cd "$repo" && cargo build --locked --profile "$profile" -p kmsd -p kmsctl)
fi
for b in kmsd kmsctl; do
    [ -x "$bin_dir/$b" ] || { echo "build-local.sh: $bin_dir/$b missing (build first or drop --no-build)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/kmsd-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{usr/local/bin,etc/kmsd,var/lib/kmsd,tmp}

install -m 0755 "$bin_dir/kmsd" "$bin_dir/kmsctl" "$root/usr/local/bin/"
if command -v strip >/dev/null; then
    strip "$root/usr/local/bin/kmsd" "$root/usr/local/bin/kmsctl"
fi
install -m 0644 "$repo/deploy/docker/kmsd.toml" "$root/etc/kmsd/kmsd.toml"

# Shared libraries and the dynamic loader, at the paths the binaries ask for (ldd prints
# `name => /path (addr)` for libraries and `/path (addr)` for the loader; the vDSO has no path).
copy_lib() {
    local src=$1
    [ -e "$root$src" ] && return 0
    mkdir -p "$root$(dirname "$src")"
    cp -L "$src" "$root$src"
}
for b in "$bin_dir/kmsd" "$bin_dir/kmsctl"; do
    if ldd "$b" 2>&1 | grep -q 'not a dynamic executable'; then
        continue # statically linked: nothing to copy
    fi
    if ldd "$b" | grep -q 'not found'; then
        echo "build-local.sh: $b has unresolved libraries:" >&2
        ldd "$b" | grep 'not found' >&2
        exit 1
    fi
    while read -r path; do
        copy_lib "$path"
    done < <(ldd "$b" | sed -n -e 's/.*=> \(\/[^ ]*\) (.*/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p')
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
kmsd:x:65532:65532:kmsd:/var/lib/kmsd:/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
kmsd:x:65532:
EOF
# glibc (2.34+) has the files and dns NSS modules built in; say which to use explicitly.
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
: >"$root/etc/hosts"
: >"$root/etc/resolv.conf"

# Write the tar with the ownership and modes the image needs, independent of who runs this
# script (no root, no fakeroot): everything root-owned except the data directory.
python3 - "$root" "$work/rootfs.tar" <<'EOF'
import sys, tarfile
root, out = sys.argv[1], sys.argv[2]
def fix(ti):
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mtime = 0
    name = ti.name[2:] if ti.name.startswith("./") else ti.name
    if ti.isdir():
        ti.mode = 0o755
    if name == "tmp":
        ti.mode = 0o1777
    elif name == "var/lib/kmsd":
        ti.uid = ti.gid = 65532
        ti.uname = ti.gname = "kmsd"
        ti.mode = 0o750
    return ti
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    tar.add(root, arcname=".", filter=fix)
EOF

old_id=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
docker import \
    --message "kmsd built by deploy/docker/build-local.sh" \
    --change 'ENV KMSD_CONFIG=/etc/kmsd/kmsd.toml' \
    --change 'USER 65532:65532' \
    --change 'WORKDIR /var/lib/kmsd' \
    --change 'VOLUME ["/var/lib/kmsd"]' \
    --change 'EXPOSE 1688/tcp 1689/tcp 1690/tcp 1053/udp 1053/tcp' \
    --change 'ENTRYPOINT ["/usr/local/bin/kmsd"]' \
    "$work/rootfs.tar" "$tag" >/dev/null
new_id=$(docker image inspect --format '{{.Id}}' "$tag")
# Drop the image this one replaced, if nothing uses it (keeps repeated test runs from piling up
# dangling images).
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi

# Smoke test: the binaries start in the image (loader, libraries, config found).
docker run --rm --network none "$tag" --version >/dev/null
docker run --rm --network none "$tag" --print-config >/dev/null
docker run --rm --network none --entrypoint /usr/local/bin/kmsctl "$tag" --version >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$tag")
echo "build-local.sh: built $tag ($((size / 1024 / 1024)) MiB, $(docker image inspect --format '{{.Id}}' "$tag" | cut -c1-19))" >&2
