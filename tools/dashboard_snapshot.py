#!/usr/bin/env python3
"""Draws docs/grafana/ferry-dashboard.json's panels from a real run.

usage: tools/dashboard_snapshot.py [--bin DIR] [--out docs/img/dashboard.png]
                                   [--memory 512M]

Starts two ferryd agents on 127.0.0.1 (free ports, --metrics-listen), creates
a VM on the first, and runs two migrations with `ferry migrate --detach` and
`ferry migration watch`: a postcopy capped at 64 MiB/s from the first agent
to the second, then a hybrid capped at 128 MiB/s back. Both agents' /metrics
are scraped every 250 ms while this runs. Each panel is computed the way the
dashboard's query would compute it: rates over 1 s, a counter's fall read
as a reset as Prometheus does (the panel then says how many falls it saw);
histogram_quantile over the rate or, for "over the range", the increase of
the cumulative buckets, flagged when the quantile lies above the top finite
bucket (10 s), where histogram_quantile answers 10 s: the panel then says
"> 10 s" and shows the mean (increase of _sum / of _count) beside it. Drawn
with gnuplot (pngcairo, else png) into one PNG with every time axis the
same (seconds since the run began), each y axis labelled with its unit, and
a two-line title holding the run's date. Before drawing, the dashboard's
queries are checked against the scrapes (tools/check_dashboard.py): a
metric or label ferryd does not serve stops the run. Python 3 standard
library and gnuplot only. The agents are stopped (SIGTERM, then SIGKILL)
however the run ends; the work files (scrapes.txt, gnuplot's script and
data) stay in a temp dir it names.
"""
import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_dashboard  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRAPE_S = 0.25
RATE_S = 1.0  # the window of rate() and of the quantiles over time


def parse(text):
    """{(name, ((label, value), ...)): float} of one scrape."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)", line)
        if m and not line.startswith("#"):
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


class Agent:
    """One ferryd on loopback; ports from its start line."""

    def __init__(self, ferryd, log):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [ferryd, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--in-process"],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()  # ferryd: listening on HOST:PORT ...
        m = re.search(r"listening on (\S+?:\d+)", line)
        mm = re.search(r"metrics on http://[^/]+:(\d+)/", line)
        if not m or not mm:
            self.stop()
            raise RuntimeError(f"ferryd's start line has no ports: {line!r} (log: {log})")
        self.address, self.metrics = m.group(1), f"http://127.0.0.1:{mm.group(1)}/metrics"

    def scrape(self):
        with urllib.request.urlopen(self.metrics, timeout=2) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ferry(bin_dir, *args):
    r = subprocess.run([os.path.join(bin_dir, "ferry"), *args], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"ferry {' '.join(args)}: exit {r.returncode}: {r.stdout}{r.stderr}")
    return r.stdout


def run(bin_dir, memory, workdir):
    """Runs the two migrations; returns [(t, agent index, parsed scrape)], raw scrapes."""
    agents = [Agent(os.path.join(bin_dir, "ferryd"), os.path.join(workdir, f"ferryd-{i}.log"))
              for i in range(2)]
    samples, raw, stop = [], [], threading.Event()
    t0 = time.monotonic()

    def scraper():
        while not stop.is_set():
            t = time.monotonic() - t0
            for i, a in enumerate(agents):
                text = a.scrape()
                samples.append((t, i, parse(text)))
                raw.append(text)
            stop.wait(SCRAPE_S)

    thread = threading.Thread(target=scraper, daemon=True)
    try:
        a, b = agents[0].address, agents[1].address
        ferry(bin_dir, "--agent", a, "vm", "create", "web", "--memory", memory, "--vcpus", "2",
              "--workload", "zipf", "--zero-fraction", "0.3")
        thread.start()
        time.sleep(2)
        for src, dst, mode, cap in ((a, b, "postcopy", "64M"), (b, a, "hybrid", "128M")):
            mid = ferry(bin_dir, "migrate", "web", "--from", src, "--to", dst, "--mode", mode,
                        "--max-bandwidth", cap, "--detach").strip()
            watched = ferry(bin_dir, "--agent", src, "migration", "watch", mid).splitlines()
            print(next((l for l in watched if l.startswith("migration ") and l.endswith(
                ": completed")), watched[-1]))
            time.sleep(2)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        for ag in agents:
            ag.stop()
    return samples, raw


# --- the panels' queries over the samples ---------------------------------

def by_time(samples):
    """[(t, {instance: scrape})] with both agents' scrapes of one round merged."""
    rounds = {}
    for t, i, s in samples:
        rounds.setdefault(round(t / SCRAPE_S), (t, {}))[1][i] = s
    return [rounds[k] for k in sorted(rounds)]


