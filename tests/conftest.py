"""Shared pytest setup: tests/ on sys.path (for small factories), pytest-timeout's global
limit from tests/timeouts.py, and an isolated MLflow store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import timeouts  # noqa: E402 (needs tests/ on sys.path)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """pytest-timeout's per-test limit comes from tests/timeouts.py (before pytest-timeout reads
    its settings), unless --timeout or PYTEST_TIMEOUT says otherwise."""
    if config.getoption("timeout", None) is None and not os.environ.get("PYTEST_TIMEOUT"):
        config.option.timeout = timeouts.PER_TEST


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path, monkeypatch):
    """Never let a test write into the user's results/mlflow.db."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MINDVIS_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a test module with one torch CPU thread (restored afterwards); module-scoped so
    it also covers the module's own training fixtures."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
