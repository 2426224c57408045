#!/usr/bin/env python3
"""Check that the links in the runbook and deploy/ resolve: relative Markdown links to files
that exist, `docs/….md` references (alert runbook annotations, comments), and `#anchors` to
headings that exist (GitHub's slug rules). Run from the repository root; exit 1 on a dead link.
"""

import glob
import os
import re
import sys


def slug(heading):
    heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return heading.replace(" ", "-")


def anchors(path):
    out, fence = set(), False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                fence = not fence
            m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
            if m and not fence:
                out.add(slug(m.group(1)))
    return out


def main():
    sources = ["docs/operations.md", "docs/troubleshooting.md"] + sorted(
        f for f in glob.glob("deploy/**/*", recursive=True)
        if f.endswith((".md", ".yml", ".yaml", ".toml", ".service", ".sh", ".py")))
    bad, n = [], 0
    for src in sources:
        with open(src, encoding="utf-8") as f:
            text = f.read()
        links = re.findall(r"\]\(([^)\s]+)\)", text) if src.endswith(".md") else []
        links += re.findall(r"(?<![\w/.])(docs/[\w./-]+\.md(?:#[\w-]+)?)", text)
        for link in links:
            if re.match(r"^[a-z]+:", link):
                continue  # http:, https:, mailto:
            n += 1
            path, _, frag = link.partition("#")
            if path.startswith("docs/"):
                target = path
            elif path:
                target = os.path.normpath(os.path.join(os.path.dirname(src), path))
            else:
                target = src
            if not os.path.exists(target):
                bad.append(f"{src}: {link}: no file {target}")
            elif frag and target.endswith(".md") and frag not in anchors(target):
                bad.append(f"{src}: {link}: no heading #{frag} in {target}")
    for b in bad:
        print(b)
    print(f"{n} links checked, {len(bad)} dead")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
