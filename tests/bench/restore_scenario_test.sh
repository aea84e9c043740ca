#!/bin/bash
# ferry-bench restore end to end on a tiny guest: every row present, every
# restored guest and clone checked by digest (the scenario exits non-zero on
# a mismatch), and nothing left behind in --dir.
set -euo pipefail
runfiles="$TEST_SRCDIR/$TEST_WORKSPACE"
bench="$runfiles/bench/ferry-bench"
t="$TEST_TMPDIR"
fail() { echo "FAIL: $*"; exit 1; }

mkdir -p "$t/snaps"
"$bench" restore --memory 16M --workloads zipf --clones 2 --observe-ms 300 --dir "$t/snaps" \
  --json > "$t/rows.jsonl" 2> "$t/err.txt" || fail "restore exited with $?: $(cat "$t/err.txt")"
cat "$t/rows.jsonl"
python3 - "$t/rows.jsonl" <<'PY' || fail "rows"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["scenario"], []).append(r)
assert len(by["restore-reference"]) == 1, by.keys()
ref = by["restore-reference"][0]
assert ref["page_cache_read_p50_us"] > 0 and ref["cold_read_gbps"] > 0, ref
snap = by["snapshot"][0]
assert snap["memory_bytes"] == 16 << 20 and snap["data_bytes"] > 0 and snap["live_rounds"] >= 1, snap
hows = sorted(r["restore"] for r in by["restore"])
assert hows == ["eager", "lazy", "lazy-cold"], hows
for r in by["restore"]:
    assert r["digest_match"], r
    assert 0 < r["first_instruction_ms"] <= r["full_speed_ms"], r
    if r["restore"] == "lazy-cold":
        assert r["limit_ms"] > 0, r
c = by["restore-clones"][0]
assert c["clones"] == 2 and c["digests_match"] and c["guest_bytes_per_clone"] > 0, c
PY
[ -z "$(ls -A "$t/snaps")" ] || fail "left behind: $(ls -R "$t/snaps")"
echo PASS
