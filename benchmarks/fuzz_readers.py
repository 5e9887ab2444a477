"""Fuzz every reader for longer than the test suite does, and count what happened (issue 14).

Each case copies a small valid input set (written by the project's own writers), mutates one
file of it (truncation, bit flips, random / zeroed / deleted / duplicated blocks, another
format's bytes, wrong dtypes and shapes, NaN/Inf, missing / renamed / reordered keys and
lines, pickled payloads) and runs the reader. The property, as in tests/test_fuzz_readers.py:
a valid result or the project's own clean one-line error; never another exception, never a
half-written output, never a payload run. Prints, per reader: cases tried, distinct malformed
inputs (by content hash), valid results, clean errors, failures; then every failure.

    python benchmarks/fuzz_readers.py                 # 200 cases per reader
    python benchmarks/fuzz_readers.py --cases 1000 --readers bdata-h5 god-npz
    python benchmarks/fuzz_readers.py --list

Exit code 1 when any reader failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # reader_fuzz, god_factory

import numpy as np  # noqa: E402

import reader_fuzz  # noqa: E402


def fuzz(name: str, cases: int, seed: int, scratch: Path) -> reader_fuzz.Counts:
    target = reader_fuzz.TARGETS[name]
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    counts = reader_fuzz.Counts()
    for i in range(cases):
        # every mutation kind in turn, each with a fresh random seed
        mutation = target.mutations[i % len(target.mutations)]
        counts.add(reader_fuzz.run_case(target, mutation, int(rng.integers(0, 2**32)), scratch))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200, help="cases per reader (default 200)")
    parser.add_argument("--readers", nargs="*", default=None, help="reader names (default: all; see --list)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="print the reader names and exit")
    args = parser.parse_args()
    if args.list:
        for name, target in reader_fuzz.TARGETS.items():
            print(f"{name:28s} mutates {target.mutated} ({len(target.mutations)} mutation kinds)")
        return 0
    names = args.readers or list(reader_fuzz.TARGETS)
    unknown = [n for n in names if n not in reader_fuzz.TARGETS]
    if unknown:
        parser.error(f"unknown reader(s) {unknown}; choose from {list(reader_fuzz.TARGETS)}")
    reader_fuzz.configure_for_fuzzing()
    logging.disable(logging.WARNING)  # readers log what they repair
    warnings.simplefilter("ignore")
    totals = {"cases": 0, "distinct": 0, "valid": 0, "clean": 0, "failures": 0}
    failures: list[reader_fuzz.Outcome] = []
    print(f"{'reader':28s} {'cases':>6s} {'distinct':>8s} {'valid':>6s} {'clean':>6s} {'failures':>8s} {'s':>7s}")
    with tempfile.TemporaryDirectory(prefix="mindvis-fuzz-") as tmp:
        for name in names:
            start = time.perf_counter()
            c = fuzz(name, args.cases, args.seed, Path(tmp))
            seconds = time.perf_counter() - start
            print(f"{name:28s} {c.cases:6d} {len(c.distinct):8d} {c.valid:6d} {c.clean:6d} {len(c.failures):8d} "
                  f"{seconds:7.1f}", flush=True)
            for key, value in (("cases", c.cases), ("distinct", len(c.distinct)), ("valid", c.valid),
                               ("clean", c.clean), ("failures", len(c.failures))):
                totals[key] += value
            failures += c.failures
    print(f"{'total':28s} {totals['cases']:6d} {totals['distinct']:8d} {totals['valid']:6d} {totals['clean']:6d} "
          f"{totals['failures']:8d}")
    kinds = {k: sum(f.result == k for f in failures) for k in ("traceback", "half-written", "payload-ran")}
    print("failures by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    for f in failures:
        print(f"\n{f.target} / {f.mutation} (seed {f.seed}): {f.result}\n  " + f.detail.replace("\n", "\n  "))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
