#!/usr/bin/env python3
"""Generate deploy/grafana/kmsd.json, the Grafana dashboard of a kmsd cluster.

    python3 deploy/grafana/dashboard.py            # rewrite kmsd.json
    python3 deploy/grafana/dashboard.py --check    # exit 1 if kmsd.json is not up to date

The dashboard is code so that panels stay consistent (one selector for every query) and a
review sees the PromQL, not 2000 lines of JSON. Only the standard library is used.
"""

import json
import os
import sys

SEL = 'job="kmsd",cluster=~"$cluster",instance=~"$instance"'
# Cluster-wide values (identical on every node) are aggregated with max, never summed.
CL = 'job="kmsd",cluster=~"$cluster"'
DS = {"type": "prometheus", "uid": "${datasource}"}

_next_id = [0]


def pid():
    _next_id[0] += 1
    return _next_id[0]


def target(expr, legend="", ref="A", instant=False):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def targets(*pairs):
    return [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(pairs)]


def timeseries(title, pos, tgts, unit="short", desc="", stack=False, overrides=None, min0=True):
    defaults = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if min0:
        defaults["min"] = 0
    return {
        "id": pid(),
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": pos,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, pos, expr, unit="short", desc="", thresholds=None, mappings=None, decimals=None):
    defaults = {
        "unit": unit,
        "thresholds": {
            "mode": "absolute",
            "steps": thresholds or [{"color": "green", "value": None}],
        },
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "id": pid(),
        "type": "stat",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": pos,
        "targets": [target(expr, "", "A", instant=True)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value",
            "justifyMode": "center",
            "orientation": "auto",
        },
    }


def bargauge(title, pos, tgts, unit="percentunit", desc="", thresholds=None, max_=None):
    defaults = {
        "unit": unit,
        "min": 0,
        "thresholds": {"mode": "absolute", "steps": thresholds},
    }
    if max_ is not None:
        defaults["max"] = max_
    return {
        "id": pid(),
        "type": "bargauge",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": pos,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
        },
    }


def row(title, y):
    return {"id": pid(), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}


def g(x, y, w, h):
    return {"x": x, "y": y, "w": w, "h": h}


def dashed(regex):
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


