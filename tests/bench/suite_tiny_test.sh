#!/bin/bash
# ferry-bench suite --tiny: every scenario runs, every output is written.
set -euo pipefail
bench="$TEST_SRCDIR/$TEST_WORKSPACE/bench/ferry-bench"
export FERRYD="$TEST_SRCDIR/$TEST_WORKSPACE/migration/agent/ferryd"
out="$TEST_TMPDIR/suite"
fail() { echo "FAIL: $*"; cat "$TEST_TMPDIR/progress.txt"; exit 1; }
"$bench" suite --tiny --out "$out" 2> "$TEST_TMPDIR/progress.txt" || fail "ferry-bench suite --tiny exited with $?"
# One progress line per run: the reference, 8 demand-paging points (2 sources x 2
# vCPU counts x 2 fault modes) x 2 runs, 1 migrate point x 2, 1 switchover point x 2.
[ "$(grep -c '^\[' "$TEST_TMPDIR/progress.txt")" -eq 21 ] || fail "expected 21 progress lines"
for f in results.jsonl reference.csv demand_paging.csv migrate.csv switchover.csv; do
  [ -s "$out/$f" ] || fail "$f missing or empty"
done
[ "$(wc -l < "$out/results.jsonl")" -eq 11 ] || fail "expected 11 JSON lines"
python3 - "$out/results.jsonl" <<'PY' || fail "a result line is not JSON or lacks its figures"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert "tcp_gbps" in rows[0] and rows[0]["tcp_gbps"] > 0
dp = [r for r in rows if "pages_per_sec_median" in r]
assert len(dp) == 8 and all(r["pages_per_sec_min"] <= r["pages_per_sec_median"] <= r["pages_per_sec_max"] for r in dp)
mig = [r for r in rows if r.get("mode") == "postcopy"]
assert len(mig) == 1 and mig[0]["completed"] == 2 and mig[0]["digest_match"] == 2, mig
m = mig[0]
# Guest impact in every migrate row: utilization in [0, 1], time below half
# within the migration, blocktime within vCPUs x total time.
assert 0 <= m["mgu_10ms_min"] <= m["mgu_10ms_median"] <= m["mgu_10ms_max"] <= 1, m
for k in ("mgu_100ms_median", "mgu_1s_median"):
    assert 0 <= m[k] <= 1, (k, m)
assert 0 <= m["below_half_ms_median"] <= m["total_ms_max"], m
assert 0 <= m["blocktime_ms_median"] <= 2 * m["total_ms_max"], m
PY
head -1 "$out/migrate.csv" | grep -q 'blocktime_ms_median.*below_half_ms_median.*mgu_10ms_median.*mgu_100ms_median.*mgu_1s_median' \
  || fail "migrate.csv lacks the guest-impact columns"
head -1 "$out/migrate.csv" | grep -q '^memory_bytes,workload,dirty_rate,mode,fault_mode,max_bandwidth,runs,completed,digest_match,total_ms_median' \
  || fail "migrate.csv header"
# The run's record: command, date, machine, wall time (docs/benchmarks.md
# quotes it beside every figure; each plot carries it in its corner).
grep -q '^command: .*ferry-bench suite --tiny --out ' "$out/run.txt" || fail "run.txt: command"
grep -Eq '^started: [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2} UTC$' "$out/run.txt" || fail "run.txt: started"
grep -Eq '^machine: [0-9]+ CPUs.*GiB, Linux ' "$out/run.txt" || fail "run.txt: machine"
grep -Eq '^wall_s: [0-9]+$' "$out/run.txt" || fail "run.txt: wall_s"
grep -q 'set label 1000 "ferry-bench suite --tiny\\n' "$out/switchover_downtime.gp" || fail "plot caption"
# One switchover point (1 vCPU): ticks at the count only, a y range from 0.
grep -q 'set xtics ("1" 1)' "$out/switchover_downtime.gp" || fail "switchover x tics"
grep -q 'set yrange \[0:' "$out/switchover_downtime.gp" || fail "switchover y range"
for p in ops_timeline mgu_curve fault_cdf demand_paging_rate bytes_by_phase switchover_downtime; do
  [ "$(head -c 4 "$out/$p.png" | tail -c 3)" = "PNG" ] || fail "$p.png is not a PNG"
done
echo "PASS"
