#!/usr/bin/env python3
"""Small helpers for the shell tests in tests/system and tests/browser (standard library only).

    helpers.py serving LOGFILE            -> "KMS_ADDR HTTP_ADDR GRPC_ADDR" from kmsd's JSON log
    helpers.py metric NAME [k=v ...]      -> sum of the samples of NAME matching the labels,
                                            read from a Prometheus text exposition on stdin
                                            ("absent" if there is none)
    helpers.py activations                -> summary of `kmsctl activate -o json` on stdin:
                                            "activated=N refused=N other=N last_count=N"
    helpers.py promql URL EXPR            -> evaluate EXPR on the Prometheus at URL: one line per
                                            sample, "value {labels}"; exit 1 on an API error
    helpers.py promql-check URL FILE...   -> evaluate every PromQL expression of Grafana
                                            dashboards / rule files; exit 1 if one is refused
    helpers.py rules-health URL           -> exit 1 unless every rule loaded by Prometheus is ok
    helpers.py alert-state URL NAME       -> "pending", "firing" or "inactive" for alert NAME
    helpers.py free-ports N               -> N ports free for TCP and UDP on 127.0.0.1
    helpers.py metric-names FILE...       -> metric names (kmsd_*, up, process_*) used in
                                            dashboards/rule files
"""

import json
import re
import socket
import sys
import urllib.parse
import urllib.request


def serving(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("message") == "kmsd serving":
                kms = ev.get("kms", "").split(",")[0]
                print(kms, ev.get("http", ""), ev.get("grpc", ""))
                return 0
    return 1


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(name, wanted):
    want = dict(kv.split("=", 1) for kv in wanted)
    total, found = 0.0, False
    for line in sys.stdin:
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        labels = dict(LABEL.findall(m.group(3) or ""))
        if all(labels.get(k) == v for k, v in want.items()):
            total += float(m.group(4))
            found = True
    if not found:
        print("absent")
    elif total == int(total):
        print(int(total))
    else:
        print(total)
    return 0


def activations():
    data = json.load(sys.stdin)
    counts = {"activated": 0, "refused": 0, "other": 0}
    last = None
    for r in data:
        o = r.get("outcome")
        counts[o if o in counts else "other"] += 1
        if r.get("current_count") is not None:
            last = r["current_count"]
    print(" ".join(f"{k}={v}" for k, v in counts.items()) + f" last_count={last}")
    return 0


def api(url, path, params):
    q = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{q}", timeout=10) as r:
        return json.load(r)


def promql(url, expr):
    try:
        res = api(url, "/api/v1/query", {"query": expr})
    except Exception as e:  # HTTP 400 for a bad expression
        body = getattr(e, "read", lambda: b"")().decode(errors="replace")
        print(f"error: {e} {body}", file=sys.stderr)
        return 1
    if res.get("status") != "success":
        print(f"error: {res}", file=sys.stderr)
        return 1
    data = res["data"]
    if data["resultType"] == "vector":
        for s in data["result"]:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s["metric"].items()))
            print(f'{s["value"][1]} {{{labels}}}')
    elif data["resultType"] == "scalar":
        print(data["result"][1])
    return 0


def exprs_of(path):
    """PromQL expressions in a Grafana dashboard (targets[].expr) or a rule file (expr:)."""
    out = []
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
        for p in dash.get("panels", []):
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f'{path}: {p.get("title")}', t["expr"]))
    else:
        # Rule files: the YAML is simple enough to not need a YAML library: `expr:` either on
        # one line or as a folded block (>- followed by more-indented lines).
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
            if m:
                indent, rest = len(m.group(1)), m.group(2).strip()
                if rest in (">-", ">", "|", "|-"):
                    parts = []
                    i += 1
                    while i < len(lines) and (not lines[i].strip() or
                                              len(lines[i]) - len(lines[i].lstrip()) > indent):
                        parts.append(lines[i].strip())
                        i += 1
                    out.append((path, " ".join(p for p in parts if p)))
                    continue
                out.append((path, rest))
            i += 1
    return out


def grafana_vars(expr):
    return (expr.replace("$__rate_interval", "1m").replace("$cluster", ".*")
            .replace("$instance", ".*"))


def promql_check(url, paths):
    bad = 0
    n = 0
    for path in paths:
        for where, expr in exprs_of(path):
            n += 1
            try:
                res = api(url, "/api/v1/query", {"query": grafana_vars(expr)})
                ok = res.get("status") == "success"
            except Exception as e:
                body = getattr(e, "read", lambda: b"")().decode(errors="replace")
                ok, res = False, f"{e} {body}"
            if not ok:
                bad += 1
                print(f"REFUSED by Prometheus: {where}: {expr}\n  {res}", file=sys.stderr)
    print(f"{n} expressions evaluated, {bad} refused")
    return 1 if bad else 0


def rules_health(url):
    res = api(url, "/api/v1/rules", {})
    bad = 0
    n = 0
    for g in res["data"]["groups"]:
        for r in g["rules"]:
            n += 1
            if r.get("health") != "ok":
                bad += 1
                print(f'rule {r.get("name")}: health={r.get("health")} {r.get("lastError", "")}',
                      file=sys.stderr)
    print(f"{n} rules loaded, {bad} unhealthy")
    return 1 if bad or n == 0 else 0


def alert_state(url, name):
    res = api(url, "/api/v1/alerts", {})
    states = {a.get("state") for a in res["data"]["alerts"] if a["labels"].get("alertname") == name}
    print("firing" if "firing" in states else "pending" if "pending" in states else "inactive")
    return 0


def free_ports(n):
    """Ports free for both TCP and UDP on 127.0.0.1 (a DNS port needs both)."""
    socks, ports = [], []
    while len(ports) < int(n):
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            socks.append(t)
            continue
        socks += [t, u]
        ports.append(port)
    print(" ".join(str(p) for p in ports))
    for s in socks:
        s.close()
    return 0


NAME = re.compile(r"\b((?:kmsd|process)_[a-zA-Z0-9_]+|up)\b")


def metric_names(paths):
    names = set()
    for path in paths:
        for _, expr in exprs_of(path):
            # Drop string literals ("success", label values) before looking for names.
            names.update(NAME.findall(re.sub(r'"[^"]*"', '""', expr)))
    for n in sorted(names):
        print(n)
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "serving":
        return serving(args[0])
    if cmd == "metric":
        return metric(args[0], args[1:])
    if cmd == "activations":
        return activations()
    if cmd == "promql":
        return promql(args[0], args[1])
    if cmd == "promql-check":
        return promql_check(args[0], args[1:])
    if cmd == "rules-health":
        return rules_health(args[0])
    if cmd == "alert-state":
        return alert_state(args[0], args[1])
    if cmd == "free-ports":
        return free_ports(args[0])
    if cmd == "metric-names":
        return metric_names(args)
    print(f"unknown command {cmd}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
