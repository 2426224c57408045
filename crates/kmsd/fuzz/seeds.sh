#!/usr/bin/env bash
# Starting inputs for the config_parsers target (called by scripts/fuzz.sh with an empty
# corpus): arguments one per line, then a NUL, then the text of the --config file.
#   seeds.sh TARGET DIR
set -euo pipefail
[ "$1" = config_parsers ] || exit 0
dir="$2"
n=0
seed() { # ARGS [FILE]  (bash strings cannot hold the NUL, so printf writes it)
    n=$((n + 1))
    if [ "$#" -gt 1 ]; then
        printf '%s\0%s' "$1" "$2" >"${dir}/seed-${n}"
    else
        printf '%s' "$1" >"${dir}/seed-${n}"
    fi
}
seed ''
seed '--print-config'
seed $'--node-id\n2\n--name\nkms2\n--initial-cluster\n1=kms1:1689,2=kms2:1689,3=kms3:1689\n--insecure\n--grpc-listen\n[::]:1689'
seed $'--kms-listen\n0.0.0.0:1688,[::1]:1688\n--allow-client\n10.0.0.0/8,2001:db8::/32\n--log-level\ninfo,openraft=warn,kms_host[conn]=debug'
seed $'--config\nkmsd.toml\n--log-format\njson' $'data-dir = "/var/lib/kmsd"\nnode-id = 3\nname = "kms3"\nkms-listen = ["[::]:1688"]\nlog-level = "warn, kmsd=debug"\nmax-pdu-size = 4096\n\n[dns]\nzones = ["kms.corp.example", "corp.example."]\nttl = 30\npriority = 10\nweight = 50\naxfr-allow = ["192.0.2.0/24"]\nrate-limit = 100\n'
seed $'--config\nkmsd.toml\n--dns-zone\nkms.corp.example\n--dns-ttl\n60' $'[dns]\nzones = ["x.example"]\n'
seed $'--tls-ca\nca.pem\n--tls-cert\nnode.pem\n--tls-key\nnode.key\n--join\nkms1:1689\n--advertise\nkms4.corp.example\n--dns-axfr-allow\n::1/128\n--status-page-activations'
seed $'--commit-timeout-ms\n500\n--snapshot-every\n1000\n--snapshot-keep-logs\n0\n--idle-timeout-secs\n3600\n--max-connections\n1\n--max-connections-per-source\n1\n--drain-timeout-secs\n0\n--ndr64\nfalse\n--btfn\ntrue'
seed $'--restore\nbackup.kmsbak\n--dns-listen\n127.0.0.1:53\n--http-listen\n[fe80::1%2]:1690'
