"""Every time limit the tests use, in one place.

Limits are sized for a loaded machine: the test suite must pass on 2 cores with another
2-core job running beside it (a busy laptop or CI runner), where everything takes about
twice its quiet time, and more when several engineers share the box. Each limit is
several times the quiet figure; MINDVIS_TEST_SLOWDOWN (a factor, default 1) stretches all
of them at once for slower machines.

pytest-timeout's global per-test limit (PER_TEST) is set from here by tests/conftest.py
and stays above every limit a fixture or test sets on its own, so a fixture's own clear
message ("the micro DAG did not finish in N s") wins over a bare pytest-timeout kill.
"""

from __future__ import annotations

import os


def _slowdown() -> float:
    raw = os.environ.get("MINDVIS_TEST_SLOWDOWN", "1")
    try:
        factor = float(raw)
    except ValueError:
        raise SystemExit(f"MINDVIS_TEST_SLOWDOWN must be a number, got {raw!r}") from None
    if factor <= 0:
        raise SystemExit(f"MINDVIS_TEST_SLOWDOWN must be > 0, got {raw!r}")
    return factor


SLOWDOWN = _slowdown()

# One Snakemake run of the whole micro DAG (tests/test_workflow.py's fixture: ~2.5 min on
# 2 quiet cores; the kill tests' DAG up to the training outputs: less).
DAG_RUN = int(1800 * SLOWDOWN)
# One Snakemake run of a single job (a training rule of the kill tests, a SLURM target set).
SNAKEMAKE_JOB = int(600 * SLOWDOWN)
# One `python -m mindvis ...` command or a short helper process (interpreter + imports + work).
COMMAND = int(300 * SLOWDOWN)
# Waiting for a process to exit after it was signalled.
PROCESS_EXIT = int(60 * SLOWDOWN)

# pytest-timeout's global limit per test (setup + call + teardown): above every limit
# above, with room for the test body after its fixture.
PER_TEST = DAG_RUN + int(900 * SLOWDOWN)

FIXTURE_LIMITS = {"DAG_RUN": DAG_RUN, "SNAKEMAKE_JOB": SNAKEMAKE_JOB, "COMMAND": COMMAND,
                  "PROCESS_EXIT": PROCESS_EXIT}
