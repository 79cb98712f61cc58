"""Runs integration test modules with unittest and prints doctest's summary line format,
which tools/test sums: "[doctest] test cases: T | P passed | F failed | S skipped"."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for path in sys.argv[1:]:
        name = os.path.splitext(os.path.basename(path))[0]
        suite.addTests(loader.loadTestsFromName(name))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    total = result.testsRun
    print(f"[doctest] test cases: {total} | {total - failed - skipped} passed | {failed} failed | "
          f"{skipped} skipped")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
