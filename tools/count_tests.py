#!/usr/bin/env python3
"""Counts test cases from Bazel's test results and prints one closing line.

Usage: count_tests.py BAZEL_TEST_LOG [--out FILE] [--testlogs DIR]

Reads the per-target status lines of `bazel test` (PASSED, FAILED, TIMEOUT,
NO STATUS, FAILED TO BUILD, ...) and, for each target that ran, its JUnit XML
in bazel-testlogs/ (written by googletest; --testlogs names another
directory, for an output base without the convenience symlinks). A target
that did not run, or whose XML is missing, counts as one failed case. Prints
"N passed, N failed, N skipped" (with --out, "N N N" to FILE too) and exits 1
if anything failed.
"""
import os
import re
import sys
import xml.etree.ElementTree as ET

STATUS = re.compile(r"^(//\S+)\s+(?:\(cached\)\s+)?(PASSED|FAILED|TIMEOUT|NO STATUS|"
                    r"FAILED TO BUILD|FLAKY|INCOMPLETE|SKIPPED)\b")


def xml_path(target, testlogs="bazel-testlogs"):
    package, name = target[2:].split(":")
    return os.path.join(testlogs, package, name, "test.xml")


def count_xml(path):
    passed = failed = skipped = 0
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None or case.get("result") == "skipped" \
                or case.get("status") == "notrun":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main():
    passed = failed = skipped = 0
    targets = {}
    args = sys.argv[1:]
    out = None
    if "--out" in args:
        i = args.index("--out")
        out = args[i + 1]
        del args[i:i + 2]
    testlogs = "bazel-testlogs"
    if "--testlogs" in args:
        i = args.index("--testlogs")
        testlogs = args[i + 1]
        del args[i:i + 2]
    with open(args[0]) as log:
        for line in log:
            m = STATUS.match(line.strip())
            if m:
                targets[m.group(1)] = m.group(2)
    for target, status in sorted(targets.items()):
        path = xml_path(target, testlogs)
        if status in ("PASSED", "FAILED", "FLAKY") and os.path.exists(path):
            p, f, s = count_xml(path)
            if status == "FAILED" and f == 0:
                f = 1  # crashed or timed out after the XML was written
            passed, failed, skipped = passed + p, failed + f, skipped + s
        else:
            print(f"{target}: {status}", file=sys.stderr)
            failed += 1
    if not targets:
        print("no test results found", file=sys.stderr)
        failed += 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if out:
        with open(out, "w") as f:
            f.write(f"{passed} {failed} {skipped}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
