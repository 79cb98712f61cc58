"""Runs one libFuzzer target for a fixed number of runs over its seed corpus, as one test case.

usage: run.py TARGET SEED_DIR RUNS ARTIFACT_DIR

New inputs the fuzzer finds go to a temporary folder (the seed corpus in the source tree is
never written); a crash is saved under ARTIFACT_DIR. Prints doctest's summary line (one case),
which tools/test sums.
"""
import os
import re
import subprocess
import sys
import tempfile


def main():
    target, seeds, runs, artifacts = sys.argv[1:5]
    name = os.path.basename(target)
    os.makedirs(artifacts, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"dohost-{name}-") as work:
        cmd = [target, work, seeds, f"-runs={runs}", "-seed=1", "-timeout=20", "-rss_limit_mb=2560",
               "-print_final_stats=1", f"-artifact_prefix={os.path.join(artifacts, name)}-"]
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    out = r.stderr
    done = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    ok = r.returncode == 0 and done is not None
    if ok:
        print(f"{name}: {done.group(1)} runs over {seeds}, no failure")
    else:
        print(out[-20000:])
        print(f"{name}: FAILED (exit {r.returncode}); the input is saved under {artifacts}")
    print(f"[doctest] test cases: 1 | {int(ok)} passed | {int(not ok)} failed | 0 skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
