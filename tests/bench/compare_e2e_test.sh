#!/bin/bash
# ferry-bench compare end to end: real builds (the same binaries twice) on a
# one-second scenario, then scripted builds whose figures are known, for the
# order of the runs, their environment, the verdicts and the exit status.
set -euo pipefail
runfiles="$TEST_SRCDIR/$TEST_WORKSPACE"
bench="$runfiles/bench/ferry-bench"
t="$TEST_TMPDIR"
fail() { echo "FAIL: $*"; exit 1; }

# Two build directories holding the same binaries.
for d in old new; do
  mkdir -p "$t/$d"
  ln -sf "$runfiles/bench/ferry-bench" "$t/$d/ferry-bench"
  ln -sf "$runfiles/migration/agent/ferryd" "$t/$d/ferryd"
  ln -sf "$runfiles/migration/agent/ferry-vmm" "$t/$d/ferry-vmm"
done
echo "abc1234 (test)" > "$t/old/build.txt"

"$bench" compare "$t/old" "$t/new" --repeat 2 -- digest --memory 64M --repeat 1 \
  > "$t/table.txt" 2> "$t/progress.txt" || fail "compare exited with $?: $(cat "$t/progress.txt")"
cat "$t/table.txt"
grep -q "^old: $t/old (abc1234 (test))$" "$t/progress.txt" || fail "the old build's label"
[ "$(grep -c '^\[[1-4]/4\] \(old\|new\): digest --memory 64M --repeat 1 --json' "$t/progress.txt")" -eq 4 ] \
  || fail "expected 4 progress lines: $(cat "$t/progress.txt")"
grep -q '^digest --memory 64M --repeat 1 --json  (2 repetitions per build)$' "$t/table.txt" \
  || fail "table heading"
# Every numeric figure of digest, each with a ratio and a spread.
for f in seconds gbytes_per_sec memory_bytes runs; do
  grep -Eq "^  $f +[0-9.e+-]+ +[0-9.e+-]+ +[0-9]+\.[0-9]{3}  [0-9]+\.[0-9]{3}\.\.[0-9]+\.[0-9]{3}" \
    "$t/table.txt" || fail "no ratio and spread for $f"
done
grep -Eq '^  memory_bytes .* 1\.000  1\.000\.\.1\.000 *$' "$t/table.txt" || fail "memory_bytes ratio"

"$bench" compare "$t/old" "$t/new" --repeat 1 --json -- digest --memory 64M --repeat 1 \
  -- digest --memory 32M --repeat 1 > "$t/lines.jsonl" 2> /dev/null || fail "--json exited with $?"
python3 - "$t/lines.jsonl" <<'PY' || fail "compare --json lines"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
scenarios = sorted({r["scenario"] for r in rows})
assert scenarios == ["digest --memory 32M --repeat 1 --json",
                     "digest --memory 64M --repeat 1 --json"], scenarios
gb = [r for r in rows if r["field"] == "gbytes_per_sec"]
assert len(gb) == 2 and all(r["ratio"] > 0 and r["better"] == "higher" for r in gb), gb
assert all(r["old_n"] == 1 and r["new_n"] == 1 for r in rows), rows
PY

# Failures to run: not a build directory (usage: 2), a run that fails (1).
mkdir -p "$t/empty"
set +e
"$bench" compare "$t/empty" "$t/new" -- digest > /dev/null 2> "$t/err.txt"; rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "no executable ferry-bench, ferryd, ferry-vmm" "$t/err.txt" \
  || fail "empty build directory: exit $rc, $(cat "$t/err.txt")"
set +e
"$bench" compare "$t/old" "$t/new" --repeat 1 -- digest --no-such-flag 1 > /dev/null 2> "$t/err.txt"; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "digest --no-such-flag 1 --json failed (exit status 2)" "$t/err.txt" \
  && grep -q "no-such-flag" "$t/err.txt" || fail "failing run: exit $rc, $(cat "$t/err.txt")"

