#!/usr/bin/env python3
"""Markdown tables from a `ferry-bench suite` directory, for docs/benchmarks.md.

Usage: bench_tables.py DIR
"""
import csv
import sys


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def num(v, fmt="{:.1f}"):
    try:
        return fmt.format(float(v))
    except ValueError:
        return v


def ops(v):
    """Guest ops/s: 20.6M, 8,192."""
    v = float(v)
    return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v:,.0f}"


def run_info(d):
    """DIR/run.txt (written by ferry-bench suite): command, started, machine, wall_s."""
    info = {}
    try:
        with open(f"{d}/run.txt") as f:
            for line in f:
                key, _, value = line.partition(": ")
                info[key.strip()] = value.strip()
    except FileNotFoundError:
        pass
    return info


def main():
    d = sys.argv[1]
    run = run_info(d)
    if run:
        print("Run: `{}`, started {}, {} s; {}.\n".format(
            run.get("command", "?"), run.get("started", "?"), run.get("wall_s", "?"),
            run.get("machine", "?")))
    ref = rows(f"{d}/reference.csv")[0]
    print("Reference (same run): tcp_gbps {}, tcp_into_memory_gbps {}; rtt_p50_us {}, rtt_p99_us {}; "
          "rtt_busy_p50_us {}, rtt_busy_p99_us {}; guest ops/s without migration: {}\n".format(
              num(ref["tcp_gbps"]), num(ref.get("tcp_into_memory_gbps", "")),
              num(ref["rtt_p50_us"]), num(ref["rtt_p99_us"]),
              num(ref.get("rtt_busy_p50_us", "")), num(ref.get("rtt_busy_p99_us", "")),
              ", ".join(f"{k[len('baseline_ops_per_sec_'):]} {ops(v)}"
                        for k, v in ref.items() if k.startswith("baseline_ops_per_sec_"))))

    print("### demand-paging\n")
    print("| source | vCPUs | fault mode | pages/s median | min - max | fault p50 us | p99 us | p999 us |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows(f"{d}/demand_paging.csv"):
        print("| {} | {} | {} | {} | {} - {} | {} | {} | {} |".format(
            r["source"], r["vcpus"], r["fault_mode"], num(r["pages_per_sec_median"], "{:,.0f}"),
            num(r["pages_per_sec_min"], "{:,.0f}"), num(r["pages_per_sec_max"], "{:,.0f}"),
            num(r["fault_p50_us"]), num(r["fault_p99_us"]), num(r["fault_p999_us"])))

    # Exit mode over blocking mode (the demand-paging goals), per source.
    dp = rows(f"{d}/demand_paging.csv")
    by = {(r["source"], r["vcpus"], r["fault_mode"]): float(r["pages_per_sec_median"]) for r in dp}
    lines = []
    for source in dict.fromkeys(r["source"] for r in dp):
        ratios = [f"{by[(source, v, 'exit')] / by[(source, v, 'blocking')]:.1f}x at {v}"
                  for v in dict.fromkeys(r["vcpus"] for r in dp if r["source"] == source)
                  if (source, v, "exit") in by and by.get((source, v, "blocking"))]
        if ratios:
            lines.append(f"- {source} source: {', '.join(ratios)} vCPUs")
    if lines:
        print("\nExit mode over blocking mode (pages/s medians):\n")
        print("\n".join(lines))

    print("\n### migrate\n")
    print("| workload | mode | fault mode | completed | digest | total ms median (min-max) "
          "| downtime ms median (min-max) | precopy Gbit/s | faults | fault p50 / p99 us | max stall ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows(f"{d}/migrate.csv"):
        print("| {} | {} | {} | {}/{} | {}/{} | {} ({}-{}) | {} ({}-{}) | {} | {} | {} / {} | {} |".format(
            r["workload"], r["mode"], r["fault_mode"], r["completed"], r["runs"],
            r["digest_match"], r["runs"], num(r["total_ms_median"], "{:.0f}"),
            num(r["total_ms_min"], "{:.0f}"), num(r["total_ms_max"], "{:.0f}"),
            num(r["downtime_ms_median"], "{:.2f}"), num(r["downtime_ms_min"], "{:.2f}"),
            num(r["downtime_ms_max"], "{:.2f}"), num(r["precopy_gbps_median"]),
            r["faults"], num(r["fault_p50_us"]), num(r["fault_p99_us"]),
            num(r["max_vcpu_stall_ms"])))

    print("\n### guest impact\n")
    print("| workload | mode | fault mode | blocktime ms | below half ms median (min-max) "
          "| mgu 10 ms | mgu 100 ms | mgu 1 s median (min-max) | precopy: below half ms, mgu 100 ms "
          "| no migration: below half ms, mgu 10 / 100 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows(f"{d}/migrate.csv"):
        if not r.get("below_half_ms_median"):
            print("| {} | {} | {} | {} | not measured: {} | | | | | |".format(
                r["workload"], r["mode"], r["fault_mode"], num(r["blocktime_ms_median"], "{:.0f}"),
                r.get("impact_note", "")))
            continue
        print("| {} | {} | {} | {} | {} ({}-{}) | {} | {} | {} ({}-{}) | {}, {} | {}, {} / {} |".format(
            r["workload"], r["mode"], r["fault_mode"], num(r["blocktime_ms_median"], "{:.0f}"),
            num(r["below_half_ms_median"], "{:.0f}"), num(r["below_half_ms_min"], "{:.0f}"),
            num(r["below_half_ms_max"], "{:.0f}"), num(r["mgu_10ms_median"], "{:.2f}"),
            num(r["mgu_100ms_median"], "{:.2f}"), num(r["mgu_1s_median"], "{:.2f}"),
            num(r["mgu_1s_min"], "{:.2f}"), num(r["mgu_1s_max"], "{:.2f}"),
            num(r["precopy_below_half_ms"], "{:.0f}"), num(r["precopy_mgu_100ms"], "{:.2f}"),
            num(r["baseline_below_half_ms"], "{:.0f}"), num(r["baseline_mgu_10ms"], "{:.2f}"),
            num(r["baseline_mgu_100ms"], "{:.2f}")))

    print("\n### switchover\n")
    print("| vCPUs | downtime ms median | min - max | digest |")
    print("|---|---|---|---|")
    for r in rows(f"{d}/switchover.csv"):
        print("| {} | {} | {} - {} | {}/{} |".format(
            r["vcpus"], num(r["downtime_ms_median"], "{:.2f}"), num(r["downtime_ms_min"], "{:.2f}"),
            num(r["downtime_ms_max"], "{:.2f}"), r["digest_match"], r["runs"]))


if __name__ == "__main__":
    main()
