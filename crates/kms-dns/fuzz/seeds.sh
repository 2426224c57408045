#!/usr/bin/env bash
# Starting inputs for the dns_message target (called by scripts/fuzz.sh with an empty corpus):
# byte 0 selects transport, AXFR permission and UDP cap (see fuzz_targets/dns_message.rs),
# the rest is a query for the fuzz zones kms.corp.example. and corp.example.
#   seeds.sh TARGET DIR
set -euo pipefail
[ "$1" = dns_message ] || exit 0
dir="$2"
hdr='\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00'     # id 0x1234, RD, QDCOUNT 1
hdr_opt='\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01' # ... and ARCOUNT 1
hdr_ns='\x12\x34\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00'  # ... NSCOUNT 1 (IXFR)
zone='\x03kms\x04corp\x07example\x00'
srv='\x06_vlmcs\x04_tcp'"${zone}"
opt='\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00'          # OPT, 4096 bytes, DO
in='\x00\x01'
n=0
seed() { # SELECTOR HEADER QUESTION [EXTRA]
    n=$((n + 1))
    printf "$1$2$3${4:-}" >"${dir}/seed-${n}"
}
seed '\x00' "${hdr}" "${srv}"'\x00\x21'"${in}"
seed '\x04' "${hdr_opt}" "${srv}"'\x00\x21'"${in}" "${opt}"
seed '\x01' "${hdr}" '\x06_vlmcs\x04_tcp\x04corp\x07example\x00\x00\x21'"${in}"
seed '\x00' "${hdr}" '\x04kms1'"${zone}"'\x00\x01'"${in}"
seed '\x08' "${hdr_opt}" '\x04kms2'"${zone}"'\x00\x1c'"${in}" "${opt}"
seed '\x00' "${hdr}" '\x04kms9'"${zone}"'\x00\x01'"${in}"
seed '\x00' "${hdr}" "${zone}"'\x00\x06'"${in}"
seed '\x00' "${hdr}" "${zone}"'\x00\x02'"${in}"
seed '\x00' "${hdr}" "${zone}"'\x00\xff'"${in}"
seed '\x01' "${hdr}" "${zone}"'\x00\xff'"${in}"
seed '\x03' "${hdr}" "${zone}"'\x00\xfc'"${in}"
seed '\x03' "${hdr_ns}" "${zone}"'\x00\xfb'"${in}" '\xc0\x0c\x00\x06\x00\x01\x00\x00\x00\x3c\x00\x16\x00\x00\x00\x00\x00\x01\x00\x00\x00\x3c\x00\x00\x00\x1e\x00\x01\x51\x80\x00\x00\x00\x1e'
seed '\x02' "${hdr}" "${zone}"'\x00\xfb'"${in}"
seed '\x00' "${hdr}" '\x07example\x03org\x00\x00\x01'"${in}"
seed '\x00' "${hdr_opt}" "${srv}"'\x00\x21'"${in}" '\x00\x00\x29\x02\x00\x00\x01\x00\x00\x00\x00'
