#!/usr/bin/env python3
"""Bad input, at length: the property tests of tests/unit/test_badinput_props.py with N examples each.

Every parser that reads user input (matrix and known-issues TOML, host profiles, `cpuid -r` dumps, libvirt XML,
probe and linux-guest transcripts, policy and known-differences files, --kernel/--param/-cpu strings) gets
N generated inputs per test (the test suite uses 10-200); the table printed at the end says, per parser and
entry point, how many inputs were tried and how many broke the property (a traceback, an error that is not
one line, exit status other than 0/1/2, a partly written output file). Hypothesis prints each failure with
the input that caused it.

    python3 bench/bench_fuzz.py [--examples N] [-k EXPR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=500, help="examples per property test (default 500)")
    ap.add_argument("-k", metavar="EXPR", help="only the tests matching EXPR (pytest -k)")
    args = ap.parse_args()
    env = {**os.environ, "RIG_FUZZ_EXAMPLES": str(args.examples),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
           "--tb=short", str(REPO / "tests" / "unit" / "test_badinput_props.py"), *(["-k", args.k] if args.k else [])]
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    print(f"bench_fuzz: {args.examples} examples per test, {time.monotonic() - t0:.0f} s wall, pytest exit {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
