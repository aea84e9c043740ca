#!/usr/bin/env python3
"""Counts googletest results in a log that holds several test binaries' output.

Usage: count_gtest_log.py LOG [--label NAME] [--out FILE]

Each binary's output sits between "FERRY-TEST-BEGIN name" and
"FERRY-TEST-END name rc=N" lines. Counts "[       OK ]", "[  FAILED  ]" (per
test, not the summary list) and "[  SKIPPED ]" lines; a binary whose end
marker is missing or whose exit code is non-zero without a failed test
counts as one failure. Prints "LABEL: N passed, N failed, N skipped" and,
with --out, writes "N N N" to FILE. Exits 1 if anything failed or nothing ran.
"""
import re
import sys


def main():
    args = sys.argv[1:]
    label = "tests"
    out = None
    if "--label" in args:
        i = args.index("--label")
        label = args[i + 1]
        del args[i:i + 2]
    if "--out" in args:
        i = args.index("--out")
        out = args[i + 1]
        del args[i:i + 2]
    text = open(args[0], errors="replace").read()
    passed = failed = skipped = 0
    names = re.findall(r"^FERRY-TEST-BEGIN (\S+)", text, re.M)
    for name in names:
        m = re.search(r"^FERRY-TEST-BEGIN %s\n(.*?)^FERRY-TEST-END %s rc=(\d+)" % (name, name),
                      text, re.M | re.S)
        if not m:
            print("%s: %s did not finish" % (label, name), file=sys.stderr)
            failed += 1
            continue
        body, rc = m.group(1), int(m.group(2))
        ok = len(re.findall(r"^\[       OK \] \S+ \(", body, re.M))
        bad = len(re.findall(r"^\[  FAILED  \] \S+.* \(\d+ ms\)$", body, re.M))
        skip = len(re.findall(r"^\[  SKIPPED \] \S+ \(", body, re.M))
        passed += ok
        failed += bad
        skipped += skip
        if rc != 0 and bad == 0:
            print("%s: %s exited with %d" % (label, name, rc), file=sys.stderr)
            failed += 1
    if not names:
        print("%s: no test binary ran" % label, file=sys.stderr)
        failed += 1
    print("%s: %d passed, %d failed, %d skipped" % (label, passed, failed, skipped))
    if out:
        with open(out, "w") as f:
            f.write("%d %d %d\n" % (passed, failed, skipped))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
