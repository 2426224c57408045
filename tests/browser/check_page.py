#!/usr/bin/env python3
"""Checks of the status page as Chromium rendered it (standard library only).

    check_page.py dom FILE EXPECT_JSON   the DOM Chromium dumped (--dump-dom) shows the node,
                                         the leader, and one row with a bar per expected pool
    check_page.py png FILE WIDTH HEIGHT  the screenshot is a real rendering: a PNG of the window
                                         size with many colours, the bars' colours present

EXPECT_JSON: {"node_id": 1, "name": "…", "leader": 1,
              "pools": {"windows": {"live": 9, "reported": 9, "threshold": 25}, …}}
"""

import json
import struct
import sys
import zlib
from html.parser import HTMLParser


class Page(HTMLParser):
    """Collects h1 text, #leader text, #pools / #members rows (cell texts and bar spans)."""

    def __init__(self):
        super().__init__()
        self.h1 = ""
        self.leader = ""
        self.tables = {}
        self._in = []          # stack of (tag, id)
        self._table = None
        self._row = None
        self._cell = None
        self.rows_bars = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._in.append((tag, a.get("id")))
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = {"cells": [], "bars": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "span" and self._row is not None:
            cls = a.get("class", "")
            if "fill" in cls.split():
                self._row["bars"].append({"class": cls, "style": a.get("style", "")})

    def handle_endtag(self, tag):
        while self._in:
            t, _ = self._in.pop()
            if t == tag:
                break
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row["cells"].append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        ids = [i for _, i in self._in]
        tags = [t for t, _ in self._in]
        if "h1" in tags:
            self.h1 += data
        if "leader" in ids:
            self.leader += data
        if self._cell is not None:
            self._cell += data


def check_dom(path, expect):
    errors = []
    text = open(path, encoding="utf-8", errors="replace").read()
    page = Page()
    page.feed(text)
    want_h1 = f'kmsd node {expect["node_id"]} ({expect["name"]})'
    if want_h1 not in page.h1:
        errors.append(f"heading {page.h1!r} does not contain {want_h1!r}")
    leader = " ".join(page.leader.split())
    if f'Leader: {expect["leader"]}' not in leader:
        errors.append(f"leader line {leader!r} does not name leader {expect['leader']}")
    members = page.tables.get("members", [])
    if not any(r["cells"][:2] == [str(expect["node_id"]), expect["name"]] for r in members[1:]):
        errors.append(f"members table has no row for node {expect['node_id']}: {members}")
    pools = {r["cells"][0]: r for r in page.tables.get("pools", [])[1:] if r["cells"]}
    if not pools:
        errors.append("no pools table (id=pools) with rows")
    for name, want in expect["pools"].items():
        row = pools.get(name)
        if row is None:
            errors.append(f"no row for pool {name}; rows: {list(pools)}")
            continue
        cells = row["cells"]
        got = {"live": cells[1], "reported": cells[2], "threshold": cells[3]}
        for k, v in want.items():
            if got.get(k) != str(v):
                errors.append(f"pool {name}: {k} is {got.get(k)!r}, expected {v}")
        if len(row["bars"]) != 1:
            errors.append(f"pool {name}: expected one bar, found {row['bars']}")
            continue
        pct = min(100, want["reported"] * 100 // want["threshold"]) if want["threshold"] else 0
        style = row["bars"][0]["style"].replace(" ", "")
        if f"width:{pct}%" not in style:
            errors.append(f"pool {name}: bar style {style!r}, expected width:{pct}%")
        under = want["reported"] < want["threshold"]
        if under != ("under" in row["bars"][0]["class"].split()):
            errors.append(f"pool {name}: bar class {row['bars'][0]['class']!r} (under threshold: {under})")
    # Recent activations: one row per activation, newest first, with its pool and result.
    want_acts = expect.get("activations")
    if want_acts is not None:
        rows = [r["cells"] for r in page.tables.get("activations", [])[1:] if r["cells"]]
        by_pool = {}
        for cells in rows:
            if len(cells) != 7:
                errors.append(f"activation row with {len(cells)} cells: {cells}")
                continue
            by_pool[cells[3]] = by_pool.get(cells[3], 0) + 1
            if not cells[1] or len(cells[2]) != 36:
                errors.append(f"activation row without workstation or client machine id: {cells}")
            if not cells[6].startswith(want_acts["result"]):
                errors.append(f"activation row result {cells[6]!r}, expected {want_acts['result']!r}")
        if by_pool != want_acts["by_pool"]:
            errors.append(f"recent activations by pool {by_pool}, expected {want_acts['by_pool']}")
    for e in errors:
        print("DOM:", e, file=sys.stderr)
    if not errors:
        print(f"DOM ok: {page.h1.strip()!r}, {leader!r}, pools {sorted(pools)}")
    return 1 if errors else 0


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data):
    """8-bit RGB/RGBA, non-interlaced PNG -> (width, height, rows of bytes, bytes per pixel)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat += body
        elif ctype == b"IEND":
            break
    width, height, depth, color, _, _, interlace = ihdr
    if depth != 8 or color not in (2, 6) or interlace != 0:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {color}, interlace {interlace}")
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 0xFF
            elif f == 4:
                line[x] = (line[x] + paeth(a, b, c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def near(px, rgb, tol=12):
    return all(abs(p - q) <= tol for p, q in zip(px, rgb))


def check_png(path, width, height):
    data = open(path, "rb").read()
    errors = []
    if len(data) < 2000:
        errors.append(f"screenshot is only {len(data)} bytes")
    w, h, rows, bpp = decode_png(data)
    if (w, h) != (width, height):
        errors.append(f"screenshot is {w}x{h}, window was {width}x{height}")
    colours = {}
    for row in rows:
        for x in range(0, len(row), bpp):
            px = row[x:x + 3]
            colours[px] = colours.get(px, 0) + 1
    # The page's colours (http.rs): bar track #eee, fill #2a7 (threshold reached) or #d93 (under).
    track = sum(n for c, n in colours.items() if near(c, (0xEE, 0xEE, 0xEE), 2))
    fill_under = sum(n for c, n in colours.items() if near(c, (0xDD, 0x99, 0x33)))
    fill_ok = sum(n for c, n in colours.items() if near(c, (0x22, 0xAA, 0x77)))
    dark = sum(n for c, n in colours.items() if max(c) < 0x60)  # text
    if len(colours) < 8:
        errors.append(f"only {len(colours)} distinct colours: blank or broken rendering")
    if dark < 200:
        errors.append(f"almost no dark (text) pixels: {dark}")
    if track < 500:
        errors.append(f"bar tracks (#eee) hardly visible: {track} pixels")
    if fill_under + fill_ok < 200:
        errors.append(f"bar fills hardly visible: {fill_under} orange + {fill_ok} green pixels")
    for e in errors:
        print("PNG:", e, file=sys.stderr)
    if not errors:
        print(f"PNG ok: {w}x{h}, {len(data)} bytes, {len(colours)} colours, text {dark} px, "
              f"bar tracks {track} px, fills {fill_under} orange + {fill_ok} green px")
    return 1 if errors else 0


def main(argv):
    if len(argv) >= 4 and argv[1] == "dom":
        return check_dom(argv[2], json.loads(argv[3]))
    if len(argv) >= 5 and argv[1] == "png":
        return check_png(argv[2], int(argv[3]), int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
