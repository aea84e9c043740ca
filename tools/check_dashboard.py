#!/usr/bin/env python3
"""Checks a Grafana dashboard's PromQL against what ferryd really serves.

usage: check_dashboard.py DASHBOARD.json SCRAPE... (files of /metrics text)

Every metric an expression names must be in one of the scrapes, and every
label it groups by, matches on or puts in a legend ({{label}}) must be a
label of one of its metrics in the scrapes (or `instance`/`job`, which
Prometheus adds). Scrapes taken while migrations run hold the per-migration
gauges too. Prints one line per problem; exit 1 if any, else 0.
dashboard_snapshot.py runs it on every scrape of its run.
"""
import json
import re
import sys

FUNCTIONS_AND_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}
ADDED_BY_PROMETHEUS = {"instance", "job"}


def parse_scrape(text):
    """{metric name: set of label names} of Prometheus text format."""
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        if not m:
            continue
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
        series.setdefault(m.group(1), set()).update(labels)
    return series


def expressions(dashboard):
    """(where, expr, legend) of every query in the dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", "?"), t.get("expr", ""), t.get("legendFormat", "")))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q
        m = re.match(r"\s*label_values\(\s*([^,)]+)\s*(?:,\s*(\w+))?\s*\)", q or "")
        if m:  # label_values(METRIC, LABEL): check it as METRIC grouped by LABEL
            out.append(("variable " + v["name"], f"sum by ({m.group(2) or ''}) ({m.group(1)})", ""))
    return out


def names_and_labels(expr):
    """The metric names and label names an expression uses."""
    labels = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels.update(w.strip() for w in group.split(",") if w.strip())
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels.update(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    names = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", bare):
        if m.group(2) or m.group(1).lower() in FUNCTIONS_AND_KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(m.group(1))
    return names, labels


def check(dashboard, series):
    problems = []
    for where, expr, legend in expressions(dashboard):
        names, labels = names_and_labels(expr)
        labels.update(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        if not names:
            problems.append(f"{where}: no metric in {expr!r}")
        known = set(ADDED_BY_PROMETHEUS)
        for n in sorted(names):
            if n not in series:
                problems.append(f"{where}: {n} is not served by ferryd")
            else:
                known |= series[n]
        for label in sorted(labels - known):
            problems.append(f"{where}: label {label!r} is on none of {sorted(names)}")
    return problems


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        dashboard = json.load(f)
    series = {}
    for path in argv[2:]:
        with open(path) as f:
            for name, labels in parse_scrape(f.read()).items():
                series.setdefault(name, set()).update(labels)
    problems = check(dashboard, series)
    for p in problems:
        print(p)
    print(f"{len(expressions(dashboard))} queries, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