def build():
    panels = []
    y = 0

    # ---- overview ---------------------------------------------------------------------------
    panels.append(row("Cluster overview", y)); y += 1
    panels += [
        stat("Nodes up", g(0, y, 4, 4), f'sum(up{{{CL}}})',
             desc="kmsd nodes Prometheus can scrape.",
             thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 2},
                         {"color": "green", "value": 3}]),
        stat("Leaders", g(4, y, 4, 4), f'sum(kmsd_raft_is_leader{{{CL}}})',
             desc="Nodes that consider themselves Raft leader: 1 is healthy, 0 = quorum lost.",
             thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1},
                         {"color": "orange", "value": 2}]),
        stat("Raft term", g(8, y, 4, 4), f'max(kmsd_raft_term{{{CL}}})',
             desc="Rises by one per election; a fast-rising term means elections keep failing.",
             thresholds=[{"color": "blue", "value": None}]),
        stat("Degraded journal", g(12, y, 4, 4), f'sum(kmsd_degraded_journal_entries{{{CL}}})',
             desc="Activation records waiting in nodes' local journals (no leader reachable).",
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1}]),
        stat("Activations / s", g(16, y, 4, 4),
             f'sum(rate(kmsd_activations_total{{{CL}}}[$__rate_interval]))', unit="reqps",
             decimals=2, thresholds=[{"color": "blue", "value": None}]),
        stat("Refused (5m)", g(20, y, 4, 4),
             f'sum(rate(kmsd_activations_total{{{CL},result!="success"}}[5m])) '
             f'/ sum(rate(kmsd_activations_total{{{CL}}}[5m]))',
             unit="percentunit", decimals=1,
             desc="Share of activation requests answered with an error HRESULT (alert above 5 %).",
             thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.05},
                         {"color": "red", "value": 0.25}]),
    ]
    y += 4

    # ---- activations ------------------------------------------------------------------------
    panels.append(row("Activations", y)); y += 1
    panels += [
        timeseries("Activations by result", g(0, y, 12, 8), targets(
            (f'sum by (result) (rate(kmsd_activations_total{{{SEL}}}[$__rate_interval]))', "{{result}}"),
        ), unit="reqps", stack=True,
            desc="success, product_refused (0xC004F042), time_skew (0xC004F06C), invalid_data "
                 "(0x8007000D), not_activated (0xC004F041), other_error. See docs/troubleshooting.md."),
        timeseries("Activations by protocol and pool", g(12, y, 12, 8), targets(
            (f'sum by (protocol, pool) (rate(kmsd_activations_total{{{SEL}}}[$__rate_interval]))',
             "v{{protocol}} {{pool}}"),
        ), unit="reqps", stack=True),
    ]
    y += 8
    panels += [
        timeseries("Activation latency", g(0, y, 12, 8), targets(
            (f'histogram_quantile(0.50, sum by (le) (rate(kmsd_activation_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "p50"),
            (f'histogram_quantile(0.99, sum by (le) (rate(kmsd_activation_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "p99"),
            (f'histogram_quantile(0.99, sum by (le, instance) (rate(kmsd_activation_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))', "p99 {{instance}}"),
        ), unit="s",
            desc="From a decoded request to its encoded response, including the durable record "
                 "(Raft commit, or the commit timeout before degraded mode)."),
        timeseries("Activations by node", g(12, y, 12, 8), targets(
            (f'sum by (instance) (rate(kmsd_activations_total{{{SEL}}}[$__rate_interval]))', "{{instance}}"),
        ), unit="reqps", stack=True, desc="How DNS SRV priority/weight spreads clients over nodes."),
    ]
    y += 8

    # ---- counts -----------------------------------------------------------------------------
    panels.append(row("Client counts and thresholds", y)); y += 1
    panels += [
        timeseries("Count vs threshold per pool", g(0, y, 12, 9), targets(
            (f'max by (pool) (kmsd_pool_reported_clients{{{CL}}})', "{{pool}} reported"),
            (f'max by (pool) (kmsd_pool_clients{{{CL}}})', "{{pool}} machines (30 days)"),
            (f'max by (pool) (kmsd_pool_threshold{{{CL}}})', "{{pool}} threshold"),
        ), overrides=[dashed(".*threshold")],
            desc="Clients activate once the reported count reaches their threshold (25 Windows "
                 "clients, 5 servers, 5 Office). The reported count is capped at twice the "
                 "threshold; machines are the distinct CMIDs of the last 30 days."),
        bargauge("Reported count / threshold", g(12, y, 6, 9), targets(
            (f'max by (pool) (kmsd_pool_reported_clients{{{CL}}}) / max by (pool) (kmsd_pool_threshold{{{CL}}} > 0)', "{{pool}}"),
        ), max_=2, thresholds=[{"color": "orange", "value": None}, {"color": "green", "value": 1}],
            desc="100 % = threshold reached, clients of the pool activate."),
        bargauge("Seat limit used", g(18, y, 6, 9), targets(
            (f'max by (pool) (kmsd_pool_clients{{{CL}}}) / max by (pool) (kmsd_pool_seat_limit{{{CL}}} > 0)', "{{pool}}"),
        ), max_=1, thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.9},
                               {"color": "red", "value": 1}],
            desc="Pools with a seat limit only. At 100 % new machines get 0xC004F042."),
    ]
    y += 9
    panels += [
        timeseries("Duplicate CMIDs", g(0, y, 12, 7), targets(
            (f'max by (pool) (kmsd_duplicate_cmids{{{CL}}})', "{{pool}}"),
        ), desc="Machine ids seen from several workstation names: images not generalized "
                "(sysprep /generalize). They count once."),
        timeseries("Machines seen per node's state", g(12, y, 12, 7), targets(
            (f'kmsd_pool_clients{{{SEL}}}', "{{instance}} {{pool}}"),
        ), desc="Every node should show the same numbers; a node that differs is behind or degraded."),
    ]
    y += 7

    # ---- raft -------------------------------------------------------------------------------
    panels.append(row("Raft", y)); y += 1
    panels += [
        timeseries("Leader", g(0, y, 6, 7), targets(
            (f'kmsd_raft_is_leader{{{SEL}}}', "{{instance}}"),
        ), desc="1 on the leader."),
        timeseries("Term", g(6, y, 6, 7), targets(
            (f'kmsd_raft_term{{{SEL}}}', "{{instance}}"),
        ), min0=False),
        timeseries("Leader changes", g(12, y, 6, 7), targets(
            (f'sum by (instance) (increase(kmsd_raft_leader_changes_total{{{SEL}}}[$__rate_interval]))', "{{instance}}"),
        ), desc="Leader changes each node observed (alert KmsdLeaderFlapping above 5 elections in 15 min)."),
        timeseries("Degraded journal entries", g(18, y, 6, 7), targets(
            (f'kmsd_degraded_journal_entries{{{SEL}}}', "{{instance}}"),
        ), desc="Records answered in degraded mode and not yet replayed to the leader."),
    ]
    y += 7
    panels += [
        timeseries("Commit and applied index", g(0, y, 8, 7), targets(
            (f'kmsd_raft_commit_index{{{SEL}}}', "commit {{instance}}"),
            (f'kmsd_raft_applied_index{{{SEL}}}', "applied {{instance}}"),
        ), min0=False),
        timeseries("Committed, not applied", g(8, y, 8, 7), targets(
            (f'kmsd_raft_commit_index{{{SEL}}} - kmsd_raft_applied_index{{{SEL}}}', "{{instance}}"),
        )),
        timeseries("Replication lag (entries)", g(16, y, 8, 7), targets(
            (f'kmsd_raft_replication_lag{{{SEL}}}', "{{instance}} → {{peer}}"),
        ), desc="Reported by the leader per follower (alert above 1000 for 1 minute)."),
    ]
    y += 7

    # ---- dns and connections ----------------------------------------------------------------
    panels.append(row("DNS and connections", y)); y += 1
    panels += [
        timeseries("DNS queries", g(0, y, 12, 8), targets(
            (f'sum by (qtype, rcode) (rate(kmsd_dns_queries_total{{{SEL}}}[$__rate_interval]))', "{{qtype}} {{rcode}}"),
            (f'sum by (reason) (rate(kmsd_dns_dropped_total{{{SEL}}}[$__rate_interval]))', "dropped {{reason}}"),
        ), unit="reqps", stack=True,
            desc="SRV _vlmcs._tcp queries come from clients discovering the KMS host; REFUSED "
                 "means a name outside the configured zones."),
        timeseries("Open KMS connections", g(12, y, 12, 8), targets(
            (f'kmsd_connections_open{{{SEL}}}', "{{instance}}"),
        )),
    ]
    y += 8
    panels += [
        timeseries("Rejected connections", g(0, y, 8, 7), targets(
            (f'sum by (instance, reason) (rate(kmsd_connections_rejected_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{reason}}"),
        ), unit="reqps", desc="Closed at once by max-connections, the per-source limit or allow-client."),
        timeseries("Protocol errors", g(8, y, 8, 7), targets(
            (f'sum by (instance, reason) (rate(kmsd_protocol_errors_total{{{SEL}}}[$__rate_interval]))', "{{instance}} {{reason}}"),
        ), unit="reqps", desc="Malformed input and timeouts on the KMS port."),
        timeseries("Process", g(16, y, 8, 7), targets(
            (f'process_resident_memory_bytes{{{SEL}}}', "RSS {{instance}}"),
        ), unit="bytes"),
    ]
    y += 7

    templating = [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {"text": "Prometheus", "value": "prometheus"}, "hide": 0, "refresh": 1,
         "options": [], "regex": ""},
        {"name": "cluster", "label": "cluster", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(kmsd_build_info{job="kmsd"}, cluster)', "refId": "cluster"},
         "definition": 'label_values(kmsd_build_info{job="kmsd"}, cluster)',
         "includeAll": True, "allValue": ".*", "multi": False, "refresh": 2, "sort": 1,
         "current": {"text": "All", "value": "$__all"}, "hide": 0, "options": [], "regex": ""},
        {"name": "instance", "label": "node", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(kmsd_build_info{job="kmsd",cluster=~"$cluster"}, instance)',
                   "refId": "instance"},
         "definition": 'label_values(kmsd_build_info{job="kmsd",cluster=~"$cluster"}, instance)',
         "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2, "sort": 1,
         "current": {"text": "All", "value": ["$__all"]}, "hide": 0, "options": [], "regex": ""},
    ]
    return {
        "title": "kmsd",
        "uid": "kmsd-cluster",
        "description": "kmsd — highly available KMS host: activations, counts vs thresholds, Raft, DNS.",
        "tags": ["kmsd", "kms", "activation"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": templating},
        "panels": panels,
    }


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kmsd.json")
    text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    if "--check" in sys.argv[1:]:
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            print(f"{path} is not up to date: run python3 deploy/grafana/dashboard.py", file=sys.stderr)
            return 1
        return 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
