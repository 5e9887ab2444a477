"""MLflow tracking: naming, tags, params, artifacts, concurrency and failure tolerance."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from argparse import Namespace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mindvis.tracking import JobTracker, tracker_for
from mindvis.tracking.job import flatten, run_name_for, subject_of_npz


def _runs(uri: str, experiment: str = "mindvis"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_flatten_makes_dotted_string_params():
    flat = flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None})
    assert flat == {"a.b": "1", "a.c.d": "[1, 2]", "e": "None"}


def test_run_name_lists_wildcards_sorted():
    assert run_name_for("preprocess_god", {"subject": "3", "dataset": "god"}) == (
        "preprocess_god[dataset=god,subject=3]"
    )
    assert run_name_for("make_stimuli", {}) == "make_stimuli"


def test_tracker_for_records_tags_params_config_and_metrics(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/t.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = Namespace(
        command="preprocess-god", rule="preprocess_god", wildcards=["dataset=god", "subject=2"], no_tracking=False
    )
    with tracker_for(args, {"roi": "VC", "nested": {"x": 1}}) as tracker:
        for step in range(3):
            tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        tracker.log_dict({"voxels": 10}, "summary.json")
    client, runs = _runs(uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "preprocess_god[dataset=god,subject=2]"
    assert run.info.status == "FINISHED"
    assert run.data.tags["mindvis.rule"] == "preprocess_god"
    assert run.data.tags["dataset"] == "god" and run.data.tags["subject"] == "2"
    assert json.loads(run.data.tags["mindvis.wildcards"]) == {"dataset": "god", "subject": "2"}
    assert "mindvis.version" in run.data.tags
    assert run.data.params == {"roi": "VC", "nested.x": "1"}
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert history[-1].value == pytest.approx(1 / 3)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json"} <= names


def test_failed_job_marks_run_failed(tmp_path):
    uri = f"sqlite:///{tmp_path}/t.db"
    with pytest.raises(RuntimeError):
        with JobTracker("boom", uri=uri):
            raise RuntimeError("disk on fire")
    _, runs = _runs(uri)
    assert runs[0].info.status == "FAILED"
    assert "disk on fire" in runs[0].data.tags["mindvis.error"]


def test_interrupted_job_ends_killed_with_its_step(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    with JobTracker("preempted", uri=uri) as tracker:
        tracker.mark_interrupted(42)  # SIGTERM: resume file written, exit 143 follows
    _, (run,) = _runs(uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["mindvis.interrupted_at_step"] == "42"


def test_unreachable_server_does_not_stop_the_job(tmp_path):
    # Port 9 (discard) on loopback: connection refused at once.
    tracker = JobTracker("offline", uri="http://127.0.0.1:9")
    with tracker:
        tracker.log_metrics({"loss": 1.0})
        (tmp_path / "out.txt").write_text("work done")
    assert not tracker.enabled
    assert (tmp_path / "out.txt").read_text() == "work done"


def test_tracking_failure_mid_job_switches_tracking_off(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/t.db"
    tracker = JobTracker("flaky", uri=uri)
    with tracker:
        tracker.log_metrics({"loss": 1.0}, step=0)

        def broken(*args, **kwargs):
            raise OSError("database disk image is malformed")

        monkeypatch.setattr(tracker._client, "log_batch", broken)
        monkeypatch.setattr("time.sleep", lambda s: None)
        tracker.log_metrics({"loss": 0.5}, step=1)  # must not raise
        assert not tracker.enabled
        tracker.log_metrics({"loss": 0.1}, step=2)  # silently skipped
    client, runs = _runs(uri)
    assert [m.value for m in client.get_metric_history(runs[0].info.run_id, "loss")] == [1.0]


_WORKER = textwrap.dedent(
    """
    import sys
    from argparse import Namespace
    from mindvis.tracking import tracker_for
    i = int(sys.argv[1])
    args = Namespace(command="worker", rule="worker", wildcards=[f"subject={i}"], no_tracking=False)
    with tracker_for(args, {"index": i}) as t:
        for step in range(25):
            t.log_metrics({"loss": float(step), "acc": float(i)}, step=step)
        t.log_dict({"i": i}, "summary.json")
    """
)


@pytest.mark.slow
def test_concurrent_jobs_lose_no_run_metric_or_artifact(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/shared.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    n_jobs = 6
    procs = [subprocess.Popen([sys.executable, str(script), str(i)], cwd=tmp_path) for i in range(n_jobs)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    client, runs = _runs(uri)
    assert len(runs) == n_jobs
    assert sorted(r.info.run_name for r in runs) == sorted(f"worker[subject={i}]" for i in range(n_jobs))
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 25
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config.yaml", "summary.json"}
        assert Path(run.info.artifact_uri.replace("file://", "")).is_relative_to(tmp_path)


def test_subject_of_npz_is_the_plain_number_of_every_dataset():
    # GOD sbj_N, BOLD5000 CSIN and NSD subjNN are all tagged N, as the DAG's subject wildcard
    assert [subject_of_npz(p) for p in ("npz/sbj_2.npz", "CSI4.npz", "NSD/npz/subj01.npz", "subj10.npz")] == \
        ["2", "4", "1", "10"]
    assert subject_of_npz("HCP/npz/sim01.npz") == "sim01"  # not a subject npz name: kept as it is
