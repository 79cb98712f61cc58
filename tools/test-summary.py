"""Sums the per-suite test case counts that every test program prints, over the given meson logs.

Each suite (doctest binaries, and the Python/Node integration runners that mimic doctest)
prints a line "[doctest] test cases: T | P passed | F failed | S skipped". A test program that
died before printing one counts as one failed case, so a crash is never a silent zero.
"""
import re
import sys

summary = re.compile(r"test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed")
passed = failed = 0
for path in sys.argv[1:-1]:
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        failed += 1
        continue
    # meson's testlog.txt has one block per test program, each starting with "==== N/M ===".
    for block in re.split(r"\n=+ \d+/\d+ =+\n", text)[1:]:
        found = summary.findall(block)
        if found:
            passed += sum(int(p) for _, p, _ in found)
            failed += sum(int(f) for _, _, f in found)
        elif re.search(r"^result:\s+exit status 0", block, re.M) is None:
            failed += 1
if sys.argv[-1] != "0" and failed == 0:
    failed = 1
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