def window(rounds, j):
    """The rounds of a rate() window ending at round j (RATE_S back), or None."""
    t, k = rounds[j][0], j
    while k > 0 and t - rounds[k][0] < RATE_S:
        k -= 1
    return rounds[k:j + 1] if t - rounds[k][0] >= RATE_S else None


def increase(values):
    """A counter's increase over successive samples: a fall is read as a reset,
    the value after it all new (Prometheus' rule)."""
    return sum(b - a if b >= a else b for a, b in zip(values, values[1:]))


def total(scrape, name, match=None):
    return sum(v for (n, labels), v in scrape.items()
               if n == name and all(dict(labels).get(k) == x for k, x in (match or {}).items()))


def falls(rounds, name):
    """How many times a counter fell between two scrapes of one agent."""
    count, last = 0, {}
    for _, per in rounds:
        for inst, s in per.items():
            v = total(s, name)
            count += inst in last and v < last[inst]
            last[inst] = v
    return count


def gauge(rounds, name, keys):
    """sum by (keys) (name): {legend: [(t, v)]}."""
    out = {}
    for t, per in rounds:
        sums = {}
        for inst, s in per.items():
            for (n, labels), v in s.items():
                if n == name:
                    d = dict(labels, instance=f"agent{inst}")
                    d["migration"] = d.get("migration", "")[:12]  # mig- and 8 hex digits
                    k = " ".join(d.get(x, "") for x in keys)
                    sums[k] = sums.get(k, 0.0) + v
        for k, v in sums.items():
            out.setdefault(k, []).append((t, v))
    return out


def counter_rate(rounds, name):
    """sum by (instance) (rate(name[RATE_S])): {instance: [(t, v)]}."""
    out = {}
    for j, (t, per) in enumerate(rounds):
        win = window(rounds, j)
        if win is None:
            continue
        for inst in per:
            points = [(r[0], total(r[1][inst], name)) for r in win if inst in r[1]]
            if len(points) >= 2:
                out.setdefault(f"agent{inst}", []).append(
                    (t, increase([v for _, v in points]) / (points[-1][0] - points[0][0])))
    return out


def buckets(scrape, name, match=None):
    """One scrape's cumulative buckets {le: count} (summed over label sets)."""
    b = {}
    for (n, labels), v in scrape.items():
        d = dict(labels)
        if n == name + "_bucket" and all(d.get(k) == x for k, x in (match or {}).items()):
            le = float("inf") if d["le"] == "+Inf" else float(d["le"])
            b[le] = b.get(le, 0.0) + v
    return b


def bucket_increase(win, name, match=None):
    """sum by (le) (increase(name_bucket[...])) over the rounds `win`."""
    out = {}
    for inst in set().union(*(per.keys() for _, per in win)):
        series = [buckets(per[inst], name, match) for _, per in win if inst in per]
        for le in series[-1]:
            out[le] = out.get(le, 0.0) + increase([b.get(le, 0.0) for b in series])
    return out


def quantile(q, delta):
    """histogram_quantile over cumulative buckets {le: count}, Prometheus' rule:
    (value, above). When the rank falls in the +Inf bucket Prometheus answers
    the highest finite bound; `above` is True then: the real value is above it."""
    les = sorted(delta)
    if not les or delta[les[-1]] <= 0:
        return None, False
    rank = q * delta[les[-1]]
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = delta[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le, True
            if c == prev_c:
                return le, False
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c), False
        prev_le, prev_c = le, c
    return prev_le, False


def quantile_over_time(rounds, name, qs):
    """histogram_quantile(q, sum by (le) (rate(name_bucket[RATE_S]))) per q."""
    out = {}
    for j, (t, _) in enumerate(rounds):
        win = window(rounds, j)
        if win is None:
            continue
        d = bucket_increase(win, name)
        for q in qs:
            v, _ = quantile(q, d)
            if v is not None:
                out.setdefault(f"p{int(q * 100)}", []).append((t, v))
    return out


