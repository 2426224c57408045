#!/usr/bin/env bash
# Run cargo-fuzz targets for a bounded time each.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [FUZZ_DIR...]
# SECONDS defaults to 60; FUZZ_DIR defaults to every crates/*/fuzz (kms-wire, kms-dns, kmsd),
# run one after the other. Each fuzz dir is its own cargo workspace; its targets are what
# `cargo +nightly fuzz list` prints there. Before a target runs for the first time, an
# optional `seeds.sh TARGET DIR` in its fuzz dir writes starting inputs into the empty corpus
# DIR, and an optional `TARGET.dict` there is passed to libFuzzer as its dictionary.
# Installs cargo-fuzz if missing (needs the nightly toolchain: `rustup toolchain list`).
# Extra libFuzzer flags can be given in FUZZ_FLAGS (e.g. FUZZ_FLAGS="-jobs=2").
# Exits non-zero if a target finds a crash (reproducer under <fuzz dir>/artifacts/<target>/).
# On a shared machine, run it as `nice -n 19 bash scripts/fuzz.sh ...`.
set -euo pipefail
secs="${1:-60}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$#" -eq 0 ]; then
    set -- "${root}"/crates/*/fuzz
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi
status=0
for dir in "$@"; do
    dir="$(cd "${dir}" && pwd)"
    for target in $(cd "${dir}" && cargo +nightly fuzz list); do
        echo "== ${dir#"${root}"/}: fuzz target ${target} (${secs}s)"
        corpus="${dir}/corpus/${target}"
        mkdir -p "${corpus}" "${dir}/artifacts"
        if [ -x "${dir}/seeds.sh" ] && [ -z "$(ls -A "${corpus}")" ]; then
            "${dir}/seeds.sh" "${target}" "${corpus}"
        fi
        flags=(-max_total_time="${secs}" -print_final_stats=1)
        if [ -f "${dir}/${target}.dict" ]; then
            flags+=(-dict="${dir}/${target}.dict")
        fi
        # shellcheck disable=SC2206 # FUZZ_FLAGS is a list of flags on purpose
        flags+=(${FUZZ_FLAGS:-})
        if ! (cd "${dir}" && cargo +nightly fuzz run "${target}" "${corpus}" -- "${flags[@]}"); then
            echo "!! ${target}: failed: a crash (see ${dir#"${root}"/}/artifacts/${target}/) or an interrupted run"
            status=1
        fi
    done
done
exit "${status}"