# Scripted builds: each ferry-bench logs its build and what FERRYD and
# FERRY_VMM it was given, and prints known figures (the new build's
# postcopy is twice as long; one field only the old build prints; one is 0
# in every run).
for d in a b; do
  mkdir -p "$t/$d"
  touch "$t/$d/ferryd" "$t/$d/ferry-vmm"
  chmod +x "$t/$d/ferryd" "$t/$d/ferry-vmm"
done
cat > "$t/a/ferry-bench" <<EOF
#!/bin/bash
echo "a \$FERRYD \$FERRY_VMM \$*" >> "$t/order.txt"
echo "a table line"
echo '{"scenario":"fake","total_ms":100,"precopy_gbps":5,"old_only":1,"faults":0,"digest_match":true,"t":[1,2]}'
EOF
cat > "$t/b/ferry-bench" <<EOF
#!/bin/bash
echo "b \$FERRYD \$FERRY_VMM \$*" >> "$t/order.txt"
echo '{"scenario":"fake","total_ms":200,"precopy_gbps":5,"faults":0}'
EOF
chmod +x "$t/a/ferry-bench" "$t/b/ferry-bench"
"$bench" compare "$t/a" "$t/b" --repeat 3 -- fake --x 1 > "$t/fake.txt" 2> /dev/null \
  || fail "scripted compare exited with $?"
cat "$t/fake.txt"
# Old first in repetitions 0 and 2, new first in 1; each with its own agents.
printf '%s\n' "a $t/a/ferryd $t/a/ferry-vmm fake --x 1 --json" \
  "b $t/b/ferryd $t/b/ferry-vmm fake --x 1 --json" \
  "b $t/b/ferryd $t/b/ferry-vmm fake --x 1 --json" \
  "a $t/a/ferryd $t/a/ferry-vmm fake --x 1 --json" \
  "a $t/a/ferryd $t/a/ferry-vmm fake --x 1 --json" \
  "b $t/b/ferryd $t/b/ferry-vmm fake --x 1 --json" | diff - "$t/order.txt" || fail "run order"
grep -Eq '^  total_ms +100 +200 +2\.000  2\.000\.\.2\.000 +WORSE$' "$t/fake.txt" || fail "total_ms WORSE"
grep -Eq '^  precopy_gbps +5 +5 +1\.000  1\.000\.\.1\.000 *$' "$t/fake.txt" || fail "precopy_gbps"
grep -Eq '^  old_only +1 +- +- +- +missing in new$' "$t/fake.txt" || fail "old_only missing in new"
grep -q '^  0 in every run: faults$' "$t/fake.txt" || fail "faults: 0 in every run"
grep -q '1 worse, 0 better, 1 within the spread (of 2 figures with a verdict)' "$t/fake.txt" \
  || fail "verdict count"
set +e
"$bench" compare "$t/a" "$t/b" --repeat 2 --fail-on-regression -- fake > /dev/null 2> "$t/err.txt"; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "figures WORSE in the new build: 1" "$t/err.txt" || fail "--fail-on-regression: exit $rc"
# A build whose run prints no JSON, or broken JSON: a failed run (1).
mkdir -p "$t/c"
cp "$t/a/ferryd" "$t/a/ferry-vmm" "$t/c/"
printf '#!/bin/bash\necho "a table, no JSON"\n' > "$t/c/ferry-bench"
chmod +x "$t/c/ferry-bench"
set +e
"$bench" compare "$t/a" "$t/c" --repeat 1 -- fake > /dev/null 2> "$t/err.txt"; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "printed no JSON object on stdout" "$t/err.txt" \
  || fail "no JSON: exit $rc, $(cat "$t/err.txt")"
printf '#!/bin/bash\necho "{\\"total_ms\\": 1"\n' > "$t/c/ferry-bench"
set +e
"$bench" compare "$t/a" "$t/c" --repeat 1 -- fake > /dev/null 2> "$t/err.txt"; rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "fake --json: output line 1: not a JSON object" "$t/err.txt" \
  || fail "broken JSON: exit $rc, $(cat "$t/err.txt")"
echo "PASS"