def over_the_range(rounds, name, match=None):
    """p99 (value, above) and the mean (increase of _sum / of _count) of a
    histogram over the whole run, and how many it observed."""
    d = bucket_increase(rounds, name, match)
    p99, above = quantile(0.99, d)
    n = increase([sum(total(per[i], name + "_count", match) for i in per) for _, per in rounds])
    s = increase([sum(total(per[i], name + "_sum", match) for i in per) for _, per in rounds])
    return p99, above, (s / n if n else None), int(round(n))


# --- drawing ---------------------------------------------------------------

def duration(ms):
    if ms < 1:
        return f"{ms * 1000:.3g} us"
    return f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1000:.3g} s"


def write_series(workdir, tag, series):
    """One data file per legend; returns [(path, legend)]."""
    files = []
    for k, (legend, points) in enumerate(sorted(series.items())):
        path = os.path.join(workdir, f"{tag}-{k}.dat")
        with open(path, "w") as f:
            f.writelines(f"{t:.3f} {v:.6g}\n" for t, v in points)
        files.append((path, legend.strip() or "all"))
    return files


def clusters(points, gap):
    """The first point of each run of points no more than `gap` apart."""
    return [p for k, p in enumerate(points) if k == 0 or p[0] - points[k - 1][0] > gap]


def stacked(series):
    """The series summed in order, on their common times: [(legend, [(t, sum)])],
    the first alone, the last the total (Grafana's stacking "normal")."""
    out, below = [], {}
    for legend, points in sorted(series.items()):
        below = {t: below.get(t, 0.0) + v for t, v in points}
        out.append((legend, sorted(below.items())))
    return out


def panels_of(samples):
    """[(title, ylabel, style, series, notes)] in the dashboard's order."""
    rounds = by_time(samples)

    def scaled(series, f):
        return {k: [(t, v * f) for t, v in pts] for k, pts in series.items()}

    finished = {}
    for direction in ("outgoing", "incoming"):
        for outcome in ("completed", "failed", "cancelled"):
            m = {"direction": direction, "outcome": outcome}
            n = sum(increase([total(per[i], "ferry_migrations_finished_total", m)
                              for _, per in rounds if i in per]) for i in (0, 1))
            if n > 0:
                finished[f"{direction} {outcome}"] = n

    # Downtime and blocktime over the run: p99 as the dashboard computes it,
    # and the mean (exact, from _sum and _count), which stays honest when the
    # p99 lies above the histogram's top finite bucket.
    stat = []
    for name, what, match in [("ferry_migration_downtime_seconds", ("downtime", ""), None)] + [
            ("ferry_migration_blocktime_seconds", ("blocktime", f"({o})"), {"outcome": o})
            for o in ("completed", "failed", "cancelled")]:
        p99, above, mean, n = over_the_range(rounds, name, match)
        if p99 is None:
            continue
        stat.append((f"{what[0]} p99", what[1], p99 * 1000, above, n))
        stat.append((f"{what[0]} mean", what[1], mean * 1000, False, n))

    running = {k: v for k, v in gauge(rounds, "ferry_migrations", ["direction", "phase"]).items()
               if any(x for _, x in v)}
    fds = {f"fds {k}": v for k, v in gauge(rounds, "process_open_fds", ["instance"]).items()}
    fds.update({f"threads {k}": v for k, v in gauge(rounds, "process_threads", ["instance"]).items()})

    def fell(name):  # what Prometheus would read as resets, each a spike in rate()
        n = falls(rounds, name)
        return [f"the counter fell {n} times: read as resets, each a spike"] if n else []

    return [
        ("Migrations under way, by direction and phase (stacked)", "migrations", "stacked",
         running, ["direction/phase pairs at 0 throughout not drawn"]),
        ("Finished migrations, by outcome (over the run)", "migrations", "bars", finished, []),
        ("Progress, per migration", "% of the guest's memory current", "lines",
         scaled(gauge(rounds, "ferry_migration_progress_ratio", ["vm", "migration", "direction"]),
                100), ["incoming and outgoing lines overlap"]),
        ("Bandwidth, per outgoing migration", "MiB/s", "lines",
         scaled(gauge(rounds, "ferry_migration_bandwidth_bytes_per_second", ["vm", "migration"]),
                1 / 2**20), []),
        ("Pages remaining, per migration", "pages (4 KiB)", "lines",
         gauge(rounds, "ferry_migration_pages_remaining", ["vm", "migration", "direction"]),
         ["incoming and outgoing lines overlap"]),
        ("Bytes sent / s (rate over 1 s)", "MiB/s", "lines",
         scaled(counter_rate(rounds, "ferry_migration_bytes_sent_total"), 1 / 2**20),
         fell("ferry_migration_bytes_sent_total")),
        ("Faults / s (rate over 1 s)", "faults/s", "lines",
         counter_rate(rounds, "ferry_faults_total"), fell("ferry_faults_total")),
        ("Fault latency p50 / p99 (recorded as each migration ends)", "microseconds", "points",
         scaled(quantile_over_time(rounds, "ferry_fault_latency_seconds", (0.5, 0.99)), 1e6),
         ["a migration's faults count once it ended: a point per scrape for 1 s then"]),
        ("Downtime and blocktime, p99 and mean (over the run)",
         "milliseconds (log scale)", "stat", stat, []),
        ("Agent CPU (rate over 1 s)", "cores", "lines",
         counter_rate(rounds, "process_cpu_seconds_total"), fell("process_cpu_seconds_total")),
        ("Agent resident memory", "MiB", "lines",
         scaled(gauge(rounds, "process_resident_memory_bytes", ["instance"]), 1 / 2**20), []),
        ("Agent open fds and threads", "count", "lines", fds, []),
    ], rounds[-1][0]


