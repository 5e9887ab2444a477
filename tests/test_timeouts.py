"""Test time limits: pytest-timeout's global per-test limit stays above every fixture's own
limit, so on a loaded machine a slow micro DAG is not cut off by pytest-timeout first
(issue 14 §6: the global 600 s fired before the micro-DAG fixture's own 900 s)."""

from __future__ import annotations

import inspect

import test_slurm
import test_tracking_server
import test_workflow_kill
import timeouts
import workflow_runner


def _fixture_limits() -> dict[str, float]:
    """Every limit a test fixture or helper sets for one process or Snakemake run, read from
    where each is used (not from tests/timeouts.py)."""
    return {
        "workflow_runner.snakemake default": inspect.signature(workflow_runner.snakemake).parameters["timeout"].default,
        "test_workflow_kill.DAG_TIMEOUT": test_workflow_kill.DAG_TIMEOUT,
        "test_workflow_kill.SNAKEMAKE_TIMEOUT": test_workflow_kill.SNAKEMAKE_TIMEOUT,
        "test_slurm.RUN_TIMEOUT": test_slurm.RUN_TIMEOUT,
        "test_tracking_server.JOB_TIMEOUT": test_tracking_server.JOB_TIMEOUT,
        "test_tracking_server.SERVER_START_TIMEOUT": test_tracking_server.SERVER_START_TIMEOUT,
    }


def test_global_limit_exceeds_every_fixture_limit(request):
    per_test = request.config._env_timeout  # what pytest-timeout itself will enforce
    assert per_test is not None, "pytest-timeout has no global limit"
    if request.config.getoption("timeout") is None:
        assert per_test == timeouts.PER_TEST
    # a fixture's own limit plus the test body after it must fit under the global one
    for name, limit in _fixture_limits().items():
        assert limit < per_test, f"{name} = {limit} s is not below the global per-test limit {per_test} s"


def test_micro_dag_limit_allows_a_loaded_machine():
    # ~2.5 min on 2 quiet cores; a 2-core burner beside it doubles that, shared boxes more
    assert inspect.signature(workflow_runner.snakemake).parameters["timeout"].default >= 6 * 150
    assert test_workflow_kill.DAG_TIMEOUT >= 6 * 150


def test_slowdown_stretches_every_limit(monkeypatch):
    import importlib

    monkeypatch.setenv("MINDVIS_TEST_SLOWDOWN", "2")
    stretched = importlib.reload(timeouts)
    try:
        assert stretched.PER_TEST == 2 * (1800 + 900)
        assert all(stretched.PER_TEST > v for v in stretched.FIXTURE_LIMITS.values())
    finally:
        monkeypatch.delenv("MINDVIS_TEST_SLOWDOWN")
        importlib.reload(timeouts)
