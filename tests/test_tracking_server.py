"""Tracking against a real `mlflow server` on 127.0.0.1 (issue 7, section 7).

One server for the module (SQLite backend, proxied artifacts under a temporary
folder); four mindvis jobs log to it at once as separate processes, exactly as
`snakemake --cores all` would start them with `MLFLOW_TRACKING_URI` pointing at
a shared server. The client-side locking of job.py applies only to a SQLite
URI, so here the server alone serialises the writers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

import timeouts

pytestmark = pytest.mark.integration

N_JOBS = 4
SERVER_START_TIMEOUT = timeouts.COMMAND  # importing mlflow + creating the schema on busy cores
JOB_TIMEOUT = timeouts.COMMAND  # per job
# 10 digit classes; 2 training + 1 test image per class.
STIMULI_CONFIG = {"image_size": 16, "train_per_class": 2, "test_per_class": 1}
EXPERIMENT = "mindvis-server-test"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's whole process group (uvicorn workers included)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


class Server:
    def __init__(self, url: str, root: Path, proc: subprocess.Popen):
        self.url = url
        self.root = root
        self.proc = proc


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = open(root / "server.log", "wb")
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
        "--backend-store-uri", f"sqlite:///{root}/srv.db",
        "--serve-artifacts", "--artifacts-destination", str(root / "art"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MINDVIS_"))}
    # The server's background job runner (for GenAI features) is one more process to start and stop.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                log_tail = (root / "server.log").read_text()[-3000:]
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log_tail}")
            try:
                if _get(f"{url}/health", timeout=2).strip() == b"OK":
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server on {url} not healthy after {SERVER_START_TIMEOUT} s:\n"
                    f"{(root / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield Server(url, root, proc)
    finally:
        _stop(proc)
        log_file.close()


def _job_env(uri: str) -> dict[str, str]:
    """A job's environment as a cluster node would see it: only the server URI is set.

    MINDVIS_ARTIFACT_ROOT is dropped (the test suite's conftest sets a local
    one) so the server decides where artifacts go.
    """
    env = {k: v for k, v in os.environ.items() if k != "MINDVIS_ARTIFACT_ROOT"}
    env.update(
        MLFLOW_TRACKING_URI=uri,
        MINDVIS_EXPERIMENT=EXPERIMENT,
        MINDVIS_GIT_COMMIT="0" * 40,  # skip a `git rev-parse` per job
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
        MLFLOW_HTTP_REQUEST_TIMEOUT="20",
        OMP_NUM_THREADS="1",
    )
    return env


def _stimuli_cmd(out_dir: Path, subject: int) -> list[str]:
    return [
        sys.executable, "-m", "mindvis", "make-stimuli", "--out-dir", str(out_dir),
        "--config", json.dumps(STIMULI_CONFIG), "--rule", "make_stimuli", "--wildcard", f"subject={subject}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def parallel_jobs(mlflow_server, tmp_path_factory):
    """Start N_JOBS make-stimuli jobs at once against the server; wait for all."""
    work = tmp_path_factory.mktemp("jobs")
    env = _job_env(mlflow_server.url)
    started = time.monotonic()
    procs = {}
    for i in range(N_JOBS):
        procs[i] = subprocess.Popen(
            _stimuli_cmd(work / f"stim{i}", i), cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    outputs = {}
    try:
        for i, proc in procs.items():
            out, _ = proc.communicate(timeout=JOB_TIMEOUT)
            outputs[i] = (proc.returncode, out.decode(errors="replace"))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for i, (rc, text) in outputs.items():
        assert rc == 0, f"job {i} failed ({rc}):\n{text[-3000:]}"
        # A tracking failure is only a warning: make it a test failure here.
        assert "tracking is off" not in text and "MLflow unavailable" not in text, f"job {i}:\n{text[-3000:]}"
    return {"work": work, "seconds": time.monotonic() - started, "outputs": outputs}


def _runs(url: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None, f"experiment {EXPERIMENT!r} was not created on the server"
    return client, exp, client.search_runs([exp.experiment_id], max_results=100)


def test_one_finished_run_per_parallel_job_with_its_tags(mlflow_server, parallel_jobs):
    _, _, runs = _runs(mlflow_server.url)
    assert len(runs) == N_JOBS
    by_subject = {run.data.tags["subject"]: run for run in runs}
    assert sorted(by_subject) == [str(i) for i in range(N_JOBS)]
    for subject, run in by_subject.items():
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"make_stimuli[subject={subject}]"
        assert run.data.tags["mindvis.rule"] == "make_stimuli"
        assert run.data.tags["mindvis.command"] == "make-stimuli"
        assert json.loads(run.data.tags["mindvis.wildcards"]) == {"subject": subject}
        assert run.data.tags["dataset"] == "stimuli"
        assert run.data.tags["mlflow.source.git.commit"] == "0" * 40
        # Params: the job's config section, defaults filled in.
        assert run.data.params["image_size"] == "16"
        assert run.data.params["train_per_class"] == "2"
        assert run.data.params["source"] == "digits"


def test_every_metric_of_every_job_reaches_the_server(mlflow_server, parallel_jobs):
    client, _, runs = _runs(mlflow_server.url)
    for run in runs:
        out = parallel_jobs["work"] / f"stim{run.data.tags['subject']}"
        with np.load(out / "stimuli.npz") as npz:
            n_train, n_test = len(npz["train_labels"]), len(npz["test_labels"])
        assert (n_train, n_test) == (10 * 2, 10 * 1)
        # make-stimuli logs every integer of its summary, and nothing else.
        assert run.data.metrics == {"n_classes": 10.0, "n_train": 20.0, "n_test": 10.0, "image_size": 16.0}
        for name in run.data.metrics:
            history = client.get_metric_history(run.info.run_id, name)
            assert len(history) == 1 and history[0].step == 0


def test_artifacts_are_listed_and_downloadable_through_the_server(mlflow_server, parallel_jobs, tmp_path):
    client, _, runs = _runs(mlflow_server.url)
    for run in runs:
        rid = run.info.run_id
        top = {a.path: a for a in client.list_artifacts(rid)}
        assert set(top) == {"config.yaml", "summary.json", "images"}
        assert top["images"].is_dir
        assert [a.path for a in client.list_artifacts(rid, "images")] == ["images/examples.png"]
        local = Path(client.download_artifacts(rid, "", str(tmp_path / rid)))
        config = yaml.safe_load((local / "config.yaml").read_text())
        assert config == {"source": "digits", "folder": "", **STIMULI_CONFIG, "seed": 0}
        summary = json.loads((local / "summary.json").read_text())
        assert (summary["n_train"], summary["n_test"], summary["n_classes"]) == (20, 10, 10)
        assert len(summary["class_names"]) == 10
        # The examples strip: one 16 px image per class side by side (PNG header: width, height).
        png = (local / "images" / "examples.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (16 * 10, 16)
        # The server's own download route serves the same bytes.
        served = _get(f"{mlflow_server.url}/get-artifact?path=summary.json&run_id={rid}")
        assert json.loads(served) == summary


def test_artifacts_are_stored_where_the_server_says(mlflow_server, parallel_jobs):
    """With no MINDVIS_ARTIFACT_ROOT, a new experiment takes the server's artifact root.

    Jobs on cluster nodes then upload through the server (`mlflow-artifacts:`)
    instead of writing to a path that exists only on the node that ran them.
    """
    from mindvis.tracking import settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mp.delenv("MINDVIS_ARTIFACT_ROOT", raising=False)
        assert settings.artifact_root() is None  # the server decides
    _, exp, runs = _runs(mlflow_server.url)
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location
    for run in runs:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        stored = list((mlflow_server.root / "art").rglob(f"{run.info.run_id}/artifacts/summary.json"))
        assert len(stored) == 1
    # Nothing was written beside the jobs (the default results/mlartifacts).
    assert not (parallel_jobs["work"] / "results").exists()


def test_cli_job_with_server_down_completes_without_tracking(tmp_path):
    """Whole CLI job (not just JobTracker, see test_tracking.py): outputs written, exit 0, one warning."""
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    env = _job_env(dead)
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    started = time.monotonic()
    proc = subprocess.run(
        _stimuli_cmd(tmp_path / "stim", 0), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "stim" / "stimuli.npz") as npz:
        assert npz["train_images"].shape == (20, 16, 16, 3)
    assert len(list((tmp_path / "stim" / "images" / "training").iterdir())) == 20
    assert "tracking is off" in proc.stderr or "continuing without tracking" in proc.stderr
    # The retries are bounded: an unreachable server costs seconds, not the job.
    assert seconds < 60
