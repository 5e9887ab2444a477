"""Every job's MLflow run ends FINISHED, FAILED or KILLED, whatever the rule (issue 14 §5: a
SIGTERM'd `generate` left its run RUNNING forever; only training jobs ended KILLED)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import timeouts
from ldm_factory import ENC, MICRO, write_tiny_god
from mindvis.tracking import JobTracker
from mindvis.utils.errors import JobKilled


def _only_run(uri: str):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("mindvis")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id], max_results=10)
    return run


def test_sigterm_inside_a_run_ends_it_killed_and_gives_the_handler_back(tmp_path):
    uri = f"sqlite:///{tmp_path}/t.db"
    before = signal.getsignal(signal.SIGTERM)
    reached = []
    with pytest.raises(JobKilled) as stop:
        with JobTracker("stopped", uri=uri):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs at the next bytecode; never get past it
                time.sleep(0.001)
            reached.append("after the signal")
    assert reached == [] and stop.value.signum == signal.SIGTERM
    run = _only_run(uri)
    assert run.info.status == "KILLED"
    assert run.data.tags["mindvis.stopped_by"] == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_python_swallows_still_stops_the_job(tmp_path):
    # Found by tests/test_workflow_kill.py: the judge's SIGTERM arrived inside a weakref
    # callback, Python printed "Exception ignored in ..." for our JobKilled and the job ran on
    # to exit 0. Here the handler fires inside __del__, where an exception is dropped the same way.
    uri = f"sqlite:///{tmp_path}/t.db"

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs (and raises) in here, where Python drops it
                time.sleep(0.001)

    reached = []
    with pytest.raises(JobKilled) as stop:
        with JobTracker("swallowed", uri=uri):
            SignalledWhileCollected()  # collected at once: the signal lands inside its __del__
            reached.append("the work went on")
    assert reached == ["the work went on"]  # the exception was dropped on the way ...
    assert stop.value.signum == signal.SIGTERM  # ... and the run's end raised the stop again
    run = _only_run(uri)
    assert run.info.status == "KILLED" and run.data.tags["mindvis.stopped_by"] == "SIGTERM"


def test_a_training_loops_own_handler_wins_inside_and_ours_comes_back(tmp_path):
    uri = f"sqlite:///{tmp_path}/t.db"
    flagged = []
    with pytest.raises(JobKilled):
        with JobTracker("train", uri=uri):
            previous = signal.signal(signal.SIGTERM, lambda s, f: flagged.append(s))  # as training.engine.StopFlag
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert flagged == [signal.SIGTERM]
            signal.signal(signal.SIGTERM, previous)
            os.kill(os.getpid(), signal.SIGTERM)  # outside the loop: ours again
            time.sleep(1)
    assert _only_run(uri).info.status == "KILLED"


def test_ctrl_c_ends_the_run_killed_and_errors_end_it_failed(tmp_path):
    uri = f"sqlite:///{tmp_path}/t.db"
    with pytest.raises(KeyboardInterrupt):
        with JobTracker("ctrl-c", uri=uri):
            raise KeyboardInterrupt
    run = _only_run(uri)
    assert (run.info.status, run.data.tags["mindvis.stopped_by"]) == ("KILLED", "SIGINT")


def test_no_run_no_handler(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with JobTracker("off", enabled=False):
        assert signal.getsignal(signal.SIGTERM) is before


def _stage_b_model(path):
    from mindvis.checkpoints.mindvis_ldm import finetuned_config, save_finetuned
    from mindvis.models.ldm.dc_ldm import build_fmri_ldm

    torch.manual_seed(0)
    model = build_fmri_ldm(MICRO, ENC, 6)
    save_finetuned(path, model, finetuned_config(model, {"protocol": "clean", "test_set_exposed": False}))


@pytest.mark.slow
def test_sigterm_on_a_real_generate_ends_its_sqlite_run_killed(tmp_path):
    write_tiny_god(tmp_path)
    _stage_b_model(tmp_path / "finetuned.pth")
    db = tmp_path / "results" / "mlflow.db"
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{db}", MINDVIS_ARTIFACT_ROOT=str(tmp_path / "art"))
    out = tmp_path / "samples.npz"
    log = tmp_path / "generate.log"
    # far more sampling than the test waits for (4 items x 200 samples x 500 steps, one at a time)
    cmd = [sys.executable, "-m", "mindvis", "generate", "--model", str(tmp_path / "finetuned.pth"),
           "--npz", str(tmp_path / "sbj_1.npz"), "--images", str(tmp_path / "images_256.npz"), "--out", str(out),
           "--rule", "generate", "--wildcard", "dataset=god", "--wildcard", "subject=1",
           "--set", "sampler=ddim", "--set", "steps=500", "--set", "n_samples=200", "--set", "batch_size=1"]
    with open(log, "w") as sink:
        child = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeouts.COMMAND
        while "test fMRI normalised as" not in log.read_text():  # logged inside the run, before sampling
            assert child.poll() is None, f"generate ended early ({child.returncode}):\n{log.read_text()}"
            assert time.monotonic() < deadline, f"generate did not start sampling:\n{log.read_text()}"
            time.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=timeouts.PROCESS_EXIT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    text = log.read_text()
    assert code == 128 + signal.SIGTERM, text
    assert "Traceback" not in text
    assert "stopped by SIGTERM; its MLflow run ended KILLED" in text
    run = _only_run(f"sqlite:///{db}")
    assert run.info.run_name == "generate[dataset=god,subject=1]"
    assert run.info.status == "KILLED" and run.data.tags["mindvis.stopped_by"] == "SIGTERM"
    assert run.info.end_time is not None
    assert not out.exists() and not list(tmp_path.glob(".samples.npz.*"))  # no output, no temp file left
    assert np.load(tmp_path / "sbj_1.npz")["arr_0"].shape[0] > 0  # inputs untouched