def draw(samples, out, workdir, title):
    panels, t_end = panels_of(samples)
    term = "pngcairo size 1800,1560 font 'Sans,10'"
    terminals = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    if "pngcairo" not in terminals.stdout + terminals.stderr:
        term = "png size 1800,1560"
    g = [f"set terminal {term} noenhanced", f"set output '{out}'",
         f"set multiplot layout 4,3 title \"{title}\" font ',13'",
         "set grid", "set style fill solid 0.6 border -1", "set boxwidth 0.6"]
    for k, (name, ylabel, style, series, notes) in enumerate(panels):
        g += ["unset logscale; unset arrow; unset label; set offsets 0, 0, 0, 0",
              "set xtics autofreq; set ytics autofreq; set format y '%g'",
              f"set title \"{name}\"", f"set ylabel \"{ylabel}\"",
              "set key top left font ',8' samplen 2 spacing 0.9"]
        for n, note in enumerate(notes):
            g.append(f"set label {10 + n} \"{note}\" at graph 0.98, graph {0.94 - 0.06 * n} "
                     "right font ',8' textcolor rgb '#555555'")
        if style in ("bars", "stat"):
            path = os.path.join(workdir, f"bars-{k}.dat")
            with open(path, "w") as f:
                for i, row in enumerate(series.items() if style == "bars" else series):
                    if style == "bars":
                        label, v = row
                        f.write(f"{i} {v:.6g} \"{label}\" \"{v:.3g}\" 0 \"\"\n")
                    else:  # (tic label, its second line, ms, above the top bucket, n)
                        what, stat, v, above, n = row
                        text = "> 10 s" if above else duration(v)
                        f.write(f"{i} {v:.6g} \"{what}\" \"{text}\" {int(above)} \"{stat}\"\n")
            count = len(series)
            g += ["set xlabel ''", f"set xrange [-0.6:{max(count, 1) - 0.4}]",
                  "set xtics font ',8' nomirror", "unset key"]
            if style == "stat":
                n = max((row[4] for row in series), default=0)
                g += ["set logscale y", "set yrange [1:100000]",
                      "set arrow from graph 0, first 10000 to graph 1, first 10000 nohead dt 2",
                      "set label 1 \"top finite bucket, 10 s\" at graph 0.02, first 13000 "
                      "font ',8'",
                      f"set label 2 \"{n} migrations; p99 by histogram_quantile, mean = "
                      "_sum / _count\" at graph 0.02, graph 0.94 font ',8'"]
            else:
                g += ["set yrange [0:*]", "set offsets 0, 0, graph 0.15, 0", "set ytics 1"]
            g.append(f"plot '{path}' using 1:2:($5 > 0 ? 7 : 1):"
                     "xtic(strcol(3).\"\\n\".strcol(6)) "
                     "with boxes lc variable "
                     "notitle, '' using 1:2:4 with labels offset 0,0.8 font ',9' notitle"
                     if series else "plot [0:1] NaN notitle")
            g += ["set xlabel 'seconds since the run began'", "set xrange [*:*]",
                  "set yrange [*:*]"]
            continue
        g += [f"set xrange [0:{t_end:.1f}]", "set xlabel 'seconds since the run began'",
              "set yrange [0:*]", "set offsets 0, 0, graph 0.3, 0"]
        if ylabel.startswith("%"):
            g.append("set ytics 0, 20, 100")
        if style == "stacked" and series:
            g.append("set ytics 1")
        files = write_series(workdir, f"p{k}", series)
        if not files:
            g += ["set label 1 'no samples in this run' at graph 0.5, 0.5 center",
                  "plot [0:1] NaN notitle"]
            continue
        how = {"points": "points pt 7 ps 0.8", "lines": "lines lw 2"}.get(style)
        plots = [f"'{p}' using 1:2 with {how} lc {n + 1} title \"{t}\""
                 for n, (p, t) in enumerate(files)]
        if style == "stacked":  # the total first, each lower sum painted over it
            files = write_series(workdir, f"p{k}s", dict(stacked(series)))
            plots = [f"'{p}' using 1:2 with fillsteps fs solid 0.7 lc {n + 1} title \"{t}\""
                     for n, (p, t) in reversed(list(enumerate(files)))]
        if style == "points":  # each burst's value, left of its first point
            labels = os.path.join(workdir, f"p{k}-labels.dat")
            with open(labels, "w") as f:
                for legend, points in sorted(series.items()):
                    for t, v in clusters(points, 2 * SCRAPE_S):
                        f.write(f"{t:.3f} {v:.6g} \"{legend} {duration(v / 1000)}\"\n")
            plots.append(f"'{labels}' using 1:2:3 with labels right offset -1,0 font ',9' "
                         "notitle")
        g.append("plot " + ", ".join(plots))
    g.append("unset multiplot")
    script = os.path.join(workdir, "dashboard.gp")
    with open(script, "w") as f:
        f.write("\n".join(g) + "\n")
    subprocess.run(["gnuplot", script], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", help="a directory holding ferry and ferryd "
                    "(default: bazel-bin's, else PATH's)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/img/dashboard.png"))
    ap.add_argument("--dashboard", default=os.path.join(ROOT, "docs/grafana/ferry-dashboard.json"))
    ap.add_argument("--memory", default="512M")
    args = ap.parse_args()
    if not shutil.which("gnuplot"):
        sys.exit("no gnuplot on PATH (Debian: apt-get install gnuplot-nox)")
    workdir = tempfile.mkdtemp(prefix="ferry-dashboard-")
    bin_dir = args.bin
    if not bin_dir:
        bin_dir = os.path.join(workdir, "bin")
        os.mkdir(bin_dir)
        for name, built in (("ferry", "migration/cli/ferry"), ("ferryd", "migration/agent/ferryd")):
            path = os.path.join(ROOT, "bazel-bin", built)
            path = path if os.path.exists(path) else shutil.which(name)
            if not path:
                sys.exit(f"no {name}: build it (bazel build //migration/cli:ferry "
                         "//migration/agent:ferryd) or give --bin")
            os.symlink(os.path.abspath(path), os.path.join(bin_dir, name))
    samples, raw = run(bin_dir, args.memory, workdir)
    scrape = os.path.join(workdir, "scrapes.txt")
    with open(scrape, "w") as f:
        f.write("\n".join(raw))
    if check_dashboard.main(["check_dashboard", args.dashboard, scrape]) != 0:
        sys.exit("the dashboard names what ferryd does not serve (above)")
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    title = (f"Ferry's Grafana dashboard, its panels drawn from a real run ({date})\\n"
             f"2 ferryd on loopback, each scraped every {SCRAPE_S} s ({len(samples) // 2} "
             f"scrapes); a {args.memory} VM: postcopy at 64 MiB/s, then hybrid back at 128 MiB/s")
    draw(samples, args.out, workdir, title)
    print(f"{args.out} ({len(samples)} scrapes; work files in {workdir})")


if __name__ == "__main__":
    main()
